// RMSNorm of prefill rows: f32 residual stream in, fp16 normalized rows out (the input of a prefill GEMM).
//
// Decode fuses the norm into the GEMV (gemv_int4.cu); prefill GEMMs are compute-bound, and a separate pass over
// [rows, dim] costs far less than the GEMM, so the norm stays simple here. With act-order weights the GEMM wants
// its input columns in the weights' sorted row order, so the norm writes them permuted (perm may be null).
#include "common.cuh"
#include <cuda_fp16.h>

// Grid: one block per row; 256 threads. out[r][k'] = x[r][perm[k']] / rms(x[r]) * w[perm[k']].
extern "C" __global__ void __launch_bounds__(256) rmsnorm_rows(const float* x, const __half* w, __half* out,
                                                                const uint32_t* perm, uint32_t dim, float eps) {
    __shared__ float warp_sums[8];
    __shared__ float inv_rms;
    pdl_wait();
    pdl_launch_dependents();
    const float* xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = warp_reduce_sum(ss);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int wi = 0; wi < (int)(blockDim.x >> 5); ++wi) total += warp_sums[wi];
        inv_rms = rsqrtf(total / (float)dim + eps);
    }
    __syncthreads();
    __half* o = out + (size_t)blockIdx.x * dim;
    for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const uint32_t src = perm ? perm[i] : i;
        o[i] = __float2half_rn(xr[src] * inv_rms * __half2float(w[src]));
    }
}

// Column permutation of fp16 rows, for act-order inputs that no norm writes (the attention output feeding o_proj).
// Grid: one block per row; 256 threads. out[r][k'] = in[r][perm[k']].
extern "C" __global__ void __launch_bounds__(256)
    permute_cols(const __half* in, __half* out, const uint32_t* perm, uint32_t cols) {
    pdl_wait();
    pdl_launch_dependents();
    const __half* src = in + (size_t)blockIdx.x * cols;
    __half* dst = out + (size_t)blockIdx.x * cols;
    for (uint32_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[perm[i]];
}

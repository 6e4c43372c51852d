// Token embedding: gather rows of the fp16 table into the f32 residual stream.
//
// The sums of squares come out too (one per row), because the first layer's fused RMSNorm (gemv_int4.cu) wants
// them, exactly as every later layer gets them from the residual epilogue of the GEMV before it.
#include "common.cuh"
#include <cuda_fp16.h>

struct EmbedParams {
    const uint32_t* tokens;  // [rows] ids (read on the device, so a captured graph decodes whatever token the
                             // previous step wrote)
    const __half* table;     // [vocab][dim]
    float* x;                // [rows][dim]
    float* ssq_out;          // [rows]; may be null
    uint32_t dim;            // a multiple of 8 (16-byte rows of fp16)
};

// Grid: one block per row; 256 threads.
extern "C" __global__ void __launch_bounds__(256) embed_tokens(const EmbedParams a) {
    const uint32_t* tokens = a.tokens;
    const __half* table = a.table;
    float* x = a.x;
    float* ssq_out = a.ssq_out;
    const uint32_t dim = a.dim;
    __shared__ float warp_sums[8];
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t row = blockIdx.x;
    const uint32_t tok = tokens[row];
    const uint4* src = reinterpret_cast<const uint4*>(table + (size_t)tok * dim);
    float* dst = x + (size_t)row * dim;
    float ss = 0.f;
    for (uint32_t i = threadIdx.x; i < dim / 8; i += blockDim.x) {
        const uint4 v = ldg_nc_v4(src + i);
        const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(h[j]);
            dst[8 * i + 2 * j] = f.x;
            dst[8 * i + 2 * j + 1] = f.y;
            ss += f.x * f.x + f.y * f.y;
        }
    }
    ss = warp_reduce_sum(ss);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0 && ssq_out != nullptr) {
        float total = 0.f;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += warp_sums[w];
        ssq_out[row] = total;
    }
}

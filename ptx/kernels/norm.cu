// RMSNorm of prefill rows: f32 residual stream in, fp16 normalized rows out (the input of a prefill GEMM).
//
// Decode fuses the norm into the GEMV (gemv.cu); prefill GEMMs are compute-bound, and a separate pass over
// [rows, dim] costs far less than the GEMM, so the norm stays simple here. With act-order weights the GEMM wants
// its input columns in the weights' sorted row order, so the norm writes them permuted (perm may be null); with
// the weights-in-registers GEMMs next, it writes them in those tiles' K order (k_order.cuh), zero-padded to the
// GEMM's k_pad columns, and with the 16-row GEMV-shaped GEMM next in its fragment order (frag16.cuh): either saves
// the GEMM a rearranging pass over its input.
//
// Why the loads are batched: one block owns a whole row, and a plain strided loop waits one memory round trip per
// iteration (16 of them for a 4096-wide row: ~10 µs, measured, for a 16-row prompt). Loading ROW_UNROLL elements
// per thread before using any of them makes it one or two round trips.
#include "common.cuh"
#include "k_order.cuh"
#include "frag16.cuh"
#include <cuda_fp16.h>

#define ROW_UNROLL 8

struct RmsNormParams {
    const float* x;         // [rows][dim] the residual stream
    const __half* w;        // [dim]
    __half* out;            // [parts][rows][out_cols]
    const uint32_t* perm;   // [parts][perm_stride] act-order row orders of the next GEMM's weights; may be null
    uint32_t dim;
    float eps;
    uint32_t perm_stride;   // entries between the row orders of two parts
    uint32_t out_stride;    // elements between the outputs of two parts
    uint32_t out_cols;      // columns of an output row: dim, or the GEMM's k_pad with an order
    uint32_t order;         // 0 in order; 1 output column j holds GEMM input k = korder::source(j); 2 frag16's
                            // order over out_cols columns (out_cols a multiple of 128);
                            // with 1 and 2 zero from dim on
};

// Grid: (rows, parts, slices); 256 threads. Part i of row r (i = blockIdx.y, one part without act-order):
// out[i · out_stride + r · out_cols + j] = x[r][perm_i[k]] / rms(x[r]) * w[perm_i[k]], perm_i = perm + i · perm_stride,
// k = j (or korder::source(j) with order 1; zero where k ≥ dim); order 2 puts element (r, k) at frag16::at(r, k, out_cols).
// Why the parts: with act-order each fused part (q, k, v; gate, up) has its own row order, so each gets its copy.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_rows(const RmsNormParams a) {
    const float* x = a.x;
    const __half* w = a.w;
    __half* out = a.out + (size_t)blockIdx.y * a.out_stride;
    const uint32_t* perm = a.perm ? a.perm + (size_t)blockIdx.y * a.perm_stride : nullptr;
    const uint32_t dim = a.dim;
    const float eps = a.eps;
    __shared__ float warp_sums[8];
    __shared__ float inv_rms;
    pdl_wait();
    pdl_launch_dependents();
    const float* xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (uint32_t base = threadIdx.x; base < dim; base += blockDim.x * ROW_UNROLL) {
        float v[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) {
            const uint32_t i = base + u * blockDim.x;
            v[u] = i < dim ? xr[i] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) ss += v[u] * v[u];
    }
    ss = warp_reduce_sum(ss);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int wi = 0; wi < (int)(blockDim.x >> 5); ++wi) total += warp_sums[wi];
        inv_rms = rsqrtf(total / (float)dim + eps);
    }
    __syncthreads();
    if (a.order == 2) {
        // frag16's order: a thread per natural 8-column chunk of this block's slice, four 4-byte stores.
        const auto [lo, hi] = slice_of(a.out_cols / 8, blockIdx.z, gridDim.z);
        for (uint32_t chunk = lo + threadIdx.x; chunk < hi; chunk += blockDim.x) {
            __half v[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const uint32_t k = 8 * chunk + j, src = k < dim ? (perm ? perm[k] : k) : 0;
                v[j] = __float2half_rn(k < dim ? xr[src] * inv_rms * __half2float(w[src]) : 0.f);
            }
            frag16::store_chunk(out, blockIdx.x, chunk, v, a.out_cols);
        }
        return;
    }
    __half* o = out + (size_t)blockIdx.x * a.out_cols;
    if (a.order == 1) {
        // In the K order: a thread per 16-byte output chunk (out_cols is a multiple of 64, so is its row's start),
        // its 8 sources gathered at once; this block's slice of the row's chunks (grid.z, as below).
        const auto [lo, hi] = slice_of(a.out_cols / 8, blockIdx.z, gridDim.z);
        for (uint32_t chunk = lo + threadIdx.x; chunk < hi; chunk += blockDim.x) {
            uint32_t src[8];
            bool real[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const uint32_t k = korder::source(8 * chunk + j);
                real[j] = k < dim;
                src[j] = real[j] ? (perm ? perm[k] : k) : 0;
            }
            float v[8], wv[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) v[j] = xr[src[j]], wv[j] = __half2float(w[src[j]]);
            uint4 packed;
            __half2* h2 = reinterpret_cast<__half2*>(&packed);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float lo_v = real[2 * j] ? v[2 * j] * inv_rms * wv[2 * j] : 0.f;
                const float hi_v = real[2 * j + 1] ? v[2 * j + 1] * inv_rms * wv[2 * j + 1] : 0.f;
                h2[j] = __floats2half2_rn(lo_v, hi_v);
            }
            *reinterpret_cast<uint4*>(o + 8 * chunk) = packed;
        }
        return;
    }
    // This block's slice of the outputs (grid.z slices: a few-row prompt has too few rows to fill the card, so each
    // row's outputs are split over several blocks, each of which reduces the whole row itself).
    const auto [lo, hi] = slice_of(a.out_cols, blockIdx.z, gridDim.z);
    for (uint32_t base = lo + threadIdx.x; base < hi; base += blockDim.x * ROW_UNROLL) {
        uint32_t src[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) {
            const uint32_t i = base + u * blockDim.x;
            src[u] = i < hi ? (perm ? perm[i] : i) : 0;
        }
        float v[ROW_UNROLL], wv[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) v[u] = xr[src[u]], wv[u] = __half2float(w[src[u]]);
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < hi) o[i] = __float2half_rn(v[u] * inv_rms * wv[u]);
        }
    }
}

struct PermuteParams {
    const __half* in;       // [rows][cols]
    __half* out;            // [rows][cols]
    const uint32_t* perm;   // [cols]
    uint32_t cols;
};

// Column permutation of fp16 rows, for act-order inputs that no norm writes (the attention output feeding o_proj).
// Grid: (rows, slices); 256 threads: block (r, y) writes slice y of row r. out[r][k'] = in[r][perm[k']].
extern "C" __global__ void __launch_bounds__(256) permute_cols(const PermuteParams a) {
    const __half* in = a.in;
    __half* out = a.out;
    const uint32_t* perm = a.perm;
    const uint32_t cols = a.cols;
    pdl_wait();
    pdl_launch_dependents();
    const __half* src = in + (size_t)blockIdx.x * cols;
    __half* dst = out + (size_t)blockIdx.x * cols;
    const auto [lo, hi] = slice_of(cols, blockIdx.y, gridDim.y);
    for (uint32_t base = lo + threadIdx.x; base < hi; base += blockDim.x * ROW_UNROLL) {
        uint32_t s[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) {
            const uint32_t i = base + u * blockDim.x;
            s[u] = i < hi ? perm[i] : 0;
        }
        __half v[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) v[u] = src[s[u]];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < hi) dst[i] = v[u];
        }
    }
}

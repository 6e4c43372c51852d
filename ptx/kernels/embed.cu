// Token embedding: gather rows of the fp16 table into the f32 residual stream.
//
// The sums of squares come out too (one per row), because the first layer's fused RMSNorm (gemv.cu) wants
// them, exactly as every later layer gets them from the residual epilogue of the GEMV before it.
#include "tiles.cuh"  // half_input: the decode GEMV's half input
#include <cuda_fp16.h>

struct EmbedParams {
    const uint32_t* tokens;  // [rows] ids (read on the device, so a captured graph decodes whatever token the
                             // previous step wrote)
    const __half* table;     // [vocab][dim]
    float* x;                // [rows][dim]
    float* ssq_out;          // [rows][slices] partial sums of squares; may be null
    // Decode with act-order: the first q/k/v projection's input, a copy per part in that part's sorted row order with
    // its norm weight folded in: x_sorted[q · stride + idx[q · stride + i]] = x[i] · norm_w[i] for q < parts.
    float* x_sorted;
    const uint32_t* idx;
    const __half* norm_w;    // the first norm's weight (act-order's copies and the half input)
    // Decode without act-order: null, or the first q/k/v's half input, x · norm_w · HALF_INPUT_SCALE in fp16 (see
    // tiles.cuh: the fused norm reads it instead of x and norm_w).
    __half* x16;
    uint32_t dim;            // a multiple of 8 (16-byte rows of fp16)
    uint32_t parts;          // 0: none (row 0 only)
    uint32_t stride;
};

// Grid: (rows, slices); 256 threads. Block (r, y) copies slice y of row r's 8-element words and writes the slice's
// sum of squares to ssq_out[r · slices + y]: the fused norm after it sums any number of partials, and in decode (one
// row) several blocks share the row, each with a slice of the act-order scatter.
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
    const Slice words = slice_of(dim / 8, blockIdx.y, gridDim.y);
    float ss = 0.f;
    for (uint32_t i = words.lo + threadIdx.x; i < words.hi; i += blockDim.x) {
        const uint4 v = ldg_nc_v4(src + i);
        const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(h[j]);
            dst[8 * i + 2 * j] = f.x;
            dst[8 * i + 2 * j + 1] = f.y;
            ss += f.x * f.x + f.y * f.y;
        }
        if (a.x16) {
            const uint4 w = ldg_nc_v4(reinterpret_cast<const uint4*>(a.norm_w) + i);
            const __half2* wh = reinterpret_cast<const __half2*>(&w);
            uint4 out;
            __half2* oh = reinterpret_cast<__half2*>(&out);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float2 f = __half22float2(h[j]), g = __half22float2(wh[j]);
                oh[j] = __halves2half2(half_input(f.x * g.x), half_input(f.y * g.y));
            }
            reinterpret_cast<uint4*>(a.x16)[i] = out;
        }
        for (uint32_t q = 0; q < a.parts; ++q) {
            const size_t o = (size_t)q * a.stride;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const uint32_t c = 8 * i + j;
                a.x_sorted[o + __ldg(a.idx + o + c)] = dst[c] * __half2float(a.norm_w[c]);
            }
        }
    }
    ss = warp_reduce_sum(ss);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0 && ssq_out != nullptr) {
        float total = 0.f;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += warp_sums[w];
        ssq_out[row * gridDim.y + blockIdx.y] = total;
    }
}

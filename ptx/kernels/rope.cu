// Rotary embedding and KV-cache append for prefill rows.
//
// Decode does this in the q/k/v GEMV's epilogue (gemv_int4.cu). In prefill the GEMM writes q/k/v rows to memory
// first and this pass rotates q and k (Hugging Face rotate_half: dimension i pairs with i + head_dim/2) and moves
// k and v into the cache at their positions. Angles come from the host-computed f64 tables, so long positions
// keep their precision.
#include "common.cuh"
#include <cuda_fp16.h>

// Grid: one block per row; 128 threads. qkv: [rows][q_dim + 2 kv_dim] fp16; q_out: [rows][q_dim];
// caches: [kv_heads][ctx][head_dim]; row r is at position *pos0 + r.
extern "C" __global__ void __launch_bounds__(128)
    rope_kv_rows(const __half* qkv, __half* q_out, __half* k_cache, __half* v_cache, const float* rope_cos,
                 const float* rope_sin, const uint32_t* pos0, uint32_t q_dim, uint32_t kv_dim, uint32_t head_dim,
                 uint32_t ctx) {
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t row = blockIdx.x, pos = *pos0 + row, half_dim = head_dim / 2;
    const __half* src = qkv + (size_t)row * (q_dim + 2 * kv_dim);
    const float* cs = rope_cos + (size_t)pos * half_dim;
    const float* sn = rope_sin + (size_t)pos * half_dim;
    // Rotary pairs of q and k: (h, i) for i < half_dim.
    const uint32_t pairs = (q_dim + kv_dim) / 2;
    for (uint32_t e = threadIdx.x; e < pairs; e += blockDim.x) {
        const uint32_t h = e / half_dim, i = e % half_dim;
        const uint32_t a = h * head_dim + i, b = a + half_dim;
        const float x0 = __half2float(src[a]), x1 = __half2float(src[b]);
        const float r0 = x0 * cs[i] - x1 * sn[i], r1 = x1 * cs[i] + x0 * sn[i];
        if (a < q_dim) {
            q_out[(size_t)row * q_dim + a] = __float2half_rn(r0);
            q_out[(size_t)row * q_dim + b] = __float2half_rn(r1);
        } else {
            const uint32_t kh = (a - q_dim) / head_dim;
            __half* k = k_cache + ((size_t)kh * ctx + pos) * head_dim;
            k[i] = __float2half_rn(r0);
            k[i + half_dim] = __float2half_rn(r1);
        }
    }
    for (uint32_t c = threadIdx.x; c < kv_dim; c += blockDim.x) {
        const uint32_t h = c / head_dim, d = c % head_dim;
        v_cache[((size_t)h * ctx + pos) * head_dim + d] = src[q_dim + kv_dim + c];
    }
}

// Rotary embedding and KV-cache append for prefill rows.
//
// Decode does this in the q/k/v GEMV's epilogue (gemv.cu). In prefill the GEMM writes q/k/v rows to memory
// first and this pass rotates q and k (Hugging Face rotate_half: dimension i pairs with i + head_dim/2) and moves
// k and v into the cache at their positions. Angles come from the host-computed f64 tables, so long positions
// keep their precision.
// Blocks of ROPE_HEADS heads of one row rather than whole rows: a block walking a whole row waited a memory round trip
// per 128 rotary pairs (32 of them for Baichuan-7B: ~18 µs, measured, for a 16-row prompt); with one head per
// block a 512-row prompt became 49k tiny blocks (61 µs): four heads of 64 threads each is one round trip and few
// enough blocks.
#include "common.cuh"
#include <cuda_fp16.h>

#define ROPE_HEADS 4
#define ROPE_LANES 64  // threads per head: rotary pairs (or value elements) strided by 64

struct RopeParams {
    const __half* qkv;        // [rows][q_dim + 2 kv_dim]
    __half* q_out;            // [rows][q_dim]
    __half* k_cache;          // this layer's keys [kv_heads][ctx][head_dim]
    __half* v_cache;          // this layer's values, same shape
    const float* rope_cos;    // [max_pos][head_dim / 2]
    const float* rope_sin;
    const uint32_t* pos0;     // row r is at position *pos0 + r
    uint32_t q_dim;
    uint32_t kv_dim;
    uint32_t head_dim;
    uint32_t ctx;
};

// Grid: (rows, ceil((heads + 2 · kv_heads) / ROPE_HEADS)); 256 threads. Head y < heads is q head y, then kv_heads
// k heads (rotated and appended), then kv_heads v heads (appended). Any grid.y works: blocks stride over heads.
extern "C" __global__ void __launch_bounds__(256) rope_kv_rows(const RopeParams a) {
    const __half* qkv = a.qkv;
    __half* q_out = a.q_out;
    __half* k_cache = a.k_cache;
    __half* v_cache = a.v_cache;
    const float* rope_cos = a.rope_cos;
    const float* rope_sin = a.rope_sin;
    const uint32_t* pos0 = a.pos0;
    const uint32_t q_dim = a.q_dim, kv_dim = a.kv_dim, head_dim = a.head_dim, ctx = a.ctx;
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t row = blockIdx.x, pos = *pos0 + row, half_dim = head_dim / 2;
    const uint32_t heads = q_dim / head_dim, kv_heads = kv_dim / head_dim;
    const __half* src = qkv + (size_t)row * (q_dim + 2 * kv_dim);
    const float* cs = rope_cos + (size_t)pos * half_dim;
    const float* sn = rope_sin + (size_t)pos * half_dim;
    const uint32_t lane = threadIdx.x % ROPE_LANES;
    for (uint32_t y = blockIdx.y * ROPE_HEADS + threadIdx.x / ROPE_LANES; y < heads + 2 * kv_heads;
         y += gridDim.y * ROPE_HEADS) {
        if (y < heads + kv_heads) {
            // q head y, or k head y - heads: the pairs (i, i + half_dim).
            const __half* s = src + (size_t)y * head_dim;
            __half* dst = y < heads ? q_out + (size_t)row * q_dim + y * head_dim
                                    : k_cache + ((size_t)(y - heads) * ctx + pos) * head_dim;
            for (uint32_t i = lane; i < half_dim; i += ROPE_LANES) {
                const float x0 = __half2float(s[i]), x1 = __half2float(s[i + half_dim]);
                const float c = cs[i], sv = sn[i];
                dst[i] = __float2half_rn(x0 * c - x1 * sv);
                dst[i + half_dim] = __float2half_rn(x1 * c + x0 * sv);
            }
        } else {
            const uint32_t vh = y - heads - kv_heads;
            const __half* s = src + q_dim + kv_dim + (size_t)vh * head_dim;
            __half* dst = v_cache + ((size_t)vh * ctx + pos) * head_dim;
            for (uint32_t d = lane; d < head_dim; d += ROPE_LANES) dst[d] = s[d];
        }
    }
}

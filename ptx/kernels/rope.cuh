// The rotary embedding's parameters and arithmetic, shared by the prefill rows' pass (rope.cu: `rope_kv_rows`) and
// the short wgmma tile's q/k/v epilogue (gemm_wgmma_short.cu), so that both round and rotate alike.
#pragma once
#include "common.cuh"
#include <cuda_fp16.h>

struct RopeParams {
    const __half* qkv;        // [rows][q_dim + 2 kv_dim] (rope_kv_rows' input; the fused epilogue has none)
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

// The cache slot of (kv head, position): [kv_heads][ctx][head_dim].
ENGINE_DEV __half* cache_slot(__half* cache, uint32_t head, uint32_t ctx, uint32_t pos, uint32_t head_dim) {
    return cache + ((size_t)head * ctx + pos) * head_dim;
}

// rotate_half on one pair (x0 = dimension i, x1 = i + head_dim / 2) at angle (c, sv) = (cos, sin). The products and
// fused adds spelled out, so that the compiler cannot contract them differently in its two callers: they must give
// the same bits.
ENGINE_DEV float2 rotate(float x0, float x1, float c, float sv) {
    return make_float2(__fmaf_rn(x0, c, -__fmul_rn(x1, sv)), __fmaf_rn(x1, c, __fmul_rn(x0, sv)));
}

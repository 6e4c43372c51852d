// The attention kernels' parameter block (attention.cu, attention_prefill.cu).
#pragma once
#include "common.cuh"
#include <cuda_fp16.h>

struct AttnParams {
    const __half* q;         // [rows][heads * head_dim], rotated
    const __half* k_cache;   // this layer: [kv_heads][ctx][head_dim]
    const __half* v_cache;
    __half* out;             // [rows][heads * head_dim]
    float* part_o;           // decode: [heads][splits][head_dim] unnormalized partial outputs
    float* part_ml;          // decode: [heads][splits][2] (running max, running sum)
    uint32_t* counters;      // decode: [heads]; zero at rest (the last block of a head resets its counter)
    const uint32_t* pos;     // position of row 0
    const uint32_t* out_idx; // decode, act-order: out[out_idx[c]] instead of out[c] (o_proj's sorted row order);
                             // null: in order
    uint32_t heads;
    uint32_t kv_heads;
    uint32_t head_dim;       // 8, 16, 32, 64, 128 or 256
    uint32_t ctx;
    uint32_t splits;         // decode: blocks per head
    float scale_log2;        // log2(e) / sqrt(head_dim)
    uint32_t rows;           // prefill: query rows of the chunk (attn_prefill_tc*; attn_prefill uses gridDim.y)
    uint32_t order;          // attn_prefill_tc*: the order o_proj's tile reads its input in (shapes.rs InputOrder):
                             // 0 rows, 1 the K order of the weights-in-registers tiles (k_order.cuh), 2 the 16-row
                             // GEMV-shaped tile's fragments (frag16.cuh; then heads · D is a multiple of 128)
};

// Causal attention over the fp16 KV cache, for decode (one query, split over the sequence, flash-decoding style)
// and for prefill (one block per query row); the pieces and why they are shaped so are in attention.cuh.
#include "attention.cuh"

// Decode: grid (heads, splits), 128 threads. Row 0 at position *pos attends to positions 0..=*pos.
extern "C" __global__ void __launch_bounds__(128) attn_decode(const AttnParams p) {
    __shared__ attn::State smem[attn::WARPS * 32];
    __shared__ float split_w[2 * attn::MAX_SPLITS];
    __shared__ bool is_last;
    const uint32_t h = blockIdx.x, split = blockIdx.y;
    // The position and this block's cached keys and values are known before the q/k/v kernel ends (see
    // attn::decode_position): the split and, at short contexts, an L2 prefetch of those rows go first, so that
    // after the wait only q and the new position's row are a round trip away.
    const attn::Split s(p, split, attn::decode_position(p));
    if (split < s.active) attn::prefetch_cached_rows(p, h, s);
    pdl_wait();
    pdl_launch_dependents();
    if (split >= s.active) return;
    // Act-order: the output's indices, into L1 while the pass runs (whichever block stores them).
    if (p.out_idx && threadIdx.x < p.head_dim / 8) prefetch_l1(p.out_idx + h * p.head_dim + threadIdx.x * 8);
    const attn::State st = attn::block_pass(p, 0, h, s.begin, s.end, smem);
    attn::finish_split(p, h, split, s.active, st, split_w, &is_last);
}

// Prefill: grid (heads, rows), 128 threads. Row r at position *pos + r attends to positions 0..=*pos + r; its
// keys and values are already in the cache.
extern "C" __global__ void __launch_bounds__(128) attn_prefill(const AttnParams p) {
    __shared__ attn::State smem[attn::WARPS * 32];
    pdl_wait();
    const uint32_t h = blockIdx.x, row = blockIdx.y;
    const uint32_t len = *p.pos + row + 1;
    attn::State st = attn::block_pass(p, row, h, 0, len, smem);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (warp == 0 && lane < (int)(p.head_dim / 8)) {
        attn::store8(p.out + ((size_t)row * p.heads + h) * p.head_dim + lane * 8, st.o, 1.f / st.l);
    }
}

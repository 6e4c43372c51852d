// Causal attention over the fp16 KV cache, for decode (one query, split over the sequence, flash-decoding style)
// and for prefill (one block per query row); the pieces and why they are shaped so are in attention.cuh.
#include "attention.cuh"
#include "bulk_copy.cuh"
#include "cluster.cuh"

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

// Decode with the splits of a head in one thread block cluster (sm_90): grid (heads, splits), cluster (1, splits),
// splits <= attn::MAX_CLUSTER, 128 threads. The same pass as attn_decode; the merge differs. Why: attn_decode's last
// block finds out it is last through a fence and a returning atomic, then reads every split's partial state from
// L2 — three dependent round trips between the pass and the output, on the path to o_proj in every layer. Here
// each split's warp 0 stores its state straight into split 0's shared memory with counted stores (`st.async`: each
// store's bytes land on split 0's mbarrier `states_in`, so no fence is needed on either side), and every other warp
// leaves at once; split 0's warp 0 waits on the barrier for all of them and merges the states in split order (the
// same bits every run). (The merge is the online-softmax one, so the bits differ from attn_decode's, within
// rounding.) Split 0 cannot leave before the stores land: it waits for their bytes.
extern "C" __global__ void __launch_bounds__(128) attn_decode_cluster(const AttnParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    __shared__ attn::State smem[attn::WARPS * 32];
    // Split 0's: the splits' states, lane by lane; 8-byte aligned for the counted stores of float pairs (a State
    // alone asks for 4).
    __shared__ __align__(8) attn::State states[attn::MAX_CLUSTER][32];
    __shared__ uint64_t states_in;  // split 0's: complete when the other states have landed
    const uint32_t h = blockIdx.x, split = blockIdx.y, lp = p.head_dim / 8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const attn::Split s(p, split, attn::decode_position(p));
    if (split < s.active) attn::prefetch_cached_rows(p, h, s);
    if (split == 0 && threadIdx.x == 0) {
        bulk::init(&states_in, 1);
        bulk::init_fence();
        bulk::arrive_expect_bytes(&states_in, (s.active - 1) * lp * (uint32_t)sizeof(attn::State));
    }
    // Every block of the cluster has started, and split 0's barrier is initialized, before anyone stores into
    // split 0 (before the wait, so that it overlaps the q/k/v kernel).
    cluster::sync();
    pdl_wait();
    pdl_launch_dependents();
    if (split >= s.active) return;
    if (p.out_idx && threadIdx.x < lp) prefetch_l1(p.out_idx + h * p.head_dim + threadIdx.x * 8);
    attn::State st = attn::block_pass(p, 0, h, s.begin, s.end, smem);
    if (split != 0) {
        // Into split 0's states[split][lane]: (m, l), then o in pairs (a State is 40 bytes: 8-byte aligned).
        if (warp == 0 && lane < (int)lp) {
            const uint32_t at = cluster::map(&states[split][lane], 0), bar = cluster::map(&states_in, 0);
            cluster::store_counted(at, st.m, st.l, bar);
#pragma unroll
            for (int i = 0; i < 4; ++i) cluster::store_counted(at + 8 + 8 * i, st.o[2 * i], st.o[2 * i + 1], bar);
        }
        return;
    }
    if (warp != 0 || lane >= (int)lp) return;
    bulk::wait(&states_in, 0);
    for (uint32_t i = 1; i < s.active; ++i) attn::merge(st, states[i][lane]);
    attn::store_out(p, h * p.head_dim + lane * 8, st.o, 1.f / st.l);
#else
    __trap();  // compute_80 module: the host launches it on sm_90 only, where the sm_90a module is loaded
#endif
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

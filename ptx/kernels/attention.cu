// Causal attention over the fp16 KV cache, for decode (one query, split over the sequence, flash-decoding style)
// and for prefill (one block per query row); the pieces and why they are shaped so are in attention.cuh.
#include "attention.cuh"
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
// each split's warp 0 stores its state straight into split 0's shared memory and the split's threads arrive on the
// cluster barrier; split 0's warp 0 waits on it and merges the states in split order (the same bits every run),
// and every other warp leaves at once. (The merge is the online-softmax one, so the bits differ from
// attn_decode's, within rounding.) The barrier, not an mbarrier, because it is what also proves to a reader
// (and to compute-sanitizer's racecheck) that split 0 is still there when the others write into it.
extern "C" __global__ void __launch_bounds__(128) attn_decode_cluster(const AttnParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    __shared__ attn::State smem[attn::WARPS * 32];
    __shared__ attn::State states[attn::MAX_CLUSTER][32];  // split 0's: the splits' states, lane by lane
    const uint32_t h = blockIdx.x, split = blockIdx.y, lp = p.head_dim / 8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const attn::Split s(p, split, attn::decode_position(p));
    if (split < s.active) attn::prefetch_cached_rows(p, h, s);
    // Every block of the cluster has started before anyone writes into split 0 (before the wait, so that it
    // overlaps the q/k/v kernel).
    cluster::sync();
    pdl_wait();
    pdl_launch_dependents();
    if (split >= s.active) {
        cluster::arrive();  // the merge's phase does not wait for this block
        return;
    }
    if (p.out_idx && threadIdx.x < lp) prefetch_l1(p.out_idx + h * p.head_dim + threadIdx.x * 8);
    attn::State st = attn::block_pass(p, 0, h, s.begin, s.end, smem);
    if (split != 0 || warp != 0) {
        // Into split 0's states[split][lane]; the arrival releases the stores to split 0's wait.
        if (split != 0 && warp == 0 && lane < (int)lp) {
            const uint32_t at = cluster::map(&states[split][lane], 0);
            cluster::store(at, st.m);
            cluster::store(at + 4, st.l);
#pragma unroll
            for (int i = 0; i < 8; ++i) cluster::store(at + 8 + 4 * i, st.o[i]);
        }
        cluster::arrive();
        return;
    }
    cluster::arrive();
    cluster::wait();
    if (lane >= (int)lp) return;
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

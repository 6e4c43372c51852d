// The decode attention's building blocks (attention.cu): the online-softmax pass of one block over a range of
// positions, the split of a sequence over blocks, and the merge of the splits.
//
// Why this shape. At decode, one query per head meets up to `ctx` keys: too little work per head to fill the card
// if a head is one block, so the sequence is split into `splits` ranges, each block keeps an online softmax (running
// max m, running sum l, unnormalized output o) over its range, and the last block of a head to finish merges the
// ranges in split order — a fixed order, so the result is the same bits every run (no float atomics).
// Each position's key row is read by hd/8 lanes, 16 bytes each, so a warp reads whole rows contiguously, and the
// row's value is read right after with the same pattern: K and V are each read exactly once.
// Scores are kept in the log2 domain (the 1/sqrt(hd) scale is folded with log2(e)), so exp is one ex2.approx.
#pragma once
#include "attn_params.cuh"
#include <cuda_fp16.h>

namespace attn {

constexpr int WARPS = 4;
constexpr int UNROLL = 4;      // positions per lane group per iteration
// Fewest positions per decode block: fewer cost more in merging than they save. 32 rather than 64 measured +1.1%
// decode after a 16-token prompt (H100: 508.1 → 513.9 tok/s), the same after 2048 tokens.
constexpr uint32_t MIN_PER_SPLIT = 32;
constexpr uint32_t MAX_SPLITS = 64;  // decode blocks per head at most (the plan's attention_splits clamps to it)
constexpr uint32_t MAX_CLUSTER = 16; // attn_decode_cluster's splits at most (the largest cluster sm_90 allows)
#define ATTN_NEG_INF (-__int_as_float(0x7f800000))

// Online-softmax state of one lane: its 8 output dims plus the running max and sum of its position group.
struct State {
    float m, l, o[8];
};

ENGINE_DEV void merge(State& a, const State& b) {
    const float m = fmaxf(a.m, b.m);
    if (m == ATTN_NEG_INF) return;  // both empty
    const float ca = exp2f(a.m - m), cb = exp2f(b.m - m);
    a.l = a.l * ca + b.l * cb;
#pragma unroll
    for (int i = 0; i < 8; ++i) a.o[i] = a.o[i] * ca + b.o[i] * cb;
    a.m = m;
}

// 16 bytes of the query, keys or values.
ENGINE_DEV uint4 load16(const __half* p) { return *reinterpret_cast<const uint4*>(p); }

ENGINE_DEV void load8(const __half* p, float out[8]) {
    const uint4 v = load16(p);
    const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

// A lane's empty online-softmax state.
ENGINE_DEV State empty_state() {
    State st;
    st.m = ATTN_NEG_INF;
    st.l = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) st.o[i] = 0.f;
    return st;
}

// One round of a lane group: positions base + u·ppw + pg (u < UNROLL; those at or past p_end are not there), whose
// 8 dims of key and value the lane holds in kr / vr, into its online-softmax state — scores summed over the group's
// lp lanes, one rescale of the state per round. Every lane of the warp calls it (the shuffles need the full warp).
ENGINE_DEV void softmax_round(State& st, const float (&q)[8], const uint4 (&kr)[UNROLL], const uint4 (&vr)[UNROLL],
                              uint32_t base, uint32_t ppw, uint32_t pg, uint32_t p_end, uint32_t lp,
                              float scale_log2) {
    float s[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const uint32_t pos = base + u * ppw + pg;
        float acc = 0.f;
        if (pos < p_end) {
            const __half2* kh = reinterpret_cast<const __half2*>(&kr[u]);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float2 f = __half22float2(kh[i]);
                acc += q[2 * i] * f.x + q[2 * i + 1] * f.y;
            }
        }
        s[u] = acc;
    }
    // Each position's dot summed over its lp lanes, in the same butterfly order as one position at a time, but the
    // positions' shuffles interleaved level by level and the levels unrolled: UNROLL independent shuffles in
    // flight instead of one chain of UNROLL · log2(lp) round trips, which made a round's latency (and with 3-4
    // warps per scheduler, the pass's time) about that of its DRAM reads (BENCHMARKS.md).
#pragma unroll
    for (uint32_t o = 16; o > 0; o >>= 1) {
        if (o >= lp) continue;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], o);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) s[u] = base + u * ppw + pg < p_end ? s[u] * scale_log2 : ATTN_NEG_INF;
    float m = st.m;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) m = fmaxf(m, s[u]);
    if (m == ATTN_NEG_INF) return;  // nothing valid yet for this lane group
    const float c = exp2f(st.m - m);
    st.l *= c;
#pragma unroll
    for (int i = 0; i < 8; ++i) st.o[i] *= c;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const uint32_t pos = base + u * ppw + pg;
        if (pos < p_end) {
            const float e = exp2f(s[u] - m);
            st.l += e;
            const __half2* vh = reinterpret_cast<const __half2*>(&vr[u]);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float2 f = __half22float2(vh[i]);
                st.o[2 * i] += e * f.x;
                st.o[2 * i + 1] += e * f.y;
            }
        }
    }
    st.m = m;
}

// Merge the position groups of a warp (lanes with the same dims, lane % lp): the warp's state in lanes 0..lp − 1.
ENGINE_DEV void merge_lane_groups(State& st, uint32_t lp) {
#pragma unroll
    for (uint32_t o = 1; o < 32; o <<= 1) {
        if (o < lp) continue;
        State other;
        other.m = __shfl_xor_sync(0xffffffffu, st.m, o);
        other.l = __shfl_xor_sync(0xffffffffu, st.l, o);
#pragma unroll
        for (int i = 0; i < 8; ++i) other.o[i] = __shfl_xor_sync(0xffffffffu, st.o[i], o);
        merge(st, other);
    }
}

// One warp's pass over its share of positions [p_begin, p_end) (positions warp · ppw · UNROLL + ..., every WARPS ·
// ppw · UNROLL) for query head `h` of row `row`, UNROLL positions per lane group and round; returns the warp's merged
// state in its lanes 0 .. head_dim / 8 − 1 (lane % lp = which 8 dims).
ENGINE_DEV State warp_pass(const AttnParams& p, uint32_t row, uint32_t h, uint32_t p_begin, uint32_t p_end) {
    const uint32_t lp = p.head_dim / 8;   // lanes per position
    const uint32_t ppw = 32 / lp;         // positions per warp per iteration
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t dl = lane % lp, pg = lane / lp;
    const uint32_t kvh = h / (p.heads / p.kv_heads);

    State st = empty_state();
    float q[8];
    load8(p.q + (size_t)row * p.heads * p.head_dim + h * p.head_dim + dl * 8, q);

    const __half* kbase = p.k_cache + (size_t)kvh * p.ctx * p.head_dim + dl * 8;
    const __half* vbase = p.v_cache + (size_t)kvh * p.ctx * p.head_dim + dl * 8;
    // Each lane position group takes UNROLL positions per iteration and issues all their K and V loads before
    // the first use: without it the online-softmax dependency leaves one 16-byte load per array in flight.
    // Every lane runs the same number of iterations, so the shuffles below always see the full warp.
    const uint32_t stride = WARPS * ppw * UNROLL;
    for (uint32_t base = p_begin + warp * ppw * UNROLL; base < p_end; base += stride) {
        uint4 kr[UNROLL], vr[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const uint32_t pos = base + u * ppw + pg;
            if (pos < p_end) {
                kr[u] = load16(kbase + (size_t)pos * p.head_dim);
                vr[u] = load16(vbase + (size_t)pos * p.head_dim);
            }
        }
        softmax_round(st, q, kr, vr, base, ppw, pg, p_end, lp, p.scale_log2);
    }
    merge_lane_groups(st, lp);
    return st;
}

// One block's pass over positions [p_begin, p_end) for query head `h` of row `row` by its first WARPS warps (any
// further warps only meet the barrier). Returns the block's merged state in every thread of warp 0 (lane layout:
// lane % lp = which 8 dims). `smem`: WARPS · head_dim / 8 States.
ENGINE_DEV State block_pass(const AttnParams& p, uint32_t row, uint32_t h, uint32_t p_begin, uint32_t p_end,
                            State* smem) {
    const uint32_t lp = p.head_dim / 8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    State st{};
    if (warp < WARPS) {
        st = warp_pass(p, row, h, p_begin, p_end);
        if (lane < (int)lp) smem[warp * lp + lane] = st;
    }
    __syncthreads();
    if (warp == 0 && lane < (int)lp) {
        for (int w = 1; w < WARPS; ++w) merge(st, smem[w * lp + lane]);
    }
    return st;
}

ENGINE_DEV void store8(__half* dst, const float v[8], float inv) {
    uint4 out;
    __half2* h = reinterpret_cast<__half2*>(&out);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(v[2 * i] * inv, v[2 * i + 1] * inv);
    *reinterpret_cast<uint4*>(dst) = out;
}

// Decode's output of one lane: 8 dims from column c, in order, or (act-order) each where o_proj's sorted input
// wants it.
ENGINE_DEV void store_out(const AttnParams& p, uint32_t c, const float v[8], float inv) {
    if (!p.out_idx) return store8(p.out + c, v, inv);
#pragma unroll
    for (int i = 0; i < 8; ++i) p.out[__ldg(p.out_idx + c + i)] = __float2half_rn(v[i] * inv);
}

// The decode splits' merge, by the last block of head h to finish: out = Σ_s w_s·o_s / Σ_s w_s·l_s with
// w_s = 2^(m_s − max_s m_s), each output dimension by its own thread. Why not one lane merging the splits one after
// another (the online-softmax merge): each step of that chain waits for its split's partials from L2, ~16 round
// trips at 2048 positions; here the running maxima and sums come in with one round trip (a thread per split), the
// weights are computed once into shared memory, and each thread's reads of its dimension over the splits are
// independent loads. The sums run in split order: the same bits every run.
ENGINE_DEV void merge_splits(const AttnParams& p, uint32_t h, uint32_t active, float* w /* [2][MAX_SPLITS] */) {
    const float* ml = p.part_ml + (size_t)h * p.splits * 2;
    float* l = w + MAX_SPLITS;
    if (threadIdx.x < active) {
        w[threadIdx.x] = __ldcg(ml + 2 * threadIdx.x);  // m_s for now
        l[threadIdx.x] = __ldcg(ml + 2 * threadIdx.x + 1);
    }
    __syncthreads();
    float m = ATTN_NEG_INF;
    for (uint32_t s = 0; s < active; ++s) m = fmaxf(m, w[s]);
    __syncthreads();
    if (threadIdx.x < active) w[threadIdx.x] = exp2f(w[threadIdx.x] - m);
    __syncthreads();
    float denom = 0.f;
    for (uint32_t s = 0; s < active; ++s) denom += w[s] * l[s];
    const float inv = 1.f / denom;
    const float* o = p.part_o + (size_t)h * p.splits * p.head_dim;
    for (uint32_t d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        float acc = 0.f;
#pragma unroll 8
        for (uint32_t s = 0; s < active; ++s) acc += w[s] * __ldcg(o + (size_t)s * p.head_dim + d);
        const uint32_t c = h * p.head_dim + d;
        p.out[p.out_idx ? __ldg(p.out_idx + c) : c] = __float2half_rn(acc * inv);
    }
}


// Which positions split `split` of a decode row covers. The grid is sized for the longest context; at short ones
// most splits have nothing to do (split >= active) and leave at once, and the merge only waits for the active ones.
// Whole multiples of MIN_PER_SPLIT positions per block (a block's warps take 32 positions a round at head_dim
// 128): a split of 33 would spend a second round on one position.
struct Split {
    uint32_t len, active, begin, end;
    // `pos`: the decode row's position (decode_position).
    __device__ __forceinline__ Split(const AttnParams& p, uint32_t split, uint32_t pos) {
        len = pos + 1;
        const uint32_t per =
            ((len + p.splits - 1) / p.splits + MIN_PER_SPLIT - 1) / MIN_PER_SPLIT * MIN_PER_SPLIT;
        active = (len + per - 1) / per;
        begin = split * per;
        end = min(len, begin + per);
    }
};

// The decode row's position, read before the kernel waits for its predecessor. Why that is sound: the position is
// written only by decode_advance (the step's last kernel) and by the host between graph launches, and the kernel
// before this one (the q/k/v projection) lets it start only after its own pdl_wait, i.e. after every earlier kernel
// has completed; `ld.global.cg` reads it from L2, where those writes are, not from a stale L1 line.
ENGINE_DEV uint32_t decode_position(const AttnParams& p) { return __ldcg(p.pos); }

// Ask L2 for the keys and values of split `s` that earlier steps wrote (positions before the newest, whose row the
// q/k/v kernel is writing), before the wait: by the time q is ready they are an L2 hit, not a DRAM round trip. A
// prefetch reads into L2 only, the point of coherence, so even a line written later would be seen fresh.
// Only for splits of at most MIN_PER_SPLIT positions (contexts up to splits × 32): there the rows are a few KB per
// block and the pass's latency is their round trip; at longer contexts they are a large share of the step's bytes,
// and asked for before the wait they take DRAM time from the q/k/v projection's own loads (H100, 7B: +1.5% decode
// after 16 tokens, −0.8% after 2048 with the prefetch at every context; BENCHMARKS.md).
ENGINE_DEV void prefetch_cached_rows(const AttnParams& p, uint32_t h, const Split& s) {
    const uint32_t kvh = h / (p.heads / p.kv_heads);
    const uint32_t rows_end = min(s.end, s.len - 1);
    if (rows_end <= s.begin || s.end - s.begin > MIN_PER_SPLIT) return;
    const size_t first = ((size_t)kvh * p.ctx + s.begin) * p.head_dim;  // elements
    const uint32_t bytes = (rows_end - s.begin) * p.head_dim * 2;
    // One address per 128-byte line the span touches (one more than its length in lines, as it need not start on
    // a line), each clamped to the span's last byte: every line is asked for and nothing outside the cache.
    const uint32_t lines = bytes / 128 + 2;
    const char* k = reinterpret_cast<const char*>(p.k_cache + first);
    const char* v = reinterpret_cast<const char*>(p.v_cache + first);
    for (uint32_t i = threadIdx.x; i < 2 * lines; i += blockDim.x) {
        const uint32_t at = min((i % lines) * 128, bytes - 1);
        prefetch_l2((i < lines ? k : v) + at);
    }
}

// The end of a decode block's pass over its split (`st` from block_pass): the head's output straight away when one
// split covers the sequence, else the split's partial state, and the last of the head's splits to arrive merges
// them all. `w`: 2 · MAX_SPLITS floats of shared memory; `last`: a shared flag. Every thread of the block calls it.
ENGINE_DEV void finish_split(const AttnParams& p, uint32_t h, uint32_t split, uint32_t active, const State& st,
                             float* w, bool* last) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t lp = p.head_dim / 8;
    if (active == 1) {
        // One block covers the whole sequence: no partials, no merge.
        if (warp == 0 && lane < (int)lp) store_out(p, h * p.head_dim + lane * 8, st.o, 1.f / st.l);
        return;
    }
    if (warp == 0 && lane < (int)lp) {
        float* o = p.part_o + ((size_t)h * p.splits + split) * p.head_dim + lane * 8;
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = st.o[i];
        if (lane == 0) {
            p.part_ml[(h * p.splits + split) * 2] = st.m;
            p.part_ml[(h * p.splits + split) * 2 + 1] = st.l;
        }
    }
    // The last active block of this head to arrive merges the splits in order. The fence makes this block's
    // partials visible before its arrival is counted.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) *last = atomicAdd(&p.counters[h], 1u) == active - 1;
    __syncthreads();
    if (!*last) return;
    __threadfence();
    merge_splits(p, h, active, w);
    if (threadIdx.x == 0) p.counters[h] = 0;
}

}  // namespace attn

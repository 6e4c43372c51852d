// Causal attention over the fp16 KV cache, for decode (one query, split over the sequence, flash-decoding style)
// and for prefill (one block per query row).
//
// Why this shape. At decode, one query per head meets up to `ctx` keys: too little work per head to fill the card
// if a head is one block, so the sequence is split into `splits` ranges, each block keeps an online softmax (running
// max m, running sum l, unnormalized output o) over its range, and the last block of a head to finish merges the
// ranges in split order — a fixed order, so the result is the same bits every run (no float atomics).
// Each position's key row is read by hd/8 lanes, 16 bytes each, so a warp reads whole rows contiguously, and the
// row's value is read right after with the same pattern: K and V are each read exactly once.
// Scores are kept in the log2 domain (the 1/sqrt(hd) scale is folded with log2(e)), so exp is one ex2.approx.
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

namespace attn {

constexpr int WARPS = 4;
constexpr int UNROLL = 4;      // positions per lane group per iteration
// Fewest positions per decode block: fewer cost more in merging than they save. 32 rather than 64 measured +1.1%
// decode after a 16-token prompt (H100: 508.1 → 513.9 tok/s), the same after 2048 tokens.
constexpr uint32_t MIN_PER_SPLIT = 32;
constexpr uint32_t MAX_SPLITS = 64;  // decode blocks per head at most (the plan's attention_splits clamps to it)
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

ENGINE_DEV void load8(const __half* p, float out[8]) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

// One block's pass over positions [p_begin, p_end) for query head `h` of row `row`. Returns the block's merged
// state in every thread of warp 0 (lane layout: lane % lp = which 8 dims).
ENGINE_DEV State block_pass(const AttnParams& p, uint32_t row, uint32_t h, uint32_t p_begin, uint32_t p_end,
                            State* smem) {
    const uint32_t lp = p.head_dim / 8;   // lanes per position
    const uint32_t ppw = 32 / lp;         // positions per warp per iteration
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t dl = lane % lp, pg = lane / lp;
    const uint32_t kvh = h / (p.heads / p.kv_heads);

    float q[8];
    load8(p.q + (size_t)row * p.heads * p.head_dim + h * p.head_dim + dl * 8, q);

    State st;
    st.m = ATTN_NEG_INF;
    st.l = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) st.o[i] = 0.f;

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
                kr[u] = *reinterpret_cast<const uint4*>(kbase + (size_t)pos * p.head_dim);
                vr[u] = *reinterpret_cast<const uint4*>(vbase + (size_t)pos * p.head_dim);
            }
        }
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
            for (uint32_t o = lp / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            s[u] = pos < p_end ? acc * p.scale_log2 : ATTN_NEG_INF;
        }
        // One rescale of the running state per UNROLL positions.
        float m = st.m;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) m = fmaxf(m, s[u]);
        if (m == ATTN_NEG_INF) continue;  // nothing valid yet for this lane group
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
    // Merge the position groups of the warp (lanes with the same dl), then the warps.
    for (uint32_t o = lp; o < 32; o <<= 1) {
        State other;
        other.m = __shfl_xor_sync(0xffffffffu, st.m, o);
        other.l = __shfl_xor_sync(0xffffffffu, st.l, o);
#pragma unroll
        for (int i = 0; i < 8; ++i) other.o[i] = __shfl_xor_sync(0xffffffffu, st.o[i], o);
        merge(st, other);
    }
    if (lane < (int)lp) smem[warp * 32 + lane] = st;
    __syncthreads();
    if (warp == 0 && lane < (int)lp) {
        for (int w = 1; w < WARPS; ++w) merge(st, smem[w * 32 + lane]);
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

}  // namespace attn

// Decode: grid (heads, splits), 128 threads. Row 0 at position *pos attends to positions 0..=*pos.
extern "C" __global__ void __launch_bounds__(128) attn_decode(const AttnParams p) {
    __shared__ attn::State smem[attn::WARPS * 32];
    __shared__ float split_w[2 * attn::MAX_SPLITS];
    __shared__ bool is_last;
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t h = blockIdx.x, split = blockIdx.y;
    const uint32_t len = *p.pos + 1;
    // The grid is sized for the longest context; at short ones most splits have nothing to do and leave at
    // once, and the merge only waits for the active ones.
    // Whole multiples of MIN_PER_SPLIT positions per block (a block's warps take 32 positions a round at
    // head_dim 128): a split of 33 would spend a second round on one position.
    const uint32_t per = ((len + p.splits - 1) / p.splits + attn::MIN_PER_SPLIT - 1) / attn::MIN_PER_SPLIT *
                         attn::MIN_PER_SPLIT;
    const uint32_t active = (len + per - 1) / per;
    if (split >= active) return;
    const uint32_t begin = split * per, end = min(len, begin + per);
    // Act-order: the output's indices, into L1 while the pass runs (whichever block stores them).
    if (p.out_idx && threadIdx.x < p.head_dim / 8) prefetch_l1(p.out_idx + h * p.head_dim + threadIdx.x * 8);
    attn::State st = attn::block_pass(p, 0, h, begin, end, smem);

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t lp = p.head_dim / 8;
    if (active == 1) {
        // One block covers the whole sequence: no partials, no merge.
        if (warp == 0 && lane < (int)lp) attn::store_out(p, h * p.head_dim + lane * 8, st.o, 1.f / st.l);
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
    if (threadIdx.x == 0) is_last = atomicAdd(&p.counters[h], 1u) == active - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    attn::merge_splits(p, h, active, split_w);
    if (threadIdx.x == 0) p.counters[h] = 0;
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

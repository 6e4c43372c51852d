// The language-model head for one row: final RMSNorm, logits = x · W_lm^T over fp16 weights [vocab][hidden],
// and (optionally) the greedy argmax, all in one launch.
//
// Why this shape. The head is the largest single matrix of a decode step (64000 × 4096 fp16 = 524 MB for
// Baichuan-7B), read once: a warp owns 4 vocabulary rows at a time and streams them 16 bytes per lane, each lane
// keeping the next k-step's 4 loads in flight while it multiplies this one's; the normalized input sits in shared
// memory as f32 (the dot products are f32). The argmax is fused: each block writes its best (logit, id), and the
// last block to finish reduces those in block order — a fixed order, ties to the smaller id, NaN never chosen — so
// greedy decoding needs no extra launch and no copy of the logits to the host.
//
// A greedy step (decode, and the prompt's first token) screens first (lm_head_screen, lm_head_exact below): a copy
// of the head in int8 — half the bytes of the largest matrix of the step — gives every row's logit to within a
// bound, and only the rows whose bound reaches the best row's lower bound are computed again from the fp16 weights,
// exactly as lm_head_f16 computes them. The token is the same one lm_head_f16 picks, not an approximation of it.
#include "tiles.cuh"  // HALF_INPUT_SCALE: the decode step's half input
#include <cuda_fp16.h>

struct LmHeadParams {
    const __half* w;        // [vocab][k]
    const float* x;         // the residual-stream row to project, f32 [k] (where x16 is null)
    const __half* norm_w;   // final RMSNorm weight [k] (where x16 is null)
    // Decode: null, or the half input the last residual update wrote (x · norm_w · HALF_INPUT_SCALE in fp16, see
    // tiles.cuh) and the n_ssq partial sums of squares of x it left, read instead of x and norm_w.
    const __half* x16;
    const float* ssq;
    float* logits;          // [vocab]
    float* part_val;        // [gridDim.x] best logit of each block
    uint32_t* part_idx;     // [gridDim.x] its id
    uint32_t* counter;      // one word, zero at rest (reset by the last block)
    uint32_t* token_out;    // argmax destination; null = logits only
    // The screen (lm_head_screen, lm_head_exact): the head in int8 (HeadScreenPackParams), each row's upper bound
    // on its logit, and the largest lower bound as an order key (screen_key; zero at rest, reset by the last block).
    const uint32_t* screen_q;
    const __half* screen_scales;
    float* screen_hi;
    uint32_t* screen_max;
    uint32_t vocab;
    uint32_t k;             // a multiple of 8
    uint32_t rows_per_block;
    uint32_t n_ssq;
    float eps;
};

namespace lmhead {

constexpr int WARPS = 8;
constexpr int ROWS = 4;  // vocabulary rows per warp pass

// (value, id) order for the argmax: larger value first, then smaller id; NaN ranks below everything.
ENGINE_DEV bool better(float v, uint32_t i, float bv, uint32_t bi) {
    if (v != v) return false;
    if (bv != bv) return true;
    return v > bv || (v == bv && i < bi);
}

ENGINE_DEV void block_best(float& v, uint32_t& i, float* sv, uint32_t* si) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(ov, oi, v, i)) v = ov, i = oi;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = v, si[warp] = i;
    __syncthreads();
    v = sv[0], i = si[0];
    for (int w = 1; w < WARPS; ++w)
        if (better(sv[w], si[w], v, i)) v = sv[w], i = si[w];
    __syncthreads();
}

// The normalized input row from the f32 residual stream and the norm weight (prefill rows): x is staged and its sum
// of squares reduced, then each thread scales the float4s it staged itself (so no barrier is needed between the
// passes) with the norm weight's four halves loaded 8 bytes at a time. 16-byte loads, four per thread in flight
// before the first is used: every block pays this prologue before it streams.
ENGINE_DEV void stage_normalized(const LmHeadParams& p, float* xs, float* scratch) {
    const uint32_t k4 = p.k / 4;
    const float4* x4 = reinterpret_cast<const float4*>(p.x);
    float4* xs4 = reinterpret_cast<float4*>(xs);
    float ss = 0.f;
    for (uint32_t base = threadIdx.x; base < k4; base += blockDim.x * 4) {
        float4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            v[u] = i < k4 ? x4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k4) xs4[i] = v[u];
            ss += v[u].x * v[u].x + v[u].y * v[u].y + v[u].z * v[u].z + v[u].w * v[u].w;
        }
    }
    const float inv_rms = rsqrtf(block_sum<WARPS>(ss, scratch) / (float)p.k + p.eps);
    for (uint32_t base = threadIdx.x; base < k4; base += blockDim.x * 4) {
        uint2 w[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k4) w[u] = reinterpret_cast<const uint2*>(p.norm_w)[i];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k4) {
                const float2 w01 = __half22float2(*reinterpret_cast<const __half2*>(&w[u].x));
                const float2 w23 = __half22float2(*reinterpret_cast<const __half2*>(&w[u].y));
                float4 v = xs4[i];
                v.x *= inv_rms * w01.x, v.y *= inv_rms * w01.y, v.z *= inv_rms * w23.x, v.w *= inv_rms * w23.y;
                xs4[i] = v;
            }
        }
    }
    __syncthreads();
}

// The normalized input row from the decode step's half input (x16, the norm weight folded in) and the partial sums
// of squares the last residual update left (one per tile of its columns). Why: 8 KB (7B) of fp16 and 1 KB of
// partials, loaded in one breath, where the f32 path loads 16 KB of x, reduces, then loads 8 KB of norm weight: one
// L2 round trip per block instead of two, and a third of the bytes, in front of each of the head's ~1000 blocks (the
// fused-norm GEMVs' half input, the same way; measured: BENCHMARKS.md).
ENGINE_DEV void stage_half_input(const LmHeadParams& p, float* xs, float* scratch) {
    const uint32_t k8 = p.k / 8;
    const uint4* x8 = reinterpret_cast<const uint4*>(p.x16);
    constexpr int IN_FLIGHT = 4;
    uint4 v[IN_FLIGHT];
    auto load_round = [&](uint32_t base) {
#pragma unroll
        for (int u = 0; u < IN_FLIGHT; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k8) v[u] = x8[i];
        }
    };
    // The first round's words and the partials are loaded before the reduction's barriers.
    load_round(threadIdx.x);
    float ss = 0.f;
    for (uint32_t i = threadIdx.x; i < p.n_ssq; i += blockDim.x) ss += p.ssq[i];
    const float scale = rsqrtf(block_sum<WARPS>(ss, scratch) / (float)p.k + p.eps) * (1.f / HALF_INPUT_SCALE);
    for (uint32_t base = threadIdx.x; base < k8; base += blockDim.x * IN_FLIGHT) {
        if (base != threadIdx.x) load_round(base);  // K past IN_FLIGHT words per thread (8192 at 256 threads)
#pragma unroll
        for (int u = 0; u < IN_FLIGHT; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i >= k8) break;
            const __half2* h = reinterpret_cast<const __half2*>(&v[u]);
            const float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
            const float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
            reinterpret_cast<float4*>(xs)[2 * i] = make_float4(f0.x * scale, f0.y * scale, f1.x * scale, f1.y * scale);
            reinterpret_cast<float4*>(xs)[2 * i + 1] =
                make_float4(f2.x * scale, f2.y * scale, f3.x * scale, f3.y * scale);
        }
    }
    __syncthreads();
}

// acc + the 8 products of one 16-byte chunk of fp16 weights and the staged row at chunk c, in one fixed order of
// explicit FMAs: lm_head_f16 and lm_head_exact both call this, so a row's logit has the same bits in either.
ENGINE_DEV float chunk_fma(float acc, const uint4& w, const float* xs, uint32_t c) {
    const float4 x0 = reinterpret_cast<const float4*>(xs)[2 * c];
    const float4 x1 = reinterpret_cast<const float4*>(xs)[2 * c + 1];
    const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    const __half2* h = reinterpret_cast<const __half2*>(&w);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float2 f = __half22float2(h[e]);
        acc = fmaf(f.y, xv[2 * e + 1], fmaf(f.x, xv[2 * e], acc));
    }
    return acc;
}

// The argmax's "last block merges" protocol: each block leaves its best (logit, id); the last block to arrive
// reduces them in block order (a fixed order, so the same token every run), writes the token and resets the
// counter. Returns true in the last block (every thread), after which the other blocks' reads are all done.
ENGINE_DEV bool merge_best(const LmHeadParams& p, float v, uint32_t i, float* sv, uint32_t* si) {
    __shared__ bool is_last;
    block_best(v, i, sv, si);
    if (threadIdx.x == 0) {
        p.part_val[blockIdx.x] = v;
        p.part_idx[blockIdx.x] = i;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(p.counter, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!is_last) return false;
    __threadfence();
    v = __int_as_float(0x7fc00000);
    i = 0xFFFFFFFFu;
    for (uint32_t b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
        const float bv = __ldcg(&p.part_val[b]);
        const uint32_t bi = __ldcg(&p.part_idx[b]);
        if (better(bv, bi, v, i)) v = bv, i = bi;
    }
    block_best(v, i, sv, si);
    if (threadIdx.x == 0) {
        // Every logit NaN: fall back to id 0 rather than an id outside the vocabulary.
        *p.token_out = i == 0xFFFFFFFFu ? 0u : i;
        *p.counter = 0;
    }
    return true;
}

// The normalized row into xs from whichever input the launch has (the decode step's half input, or a prefill row):
// every lm_head kernel stages through this, so the screen and the exact pass see the values lm_head_f16 sees.
ENGINE_DEV void stage_row(const LmHeadParams& p, float* xs, float* scratch) {
    if (p.x16) stage_half_input(p, xs, scratch);
    else stage_normalized(p, xs, scratch);
}

// Chunk c (16 bytes) of vocabulary rows r .. r + ROWS − 1; rows past the vocabulary are clamped to its last (computed,
// never stored).
struct HalfChunk {
    uint4 w[ROWS];
};
ENGINE_DEV void load_rows(const LmHeadParams& p, uint32_t r, uint32_t c, HalfChunk& out) {
#pragma unroll
    for (int j = 0; j < ROWS; ++j) {
        const uint32_t row = min(r + j, p.vocab - 1);
        out.w[j] = ldg_stream_v4(reinterpret_cast<const uint4*>(p.w + (size_t)row * p.k) + c);
    }
}

// A warp's pass over its rows of the block (r0, r0 + WARPS · ROWS, ... below row_end, ROWS at a time), each lane
// taking chunks lane, lane + 32, ... of `chunks`. Why: the next chunk — of these rows, or of the warp's next rows —
// is loaded before this one is used, so every lane keeps one chunk's loads in flight while it multiplies, across
// the row boundary too. `cur` holds chunk `lane` of rows r0 on entry (loaded before the kernel's wait);
// load(r, c, chunk) fills a chunk, use(c, chunk) consumes one, rows_done(r) follows the last chunk of rows r.
template <class Chunk, class Load, class Use, class RowsDone>
ENGINE_DEV void stream_rows(uint32_t r0, uint32_t row_end, uint32_t chunks, Chunk& cur, Load load, Use use,
                            RowsDone rows_done) {
    const uint32_t lane = threadIdx.x & 31;
    for (uint32_t r = r0; r < row_end; r += WARPS * ROWS) {
        for (uint32_t c = lane; c < chunks; c += 32) {
            uint32_t nc = c + 32, nr = r;
            if (nc >= chunks) nc = lane, nr = r + WARPS * ROWS;
            Chunk next;
            if (nr < row_end) load(nr, nc, next);
            use(c, cur);
            cur = next;
        }
        rows_done(r);
    }
}

}  // namespace lmhead

// Block: 256 threads; shared memory k * 4 bytes (+ a little static). Grid: ceil(vocab / rows_per_block), with
// rows_per_block a multiple of 32 (8 warps × 4 rows).
extern "C" __global__ void __launch_bounds__(256) lm_head_f16(const LmHeadParams p) {
    extern __shared__ __align__(16) float xs[];
    __shared__ float sv[lmhead::WARPS];
    __shared__ uint32_t si[lmhead::WARPS];
    using namespace lmhead;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t row0 = blockIdx.x * p.rows_per_block;
    const uint32_t row_end = min(p.vocab, row0 + p.rows_per_block);
    const uint32_t k16 = p.k / 8;  // 16-byte chunks per row
    // The head's weights never change, so each lane's first chunks go out before the wait for the previous kernel
    // and the staging of x: their DRAM latency hides behind those instead of following them.
    const uint32_t r0 = row0 + warp * ROWS;
    HalfChunk wv;
    if (r0 < row_end && (uint32_t)lane < k16) load_rows(p, r0, lane, wv);
    pdl_wait();
    pdl_launch_dependents();

    stage_row(p, xs, sv);

    float best_v = __int_as_float(0x7fc00000);  // NaN: "nothing yet"
    uint32_t best_i = 0xFFFFFFFFu;
    float acc[ROWS] = {0.f, 0.f, 0.f, 0.f};
    stream_rows(
        r0, row_end, k16, wv, [&](uint32_t r, uint32_t c, HalfChunk& w) { load_rows(p, r, c, w); },
        [&](uint32_t c, const HalfChunk& w) {
#pragma unroll
            for (int j = 0; j < ROWS; ++j) acc[j] = chunk_fma(acc[j], w.w[j], xs, c);
        },
        [&](uint32_t r) {
#pragma unroll
            for (int j = 0; j < ROWS; ++j) {
                const float v = warp_reduce_sum(acc[j]);
                acc[j] = 0.f;
                const uint32_t row = r + j;
                if (row < row_end) {
                    if (lane == 0) p.logits[row] = v;
                    if (better(v, row, best_v, best_i)) best_v = v, best_i = row;
                }
            }
        });
    if (p.token_out != nullptr) merge_best(p, best_v, best_i, sv, si);
}

// ---------------------------------------------------------------------------------------------------------------
// The screen of a greedy step (decode, and the prompt's first token).
//
// Why: the head is ~13% of a 7B decode step's bytes and the greedy step needs only its argmax. The screen streams
// an int8 copy (half the bytes) and proves which rows can still be the argmax; lm_head_exact recomputes just those
// from the fp16 weights with lm_head_f16's own arithmetic (chunk_fma, warp_reduce_sum), so the token is the one
// lm_head_f16 would pick, bit for bit, whatever the weights.
//
// The bound. Row i's weights w are stored as q · s per group g of SCREEN_GROUP columns, s = the group's max |w| / 127
// rounded up to fp16 (so |w| ≤ 127 s) and q = round(w / s), |q| ≤ 127: |w − q s| ≤ s / 2. With x the staged row
// (the same f32 values in both kernels) and E = Σ_g s_g ‖x_g‖₁:
//   - the screen's value A is Σ q s x to within γ · 127 E (f32 rounding: every partial sum is a chain of at most
//     n = k / 32 + 64 FMAs or adds, γ = n · 2^-24 up to a factor 1 + 2^-18), and Σ q s x is the real logit T to
//     within E / 2;
//   - lm_head_f16's value L is T to within γ Σ |w x| ≤ γ · 127 E.
// So |L − A| ≤ (1/2 + 254 γ) E. The screen widens that by 2^-8 of itself (E's own rounding, the rounding of A ± the
// bound) and by 2^-20 |A|, and writes hi = A + bound per row; the largest lo = A − bound over the rows (M) is a logit
// some row reaches. A row with hi < M has L < M ≤ that row's L, so it cannot be the argmax: lm_head_exact computes
// every other row (hi ≥ M, or NaN: a group with a weight that is not finite has scale +inf and its rows are always
// computed) and picks among them with lm_head_f16's order.
// ---------------------------------------------------------------------------------------------------------------

// Columns per int8 scale of the screen's copy of the head.
constexpr uint32_t SCREEN_GROUP = 128;

struct HeadScreenPackParams {
    const __half* w;        // [vocab][k], the head
    uint32_t* q;            // [vocab][k / 4]: q + 128 as bytes, four per word in column order
    __half* scales;         // [vocab][ceil(k / SCREEN_GROUP)]
    uint32_t vocab;
    uint32_t k;             // a multiple of 16
};

namespace lmhead {

// A float's bits as an unsigned key with the same order (atomicMax over floats of either sign).
ENGINE_DEV uint32_t screen_key(float f) {
    const uint32_t b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
// The float of a key; key 0 (no row yet: the buffer at rest) is −∞.
ENGINE_DEV float screen_key_value(uint32_t k) {
    if (k == 0) return __uint_as_float(0xFF800000u);
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// Σ (q − 128) x over one 16-byte chunk of offset bytes, the staged row at 16 c. Why the magic number: 2^23 + b has
// the byte b as its low mantissa bits, so one PRMT makes the float and one FADD takes 2^23 + 128 off, both exact.
ENGINE_DEV float screen_chunk_dot(const uint4& w, const float* xs, uint32_t c) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    const float4* x4 = reinterpret_cast<const float4*>(xs) + 4 * c;
    float acc = 0.f;
#pragma unroll
    for (int wi = 0; wi < 4; ++wi) {
        const float4 x = x4[wi];
        const float xv[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const float qf = __uint_as_float(__byte_perm(words[wi], 0x4B000000u, 0x7440u | b)) - 8388736.f;
            acc = fmaf(qf, xv[b], acc);
        }
    }
    return acc;
}

// Chunk c (16 bytes, 16 columns) of screen rows r .. r + ROWS − 1 and the scale of its group; rows past the
// vocabulary are clamped to its last (computed, never stored).
struct ScreenChunk {
    uint4 q[ROWS];
    __half s[ROWS];
};
ENGINE_DEV void load_screen_rows(const LmHeadParams& p, uint32_t r, uint32_t c, uint32_t groups, ScreenChunk& out) {
#pragma unroll
    for (int j = 0; j < ROWS; ++j) {
        const uint32_t row = min(r + j, p.vocab - 1);
        out.q[j] = ldg_stream_v4(reinterpret_cast<const uint4*>(p.screen_q + (size_t)row * (p.k / 4)) + c);
        out.s[j] = p.screen_scales[(size_t)row * groups + c * 16 / SCREEN_GROUP];
    }
}

// Row r's logit as lm_head_f16 computes it (the same chunks per lane, chunk_fma, warp_reduce_sum): every lane of
// the warp calls this and gets the same bits. Eight chunks per lane in flight at a time.
ENGINE_DEV float exact_row_logit(const LmHeadParams& p, const float* xs, uint32_t r) {
    constexpr int BATCH = 8;
    const int lane = threadIdx.x & 31;
    const uint32_t k16 = p.k / 8;
    const uint4* row = reinterpret_cast<const uint4*>(p.w + (size_t)r * p.k);
    float acc = 0.f;
    for (uint32_t c0 = lane; c0 < k16; c0 += 32 * BATCH) {
        uint4 w[BATCH];
#pragma unroll
        for (int u = 0; u < BATCH; ++u)
            if (c0 + 32 * u < k16) w[u] = ldg_stream_v4(row + c0 + 32 * u);
#pragma unroll
        for (int u = 0; u < BATCH; ++u)
            if (c0 + 32 * u < k16) acc = chunk_fma(acc, w[u], xs, c0 + 32 * u);
    }
    return warp_reduce_sum(acc);
}

}  // namespace lmhead

// The int8 copy of the head (once, when the weights are loaded). One warp per (row, group), four columns per lane.
// Block: 256 threads. Grid: ceil(vocab · groups / 8).
extern "C" __global__ void __launch_bounds__(256) lm_head_screen_pack(const HeadScreenPackParams p) {
    const uint32_t groups = (p.k + SCREEN_GROUP - 1) / SCREEN_GROUP;
    const uint32_t unit = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (unit >= p.vocab * groups) return;  // the whole warp
    const uint32_t row = unit / groups, g = unit % groups;
    const uint32_t col = g * SCREEN_GROUP + 4 * lane;
    const bool mine = col < p.k;  // groups end on a multiple of 16 columns: 4 per lane never straddle the end
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    if (mine) {
        const uint2 raw = *reinterpret_cast<const uint2*>(p.w + (size_t)row * p.k + col);
        const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
        v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
    }
    float m = 0.f;
    bool finite = true;
#pragma unroll
    for (int e = 0; e < 4; ++e) m = fmaxf(m, fabsf(v[e])), finite = finite && isfinite(v[e]);
    m = warp_reduce_max(m);
    // A group with a weight that is not finite gets scale +inf and q = 0: its rows' bounds are NaN, so the screen
    // always leaves them to lm_head_exact. Otherwise s ≥ max / 127 (rounded up), so |w / s| ≤ 127.
    const bool all_finite = __all_sync(0xffffffffu, finite);
    const __half s = all_finite ? __float2half_ru(m / 127.f) : __ushort_as_half(0x7C00);
    const float sf = __half2float(s);
    uint32_t word = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float q = all_finite && sf > 0.f ? fminf(fmaxf(rintf(__fdiv_rn(v[e], sf)), -127.f), 127.f) : 0.f;
        word |= (uint32_t)((int)q + 128) << (8 * e);
    }
    if (mine) p.q[((size_t)row * p.k + col) / 4] = word;
    if (lane == 0) p.scales[(size_t)row * groups + g] = s;
}

// The screen (a greedy step's head): each row's bounds from the int8 copy; writes hi per row and the
// largest lo (over the block's finite ones: one atomicMax per block). Block: 256 threads; shared memory k · 4 +
// k / 16 · 4 bytes. Grid: ceil(vocab / rows_per_block), rows_per_block a multiple of 32.
extern "C" __global__ void __launch_bounds__(256) lm_head_screen(const LmHeadParams p) {
    extern __shared__ __align__(16) float xs[];
    __shared__ float sv[lmhead::WARPS];
    __shared__ uint32_t block_lo;
    using namespace lmhead;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t row0 = blockIdx.x * p.rows_per_block;
    const uint32_t row_end = min(p.vocab, row0 + p.rows_per_block);
    const uint32_t c16 = p.k / 16;  // 16-byte chunks (16 columns) per int8 row
    const uint32_t groups = (p.k + SCREEN_GROUP - 1) / SCREEN_GROUP;
    // As lm_head_f16: the first chunks before the wait for the previous kernel.
    const uint32_t r0 = row0 + warp * ROWS;
    ScreenChunk wv;
    if (r0 < row_end && (uint32_t)lane < c16) load_screen_rows(p, r0, lane, groups, wv);
    pdl_wait();
    if (threadIdx.x == 0) block_lo = 0;
    stage_row(p, xs, sv);
    // ‖x‖₁ of each chunk: the bound's E sums s · ‖x_chunk‖₁ chunk by chunk.
    float* l1 = xs + p.k;
    for (uint32_t c = threadIdx.x; c < c16; c += blockDim.x) {
        const float4* x4 = reinterpret_cast<const float4*>(xs) + 4 * c;
        float n = 0.f;
#pragma unroll
        for (int u = 0; u < 4; ++u) n += fabsf(x4[u].x) + fabsf(x4[u].y) + fabsf(x4[u].z) + fabsf(x4[u].w);
        l1[c] = n;
    }
    __syncthreads();

    const float widen = (0.5f + 254.f * (float)(p.k / 32 + 64) * 0x1p-24f) * (1.f + 0x1p-8f);
    uint32_t best_lo = 0;
    float acc[ROWS] = {0.f, 0.f, 0.f, 0.f}, e1[ROWS] = {0.f, 0.f, 0.f, 0.f};
    stream_rows(
        r0, row_end, c16, wv, [&](uint32_t r, uint32_t c, ScreenChunk& w) { load_screen_rows(p, r, c, groups, w); },
        [&](uint32_t c, const ScreenChunk& w) {
            const float n = l1[c];
#pragma unroll
            for (int j = 0; j < ROWS; ++j) {
                const float s = __half2float(w.s[j]);
                acc[j] = fmaf(s, screen_chunk_dot(w.q[j], xs, c), acc[j]);
                e1[j] = fmaf(s, n, e1[j]);
            }
        },
        [&](uint32_t r) {
#pragma unroll
            for (int j = 0; j < ROWS; ++j) {
                const float a = warp_reduce_sum(acc[j]);
                const float bound = widen * warp_reduce_sum(e1[j]) + 0x1p-20f * fabsf(a);
                acc[j] = 0.f, e1[j] = 0.f;
                const uint32_t row = r + j;
                if (row < row_end) {
                    if (lane == 0) p.screen_hi[row] = a + bound;
                    const float lo = a - bound;
                    if (isfinite(lo)) best_lo = max(best_lo, screen_key(lo));
                }
            }
        });
    if (lane == 0 && best_lo != 0) atomicMax(&block_lo, best_lo);
    __syncthreads();
    if (threadIdx.x == 0 && block_lo != 0) atomicMax(p.screen_max, block_lo);
    // The exact pass needs every block's rows: let it launch only as the screen's blocks finish, so that its
    // waiting blocks do not hold SM room the screen's later blocks want.
    pdl_launch_dependents();
}

// The rows the screen could not rule out, computed from the fp16 weights as lm_head_f16 computes them, and their
// argmax (merge_best). Each warp takes 32 rows at a time; a block with no candidate skips the staging. Block: 256
// threads; shared memory k · 4 bytes. Grid: any (ceil(vocab / 256): one 32-row batch per warp).
extern "C" __global__ void __launch_bounds__(256) lm_head_exact(const LmHeadParams p) {
    extern __shared__ __align__(16) float xs[];
    __shared__ float sv[lmhead::WARPS];
    __shared__ uint32_t si[lmhead::WARPS];
    using namespace lmhead;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    pdl_wait();
    pdl_launch_dependents();
    const float m = screen_key_value(__ldcg(p.screen_max));
    const uint32_t stride = gridDim.x * WARPS * 32;
    const uint32_t first = (blockIdx.x * WARPS + warp) * 32;
    // The warp's candidates among rows base .. base + 31 (the whole warp calls this).
    auto candidates = [&](uint32_t base) {
        const uint32_t r = base + lane;
        return __ballot_sync(0xffffffffu, r < p.vocab && !(__ldcg(p.screen_hi + r) < m));
    };
    // The first batch's candidates are kept for the pass below: with the default grid a warp has only that batch,
    // and reading screen_hi again after the staging would put a second L2 round trip on the step's critical path.
    const uint32_t first_mask = first < p.vocab ? candidates(first) : 0u;
    bool any = first_mask != 0;
    for (uint32_t base = first + stride; !any && base < p.vocab; base += stride) any = candidates(base) != 0;
    float best_v = __int_as_float(0x7fc00000);
    uint32_t best_i = 0xFFFFFFFFu;
    if (__syncthreads_or(any)) {
        stage_row(p, xs, sv);
        for (uint32_t base = first; base < p.vocab; base += stride) {
            uint32_t mask = base == first ? first_mask : candidates(base);
            while (mask) {
                const uint32_t row = base + __ffs(mask) - 1;
                mask &= mask - 1;
                const float v = exact_row_logit(p, xs, row);
                if (better(v, row, best_v, best_i)) best_v = v, best_i = row;
            }
        }
    }
    if (merge_best(p, best_v, best_i, sv, si) && threadIdx.x == 0) *p.screen_max = 0;
}

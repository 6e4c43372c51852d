// Prefill GEMM for chunks of at most 16 rows: Y[r][col] (op)= Σ_k A[r][k] · W[k][col] with GPTQ int4 weights in the
// engine's tile layout (tiles.cuh), on the tensor cores, streaming the weights like the decode GEMV.
//
// Why this shape. With ≤ 16 rows the GEMM reads exactly the GEMV's bytes and does 16× its multiplies, which the
// tensor cores absorb; what decides the time is how the weights stream. gemm.cu's tile loop (copy a step to
// shared memory, barrier, dequantize into shared memory, barrier, ldmatrix, MMA) keeps few bytes in flight and
// pays two barriers per 64 rows. Here, like gemv.cu:
//   - every warp runs on its own from the first weight load to its last MMA: no barrier in the K loop. Warps split
//     a block's slot tiles (warp w takes tiles w, w + 8, ...), so they never need each other's sums either;
//   - each lane keeps DEPTH work items (2 × 16 bytes of weights each) in flight in registers, issued before the
//     block even waits for the previous kernel (the weights never change), refilled as each is consumed;
//   - the weights go from their 16-byte loads straight into MMA operands — no shared memory, no shuffles — thanks
//     to the fragment mapping below; only A (≤ 16 rows × the block's K range, fp16) is staged, once per block.
//
// The fragment mapping (the heart of it). mma.m16n8k16 computes C[16 × 8] += A[16 × 16] · B[16 × 8]. Here the
// 16 MMA rows are the chunk's rows (A = activations), the 8 MMA columns are 8 slots (B = weights). In B's fragment
// (tensor_core.cuh), lane (g = lane / 4, t = lane % 4) holds column g at k = 2t, 2t+1 (b0) and 2t+8, 2t+9 (b1):
// each lane holds ONE column, and the four lanes t = 0..3 of a column share it. The sum over k does not care which
// real input row stands behind each k of an MMA, as long as A's fragment agrees. So:
//   - lane (g, t) loads, for the double step of steps s, s+1, the uint4 qw[tile][s + t/2][16·(t%2) + 8h + g]
//     (h = 0, 1: slots 0..7, 8..15): the 32 rows of 32-row chunk c = 2s + t of slot 8h + g. Over the warp that is
//     4 whole 128-byte lines per load, and the two loads together are the double step's 1024 contiguous bytes;
//   - word w of that uint4 (rows 8w .. 8w+7 of the chunk) dequantizes into the pairs P_i = (row 8w+i, 8w+i+4),
//     i = 0..3 (the same values as gemm.cu: (q − z) exactly, then × scale, rounded once to fp16), and
//     MMA (w, e) for e = 0, 1 takes b0 = P_{2e}, b1 = P_{2e+1} straight from registers. So MMA (w, e) pairs its
//     k = 2t + j (j = 0, 1) with input row 32c + 8w + 2e + 4j and k = 2t + 8 + j with row 32c + 8w + 2e + 1 + 4j,
//     where c = 2s + t depends on t alone — which is exactly what A's fragment needs (lane (g, t) of A holds rows
//     g, g+8 at k = 2t, 2t+1, 2t+8, 2t+9: the same k's, so the same input rows);
//   - A is staged with the same pairing: for row r, 16-byte unit (q, w, t) holds the pairs (x[k0 + i], x[k0 + i + 4])
//     for i = 0..3, k0 = 128q + 32t + 8w from the block's first row (q = double step). One 16-byte shared load of
//     row g then gives lane (g, t) a0/a2 of both MMAs of word w ({P0, P1} for e = 0, {P2, P3} for e = 1); a second
//     one, of row g + 8, gives a1/a3.
// Per item (one tile × one double step: 128 rows × 16 slots, 1 KB of weights per warp) a lane issues 2 weight loads
// and 8 shared loads (4 with m ≤ 8), dequantizes 8 words (13 instructions each) and issues 16 MMAs.
//
// Split-K (grid.y > 1): with few rows the K range a block stages must stay small, so K is split over grid.y. A warp
// that finishes a tile writes its accumulators, as they lie in the fragments (1 KB per tile, coalesced), to
// part[split][tile], and bumps the tile's counter; the warp that brings it to k_splits adds the tile's k_splits
// partials in split order — a fixed order, so every run gives the same bits whichever warp is last — and applies the
// epilogue. Per tile rather than per block: a warp's first tiles are complete long before the kernel ends, so most
// of the reduction overlaps other warps' streaming, and no single block has to read a whole column's partials at
// the end.
// A's columns must already be in the weights' sorted row order (act-order: norm.cu / swiglu.cu / permute_cols write
// them so; with a permutation per fused part, a block stages the copy of its part). Rows past `m` and inputs past `k` are staged as zeros; weights past the block's K range load as zeros.
#include "tiles.cuh"
#include "tensor_core.cuh"

namespace gsmall {

constexpr int WARPS = 8;
constexpr int THREADS = WARPS * 32;
constexpr int ROWS = 16;  // A rows staged per block: m ≤ 16 (rows past m are zero)
// Work items (one tile × one double step: 1 KB of weights per warp, 10 registers per lane) in flight per warp.
// Two blocks of 8 warps per SM then keep up to 64 KB of weights on their way: at 3 TB/s and ~1 µs of loaded DRAM
// latency an SM needs ~23 KB. More would not fit 128 registers next to the accumulators and the split reduction.
constexpr int DEPTH = 4;
// The same bytes in flight with 8-bit and fp16 tiles, whose items are two and four times as large.
template <int BITS>
constexpr int depth() {
    return DEPTH / lane_words<BITS>();
}
constexpr int STAGE = 8;  // 16-byte A loads a thread issues before storing any: ≤ 3 round trips at 46 steps
enum Out { STORE16 = 0, RESIDUAL = 1 };

// K steps (64 rows) per split: even, so that every split starts on a double step. The host mirrors this
// (shapes.rs: gemm_small_per_split) to size the shared memory.
ENGINE_DEV uint32_t per_split_steps(uint32_t steps, uint32_t splits) {
    const uint32_t s = (steps + splits - 1) / splits;
    return (s + 1) & ~1u;
}

// The group of a 32-row chunk without a division when the group size is 32 times a power of two (every layout
// the loader accepts; one group counts as such), with one otherwise.
struct Groups {
    uint32_t chunks;  // 32-row chunks per group
    uint32_t shift;   // log2(chunks) when pow2 (31 for one group: every chunk index shifts to 0)
    uint32_t last;    // groups - 1
    bool pow2;
};

ENGINE_DEV Groups make_groups(const GemmParams& p) {
    Groups gm;
    gm.chunks = max(p.group_size / INT4_CHUNK_K, 1u);
    gm.last = p.groups - 1;
    gm.pow2 = p.groups == 1 || (gm.chunks & (gm.chunks - 1)) == 0;
    gm.shift = p.groups == 1 ? 31u : (uint32_t)(__ffs(gm.chunks) - 1);
    return gm;
}

ENGINE_DEV uint32_t group_of(uint32_t chunk, const Groups& gm) {
    return min(gm.pow2 ? chunk >> gm.shift : chunk / gm.chunks, gm.last);
}

// One work item of a lane: its weight uint4s (h = 0: slot g, h = 1: slot 8 + g; W = lane_words of each) and their
// (scale, zero) words.
template <int W>
struct Item {
    uint4 w[2][W];
    uint32_t sz[2];
};

// Issue the loads of the double step that starts at step s (even offset from the split's start) of `tile`. A lane
// whose step is past the split's end (the odd last step of K) gets zero weights and a zero (scale, 1024 + zero):
// they dequantize to 0, finite, and meet zeros in A anyway. The scales go out with the weights: loaded inside the
// multiply, each would cost the item a dependent memory round trip.
template <int W>
ENGINE_DEV void load_item(const GemmParams& p, const Groups& gm, uint32_t steps, uint32_t tile, uint32_t s,
                          uint32_t s_end, Item<W>& it) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint32_t step = s + (t >> 1);
    if (step < s_end) {
        const uint32_t chunk = 2 * s + t;  // = 2 · step + t % 2
        const uint4* w = p.qw + ((size_t)tile * steps + step) * 32 * W + (t & 1) * 16 + g;
        const uint32_t* z = p.sz + ((size_t)tile * p.groups + group_of(chunk, gm)) * INT4_TILE_N + g;
#pragma unroll
        for (int u = 0; u < W; ++u) {
            it.w[0][u] = ldg_stream_v4(w + u * 32);
            it.w[1][u] = ldg_stream_v4(w + u * 32 + 8);
        }
        it.sz[0] = __ldg(z);
        it.sz[1] = __ldg(z + 8);
    } else {
#pragma unroll
        for (int u = 0; u < W; ++u) it.w[0][u] = it.w[1][u] = make_uint4(0u, 0u, 0u, 0u);
        it.sz[0] = it.sz[1] = 0u;
    }
}

// Word -> the four B registers of MMAs (w, 0) and (w, 1): d[i] = (row i, row i + 4) of the word, each (q − z) · s.
// Same values, bit for bit, as gemm.cu's dequant_word + __hmul2; the instructions are the GEMV's: nibbles
// 0/4 and 2/6 become 1024 + q (LOP3) minus (1024 + z) (HSUB2), nibbles 1/5 and 3/7 are taken unshifted as 1024 + 16q
// and brought to q − z by one HFMA2 (× 1/16, − (64 + z)) — both exact — then one HMUL2 by the scale each.
ENGINE_DEV void dequant_scaled(uint32_t word, __half2 zz, __half2 zh, __half2 sc, uint32_t d[4]) {
    const __half2 sixteenth = u32_as_half2(0x2C002C00u);
    const uint32_t hi = word >> 8;
    d[0] = half2_as_u32(__hmul2(__hsub2(u32_as_half2(lop3_and_or(word, 0x000F000Fu, 0x64006400u)), zz), sc));
    d[1] = half2_as_u32(
        __hmul2(__hfma2(u32_as_half2(lop3_and_or(word, 0x00F000F0u, 0x64006400u)), sixteenth, zh), sc));
    d[2] = half2_as_u32(__hmul2(__hsub2(u32_as_half2(lop3_and_or(hi, 0x000F000Fu, 0x64006400u)), zz), sc));
    d[3] = half2_as_u32(
        __hmul2(__hfma2(u32_as_half2(lop3_and_or(hi, 0x00F000F0u, 0x64006400u)), sixteenth, zh), sc));
}

// The same for rows 8i .. 8i + 7 of an 8-bit chunk (its two words `w`: one PRMT, one HSUB2, exact, and one HMUL2
// per pair, the values of gemm.cu's int8 dequantization) or an fp16 one (its four words: the pairs as they are;
// the scale is 1).
template <int BITS>
ENGINE_DEV void dequant_scaled_wide(const uint4* w, int i, __half2 zz, __half2 sc, uint32_t d[4]) {
    __half2 q[4];
    dequant_rows8<BITS>(w, i, zz, q);
#pragma unroll
    for (int j = 0; j < 4; ++j) d[j] = half2_as_u32(BITS == 16 ? q[j] : __hmul2(q[j], sc));
}

// The 16 MMAs of one item. `a_lo` points at the staged unit (q, w = 0, t) of row g, `a_hi` at row g + 8; word w is
// 4 units further. acc[h][e]: h = slot half, e as in the C fragment (row g / g + 8, slot 8h + 2t + e % 2).
template <int W>
ENGINE_DEV void mma_item(const Item<W>& it, const uint4* a_lo, const uint4* a_hi, bool hi_rows, float acc[2][4]) {
    __half2 zz[2], zh[2], sc[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const __half2 s = u32_as_half2(it.sz[h]);
        zz[h] = __high2half2(s);                               // 1024 + zero
        zh[h] = unshifted_zero(zz[h]);                         // −(64 + zero)
        sc[h] = __low2half2(s);
    }
#pragma unroll
    for (int w = 0; w < 4; ++w) {
        const uint4 lo = a_lo[4 * w];
        // With at most 8 rows, rows 8..15 are zero: skip their loads (half the shared-memory traffic).
        const uint4 hi = hi_rows ? a_hi[4 * w] : make_uint4(0u, 0u, 0u, 0u);
        const uint32_t a_e0[4] = {lo.x, hi.x, lo.y, hi.y};  // a0..a3 of MMA (w, 0): pairs P0 (k 2t..), P1 (k 2t+8..)
        const uint32_t a_e1[4] = {lo.z, hi.z, lo.w, hi.w};  // MMA (w, 1): pairs P2, P3
        uint32_t d[2][4];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if constexpr (W == 1) dequant_scaled(word_of(it.w[h][0], w), zz[h], zh[h], sc[h], d[h]);
            else dequant_scaled_wide<W * 4>(it.w[h], w, zz[h], sc[h], d[h]);
        }
        // Alternate the two accumulators: each MMA's predecessor on the same accumulator is two MMAs back.
        tc::mma_16816(acc[0], a_e0, d[0][0], d[0][1]);
        tc::mma_16816(acc[1], a_e0, d[1][0], d[1][1]);
        tc::mma_16816(acc[0], a_e1, d[0][2], d[0][3]);
        tc::mma_16816(acc[1], a_e1, d[1][2], d[1][3]);
    }
}

// Stage A's rows 0..15 over the block's K range [k0, k0 + 64 · per_split) into shared memory in the MMA pairing
// (see the top of the file): unit (row, q, w, t) at as[row · rsu + 16q + 4w + t] holds source halves
// x[k0 + 128q + 32t + 8w + 0..7] as (x0, x4), (x1, x5), (x2, x6), (x3, x7). Consecutive threads read consecutive
// 16-byte pieces of a row (coalesced). Rows ≥ m and inputs ≥ k are zeros (k is a multiple of 8, so a piece is
// either all in or all out). Each row is padded by 64 bytes, so that rows g and g + 1 of a quarter-warp's
// 16-byte loads fall in opposite halves of the 32 banks: the MMA loop's shared loads are conflict-free.
ENGINE_DEV void stage_a(const GemmParams& p, const __half* a, uint4* as, uint32_t mm, uint32_t k0, uint32_t per_split,
                        uint32_t rsu) {
    const uint32_t per_row = per_split * 8;  // 16-byte pieces per row: 64 · per_split halves / 8
    const uint32_t total = ROWS * per_row;
    for (uint32_t base = threadIdx.x; base < total; base += THREADS * STAGE) {
        uint4 v[STAGE];
#pragma unroll
        for (int u = 0; u < STAGE; ++u) {
            const uint32_t i = base + u * THREADS;
            v[u] = make_uint4(0u, 0u, 0u, 0u);
            if (i < total) {
                const uint32_t row = i / per_row, col = k0 + (i % per_row) * 8;
                // .cg (L2 only): each block reads its A once, and L1 must not serve a line of an earlier A.
                if (row < mm && col < p.k) v[u] = __ldcg(reinterpret_cast<const uint4*>(a + (size_t)row * p.lda + col));
            }
        }
#pragma unroll
        for (int u = 0; u < STAGE; ++u) {
            const uint32_t i = base + u * THREADS;
            if (i < total) {
                const uint32_t row = i / per_row, piece = i % per_row;
                const uint32_t q = piece >> 4, t = (piece >> 2) & 3, w = piece & 3;  // piece = 16q + 4t + w
                uint4 o;
                o.x = __byte_perm(v[u].x, v[u].z, 0x5410);  // (x0, x4)
                o.y = __byte_perm(v[u].x, v[u].z, 0x7632);  // (x1, x5)
                o.z = __byte_perm(v[u].y, v[u].w, 0x5410);  // (x2, x6)
                o.w = __byte_perm(v[u].y, v[u].w, 0x7632);  // (x3, x7)
                as[row * rsu + 16 * q + 4 * w + t] = o;
            }
        }
    }
}

template <int OUT>
ENGINE_DEV void store_out(const GemmParams& p, uint32_t row, uint32_t col, float v) {
    const size_t i = (size_t)row * p.ldy + col;
    if (OUT == STORE16) p.y16[i] = __float2half_rn(v);
    else p.y32[i] += v;
}

// The epilogue of a finished tile. Lane (g, t) holds rows g (e = 0, 1) and g + 8 (e = 2, 3) of slots
// 16·tile + 8h + 2t + e % 2.
template <int OUT>
ENGINE_DEV void epilogue(const GemmParams& p, uint32_t mm, uint32_t tile, const float acc[2][4]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const uint32_t slot = tile * INT4_TILE_N + 8 * h + 2 * t;
        const uint32_t col[2] = {__ldg(p.col_map + slot), __ldg(p.col_map + slot + 1)};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const uint32_t row = g + 8 * r;
            if (row >= mm) continue;
#pragma unroll
            for (int c = 0; c < 2; ++c)
                if (col[c] != INT4_PAD_SLOT) store_out<OUT>(p, row, col[c], acc[h][2 * r + c]);
        }
    }
}

// Splits whose partials the reducing lane loads at once (2 float4 each): enough to overlap the loads, few enough
// registers to sit next to the DEPTH items in flight without spilling.
constexpr int REDUCE_BATCH = 4;

// Split-K: publish this warp's partial sums of `tile` (part[split][tile][lane][8], the accumulators as they lie in
// the fragments) and, if it is the last of the k_splits warps of the tile, replace acc by the sum of all k_splits
// partials in split order and return true (the caller applies the epilogue). Warp-wide: all 32 lanes call it.
ENGINE_DEV bool publish_or_reduce(const GemmParams& p, uint32_t tile, float acc[2][4]) {
    const int lane = threadIdx.x & 31;
    const uint32_t tiles = p.n_pad / INT4_TILE_N;
    float4* mine = reinterpret_cast<float4*>(p.part) + ((size_t)blockIdx.y * tiles + tile) * 64 + 2 * lane;
    mine[0] = make_float4(acc[0][0], acc[0][1], acc[0][2], acc[0][3]);
    mine[1] = make_float4(acc[1][0], acc[1][1], acc[1][2], acc[1][3]);
    // The classic last-arrival pattern (as gemm.cu, per warp): every lane's stores are visible device-wide
    // before lane 0 counts the warp in; the last warp reads the others' partials after its own fence, through L2.
    __threadfence();
    __syncwarp();
    uint32_t last = 0;
    if (lane == 0) last = atomicAdd(p.counters + tile, 1u) == p.k_splits - 1;
    last = __shfl_sync(0xffffffffu, last, 0);
    if (!last) return false;
    __threadfence();
    const float4* src = reinterpret_cast<const float4*>(p.part) + (size_t)tile * 64 + 2 * lane;
    const size_t zstride = (size_t)tiles * 64;  // float4s per split
    float4 s0 = make_float4(0.f, 0.f, 0.f, 0.f), s1 = s0;
    for (uint32_t z0 = 0; z0 < p.k_splits; z0 += REDUCE_BATCH) {
        float4 x[REDUCE_BATCH][2];
#pragma unroll
        for (int j = 0; j < REDUCE_BATCH; ++j)
            if (z0 + j < p.k_splits) {
                x[j][0] = __ldcg(src + (z0 + j) * zstride);
                x[j][1] = __ldcg(src + (z0 + j) * zstride + 1);
            }
#pragma unroll
        for (int j = 0; j < REDUCE_BATCH; ++j)
            if (z0 + j < p.k_splits) {
                s0.x += x[j][0].x, s0.y += x[j][0].y, s0.z += x[j][0].z, s0.w += x[j][0].w;
                s1.x += x[j][1].x, s1.y += x[j][1].y, s1.z += x[j][1].z, s1.w += x[j][1].w;
            }
    }
    acc[0][0] = s0.x, acc[0][1] = s0.y, acc[0][2] = s0.z, acc[0][3] = s0.w;
    acc[1][0] = s1.x, acc[1][1] = s1.y, acc[1][2] = s1.z, acc[1][3] = s1.w;
    if (lane == 0) p.counters[tile] = 0;  // zero at rest, for the next launch (no other warp counts this tile now)
    return true;
}

// A warp's finished tile: straight to the epilogue, or through the split-K partials.
template <int OUT>
ENGINE_DEV void finish_tile(const GemmParams& p, uint32_t mm, uint32_t tile, float acc[2][4]) {
    if (p.k_splits == 1 || publish_or_reduce(p, tile, acc)) epilogue<OUT>(p, mm, tile, acc);
}

template <int OUT, int BITS>
ENGINE_DEV void run(const GemmParams& p) {
    constexpr int W = lane_words<BITS>(), D = depth<BITS>();
    extern __shared__ __align__(16) unsigned char smem_raw[];
    uint4* as = reinterpret_cast<uint4*>(smem_raw);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const uint32_t mm = min(p.m, (uint32_t)ROWS);
    const uint32_t steps = p.k_pad / INT4_STEP_K, tiles = p.n_pad / INT4_TILE_N;
    // This block: tiles [t_begin, t_end) (tiles per block from the grid, so no parameter can disagree with it)...
    const uint32_t tpb = (tiles + gridDim.x - 1) / gridDim.x;
    const uint32_t t_begin = min(tiles, blockIdx.x * tpb), t_end = min(tiles, t_begin + tpb);
    // ... and steps [s_begin, s_end): an even count except at the end of an odd K; empty splits are allowed.
    const uint32_t per_split = per_split_steps(steps, p.k_splits);
    const uint32_t s_begin = min(steps, blockIdx.y * per_split), s_end = min(steps, s_begin + per_split);
    const uint32_t nq = (s_end - s_begin + 1) / 2;  // double steps
    const uint32_t rsu = per_split * 8 + 4;         // staged row stride in uint4 (+ 64 bytes of padding)
    const Groups gm = make_groups(p);

    // This warp's tiles: first, first + 8, ... < t_end; its items run tile by tile, double step by double step.
    const uint32_t first = t_begin + warp;
    const uint32_t n_tiles = first < t_end ? (t_end - first + WARPS - 1) / WARPS : 0;
    const uint32_t n_items = n_tiles * nq;

    // The weights never change, so the first DEPTH items go out before waiting for the previous kernel: their
    // DRAM latency hides the launch gap and the staging of A.
    Item<W> buf[D];
    uint32_t ld_tile = first, ld_q = 0;
#pragma unroll
    for (int u = 0; u < D; ++u) {
        if ((uint32_t)u < n_items) {
            load_item(p, gm, steps, ld_tile, s_begin + 2 * ld_q, s_end, buf[u]);
            if (++ld_q == nq) ld_q = 0, ld_tile += WARPS;
        }
    }

    // Nothing before this line may read what the previous kernel writes (A, y32) or write what it may still read
    // (outputs, partials, counters).
    pdl_wait();
    // With act-order and a permutation per fused part, the copy of A in this block's part's row order (the host keeps
    // part boundaries on block boundaries).
    stage_a(p, part_a(p, t_begin * INT4_TILE_N), as, mm, s_begin * INT4_STEP_K, per_split, rsu);
    __syncthreads();
    pdl_launch_dependents();

    const bool hi_rows = mm > 8;
    float acc[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[h][e] = 0.f;
    if (nq == 0) {
        // An empty split (more splits than double steps): its partials are zeros, and must still be counted in.
        for (uint32_t tile = first; tile < t_end; tile += WARPS) {
            finish_tile<OUT>(p, mm, tile, acc);
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[h][e] = 0.f;
        }
    }
    uint32_t c_tile = first, c_q = 0;
    const uint4* a_row = as + g * rsu + t;  // unit (q = 0, w = 0, t) of row g
    for (uint32_t i0 = 0; i0 < n_items; i0 += D) {
#pragma unroll
        for (int u = 0; u < D; ++u) {
            const uint32_t i = i0 + u;
            if (i < n_items) {
                mma_item(buf[u], a_row + 16 * c_q, a_row + 8 * rsu + 16 * c_q, hi_rows, acc);
                // Refill the slot just consumed with the item DEPTH ahead (software pipelining in registers).
                if (i + D < n_items) {
                    load_item(p, gm, steps, ld_tile, s_begin + 2 * ld_q, s_end, buf[u]);
                    if (++ld_q == nq) ld_q = 0, ld_tile += WARPS;
                }
                if (++c_q == nq) {
                    finish_tile<OUT>(p, mm, c_tile, acc);
#pragma unroll
                    for (int h = 0; h < 2; ++h)
#pragma unroll
                        for (int e = 0; e < 4; ++e) acc[h][e] = 0.f;
                    c_q = 0, c_tile += WARPS;
                }
            }
        }
    }
}

}  // namespace gsmall

// Block: 256 threads (8 warps). Grid: (ceil(tiles / tiles_per_block), k_splits) with tiles = n_pad / 16; the kernel
// takes tiles_per_block = ceil(tiles / grid.x). Dynamic shared memory: 16 · (per_split · 128 + 64) bytes, per_split
// = ceil(k_pad / 64 / k_splits) rounded up to even (shapes.rs: gemm_small_smem_bytes). Split-K needs part
// (k_splits · 16 · n_pad floats) and one counter per tile, zero at rest. m ≤ 16.
// Two blocks per SM: at most 128 registers per thread.

// Each kernel comes three times, gemm_small_int4_NAME, gemm_small_int8_NAME and gemm_small_f16_NAME (the same code
// over 8-bit and fp16 tiles).
#define GEMM_SMALL_KERNEL(NAME, OUT)                                                                              \
    extern "C" __global__ void __launch_bounds__(256, 2) gemm_small_int4_##NAME(const GemmParams p) {            \
        gsmall::run<OUT, 4>(p);                                                                                   \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256, 2) gemm_small_int8_##NAME(const GemmParams p) {            \
        gsmall::run<OUT, 8>(p);                                                                                   \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256, 2) gemm_small_f16_##NAME(const GemmParams p) {             \
        gsmall::run<OUT, 16>(p);                                                                                  \
    }

// f16 output: y16[r][col] = acc (q/k/v, gate/up).
GEMM_SMALL_KERNEL(store16, gsmall::STORE16)

// Added into the f32 residual stream: y32[r][col] += acc (o, down).
GEMM_SMALL_KERNEL(residual, gsmall::RESIDUAL)

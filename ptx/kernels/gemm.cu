// Prefill GEMM for GPTQ int4 weights on the tensor cores: Y[m][col] (op)= Σ_k A[m][k] · W[k][col], with A the fp16
// rows of a prefill chunk and W dequantized on the fly from the same tile layout the decode GEMV reads.
//
// Why this shape. With tens to hundreds of rows the work is arithmetic, not bytes, so the inner loop is
// `mma.sync.m16n8k16` (f16 in, f32 accumulate). Each block computes a 64-row × 64-slot tile of Y:
//   - per K step (64 rows of W), the block copies the step's raw int4 words (4 slot-tiles × 512 bytes) and a
//     64 × 64 tile of A into shared memory with cp.async, one stage ahead of the math (double buffering), so the
//     copies of step s + 1 overlap the MMAs of step s;
//   - the 128 threads dequantize the raw words once per step into an fp16 tile [slot][k] — one uint4 of weights
//     (32 values) per thread — which every warp then reads with ldmatrix: dequantization is amortized over all
//     64 rows of A, so it costs ~1/64 of a GEMV's per-weight work;
//   - rows of both shared tiles are padded by 16 bytes so that ldmatrix's eight row addresses hit distinct banks.
// Split-K (grid.z > 1): with few rows, N/64 blocks walking all of K one step at a time are latency-bound, so K is
// split over grid.z blocks; each writes its partial tile, and the last of them to arrive (a counter per tile) adds
// the partials in split order — fixed, so the result is the same bits every run — and applies the epilogue.
// Chunks of 128 rows and more use the 128 × 128 variant further down (`gemm128_*`: 8 warps, a double-buffered
// dequantized tile, one barrier per step; on cards that grant a block 105 KB of shared memory), where this 64 × 64
// tile is bound by shared memory and barriers rather than by the tensor cores.
// A's columns must already be in the weights' sorted row order (norm.cu / swiglu.cu permute them when act-order
// is on; with a permutation per fused part, a block picks the copy of its part: part_a). Rows past `m` and K
// columns past `k` are zero-filled by cp.async (src-size 0) and never stored.
#include "tiles.cuh"
#include "tensor_core.cuh"

namespace gemm {

constexpr int BN = 64, BK = 64;  // the row tile BM is a template parameter (64 is instantiated; see gemm_small.cu)
// K steps in flight: STAGES - 1 steps are being copied while one is multiplied. With few rows the GEMM streams
// weights like a GEMV, and one step in flight per block (2 KB of weights) cannot cover the memory latency.
constexpr int STAGES = 4;
constexpr int THREADS = 128;
constexpr int LDS = BK + 8;  // padded row (halves) of the shared A and dequantized-W tiles
// SWIGLU_K: the short wgmma tile's own (gemm_wgmma_short.cu): SwiGLU of a paired gate/up into the down projection's
// input, in its K order; QKV_ROPE_K: its q/k/v epilogue, rotary embedding and KV-cache append. store_one never
// sees them.
enum Out { STORE16 = 0, RESIDUAL = 1, STORE32 = 2, SWIGLU_K = 3, QKV_ROPE_K = 4 };

// The tensor-core building blocks (cp.async, ldmatrix, mma.sync) are tensor_core.cuh's.
using tc::cp_async16;
using tc::cp_async_commit;
using tc::cp_async_wait;
using tc::ldmatrix_x4;
using tc::ldmatrix_x4_at;
using tc::mma_16816;
using tc::smem_addr;

// 4-byte asynchronous copy global → shared (through L1: scales are reused by neighbouring blocks).
ENGINE_DEV void cp_async4(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}

// Eight weights as the pairs d[j] = (row j, row j + 4), q − zero, scaled and put in row order: the 16 bytes one row
// of the shared fp16 tile [slot][k] holds for these 8 rows, ready for one 16-byte store.
ENGINE_DEV uint4 scaled_in_row_order(__half2 (&d)[4], __half2 sc) {
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = __hmul2(d[i], sc);
    // d[i] = (w_i, w_{i+4}); store w_0..w_7 in row order.
    uint4 out;
    out.x = half2_as_u32(__lows2half2(d[0], d[1]));
    out.y = half2_as_u32(__lows2half2(d[2], d[3]));
    out.z = half2_as_u32(__highs2half2(d[0], d[1]));
    out.w = half2_as_u32(__highs2half2(d[2], d[3]));
    return out;
}

// The eight weights of one packed int4 word, dequantized (scale · (q − zero)) and in row order.
ENGINE_DEV uint4 dequant8(uint32_t word, __half2 zz, __half2 sc) {
    __half2 d[4];
    dequant_word(word, zz, d);
    return scaled_in_row_order(d, sc);
}

// Rows 8i .. 8i + 7 of a lane's 32-row chunk (its lane_words<BITS>() words `w`), dequantized and in row order.
template <int BITS>
ENGINE_DEV uint4 dequant_rows(const uint4* w, int i, __half2 zz, __half2 sc) {
    __half2 d[4];
    dequant_rows8<BITS>(w, i, zz, d);
    return scaled_in_row_order(d, sc);
}

// W: 16-byte words per lane and step (lane_words: 1 for int4, 2 for int8).
template <int BM, int W>
struct Smem {
    __half a[STAGES][BM][LDS];
    uint4 wraw[STAGES][BN / INT4_TILE_N][W][32];
    uint32_t sz[STAGES][THREADS];  // each thread's (scale, zero) word for its chunk of the step
    __half w[BN][LDS];  // dequantized: [slot][k]
};
static_assert(sizeof(Smem<64, 1>) == 56320 && sizeof(Smem<64, 2>) == 64512 && sizeof(Smem<64, 4>) == 80896,
              "gemm_smem_bytes in engine/src/backend/cuda/shapes.rs must match");

// One result of row `row` (the row's offset `at` = row · ldy) into output column `col` (skipped for padding).
template <int OUT>
ENGINE_DEV void store_one(const GemmParams& p, size_t at, uint32_t col, float v) {
    if (col == INT4_PAD_SLOT) return;
    if (OUT == STORE16) p.y16[at + col] = __float2half_rn(v);
    else if (OUT == RESIDUAL) p.y32[at + col] += v;
    else p.y32[at + col] = v;
}

// The results v0, v1 of two neighbouring slots of one row, for output columns c0, c1. When the columns are
// neighbours too, starting at an even column, and `vec` says the row stride and base pointer keep such pairs
// aligned, one 4-byte (f16) or 8-byte (f32) access does both: halves the epilogue's store instructions for the
// Identity map always, and for q/k/v and gate/up whenever a tile's pairs are consecutive columns (the usual case).
template <int OUT>
ENGINE_DEV void store_pair(const GemmParams& p, uint32_t row, uint32_t c0, uint32_t c1, float v0, float v1,
                           bool vec) {
    const size_t at = (size_t)row * p.ldy;
    if (vec && c0 != INT4_PAD_SLOT && c1 == c0 + 1 && (c0 & 1u) == 0) {
        if (OUT == STORE16) {
            *reinterpret_cast<__half2*>(p.y16 + at + c0) = __floats2half2_rn(v0, v1);
        } else if (OUT == RESIDUAL) {
            float2* y = reinterpret_cast<float2*>(p.y32 + at + c0);
            float2 o = *y;
            o.x += v0;
            o.y += v1;
            *y = o;
        } else {
            *reinterpret_cast<float2*>(p.y32 + at + c0) = make_float2(v0, v1);
        }
        return;
    }
    store_one<OUT>(p, at, c0, v0);
    store_one<OUT>(p, at, c1, v1);
}

// Split-K's "last block merges": every block of a tile calls this (all its threads) once it has written its partial
// sums; it returns true in the one block that arrives last, to which every other block's partials are then
// visible. That block adds them and then resets the counter (one thread, `*counter = 0`): counters are zero at
// rest, for the next launch.
ENGINE_DEV bool last_split_arrives(uint32_t* counter, uint32_t splits) {
    __shared__ bool is_last;
    __threadfence();  // this thread's partials, visible device-wide before the block's arrival is counted
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(counter, 1u) == splits - 1;
    __syncthreads();
    if (is_last) __threadfence();  // and the others', before this block reads them
    return is_last;
}

// The epilogue of both tiles. A warp's accumulators acc[MI][NI][4] hold, in the m16n8 C layout, rows
// row_l + 16 mi + 8 h and slots slot_l + 8 ni + {0, 1} (c0, c1 for h = 0; c2, c3 for h = 1), where row_l is the
// warp's first row + lane / 4 and slot_l its first slot + 2 (lane % 4): always even, and n_pad is a multiple of 16,
// so slot < n_pad implies slot + 1 < n_pad. With split-K (k_splits > 1) each block writes its partial tile and the
// last block of the tile to arrive (a counter per grid.x · grid.y tile) adds the partials in split order — fixed, so
// the result is the same bits every run — and stores; the others return without storing.
template <int OUT, int MI, int NI>
ENGINE_DEV void finish_tile(const GemmParams& p, float (&acc)[MI][NI][4], uint32_t row_l, uint32_t slot_l) {
    const int tid = threadIdx.x;
    if (p.k_splits > 1) {
        // Write this split's partial tile (pairs of slots move as one float2), then let the last split to arrive
        // finish the tile.
        float* part = p.part + (size_t)blockIdx.z * p.m * p.n_pad;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int ni = 0; ni < NI; ++ni)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const uint32_t row = row_l + mi * 16 + h * 8, slot = slot_l + ni * 8;
                    if (row < p.m && slot < p.n_pad)
                        *reinterpret_cast<float2*>(part + (size_t)row * p.n_pad + slot) =
                            make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
                }
        uint32_t* counter = p.counters + blockIdx.y * gridDim.x + blockIdx.x;
        if (!last_split_arrives(counter, p.k_splits)) return;
        // Sum the partials in split order (0 + p0 + p1 + ...: the same bits whichever split arrived last). Splits
        // outermost: each pass issues this thread's 32 independent loads at once instead of a chain of dependent
        // loads per element, and the loop stays one compact body.
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int ni = 0; ni < NI; ++ni)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;
#pragma unroll 1
        for (uint32_t z = 0; z < p.k_splits; ++z) {
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const uint32_t row = row_l + mi * 16 + h * 8;
                    if (row >= p.m) continue;
                    // One pointer per row (recomputed per split, so that 32 addresses need not stay live).
                    const float* src = p.part + ((size_t)z * p.m + row) * p.n_pad + slot_l;
#pragma unroll
                    for (int ni = 0; ni < NI; ++ni) {
                        if (slot_l + ni * 8 >= p.n_pad) continue;
                        const float2 q = __ldcg(reinterpret_cast<const float2*>(src + ni * 8));
                        acc[mi][ni][2 * h] += q.x;
                        acc[mi][ni][2 * h + 1] += q.y;
                    }
                }
        }
        if (tid == 0) *counter = 0;
    }
    const bool vec = (p.ldy & 1u) == 0 &&
                     (OUT == STORE16 ? ((uintptr_t)p.y16 & 3u) == 0 : ((uintptr_t)p.y32 & 7u) == 0);
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
        const uint32_t slot = slot_l + ni * 8;
        if (slot >= p.n_pad) continue;
        const uint32_t c0 = p.col_map[slot], c1 = p.col_map[slot + 1];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const uint32_t row = row_l + mi * 16 + h * 8;
                if (row < p.m) store_pair<OUT>(p, row, c0, c1, acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1], vec);
            }
    }
}

// BM = 64: 2 × 2 warps of 32 rows × 32 slots. (BM = 16, 1 × 4 warps of 16 rows × 16 slots, also compiles, but chunks
// of at most 16 rows run gemm_small.cu, which streams the weights at close to the GEMV's rate.) BITS: 4, 8 or 16
// (fp16: each thread then copies and rearranges lane_words<BITS>() uint4s per step instead of one).
template <int OUT, int BM, int BITS>
ENGINE_DEV void run(const GemmParams& p) {
    constexpr int W = lane_words<BITS>();
    constexpr int WM = BM == 64 ? 2 : 1, WN = 4 / WM;  // warps along rows and slots
    constexpr int MI = BM / (16 * WM);                  // m16 tiles per warp
    constexpr int NI = BN / (8 * WN);                   // n8 tiles per warp
    extern __shared__ __align__(16) unsigned char smem_raw[];
    Smem<BM, W>& s = *reinterpret_cast<Smem<BM, W>*>(smem_raw);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp / WN, warp_n = warp % WN;
    const uint32_t m0 = blockIdx.y * BM, slot0 = blockIdx.x * BN;
    const uint32_t steps_all = p.k_pad / BK, tiles = p.n_pad / INT4_TILE_N;
    const __half* a = part_a(p, slot0);
    // This block's K steps.
    const uint32_t per_split = (steps_all + p.k_splits - 1) / p.k_splits;
    const uint32_t step_begin = blockIdx.z * per_split;
    const uint32_t step_end = min(steps_all, step_begin + per_split);
    const uint32_t steps = steps_all;

    pdl_wait();
    pdl_launch_dependents();

    auto load_stage = [&](int buf, uint32_t step) {
        // A: BM rows × 64 columns = BM × 8 chunks of 16 bytes, BM / 16 per thread.
#pragma unroll
        for (int i = 0; i < BM / 16; ++i) {
            const int chunk = tid + i * THREADS;
            const int r = chunk >> 3, c = (chunk & 7) * 8;
            const uint32_t row = m0 + r, col = step * BK + c;
            const bool ok = row < p.m && col < p.k;
            const __half* src = ok ? a + (size_t)row * p.lda + col : a;
            cp_async16(&s.a[buf][r][c], src, ok ? 16u : 0u);
        }
        // Raw weights: 4 slot-tiles × 32 lanes, W uint4s per thread.
        const int lt = tid >> 5;
        const uint32_t tile = blockIdx.x * (BN / INT4_TILE_N) + lt;
        const bool ok = tile < tiles;
#pragma unroll
        for (int h = 0; h < W; ++h) {
            const uint4* src = ok ? p.qw + (((size_t)tile * steps + step) * W + h) * 32 + lane : p.qw;
            cp_async16(&s.wraw[buf][lt][h][lane], src, ok ? 16u : 0u);
        }
        // The scale of this thread's chunk travels with it: read in the dequantization, it would cost every step
        // a dependent memory round trip.
        const uint32_t g = min((step * BK + (lane >> 4) * INT4_CHUNK_K) / p.group_size, p.groups - 1);
        cp_async4(&s.sz[buf][tid], p.sz + ((size_t)(ok ? tile : 0) * p.groups + g) * INT4_TILE_N + (lane & 15));
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // Prologue: STAGES - 1 steps in flight. Every iteration commits one group (possibly empty), so that
    // wait_group<STAGES - 2> always means "the step about to be used has landed".
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
        if (step_begin + i < step_end) load_stage(i, step_begin + i);
        cp_async_commit();
    }
    for (uint32_t step = step_begin; step < step_end; ++step) {
        const int buf = (step - step_begin) % STAGES;
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // the step has landed for every thread, and every warp is done with the stage reused below
        {
            const uint32_t next = step + STAGES - 1;
            if (next < step_end) load_stage((next - step_begin) % STAGES, next);
            cp_async_commit();
        }

        // Dequantize this thread's chunk: slot j of slot-tile lt, rows 32 * (lane / 16) .. + 32 of the step.
        {
            const int lt = tid >> 5, j = lane & 15, hsel = lane >> 4;
            const __half2 szh = u32_as_half2(s.sz[buf][tid]);
            const __half2 zz = __high2half2(szh), sc = __low2half2(szh);
            uint4 wv[W];
#pragma unroll
            for (int h = 0; h < W; ++h) wv[h] = s.wraw[buf][lt][h][lane];
            __half* dst = &s.w[lt * INT4_TILE_N + j][hsel * INT4_CHUNK_K];
#pragma unroll
            for (int wi = 0; wi < 4; ++wi) *reinterpret_cast<uint4*>(dst + wi * 8) = dequant_rows<BITS>(wv, wi, zz, sc);
        }
        __syncthreads();

#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int r = warp_m * (BM / WM) + mi * 16 + (lane & 15);
                const int c = kk + (lane >> 4) * 8;
                ldmatrix_x4(af[mi], &s.a[buf][r][c]);
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                // Two n8 tiles per ldmatrix.x4: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ...).
                uint32_t bf[4];
                const int n = warp_n * (BN / WN) + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                const int c = kk + ((lane >> 3) & 1) * 8;
                ldmatrix_x4(bf, &s.w[n][c]);
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    mma_16816(acc[mi][2 * nj], af[mi], bf[0], bf[1]);
                    mma_16816(acc[mi][2 * nj + 1], af[mi], bf[2], bf[3]);
                }
            }
        }
    }

    // Epilogue: c0,c1 at (row g, slots 2t, 2t+1), c2,c3 at (row g + 8, same slots), g = lane / 4, t = lane % 4.
    const int g = lane >> 2, t4 = lane & 3;
    finish_tile<OUT, MI, NI>(p, acc, m0 + warp_m * (BM / WM) + g, slot0 + warp_n * (BN / WN) + 2 * t4);
}

}  // namespace gemm

// ---------------------------------------------------------------------------------------------------------------
// The 128 × 128 tile, for chunks of at least 128 rows (`gemm128_*` kernels).
//
// With hundreds of rows the 64 × 64 kernel above is limited by its own shared-memory traffic and barriers, not by
// the tensor cores (≈ 190 TFLOP/s of ≈ 790 on an H200): a 32 × 32 warp tile issues 4 ldmatrix.x4 per 8 MMAs, every
// step pays two __syncthreads with the dequantization on the critical path between them, and each block reads A
// from L2 for only 64 slots. This variant changes the shape of the work, not the arithmetic (same weight layout,
// same exact dequantization, same epilogues, same split-K mechanism):
//   - 256 threads = 8 warps as 4 (rows) × 2 (slots), each owning a 32 × 64 tile: per k16, 2 ldmatrix.x4 of A and
//     4 of W feed 16 MMAs (3 per 8 instead of 4 per 8), and every byte of A a block reads from L2 feeds 128 slots;
//   - the dequantized W tile is double-buffered and produced one step ahead: during step s each thread turns its
//     uint4 of step s + 1 (8 slot-tiles × 32 lanes = 256 uint4, exactly one per thread) into w[(s + 1) % 2], one
//     word per k16 between that k16's ldmatrix and its MMAs, while the MMAs of step s read w[s % 2]. The integer
//     and half2 work of the dequantization then overlaps the tensor cores, and one __syncthreads per step suffices:
//     the one at the top of step s + 1 publishes w[(s + 1) % 2], makes the A rows every thread waited for visible
//     to all warps, and frees the buffers the next copies and the next dequantization overwrite;
//   - so the raw words run one step ahead of A: the copies issued during step s are A of step s + 2 and the raw
//     words of step s + 3, and with 3 stages in each ring every copy has two steps' time to land;
//   - 3 A stages (3 × 18 KB) + 2 dequantized tiles (2 × 18 KB) + 3 raw stages (3 × 5 KB with scales) = 105 KB,
//     so two blocks fit an sm_90 SM (227 KB): 16 warps hide each other's ldmatrix and barrier latencies. A fourth
//     stage would not fit twice.
// The warp tile is 32 × 64 rather than 64 × 32 (same ldmatrix count) because it keeps fewer fragments live: 2 A
// fragments and 4 W fragments per k16 next to the 64 accumulators, so the kernel fits 128 registers (2 blocks × 256
// threads) without spilling.
namespace gemm {

constexpr int BIG_BM = 128, BIG_BN = 128;
constexpr int BIG_THREADS = 256;
constexpr int BIG_STAGES = 3;                     // depth of the A ring and of the raw-weight ring
constexpr int BIG_TILES = BIG_BN / INT4_TILE_N;   // slot-tiles per block: one per warp for the copies

struct SmemBig {
    __half a[BIG_STAGES][BIG_BM][LDS];
    __half w[2][BIG_BN][LDS];  // dequantized: [slot][k], double-buffered
    uint4 wraw[BIG_STAGES][BIG_TILES][32];
    uint32_t sz[BIG_STAGES][BIG_THREADS];  // each thread's (scale, zero) word for its chunk of the step
};
static_assert(sizeof(SmemBig) == 107520, "GEMM128_SMEM_BYTES in engine/src/backend/cuda/shapes.rs must match");

// What a block of a 128-row tile of `bn` slots works on (gemm128 here, gemm_wgmma.cu's tiles): its first row and
// slot, the A it reads (its part's copy with act-order), and its split of the K steps (a split left without steps
// just contributes zeros).
struct RowsBlock {
    uint32_t m0, slot0, steps_all, tiles, step_begin;
    int n_steps;
    const __half* a;
};
ENGINE_DEV RowsBlock rows_block(const GemmParams& p, uint32_t bn) {
    RowsBlock b;
    b.m0 = blockIdx.y * BIG_BM;
    b.slot0 = blockIdx.x * bn;
    b.steps_all = p.k_pad / BK;
    b.tiles = p.n_pad / INT4_TILE_N;
    b.a = part_a(p, b.slot0);
    const Slice ks = slice_of(b.steps_all, blockIdx.z, p.k_splits);
    b.step_begin = ks.lo;
    b.n_steps = (int)(ks.hi - ks.lo);
    return b;
}

template <int OUT>
ENGINE_DEV void run_big(const GemmParams& p) {
    constexpr int WN = 2;                       // warps along slots (BIG_THREADS / 32 / WN = 4 along rows)
    constexpr int WTM = 32, WTN = 64;           // warp tile: rows × slots
    constexpr int MI = WTM / 16, NI = WTN / 8;  // 2 m16 tiles × 8 n8 tiles per warp
    static_assert((BIG_THREADS / 32 / WN) * WTM == BIG_BM && WN * WTN == BIG_BN, "warps must cover the tile");
    static_assert(BIG_TILES * 32 == BIG_THREADS, "one raw uint4 per thread per step");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    SmemBig& s = *reinterpret_cast<SmemBig*>(smem_raw);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp / WN, warp_n = warp % WN;
    const RowsBlock blk = rows_block(p, BIG_BN);
    const uint32_t m0 = blk.m0, slot0 = blk.slot0, steps_all = blk.steps_all, tiles = blk.tiles;
    const uint32_t step_begin = blk.step_begin;
    const int n_steps = blk.n_steps;
    const __half* a = blk.a;

    pdl_wait();
    pdl_launch_dependents();

    // A: 128 rows × 8 chunks of 16 bytes, 4 chunks per thread: rows tid / 8 + 32 i, chunk tid % 8 (a warp copies 4
    // whole 128-byte rows of the step).
    const int a_r = tid >> 3, a_c = (tid & 7) * 8;
    auto load_a = [&](int buf, uint32_t step) {
#pragma unroll
        for (int i = 0; i < BIG_BM / 32; ++i) {
            const int r = a_r + 32 * i;
            const uint32_t row = m0 + r, col = step * BK + a_c;
            const bool ok = row < p.m && col < p.k;
            const __half* src = ok ? a + (size_t)row * p.lda + col : a;
            cp_async16(&s.a[buf][r][a_c], src, ok ? 16u : 0u);
        }
    };
    // Raw weights: warp w copies slot-tile w of the block (512 contiguous bytes), each lane with the (scale, zero)
    // of its own 32-row chunk, which travels with the words (see the 64-row kernel).
    const uint32_t w_tile = blockIdx.x * BIG_TILES + warp;
    const bool w_ok = w_tile < tiles;
    auto load_w = [&](int buf, uint32_t step) {
        const uint4* src = w_ok ? p.qw + ((size_t)w_tile * steps_all + step) * 32 + lane : p.qw;
        cp_async16(&s.wraw[buf][warp][lane], src, w_ok ? 16u : 0u);
        const uint32_t g = min((step * BK + (lane >> 4) * INT4_CHUNK_K) / p.group_size, p.groups - 1);
        cp_async4(&s.sz[buf][tid], p.sz + ((size_t)(w_ok ? w_tile : 0) * p.groups + g) * INT4_TILE_N + (lane & 15));
    };
    // What this thread dequantizes: the uint4 it copied, i.e. slot (lane % 16) of slot-tile `warp`, rows
    // 32 · (lane / 16) .. + 32 of the step; word i (8 rows) becomes the 16 bytes at column 32 · (lane / 16) + 8 i.
    const int dq_row = warp * INT4_TILE_N + (lane & 15), dq_col = (lane >> 4) * INT4_CHUNK_K;
    // ldmatrix addresses of this lane at k16 = 0 of stage / buffer 0, as in the 64-row kernel: A rows
    // warp_m · 32 + (lane % 16), k half lane / 16; W slots warp_n · 64 + (lane % 8) + 8 · (lane / 16), k half
    // (lane / 8) % 2. Stage, m16 / n16 tile and k16 are constant byte offsets from these.
    constexpr uint32_t A_STAGE_B = BIG_BM * LDS * 2, W_BUF_B = BIG_BN * LDS * 2, ROWS16_B = 16 * LDS * 2;
    const uint32_t a_ld = smem_addr(&s.a[0][warp_m * WTM + (lane & 15)][(lane >> 4) * 8]);
    const uint32_t w_ld = smem_addr(&s.w[0][warp_n * WTN + (lane & 7) + ((lane >> 4) << 3)][((lane >> 3) & 1) * 8]);

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // Prologue. Local step j lives in A stage j % 3 and raw stage j % 3. Groups, in commit order:
    //   P = {raw 0}, C(-2) = {A 0, raw 1}, C(-1) = {A 1, raw 2}, then C(i) = {A i + 2, raw i + 3} in step i;
    // every group is committed even when empty, so that in step i wait_group 1 means "C(i - 2) has landed",
    // which holds exactly what step i needs: A of step i and the raw words of step i + 1.
    if (n_steps > 0) load_w(0, step_begin);
    cp_async_commit();
    if (n_steps > 0) load_a(0, step_begin);
    if (n_steps > 1) load_w(1, step_begin + 1);
    cp_async_commit();
    if (n_steps > 1) load_a(1, step_begin + 1);
    if (n_steps > 2) load_w(2, step_begin + 2);
    cp_async_commit();
    // P has landed. No barrier: each thread dequantizes exactly the uint4 and scale word it copied itself, and
    // wait_group makes a thread's own copies visible to it (the same holds for the raw words in the loop).
    cp_async_wait<2>();
    if (n_steps > 0) {
        const uint4 wv = s.wraw[0][warp][lane];
        const __half2 szh = u32_as_half2(s.sz[0][tid]);
        const __half2 zz = __high2half2(szh), sc = __low2half2(szh);
        const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
        __half* dst = &s.w[0][dq_row][dq_col];
#pragma unroll
        for (int wi = 0; wi < 4; ++wi) *reinterpret_cast<uint4*>(dst + wi * 8) = dequant8(words[wi], zz, sc);
    }

    for (int i = 0; i < n_steps; ++i) {
        cp_async_wait<1>();
        // The one barrier of the step: A of step i has landed for everyone (each warp reads rows other threads
        // copied), w[i % 2] (dequantized during step i - 1) is complete, and every warp has finished step i - 1,
        // whose A stage ((i + 2) % 3), raw stage (i % 3, dequantized during i - 1) and tile w[(i + 1) % 2] are
        // reused below.
        __syncthreads();
        if (i + 2 < n_steps) load_a((i + 2) % BIG_STAGES, step_begin + i + 2);
        if (i + 3 < n_steps) load_w(i % BIG_STAGES, step_begin + i + 3);
        cp_async_commit();

        // The raw words of step i + 1, dequantized into w[(i + 1) % 2] one word per k16 below. Each word is read
        // from shared memory where it is used rather than all four up front: the hot loop runs at the 128-register
        // cap, and 3 fewer live registers keep it clear of spills on every target.
        const bool dq = i + 1 < n_steps;
        const int rb = (i + 1) % BIG_STAGES;
        const uint32_t* dq_src = reinterpret_cast<const uint32_t*>(&s.wraw[rb][warp][lane]);
        const uint32_t szw = dq ? s.sz[rb][tid] : 0u;
        __half* dq_dst = &s.w[(i + 1) & 1][dq_row][dq_col];
        const uint32_t a_base = a_ld + (uint32_t)(i % BIG_STAGES) * A_STAGE_B;
        const uint32_t w_base = w_ld + (uint32_t)(i & 1) * W_BUF_B;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            uint32_t af[MI][4], bf[NI / 2][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) ldmatrix_x4_at(af[mi], a_base + mi * ROWS16_B + kk * 32);
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) ldmatrix_x4_at(bf[nj], w_base + nj * ROWS16_B + kk * 32);
            if (dq) {
                const __half2 szh = u32_as_half2(szw);
                *reinterpret_cast<uint4*>(dq_dst + kk * 8) = dequant8(dq_src[kk], __high2half2(szh), __low2half2(szh));
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int nj = 0; nj < NI / 2; ++nj) {
                    // bf[nj] = (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15): two n8 tiles.
                    mma_16816(acc[mi][2 * nj], af[mi], bf[nj][0], bf[nj][1]);
                    mma_16816(acc[mi][2 * nj + 1], af[mi], bf[nj][2], bf[nj][3]);
                }
        }
    }
    cp_async_wait<0>();  // nothing real is pending (the last groups are empty); never leave a copy in flight

    // Epilogue: c0,c1 at (row g, slots 2t, 2t+1), c2,c3 at (row g + 8, same slots), g = lane / 4, t = lane % 4.
    const int g = lane >> 2, t4 = lane & 3;
    finish_tile<OUT, MI, NI>(p, acc, m0 + warp_m * WTM + g, slot0 + warp_n * WTN + 2 * t4);
}

}  // namespace gemm

// Block: 128 threads; dynamic shared memory sizeof(gemm::Smem<64, W>) = 56320 bytes (int4), 64512 (int8), 80896
// (fp16). Grid: (ceil(n_pad / 64), ceil(m / 64), k_splits). Chunks of at most 16 rows go to gemm_small.cu instead.
#define GEMM64_KERNEL(NAME, OUT)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) gemm_int4_##NAME(const GemmParams p) {                     \
        gemm::run<OUT, 64, 4>(p);                                                                                 \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) gemm_int8_##NAME(const GemmParams p) {                     \
        gemm::run<OUT, 64, 8>(p);                                                                                 \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) gemm_f16_##NAME(const GemmParams p) {                      \
        gemm::run<OUT, 64, 16>(p);                                                                                \
    }
GEMM64_KERNEL(store16, gemm::STORE16)
GEMM64_KERNEL(residual, gemm::RESIDUAL)
GEMM64_KERNEL(store32, gemm::STORE32)

// Block: 256 threads; dynamic shared memory sizeof(gemm::SmemBig) = 107520 bytes (two blocks per SM on sm_90; the
// host uses these only where the card grants that much to one block). int4 only: 8-bit and fp16 tiles would double
// or quadruple the raw ring, and two blocks would no longer fit an SM; their chunks above 16 rows take the 64-row
// tile. Grid: (ceil(n_pad / 128), ceil(m / 128),
// k_splits). At most 128 registers per thread, so that two blocks fit an SM's register file.
extern "C" __global__ void __launch_bounds__(256, 2) gemm128_int4_store16(const GemmParams p) {
    gemm::run_big<gemm::STORE16>(p);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemm128_int4_residual(const GemmParams p) {
    gemm::run_big<gemm::RESIDUAL>(p);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemm128_int4_store32(const GemmParams p) {
    gemm::run_big<gemm::STORE32>(p);
}

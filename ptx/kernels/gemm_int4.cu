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
// A's columns must already be in the weights' sorted row order (norm.cu / swiglu.cu permute them when act-order
// is on). Rows past `m` and K columns past `k` are zero-filled by cp.async (src-size 0) and never stored.
#include "int4.cuh"

struct GemmParams {
    const uint4* qw;          // tile layout (int4.cuh)
    const uint32_t* sz;       // half2 (scale, 1024 + zero) per [tile][group][slot]
    const uint32_t* col_map;  // output column of each slot
    const __half* a;          // [m][lda] fp16
    float* y32;               // RESIDUAL: y32[r][col] += acc; STORE32: y32[r][col] = acc
    __half* y16;              // STORE16: y16[r][col] = acc
    float* part;              // split-K: partial sums [k_splits][m][n_pad] (slot order)
    uint32_t* counters;       // split-K: one per (slot tile of 64, row tile of 64); zero at rest
    uint32_t m;               // rows
    uint32_t k;               // input columns (a multiple of 8)
    uint32_t k_pad;
    uint32_t n_pad;
    uint32_t groups;
    uint32_t group_size;
    uint32_t lda;             // A row stride in elements
    uint32_t ldy;             // Y row stride in elements
    uint32_t k_splits;        // blocks along K (grid.z); 1 = no split
};

namespace gemm {

constexpr int BN = 64, BK = 64;  // the row tile BM is a template parameter: 64, or 16 for short prompts
// K steps in flight: STAGES - 1 steps are being copied while one is multiplied. With few rows the GEMM streams
// weights like a GEMV, and one step in flight per block (2 KB of weights) cannot cover the memory latency.
constexpr int STAGES = 4;
constexpr int THREADS = 128;
constexpr int LDS = BK + 8;  // padded row (halves) of the shared A and dequantized-W tiles
enum Out { STORE16 = 0, RESIDUAL = 1, STORE32 = 2 };

ENGINE_DEV uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 4-byte asynchronous copy global → shared (through L1: scales are reused by neighbouring blocks).
ENGINE_DEV void cp_async4(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}

// 16-byte asynchronous copy global → shared; copies `bytes` (0 or 16) and zero-fills the rest.
ENGINE_DEV void cp_async16(void* dst, const void* src, uint32_t bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes)
                 : "memory");
}
ENGINE_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
ENGINE_DEV void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

ENGINE_DEV void ldmatrix_x4(uint32_t r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

ENGINE_DEV void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int BM>
struct Smem {
    __half a[STAGES][BM][LDS];
    uint4 wraw[STAGES][BN / INT4_TILE_N][32];
    uint32_t sz[STAGES][THREADS];  // each thread's (scale, zero) word for its chunk of the step
    __half w[BN][LDS];  // dequantized: [slot][k]
};

// BM = 64: 2 × 2 warps of 32 rows × 32 slots. BM = 16: 1 × 4 warps of 16 rows × 16 slots — for prompts of at most
// 16 tokens, where a 64-row tile would spend three quarters of its MMAs on padding.
template <int OUT, int BM>
ENGINE_DEV void run(const GemmParams& p) {
    constexpr int WM = BM == 64 ? 2 : 1, WN = 4 / WM;  // warps along rows and slots
    constexpr int MI = BM / (16 * WM);                  // m16 tiles per warp
    constexpr int NI = BN / (8 * WN);                   // n8 tiles per warp
    extern __shared__ __align__(16) unsigned char smem_raw[];
    Smem<BM>& s = *reinterpret_cast<Smem<BM>*>(smem_raw);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp / WN, warp_n = warp % WN;
    const uint32_t m0 = blockIdx.y * BM, slot0 = blockIdx.x * BN;
    const uint32_t steps_all = p.k_pad / BK, tiles = p.n_pad / INT4_TILE_N;
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
            const __half* src = ok ? p.a + (size_t)row * p.lda + col : p.a;
            cp_async16(&s.a[buf][r][c], src, ok ? 16u : 0u);
        }
        // Raw weights: 4 slot-tiles × 32 lanes, one uint4 per thread.
        const int lt = tid >> 5;
        const uint32_t tile = blockIdx.x * (BN / INT4_TILE_N) + lt;
        const bool ok = tile < tiles;
        const uint4* src = ok ? p.qw + ((size_t)tile * steps + step) * 32 + lane : p.qw;
        cp_async16(&s.wraw[buf][lt][lane], src, ok ? 16u : 0u);
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

        // Dequantize this thread's uint4: slot j of slot-tile lt, rows 32 * (lane / 16) .. + 32 of the step.
        {
            const int lt = tid >> 5, j = lane & 15, hsel = lane >> 4;
            const __half2 szh = u32_as_half2(s.sz[buf][tid]);
            const __half2 zz = __high2half2(szh), sc = __low2half2(szh);
            const uint4 wv = s.wraw[buf][lt][lane];
            const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
            __half* dst = &s.w[lt * INT4_TILE_N + j][hsel * INT4_CHUNK_K];
#pragma unroll
            for (int wi = 0; wi < 4; ++wi) {
                __half2 d[4];
                dequant_word(words[wi], zz, d);
#pragma unroll
                for (int i = 0; i < 4; ++i) d[i] = __hmul2(d[i], sc);
                // d[i] = (w_i, w_{i+4}); store w_0..w_7 in row order.
                uint4 out;
                out.x = half2_as_u32(__lows2half2(d[0], d[1]));
                out.y = half2_as_u32(__lows2half2(d[2], d[3]));
                out.z = half2_as_u32(__highs2half2(d[0], d[1]));
                out.w = half2_as_u32(__highs2half2(d[2], d[3]));
                *reinterpret_cast<uint4*>(dst + wi * 8) = out;
            }
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

    // Epilogue: c0,c1 at (row g, cols 2t, 2t+1), c2,c3 at (row g + 8, same cols), g = lane / 4, t = lane % 4.
    const int g = lane >> 2, t4 = lane & 3;
    if (p.k_splits > 1) {
        // Write this split's partial tile, then let the last split to arrive finish the tile.
        float* part = p.part + (size_t)blockIdx.z * p.m * p.n_pad;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int ni = 0; ni < NI; ++ni)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const uint32_t row = m0 + warp_m * (BM / WM) + mi * 16 + g + (e >> 1) * 8;
                    const uint32_t slot = slot0 + warp_n * (BN / WN) + ni * 8 + 2 * t4 + (e & 1);
                    if (row < p.m && slot < p.n_pad) part[(size_t)row * p.n_pad + slot] = acc[mi][ni][e];
                }
        __shared__ bool is_last;
        __threadfence();
        __syncthreads();
        uint32_t* counter = p.counters + blockIdx.y * gridDim.x + blockIdx.x;
        if (tid == 0) is_last = atomicAdd(counter, 1u) == p.k_splits - 1;
        __syncthreads();
        if (!is_last) return;
        __threadfence();
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int ni = 0; ni < NI; ++ni)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const uint32_t row = m0 + warp_m * (BM / WM) + mi * 16 + g + (e >> 1) * 8;
                    const uint32_t slot = slot0 + warp_n * (BN / WN) + ni * 8 + 2 * t4 + (e & 1);
                    float v = 0.f;
                    if (row < p.m && slot < p.n_pad)
                        for (uint32_t z = 0; z < p.k_splits; ++z)
                            v += __ldcg(p.part + ((size_t)z * p.m + row) * p.n_pad + slot);
                    acc[mi][ni][e] = v;
                }
        if (tid == 0) *counter = 0;
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const uint32_t row = m0 + warp_m * (BM / WM) + mi * 16 + g + (e >> 1) * 8;
                const uint32_t slot = slot0 + warp_n * (BN / WN) + ni * 8 + 2 * t4 + (e & 1);
                if (row >= p.m || slot >= p.n_pad) continue;
                const uint32_t col = p.col_map[slot];
                if (col == 0xFFFFFFFFu) continue;
                const float v = acc[mi][ni][e];
                if (OUT == STORE16) p.y16[(size_t)row * p.ldy + col] = __float2half_rn(v);
                else if (OUT == RESIDUAL) p.y32[(size_t)row * p.ldy + col] += v;
                else p.y32[(size_t)row * p.ldy + col] = v;
            }
}

}  // namespace gemm

// Block: 128 threads; dynamic shared memory sizeof(gemm::Smem<64>) = 56320 bytes (Smem<16>: 28672 for the gemm16_
// kernels). Grid: (ceil(n_pad / 64), ceil(m / BM), k_splits).
extern "C" __global__ void __launch_bounds__(128) gemm_int4_store16(const GemmParams p) {
    gemm::run<gemm::STORE16, 64>(p);
}
extern "C" __global__ void __launch_bounds__(128) gemm_int4_residual(const GemmParams p) {
    gemm::run<gemm::RESIDUAL, 64>(p);
}
extern "C" __global__ void __launch_bounds__(128) gemm_int4_store32(const GemmParams p) {
    gemm::run<gemm::STORE32, 64>(p);
}
extern "C" __global__ void __launch_bounds__(128) gemm16_int4_store16(const GemmParams p) {
    gemm::run<gemm::STORE16, 16>(p);
}
extern "C" __global__ void __launch_bounds__(128) gemm16_int4_residual(const GemmParams p) {
    gemm::run<gemm::RESIDUAL, 16>(p);
}
extern "C" __global__ void __launch_bounds__(128) gemm16_int4_store32(const GemmParams p) {
    gemm::run<gemm::STORE32, 16>(p);
}

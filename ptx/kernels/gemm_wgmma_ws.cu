// Prefill GEMM on wgmma with warp specialization (sm_90a only): gemm_wgmma.cu's 128 × 128 tile, its swizzled
// shared tiles and epilogue, but no block-wide barrier per K step.
//
// Why. ncu on gemm_wgmma's q/k/v GEMM (BENCHMARKS.md): the tensor cores ~40% busy, every warp issuing ~320
// instructions per step — copies, dequantization, a barrier — around 4 wgmma, and a step's multiply waited for
// before the next barrier. Here one warpgroup only produces and two only multiply:
//   - the producer warpgroup (128 threads) copies A and the raw int4 words AHEAD steps ahead with cp.async,
//     dequantizes each step's words into that step's W tile once they landed, and publishes the stage on its
//     `full` mbarrier (each producer fences its own writes to the async proxy first);
//   - each consumer warpgroup (rows 0-63, 64-127) waits on `full`, issues the step's 4 wgmma, and releases the
//     previous step's stage on its `empty` mbarrier once that step's multiply is done (one step stays in flight);
//   - STAGES stages of A + W: the producer reuses a stage only after both consumers released it.
// The epilogue is gemm.cu's, run by all 384 threads (its split-K protocol has block-wide barriers); the producers
// hold no tile (rows and slots past every bound, so they store nothing).
#include "tiles.cuh"
#include "tensor_core.cuh"
#include "bulk_copy.cuh"

namespace wgws {

using wg::BK;
using wg::BM;
constexpr int BN = 128, TILES = BN / INT4_TILE_N;
constexpr int THREADS = 384, PRODUCERS = 128, CONSUMERS = 256;
constexpr int STAGES = 4;                       // A + dequantized W per stage
constexpr int AHEAD = 2;                        // the producer's copies run this many steps ahead of its dequantization
constexpr int RAW_STAGES = AHEAD + 1;           // its private ring of raw words
constexpr int RAW = TILES * 32 / PRODUCERS;     // raw uint4 per producer thread and step
constexpr int A_CHUNKS = BM * BK / 8 / PRODUCERS;  // 16-byte chunks of A per producer thread and step

struct Smem {
    __half a[STAGES][BM * BK];
    __half w[STAGES][BN * BK];  // dequantized, [slot][k], swizzled
    uint4 wraw[RAW_STAGES][TILES][32];
    uint32_t sz[RAW_STAGES][RAW][PRODUCERS];
    uint64_t full[STAGES], empty[STAGES];
};
static_assert(sizeof(Smem) + 1024 == 147520, "GEMM_WGMMA_WS_SMEM_BYTES in engine/src/backend/cuda/shapes.rs must match");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The producer warpgroup (threads 0..127): copies, dequantization, `full` arrivals.
ENGINE_DEV void produce(const GemmParams& p, Smem& s, const gemm::RowsBlock& b) {
    const int t = threadIdx.x, lane = t & 31, pw = t >> 5;
    // A: 128 rows × 8 chunks per step, A_CHUNKS per thread: rows t / 8 + 16 i, chunk t % 8 (8 threads copy one
    // row; rows 16 apart keep their swizzle, which depends on the row mod 8).
    const int a_r = t >> 3, a_c = (t & 7) * 8;
    const __half* a_src = b.a + (size_t)min(b.m0 + a_r, p.m - 1) * p.lda + a_c;
    const size_t a_rows16 = (size_t)16 * p.lda;
    uint32_t a_rows_ok = 0;
#pragma unroll
    for (int i = 0; i < A_CHUNKS; ++i) a_rows_ok |= (b.m0 + a_r + 16 * i < p.m ? 1u : 0u) << i;
    const uint32_t a_dst = wg::swizzled(a_r, a_c);
    // Raw words: producer warp pw copies (and later dequantizes) slot-tiles pw + 4 j; lane l its 32-row chunk.
    const uint4* w_src[RAW];
    const uint32_t* sz_src[RAW];
    uint32_t w_ok = 0;
#pragma unroll
    for (int j = 0; j < RAW; ++j) {
        const uint32_t tile = blockIdx.x * TILES + pw + 4 * j;
        const bool ok = tile < b.tiles;
        w_ok |= (ok ? 1u : 0u) << j;
        w_src[j] = p.qw + (size_t)(ok ? tile : 0) * b.steps_all * 32 + lane;
        sz_src[j] = p.sz + (size_t)(ok ? tile : 0) * p.groups * INT4_TILE_N + (lane & 15);
    }
    const uint32_t g_shift = 31 - __clz(p.group_size), k_lane = (lane >> 4) * INT4_CHUNK_K;
    auto copy = [&](int stage, int raw, uint32_t step) {
        const bool col_ok = step * BK + a_c < p.k;
        const __half* src = a_src + step * BK;
#pragma unroll
        for (int i = 0; i < A_CHUNKS; ++i) {
            const bool ok = col_ok && (a_rows_ok >> i & 1u);
            tc::cp_async16(&s.a[stage][a_dst + 16 * i * BK], ok ? src + i * a_rows16 : b.a, ok ? 16u : 0u);
        }
        const uint32_t g = min((step * BK + k_lane) >> g_shift, p.groups - 1);
#pragma unroll
        for (int j = 0; j < RAW; ++j) {
            tc::cp_async16(&s.wraw[raw][pw + 4 * j][lane], w_src[j] + step * 32, (w_ok >> j & 1u) ? 16u : 0u);
            gemm::cp_async4(&s.sz[raw][j][t], sz_src[j] + g * INT4_TILE_N);
        }
    };
    auto dequant = [&](int raw, int stage) {
#pragma unroll
        for (int j = 0; j < RAW; ++j) {
            const uint32_t slot = (pw + 4 * j) * INT4_TILE_N + (lane & 15);
            const uint4 wv = s.wraw[raw][pw + 4 * j][lane];
            const __half2 szh = u32_as_half2(s.sz[raw][j][t]);
            const __half2 zz = __high2half2(szh), sc = __low2half2(szh);
            const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
            __half* row = &s.w[stage][slot * BK];
            const uint32_t x = ((k_lane >> 3) ^ slot) & 7;  // swizzled(slot, k_lane + 8 wi) = row + (x ^ wi) · 8
#pragma unroll
            for (int wi = 0; wi < 4; ++wi)
                *reinterpret_cast<uint4*>(row + ((x ^ wi) << 3)) = gemm::dequant8(words[wi], zz, sc);
        }
    };
    const int n = b.n_steps;
    // Copy groups in commit order: steps 0 .. AHEAD - 1, then step i + AHEAD in iteration i (committed even when
    // empty), so that after iteration i's commit wait_group AHEAD means "step i has landed".
#pragma unroll
    for (int j = 0; j < AHEAD; ++j) {
        if (j < n) copy(j % STAGES, j % RAW_STAGES, b.step_begin + j);
        tc::cp_async_commit();
    }
    for (int i = 0; i < n; ++i) {
        const int c = i + AHEAD;
        if (c < n) {
            // Stage c % STAGES last held step c - STAGES: wait until both consumers released it.
            if (c >= STAGES) bulk::wait(&s.empty[c % STAGES], (uint32_t)(c / STAGES - 1) & 1u);
            copy(c % STAGES, c % RAW_STAGES, b.step_begin + c);
        }
        tc::cp_async_commit();
        tc::cp_async_wait<AHEAD>();
        dequant(i % RAW_STAGES, i % STAGES);
        wg::fence_proxy_async();  // this thread's A copies and W stores, visible to the tensor cores
        bulk::arrive(&s.full[i % STAGES]);
    }
    tc::cp_async_wait<0>();
}

// A consumer warpgroup (cg = 0, 1: rows 64 cg ..): waits for each stage, multiplies, releases the one before.
ENGINE_DEV void consume(Smem& s, const gemm::RowsBlock& b, int cg, float (&d)[64]) {
    const uint32_t a_addr = tc::smem_addr(&s.a[0][64 * cg * BK]), w_addr = tc::smem_addr(&s.w[0][0]);
    constexpr uint32_t A_STAGE_B = BM * BK * 2, W_STAGE_B = BN * BK * 2, K16_B = 32;
    for (int i = 0; i < b.n_steps; ++i) {
        const int st = i % STAGES;
        bulk::wait(&s.full[st], (uint32_t)(i / STAGES) & 1u);
        __syncwarp();  // wgmma is .aligned: the lanes leave the wait loop together before it
        wg::wgmma_fence();
        wg::fence_operands(d);
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk)
            wg::wgmma_k16(d, wg::smem_desc(a_addr + st * A_STAGE_B + kk * K16_B),
                          wg::smem_desc(w_addr + st * W_STAGE_B + kk * K16_B));
        wg::wgmma_commit();
        wg::wgmma_wait<1>();  // step i - 1 is done: its stage goes back to the producer
        wg::fence_operands(d);
        if (i > 0) bulk::arrive(&s.empty[(i - 1) % STAGES]);
    }
    wg::wgmma_wait<0>();
    wg::fence_operands(d);
}
#endif

template <int OUT>
ENGINE_DEV void run(const GemmParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t pad = (1024u - (tc::smem_addr(smem_raw) & 1023u)) & 1023u;
    Smem& s = *reinterpret_cast<Smem*>(smem_raw + pad);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, group = warp >> 2;
    const gemm::RowsBlock b = gemm::rows_block(p, BN);
    if (tid == 0) {
#pragma unroll
        for (int i = 0; i < STAGES; ++i) bulk::init(&s.full[i], PRODUCERS), bulk::init(&s.empty[i], CONSUMERS);
    }
    __syncthreads();  // the barriers exist before anyone waits on them

    pdl_wait();
    pdl_launch_dependents();

    float d[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = 0.f;
    if (group == 0) produce(p, s, b);
    else consume(s, b, group - 1, d);

    // Epilogue (gemm128's C layout per consumer warp: rows 64 cg + 16 (warp % 4) + {g, g + 8}, slots 8 ni + 2 t
    // + {0, 1}). Producers pass a row and slot past every bound: they take part in the split-K barriers only.
    constexpr uint32_t NOWHERE = 0x80000000u;
    float (&acc)[1][16][4] = *reinterpret_cast<float(*)[1][16][4]>(&d);
    const int g = lane >> 2, t4 = lane & 3;
    const uint32_t row_l = group == 0 ? NOWHERE : b.m0 + 64 * (group - 1) + 16 * (warp & 3) + g;
    const uint32_t slot_l = group == 0 ? NOWHERE : b.slot0 + 2 * t4;
    gemm::finish_tile<OUT, 1, 16>(p, acc, row_l, slot_l);
#else
    __trap();  // compute_80 module: the host launches these on sm_90 only, where the sm_90a module is loaded
#endif
}

}  // namespace wgws

// Block: 384 threads (a producer warpgroup, two consumer warpgroups); dynamic shared memory sizeof(wgws::Smem) + 1024
// = 147520 bytes: one block per SM. Grid: (ceil(n_pad / 128), ceil(m / 128), k_splits), split-K as gemm128's.
// sm_90a only: in the compute_80 module these trap.
extern "C" __global__ void __launch_bounds__(384, 1) gemm_wgmma_ws_int4_store16(const GemmParams p) {
    wgws::run<gemm::STORE16>(p);
}
extern "C" __global__ void __launch_bounds__(384, 1) gemm_wgmma_ws_int4_residual(const GemmParams p) {
    wgws::run<gemm::RESIDUAL>(p);
}
extern "C" __global__ void __launch_bounds__(384, 1) gemm_wgmma_ws_int4_store32(const GemmParams p) {
    wgws::run<gemm::STORE32>(p);
}

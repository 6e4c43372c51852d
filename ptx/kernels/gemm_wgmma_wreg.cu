// Prefill GEMM for chunks of 128 rows and more on Hopper's asynchronous tensor cores (sm_90a only), with the
// weights in registers as the multiply's M side — the short tile's scheme (gemm_wgmma_short.cu) with the rows of A
// as a full N = 128: Yᵀ[slot][row] = Σ_k Wᵀ[slot][k] · Aᵀ[k][row].
//
// Why. gemm_wgmma.cu dequantizes each step's weights into a shared-memory tile that wgmma then reads back: ~260
// instructions per warp and K step (the stores, their addresses, the dequantization of 32 weights per thread), and
// the tensor cores sit at ~40% of their peak behind them. Here each lane dequantizes 32 weights straight into
// wgmma's A fragment registers (4 words, no stores) and the step's rows of A are plain 16-byte copies: ~150-170
// instructions per warp and step for the same 128 × 128 × 64 multiply (nvdisasm), and no shared-memory round trip
// for the weights (measured: 555 TFLOP/s on the 7B q/k/v GEMM at 512 rows against 388, BENCHMARKS.md).
//   - 256 threads = 2 warpgroups; warp w owns slot-tile w of the block's 8 (wgmma rows 16 (w % 4) .. of its
//     warpgroup's 64 slots) and copies that tile's raw words, one uint4 per lane per step; both warpgroups multiply
//     their slots by the same 128 rows of A (m64n128k16, 64 f32 accumulators per thread);
//   - the fragment mapping is the short tile's (the K order of k_order.cuh): K is permuted within each 64-column
//     step, so the rows of A must be in that order, as their producers write them (or `permute_k_steps`, below),
//     padded to k_pad columns with zeros: the tile reads them with no bounds checks on K;
//   - the K loop (`mainloop`): AHEAD steps of {rows of A, raw words} in flight by cp.async, one barrier per step,
//     the multiply of a step waited for before the next step's dequantization overwrites its fragments (two blocks
//     per SM keep the tensor cores busy across one block's barrier and dequantization);
//   - rows past m copy row m - 1 (never stored: row r of Y depends on row r of A only).
// The epilogue turns the transposed accumulators around through shared memory (see `finish`).
#include "tiles.cuh"
#include "tensor_core.cuh"
#include "k_order.cuh"

namespace wgr {

using wg::BK;
constexpr int THREADS = 256;
constexpr int BN = 128, TILES = BN / INT4_TILE_N;  // slots per block; one slot-tile per warp
constexpr int ROWS = 128;                          // rows of A per block: wgmma's N
constexpr int AHEAD = 3;                           // steps in flight ahead of the multiply
constexpr int STAGES = AHEAD + 1;
constexpr int ACC = ROWS / 2;  // f32 accumulators per thread (64 slots × 128 rows / 128 threads)
static_assert(TILES * 32 == THREADS, "one raw uint4 per thread and step");

using Smem = wgs::Stages<ROWS, STAGES>;
// The dynamic shared memory holds one Smem and 1 KB of room to start it on a 1024-byte boundary (the B tiles'
// swizzle period; each is 16 KB).
static_assert(sizeof(Smem) + 1024 == 87040, "GEMM_WGMMA_WREG_SMEM_BYTES in shapes.rs must match");

// The epilogue. The accumulators are transposed (a thread holds neighbouring rows of one slot: stored as they are,
// every output would be a 2- or 4-byte access, and the residual add a scattered read-modify-write), so the block
// first turns them around through shared memory: T[row][slot], f32, rows padded by 4 floats so that both the
// writes (lanes g, t: slots g, rows 2t) and the float4 reads of a row hit distinct banks. Then each thread takes
// 4 neighbouring slots of a row at a time: split-K partials in gemm.cu's [split][m][n_pad] layout, summed in split
// order by the last block to arrive (the same bits every run), and the outputs, one 8- or 16-byte access where the
// 4 slots map to 4 aligned neighbouring columns (the usual case), else one element at a time.
constexpr int T_LD = BN + 4;
constexpr int CHUNKS = ROWS * BN / 4 / THREADS;  // float4 chunks of T per thread
static_assert(ROWS * T_LD * 4 <= (int)sizeof(Smem), "the transposed tile reuses the pipeline's shared memory");

template <int OUT>
ENGINE_DEV void store4(const GemmParams& p, uint32_t row, uint4 col, float4 v, bool vec) {
    const size_t at = (size_t)row * p.ldy;
    if (vec && col.y == col.x + 1 && col.z == col.x + 2 && col.w == col.x + 3 && (col.x & 3u) == 0) {
        if (OUT == gemm::STORE16) {
            const __half2 lo = __floats2half2_rn(v.x, v.y), hi = __floats2half2_rn(v.z, v.w);
            *reinterpret_cast<uint2*>(p.y16 + at + col.x) = make_uint2(half2_as_u32(lo), half2_as_u32(hi));
        } else if (OUT == gemm::RESIDUAL) {
            float4* y = reinterpret_cast<float4*>(p.y32 + at + col.x);
            const float4 o = *y;
            *y = make_float4(o.x + v.x, o.y + v.y, o.z + v.z, o.w + v.w);
        } else {
            *reinterpret_cast<float4*>(p.y32 + at + col.x) = v;
        }
        return;
    }
    gemm::store_one<OUT>(p, at, col.x, v.x);
    gemm::store_one<OUT>(p, at, col.y, v.y);
    gemm::store_one<OUT>(p, at, col.z, v.z);
    gemm::store_one<OUT>(p, at, col.w, v.w);
}

template <int OUT>
ENGINE_DEV void finish(const GemmParams& p, const float (&d)[ACC], float* t, uint32_t m0, uint32_t slot0) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int slot_t = 64 * (warp >> 2) + 16 * (warp & 3) + (lane >> 2), row_t = 2 * (lane & 3);
    __syncthreads();  // every warp is done with the pipeline's buffers
#pragma unroll
    for (int i = 0; i < ACC; ++i) t[(row_t + 8 * (i >> 2) + (i & 1)) * T_LD + slot_t + 8 * ((i >> 1) & 1)] = d[i];
    __syncthreads();
    auto row_of = [&](int i) { return (tid + THREADS * i) / (BN / 4); };
    auto slot_of = [&](int i) { return 4 * ((tid + THREADS * i) % (BN / 4)); };
    float4 v[CHUNKS];
#pragma unroll
    for (int i = 0; i < CHUNKS; ++i) v[i] = *reinterpret_cast<const float4*>(&t[row_of(i) * T_LD + slot_of(i)]);
    auto in = [&](int i) { return m0 + row_of(i) < p.m && slot0 + slot_of(i) < p.n_pad; };
    auto at = [&](int i) { return (size_t)(m0 + row_of(i)) * p.n_pad + slot0 + slot_of(i); };
    if (p.k_splits > 1) {
        float* part = p.part + (size_t)blockIdx.z * p.m * p.n_pad;
#pragma unroll
        for (int i = 0; i < CHUNKS; ++i)
            if (in(i)) *reinterpret_cast<float4*>(part + at(i)) = v[i];
        uint32_t* counter = p.counters + blockIdx.y * gridDim.x + blockIdx.x;
        if (!gemm::last_split_arrives(counter, p.k_splits)) return;
#pragma unroll
        for (int i = 0; i < CHUNKS; ++i) v[i] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 1
        for (uint32_t z = 0; z < p.k_splits; ++z) {
            const float* src = p.part + (size_t)z * p.m * p.n_pad;
#pragma unroll
            for (int i = 0; i < CHUNKS; ++i) {
                if (!in(i)) continue;
                const float4 q = __ldcg(reinterpret_cast<const float4*>(src + at(i)));
                v[i] = make_float4(v[i].x + q.x, v[i].y + q.y, v[i].z + q.z, v[i].w + q.w);
            }
        }
        if (tid == 0) *counter = 0;
    }
    const bool vec = (p.ldy & 3u) == 0 &&
                     (OUT == gemm::STORE16 ? ((uintptr_t)p.y16 & 7u) == 0 : ((uintptr_t)p.y32 & 15u) == 0);
#pragma unroll
    for (int i = 0; i < CHUNKS; ++i) {
        if (!in(i)) continue;
        const uint4 col = *reinterpret_cast<const uint4*>(p.col_map + slot0 + slot_of(i));
        store4<OUT>(p, m0 + row_of(i), col, v[i], vec);
    }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d (64 × 128, f32) += A (64 × 16, f16, this thread's fragment a) · B (16 × 128, K-major, descriptor db).
ENGINE_DEV void wgmma_k16(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

// The K loop: block `blk`'s steps of 128 rows of A (in the K order, lda = k_pad) times its 8 slot-tiles, into d
// (wgmma's m64n128 accumulators of this thread's warpgroup). Not the short tile's loop (unrolled over its stages,
// copies before the dequantization): at 128 rows the multiply dominates a step, and that loop measured slower here
// (512-token prefill 14.6 -> 15.6 ms on the H200).
// Pipeline: L(j) = {rows of A and raw words of step j} into stage j % STAGES. L(0) .. L(AHEAD - 1) before the
// loop, L(i + AHEAD) issued in step i (every group committed even when empty), so that in step i wait_group
// AHEAD - 1 means "L(i) has landed". L(i + AHEAD) takes the stage of step i - 1, whose multiply every warpgroup
// waited for before step i's barrier.
ENGINE_DEV void mainloop(const GemmParams& p, const gemm::RowsBlock& blk, Smem& s, float (&d)[ACC]) {
    constexpr int R = ROWS, AHEAD_ = AHEAD;
    constexpr int CHUNKS = R * BK / 8;                              // 16-byte chunks of A per step
    constexpr int PER_THREAD = (CHUNKS + THREADS - 1) / THREADS;    // 4
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_steps = blk.n_steps;

    // Rows of A: chunk tid + THREADS i is row tid / 8 + 32 i (rows 32 apart keep their swizzle), column chunk
    // tid % 8. Row offsets in 32 bits, computed once (support.rs keeps a chunk's rows under 2³² elements); every
    // column of the K-order copy exists (it is k_pad wide). Rows past m copy row m - 1.
    const int a_r = tid >> 3, a_c = (tid & 7) * 8;
    const bool copies_a = CHUNKS >= THREADS || tid < CHUNKS;
    uint32_t a_off[PER_THREAD];
#pragma unroll
    for (int i = 0; i < PER_THREAD; ++i) a_off[i] = min(blk.m0 + a_r + 32 * i, p.m - 1) * p.lda + a_c;
    const uint32_t b_dst = wg::swizzled(a_r % R, a_c);
    auto load_b = [&](int stage, uint32_t step) {
        if (!copies_a) return;
        const __half* src = blk.a + step * BK;
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) tc::cp_async16(&s.b[stage][b_dst + 32 * i * BK], src + a_off[i], 16u);
    };
    // Raw weights: warp w copies slot-tile w of the block (512 contiguous bytes per step).
    const wg::RawCopies<1> raw(p, blockIdx.x * TILES + warp, 0, blk.tiles, blk.steps_all, lane);
    auto load_w = [&](int stage, uint32_t step) {
        raw.copy(p, step, &s.wraw[stage][warp][lane], 0, &s.sz[stage][tid], 0);
    };
    const wgs::FragmentSource frags(lane);

#pragma unroll
    for (int j = 0; j < AHEAD_; ++j) {
        if (j < n_steps) {
            load_b(j, blk.step_begin + j);
            load_w(j, blk.step_begin + j);
        }
        tc::cp_async_commit();
    }

    const uint64_t b_desc = wg::smem_desc(tc::smem_addr(&s.b[0][0]));
    constexpr uint32_t B_STAGE = R * BK * 2 / 16, K16 = 32 / 16;  // in the descriptor's 16-byte units
    int cur = 0;                                                   // i % STAGES
    for (int i = 0; i < n_steps; ++i) {
        tc::cp_async_wait<AHEAD_ - 1>();
        wg::fence_proxy_async();
        // The step's barrier: L(i) has landed for everyone and is visible to the tensor cores (each thread fenced
        // its own copies); both warpgroups have waited for their multiply of step i - 1.
        __syncthreads();
        uint32_t frag[4][4];
        frags.dequant(s.wraw[cur][warp], &s.sz[cur][warp * 32], frag);
        wg::wgmma_fence();
        wg::fence_operands(d);
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) wgmma_k16(d, frag[kk], b_desc + cur * B_STAGE + kk * K16);
        wg::wgmma_commit();
        const int prev = cur == 0 ? STAGES - 1 : cur - 1;
        if (i + AHEAD_ < n_steps) {
            load_b(prev, blk.step_begin + i + AHEAD_);
            load_w(prev, blk.step_begin + i + AHEAD_);
        }
        tc::cp_async_commit();
        cur = cur + 1 == STAGES ? 0 : cur + 1;
        wg::wgmma_wait<0>();
        wg::fence_operands(d);
    }
    tc::cp_async_wait<0>();  // nothing real is pending (the last groups are empty); never leave a copy in flight
}
#endif

template <int OUT>
ENGINE_DEV void run(const GemmParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t pad = (1024u - (tc::smem_addr(smem_raw) & 1023u)) & 1023u;
    Smem& s = *reinterpret_cast<Smem*>(smem_raw + pad);
    const gemm::RowsBlock blk = gemm::rows_block(p, BN);

    pdl_wait();
    pdl_launch_dependents();

    float d[ACC];
#pragma unroll
    for (int i = 0; i < ACC; ++i) d[i] = 0.f;
    mainloop(p, blk, s, d);
    finish<OUT>(p, d, reinterpret_cast<float*>(&s), blk.m0, blk.slot0);
#else
    __trap();  // compute_80 module: the host launches these on sm_90 only, where the sm_90a module is loaded
#endif
}

}  // namespace wgr

// Block: 256 threads. Grid: (ceil(n_pad / 128), ceil(m / 128), k_splits), split-K as gemm128's. A is the output
// of `permute_k_steps` (lda = k_pad). Dynamic shared memory sizeof(wgr::Smem) + 1024 = 87040 bytes, at most 128
// registers per thread: two blocks per SM. sm_90a only: in the compute_80 module these trap.
extern "C" __global__ void __launch_bounds__(256, 2) gemm_wgmma_wreg_int4_store16(const GemmParams p) {
    wgr::run<gemm::STORE16>(p);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemm_wgmma_wreg_int4_residual(const GemmParams p) {
    wgr::run<gemm::RESIDUAL>(p);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemm_wgmma_wreg_int4_store32(const GemmParams p) {
    wgr::run<gemm::STORE32>(p);
}

struct PermuteKParams {
    const __half* in;          // [parts][rows][lda]: part z at in + z · in_part_stride
    __half* out;               // [parts][rows][k_pad]: part z at out + z · rows · k_pad
    uint32_t lda;              // input row stride (elements, a multiple of 8)
    uint32_t k;                // input columns (a multiple of 8)
    uint32_t k_pad;            // output columns (a multiple of 64)
    uint32_t in_part_stride;   // elements between the input's parts (0 with one part)
};

// The rows of A in the K order of the weights-in-registers tiles (k_order.cuh), for an A that no producer wrote
// that way; columns from k on are zero.
// Grid: (rows, slices, parts); 128 threads, each writing 16-byte chunks of its block's slice of the row.
extern "C" __global__ void __launch_bounds__(128) permute_k_steps(const PermuteKParams a) {
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t row = blockIdx.x, rows = gridDim.x, part = blockIdx.z;
    const uint4* in = reinterpret_cast<const uint4*>(a.in + (size_t)part * a.in_part_stride + (size_t)row * a.lda);
    uint4* out = reinterpret_cast<uint4*>(a.out + ((size_t)part * rows + row) * a.k_pad);
    const uint32_t k_chunks = a.k / 8;
    const auto [lo, hi] = slice_of(a.k_pad / 8, blockIdx.y, gridDim.y);
    for (uint32_t chunk = lo + threadIdx.x; chunk < hi; chunk += blockDim.x) {
        const uint32_t step = chunk / 8, q = chunk % 8;
        uint32_t v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const uint32_t src = 8 * step + korder::natural_chunk(q, j);
            v[j] = korder::pick(src < k_chunks ? in[src] : make_uint4(0u, 0u, 0u, 0u), q);
        }
        out[chunk] = make_uint4(v[0], v[1], v[2], v[3]);
    }
}

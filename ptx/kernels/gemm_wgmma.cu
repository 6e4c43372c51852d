// Prefill GEMM for GPTQ int4 weights on Hopper's asynchronous tensor cores (`wgmma`, sm_90a only): the same
// 128-row × 128-slot tiles, grid, split-K and epilogues as gemm.cu's `gemm128_*`, with the multiply moved from
// `mma.sync` to `wgmma.mma_async`.
//
// Why. gemm128 runs at ~250 TFLOP/s of the H200's ~990: every k16 of a warp costs 6 ldmatrix and 16 mma.sync that
// the warp itself issues, so the dequantization, the address arithmetic and the shared-memory reads all compete with
// the multiply for the same issue slots. `wgmma` reads both operands from shared memory by itself (a descriptor per
// operand, no ldmatrix), a warpgroup (4 warps) issues a 64 × 128 × 16 product with one instruction, and it runs
// asynchronously: the threads dequantize the next step's weights while the tensor cores multiply this one.
//   - 256 threads = 2 warpgroups; warpgroup g owns rows 64 g .. 64 g + 63 of the block's 128 and all 128 slots
//     (m64n128k16, 64 f32 accumulators per thread, in the m16n8 C layout per warp: gemm.cu's epilogue as is);
//   - the pipeline is gemm128's: A runs two steps ahead and the raw int4 words three (cp.async, 3-stage rings), each
//     thread dequantizes the uint4 it copied into a double-buffered fp16 tile, one barrier per step;
//   - shared tiles are in wgmma's K-major layout with the 128-byte swizzle: a row (64 halves of K, one step) is 128
//     bytes, rows follow each other, and the 16-byte chunk c of row r sits at chunk c ^ (r % 8). Without the
//     swizzle (core matrices of 8 rows × 16 bytes) the tensor cores read the same banks for 8 rows at once:
//     measured 35.4 ms against mma.sync's 29.5 for a 512-token 7B prefill. With it, both producers are also free
//     of conflicts: 8 threads writing the 8 chunks of one row, or one chunk of 8 consecutive rows, hit 8
//     different 16-byte bank groups. Tiles start on 1024-byte boundaries (the swizzle's period).
//   - ordering: the tensor cores read shared memory through the async proxy, so each thread fences its own writes
//     (cp.async results after wait_group, dequantized stores) with fence.proxy.async before the step's barrier, and
//     a stage is rewritten only after every warpgroup waited for the wgmma that read it (wait_group 0 per step,
//     then the next barrier).
// Uses gemm.cu's epilogue (gemm::finish_tile) and dequantizer (gemm::dequant8): one translation unit.
#include "tiles.cuh"
#include "tensor_core.cuh"

namespace wg {

constexpr int BM = 128, BK = 64;
constexpr int THREADS = 256;
constexpr int RAW_STAGES = 3;                 // depth of the raw-weight ring (the words run three steps ahead)
constexpr uint32_t ROW_BYTES = BK * 2;        // one row of a tile: 128 bytes, the swizzle's width
constexpr uint32_t SBO = 8 * ROW_BYTES;       // between groups of 8 rows (A) / slots (W)

// The two shapes. A runs A_AHEAD = 2 steps ahead of the multiply; IN_FLIGHT wgmma steps may still run when a
// warpgroup reaches the next barrier. A stage is rewritten A_AHEAD steps after its multiply was issued and a
// dequantized tile one step after, so A_STAGES ≥ A_AHEAD + 1 + IN_FLIGHT and W_BUFS ≥ 2 + IN_FLIGHT.
//   Narrow: 128 slots, every step waited for (IN_FLIGHT 0): 96 KB, two blocks per SM hide each other's barriers.
//   Wide: 256 slots, one step left running across the barrier: each byte of A read from L2 feeds twice the slots
//     (A is most of a step's bytes: 16 KB against 4-8 KB of weights), 190 KB, one block per SM.
template <int BN_, int A_STAGES_, int W_BUFS_, int IN_FLIGHT_>
struct Shape {
    static constexpr int BN = BN_, A_STAGES = A_STAGES_, W_BUFS = W_BUFS_, IN_FLIGHT = IN_FLIGHT_;
    static constexpr int TILES = BN / INT4_TILE_N;  // slot-tiles per block
    static constexpr int RAW = TILES / 8;           // slot-tiles each warp copies and dequantizes per step
    static constexpr int ACC = BN / 2;              // f32 accumulators per thread (64 rows × BN over 128 threads)
    static_assert(A_STAGES >= 2 + 1 + IN_FLIGHT && W_BUFS >= 2 + IN_FLIGHT, "a stage would be rewritten in use");
};
using Narrow = Shape<128, 3, 2, 0>;
using Wide = Shape<256, 4, 3, 1>;

template <class S>
struct Smem {
    __half a[S::A_STAGES][BM * BK];
    __half w[S::W_BUFS][S::BN * BK];  // dequantized, [slot][k], swizzled
    uint4 wraw[RAW_STAGES][S::TILES][32];
    uint32_t sz[RAW_STAGES][S::RAW][THREADS];  // each thread's (scale, zero) words for its chunks of the step
};
// The dynamic shared memory holds one Smem and 1 KB of room to start it on a 1024-byte boundary.
static_assert(sizeof(Smem<Narrow>) + 1024 == 98304, "GEMM_WGMMA_SMEM_BYTES in shapes.rs must match");
static_assert(sizeof(Smem<Wide>) + 1024 == 195584, "GEMM_WGMMA_WIDE_SMEM_BYTES in shapes.rs must match");

// Element offset of (row r, column c) in a swizzled tile, c a multiple of 8: where its 16 bytes go.
ENGINE_DEV uint32_t swizzled(uint32_t r, uint32_t c) { return r * BK + ((((c >> 3) ^ r) & 7) << 3); }

// A lane's copies of the raw weights of N slot-tiles (tiles first, first + stride, ...), gemm.cu's scheme: per K
// step, the tile's uint4 of the lane's 32-row chunk and that chunk's (scale, zero) word, both by cp.async. Tiles
// past the end copy nothing (src-size 0) from tile 0's address. Group sizes are 32 times a power of two (the loader
// checks), or there is one group: the group is a shift, clamped. (ENGINE_DEV is `static`, which members cannot be.)
template <int N>
struct RawCopies {
    const uint4* w[N];
    const uint32_t* sz[N];
    uint32_t ok = 0;  // bit j: tile j exists
    uint32_t g_shift, k_lane;

    __device__ __forceinline__ RawCopies(const GemmParams& p, uint32_t first, uint32_t stride, uint32_t tiles,
                                         uint32_t steps_all, int lane) {
        g_shift = 31 - __clz(p.group_size);
        k_lane = (lane >> 4) * INT4_CHUNK_K;
#pragma unroll
        for (int j = 0; j < N; ++j) {
            const uint32_t tile = first + stride * j;
            const bool in = tile < tiles;
            ok |= (in ? 1u : 0u) << j;
            w[j] = p.qw + (size_t)(in ? tile : 0) * steps_all * 32 + lane;
            sz[j] = p.sz + (size_t)(in ? tile : 0) * p.groups * INT4_TILE_N + (lane & 15);
        }
    }
    // Step `step`'s copies: tile j's uint4 to w_dst + j · w_stride, its scale word to sz_dst + j · sz_stride.
    __device__ __forceinline__ void copy(const GemmParams& p, uint32_t step, uint4* w_dst, int w_stride,
                                         uint32_t* sz_dst, int sz_stride) const {
        const uint32_t g = min((step * BK + k_lane) >> g_shift, p.groups - 1);
#pragma unroll
        for (int j = 0; j < N; ++j) {
            tc::cp_async16(w_dst + j * w_stride, w[j] + step * 32, (ok >> j & 1u) ? 16u : 0u);
            gemm::cp_async4(sz_dst + j * sz_stride, sz[j] + g * INT4_TILE_N);
        }
    }
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle starting at byte address `addr`
// (a tile's row 8j, plus 32 bytes per k16 within the row: the hardware applies the swizzle to the address): address
// and stride between 8-row groups in units of 16 bytes, the leading offset unused (one k16 never leaves a row: 1),
// base offset 0 (tiles are 1024-byte aligned), swizzle mode 1 (128 bytes).
ENGINE_DEV uint64_t smem_desc(uint32_t addr) {
    return (uint64_t)((addr & 0x3FFFFu) >> 4) | (1ull << 16) | ((uint64_t)(SBO >> 4) << 32) | (1ull << 62);
}

// Make this thread's generic-proxy writes to shared memory (st.shared, completed cp.async) visible to the async
// proxy that wgmma reads through.
ENGINE_DEV void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
ENGINE_DEV void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
ENGINE_DEV void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
ENGINE_DEV void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keep the compiler from moving accumulator accesses across the asynchronous multiply: an empty asm that "reads and
// writes" each register.
template <int N>
ENGINE_DEV void fence_operands(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d (64 × N, f32) += A (64 × 16, f16, descriptor da) · B (16 × N, f16, descriptor db), both K-major, N = 128 or
// 256 by the size of d (N / 2 accumulators per thread). The predicate says "accumulate into d"; the four immediates:
// no negation of A or B, neither transposed.
ENGINE_DEV void wgmma_k16(float (&d)[64], uint64_t da, uint64_t db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(1));
}
ENGINE_DEV void wgmma_k16(float (&d)[128], uint64_t da, uint64_t db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(1));
}
#endif

template <int OUT, class S>
ENGINE_DEV void run(const GemmParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int BN = S::BN;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t pad = (1024u - (tc::smem_addr(smem_raw) & 1023u)) & 1023u;
    Smem<S>& s = *reinterpret_cast<Smem<S>*>(smem_raw + pad);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, group = warp >> 2;
    const gemm::RowsBlock blk = gemm::rows_block(p, BN);
    const uint32_t m0 = blk.m0, slot0 = blk.slot0, steps_all = blk.steps_all, tiles = blk.tiles;
    const uint32_t step_begin = blk.step_begin;
    const int n_steps = blk.n_steps;
    const __half* a = blk.a;

    pdl_wait();
    pdl_launch_dependents();

    // The copies' and the dequantization's addresses, computed once: each step only moves them along K (issue
    // slots are the kernel's scarcest resource after the tensor cores; ncu counted ~340 instructions per warp and
    // step when every step recomputed them).
    // A: 128 rows × 8 chunks of 16 bytes, 4 per thread: rows tid / 8 + 32 i, chunk tid % 8 (a warp copies 4 whole
    // 128-byte rows of the step). Rows 32 apart keep their swizzle (it depends on the row mod 8 only). Rows past m
    // copy row m - 1: their sums are never stored (row r of Y depends on row r of A only), so only the columns
    // past k need zero-filling (src-size 0, from a clamped and so valid address), and each row's offset is computed
    // once, in 32 bits (support.rs keeps a chunk's rows of A under 2³² elements).
    const int a_r = tid >> 3, a_c = (tid & 7) * 8;
    uint32_t a_off[BM / 32];
#pragma unroll
    for (int i = 0; i < BM / 32; ++i) a_off[i] = min(m0 + a_r + 32 * i, p.m - 1) * p.lda;
    const uint32_t a_dst = swizzled(a_r, a_c);
    auto load_a = [&](int buf, uint32_t step) {
        const uint32_t col = step * BK + a_c;
        const __half* src = a + min(col, p.k - 8);
#pragma unroll
        for (int i = 0; i < BM / 32; ++i)
            tc::cp_async16(&s.a[buf][a_dst + 32 * i * BK], src + a_off[i], col < p.k ? 16u : 0u);
    };
    // Raw weights: warp w copies slot-tiles w, w + 8, ... of the block (512 contiguous bytes each).
    const RawCopies<S::RAW> raw(p, blockIdx.x * S::TILES + warp, 8, tiles, steps_all, lane);
    auto load_w = [&](int buf, uint32_t step) {
        raw.copy(p, step, &s.wraw[buf][warp][lane], 8 * 32, &s.sz[buf][0][tid], THREADS);
    };
    const uint32_t k_lane = raw.k_lane;
    // What this thread dequantizes: the uint4s it copied, slot (lane % 16) of slot-tiles warp + 8 j, rows
    // 32 · (lane / 16) + 8 i .. + 8 of the step for word i.
    auto dequant = [&](int raw_buf, int w_buf) {
#pragma unroll
        for (int j = 0; j < S::RAW; ++j) {
            const uint32_t lt = warp + 8 * j, slot = lt * INT4_TILE_N + (lane & 15);
            const uint4 wv = s.wraw[raw_buf][lt][lane];
            const __half2 szh = u32_as_half2(s.sz[raw_buf][j][tid]);
            const __half2 zz = __high2half2(szh), sc = __low2half2(szh);
            const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
            // swizzled(slot, k_lane + 8 wi), spelled out: the chunks k_lane / 8 + wi differ from k_lane / 8 in
            // their low two bits only, so the swizzle of chunk wi is that of chunk 0 XOR wi.
            __half* row = &s.w[w_buf][slot * BK];
            const uint32_t x = ((k_lane >> 3) ^ slot) & 7;
#pragma unroll
            for (int wi = 0; wi < 4; ++wi)
                *reinterpret_cast<uint4*>(row + ((x ^ wi) << 3)) = gemm::dequant8(words[wi], zz, sc);
        }
    };

    float d[S::ACC];
#pragma unroll
    for (int i = 0; i < S::ACC; ++i) d[i] = 0.f;

    // Prologue, as gemm128's: groups P = {raw 0}, C(-2) = {A 0, raw 1}, C(-1) = {A 1, raw 2}, then C(i) =
    // {A i + 2, raw i + 3} in step i, every group committed even when empty, so that in step i wait_group 1 means
    // "C(i - 2) has landed": A of step i and the raw words of step i + 1.
    if (n_steps > 0) load_w(0, step_begin);
    tc::cp_async_commit();
    if (n_steps > 0) load_a(0, step_begin);
    if (n_steps > 1) load_w(1, step_begin + 1);
    tc::cp_async_commit();
    if (n_steps > 1) load_a(1, step_begin + 1);
    if (n_steps > 2) load_w(2, step_begin + 2);
    tc::cp_async_commit();
    tc::cp_async_wait<2>();
    if (n_steps > 0) dequant(0, 0);  // each thread its own copies: no barrier needed to read them

    // Descriptors of this warpgroup's rows of A stage 0 and of the whole W buffer 0; a step adds its stage's and
    // buffer's offset (descriptors count 16-byte units in their low 14 bits, where shared addresses never carry out).
    const uint64_t a_desc = smem_desc(tc::smem_addr(&s.a[0][64 * group * BK]));
    const uint64_t w_desc = smem_desc(tc::smem_addr(&s.w[0][0]));
    constexpr uint32_t A_STAGE = BM * BK * 2 / 16, W_BUF = BN * BK * 2 / 16, K16 = 32 / 16;

    // Ring positions of step i, advanced each step instead of computed with divisions.
    int a_cur = 0, a_next = 2 % S::A_STAGES, w_cur = 0, raw_cur = 0;
    for (int i = 0; i < n_steps; ++i) {
        tc::cp_async_wait<1>();
        fence_proxy_async();
        // The step's one barrier: A of step i has landed for everyone and its W tile is complete, both visible to
        // the tensor cores; every warpgroup has finished its wgmma of step i - 1 - IN_FLIGHT, whose A stage, and
        // the W tile of step i - 1 - IN_FLIGHT... are what the copies and the dequantization below rewrite (see
        // Shape), and the raw stage i % 3 was dequantized during step i - 1.
        __syncthreads();
        // The multiply first, so that the tensor cores start while this thread issues the copies.
        wgmma_fence();
        fence_operands(d);
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk)
            wgmma_k16(d, a_desc + a_cur * A_STAGE + kk * K16, w_desc + w_cur * W_BUF + kk * K16);
        wgmma_commit();
        if (i + 2 < n_steps) load_a(a_next, step_begin + i + 2);
        if (i + 3 < n_steps) load_w(raw_cur, step_begin + i + 3);
        tc::cp_async_commit();

        // The next step's weights, dequantized while the tensor cores multiply this one.
        a_cur = a_cur + 1 == S::A_STAGES ? 0 : a_cur + 1;
        a_next = a_next + 1 == S::A_STAGES ? 0 : a_next + 1;
        w_cur = w_cur + 1 == S::W_BUFS ? 0 : w_cur + 1;
        raw_cur = raw_cur + 1 == RAW_STAGES ? 0 : raw_cur + 1;  // now (i + 1) % 3: the words of step i + 1
        if (i + 1 < n_steps) dequant(raw_cur, w_cur);
        wgmma_wait<S::IN_FLIGHT>();
        fence_operands(d);
    }
    wgmma_wait<0>();
    fence_operands(d);
    tc::cp_async_wait<0>();  // nothing real is pending (the last groups are empty); never leave a copy in flight

    // Epilogue: warp (group, w4) holds rows 64 group + 16 w4 + {g, g + 8} and slots 8 ni + 2 t + {0, 1} in
    // d[4 ni .. 4 ni + 3], the m16n8 C layout of gemm.cu's warp tiles (one m16 tile, BN / 8 n8 tiles).
    float (&acc)[1][BN / 8][4] = *reinterpret_cast<float(*)[1][BN / 8][4]>(&d);
    const int g = lane >> 2, t4 = lane & 3;
    gemm::finish_tile<OUT, 1, BN / 8>(p, acc, m0 + 64 * group + 16 * (warp & 3) + g, slot0 + 2 * t4);
#else
    __trap();  // compute_80 module: the host launches these on sm_90 only, where the sm_90a module is loaded
#endif
}

}  // namespace wg

// Block: 256 threads. Grid: (ceil(n_pad / BN), ceil(m / 128), k_splits), split-K as gemm128's. sm_90a only: in the
// compute_80 module these trap.
// gemm_wgmma_*: BN = 128, dynamic shared memory sizeof(wg::Smem<Narrow>) + 1024 = 98304 bytes, at most 128
// registers per thread: two blocks per SM.
extern "C" __global__ void __launch_bounds__(256, 2) gemm_wgmma_int4_store16(const GemmParams p) {
    wg::run<gemm::STORE16, wg::Narrow>(p);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemm_wgmma_int4_residual(const GemmParams p) {
    wg::run<gemm::RESIDUAL, wg::Narrow>(p);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemm_wgmma_int4_store32(const GemmParams p) {
    wg::run<gemm::STORE32, wg::Narrow>(p);
}
// gemm_wgmma256_*: BN = 256, dynamic shared memory sizeof(wg::Smem<Wide>) + 1024 = 195584 bytes: one block per SM.
extern "C" __global__ void __launch_bounds__(256, 1) gemm_wgmma256_int4_store16(const GemmParams p) {
    wg::run<gemm::STORE16, wg::Wide>(p);
}
extern "C" __global__ void __launch_bounds__(256, 1) gemm_wgmma256_int4_residual(const GemmParams p) {
    wg::run<gemm::RESIDUAL, wg::Wide>(p);
}
extern "C" __global__ void __launch_bounds__(256, 1) gemm_wgmma256_int4_store32(const GemmParams p) {
    wg::run<gemm::STORE32, wg::Wide>(p);
}

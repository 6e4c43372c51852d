// Prefill GEMM for chunks of at most 64 rows, shaped like the decode GEMV: a block per 16-slot tile over all of K,
// its warps streaming disjoint K spans of the tile straight into registers, the rows multiplied on mma.sync in
// blocks of 16 (each dequantized weight fragment serves every row block).
//
// Why. At 16 rows a GEMM is still a stream of weights (32 flops per weight), and what the split-K tiles lose is
// the structure around the stream, not the multiply: gemm_wgmma_short's blocks run a block-wide chain per 4 KB
// step (barrier, dequantize, wgmma, wait) and each GEMM ends with a merge of its K splits, ~9 µs per launch beyond
// its bytes. The decode GEMV pays ~1.5 µs: many short blocks, no barrier in the K loop, one reduction at the end.
// This kernel is that GEMV with the dot product on tensor cores (tests/gpu/micro/short_chain.cu measured the four
// 7B projections at 16 rows in 1.66-1.78 ms per 32 layers against ~2.5 ms; BENCHMARKS.md).
//   - Lane mapping, on the tiles' own layout (no repacking): a tile's uint4 `16 c + s` of a 64-row step holds slot s
//     at rows 32 c .. 32 c + 31. Per span of two steps, lane (g, t) loads chunk t (step t / 2, c = t % 2) of slots g
//     and g + 8: two LDG.128, 32 rows each. In mma.m16n8k16 with A = the 16 input rows and B = the weights (N = 8
//     slots, one MMA per half of the tile), lane (g, t)'s B registers are 4 K indices of slot g per k16 block, and
//     which input row stands behind each K index is free as long as A agrees: block j takes word j / 2 of the
//     lane's chunk, nibble pairs (i, i + 4) with i = 2 (j % 2) (b0b1) and i + 1 (b2b3). A is stored to match
//     (frag16.cuh): one LDG.128 per lane and block gives its four A registers.
//   - The dequantization: one LOP3 per pair (the odd pair unshifted, as 1024 + 16 q, see unshifted_zero), the zero
//     subtracted exactly, the group's scale multiplied in fp16 (as the short tile does): groups are whole 32-row
//     chunks, so a lane's chunk has one (scale, zero) word per slot and span, for any group size.
//   - Two spans of weights in flight per warp (this one's and the next), the first loaded before the PDL wait (both
//     before it, or none, measured slower: BENCHMARKS.md).
//   - The warps' sums meet in shared memory; 2 RB warps then hold the tile's 16 RB × 16 results (8 rows each) in
//     the short tile's epilogue layout and run its epilogue (wgs::finish: stores, residual, SwiGLU, the rotary
//     embedding), with one K split.
//   - Row blocks (RB = 2..4 for chunks of 17..64 rows): every A load and MMA is made RB times per dequantized B, so
//     A's traffic (RB × 4 the weights' bytes) and the accumulators grow with RB: measured per 32 layers' four GEMMs
//     1.67-1.78 ms at 16 rows, 2.37 at 32, 3.01 at 48, 3.66 at 64 (short_chain.cu), against ~7 ms for the 64-row
//     mma.sync tile this replaces there.
// Contract (the host checks): int4 tiles, k_pad a multiple of 128, m ≤ 16 RB, k_splits = 1, A in frag16's order
// (RB blocks of 16 × k_pad halves, lda unused), no act-order part copies.
#include "tiles.cuh"
#include "tensor_core.cuh"
#include "frag16.cuh"
#include "rope.cuh"

namespace rows16 {

// B registers of k16 block j from the lane's word j / 2 of one slot: pairs 2 (j % 2) and 2 (j % 2) + 1, each
// (q − zero) · scale in fp16. zz = 1024 + zero, zh = unshifted_zero(zz), sc = scale, all in both halves.
ENGINE_DEV void b_pairs(uint32_t word, int j, __half2 zz, __half2 zh, __half2 sc, uint32_t& b0, uint32_t& b1) {
    const uint32_t bits = (j & 1) ? word >> 8 : word;
    const __half2 lo = __hsub2(u32_as_half2(lop3_and_or(bits, 0x000F000Fu, 0x64006400u)), zz);
    const __half2 hi = __hfma2(u32_as_half2(lop3_and_or(bits, 0x00F000F0u, 0x64006400u)),
                               u32_as_half2(0x2C002C00u), zh);  // (1024 + 16 q) / 16 − (64 + zero)
    b0 = half2_as_u32(__hmul2(lo, sc));
    b1 = half2_as_u32(__hmul2(hi, sc));
}

// One span's weights of a lane: its chunk of slots g and g + 8, and their (scale, zero) words.
struct Span {
    uint4 w[2];
    uint32_t sz[2];
};

template <int NW, int RB, int OUT>
ENGINE_DEV void run(const GemmParams& p, const RopeParams* rope = nullptr) {
    static_assert(2 * RB <= NW, "two warps per row block run the epilogue");
    constexpr int R = 16 * RB;         // rows
    __shared__ float sums[NW][R * 16];  // [warp][row][slot]
    __shared__ float total[R * 16];     // [row][slot]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t tile = blockIdx.x, steps = p.k_pad / INT4_STEP_K, spans = steps / 2;
    const uint32_t g_shift = 31 - __clz(p.group_size);
    // The lane's chunk in a span (uint4 units from the span's first), its slots' (scale, zero) words, its A.
    const uint4* w_lane = p.qw + (size_t)tile * steps * 32 + (t >> 1) * 32 + 16 * (t & 1) + g;
    const uint32_t* sz_lane = p.sz + (size_t)tile * p.groups * INT4_TILE_N + g;
    const uint4* a_lane = reinterpret_cast<const uint4*>(p.a) + lane;
    const size_t a_block = 2 * (size_t)p.k_pad;  // uint4s of one row block (16 × k_pad halves)

    auto load = [&](uint32_t s, Span& sp) {
        if (s >= spans) return;
        const uint32_t group = min((2 * s * INT4_STEP_K + t * INT4_CHUNK_K) >> g_shift, p.groups - 1);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            sp.w[h] = ldg_stream_v4(w_lane + (size_t)s * 64 + 8 * h);
            sp.sz[h] = __ldg(sz_lane + group * INT4_TILE_N + 8 * h);
        }
    };
    float acc[RB][2][4] = {};
    auto multiply = [&](uint32_t s, const Span& sp) {
        if (s >= spans) return;
        __half2 zz[2], zh[2], sc[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const __half2 szh = u32_as_half2(sp.sz[h]);
            zz[h] = __high2half2(szh), sc[h] = __low2half2(szh), zh[h] = unshifted_zero(zz[h]);
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            uint32_t a[RB][4];
#pragma unroll
            for (int rb = 0; rb < RB; ++rb) {
                const uint4 a4 = ldg_nc_v4(a_lane + rb * a_block + ((size_t)s * 8 + j) * 32);
                a[rb][0] = a4.x, a[rb][1] = a4.y, a[rb][2] = a4.z, a[rb][3] = a4.w;
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                uint32_t b0, b1;
                b_pairs(word_of(sp.w[h], j >> 1), j, zz[h], zh[h], sc[h], b0, b1);
#pragma unroll
                for (int rb = 0; rb < RB; ++rb) tc::mma_16816(acc[rb][h], a[rb], b0, b1);
            }
        }
    };

    // The weights never change: the first span's go out before waiting for the previous kernel (programmatic
    // dependent launch), so that their latency overlaps its tail. Nothing before pdl_wait reads A.
    Span cur, nxt;
    load(warp, cur);
    pdl_wait();
    pdl_launch_dependents();
    for (uint32_t s = warp; s < spans; s += 2 * NW) {
        load(s + NW, nxt);
        multiply(s, cur);
        load(s + 2 * NW, cur);
        multiply(s + NW, nxt);
    }

    // C fragment of row block rb, half h: element e is row 16 rb + g + 8 (e / 2), slot 8 h + 2 t + e % 2. Every
    // thread then adds up outputs over the warps (in warp order), so that the warps that run the epilogue only read
    // their sums.
#pragma unroll
    for (int rb = 0; rb < RB; ++rb)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                sums[warp][(16 * rb + g + 8 * (e >> 1)) * 16 + 8 * h + 2 * t + (e & 1)] = acc[rb][h][e];
    __syncthreads();
    for (int q = threadIdx.x; q < R * 16; q += NW * 32) {
        float v = sums[0][q];
#pragma unroll
        for (int wi = 1; wi < NW; ++wi) v += sums[wi][q];
        total[q] = v;
    }
    __syncthreads();
    // Warps 0 .. 2 RB - 1 run the epilogue, rows 8 · warp .. + 7 each, in the short tile's epilogue layout
    // (wgs::finish with 4 sums per thread): d[i] is row 8 warp + 2 t + i % 2, slot g + 8 ((i / 2) % 2).
    if (warp >= 2 * RB) return;
    const uint32_t row0 = 8 * warp;
    float d[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = total[(row0 + 2 * t + (i & 1)) * 16 + g + 8 * ((i >> 1) & 1)];
    wgs::finish<OUT, 4, frag16::Order>(p, d, tile * INT4_TILE_N + g, row0, rope);
}

}  // namespace rows16

// Block: 256 threads (8 warps; for projections of many tiles) or, for 16 rows, 512 (16 warps, `_wide`: few tiles, so
// more warps per tile keep the bytes in flight). Grid: n_pad / 16. No dynamic shared memory. Registers capped for
// MIN_BLOCKS blocks per SM: 16 rows 4 (2 wide), 32 rows 3, 48 and 64 rows 2 (what measured best, short_chain.cu).
// The compute_80 module (sm_80/86/89) needs more registers for the same loop: ptxas spilled 8-20 B at these caps
// there, so it gets one block per SM fewer (not measured on such a card).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define ROWS_MIN_BLOCKS(n) ((n) > 1 ? (n) - 1 : 1)
#else
#define ROWS_MIN_BLOCKS(n) (n)
#endif
#define ROWS16_KERNELS(NAME, NW, RB, MIN_BLOCKS)                                                                      \
    extern "C" __global__ void __launch_bounds__(NW * 32, ROWS_MIN_BLOCKS(MIN_BLOCKS)) NAME##_int4_store16(const GemmParams p) {       \
        rows16::run<NW, RB, gemm::STORE16>(p);                                                                            \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(NW * 32, ROWS_MIN_BLOCKS(MIN_BLOCKS)) NAME##_int4_residual(const GemmParams p) {      \
        rows16::run<NW, RB, gemm::RESIDUAL>(p);                                                                           \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(NW * 32, ROWS_MIN_BLOCKS(MIN_BLOCKS)) NAME##_int4_store32(const GemmParams p) {       \
        rows16::run<NW, RB, gemm::STORE32>(p);                                                                            \
    }                                                                                                                 \
    /* gate/up paired (ColumnOrder::GateUp) with SwiGLU into the down projection's input in frag16's order. */       \
    extern "C" __global__ void __launch_bounds__(NW * 32, ROWS_MIN_BLOCKS(MIN_BLOCKS)) NAME##_int4_swiglu(const GemmParams p) {        \
        rows16::run<NW, RB, gemm::SWIGLU_K>(p);                                                                           \
    }                                                                                                                 \
    /* q/k/v in ColumnOrder::QkvRope with the rotary embedding and the KV-cache append (gemm_wgmma_short.cu's). */   \
    extern "C" __global__ void __launch_bounds__(NW * 32, ROWS_MIN_BLOCKS(MIN_BLOCKS)) NAME##_int4_qkv_rope(const GemmRopeParams p) {  \
        rows16::run<NW, RB, gemm::QKV_ROPE_K>(p.gemm, &p.rope);                                                           \
    }
ROWS16_KERNELS(gemv_rows16, 8, 1, 4)
ROWS16_KERNELS(gemv_rows16_wide, 16, 1, 2)
ROWS16_KERNELS(gemv_rows32, 8, 2, 3)
ROWS16_KERNELS(gemv_rows48, 8, 3, 2)
ROWS16_KERNELS(gemv_rows64, 8, 4, 2)
#undef ROWS16_KERNELS
#undef ROWS_MIN_BLOCKS

// Rows in order (lda apart, k columns) into frag16's order over k_pad columns (zeros from k on), for an A that no
// producer wrote that way. Grid: (rows, slices); 128 threads, a natural 8-column chunk each.
extern "C" __global__ void __launch_bounds__(128) permute_frag16(const PermuteKParams a) {
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t r = blockIdx.x;
    const __half* row = a.in + (size_t)r * a.lda;
    const auto [lo, hi] = slice_of(a.k_pad / 8, blockIdx.y, gridDim.y);
    for (uint32_t c = lo + threadIdx.x; c < hi; c += blockDim.x) {
        uint4 raw = make_uint4(0u, 0u, 0u, 0u);
        if (8 * c < a.k) raw = *reinterpret_cast<const uint4*>(row + 8 * c);
        __half v[8];
        *reinterpret_cast<uint4*>(v) = raw;
        frag16::store_chunk(a.out, r, c, v, a.k_pad);
    }
}

// The weight tiles the decode GEMV and the prefill GEMMs read — GPTQ int4, GPTQ int8 and fp16 in the same walk —
// their dequantization helpers, and the parameter blocks of those kernels.
//
// The weights are in the engine's tile layout (engine/src/backend/cuda/layout.rs has the full description):
//   qw[tile][step][lane] is a uint4: lane l reads the 32 rows 32*(2*step + l/16) .. +32 of slot l%16 as 4 words
//   of 8 nibbles (low nibble = lowest row); 8 bits: qw[tile][step][2][lane], the chunk's 32 bytes in two uint4s;
//   fp16: qw[tile][step][4][lane], its 32 halves in four (see dequant_rows8); sz[tile][group][slot] is a half2
//   (scale, 1024 + zero).
#pragma once
#include "common.cuh"
#include "tile_layout.h"
#include <cuda_fp16.h>

// `(a & b) | c` in one instruction. Buys: turning a nibble into the fp16 number 1024 + q costs one LOP3 instead of
// an AND and an OR (the dequantization is the GEMV's only arithmetic besides the FMAs, so every op counts).
ENGINE_DEV uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

ENGINE_DEV __half2 u32_as_half2(uint32_t v) {
    __half2 h;
    *reinterpret_cast<uint32_t*>(&h) = v;
    return h;
}

ENGINE_DEV uint32_t half2_as_u32(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

// The zero term of the nibbles taken unshifted (1/5, 3/7: fp16 1024 + 16q), given zz = (1024 + zero) in both halves:
// 960 − (1024 + zero) = −(64 + zero), exact, so that one HFMA2 (× 1/16, + this) brings them to q − zero.
ENGINE_DEV __half2 unshifted_zero(__half2 zz) { return __hsub2(u32_as_half2(0x63806380u), zz); }

// A symmetric 4-bit linear's zero point, 8 (AutoGPTQ's sym: every stored nibble 7), as the decode GEMV's dot product
// takes it: 1024 + 8 = 0x6408 and −(64 + 8) = −72 = 0xD480, both exact in fp16. The scales-only GEMVs (GemvParams::
// scales) use these constants where the others read the zero from their (scale, 1024 + zero) word.
constexpr uint32_t SYM4_ZZ = 0x64086408u;  // 1024 + 8 in both halves
constexpr uint32_t SYM4_ZH = 0xD480D480u;  // unshifted_zero of it

// The four half2 pairs (q_i − zero, q_{i+4} − zero), i = 0..3, of one packed word, exactly.
// Why it works: 0x6400 is fp16 1024.0, whose mantissa step is exactly 1, so OR-ing a 4-bit value into the low
// mantissa bits gives the fp16 number 1024 + q; masking with 0x000F000F picks nibble i into the low half and
// nibble i + 4 (bits 16..19 of word >> 4i) into the high half at once. Subtracting (1024 + zero), which the
// layout stores precomputed, leaves q − zero ∈ [−16, 14], exact in fp16.
ENGINE_DEV void dequant_word(uint32_t word, __half2 zz, __half2 out[4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t t = lop3_and_or(word >> (4 * i), 0x000F000Fu, 0x64006400u);
        out[i] = __hsub2(u32_as_half2(t), zz);
    }
}

// 8-bit GPTQ. The tiles hold a lane's 32-row chunk as two 16-byte words (layout.rs: pack_chunk_int8), each 8-row
// group r0..r7 as the 32-bit words [r0, r4, r1, r5] and [r2, r6, r3, r7]; so one byte permute of a word with
// 0x64 bytes makes two of the int4 dequantizer's (row i, row i + 4) pairs at once, as 1024 + q (0x64qq is fp16
// 1024 + q, exact for q < 1024). Every consumer of the pairs — the staged input, the FMAs, the MMA operands — is
// then the same for both widths.
constexpr uint32_t BYTE_PAIR_LO = 0x4140;  // prmt selector: bytes 0, 1 of the word as (0x64 b0, 0x64 b1)
constexpr uint32_t BYTE_PAIR_HI = 0x4342;  // bytes 2, 3

ENGINE_DEV uint32_t biased_byte_pair(uint32_t word, uint32_t selector) {
    return __byte_perm(word, 0x64646464u, selector);
}

// Unquantized fp16 weights use the same tiles too (BITS = 16): a lane's 32-row chunk is four uint4s, one per 8-row
// group, whose words are the half2 pairs (row j, row j + 4) themselves; groups = 1 with (scale, zero) = (1, 0), so
// every kernel path stays the same but the dequantization, which is none.

// 16-byte words one lane reads per K step: one of 32 nibbles, two of 32 bytes, four of 32 halves.
template <int BITS>
constexpr int lane_words() {
    static_assert(BITS == 4 || BITS == 8 || BITS == 16, "tiles hold 4- or 8-bit GPTQ weights or fp16 weights");
    return BITS / 4;
}

// Component i of a uint4 (i known at compile time after unrolling).
ENGINE_DEV uint32_t word_of(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// The 8 weights of rows 8i .. 8i + 7 of a lane's 32-row chunk (its lane_words<BITS>() words `w`), as the pairs
// (row 8i + j, row 8i + j + 4), j = 0..3, each q − zero exactly (zz = 1024 + zero; fp16: the weights). The prefill
// GEMMs scale these; the decode GEMV has instruction-counted variants of its own (dot_chunk).
template <int BITS>
ENGINE_DEV void dequant_rows8(const uint4* w, int i, __half2 zz, __half2 out[4]) {
    if constexpr (BITS == 4) {
        dequant_word(word_of(w[0], i), zz, out);
    } else if constexpr (BITS == 16) {
#pragma unroll
        for (int j = 0; j < 4; ++j) out[j] = u32_as_half2(word_of(w[i], j));
    } else {
        const uint32_t a = word_of(w[i / 2], (2 * i) % 4), b = word_of(w[i / 2], (2 * i + 1) % 4);
        out[0] = __hsub2(u32_as_half2(biased_byte_pair(a, BYTE_PAIR_LO)), zz);
        out[1] = __hsub2(u32_as_half2(biased_byte_pair(a, BYTE_PAIR_HI)), zz);
        out[2] = __hsub2(u32_as_half2(biased_byte_pair(b, BYTE_PAIR_LO)), zz);
        out[3] = __hsub2(u32_as_half2(biased_byte_pair(b, BYTE_PAIR_HI)), zz);
    }
}

// The normalized input in half precision (GemvParams::x16 of a NORM kernel): the kernel that updated the residual
// stream wrote x · norm weight · HALF_INPUT_SCALE as fp16, and the norm's 1 / rms comes on top when it is staged.
// Why: every block of a NORM kernel stages the whole input after the wait, and staging 8 KB of fp16 (7B) instead of
// the f32 x and the fp16 norm weight (24 KB) shortens that step (BENCHMARKS.md). Why the scale: it keeps the fp16
// copy finite up to |x · w| of 2^20 (the residual stream's largest values in LLaMA-family models are ~10^3), at
// the cost of precision only below 2^-10, where fp16 turns subnormal: far under what a row's norm is made of.
constexpr float HALF_INPUT_SCALE = 0.0625f;

// The fp16 copy of one normalized-input value (the residual epilogue and the embedding write it), saturated rather
// than infinite for a value past fp16's range.
ENGINE_DEV __half half_input(float x_times_w) {
    return __float2half_rn(fminf(fmaxf(x_times_w * HALF_INPUT_SCALE, -65504.f), 65504.f));
}

// Everything the decode GEMV kernels read and write. One struct for every variant keeps the host side to one
// #[repr(C)] mirror (engine/src/backend/cuda/kernels.rs); fields a variant does not use are ignored.
// Pointers first, then an even number of 32-bit scalars, then the attention's own block, so that the C and Rust
// layouts have no padding to disagree on.
struct GemvParams {
    // Weights in the tile layout.
    const uint4* qw;
    const uint32_t* sz;       // half2 (scale, 1024 + zero) per [tile][group][slot]
    const __half* scales;     // a symmetric 4-bit linear: the scales of sz alone, same order (the gemv_*sym* kernels)
    const uint32_t* col_map;  // output column of each slot; INT4_PAD_SLOT = padding
    // Prologue inputs.
    const float* x;           // NORM: the residual stream, f32 [k] (act-order: its copies, see part_slot1)
    const __half* x16;        // PLAIN: the input, f16 [k], in the weights' sorted row order; NORM with one input:
                              // the half input x · norm weight · HALF_INPUT_SCALE (below), read instead of x, norm_w
    const __half* norm_w;     // NORM: RMSNorm weight [k]; null where x already has it folded in
    const float* ssq;         // NORM: partial sums of squares of x, n_ssq of them
    // Epilogue outputs.
    float* y;                 // STORE: y[n] = acc; RESIDUAL: y[n] += acc (y is the residual stream)
    float* ssq_out;           // RESIDUAL: sum of squares of the new y over each tile's slots, one per tile
    __half* out16;            // QKV: q [q_dim]; SWIGLU: h [inter]; RESIDUAL (not act-order): null, or the next NORM
                              // kernel's half input, y · out_norm_w · HALF_INPUT_SCALE [n]
    __half* k_cache;          // QKV: this layer's keys [kv_heads][ctx][head_dim]
    __half* v_cache;          // QKV: this layer's values, same shape
    const float* rope_cos;    // QKV: [max_pos][head_dim / 2]
    const float* rope_sin;
    const uint32_t* pos;      // QKV: position of the token being decoded
    // Act-order: where the next projection wants each output column in its sorted input ([out_parts][out_stride]
    // sorted rows, i.e. inverse permutations). RESIDUAL: y_sorted[q][out_idx[q][col]] = y[col] · out_norm_w[col]
    // for q < out_parts; SWIGLU: out16[out_idx[col]] instead of out16[col]. Null / 0: none. (out_norm_w is also
    // the norm weight of RESIDUAL's half input.)
    const uint32_t* out_idx;
    float* y_sorted;
    const __half* out_norm_w;
    // The next GEMV of the step (sm_90): its first next_chunks · next_chunk_bytes bytes at next_qw, which this one's
    // blocks ask into L2 a chunk at a time once their own weights are asked for (gemv::prefetch_next). Null / 0: none.
    const uint4* next_qw;
    uint32_t k;               // input rows (unpadded)
    uint32_t k_pad;           // input rows padded to INT4_STEP_K
    uint32_t n_pad;           // slots (a multiple of INT4_TILE_N)
    uint32_t groups;
    uint32_t group_size;      // rows per group after sorting (a multiple of INT4_CHUNK_K)
    uint32_t tiles_per_block;
    uint32_t n_ssq;
    float eps;
    uint32_t ctx;             // QKV: positions per KV head in the caches
    uint32_t head_dim;
    uint32_t q_dim;           // QKV: heads * head_dim
    uint32_t kv_dim;          // QKV: kv_heads * head_dim
    uint32_t chunk_shift;     // group of a 32-row chunk = chunk >> chunk_shift (group_size / 32 is a power of two)
    uint32_t part_slot1;      // act-order with a permutation per fused part: first slot of part 1 (whole tiles; part
    uint32_t part_slot2;      // i reads its input copy at x / x16 + i · k_pad), first slot of part 2;
                              // 0xFFFFFFFF where there is none
    uint32_t out_parts;       // RESIDUAL: copies in y_sorted (0: none)
    uint32_t out_stride;      // elements between two parts' rows of out_idx and y_sorted
    uint32_t next_chunks;
    uint32_t next_chunk_bytes;
};

// Everything the prefill GEMM kernels read and write: gemm.cu (row tiles of 64) and gemm_small.cu (chunks of
// at most 16 rows). Mirrored in engine/src/backend/cuda/kernels.rs. Pointers first, then 32-bit scalars.
struct GemmParams {
    const uint4* qw;          // the tile layout (above)
    const uint32_t* sz;       // half2 (scale, 1024 + zero) per [tile][group][slot]
    const uint32_t* col_map;  // output column of each slot
    const __half* a;          // [m][lda] fp16
    float* y32;               // RESIDUAL: y32[r][col] += acc; STORE32: y32[r][col] = acc
    __half* y16;              // STORE16: y16[r][col] = acc
    float* part;              // split-K partial sums: gemm.cu [k_splits][m][n_pad], gemm_small [k_splits][tile][256]
    uint32_t* counters;       // split-K: gemm.cu one per output tile of its grid (grid.x · grid.y), gemm_small one per
                              // 16-slot tile; zero at rest
    uint32_t m;               // rows
    uint32_t k;               // input columns (a multiple of 8)
    uint32_t k_pad;
    uint32_t n_pad;
    uint32_t groups;
    uint32_t group_size;
    uint32_t lda;             // A row stride in elements (a multiple of 8)
    uint32_t ldy;             // Y row stride in elements
    uint32_t k_splits;        // blocks along K (gemm.cu: grid.z; gemm_small: grid.y); 1 = no split
    // Act-order with a permutation per fused part: a block whose first slot is in part i (from part_slot1 /
    // part_slot2 on; each a multiple of the block's slots, 0xFFFFFFFF where there is none) reads its A at
    // a + i · a_part_stride, the copy in that part's row order (gemm_small: a block's slots are its tiles).
    uint32_t a_part_stride;
    uint32_t part_slot1;
    uint32_t part_slot2;
};

// The fused part slot `slot` belongs to with act-order's permutation per part (parts 1 and 2 start at part_slot1 and
// part_slot2, 0xFFFFFFFF where there is none); 0 without act-order. For the GEMV's and the GEMMs' parameters alike.
template <class Params>
ENGINE_DEV uint32_t part_of_slot(const Params& p, uint32_t slot) {
    return (slot >= p.part_slot1) + (slot >= p.part_slot2);
}

// The A a GEMM block whose first slot is slot0 reads: with a permutation per fused part, the copy in its part's row
// order (the host keeps part boundaries on block boundaries).
ENGINE_DEV const __half* part_a(const GemmParams& p, uint32_t slot0) {
    return p.a + (size_t)part_of_slot(p, slot0) * p.a_part_stride;
}

// Decode GEMV for GPTQ int4 weights: y = x · W for one token, with the RMSNorm that precedes it fused into the
// prologue and the operation that follows it fused into the epilogue.
//
// Why this shape. A decode step is a chain of GEMVs that each read their weights exactly once: the time is the
// bytes of the weights over the card's bandwidth, plus whatever gaps the chain leaves. So:
//   - every warp load is 512 contiguous bytes, 16 per lane (the tile layout is made for it, see tiles.cuh);
//   - each lane keeps several 16-byte loads in flight before it needs the first (UNROLL), so that enough bytes
//     are on their way per SM to cover the memory latency;
//   - dequantization is 2 integer ops and one exact fp16 subtraction per pair of weights, and the products are
//     summed in fp16 over one 32-row chunk only, then in f32 (a 32-term fp16 sum of |x·(q−z)| ≲ 100 keeps ~1e-3
//     relative error; every longer sum is f32);
//   - the RMSNorm needs the whole input vector, so instead of a kernel of its own each block normalizes x while
//     it stages it into shared memory, from per-tile partial sums of squares that the previous GEMV's epilogue
//     left behind (summed in a fixed order, so the result is the same every run);
//   - epilogues: rotary embedding + KV-cache append for q/k/v, SwiGLU for gate/up, the residual add (+ the
//     partial sums of squares for the next norm) for o/down. Each saves a launch and a round trip through memory.
//   - blocks are persistent over `tiles_per_block` tiles, so x is staged once per block, not once per tile.
//   - the first weight loads are issued before the prologue, and the next batch is always in flight while the
//     current one is multiplied (software pipelining in registers);
//   - or, on sm_90 (`gemv_ring_*`, `run_ring`), one more warp streams the block's weights into a ring of
//     shared-memory stages by bulk copies and the others multiply from there: more bytes in flight per block
//     without registers (measured: faster on large matrices, slower inside a decode step; BENCHMARKS.md).
// All reductions are in a fixed order: the same inputs give the same bits, run after run.
#include "tiles.cuh"
#include "bulk_copy.cuh"

namespace gemv {

// Warps per block: they split each tile's K steps. 8 for q/k/v and gate/up; 16 for o/down, whose 256 tiles give
// only ~2 blocks per SM: the kernel is bound by memory latency, so more warps on a tile means more independent load
// chains per SM (a split of K over blocks would do the same but its merge costs more than it hides, measured).
constexpr int WARPS = 8;
constexpr int WIDE_WARPS = 16;
constexpr int UNROLL = 4; // 16-byte loads in flight per lane before the first is consumed

enum Prologue { NORM = 0, PLAIN = 1 };
enum Epilogue { STORE = 0, RESIDUAL = 1, QKV_ROPE = 2, SWIGLU = 3, SWIGLU_SPLIT = 4 };

// Stage the input into shared memory as fp16 pairs in the order the dequantizer produces weights: for packed word
// r (rows 8r..8r+7), the pairs (x[8r+i], x[8r+i+4]) for i = 0..3. The input is already in the weights' sorted row
// order (act-order: the kernel before this one wrote it so); padding rows are zero, so the padded weights they
// meet contribute nothing.
// With act-order and several fused parts (q, k, v; gate, up: AutoGPTQ sorts every linear by its own g_idx) each
// part has its own copy of the input, k_pad elements apart, and the block stages the copies of the parts
// its tiles belong to, one after another in shared memory. Those copies come with the norm weight already folded
// in (`norm_w` null).
// Why it is written this way: staging sits between the block's start and its first multiply, so its latency is
// paid by every block. Each thread loads whole words with 16-byte loads (x as 2 float4, the norm weight as 8
// halves), up to STAGE_WORDS of them before using any, and with the norm the partial sums of squares are loaded
// in the same breath: the whole prologue is one L2 round trip, not one for the sums and another for x (measured:
// the norm variants ran 3-5 µs slower than the plain ones when the sums were reduced first).
constexpr int STAGE_WORDS = 2;

ENGINE_DEV uint4 pack_word(const float v[8]) {
    uint4 out;
    uint32_t* o = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
    for (int i = 0; i < 4; ++i) o[i] = half2_as_u32(__floats2half2_rn(v[i], v[i + 4]));
    return out;
}

// Whether a kernel with prologue PRO stages its input from fp16 (x16): PLAIN always, and NORM with one input
// (HALF), which reads the half input (see HALF_INPUT_SCALE); act-order's NORM kernels read their per-part f32
// copies (the step never runs a one-input NORM kernel with act-order: its gate/up is always split). A compile-time
// choice: tested at run time in every NORM kernel, it cost as much as the smaller staging saved (BENCHMARKS.md).
template <int PRO, bool HALF>
ENGINE_DEV constexpr bool half_in() {
    return PRO == PLAIN || HALF;
}

// The word at the ragged end of K, row by row (rows past k are zero). `base`: the element of row0 in the input,
// `row0`: its row in its part; `scale`: what the loaded values are multiplied by (see stage_input).
template <int PRO, bool HALF>
ENGINE_DEV uint4 ragged_word(const GemvParams& p, uint32_t base, uint32_t row0, float scale) {
    float v[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t row = row0 + i;
        float val = 0.f;
        if (row < p.k) {
            if (half_in<PRO, HALF>()) {
                val = __half2float(p.x16[base + i]) * scale;
            } else {
                const float w = p.norm_w ? __half2float(p.norm_w[row]) : 1.f;
                val = p.x[base + i] * scale * w;
            }
        }
        v[i] = val;
    }
    return pack_word(v);
}

// A whole word of the input (8 rows from row0, element `at`) as f32: x · norm weight (NORM, before 1 / rms; the
// norm weight may be folded in already), or the fp16 input (PLAIN, and NORM's half input), from 16-byte loads.
template <int PRO, bool HALF>
ENGINE_DEV void input_word(const GemvParams& p, uint32_t at, uint32_t row0, float (&v)[8]) {
    constexpr bool from_half = half_in<PRO, HALF>();
    uint4 hq = make_uint4(0x3C003C00u, 0x3C003C00u, 0x3C003C00u, 0x3C003C00u);  // 1.0: norm folded in
    if (from_half) hq = *reinterpret_cast<const uint4*>(p.x16 + at);
    else if (p.norm_w) hq = *reinterpret_cast<const uint4*>(p.norm_w + row0);
    const __half2* h = reinterpret_cast<const __half2*>(&hq);
    float4 a = make_float4(1.f, 1.f, 1.f, 1.f), b = a;
    if (!from_half) {
        a = *reinterpret_cast<const float4*>(p.x + at);
        b = *reinterpret_cast<const float4*>(p.x + at + 4);
    }
    const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float2 f = __half22float2(h[j]);
        v[2 * j] = xv[2 * j] * f.x;
        v[2 * j + 1] = xv[2 * j + 1] * f.y;
    }
}

// The norm's 1 / rms from the n_ssq partial sums of squares the previous kernel left (every thread of the block).
template <int NW>
ENGINE_DEV float norm_scale(const GemvParams& p, float* scratch) {
    float s = 0.f;
    for (uint32_t i = threadIdx.x; i < p.n_ssq; i += blockDim.x) s += p.ssq[i];
    return rsqrtf(block_sum<NW>(s, scratch) / (float)p.k + p.eps);
}

// Stage the input of parts part_lo..part_hi into shared memory, one after another (one part: the kernels without
// act-order, and o/down). The parts' copies lie k_pad apart in x / x16, so several parts are one contiguous range
// of words, staged by one loop. Every thread runs round 0, even with nothing to stage (K smaller than the block),
// because the norm's block-wide sum inside it has barriers.
template <int PRO, int NW, bool PARTS>
ENGINE_DEV void stage_input(const GemvParams& p, __half2* xs, uint32_t part_lo, uint32_t part_hi, float* scratch) {
    const uint32_t words = p.k_pad / 8, total = (part_hi - part_lo + 1) * words, first = part_lo * words;
    // Word i's row in its part (one part: i itself, no division).
    auto row_of = [&](uint32_t i) { return 8 * (PARTS ? i % words : i); };
    float inv_rms = 1.f;
    for (uint32_t base = threadIdx.x; base == threadIdx.x || base < total; base += blockDim.x * STAGE_WORDS) {
        // Issue every load of this round first; x · w (NORM) or the fp16 input (PLAIN) lands in v.
        float v[STAGE_WORDS][8];
#pragma unroll
        for (int u = 0; u < STAGE_WORDS; ++u) {
            const uint32_t i = base + u * blockDim.x, row0 = row_of(i), at = 8 * (first + i);
            if (i < total && row0 + 8 <= p.k) input_word<PRO, !PARTS>(p, at, row0, v[u]);
        }
        // First round: the sums of squares the previous kernel left, loaded while the loads above fly. The half
        // input comes scaled by HALF_INPUT_SCALE: its inverse goes into the same multiply.
        if (PRO == NORM && base == threadIdx.x)
            inv_rms = norm_scale<NW>(p, scratch) * (half_in<PRO, !PARTS>() ? 1.f / HALF_INPUT_SCALE : 1.f);
#pragma unroll
        for (int u = 0; u < STAGE_WORDS; ++u) {
            const uint32_t i = base + u * blockDim.x, row0 = row_of(i);
            if (i >= total) break;
            uint4 out;
            if (row0 + 8 <= p.k) {
#pragma unroll
                for (int j = 0; j < 8; ++j) v[u][j] *= inv_rms;
                out = pack_word(v[u]);
            } else {
                out = ragged_word<PRO, !PARTS>(p, 8 * (first + i), row0, inv_rms);
            }
            reinterpret_cast<uint4*>(xs)[i] = out;
        }
    }
    __syncthreads();
}

// The part of the fused projection tile t belongs to (act-order with a permutation per part; 0 otherwise).
ENGINE_DEV uint32_t part_of(const GemvParams& p, uint32_t t) {
    return part_of_slot(p, t * INT4_TILE_N);
}

// The dot product of one lane's 32-row chunk (4 words of one slot) with the staged input, times the group scale.
// Why it is written this way: at full bandwidth this loop is close to the SM's instruction issue limit (measured:
// even a 128 MB matrix streamed at only ~80% of the copy rate), so every instruction per weight counts. Per word
// (8 weights): one shift and four LOP3s make the four pairs of biased values — nibbles 0/4 and 2/6 as 1024 + q,
// nibbles 1/5 and 3/7 as 1024 + 16q without shifting them down — then one HSUB2 each for the first kind and one
// HFMA2 (× 1/16, − (64 + zero)) each for the second, both exact, and four HFMA2s for the products: 14 with the
// shared-memory load, against 16 when every pair needs its own shift. The chunk's two fp16 accumulators meet in
// one HADD2, and the group scale is one f32 FMA.
// SYM (a symmetric linear, zero 8): `sz_bits` is the scale alone in its low half, the zero terms are constants.
template <bool SYM = false>
ENGINE_DEV float dot_chunk(uint4 w, const __half2* xs_chunk, uint32_t sz_bits, float acc) {
    const __half2 sz = u32_as_half2(sz_bits);
    const __half2 zz = SYM ? u32_as_half2(SYM4_ZZ) : __high2half2(sz);     // 1024 + zero
    const __half2 zh = SYM ? u32_as_half2(SYM4_ZH) : unshifted_zero(zz);   // −(64 + zero)
    const __half2 sixteenth = u32_as_half2(0x2C002C00u);                   // 1/16
    const uint4* xv = reinterpret_cast<const uint4*>(xs_chunk);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    // Two fp16 accumulators: half the dependency-chain length, and each sums only 16 products.
    __half2 a0 = __float2half2_rn(0.f), a1 = a0;
#pragma unroll
    for (int wi = 0; wi < 4; ++wi) {
        const uint4 xq = xv[wi];
        const uint32_t hi = words[wi] >> 8;
        const __half2 d0 = __hsub2(u32_as_half2(lop3_and_or(words[wi], 0x000F000Fu, 0x64006400u)), zz);
        const __half2 d1 = __hfma2(u32_as_half2(lop3_and_or(words[wi], 0x00F000F0u, 0x64006400u)), sixteenth, zh);
        const __half2 d2 = __hsub2(u32_as_half2(lop3_and_or(hi, 0x000F000Fu, 0x64006400u)), zz);
        const __half2 d3 = __hfma2(u32_as_half2(lop3_and_or(hi, 0x00F000F0u, 0x64006400u)), sixteenth, zh);
        a0 = __hfma2(d0, u32_as_half2(xq.x), a0);
        a1 = __hfma2(d1, u32_as_half2(xq.y), a1);
        a0 = __hfma2(d2, u32_as_half2(xq.z), a0);
        a1 = __hfma2(d3, u32_as_half2(xq.w), a1);
    }
    const float2 f = __half22float2(__hadd2(a0, a1));
    return fmaf(__low2float(sz), f.x + f.y, acc);
}

// dot_chunk for 8-bit weights: the lane's chunk is two uint4s (see dequant_rows8 for the byte order).
// Why (q − z) / 16 rather than q − z: an 8-bit q − z reaches ±256, so a 32-term fp16 sum of products could pass
// fp16's 65504 where int4's cannot; one sixteenth keeps the terms in int4's range. It costs nothing: each pair is one
// PRMT and one HFMA2 (× 1/16, − (64 + zero / 16)), exact because (q − z) / 16 has at most 9 significant bits, and
// the 16 goes into the group scale. 12 instructions per 8 weights with the shared-memory load.
ENGINE_DEV float dot_chunk8(const uint4 (&w)[2], const __half2* xs_chunk, uint32_t sz_bits, float acc) {
    const __half2 sz = u32_as_half2(sz_bits);
    const __half2 zh = __hmul2(__high2half2(sz), u32_as_half2(0xAC00AC00u));  // −(1024 + zero) / 16, exact
    const __half2 sixteenth = u32_as_half2(0x2C002C00u);
    const uint4* xv = reinterpret_cast<const uint4*>(xs_chunk);
    __half2 a0 = __float2half2_rn(0.f), a1 = a0;
#pragma unroll
    for (int g = 0; g < 4; ++g) {
        const uint4 xq = xv[g];
        const uint32_t a = word_of(w[g / 2], (2 * g) % 4), b = word_of(w[g / 2], (2 * g + 1) % 4);
        const __half2 d0 = __hfma2(u32_as_half2(biased_byte_pair(a, BYTE_PAIR_LO)), sixteenth, zh);
        const __half2 d1 = __hfma2(u32_as_half2(biased_byte_pair(a, BYTE_PAIR_HI)), sixteenth, zh);
        const __half2 d2 = __hfma2(u32_as_half2(biased_byte_pair(b, BYTE_PAIR_LO)), sixteenth, zh);
        const __half2 d3 = __hfma2(u32_as_half2(biased_byte_pair(b, BYTE_PAIR_HI)), sixteenth, zh);
        a0 = __hfma2(d0, u32_as_half2(xq.x), a0);
        a1 = __hfma2(d1, u32_as_half2(xq.y), a1);
        a0 = __hfma2(d2, u32_as_half2(xq.z), a0);
        a1 = __hfma2(d3, u32_as_half2(xq.w), a1);
    }
    const float2 f = __half22float2(__hadd2(a0, a1));
    return fmaf(16.f * __low2float(sz), f.x + f.y, acc);
}

// dot_chunk for fp16 weights: the lane's chunk is four uint4s of (row j, row j + 4) pairs, one per 8-row group; no
// scale (load_batch does not load the (1, 0) words). Two HFMA2 per 4 weights with the shared-memory load: far below
// the issue limit, so this one is bound by the bytes alone.
ENGINE_DEV float dot_chunk16(const uint4 (&w)[4], const __half2* xs_chunk, float acc) {
    const uint4* xv = reinterpret_cast<const uint4*>(xs_chunk);
    __half2 a0 = __float2half2_rn(0.f), a1 = a0;
#pragma unroll
    for (int g = 0; g < 4; ++g) {
        const uint4 xq = xv[g];
        a0 = __hfma2(u32_as_half2(w[g].x), u32_as_half2(xq.x), a0);
        a1 = __hfma2(u32_as_half2(w[g].y), u32_as_half2(xq.y), a1);
        a0 = __hfma2(u32_as_half2(w[g].z), u32_as_half2(xq.z), a0);
        a1 = __hfma2(u32_as_half2(w[g].w), u32_as_half2(xq.w), a1);
    }
    const float2 f = __half22float2(__hadd2(a0, a1));
    return acc + (f.x + f.y);
}

// Rotate a value with its rotary partner (both lanes of one 16-lane group hold the pair in slots j, j + 8).
ENGINE_DEV float rope_rotate(const GemvParams& p, uint32_t col, float v, float partner, uint32_t pos) {
    const uint32_t half_dim = p.head_dim >> 1;
    const uint32_t d = col % p.head_dim, i = d % half_dim;
    const float c = p.rope_cos[(size_t)pos * half_dim + i], s = p.rope_sin[(size_t)pos * half_dim + i];
    // rotate_half: (x_i, x_{i+h}) → (x_i·cos − x_{i+h}·sin, x_{i+h}·cos + x_i·sin)
    return d < half_dim ? v * c - partner * s : v * c + partner * s;
}

// Where SwiGLU's output for column `col` goes: act-order puts it in down_proj's sorted row order.
ENGINE_DEV uint32_t swiglu_dst(const GemvParams& p, uint32_t col) {
    return p.out_idx ? __ldg(p.out_idx + col) : col;
}

// Called by all 32 lanes of warp 0 with the tile's 16 results (lanes 16..31 mirror lanes 0..15).
// `col` is the slot's output column (prefetched), `resid` its residual-stream value and `next_w` the next norm's
// weight there (RESIDUAL only).
template <int EPI, bool SCATTER>
ENGINE_DEV void epilogue(const GemvParams& p, uint32_t tile, uint32_t col, float resid, float next_w, float v) {
    const int lane = threadIdx.x & 31;
    const bool real = col != INT4_PAD_SLOT;
    if (EPI == STORE) {
        if (lane < 16 && real) p.y[col] = v;
    } else if (EPI == RESIDUAL) {
        float nv = 0.f;
        if (real) nv = resid + v;
        if (lane < 16 && real) {
            p.y[col] = nv;
            // The next NORM kernel's half input (see HALF_INPUT_SCALE), where it reads one.
            if (!SCATTER && p.out16) p.out16[col] = half_input(nv * next_w);
            // Act-order: the next projection's input, a copy per part in that part's row order, norm weight folded
            // in (a scatter of 16 words per part and tile, so the next kernel stages with 16-byte loads).
            if (SCATTER) {
                const float wv = nv * __half2float(p.out_norm_w[col]);
                const uint32_t* idx = p.out_idx + col;
                float* ys = p.y_sorted;
#pragma unroll 1
                for (uint32_t q = 0; q < p.out_parts; ++q, idx += p.out_stride, ys += p.out_stride)
                    ys[__ldg(idx)] = wv;
            }
        }
        float sq = nv * nv;
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o, 16);
        if (lane == 0) p.ssq_out[tile] = sq;
    } else if (EPI == QKV_ROPE) {
        const float partner = __shfl_xor_sync(0xffffffffu, v, 8, 16);
        if (lane < 16 && real) {
            const uint32_t pos = *p.pos;
            if (col < p.q_dim) {
                p.out16[col] = __float2half_rn(rope_rotate(p, col, v, partner, pos));
            } else if (col < p.q_dim + p.kv_dim) {
                const uint32_t c = col - p.q_dim, h = c / p.head_dim, d = c % p.head_dim;
                p.k_cache[((size_t)h * p.ctx + pos) * p.head_dim + d] = __float2half_rn(rope_rotate(p, col, v, partner, pos));
            } else {
                const uint32_t c = col - p.q_dim - p.kv_dim, h = c / p.head_dim, d = c % p.head_dim;
                p.v_cache[((size_t)h * p.ctx + pos) * p.head_dim + d] = __float2half_rn(v);
            }
        }
    } else if (EPI == SWIGLU) {
        const float up = __shfl_xor_sync(0xffffffffu, v, 8, 16);
        if (lane < 8 && real) {
            const float silu = v / (1.f + __expf(-v));
            p.out16[swiglu_dst(p, col)] = __float2half_rn(silu * up);
        }
    }
}

// Steps per batch: UNROLL 16-byte loads per lane whatever the width (8 bits: two per step), so that the bytes in
// flight, and the registers holding them, are the same.
template <int BITS>
constexpr int batch_steps() {
    return UNROLL / lane_words<BITS>();
}

// The group of a 32-row chunk: group_size / 32 is a power of two (checked at load), so no division; the last group
// holds every later chunk (one-group checkpoints).
ENGINE_DEV uint32_t group_of_chunk(const GemvParams& p, uint32_t chunk) {
    return min(chunk >> p.chunk_shift, p.groups - 1);
}

// The scales-only copy of a symmetric linear as 16-bit words (GemvParams::scales): with SYM the kernels load a
// lane's group scale from it, zero-extended, where the others load the (scale, 1024 + zero) word from sz — half the
// bytes, and dot_chunk<true> finds the scale in the same low half.
ENGINE_DEV const unsigned short* scale_words(const GemvParams& p) {
    return reinterpret_cast<const unsigned short*>(p.scales);
}

// Issue the loads of one batch: steps s0, s0 + NW, ... of tile t (batch_steps of them, fewer at the end), the
// 16-byte weight chunks and the (scale, zero) word of each chunk's group (SYM: the scale alone). The scales go out
// with the weights: loaded inside the multiply, each would cost the step a full memory round trip.
template <int NW, int BITS, bool SYM = false>
ENGINE_DEV void load_batch(const GemvParams& p, uint32_t t, uint32_t s0, uint32_t steps, uint4 (&w)[UNROLL],
                           uint32_t (&sz)[UNROLL]) {
    constexpr int W = lane_words<BITS>();
    const int lane = threadIdx.x & 31;
    const uint4* wt = p.qw + (size_t)t * steps * 32 * W + lane;
    const uint32_t* szt = p.sz + (size_t)t * p.groups * INT4_TILE_N + (lane & 15);
    const unsigned short* sct = scale_words(p) + (size_t)t * p.groups * INT4_TILE_N + (lane & 15);
#pragma unroll
    for (int u = 0; u < batch_steps<BITS>(); ++u) {
        const uint32_t s = s0 + u * NW;
        if (s < steps) {
#pragma unroll
            for (int h = 0; h < W; ++h) w[u * W + h] = ldg_stream_v4(wt + ((size_t)s * W + h) * 32);
            const uint32_t chunk = 2 * s + (lane >> 4);
            const uint32_t at = group_of_chunk(p, chunk) * INT4_TILE_N;
            if constexpr (SYM) sz[u] = __ldg(sct + at);
            else if constexpr (BITS != 16) sz[u] = __ldg(szt + at);  // fp16: none
        }
    }
}

// The tile of unit sequence index v. A block walks its units in order; a unit is one tile, or with SWIGLU_SPLIT a
// gate tile (even v) followed by its up tile (odd v), part_slot1 / 16 tiles further on (read from the parameters
// at each use: a register held for it would make the kernel spill).
template <int EPI>
ENGINE_DEV uint32_t tile_at(const GemvParams& p, uint32_t v) {
    return EPI == SWIGLU_SPLIT ? (v >> 1) + (v & 1u) * (p.part_slot1 / INT4_TILE_N) : v;
}

// The lines load_batch would load for step s0 of tile t, asked into L2 without registers to hold them (for a
// kernel that issues the loads themselves later).
template <int NW, int BITS>
ENGINE_DEV void prefetch_batch(const GemvParams& p, uint32_t t, uint32_t s0, uint32_t steps) {
    constexpr int W = lane_words<BITS>();
    const uint4* wt = p.qw + (size_t)t * steps * 32 * W + (threadIdx.x & 31);
#pragma unroll
    for (int u = 0; u < batch_steps<BITS>(); ++u) {
        const uint32_t s = s0 + u * NW;
#pragma unroll
        for (int h = 0; h < W; ++h)
            if (s < steps) prefetch_l2(wt + ((size_t)s * W + h) * 32);
    }
}

// The lean K loop (`run<..., LEAN>`, the gemv_lean_* kernels): a warp's steps warp, warp + NW, ... of a tile are its
// steps 0, 1, ..., n − 1, and everything a step reads advances by a constant from one to the next — its weight words
// by NW · 32 · W uint4, its input by 2 NW chunks — so a batch is one base address per array plus compile-time
// offsets, and a batch wholly inside the warp's steps has no bounds checks. Why: in the register-pipelined loop
// (load_batch + the per-step checks) a 4-step int4 batch spends about as many instructions on 64-bit addresses,
// group indices, checks and their branches as on its 14-instruction dot products (sm_90a SASS of gate/up: 412 per
// 16 words, 224 of them the dots), and the loop is short of issue slots. Same loads, same order of the products:
// the same bits as the register-pipelined kernels.
// The steps of a warp of an NW-warp block in a K of `steps` steps.
template <int NW>
ENGINE_DEV uint32_t warp_steps(uint32_t steps) {
    const uint32_t warp = threadIdx.x >> 5;
    return steps > warp ? (steps - warp + NW - 1) / NW : 0;
}

// Issue the loads of the warp's steps i0 .. i0 + batch_steps − 1 of tile t (fewer past its n steps): what load_batch
// loads for steps warp + NW · i0, ... (the group index stays a 32-bit computation per step: group sizes need not
// divide the warp's stride of 2 NW chunks).
template <int NW, int BITS, bool SYM = false>
ENGINE_DEV void load_lean(const GemvParams& p, uint32_t t, uint32_t steps, uint32_t n, uint32_t i0,
                          uint4 (&w)[UNROLL], uint32_t (&sz)[UNROLL]) {
    constexpr int W = lane_words<BITS>(), SB = batch_steps<BITS>();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t s0 = warp + i0 * NW;
    // 32-bit element offsets from the parameters' bases (the backend refuses gemv_lean for a linear of 2^32 uint4 or
    // more): fewer registers live across the loop than 64-bit pointers, under the 64-register cap.
    const uint32_t wi = (t * steps + s0) * 32 * W + lane;
    const uint32_t zi = t * p.groups * INT4_TILE_N + (lane & 15);
    const uint32_t c0 = 2 * s0 + (lane >> 4);
    auto step = [&](int u) {
#pragma unroll
        for (int h = 0; h < W; ++h) w[u * W + h] = ldg_stream_v4(p.qw + wi + (u * NW * W + h) * 32);
        const uint32_t at = zi + group_of_chunk(p, c0 + 2 * NW * u) * INT4_TILE_N;
        if constexpr (SYM) sz[u] = __ldg(scale_words(p) + at);
        else if constexpr (BITS != 16) sz[u] = __ldg(p.sz + at);
    };
    if (i0 + SB <= n) {
#pragma unroll
        for (int u = 0; u < SB; ++u) step(u);
    } else {
#pragma unroll
        for (int u = 0; u < SB; ++u)
            if (i0 + u < n) step(u);
    }
}

// The act-order variants: PARTS (the input in a copy per fused part) and SCATTER (the residual epilogue also writes
// the next projection's copies); template parameters so that the other kernels carry none of it in registers.
enum Variant { ONE_INPUT = 0, PARTS = 1, SCATTER = 2 };

// What a block works on: its units of work v_begin .. v_end − 1 (in tile_at's order) and, with act-order's
// per-part inputs, the parts its tiles belong to (their staged inputs lie one after another in shared memory).
template <int EPI, int VAR>
struct BlockWork {
    uint32_t steps, v_begin, v_end, part_lo, part_hi;
    __device__ __forceinline__ explicit BlockWork(const GemvParams& p) {
        steps = p.k_pad / INT4_STEP_K;
        // SWIGLU_SPLIT: the up tiles start at part 1; a unit is a (gate, up) pair of tiles.
        const uint32_t units = EPI == SWIGLU_SPLIT ? p.part_slot1 / INT4_TILE_N : p.n_pad / INT4_TILE_N;
        const uint32_t u_begin = blockIdx.x * p.tiles_per_block;
        const uint32_t u_end = min(units, u_begin + p.tiles_per_block);
        const uint32_t per_unit = EPI == SWIGLU_SPLIT ? 2 : 1;
        v_begin = u_begin * per_unit, v_end = u_end * per_unit;
        part_lo = VAR == PARTS && v_begin < v_end ? part_of(p, tile_at<EPI>(p, v_begin)) : 0;
        part_hi = VAR == PARTS && v_begin < v_end ? part_of(p, tile_at<EPI>(p, v_end - 1)) : part_lo;
    }
    // The staged input tile t multiplies.
    __device__ __forceinline__ const __half2* input_of(const GemvParams& p, const __half2* xs, uint32_t t) const {
        return VAR == PARTS ? xs + (size_t)(part_of(p, t) - part_lo) * (p.k_pad / 2) : xs;
    }
};

// What a tile's epilogue reads besides its sums, fetched by warp 0 when the tile starts so that the loads overlap
// the K loop: the slot's output column and (RESIDUAL) its residual-stream value.
struct TileOut {
    uint32_t col = INT4_PAD_SLOT;
    float resid = 0.f;
    float next_w = 0.f;  // RESIDUAL with the half input (out16): the next norm's weight at col
};

template <int EPI, int VAR>
ENGINE_DEV TileOut tile_out(const GemvParams& p, uint32_t t) {
    const int lane = threadIdx.x & 31;
    TileOut o;
    if ((threadIdx.x >> 5) != 0) return o;
    o.col = __ldg(p.col_map + t * INT4_TILE_N + (lane & 15));
    if (EPI == RESIDUAL && o.col != INT4_PAD_SLOT) o.resid = p.y[o.col];
    if (EPI == RESIDUAL && VAR != SCATTER && p.out16 && o.col != INT4_PAD_SLOT)
        o.next_w = __half2float(__ldg(p.out_norm_w + o.col));
    // The scatter's indices and norm weight, into L1 while the K loop runs (lanes 16..31 mirror 0..15).
    if (VAR == SCATTER && lane < 16 && o.col != INT4_PAD_SLOT) {
        prefetch_l1(p.out_norm_w + o.col);
        for (uint32_t q = 0; q < p.out_parts; ++q) prefetch_l1(p.out_idx + q * p.out_stride + o.col);
    }
    return o;
}

// A barrier of the NW warps that multiply. With the weight ring one more warp copies and never joins, so it is a
// named barrier over the multiplying warps' threads alone.
template <int NW, bool RING>
ENGINE_DEV void multipliers_sync() {
    if (RING) asm volatile("bar.sync 1, %0;" ::"r"(NW * 32) : "memory");
    else __syncthreads();
}

// The end of tile t (unit v): the warps' sums of each slot added in warp order, then the epilogue. `acc`: this
// lane's sum over its steps; `red` [NW][16] and `scratch` (SWIGLU_SPLIT's gate values and columns) in shared memory.
template <int EPI, int NW, int VAR, bool RING>
ENGINE_DEV void finish_tile(const GemvParams& p, uint32_t v, uint32_t t, const TileOut& o, float acc, float* red,
                            float* gate_v) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j = lane & 15;
    // Lanes j and j + 16 summed the two halves of each step for the same slot.
    acc += __shfl_xor_sync(0xffffffffu, acc, 16);
    if (lane < 16) red[warp * INT4_TILE_N + j] = acc;
    multipliers_sync<NW, RING>();
    if (warp == 0) {
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < NW; ++w) sum += red[w * INT4_TILE_N + j];
        if (EPI != SWIGLU_SPLIT) {
            epilogue<EPI, VAR == SCATTER>(p, t, o.col, o.resid, o.next_w, sum);
        } else if (lane < 16) {
            // A unit's gate tile leaves its values (and columns) in shared memory, each lane its own slot, for
            // its up tile: h = silu(gate) · up, stored at the gate's column (up column i is gate i + inter).
            uint32_t* gate_col = reinterpret_cast<uint32_t*>(gate_v + INT4_TILE_N);
            if ((v & 1u) == 0) {
                gate_v[j] = sum, gate_col[j] = o.col;
            } else if (gate_col[j] != INT4_PAD_SLOT) {
                const float g = gate_v[j];
                p.out16[swiglu_dst(p, gate_col[j])] = __float2half_rn(g / (1.f + __expf(-g)) * sum);
            }
        }
    }
    multipliers_sync<NW, RING>();
}

// The dot product of one lane's 32-row chunk, whatever the weights' width: `w` its lane_words<BITS>() words.
// SYM: a symmetric 4-bit linear, `sz_bits` the scale alone.
template <int BITS, bool SYM = false>
ENGINE_DEV float dot_words(const uint4* w, const __half2* xs_chunk, uint32_t sz_bits, float acc) {
    static_assert(!SYM || BITS == 4, "the scales-only kernels are 4-bit");
    if constexpr (BITS == 4) {
        return dot_chunk<SYM>(w[0], xs_chunk, sz_bits, acc);
    } else if constexpr (BITS == 8) {
        const uint4 w2[2] = {w[0], w[1]};
        return dot_chunk8(w2, xs_chunk, sz_bits, acc);
    } else {
        const uint4 w4[4] = {w[0], w[1], w[2], w[3]};
        return dot_chunk16(w4, xs_chunk, acc);
    }
}

// Shared memory of the register-pipelined kernels: the per-warp sums (NW · 16 floats), a block_sum scratch of NW,
// SWIGLU_SPLIT's gate values and columns (32 words; together a multiple of 16 bytes), then the staged input(s).
// The ring kernels put their ring first and one more warp's scratch (4 floats, for alignment) in front of the
// gate values.
template <int NW, bool RING>
struct SmemLayout {
    float* red;
    float* scratch;
    float* gate_v;
    __half2* xs;
    __device__ __forceinline__ explicit SmemLayout(unsigned char* base) {
        red = reinterpret_cast<float*>(base);
        scratch = red + NW * INT4_TILE_N;
        gate_v = scratch + NW + (RING ? 4 : 0);
        xs = reinterpret_cast<__half2*>(gate_v + 2 * INT4_TILE_N);
    }
};

// The first bytes of the next GEMV's weights into L2 (sm_90: one bulk prefetch per chunk; elsewhere nothing):
// next_chunks chunks of next_chunk_bytes from next_qw on, spread over this kernel's blocks. Why: a decode
// step is a chain of kernels whose GEMVs leave the DRAM partly idle (their blocks are latency-bound, and each
// kernel's tail and the next one's first round trip stream little), so the next GEMV's head is asked for while
// this one still runs, and its first loads then hit L2. One thread of a block, once its own loads are issued.
ENGINE_DEV void prefetch_next(const GemvParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    const unsigned char* next = reinterpret_cast<const unsigned char*>(p.next_qw);
    for (uint32_t j = blockIdx.x; j < p.next_chunks; j += gridDim.x)
        bulk::prefetch_l2(next + (size_t)j * p.next_chunk_bytes, p.next_chunk_bytes);
#endif
}

// The register-pipelined kernel (every card): each lane keeps its next batch of weights in flight in registers.
// LEAN: its K loop with the addressing strength-reduced (see load_lean), the same bits. SYM: a symmetric 4-bit
// linear's scales-only copy instead of sz (see scale_words), the same bits.
template <int PRO, int EPI, int NW = WARPS, int VAR = ONE_INPUT, int BITS = 4, bool LEAN = false, bool SYM = false>
ENGINE_DEV void run(const GemvParams& p) {
    constexpr int SB = batch_steps<BITS>();
    extern __shared__ __align__(16) unsigned char smem[];
    const SmemLayout<NW, false> sm(smem);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int hsel = lane >> 4;
    const BlockWork<EPI, VAR> b(p);
    const uint32_t steps = b.steps, v_begin = b.v_begin, v_end = b.v_end;

    // The weights never change, so their first loads go out before anything else — before waiting for the
    // previous kernel (programmatic dependent launch) and before staging x: the first batch's DRAM latency then
    // hides the launch gap and the prologue instead of adding to them.
    uint4 cur[UNROLL], nxt[UNROLL];
    uint32_t cur_sz[UNROLL], nxt_sz[UNROLL];
    // (The split gate/up kernel loads them after staging its two inputs, held across which they would spill; it
    // asks for them into L2 here instead.)
    constexpr bool EARLY = EPI != SWIGLU_SPLIT;
    const uint32_t n = warp_steps<NW>(steps);  // LEAN: this warp's steps of each tile
    auto first_batch = [&] {
        if (LEAN) load_lean<NW, BITS, SYM>(p, tile_at<EPI>(p, v_begin), steps, n, 0, cur, cur_sz);
        else load_batch<NW, BITS, SYM>(p, tile_at<EPI>(p, v_begin), warp, steps, cur, cur_sz);
    };
    if (EARLY && v_begin < v_end) first_batch();
    if (!EARLY && v_begin < v_end) prefetch_batch<NW, BITS>(p, tile_at<EPI>(p, v_begin), warp, steps);

    // Nothing before this line may read what the previous kernel writes (x, ssq, the caches).
    pdl_wait();
    stage_input<PRO, NW, VAR == PARTS>(p, sm.xs, b.part_lo, b.part_hi, sm.scratch);
    if (!EARLY && v_begin < v_end) first_batch();
    pdl_launch_dependents();

    constexpr uint32_t X_STEP = 2 * NW * 16;  // LEAN: half2 of staged input between a warp's steps
    for (uint32_t v = v_begin; v < v_end; ++v) {
        const uint32_t t = tile_at<EPI>(p, v);
        const __half2* xt = b.input_of(p, sm.xs, t);
        const TileOut o = tile_out<EPI, VAR>(p, t);
        float acc = 0.f;
        if constexpr (LEAN) {
            const __half2* xw = xt + (2 * warp + hsel) * 16;
            for (uint32_t i0 = 0; i0 < n; i0 += SB) {
                // The next batch (of this tile, or the next tile's first) in flight while this one is multiplied.
                uint32_t ni = i0 + SB, nv = v;
                if (ni >= n) ni = 0, nv = v + 1;
                if (nv < v_end) load_lean<NW, BITS, SYM>(p, tile_at<EPI>(p, nv), steps, n, ni, nxt, nxt_sz);
                const __half2* xb = xw + i0 * X_STEP;
                if (i0 + SB <= n) {
#pragma unroll
                    for (int u = 0; u < SB; ++u)
                        acc = dot_words<BITS, SYM>(cur + u * lane_words<BITS>(), xb + u * X_STEP, cur_sz[u], acc);
                } else {
#pragma unroll
                    for (int u = 0; u < SB; ++u)
                        if (i0 + u < n)
                            acc = dot_words<BITS, SYM>(cur + u * lane_words<BITS>(), xb + u * X_STEP, cur_sz[u],
                                                       acc);
                }
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) cur[u] = nxt[u], cur_sz[u] = nxt_sz[u];
            }
        } else {
            for (uint32_t s0 = warp; s0 < steps; s0 += NW * SB) {
                // Software pipelining: the next batch (of this tile, or the next tile's first) is in flight while
                // this one is multiplied, so each lane keeps up to 2 × UNROLL loads outstanding.
                uint32_t ns0 = s0 + NW * SB, nv = v;
                if (ns0 >= steps) ns0 = warp, nv = v + 1;
                if (nv < v_end) load_batch<NW, BITS, SYM>(p, tile_at<EPI>(p, nv), ns0, steps, nxt, nxt_sz);
#pragma unroll
                for (int u = 0; u < SB; ++u) {
                    const uint32_t s = s0 + u * NW;
                    if (s < steps)
                        acc = dot_words<BITS, SYM>(cur + u * lane_words<BITS>(), xt + (2 * s + hsel) * 16,
                                                   cur_sz[u], acc);
                }
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) cur[u] = nxt[u], cur_sz[u] = nxt_sz[u];
            }
        }
        finish_tile<EPI, NW, VAR, false>(p, v, t, o, acc, sm.red, sm.gate_v);
    }
    if (threadIdx.x == 0) prefetch_next(p);
}

// ---------------------------------------------------------------------------------------------------------------
// The weight ring (sm_90a). One more warp streams the block's weights — every tile's K steps in order, with the
// (scale, zero) rows they use — into a ring of shared-memory stages by bulk copies, and the NW warps multiply
// from there. Why: the register-pipelined kernel keeps 2 × 4 × 16 bytes per lane in flight at most, and a decode
// step's boundaries leave each block a short life, so its loads spend much of it waiting (BENCHMARKS.md: the GEMVs
// of a step stream 3.5 TB/s where a read-only chain of the same launches streams 4.3). Bulk copies keep a whole
// ring per block in flight without registers, and the first stages are asked for before the previous kernel ends.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace ring {
// K steps per stage: a multiple of both block widths (8 and 16 warps), so every multiplying warp takes the same
// share of every full stage.
constexpr uint32_t STAGE_STEPS = 16;
// The most (scale, zero) rows a stage uses: groups of 32 rows (the smallest), two per step, 16 slots of 4 bytes.
constexpr uint32_t SCALE_BYTES = 2 * STAGE_STEPS * INT4_TILE_N * 4;
template <int BITS>
constexpr uint32_t weight_bytes() { return STAGE_STEPS * 32 * 16 * lane_words<BITS>(); }
template <int BITS>
constexpr uint32_t stage_bytes() { return weight_bytes<BITS>() + (BITS == 16 ? 0 : SCALE_BYTES); }
// 32 KB of weights in flight per block whatever the width (fp16: 64 KB, two stages being the fewest that overlap).
template <int BITS>
constexpr uint32_t stages() { return BITS == 4 ? 4 : BITS == 8 ? 3 : 2; }
// The ring and its mbarriers (full and empty per stage): what the host adds to the kernel's shared memory
// (GEMV_RING_BYTES in engine/src/backend/cuda/shapes.rs).
template <int BITS>
constexpr uint32_t bytes() { return stages<BITS>() * (stage_bytes<BITS>() + 16); }
static_assert(bytes<4>() == 41024 && bytes<8>() == 55344 && bytes<16>() == 65568,
              "GEMV_RING_BYTES in engine/src/backend/cuda/shapes.rs must match");

// Stage c of a tile (its K steps s0 .. s0 + n − 1) and the first group they use: what the copying thread copies and
// the multiplying warps read, worked out by both alike. Stage i of a block's stream is stage i % chunks of its unit
// v_begin + i / chunks.
struct Stage {
    uint32_t s0, n, g_lo;
    __device__ __forceinline__ Stage(const GemvParams& p, uint32_t c, uint32_t steps)
        : s0(c * STAGE_STEPS), n(min(STAGE_STEPS, steps - c * STAGE_STEPS)), g_lo(group_of_chunk(p, 2 * s0)) {}
};

// Copy stage i into its slot of the ring; full[slot] completes when its bytes have landed. One thread.
template <int EPI, int BITS>
ENGINE_DEV void fill(const GemvParams& p, unsigned char* ring, uint64_t* full, uint32_t i, uint32_t v_begin,
                     uint32_t chunks, uint32_t steps, uint64_t policy) {
    constexpr uint32_t S = stages<BITS>();
    const uint32_t tile = tile_at<EPI>(p, v_begin + i / chunks);
    const Stage st(p, i % chunks, steps);
    unsigned char* dst = ring + (i % S) * stage_bytes<BITS>();
    const uint32_t wbytes = st.n * 512 * lane_words<BITS>();
    const uint32_t sbytes =
        BITS == 16 ? 0 : (group_of_chunk(p, 2 * (st.s0 + st.n) - 1) - st.g_lo + 1) * INT4_TILE_N * 4;
    uint64_t* bar = full + i % S;
    bulk::arrive_expect_bytes(bar, wbytes + sbytes);
    bulk::copy(dst, p.qw + ((size_t)tile * steps + st.s0) * 32 * lane_words<BITS>(), wbytes, bar, policy);
    if (BITS != 16)
        bulk::copy(dst + weight_bytes<BITS>(), p.sz + ((size_t)tile * p.groups + st.g_lo) * INT4_TILE_N, sbytes,
                   bar, policy);
}

}  // namespace ring

template <int PRO, int EPI, int NW = WARPS, int VAR = ONE_INPUT, int BITS = 4>
ENGINE_DEV void run_ring(const GemvParams& p) {
    constexpr uint32_t S = ring::stages<BITS>(), W = lane_words<BITS>();
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* stages = smem;
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + S * ring::stage_bytes<BITS>());
    uint64_t* empty = full + S;
    const SmemLayout<NW, true> sm(smem + ring::bytes<BITS>());
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j = lane & 15, hsel = lane >> 4;
    const BlockWork<EPI, VAR> b(p);
    const uint32_t steps = b.steps, v_begin = b.v_begin;
    const uint32_t chunks = (steps + ring::STAGE_STEPS - 1) / ring::STAGE_STEPS;
    const uint32_t total = (b.v_end - v_begin) * chunks;  // stages in this block's stream
    const bool copier = warp == NW && lane == 0;
    const uint64_t policy = bulk::evict_first_policy();

    // The weights never change: the ring's first fill goes out before waiting for the previous kernel.
    if (copier) {
        for (uint32_t s = 0; s < S; ++s) bulk::init(full + s, 1), bulk::init(empty + s, NW);
        bulk::init_fence();
        for (uint32_t i = 0; i < min(S, total); ++i)
            ring::fill<EPI, BITS>(p, stages, full, i, v_begin, chunks, steps, policy);
    }

    // Nothing before this line may read what the previous kernel writes (x, ssq, the caches). Every warp stages
    // (its barriers also publish the mbarriers' initialization).
    pdl_wait();
    stage_input<PRO, NW + 1, VAR == PARTS>(p, sm.xs, b.part_lo, b.part_hi, sm.scratch);
    pdl_launch_dependents();

    if (warp == NW) {
        // The copying warp: each later stage as soon as the multiplying warps have released its slot.
        if (lane == 0) {
            for (uint32_t i = S; i < total; ++i) {
                bulk::wait(empty + i % S, (i / S - 1) & 1);
                ring::fill<EPI, BITS>(p, stages, full, i, v_begin, chunks, steps, policy);
            }
            prefetch_next(p);
        }
        return;
    }

    uint32_t i = 0;  // the stage of the stream
    for (uint32_t v = v_begin; v < b.v_end; ++v) {
        const uint32_t t = tile_at<EPI>(p, v);
        const __half2* xt = b.input_of(p, sm.xs, t);
        const TileOut o = tile_out<EPI, VAR>(p, t);
        float acc = 0.f;
        for (uint32_t c = 0; c < chunks; ++c, ++i) {
            const uint32_t slot = i % S;
            const ring::Stage st(p, c, steps);
            const unsigned char* bytes = stages + slot * ring::stage_bytes<BITS>();
            const uint4* w = reinterpret_cast<const uint4*>(bytes) + lane;
            const uint32_t* sz = reinterpret_cast<const uint32_t*>(bytes + ring::weight_bytes<BITS>()) + j;
            bulk::wait(full + slot, (i / S) & 1);
#pragma unroll
            for (uint32_t r = 0; r < ring::STAGE_STEPS / NW; ++r) {
                const uint32_t u = warp + r * NW, s = st.s0 + u;
                if (u >= st.n) break;
                uint32_t szb = 0;
                if (BITS != 16) szb = sz[(group_of_chunk(p, 2 * s + hsel) - st.g_lo) * INT4_TILE_N];
                uint4 wv[W];
#pragma unroll
                for (uint32_t h = 0; h < W; ++h) wv[h] = w[(u * W + h) * 32];
                acc = dot_words<BITS>(wv, xt + (2 * s + hsel) * 16, szb, acc);
            }
            // Every lane's reads of the slot are done (their results are in registers) before lane 0 releases it.
            __syncwarp();
            if (lane == 0) bulk::arrive(empty + slot);
        }
        finish_tile<EPI, NW, VAR, true>(p, v, t, o, acc, sm.red, sm.gate_v);
    }
}
#endif

}  // namespace gemv

// Four blocks of 256 threads per SM caps a thread at 64 registers; ptxas fits the kernels in that on sm_90 without
// spilling (the norm prologue and a batch of weights in flight are the peak), while the sm_80 build would spill a
// few bytes, so there three blocks (85 registers) it is. The ring kernels' multiplying warps hold no weights in
// flight: four blocks of 288 threads (56 registers).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define GEMV_MIN_BLOCKS 4
#else
#define GEMV_MIN_BLOCKS 3
#endif
// The ring kernels (gemv_ring_*): one more warp, which copies; sm_90a only, in the compute_80 module they trap.
template <int PRO, int EPI, int NW, int VAR, int BITS>
ENGINE_DEV void run_ring_or_trap(const GemvParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    gemv::run_ring<PRO, EPI, NW, VAR, BITS>(p);
#else
    __trap();  // compute_80 module: the host launches these on sm_90 only, where the sm_90a module is loaded
#endif
}

// Shared memory: (NW * 16 + NW + 32) * 4 + k_pad * 2 bytes per staged input (one; with act-order up to one per
// fused part: as many as part_slot1 / part_slot2 name) with NW warps per block (8, or 16 for the `_wide` kernel);
// the ring kernels 16 bytes more and the ring in front (gemv::ring::bytes: 41024 / 55344 / 65568 bytes for int4 /
// int8 / fp16). Block: 32 · NW threads, the ring kernels 32 · (NW + 1). Grid: ceil(units / tiles_per_block)
// blocks, units = n_pad / 16 tiles (gate/up split: part_slot1 / 16 pairs of tiles).
//
// Every kernel comes eleven times, gemv_int4_NAME over 4-bit tiles, gemv_int8_NAME over 8-bit tiles and
// gemv_f16_NAME over fp16 tiles (the same code), gemv_lean_int4_NAME, ... with the lean K loop, gemv_ring_int4_NAME,
// ... on the weight ring, and gemv_sym_int4_NAME and gemv_lean_sym_int4_NAME over symmetric 4-bit tiles, reading
// their scales-only copy.
#define GEMV_ONE(NAME, FMT, BITS, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)                                       \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)                                            \
        gemv_##FMT##_##NAME(const __grid_constant__ GemvParams p) {                                             \
        gemv::run<PRO, EPI, NW, VAR, BITS>(p);                                                                  \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)                                            \
        gemv_lean_##FMT##_##NAME(const __grid_constant__ GemvParams p) {                                        \
        gemv::run<PRO, EPI, NW, VAR, BITS, true>(p);                                                            \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS + 32, MIN_BLOCKS)                                       \
        gemv_ring_##FMT##_##NAME(const __grid_constant__ GemvParams p) {                                        \
        run_ring_or_trap<PRO, EPI, NW, VAR, BITS>(p);                                                           \
    }
// A symmetric 4-bit linear's scales-only kernels, register-pipelined and lean (not on the ring, which copies sz).
#define GEMV_SYM(NAME, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)                                                     \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)                                            \
        gemv_sym_int4_##NAME(const __grid_constant__ GemvParams p) {                                            \
        gemv::run<PRO, EPI, NW, VAR, 4, false, true>(p);                                                        \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)                                            \
        gemv_lean_sym_int4_##NAME(const __grid_constant__ GemvParams p) {                                       \
        gemv::run<PRO, EPI, NW, VAR, 4, true, true>(p);                                                         \
    }
#define GEMV_KERNEL(NAME, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)          \
    GEMV_ONE(NAME, int4, 4, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)       \
    GEMV_ONE(NAME, int8, 8, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)       \
    GEMV_ONE(NAME, f16, 16, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)       \
    GEMV_SYM(NAME, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)

// q/k/v projection of the normalized residual stream, with rotary embedding and the KV-cache append.
GEMV_KERNEL(qkv, 256, GEMV_MIN_BLOCKS, gemv::NORM, gemv::QKV_ROPE, gemv::WARPS, gemv::ONE_INPUT)

// gate/up projection of the normalized residual stream, with SwiGLU: h = silu(gate) * up.
GEMV_KERNEL(gate_up, 256, GEMV_MIN_BLOCKS, gemv::NORM, gemv::SWIGLU, gemv::WARPS, gemv::ONE_INPUT)

// gate/up with a row order each (act-order, ColumnOrder::GateUpSplit): gate tiles, then up tiles from part_slot1;
// each unit of work is gate tile u and up tile u + part_slot1 / 16, so SwiGLU still needs no second kernel.
GEMV_KERNEL(gate_up_split, 256, GEMV_MIN_BLOCKS, gemv::NORM, gemv::SWIGLU_SPLIT, gemv::WARPS, gemv::PARTS)

// Act-order q/k/v: the input copies of its parts (one for Baichuan's W_pack, three for LLaMA's q, k, v).
GEMV_KERNEL(qkv_sorted, 256, GEMV_MIN_BLOCKS, gemv::NORM, gemv::QKV_ROPE, gemv::WARPS, gemv::PARTS)

// Act-order o/down: the residual epilogue also writes the next projection's input copies.
GEMV_KERNEL(residual_sorted, 256, GEMV_MIN_BLOCKS, gemv::PLAIN, gemv::RESIDUAL, gemv::WARPS, gemv::SCATTER)
GEMV_KERNEL(residual_wide_sorted, 512, GEMV_MIN_BLOCKS / 2, gemv::PLAIN, gemv::RESIDUAL, gemv::WIDE_WARPS,
            gemv::SCATTER)

// o/down projection of an f16 input, added to the residual stream, with partial sums of squares for the next norm.
GEMV_KERNEL(residual, 256, GEMV_MIN_BLOCKS, gemv::PLAIN, gemv::RESIDUAL, gemv::WARPS, gemv::ONE_INPUT)

// The same with 16 warps per block (512 threads), for projections with too few tiles to fill the card.
GEMV_KERNEL(residual_wide, 512, GEMV_MIN_BLOCKS / 2, gemv::PLAIN, gemv::RESIDUAL, gemv::WIDE_WARPS, gemv::ONE_INPUT)

// Plain y = x · W of an f16 input into f32 (kernel tests).
GEMV_KERNEL(store, 256, GEMV_MIN_BLOCKS, gemv::PLAIN, gemv::STORE, gemv::WARPS, gemv::ONE_INPUT)

// Plain y = rmsnorm(x) · W into f32 (kernel tests of the fused norm).
GEMV_KERNEL(norm_store, 256, GEMV_MIN_BLOCKS, gemv::NORM, gemv::STORE, gemv::WARPS, gemv::ONE_INPUT)

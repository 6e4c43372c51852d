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
//     current one is multiplied (software pipelining in registers).
// All reductions are in a fixed order: the same inputs give the same bits, run after run.
#include "tiles.cuh"

namespace gemv {

// Warps per block: they split each tile's K steps. 8 for q/k/v and gate/up; 16 for o/down, whose 256 tiles give
// only ~2 blocks per SM: the kernel is bound by memory latency, so more warps on a tile means more independent load
// chains per SM (a split of K over blocks would do the same but its merge costs more than it hides, measured).
constexpr int WARPS = 8;
constexpr int WIDE_WARPS = 16;
constexpr int UNROLL = 4; // 16-byte loads in flight per lane before the first is consumed

enum Prologue { NORM = 0, PLAIN = 1 };
enum Epilogue { STORE = 0, RESIDUAL = 1, QKV_ROPE = 2, SWIGLU = 3, SWIGLU_SPLIT = 4 };

// Block-wide sum with a fixed order: warp sums, then warp 0 sums the warps in index order. All threads get it.
template <int NW>
ENGINE_DEV float block_sum(float v, float* scratch) {
    v = warp_reduce_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) s += scratch[w];
    __syncthreads();
    return s;
}

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

// The ragged end of K, row by row (rows past k are zero). `base`: the element of row0 in the input, `row0`: its
// row in its part.
template <int PRO>
ENGINE_DEV uint4 ragged_word(const GemvParams& p, uint32_t base, uint32_t row0, float inv_rms) {
    float v[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t row = row0 + i;
        float val = 0.f;
        if (row < p.k) {
            const float w = p.norm_w ? __half2float(p.norm_w[row]) : 1.f;
            val = PRO == NORM ? p.x[base + i] * inv_rms * w : __half2float(p.x16[base + i]);
        }
        v[i] = val;
    }
    return pack_word(v);
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
            if (i < total && row0 + 8 <= p.k) {
                uint4 hq = make_uint4(0x3C003C00u, 0x3C003C00u, 0x3C003C00u, 0x3C003C00u);  // 1.0: norm folded in
                if (PRO == PLAIN) hq = *reinterpret_cast<const uint4*>(p.x16 + at);
                else if (p.norm_w) hq = *reinterpret_cast<const uint4*>(p.norm_w + row0);
                const __half2* h = reinterpret_cast<const __half2*>(&hq);
                float4 a = make_float4(1.f, 1.f, 1.f, 1.f), b = a;
                if (PRO == NORM) {
                    a = *reinterpret_cast<const float4*>(p.x + at);
                    b = *reinterpret_cast<const float4*>(p.x + at + 4);
                }
                const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float2 f = __half22float2(h[j]);
                    v[u][2 * j] = xv[2 * j] * f.x;
                    v[u][2 * j + 1] = xv[2 * j + 1] * f.y;
                }
            }
        }
        if (PRO == NORM && base == threadIdx.x) {
            // First round: the sums of squares the previous kernel left, loaded while the loads above fly.
            float s = 0.f;
            for (uint32_t i = threadIdx.x; i < p.n_ssq; i += blockDim.x) s += p.ssq[i];
            inv_rms = rsqrtf(block_sum<NW>(s, scratch) / (float)p.k + p.eps);
        }
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
                out = ragged_word<PRO>(p, 8 * (first + i), row0, inv_rms);
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
ENGINE_DEV float dot_chunk(uint4 w, const __half2* xs_chunk, uint32_t sz_bits, float acc) {
    const __half2 sz = u32_as_half2(sz_bits);
    const __half2 zz = __high2half2(sz);                                   // 1024 + zero
    const __half2 zh = unshifted_zero(zz);                                 // −(64 + zero)
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
// `col` is the slot's output column (prefetched), `resid` its residual-stream value (RESIDUAL only).
template <int EPI, bool SCATTER>
ENGINE_DEV void epilogue(const GemvParams& p, uint32_t tile, uint32_t col, float resid, float v) {
    const int lane = threadIdx.x & 31;
    const bool real = col != INT4_PAD_SLOT;
    if (EPI == STORE) {
        if (lane < 16 && real) p.y[col] = v;
    } else if (EPI == RESIDUAL) {
        float nv = 0.f;
        if (real) nv = resid + v;
        if (lane < 16 && real) {
            p.y[col] = nv;
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

// Issue the loads of one batch: steps s0, s0 + NW, ... of tile t (batch_steps of them, fewer at the end), the
// 16-byte weight chunks and the (scale, zero) word of each chunk's group. The scales go out with the weights:
// loaded inside the multiply, each would cost the step a full memory round trip.
template <int NW, int BITS>
ENGINE_DEV void load_batch(const GemvParams& p, uint32_t t, uint32_t s0, uint32_t steps, uint4 (&w)[UNROLL],
                           uint32_t (&sz)[UNROLL]) {
    constexpr int W = lane_words<BITS>();
    const int lane = threadIdx.x & 31;
    const uint4* wt = p.qw + (size_t)t * steps * 32 * W + lane;
    const uint32_t* szt = p.sz + (size_t)t * p.groups * INT4_TILE_N + (lane & 15);
#pragma unroll
    for (int u = 0; u < batch_steps<BITS>(); ++u) {
        const uint32_t s = s0 + u * NW;
        if (s < steps) {
#pragma unroll
            for (int h = 0; h < W; ++h) w[u * W + h] = ldg_stream_v4(wt + ((size_t)s * W + h) * 32);
            const uint32_t chunk = 2 * s + (lane >> 4);
            // group_size / 32 is a power of two (checked at load), so no division here. (fp16: no scales.)
            if constexpr (BITS != 16) sz[u] = __ldg(szt + min(chunk >> p.chunk_shift, p.groups - 1) * INT4_TILE_N);
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

// The act-order variants: PARTS (the input in a copy per fused part) and SCATTER (the residual epilogue also writes
// the next projection's copies); template parameters so that the other kernels carry none of it in registers.
enum Variant { ONE_INPUT = 0, PARTS = 1, SCATTER = 2 };

template <int PRO, int EPI, int NW = WARPS, int VAR = ONE_INPUT, int BITS = 4>
ENGINE_DEV void run(const GemvParams& p) {
    constexpr int W = lane_words<BITS>(), SB = batch_steps<BITS>();
    // The per-warp sums first (NW · 17 floats), SWIGLU_SPLIT's gate values and columns (32 words; together a
    // multiple of 16 bytes), then the staged input(s).
    extern __shared__ __align__(16) unsigned char smem[];
    float* red = reinterpret_cast<float*>(smem);  // [NW][16]
    float* scratch = red + NW * INT4_TILE_N;       // [NW], then the gate values [16] and columns [16]
    __half2* xs = reinterpret_cast<__half2*>(scratch + NW + 2 * INT4_TILE_N);

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j = lane & 15, hsel = lane >> 4;
    const uint32_t steps = p.k_pad / INT4_STEP_K, tiles = p.n_pad / INT4_TILE_N;
    // SWIGLU_SPLIT: the up tiles start at part 1; a unit is a (gate, up) pair of tiles.
    const uint32_t units = EPI == SWIGLU_SPLIT ? p.part_slot1 / INT4_TILE_N : tiles;
    const uint32_t u_begin = blockIdx.x * p.tiles_per_block;
    const uint32_t u_end = min(units, u_begin + p.tiles_per_block);
    const uint32_t per_unit = EPI == SWIGLU_SPLIT ? 2 : 1;
    const uint32_t v_begin = u_begin * per_unit, v_end = u_end * per_unit;
    // The parts this block's tiles belong to, each with its staged input (act-order; one part otherwise).
    const uint32_t part_lo = VAR == PARTS && v_begin < v_end ? part_of(p, tile_at<EPI>(p, v_begin)) : 0;
    const uint32_t part_hi = VAR == PARTS && v_begin < v_end ? part_of(p, tile_at<EPI>(p, v_end - 1)) : part_lo;

    // The weights never change, so their first loads go out before anything else — before waiting for the
    // previous kernel (programmatic dependent launch) and before staging x: the first batch's DRAM latency then
    // hides the launch gap and the prologue instead of adding to them.
    uint4 cur[UNROLL], nxt[UNROLL];
    uint32_t cur_sz[UNROLL], nxt_sz[UNROLL];
    // (The split gate/up kernel loads them after staging its two inputs, held across which they would spill; it
    // asks for them into L2 here instead.)
    constexpr bool EARLY = EPI != SWIGLU_SPLIT;
    if (EARLY && v_begin < v_end) load_batch<NW, BITS>(p, tile_at<EPI>(p, v_begin), warp, steps, cur, cur_sz);
    if (!EARLY && v_begin < v_end) prefetch_batch<NW, BITS>(p, tile_at<EPI>(p, v_begin), warp, steps);

    // Nothing before this line may read what the previous kernel writes (x, ssq, the caches).
    pdl_wait();
    stage_input<PRO, NW, VAR == PARTS>(p, xs, part_lo, part_hi, scratch);
    if (!EARLY && v_begin < v_end) load_batch<NW, BITS>(p, tile_at<EPI>(p, v_begin), warp, steps, cur, cur_sz);
    pdl_launch_dependents();

    for (uint32_t v = v_begin; v < v_end; ++v) {
        const uint32_t t = tile_at<EPI>(p, v);
        const __half2* xt = VAR == PARTS ? xs + (size_t)(part_of(p, t) - part_lo) * (p.k_pad / 2) : xs;
        // Warp 0 fetches what its epilogue needs now, so that those loads overlap the K loop.
        uint32_t col = INT4_PAD_SLOT;
        float resid = 0.f;
        if (warp == 0) {
            col = __ldg(p.col_map + t * INT4_TILE_N + j);
            if (EPI == RESIDUAL && col != INT4_PAD_SLOT) resid = p.y[col];
            // The scatter's indices and norm weight, into L1 while the K loop runs (lanes 16..31 mirror 0..15).
            if (VAR == SCATTER && lane < 16 && col != INT4_PAD_SLOT) {
                prefetch_l1(p.out_norm_w + col);
                for (uint32_t q = 0; q < p.out_parts; ++q) prefetch_l1(p.out_idx + q * p.out_stride + col);
            }
        }
        float acc = 0.f;
        for (uint32_t s0 = warp; s0 < steps; s0 += NW * SB) {
            // Software pipelining: the next batch (of this tile, or the next tile's first) is in flight while
            // this one is multiplied, so each lane keeps up to 2 × UNROLL loads outstanding.
            uint32_t ns0 = s0 + NW * SB, nv = v;
            if (ns0 >= steps) ns0 = warp, nv = v + 1;
            if (nv < v_end) load_batch<NW, BITS>(p, tile_at<EPI>(p, nv), ns0, steps, nxt, nxt_sz);
#pragma unroll
            for (int u = 0; u < SB; ++u) {
                const uint32_t s = s0 + u * NW;
                if (s >= steps) continue;
                if constexpr (BITS == 4) {
                    acc = dot_chunk(cur[u], xt + (2 * s + hsel) * 16, cur_sz[u], acc);
                } else if constexpr (BITS == 8) {
                    const uint4 w2[2] = {cur[u * W], cur[u * W + 1]};
                    acc = dot_chunk8(w2, xt + (2 * s + hsel) * 16, cur_sz[u], acc);
                } else {
                    const uint4 w4[4] = {cur[u * W], cur[u * W + 1], cur[u * W + 2], cur[u * W + 3]};
                    acc = dot_chunk16(w4, xt + (2 * s + hsel) * 16, acc);
                }
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) cur[u] = nxt[u], cur_sz[u] = nxt_sz[u];
        }
        // Lanes j and j + 16 summed the two halves of each step for the same slot.
        acc += __shfl_xor_sync(0xffffffffu, acc, 16);
        if (lane < 16) red[warp * INT4_TILE_N + j] = acc;
        __syncthreads();
        if (warp == 0) {
            float sum = 0.f;
#pragma unroll
            for (int w = 0; w < NW; ++w) sum += red[w * INT4_TILE_N + j];
            if (EPI != SWIGLU_SPLIT) {
                epilogue<EPI, VAR == SCATTER>(p, t, col, resid, sum);
            } else if (lane < 16) {
                // A unit's gate tile leaves its values (and columns) in shared memory, each lane its own slot, for
                // its up tile: h = silu(gate) · up, stored at the gate's column (up column i is gate i + inter).
                float* gate_v = scratch + NW;
                uint32_t* gate_col = reinterpret_cast<uint32_t*>(gate_v + INT4_TILE_N);
                if ((v & 1u) == 0) {
                    gate_v[j] = sum, gate_col[j] = col;
                } else if (gate_col[j] != INT4_PAD_SLOT) {
                    const float g = gate_v[j];
                    p.out16[swiglu_dst(p, gate_col[j])] = __float2half_rn(g / (1.f + __expf(-g)) * sum);
                }
            }
        }
        __syncthreads();
    }
}

}  // namespace gemv

// Four blocks of 256 threads per SM caps a thread at 64 registers; ptxas fits the kernels in that on sm_90 without
// spilling (the norm prologue and a batch of weights in flight are the peak), while the sm_80 build would spill a
// few bytes, so there three blocks (85 registers) it is.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define GEMV_MIN_BLOCKS 4
#else
#define GEMV_MIN_BLOCKS 3
#endif

// Shared memory: (NW * 16 + NW + 32) * 4 + k_pad * 2 bytes per staged input (one; with act-order up to one per
// fused part: as many as part_slot1 / part_slot2 name) with NW warps per block (8, or 16 for the `_wide` kernel).
// Block: 32 · NW threads. Grid: ceil(units / tiles_per_block) blocks, units = n_pad / 16 tiles (gate/up split:
// part_slot1 / 16 pairs of tiles).
//
// Every kernel comes three times, gemv_int4_NAME over 4-bit tiles, gemv_int8_NAME over 8-bit tiles and gemv_f16_NAME
// over fp16 tiles: the same code.
#define GEMV_KERNEL(NAME, THREADS, MIN_BLOCKS, PRO, EPI, NW, VAR)                                                \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) gemv_int4_##NAME(const GemvParams p) { \
        gemv::run<PRO, EPI, NW, VAR, 4>(p);                                                                  \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) gemv_int8_##NAME(const GemvParams p) { \
        gemv::run<PRO, EPI, NW, VAR, 8>(p);                                                                  \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) gemv_f16_##NAME(const GemvParams p) {  \
        gemv::run<PRO, EPI, NW, VAR, 16>(p);                                                                 \
    }

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

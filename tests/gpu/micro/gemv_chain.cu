// Where a decode step's GEMVs lose time against a pure read chain, for choosing issue 13's next change (not part of
// the engine: built and run by hand with nvcc on the GPU machine, see tests/gpu/micro/README.md).
//
// persistent_chain.cu showed that 128 dependent phases that only read the 7B layer's GEMV bytes (3.24 GB) take
// ~0.93 ms as a graph of PDL kernels, where the engine's decode GEMVs take ~1.46 ms in the step. This program runs
// the same 128-phase chain (q/k/v 4096 × 12288, o 4096 × 4096, gate/up 4096 × 22016, down 11008 × 4096, 32 times)
// with a GEMV that has the engine's memory layout and inner loop (16-column tiles, 512-byte warp loads of one K
// step, UNROLL 4 loads per lane in flight and the next batch loaded while one is multiplied, the same dequantizing
// dot product, per-group scale words) and switches its parts (`Variant`):
//   tiled / balanced : one block per tile (the engine: 256 threads for q/k/v and gate/up, 512 for o and down), or
//                      2-4 blocks of 256 threads per SM each streaming an equal contiguous share of all the tiles' K
//                      steps (a tile cut between blocks is merged by the last of them to finish, in block order);
//   dot              : 0 only an xor of the weight words (what the bytes cost alone), 1 the engine's dequantizing
//                      dot product, 2 a lower bound for any dequantizer (the products on the raw words), 3 the
//                      same tile on mma.sync m16n8k16 for a weight layout in fragment order (`gemv_phase_mma`),
//                      4 on mma.sync with the weights as B on the engine's own layout (`gemv_phase_bmma`),
//                      5 the nibbles as fp16 subnormals times an input staged at 2^s per chunk (`dot_denorm`,
//                      `stage_denorm`), 6 / 7 timing splits of it (its dot on the engine's staging, the engine's
//                      dot on its staging: wrong results), 8 the engine's with its shift as a multiply-high,
//                      9 the engine's in a K loop with strength-reduced addressing (`gemv_phase_lean`), 10 both,
//                      11 the lean loop reading a symmetric linear's scales alone (2 bytes per group and slot),
//                      12 the input staged as int16 per chunk and the products summed exactly by dp2a (`dot_i16`),
//                      13 that in the lean K loop, 14 variant 11's lean loop at 3 blocks of 8 warps per SM (an
//                      80-register cap instead of 64) for q/k/v and gate/up, 15 that with its two batch buffers'
//                      roles alternating (no register moves between batches), 16 / 17 `gemv_phase_mma` in the lean
//                      K loop (17: scales only), 18-20 timing bounds of variant 11's lean loop: the words xor-folded,
//                      the input staged before the wait, the norm phases staging an 8 KB fp16 input; 21 / 22 the
//                      last with dot_i16 / dot_i8 on it (timing: what an integer dot product on an input its
//                      producer wrote ready would cost), 23 with the words xor-folded;
//   warps            : 4, 8 or 16 warps per block for every phase instead of the engine's 8 (16 for o and down);
//   pre              : the input staged into shared memory by the block after the dependency wait (q/k/v and
//                      gate/up with the RMSNorm: f32 x, fp16 norm weight, the previous phase's 256 partial sums of
//                      squares; o and down: fp16 x), 1 before the wait (what staging costs on the critical path; not
//                      a valid kernel), 2 by each warp for its own rows (no block barrier; for the mma kernel: its
//                      bias and zero correction made once per block and slot rather than per step), 3 (mma
//                      kernel) on the engine's layout, each step's words regrouped into fragments through shared
//                      memory (the short wgmma tile's mapping); 4 / 5 (engine dot) block staging with the
//                      second batch of weights loaded before the wait / right after it, before staging.
// Then the same chain as one persistent kernel whose blocks stream their tiles through a shared-memory ring of bulk
// copies and wait on an arrival counter between phases (`gemv_persist`, `gemv_persist_mma`; with timing bounds
// without the multiply or the staging), and as a chain of such kernels one phase each (`CHAIN`). Arguments: the
// indices of the kernel-chain variants to run (none: all; variant 0, the reference, always runs).
// Medians of 7 replays of the captured graph after a warm-up, CUDA events. Checks: every variant of the engine's
// dot product gives the engine-like kernel's outputs (outputs poisoned before each run); the mma kernels' outputs
// are within their fp16-against-f32 distance of them, and the o outputs of the fragment-order one and of the
// weights-as-B one match a float64 reading of the same bytes on the host.
#include <cmath>
#include "micro.cuh"

constexpr int UNROLL = 4;     // 16-byte loads per lane per batch
constexpr int GROUP = 128;    // rows per (scale, zero)
constexpr int MAX_SEGS = 8;   // tiles a balanced block touches, at most (checked on the host)
constexpr int MAX_PARTS = 4;  // blocks a balanced tile is cut between, at most (checked on the host)

struct Phase {
    const uint4* w;      // tiles × steps × 32 words
    const uint32_t* sz;  // tiles × groups × 16 (scale, 1024 + zero) words
    const unsigned short* sc;  // the same scales alone (a symmetric linear's scales-only copy: zero 8)
    float* y;            // tiles × 16 outputs
    uint32_t k, tiles;
    int norm;            // input with the RMSNorm (f32 x, fp16 weight, sums of squares) or plain fp16
};

struct Inputs {
    const float* x32;
    const __half* x16;
    const __half* gamma;
    const float* ssq;  // 256 partial sums of squares
    float* partials;   // [tile][part][16]
    uint32_t* count;   // per tile
};


// 2^24, from the host: `hi` as a multiply-high by it (IMAD.HI, the FMA pipe) instead of a shift (SHF, the integer
// pipe), a value the compiler cannot see so that it cannot turn the multiply back into the shift.
__constant__ uint32_t c_shift_mul;

// The engine's dot_chunk (ptx/kernels/gemv.cu): one lane's 32-row chunk times the staged input, times the scale.
// MULHI: the shift as a multiply-high (see c_shift_mul), one integer-pipe instruction fewer per 8 weights. SYM: the
// engine's scales-only kernels (a symmetric linear): `szb` the scale alone, the zero 8 a constant.
template <bool MULHI = false, bool SYM = false>
__device__ __forceinline__ float dot_chunk(uint4 w, const __half2* xs, uint32_t szb, float acc) {
    const __half2 sz = h2(szb), zz = SYM ? h2(0x64086408u) : __high2half2(sz);
    const __half2 zh = SYM ? h2(0xD480D480u) : __hsub2(h2(0x63806380u), zz);
    const __half2 sixteenth = h2(0x2C002C00u);
    const uint4* xv = reinterpret_cast<const uint4*>(xs);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    __half2 a0 = __float2half2_rn(0.f), a1 = a0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint4 xq = xv[i];
        const uint32_t hi = MULHI ? __umulhi(words[i], c_shift_mul) : words[i] >> 8;
        const __half2 d0 = __hsub2(h2(lop3_and_or(words[i], 0x000F000Fu, 0x64006400u)), zz);
        const __half2 d1 = __hfma2(h2(lop3_and_or(words[i], 0x00F000F0u, 0x64006400u)), sixteenth, zh);
        const __half2 d2 = __hsub2(h2(lop3_and_or(hi, 0x000F000Fu, 0x64006400u)), zz);
        const __half2 d3 = __hfma2(h2(lop3_and_or(hi, 0x00F000F0u, 0x64006400u)), sixteenth, zh);
        a0 = __hfma2(d0, h2(xq.x), a0);
        a1 = __hfma2(d1, h2(xq.y), a1);
        a0 = __hfma2(d2, h2(xq.z), a0);
        a1 = __hfma2(d3, h2(xq.w), a1);
    }
    const float2 f = __half22float2(__hadd2(a0, a1));
    return fmaf(__low2float(sz), f.x + f.y, acc);
}

// A lower bound for any dequantizer: the products on the raw words as if they were fp16 pairs already (5
// instructions per 8 weights with the shared-memory load, against dot_chunk's 14). Not a correct GEMV.
__device__ __forceinline__ float dot_lite(uint4 w, const __half2* xs, uint32_t szb, float acc) {
    const uint4* xv = reinterpret_cast<const uint4*>(xs);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    __half2 a0 = __float2half2_rn(0.f), a1 = a0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint4 xq = xv[i];
        const __half2 d = h2(words[i] & 0x3BFF3BFFu);  // finite, below 1
        a0 = __hfma2(d, h2(xq.x), a0);
        a1 = __hfma2(d, h2(xq.y), a1);
        a0 = __hfma2(d, h2(xq.z), a0);
        a1 = __hfma2(d, h2(xq.w), a1);
    }
    const float2 f = __half22float2(__hadd2(a0, a1));
    return fmaf(__low2float(h2(szb)), f.x + f.y, acc);
}

// The nibbles as fp16 subnormals (q · 2^-24, exact: a nibble masked into the low mantissa bits needs no magic
// exponent, so no bias to subtract), multiplied by an input staged per 32-row chunk at 2^s times its value (s chosen
// so that the chunk's largest |x| lands in [2^14, 2^15)) and by 1/16 more on the rows whose nibbles sit 4 bits up.
// No zero is subtracted per weight: Σ (q − z) x = Σ q x − z Σ x, with Σ x per chunk staged beside 2^(24 − s).
// 10 instructions per 8 weights with the shared-memory load (one shift, four LOP3s, four HFMA2s), against 14.
__device__ __forceinline__ float dot_denorm(uint4 w, const __half2* xs, uint32_t szb, float2 cs, float acc) {
    const uint4* xv = reinterpret_cast<const uint4*>(xs);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    __half2 a0 = __float2half2_rn(0.f), a1 = a0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint4 xq = xv[i];
        const uint32_t hi = words[i] >> 8;
        a0 = __hfma2(h2(words[i] & 0x000F000Fu), h2(xq.x), a0);
        a1 = __hfma2(h2(words[i] & 0x00F000F0u), h2(xq.y), a1);
        a0 = __hfma2(h2(hi & 0x000F000Fu), h2(xq.z), a0);
        a1 = __hfma2(h2(hi & 0x00F000F0u), h2(xq.w), a1);
    }
    const float2 f = __half22float2(__hadd2(a0, a1));
    const __half2 sz = h2(szb);
    return fmaf(__low2float(sz), fmaf(f.x + f.y, cs.x, (1024.f - __high2float(sz)) * cs.y), acc);
}

// Two-way dot product of two int16 values (a, signed) with two bytes of b (unsigned: bytes 0-1, or with HI 2-3),
// accumulated in int32: one IDP.2A, on the FMA-heavy pipe, not the half-rate integer one.
template <bool HI>
__device__ __forceinline__ int dp2a(uint32_t a, uint32_t b, int c) {
    int d;
    if (HI) asm("dp2a.hi.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    else asm("dp2a.lo.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// The nibbles times an input staged as int16 per 32-row chunk (`stage_i16`: x · 2^s rounded, s chosen so that the
// chunk's largest |x| lands in [2^14, 2^15)), summed exactly in int32 by dp2a. Why: the engine's dot spends five of
// its 14 instructions per 8 weights on the half-rate integer pipe (a shift and four LOP3s), and dot_lite, which has
// none there, is 220 µs faster per step while dot_denorm, which keeps all five, is not; here two LOP3s per word
// make the bytes (nibbles 0, 2, 4, 6 as they are; 1, 3, 5, 7 as 16 q, no shift) and four IDP.2A take the products,
// 7 instructions per 8 weights with the load. The zero comes off once per chunk as z Σ x16; the int16 input resolves
// 2^-15 of the chunk's largest |x| (fp16: 2^-11 of each value), so it is closer to float64 than dot_chunk unless an
// outlier dominates a chunk. `cs`: the chunk's (2^-s, Σ x16).
template <bool SYM = false>
__device__ __forceinline__ float dot_i16(uint4 w, const __half2* xs, uint32_t szb, float2 cs, float acc) {
    const uint4* xv = reinterpret_cast<const uint4*>(xs);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    int a0 = 0, a1 = 0;  // Σ q x16 over the even nibbles; 16 × that over the odd ones
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint4 xq = xv[i];  // int16 pairs (x0, x2), (x4, x6), (x1, x3), (x5, x7) of the word's 8 rows
        const uint32_t even = words[i] & 0x0F0F0F0Fu, odd = words[i] & 0xF0F0F0F0u;
        a0 = dp2a<false>(xq.x, even, a0);
        a0 = dp2a<true>(xq.y, even, a0);
        a1 = dp2a<false>(xq.z, odd, a1);
        a1 = dp2a<true>(xq.w, odd, a1);
    }
    // |a1| < 2^27: its float is within 2^-24 relative, far below the weights' own rounding.
    const float qx = fmaf((float)a1, 0.0625f, (float)a0);
    const __half2 sz = h2(szb);
    const float neg_zero = SYM ? -8.f : 1024.f - __high2float(sz);
    return fmaf(__low2float(sz) * cs.x, fmaf(neg_zero, cs.y, qx), acc);
}

// An int8 input (llama.cpp's kind of int4 dot product: the input rounded to int8 per chunk, every product summed
// exactly by dp4a), for a timing bound only: it reads the first 8 of each word's 16 staged bytes as the word's 8
// int8 rows (nibbles 0, 2, 4, 6 against x.x, 1, 3, 5, 7 against x.y) and a symmetric linear's zero 8. Per 8 weights
// a shift, two LOP3s, two IDP.4A and half a 16-byte load, against dot_chunk's 14 and dot_i16's 7: what the cheapest
// exact integer product would cost if a producer wrote the input in that form (the values here are not a GEMV's).
__device__ __forceinline__ float dot_i8(uint4 w, const __half2* xs, uint32_t szb, float2 cs, float acc) {
    const uint2* xv = reinterpret_cast<const uint2*>(xs);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    int a = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint2 xq = xv[2 * i];
        a = __dp4a((int)(words[i] & 0x0F0F0F0Fu), (int)xq.x, a);
        a = __dp4a((int)((words[i] >> 4) & 0x0F0F0F0Fu), (int)xq.y, a);
    }
    return fmaf(__low2float(h2(szb)) * cs.x, fmaf(-8.f, cs.y, (float)a), acc);
}

// DOT: 0 only an xor of the words (the bytes alone), 1 the engine's dot product, 2 dot_lite, 5 dot_denorm (`cs`:
// the chunk's (2^(24 − s), Σ x)), 12 dot_i16 (`cs`: the chunk's (2^-s, Σ x16)).
template <int DOT>
__device__ __forceinline__ float consume(uint4 w, const __half2* xs_chunk, uint32_t szb, float acc, float2 cs = {}) {
    if (DOT == 1) return dot_chunk(w, xs_chunk, szb, acc);
    if (DOT == 2) return dot_lite(w, xs_chunk, szb, acc);
    if (DOT == 5 || DOT == 6) return dot_denorm(w, xs_chunk, szb, cs, acc);
    if (DOT == 12) return dot_i16(w, xs_chunk, szb, cs, acc);
    if (DOT == 7) return dot_chunk(w, xs_chunk, szb, acc);
    if (DOT == 8) return dot_chunk<true>(w, xs_chunk, szb, acc);
    return acc + (float)(w.x ^ w.y ^ w.z ^ w.w ^ szb);
}

// A barrier of the block's NW computing warps: __syncthreads, or (NAMED: a persistent kernel whose copying warp
// never joins) barrier 1 over their threads alone.
template <int NW, bool NAMED>
__device__ __forceinline__ void sync_warps() {
    if (NAMED) asm volatile("bar.sync 1, %0;" ::"r"(NW * 32) : "memory");
    else __syncthreads();
}

template <int NW, bool NAMED = false>
__device__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    sync_warps<NW, NAMED>();
    float s = 0.f;
    for (int w = 0; w < NW; ++w) s += scratch[w];
    sync_warps<NW, NAMED>();
    return s;
}

// The norm's 1 / rms from the previous phase's 256 partial sums of squares (every thread of the block).
template <int NW, bool NAMED = false>
__device__ float block_inv_rms(const Phase& ph, const Inputs& in, float* scratch) {
    float s = 0.f;
    for (uint32_t i = threadIdx.x; i < 256; i += (NW * 32)) s += in.ssq[i];
    return rsqrtf(block_sum<NW, NAMED>(s, scratch) / (float)ph.k + 1e-6f);
}

// The exponent s that brings the largest |x| of a 32-row chunk into [2^14, 2^15) (the block-scaled stagings): the
// chunk's 4 words lie in lanes l, l ^ 1, l ^ 2, l ^ 3, this lane's in `v`.
__device__ __forceinline__ int chunk_shift(const float (&v)[8]) {
    float m = 0.f;
    for (int j = 0; j < 8; ++j) m = fmaxf(m, fabsf(v[j]));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    const int e = (int)((__float_as_uint(m) >> 23) & 0xFF) - 127;  // m in [2^e, 2^(e + 1))
    return max(-100, min(100, 14 - e));
}

// Input word i (rows 8i .. 8i + 7) as f32: x · norm weight (the norm phases, before 1 / rms) or the fp16 input.
template <bool X16 = false>
__device__ __forceinline__ void load_word(const Phase& ph, const Inputs& in, uint32_t i, float (&v)[8]) {
    if (ph.norm && !X16) {
        const float4 a = *reinterpret_cast<const float4*>(in.x32 + 8 * i);
        const float4 b = *reinterpret_cast<const float4*>(in.x32 + 8 * i + 4);
        const uint4 g = *reinterpret_cast<const uint4*>(in.gamma + 8 * i);
        const __half2* gh = reinterpret_cast<const __half2*>(&g);
        const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(gh[j]);
            v[2 * j] = xv[2 * j] * f.x, v[2 * j + 1] = xv[2 * j + 1] * f.y;
        }
    } else {
        const uint4 h = *reinterpret_cast<const uint4*>(in.x16 + 8 * i);
        const __half2* hh = reinterpret_cast<const __half2*>(&h);
        for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(hh[j]);
            v[2 * j] = f.x, v[2 * j + 1] = f.y;
        }
    }
}

// The engine's stage_input for one part: words of 8 rows as (x[8r+i], x[8r+i+4]) fp16 pairs, two per thread and
// round, the norm's sums of squares loaded in the first round. X16 (a timing bound for an input its producer wrote
// as fp16 x · norm weight): the norm phases stage the fp16 input too and leave 1 / rms to the caller (returned).
template <int NW, bool NAMED = false, bool X16 = false>
__device__ float stage(const Phase& ph, const Inputs& in, __half2* xs, float* scratch) {
    const uint32_t words = ph.k / 8;
    float inv_rms = 1.f;
    for (uint32_t base = threadIdx.x; base == threadIdx.x || base < words; base += (NW * 32) * 2) {
        float v[2][8];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + u * (NW * 32);
            if (i < words) {
                load_word<X16>(ph, in, i, v[u]);
            }
        }
        if (ph.norm && base == threadIdx.x) inv_rms = block_inv_rms<NW, NAMED>(ph, in, scratch);
        const float applied = X16 ? 1.f : inv_rms;
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + u * (NW * 32);
            if (i >= words) break;
            uint4 out;
            uint32_t* o = reinterpret_cast<uint32_t*>(&out);
            for (int j = 0; j < 4; ++j) o[j] = u32(__floats2half2_rn(v[u][j] * applied, v[u][j + 4] * applied));
            reinterpret_cast<uint4*>(xs)[i] = out;
        }
    }
    sync_warps<NW, NAMED>();
    return X16 ? inv_rms : 1.f;
}

// stage() for dot_denorm: each 32-row chunk (4 words, staged by 4 adjacent threads) scaled by 2^s so that its
// largest |x| lands in [2^14, 2^15), pairs 1 and 3 of each word by 1/16 more, and cs[chunk] = (2^(24 − s), Σ x) with
// Σ x over the values as rounded to fp16 (so that z Σ x cancels exactly what the products carry).
template <int NW>
__device__ void stage_denorm(const Phase& ph, const Inputs& in, __half2* xs, float2* cs, float* scratch) {
    const uint32_t words = ph.k / 8;
    float inv_rms = 1.f;
    for (uint32_t base = threadIdx.x; base == threadIdx.x || base < words; base += (NW * 32) * 2) {
        float v[2][8] = {};
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + u * (NW * 32);
            if (i < words) load_word(ph, in, i, v[u]);
        }
        if (ph.norm && base == threadIdx.x) inv_rms = block_inv_rms<NW>(ph, in, scratch);
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + u * (NW * 32);
            for (int j = 0; j < 8; ++j) v[u][j] *= inv_rms;
            const int sh = chunk_shift(v[u]);
            const float up = __uint_as_float((uint32_t)(sh + 127) << 23);
            uint4 out;
            uint32_t* o = reinterpret_cast<uint32_t*>(&out);
            float sum = 0.f;
            for (int j = 0; j < 4; ++j) {
                const float f = (j & 1) ? up * 0.0625f : up;
                const __half2 h = __floats2half2_rn(v[u][j] * f, v[u][j + 4] * f);
                o[j] = u32(h);
                const float2 r = __half22float2(h);
                sum += (r.x + r.y) * ((j & 1) ? 16.f : 1.f);
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            if (i < words) {
                reinterpret_cast<uint4*>(xs)[i] = out;
                if (i % 4 == 0)
                    cs[i / 4] = make_float2(__uint_as_float((uint32_t)(24 - sh + 127) << 23),
                                            sum * __uint_as_float((uint32_t)(127 - sh) << 23));
            }
        }
    }
    __syncthreads();
}

// stage() for dot_i16: each 32-row chunk (4 words, staged by 4 adjacent threads) as int16 x · 2^s, s chosen so that
// its largest |x| lands in [2^14, 2^15) (rounded, clamped to 32767), each word's rows as the pairs (0, 2), (4, 6),
// (1, 3), (5, 7) that dp2a meets the nibble bytes with; cs[chunk] = (2^-s, Σ x16).
template <int NW, bool NAMED = false>
__device__ void stage_i16(const Phase& ph, const Inputs& in, __half2* xs, float2* cs, float* scratch) {
    const uint32_t words = ph.k / 8;
    float inv_rms = 1.f;
    for (uint32_t base = threadIdx.x; base == threadIdx.x || base < words; base += (NW * 32) * 2) {
        float v[2][8] = {};
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + u * (NW * 32);
            if (i < words) load_word(ph, in, i, v[u]);
        }
        if (ph.norm && base == threadIdx.x) inv_rms = block_inv_rms<NW, NAMED>(ph, in, scratch);
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + u * (NW * 32);
            for (int j = 0; j < 8; ++j) v[u][j] *= inv_rms;
            const int sh = chunk_shift(v[u]);
            const float up = __uint_as_float((uint32_t)(sh + 127) << 23);
            int q[8];
            int sum = 0;
            for (int j = 0; j < 8; ++j) q[j] = max(-32767, min(32767, __float2int_rn(v[u][j] * up))), sum += q[j];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const auto pair = [](int a, int b) { return (uint32_t)(a & 0xFFFF) | (uint32_t)b << 16; };
            if (i < words) {
                reinterpret_cast<uint4*>(xs)[i] = make_uint4(pair(q[0], q[2]), pair(q[4], q[6]), pair(q[1], q[3]),
                                                             pair(q[5], q[7]));
                if (i % 4 == 0) cs[i / 4] = make_float2(__uint_as_float((uint32_t)(127 - sh) << 23), (float)sum);
            }
        }
    }
    sync_warps<NW, NAMED>();
}

// The same staging done by each warp for the K steps it multiplies (steps warp, warp + NW, ...: 8 words of 8 rows
// each), with the norm's sum of squares summed by every warp alike: no block barrier between the dependency and a
// warp's first multiply. Same values as stage() up to the order of the sum of squares.
template <int NW>
__device__ void stage_warp(const Phase& ph, const Inputs& in, __half2* xs) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t steps = ph.k / 64, mine = (steps - warp + NW - 1) / NW * 8;  // words this warp stages
    float inv_rms = 1.f;
    for (uint32_t base = lane; base == (uint32_t)lane || base < mine; base += 64) {
        float v[2][8];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + 32 * u, word = 8 * (warp + NW * (i / 8)) + i % 8;
            if (i < mine) {
                load_word(ph, in, word, v[u]);
            }
        }
        if (ph.norm && base == (uint32_t)lane) {
            float sq = 0.f;
            for (uint32_t i = lane; i < 256; i += 32) sq += in.ssq[i];
            for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
            inv_rms = rsqrtf(sq / (float)ph.k + 1e-6f);
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint32_t i = base + 32 * u, word = 8 * (warp + NW * (i / 8)) + i % 8;
            if (i >= mine) break;
            uint4 out;
            uint32_t* o = reinterpret_cast<uint32_t*>(&out);
            for (int j = 0; j < 4; ++j) o[j] = u32(__floats2half2_rn(v[u][j] * inv_rms, v[u][j + 4] * inv_rms));
            reinterpret_cast<uint4*>(xs)[word] = out;
        }
    }
    __syncwarp();
}

// Where a lane is in the phase's tiles laid end to end: flat K step f = tile · steps + step; a tile's words start
// at tile · steps · 32, so f · 32 addresses step f. Advanced by adding, never dividing (steps is not a constant).
struct Pos {
    uint32_t f, t, s;
    __device__ __forceinline__ Pos advanced(uint32_t by, uint32_t steps) const {  // by <= steps
        Pos p = {f + by, t, s + by};
        if (p.s >= steps) p.s -= steps, ++p.t;
        return p;
    }
};

// One batch of a lane's loads: flat steps at, at + NW, ... (< f_end), weights and the (scale, zero) words.
template <int NW>
__device__ __forceinline__ void load_batch(const Phase& ph, uint32_t steps, uint32_t groups, Pos at, uint32_t f_end,
                                           uint4 (&w)[UNROLL], uint32_t (&sz)[UNROLL]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const Pos q = at.advanced(u * NW, steps);
        if (q.f < f_end) {
            w[u] = ldg_stream(ph.w + (size_t)q.f * 32 + lane);
            const uint32_t chunk = 2 * q.s + (lane >> 4);
            sz[u] = __ldg(ph.sz + ((size_t)q.t * groups + chunk * 32 / GROUP) * 16 + (lane & 15));
        }
    }
}

__host__ __device__ inline uint32_t share_begin(uint64_t total, uint32_t b, uint32_t g) {
    return (uint32_t)(total * b / g);
}

// The block of a balanced grid whose share holds flat step f.
__device__ uint32_t block_of(uint64_t total, uint32_t g, uint32_t f) {
    uint32_t b = (uint32_t)((uint64_t)f * g / total);
    while (b + 1 < g && share_begin(total, b + 1, g) <= f) ++b;
    while (b > 0 && share_begin(total, b, g) > f) --b;
    return b;
}

// One phase. BAL: the block's share of flat steps [f0, f1) across tiles; else tile blockIdx.x. PRE: 1 the input
// staged before the dependency wait, 2 staged by each warp for itself (tiled only), 0 staged by the block.
template <int NW, bool BAL, int DOT, int PRE>
__global__ void __launch_bounds__(NW * 32, 1024 / (NW * 32)) gemv_phase(Phase ph, Inputs in) {
    extern __shared__ __align__(16) unsigned char smem[];
    float* red = reinterpret_cast<float*>(smem);       // [MAX_SEGS][NW][16]
    float* scratch = red + MAX_SEGS * NW * 16;         // [NW]
    __half2* xs = reinterpret_cast<__half2*>(scratch + 32);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j = lane & 15, hsel = lane >> 4;
    const uint32_t steps = ph.k / 64, groups = ph.k / GROUP;
    const uint64_t total = (uint64_t)ph.tiles * steps;
    const uint32_t f0 = BAL ? share_begin(total, blockIdx.x, gridDim.x) : blockIdx.x * steps;
    const uint32_t f1 = BAL ? share_begin(total, blockIdx.x + 1, gridDim.x) : f0 + steps;
    const uint32_t t0 = f0 / steps;

    // Balanced blocks may leave a (segment, warp) unwritten; tiled ones write each warp's entry (and the
    // warp-staged variant has no barrier between here and those writes).
    if (BAL)
        for (int i = threadIdx.x; i < MAX_SEGS * NW * 16; i += blockDim.x) red[i] = 0.f;
    uint4 cur[UNROLL], nxt[UNROLL];
    uint32_t cur_sz[UNROLL], nxt_sz[UNROLL];
    Pos at = Pos{f0, t0, f0 - t0 * steps}.advanced(warp, steps);
    load_batch<NW>(ph, steps, groups, at, f1, cur, cur_sz);
    // PRE 4 / 5: the second batch too before the wait / after it but before staging (block staging).
    bool second_loaded = PRE == 4 || PRE == 5;
    if (PRE == 4) load_batch<NW>(ph, steps, groups, at.advanced(NW * UNROLL, steps), f1, nxt, nxt_sz);
    if (PRE == 1) stage<NW>(ph, in, xs, scratch);
    pdl_wait();
    if (PRE == 5) load_batch<NW>(ph, steps, groups, at.advanced(NW * UNROLL, steps), f1, nxt, nxt_sz);
    float2* cs = reinterpret_cast<float2*>(xs + ph.k / 2);  // dot_denorm's per-chunk constants
    if (DOT == 5 || DOT == 7) stage_denorm<NW>(ph, in, xs, cs, scratch);
    else if (DOT == 12) stage_i16<NW>(ph, in, xs, cs, scratch);
    else if (PRE == 0 || PRE >= 4) stage<NW>(ph, in, xs, scratch);
    if (PRE == 2) stage_warp<NW>(ph, in, xs);
    pdl_launch();

    float acc = 0.f;
    uint32_t tile = t0;
    for (; at.f < f1;) {
        const Pos next = at.advanced(NW * UNROLL, steps);
        if (!second_loaded) load_batch<NW>(ph, steps, groups, next, f1, nxt, nxt_sz);
        second_loaded = false;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const Pos q = at.advanced(u * NW, steps);
            if (q.f < f1) {
                if (BAL && q.t != tile) {  // warp-uniform: this warp's share of `tile` is done
                    const float a = acc + __shfl_xor_sync(0xffffffffu, acc, 16);
                    if (lane < 16) red[((tile - t0) * NW + warp) * 16 + j] = a;
                    acc = 0.f, tile = q.t;
                }
                acc = consume<DOT>(cur[u], xs + (2 * q.s + hsel) * 16, cur_sz[u], acc,
                                   DOT == 5 || DOT == 12 ? cs[2 * q.s + hsel] : float2{1.f, 0.f});
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) cur[u] = nxt[u], cur_sz[u] = nxt_sz[u];
        at = next;
    }
    {
        const float a = acc + __shfl_xor_sync(0xffffffffu, acc, 16);
        if (lane < 16 && f0 + warp < f1) red[((tile - t0) * NW + warp) * 16 + j] = a;
    }
    __syncthreads();
    if (warp != 0) return;
    const uint32_t t_last = (f1 - 1) / steps;
    for (uint32_t t = t0; t <= t_last; ++t) {
        float sum = 0.f;
        for (int w = 0; w < NW; ++w) sum += red[((t - t0) * NW + w) * 16 + j];
        const bool whole = !BAL || (t * steps >= f0 && (t + 1) * steps <= f1);
        if (whole) {
            if (lane < 16) ph.y[t * 16 + j] = sum;
            continue;
        }
        // A tile cut between blocks: leave this block's part; the last part to arrive adds them up in block order.
        const uint32_t first = block_of(total, gridDim.x, t * steps);
        const uint32_t last = block_of(total, gridDim.x, (t + 1) * steps - 1);
        if (lane < 16) in.partials[((size_t)t * MAX_PARTS + (blockIdx.x - first)) * 16 + j] = sum;
        __threadfence();
        __syncwarp();
        uint32_t arrived = 0;
        if (lane == 0) arrived = atomicAdd(in.count + t, 1u);
        arrived = __shfl_sync(0xffffffffu, arrived, 0);
        if (arrived == last - first) {
            __threadfence();
            float s = 0.f;
            for (uint32_t q = 0; q <= last - first; ++q) s += __ldcg(in.partials + ((size_t)t * MAX_PARTS + q) * 16 + j);
            if (lane < 16) ph.y[t * 16 + j] = s;
            if (lane == 0) in.count[t] = 0;
        }
    }
}

// f(u) for the steps u of the batch at i0 that lie within a warp's n steps: a whole batch unrolled without checks
// (the lean loops' point), the last one checked.
template <typename F>
__device__ __forceinline__ void each_in_batch(uint32_t i0, uint32_t n, F f) {
    if (i0 + UNROLL <= n) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) f(u);
    } else {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)
            if (i0 + u < n) f(u);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The engine-like tile (block staging after the wait, dot_chunk, the same loads in the same order, so the same
// bits) with its K loop's addressing strength-reduced. Why: in the SASS of both the engine's K loop and
// gemv_phase's, a 4-step batch spends as many instructions on addresses, bounds and branches as the 14 per 8
// weights of its dot products take (the engine's gate/up: 412 per 16 words, 224 of them the dot), and dot_lite,
// which removes 9 per 8 weights, is 220 µs faster per step. Here a warp's steps warp, warp + NW, ... are simply its
// step 0, 1, ...: their weight words lie NW · 32 uint4 apart, their (scale, zero) words NW / 2 groups apart (groups
// of 128 rows: 4 chunks) and their input 2 NW chunks apart, all compile-time strides, so a batch is one base
// address per array plus immediate offsets; and a batch wholly inside the warp's steps has no bounds checks.
// MULHI: with dot_chunk<true> (variant 30: do the two savings add up?). SYM: the scales alone from ph.sc (2 bytes
// per group and slot instead of 4; the engine's gemv_lean_sym_int4_*: variant 31, the same bits). I16: dot_i16 on
// stage_i16's input (variant 33: the lean loop with the int16 dot product). MINB: blocks per SM the register cap is
// set for (variant 34: 3 instead of 4 at 8 warps, 80 registers instead of 64). PP: two batches per round, the
// buffers' roles alternating (variant 35). Why: in the engine's sm_90a SASS (gemv_lean_sym_int4_gate_up) a 4-step
// batch is ~335 instructions, 18 of them moving the next batch's words and scales into the current ones; the
// alternating loop removes them but spills under the 64-register cap, so it is measured here with the cap raised,
// beside the raised cap alone (the same bits as variant 31 both).
// BOUND (timing bounds of variant 31, not valid kernels): 1 the words xor-folded instead of multiplied (what the dot
// product costs in the lean loop), 2 the input staged before the wait (what staging costs on the critical path), 3
// the norm phases staging an fp16 input of 8 KB (as if their producer wrote x · norm weight in fp16, 1 / rms applied
// to the sums) instead of f32 x and the norm weight (24 KB) — what the engine has done since (its half input); 4 / 5
// that staging with dot_i16 / dot_i8 instead of dot_chunk (the staged bytes read as int16 / int8 and the chunk
// constants left unwritten: what the integer dot products would cost on an input their producer wrote ready); 6
// that staging with the words xor-folded (what the dot product costs there).
template <int NW, bool MULHI = false, bool SYM = false, bool I16 = false, int MINB = 1024 / (NW * 32), bool PP = false,
          int BOUND = 0>
__global__ void __launch_bounds__(NW * 32, MINB) gemv_phase_lean(Phase ph, Inputs in) {
    static_assert(GROUP == 128 && NW % 2 == 0, "the strides below assume 4 chunks per group");
    static_assert(!(I16 && (SYM || MULHI)), "dot_i16 reads the zero from the (scale, zero) word");
    extern __shared__ __align__(16) unsigned char smem[];
    float* red = reinterpret_cast<float*>(smem);  // [NW][16]
    float* scratch = red + MAX_SEGS * NW * 16;    // [NW]
    __half2* xs = reinterpret_cast<__half2*>(scratch + 32);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j = lane & 15, hsel = lane >> 4;
    const uint32_t steps = ph.k / 64, groups = ph.k / GROUP, t = blockIdx.x;
    constexpr uint32_t W_STRIDE = NW * 32, SZ_STRIDE = NW / 2 * 16, X_STRIDE = 2 * NW * 16;
    const uint4* w = ph.w + ((size_t)t * steps + warp) * 32 + lane;
    const size_t sz_at = ((size_t)t * groups + (2 * warp + hsel) / 4) * 16 + j;
    const uint32_t* sz = ph.sz + sz_at;
    const unsigned short* sc = ph.sc + sz_at;
    const __half2* x = xs + (2 * warp + hsel) * 16;
    float2* cs = reinterpret_cast<float2*>(xs + ph.k / 2);  // I16: the chunks' (2^-s, Σ x16)
    const float2* csw = cs + 2 * warp + hsel;
    const uint32_t n = steps > (uint32_t)warp ? (steps - warp + NW - 1) / NW : 0;  // this warp's steps
    auto load = [&](uint32_t i0, uint4 (&wv)[UNROLL], uint32_t (&sv)[UNROLL]) {
        const uint4* wb = w + i0 * W_STRIDE;
        const uint32_t* sb = sz + i0 * SZ_STRIDE;
        const unsigned short* cb = sc + i0 * SZ_STRIDE;
        auto one = [&](int u) {
            wv[u] = ldg_stream(wb + u * W_STRIDE);
            sv[u] = SYM ? __ldg(cb + u * SZ_STRIDE) : __ldg(sb + u * SZ_STRIDE);
        };
        each_in_batch(i0, n, one);
    };
    uint4 cur[UNROLL], nxt[UNROLL];
    uint32_t cur_sz[UNROLL], nxt_sz[UNROLL];
    load(0, cur, cur_sz);
    float inv_after = 1.f;
    if (BOUND == 2) stage<NW>(ph, in, xs, scratch);
    pdl_wait();
    if (I16) stage_i16<NW>(ph, in, xs, cs, scratch);
    else if (BOUND >= 3) inv_after = stage<NW, false, true>(ph, in, xs, scratch);
    else if (BOUND != 2) stage<NW>(ph, in, xs, scratch);
    pdl_launch();

    float acc = 0.f;
    // Batch i0 multiplied from (wv, sv) while the next one is loaded into (nw, ns).
    auto batch = [&](uint32_t i0, const uint4(&wv)[UNROLL], const uint32_t(&sv)[UNROLL], uint4(&nw)[UNROLL],
                     uint32_t(&ns)[UNROLL]) {
        load(i0 + UNROLL, nw, ns);
        const __half2* xb = x + i0 * X_STRIDE;
        const float2* cb = csw + i0 * 2 * NW;
        auto dot = [&](int u) {
            if (I16) acc = dot_i16(wv[u], xb + u * X_STRIDE, sv[u], cb[u * 2 * NW], acc);
            else if (BOUND == 4) acc = dot_i16<SYM>(wv[u], xb + u * X_STRIDE, sv[u], cb[u * 2 * NW], acc);
            else if (BOUND == 5) acc = dot_i8(wv[u], xb + u * X_STRIDE, sv[u], cb[u * 2 * NW], acc);
            else if (BOUND == 1 || BOUND == 6) acc = consume<0>(wv[u], xb + u * X_STRIDE, sv[u], acc);
            else acc = dot_chunk<MULHI, SYM>(wv[u], xb + u * X_STRIDE, sv[u], acc);
        };
        each_in_batch(i0, n, dot);
    };
    if constexpr (PP) {
        for (uint32_t i0 = 0; i0 < n; i0 += 2 * UNROLL) {
            batch(i0, cur, cur_sz, nxt, nxt_sz);
            if (i0 + UNROLL < n) batch(i0 + UNROLL, nxt, nxt_sz, cur, cur_sz);
        }
    } else {
        for (uint32_t i0 = 0; i0 < n; i0 += UNROLL) {
            batch(i0, cur, cur_sz, nxt, nxt_sz);
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) cur[u] = nxt[u], cur_sz[u] = nxt_sz[u];
        }
    }
    const float a = acc + __shfl_xor_sync(0xffffffffu, acc, 16);
    if (lane < 16) red[warp * 16 + j] = a;
    __syncthreads();
    if (warp != 0) return;
    float sum = 0.f;
    for (int v = 0; v < NW; ++v) sum += red[v * 16 + j];
    if (lane < 16) ph.y[t * 16 + j] = sum * inv_after;
}

// ---------------------------------------------------------------------------------------------------------------
// The same tiled GEMV on mma.sync m16n8k16, for a layout in fragment order (not the engine's: the bytes here are
// random, so they are simply read as such). Lane (g, t) of a warp loads, per K step, one uint4 whose word i is its
// A fragment of k16 block i: slots g and g + 8 at rows 2t, 2t + 1 (nibbles 0, 4 and 2, 6) and 2t + 8, 2t + 9
// (nibbles 1, 5 and 3, 7). The nibbles become fp16 1024 + q (rows 2t..: one LOP3) and 1024 + 16 q (rows 2t + 8..:
// one LOP3, no shift, with B = x / 16 there), with no zero subtracted: B is the input broadcast to all 8 columns, the
// f32 accumulators take the products exactly, and the bias (1024 Σ of the staged B values of the step) and the
// zero (z Σ x) come off once per step and slot. 5 integer ops + 1 MMA + 1 LDS.64 per 8 weights and lane, against
// dot_chunk's 14; per step and slot a few f32 ops more.
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint2 b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.x), "r"(b.y));
}

// The mma kernels' shared memory: B fragments [k16 block][t] (uint2), step constants [step] (1024 Σ B, Σ x), the
// tile's (scale, zero) pairs [group][16], the warps' sums [NW][16], a scratch of 32 floats; a kernel's own after.
template <int NW>
struct MmaSmem {
    uint2* bfrag;
    float2 *consts, *szs;
    float *red, *scratch;
    __device__ MmaSmem(unsigned char* base, uint32_t steps, uint32_t groups) {
        bfrag = reinterpret_cast<uint2*>(base);
        consts = reinterpret_cast<float2*>(bfrag + steps * 16);
        szs = consts + steps;
        red = reinterpret_cast<float*>(szs + groups * 16);
        scratch = red + NW * 16;
    }
};

// The mma kernels' end: every warp's sums of slots g (acc0) and g + 8 (acc1) added in warp order, less `corr`
// (per slot, or null), into the tile's 16 outputs.
template <int NW>
__device__ void mma_tile_out(const Phase& ph, float* red, float acc0, float acc1, uint32_t tile, const float* corr) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    if (t == 0) red[warp * 16 + g] = acc0, red[warp * 16 + g + 8] = acc1;
    __syncthreads();
    if (warp == 0 && lane < 16) {
        float sum = 0.f;
        for (int w = 0; w < NW; ++w) sum += red[w * 16 + lane];
        ph.y[tile * 16 + lane] = corr ? sum - corr[lane] : sum;
    }
}

// The four k16 blocks of one K step on mma.sync from lane (g, t)'s uint4 in fragment order (word i: its A fragment
// of block i, see above), against the step's B fragments for lane t at b[0], b[4], b[8], b[12].
__device__ __forceinline__ void mma_step_fragments(float (&d)[4], uint4 w, const uint2* b) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t hi = words[i] >> 8;
        const uint32_t a[4] = {lop3_and_or(words[i], 0x000F000Fu, 0x64006400u), lop3_and_or(hi, 0x000F000Fu, 0x64006400u),
                               lop3_and_or(words[i], 0x00F000F0u, 0x64006400u), lop3_and_or(hi, 0x00F000F0u, 0x64006400u)};
        mma16816(d, a, b[4 * i]);
    }
}

// The four k16 blocks of one K step on mma.sync from the words lane (g, t) gathered in the short wgmma tile's mapping
// (w0: slot g, w1: slot g + 8, each words 2 (t % 2), 2 (t % 2) + 1 of the lane that loaded rows 16 t .. 16 t + 15),
// against the step's B fragments `bstep` [k16 block][t]: pair i of each word goes into block i.
__device__ __forceinline__ void mma_step_gathered(float (&d)[4], uint2 w0, uint2 w1, const uint2* bstep, int t) {
    const uint32_t words[4] = {w0.x, w1.x, w0.y, w1.y};  // a0 .. a3's words
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        uint32_t a[4];
#pragma unroll
        for (int q = 0; q < 4; ++q)
            a[q] = lop3_and_or(i >= 2 ? words[q] >> 8 : words[q], (i & 1) ? 0x00F000F0u : 0x000F000Fu, 0x64006400u);
        mma16816(d, a, bstep[i * 4 + t]);
    }
}

// The input as the mma kernels' B fragments [k16 block][t] and the step constants (1024 Σ B, Σ x) (see
// gemv_phase_mma; GATHER: for the engine's layout regrouped per step).
template <int NW, bool GATHER>
__device__ void stage_mma_input(const Phase& ph, const Inputs& in, uint2* bfrag, float2* consts, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // Word i (rows 8i .. 8i + 7) of k16 block i / 2: even i gives the 4 lanes t their b.x = (x[8i+2t], x[8i+2t+1]),
    // odd i their b.y = the same / 16. Eight consecutive words are a step: their sums meet by shuffles.
    const uint32_t words = ph.k / 8;
    float inv_rms = 1.f;
    if (ph.norm) {
        float sq = 0.f;
        for (uint32_t i = threadIdx.x; i < 256; i += blockDim.x) sq += in.ssq[i];
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        if (lane == 0) scratch[warp] = sq;
        __syncthreads();
        float s = 0.f;
        for (int w = 0; w < NW; ++w) s += scratch[w];
        inv_rms = rsqrtf(s / (float)ph.k + 1e-6f);
    }
    for (uint32_t i = threadIdx.x; i < words; i += blockDim.x) {
        float v[8];
        load_word(ph, in, i, v);
        for (int j = 0; j < 8; ++j) v[j] *= inv_rms;
        float bias = 0.f, sx = 0.f;
        if (GATHER) {
            // The engine's layout: word r = 2 t + hb of step s is rows 16 t + 8 hb .. + 7 and gives lane t
            // of every k16 block j its pair (8r + j, 8r + j + 4) as b.x (hb 0) or b.y (hb 1), / 16 for odd j.
            const uint32_t s = i / 8, r = i % 8, tq = r / 2, hb = r % 2;
            for (int jj = 0; jj < 4; ++jj) {
                const float m = (jj & 1) ? 1.f / 16.f : 1.f;
                const __half2 pr = __floats2half2_rn(v[jj] * m, v[jj + 4] * m);
                const float2 rr = __half22float2(pr);
                bias += 1024.f * (rr.x + rr.y), sx += (jj & 1 ? 16.f : 1.f) * (rr.x + rr.y);
                reinterpret_cast<uint32_t*>(bfrag + (4 * s + jj) * 4 + tq)[hb] = u32(pr);
            }
        } else {
            const bool hi = i & 1;
            const float m = hi ? 1.f / 16.f : 1.f;
            float sb = 0.f;
            uint32_t* dst = reinterpret_cast<uint32_t*>(bfrag + (i / 2) * 4) + hi;
            for (int tt = 0; tt < 4; ++tt) {
                const __half2 pr = __floats2half2_rn(v[2 * tt] * m, v[2 * tt + 1] * m);
                const float2 r = __half22float2(pr);
                sb += r.x + r.y;
                dst[2 * tt] = u32(pr);
            }
            bias = 1024.f * sb, sx = hi ? 16.f * sb : sb;
        }
        for (int o = 1; o < 8; o <<= 1) {
            bias += __shfl_xor_sync(0xffffffffu, bias, o);
            sx += __shfl_xor_sync(0xffffffffu, sx, o);
        }
        if ((i & 7) == 0) consts[i / 8] = make_float2(bias, sx);
    }
    __syncthreads();
}

// Shared memory: B fragments [k16 block][t] (uint2), step constants [step] (1024 Σ B, Σ x), the tile's (scale,
// 1024 + zero) words [group][16], the warps' sums [NW][16].
template <int NW, int PRE>
__global__ void __launch_bounds__(NW * 32, 1024 / (NW * 32)) gemv_phase_mma(Phase ph, Inputs in) {
    extern __shared__ __align__(16) unsigned char smem[];
    const uint32_t steps = ph.k / 64, groups = ph.k / GROUP;
    const MmaSmem<NW> sm(smem, steps, groups);
    uint2* bfrag = sm.bfrag;
    float2 *consts = sm.consts, *szs = sm.szs;
    float *red = sm.red, *scratch = sm.scratch;
    float* corr = scratch + 32;  // [16]: PRE 2's per-slot bias and zero correction
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t tile = blockIdx.x;
    uint4* gather = reinterpret_cast<uint4*>(corr + 16) + warp * 32;  // PRE 3: this warp's step, to regroup
    constexpr bool GATHER = PRE == 3;

    uint4 cur[UNROLL], nxt[UNROLL];
    auto load = [&](uint32_t s0, uint4(&w)[UNROLL]) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const uint32_t s = s0 + u * NW;
            if (s < steps) w[u] = ldg_stream(ph.w + ((size_t)tile * steps + s) * 32 + lane);
        }
    };
    load(warp, cur);
    // The tile's (scale, zero) as f32 pairs, before the wait (weights never change).
    for (uint32_t i = threadIdx.x; i < groups * 16; i += blockDim.x) {
        const float2 f = __half22float2(h2(__ldg(ph.sz + (size_t)tile * groups * 16 + i)));
        szs[i] = make_float2(f.x, f.y - 1024.f);
    }
    auto stage_mma = [&]() { stage_mma_input<NW, GATHER>(ph, in, bfrag, consts, scratch); };
    if (PRE == 1) stage_mma();
    pdl_wait();
    if (PRE != 1) stage_mma();
    pdl_launch();
    if (PRE == 2 && warp == NW - 1) {
        // The bias and zero of every step, once per slot and block instead of in the loop: Σ_groups scale ·
        // (Σ bias + z Σ x) over the group's steps, lane (slot, half) taking every other group, the halves added.
        const uint32_t slot = lane & 15, per_group = GROUP / 64;
        float c = 0.f;
        for (uint32_t grp = lane >> 4; grp < groups; grp += 2) {
            float b = 0.f, x = 0.f;
            for (uint32_t q = 0; q < per_group; ++q) b += consts[grp * per_group + q].x, x += consts[grp * per_group + q].y;
            const float2 sz = szs[grp * 16 + slot];
            c = fmaf(sz.x, b + sz.y * x, c);
        }
        c += __shfl_xor_sync(0xffffffffu, c, 16);
        if (lane < 16) corr[slot] = c;
    }

    float acc0 = 0.f, acc1 = 0.f;  // slots g and g + 8
    for (uint32_t s0 = warp; s0 < steps; s0 += NW * UNROLL) {
        load(s0 + NW * UNROLL, nxt);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const uint32_t s = s0 + u * NW;
            if (s < steps) {
                float d[4] = {0.f, 0.f, 0.f, 0.f};
                if (GATHER) {
                    // Lane (g, t) takes words 2 (t % 2), 2 (t % 2) + 1 of lanes g + 16 (t / 2) and g + 8 + 16 (t / 2)
                    // (slots g and g + 8, rows 16 t .. 16 t + 15), as the short wgmma tile does; pair i of each
                    // word goes into k16 block i.
                    gather[lane] = cur[u];
                    __syncwarp();
                    const uint32_t src = g + 16 * (t >> 1);
                    const uint2 w0 = reinterpret_cast<const uint2*>(gather + src)[t & 1];
                    const uint2 w1 = reinterpret_cast<const uint2*>(gather + src + 8)[t & 1];
                    __syncwarp();
                    mma_step_gathered(d, w0, w1, bfrag + 16 * s, t);
                } else {
                    mma_step_fragments(d, cur[u], bfrag + 16 * s + t);
                }
                const float2 c = consts[s];
                const uint32_t grp = s * 64 / GROUP;
                const float2 sz0 = szs[grp * 16 + g], sz1 = szs[grp * 16 + g + 8];
                if (PRE == 2) {  // the bias and zero come off once per block (corr)
                    acc0 = fmaf(sz0.x, d[0], acc0), acc1 = fmaf(sz1.x, d[2], acc1);
                } else {
                    acc0 = fmaf(sz0.x, d[0] - c.x - sz0.y * c.y, acc0);
                    acc1 = fmaf(sz1.x, d[2] - c.x - sz1.y * c.y, acc1);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) cur[u] = nxt[u];
    }
    mma_tile_out<NW>(ph, red, acc0, acc1, tile, PRE == 2 ? corr : nullptr);
}

// 16 / 17: gemv_phase_mma (block staging after the wait) in the lean K loop of gemv_phase_lean: one base address per
// array and warp with compile-time strides, no bounds checks in batches wholly inside the warp's steps. Why: the
// mma kernel's −75 µs (2026-12-03) was measured against the register K loop, before the lean loop took 270 µs off
// the engine-like chain; whether the fragment-order layout still pays must be measured against the lean loop.
// SYM (17): the tile's scales from the scales-only copy (ph.sc), the zero the constant 8.
template <int NW, bool SYM>
__global__ void __launch_bounds__(NW * 32, 1024 / (NW * 32)) gemv_phase_mma_lean(Phase ph, Inputs in) {
    static_assert(GROUP == 128 && NW % 2 == 0, "the strides below assume 2 steps per group");
    extern __shared__ __align__(16) unsigned char smem[];
    const uint32_t steps = ph.k / 64, groups = ph.k / GROUP;
    const MmaSmem<NW> sm(smem, steps, groups);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t tile = blockIdx.x;
    constexpr uint32_t W_STRIDE = NW * 32, B_STRIDE = NW * 16, SZ_STRIDE = NW / 2 * 16;
    const uint4* w = ph.w + ((size_t)tile * steps + warp) * 32 + lane;
    const uint32_t n = steps > (uint32_t)warp ? (steps - warp + NW - 1) / NW : 0;  // this warp's steps
    auto load = [&](uint32_t i0, uint4(&wv)[UNROLL]) {
        const uint4* wb = w + i0 * W_STRIDE;
        each_in_batch(i0, n, [&](int u) { wv[u] = ldg_stream(wb + u * W_STRIDE); });
    };
    uint4 cur[UNROLL], nxt[UNROLL];
    load(0, cur);
    for (uint32_t i = threadIdx.x; i < groups * 16; i += blockDim.x) {
        const size_t at = (size_t)tile * groups * 16 + i;
        if (SYM) {
            sm.szs[i] = make_float2(__half2float(__ushort_as_half(__ldg(ph.sc + at))), 8.f);
        } else {
            const float2 f = __half22float2(h2(__ldg(ph.sz + at)));
            sm.szs[i] = make_float2(f.x, f.y - 1024.f);
        }
    }
    pdl_wait();
    stage_mma_input<NW, false>(ph, in, sm.bfrag, sm.consts, sm.scratch);
    pdl_launch();

    float acc0 = 0.f, acc1 = 0.f;  // slots g and g + 8
    const uint2* bw = sm.bfrag + warp * 16 + t;
    const float2* cw = sm.consts + warp;
    const float2* sw = sm.szs + (warp / 2) * 16 + g;
    auto batch = [&](uint32_t i0, const uint4(&wv)[UNROLL], uint4(&nw)[UNROLL]) {
        load(i0 + UNROLL, nw);
        auto step = [&](int u) {
            const uint32_t i = i0 + u;
            const uint2* b = bw + i * B_STRIDE;
            float d[4] = {0.f, 0.f, 0.f, 0.f};
            mma_step_fragments(d, wv[u], b);
            const float2 c = cw[i * NW];
            const float2* sz = sw + i * SZ_STRIDE;
            const float2 sz0 = sz[0], sz1 = sz[8];
            acc0 = fmaf(sz0.x, d[0] - c.x - sz0.y * c.y, acc0);
            acc1 = fmaf(sz1.x, d[2] - c.x - sz1.y * c.y, acc1);
        };
        each_in_batch(i0, n, step);
    };
    for (uint32_t i0 = 0; i0 < n; i0 += UNROLL) {
        batch(i0, cur, nxt);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) cur[u] = nxt[u];
    }
    mma_tile_out<NW>(ph, sm.red, acc0, acc1, tile, nullptr);
}

// ---------------------------------------------------------------------------------------------------------------
// The tiled GEMV on mma.sync m16n8k16 on the engine's own layout, the weights as B (gemv_rows.cu's mapping, no
// regrouping): per span of two K steps (128 rows) lane (g, t) loads chunk t of slots g and g + 8 (two LDG.128, 32
// rows each) and each word gives two k16 blocks' B registers by two LOP3s (nibbles 0/4 as 1024 + q, 1/5 unshifted
// as 1024 + 16 q; the odd block from word >> 8). A is the input, but only one row of it per chunk: row 4 sp + t of
// the two-span window holds chunk t of span sp and is zero elsewhere (a lane whose row is not the span's reads a
// zero block of shared memory), so that each row of D is one 32-row chunk's sum for 8 slots, whatever the group
// size. No zero is subtracted and no scale multiplied in the loop: the staged input has its odd pairs / 16, and
// once per window each lane folds its row: y += scale · (D − (1024 + zero) Q − R), with Q and R per chunk from the
// staging. 4 LOP3 + 1 shift + 2 MMA + 1 LDS.64 per 8 weights and lane, against dot_chunk's 14.
__device__ __forceinline__ void mma16816b(float (&d)[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
}

// Shared memory: the staged input [k / 8] uint4 (pairs 1 and 3 / 16), per chunk (Q, R) [k / 32], a zero block of 64
// bytes, the warps' sums [NW][16], a scratch of 32.
template <int NW>
__global__ void __launch_bounds__(NW * 32, 1024 / (NW * 32)) gemv_phase_bmma(Phase ph, Inputs in) {
    extern __shared__ __align__(16) unsigned char smem[];
    const uint32_t words = ph.k / 8, chunks = ph.k / 32, spans = ph.k / 128, windows = (spans + 1) / 2;
    const uint32_t steps = ph.k / 64, groups = ph.k / GROUP;
    uint4* xs = reinterpret_cast<uint4*>(smem);
    float2* cq = reinterpret_cast<float2*>(xs + words);
    uint2* zero = reinterpret_cast<uint2*>(cq + chunks);
    float* red = reinterpret_cast<float*>(zero + 8);
    float* scratch = red + NW * 16;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t tile = blockIdx.x;
    const uint4* w_lane = ph.w + (size_t)tile * steps * 32 + (t >> 1) * 32 + 16 * (t & 1) + g;
    const uint32_t* sz_lane = ph.sz + (size_t)tile * groups * 16 + 2 * t;

    // A window's loads: spans 2 win, 2 win + 1 (slots g, g + 8 each), and the (scale, zero) words of the chunk this
    // lane folds (chunk 8 win + g: slots 2t, 2t + 1 and 8 + 2t, 9 + 2t).
    struct Win {
        uint4 w[4];
        uint2 sz[2];
    };
    auto load = [&](uint32_t win, Win& b) {
        if (win >= windows) return;
#pragma unroll
        for (int sp = 0; sp < 2; ++sp)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                if (2 * win + sp < spans) b.w[2 * sp + h] = ldg_stream(w_lane + (size_t)(2 * win + sp) * 64 + 8 * h);
        const uint32_t c = min(8 * win + g, chunks - 1), grp = c * 32 / GROUP;
#pragma unroll
        for (int h = 0; h < 2; ++h) b.sz[h] = __ldg(reinterpret_cast<const uint2*>(sz_lane + grp * 16 + 8 * h));
    };
    Win cur, nxt;
    load(warp, cur);
    if (threadIdx.x < 8) zero[threadIdx.x] = make_uint2(0u, 0u);
    pdl_wait();
    {
        // The engine's staging, with pairs 1 and 3 of each word / 16, and each chunk's Q = E + 16 O and
        // R = 1024 (E + O − Q) = −15360 O from the staged values (E: pairs 0 and 2, O: pairs 1 and 3).
        float inv_rms = 1.f;
        if (ph.norm) {
            float sq = 0.f;
            for (uint32_t i = threadIdx.x; i < 256; i += blockDim.x) sq += in.ssq[i];
            inv_rms = rsqrtf(block_sum<NW>(sq, scratch) / (float)ph.k + 1e-6f);
        }
        for (uint32_t base = threadIdx.x - lane; base < words; base += blockDim.x) {
            const uint32_t i = base + lane;
            float e = 0.f, o = 0.f;
            if (i < words) {
                float v[8];
                load_word(ph, in, i, v);
                uint4 out;
                uint32_t* ow = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float m = (j & 1) ? inv_rms * (1.f / 16.f) : inv_rms;
                    const __half2 pr = __floats2half2_rn(v[j] * m, v[j + 4] * m);
                    const float2 r = __half22float2(pr);
                    ((j & 1) ? o : e) += r.x + r.y;
                    ow[j] = u32(pr);
                }
                xs[i] = out;
            }
            for (int x = 1; x < 4; x <<= 1) e += __shfl_xor_sync(0xffffffffu, e, x), o += __shfl_xor_sync(0xffffffffu, o, x);
            if ((i & 3) == 0 && i < words) cq[i / 4] = make_float2(e + 16.f * o, -15360.f * o);
        }
        __syncthreads();
    }
    pdl_launch();

    float y[2][2] = {};  // slots 8 h + 2 t + e of this lane's chunks
    const uint2* xs2 = reinterpret_cast<const uint2*>(xs);
    for (uint32_t win = warp; win < windows; win += NW) {
        load(win + NW, nxt);
        float d[2][4] = {};
#pragma unroll
        for (int sp = 0; sp < 2; ++sp) {
            const uint32_t s = 2 * win + sp;
            if (s >= spans) break;
            // Row g = 4 sp + t of A is chunk t of span sp: only those lanes read the input, the others zeros.
            const uint2* a = g == 4 * sp + t ? xs2 + 8 * (4 * s + t) : zero;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const uint2 av = a[j];
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const uint32_t word = (j >> 1) == 0 ? cur.w[2 * sp + h].x : (j >> 1) == 1 ? cur.w[2 * sp + h].y
                                        : (j >> 1) == 2 ? cur.w[2 * sp + h].z : cur.w[2 * sp + h].w;
                    const uint32_t bits = (j & 1) ? word >> 8 : word;
                    mma16816b(d[h], av.x, av.y, lop3_and_or(bits, 0x000F000Fu, 0x64006400u),
                              lop3_and_or(bits, 0x00F000F0u, 0x64006400u));
                }
            }
        }
        // Fold row g (chunk 8 win + g) into the lane's slots.
        const uint32_t c = 8 * win + g;
        if (c < chunks) {
            const float2 qr = cq[c];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float2 s0 = __half22float2(h2(cur.sz[h].x)), s1 = __half22float2(h2(cur.sz[h].y));
                y[h][0] = fmaf(s0.x, d[h][0] - fmaf(s0.y, qr.x, qr.y), y[h][0]);
                y[h][1] = fmaf(s1.x, d[h][1] - fmaf(s1.y, qr.x, qr.y), y[h][1]);
            }
        }
        cur = nxt;
    }
    // Sum over the lane's g (rows), then over the warps.
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            float v = y[h][e];
            for (int x = 4; x < 32; x <<= 1) v += __shfl_xor_sync(0xffffffffu, v, x);
            if (g == 0) red[warp * 16 + 8 * h + 2 * t + e] = v;
        }
    __syncthreads();
    if (warp == 0 && lane < 16) {
        float sum = 0.f;
        for (int w = 0; w < NW; ++w) sum += red[w * 16 + lane];
        ph.y[tile * 16 + lane] = sum;
    }
}

// The host's value of an engine-layout output y[tile · 16 + slot] (plain-input phases: x16, scale 1/1024, zero 8).
static double engine_reference(const std::vector<uint32_t>& w, const std::vector<__half>& x16, uint32_t k,
                               uint32_t tile, uint32_t slot) {
    const uint32_t steps = k / 64;
    double y = 0;
    for (uint32_t s = 0; s < steps; ++s)
        for (uint32_t half = 0; half < 2; ++half) {
            const uint32_t lane = 16 * half + slot;
            for (uint32_t i = 0; i < 4; ++i) {
                const uint32_t word = w[(((size_t)tile * steps + s) * 32 + lane) * 4 + i];
                for (uint32_t n = 0; n < 8; ++n) {
                    const int v = (word >> (4 * n)) & 15;
                    y += (v - 8) * (double)__half2float(x16[64 * s + 32 * half + 8 * i + n]) / 1024.0;
                }
            }
        }
    return y;
}

// ---------------------------------------------------------------------------------------------------------------
// The whole chain as one persistent kernel, issue 13's candidate design: all blocks resident, one more warp per
// block streaming the block's tiles of every phase in order (16 K steps and their (scale, zero) rows per stage)
// into a shared-memory ring by bulk copies, never waiting for the grid — so the weights of the next phases are in
// flight while the computing warps wait on the previous phase (an arrival counter: phase p starts once all blocks
// have arrived p times) — and NW warps that stage the input, take each stage's steps as the engine-like kernel's
// warps take theirs (warp w: steps w, w + NW, ...: the same dot_chunk in the same order), reduce and write the
// tile's outputs. Tiles go to blocks round-robin (tile t to block t mod grid).
constexpr uint32_t PS_STEPS = 16;
constexpr uint32_t PS_WBYTES = PS_STEPS * 512;
constexpr uint32_t PS_SBYTES = PS_STEPS * 64 / GROUP * 16 * 4;
constexpr uint32_t PS_STAGE = PS_WBYTES + PS_SBYTES;
constexpr uint32_t PS_XS_BYTES = 11008 * 2;  // the widest staged input

// Shared memory besides the ring: the warps' sums, a scratch, the staged input (mma: its B fragments and the
// per-step constants).
static size_t persist_smem(int nw, int mma, bool i16 = false) {
    return (nw * 16 + 32) * 4 + PS_XS_BYTES + (mma ? 11008 / 64 * 8 : 0) + (i16 ? 11008 / 32 * 8 : 0);
}

// The copying thread of a persistent kernel: the block's tiles of every phase in order, a stage at a time, each
// as soon as the computing warps have released its slot.
__device__ void persist_copy(const Phase* phases, int n, unsigned char* ring, uint64_t* full, uint64_t* empty,
                             uint32_t stages) {
    const uint32_t G = gridDim.x, b = blockIdx.x;
    uint32_t i = 0;
    for (int p = 0; p < n; ++p) {
        const Phase ph = phases[p];
        const uint32_t steps = ph.k / 64, groups = ph.k / GROUP;
        for (uint32_t t = b; t < ph.tiles; t += G)
            for (uint32_t s0 = 0; s0 < steps; s0 += PS_STEPS, ++i) {
                const uint32_t slot = i % stages, ns = min(PS_STEPS, steps - s0);
                const uint32_t g_lo = s0 * 64 / GROUP, ng = (ns * 64 + GROUP - 1) / GROUP;
                if (i >= stages) mbar_wait(empty + slot, (i / stages - 1) & 1);
                mbar_expect(full + slot, ns * 512 + ng * 64);
                bulk_copy(ring + slot * PS_STAGE, ph.w + ((size_t)t * steps + s0) * 32, ns * 512, full + slot);
                bulk_copy(ring + slot * PS_STAGE + PS_WBYTES, ph.sz + ((size_t)t * groups + g_lo) * 16, ng * 64,
                          full + slot);
            }
    }
}

// The persistent kernels' shared memory: the ring's stages, their full and empty mbarriers, the warps' sums [NW][16],
// a scratch of 32, then the staged input in whatever form the kernel stages it.
template <int NW>
struct PersistSmem {
    unsigned char* ring;
    uint64_t *full, *empty;
    float *red, *scratch;
    unsigned char* input;
    __device__ PersistSmem(unsigned char* base, uint32_t stages)
        : ring(base),
          full(reinterpret_cast<uint64_t*>(base + stages * PS_STAGE)),
          empty(full + stages),
          red(reinterpret_cast<float*>(empty + stages)),
          scratch(red + NW * 16),
          input(reinterpret_cast<unsigned char*>(scratch + 32)) {}
};

// Every thread: set up the ring's mbarriers, then the copying warp (warp NW) streams the block's stages and is done:
// true for it, false for the computing warps.
template <int NW>
__device__ bool persist_start(const PersistSmem<NW>& sm, const Phase* phases, int n, uint32_t stages) {
    if (threadIdx.x == 0) {
        for (uint32_t q = 0; q < stages; ++q) mbar_init(sm.full + q, 1), mbar_init(sm.empty + q, NW);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if ((threadIdx.x >> 5) != NW) return false;
    if ((threadIdx.x & 31) == 0) persist_copy(phases, n, sm.ring, sm.full, sm.empty, stages);
    return true;
}

// MODE (timing bounds, not valid kernels unless 0), bits: 1 the words xor-folded instead of multiplied, 2 the input
// staged only by the first phase of each width, 4 no wait for the previous phase (what a dataflow design with every
// input ready in time could reach at best), 8 dot_lite instead of dot_chunk (any dequantizer's lower bound); 16 (a
// valid kernel) dot_i16 on stage_i16's input instead of dot_chunk.
// CHAIN: one phase per launch instead (n = 1), the kernels chained by programmatic dependent launch — each lets the
// next launch at once, so that the next kernel's blocks, small enough to be resident beside this one's, fill their
// rings while this one runs.
template <int NW, int MINB, int MODE = 0, bool CHAIN = false>
__global__ void __launch_bounds__((NW + 1) * 32, MINB) gemv_persist(const Phase* phases, int n, Inputs in,
                                                                 uint32_t* arrived, uint32_t stages) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const PersistSmem<NW> sm(smem_raw, stages);
    unsigned char* ring = sm.ring;
    uint64_t *full = sm.full, *empty = sm.empty;
    float *red = sm.red, *scratch = sm.scratch;
    __half2* xs = reinterpret_cast<__half2*>(sm.input);
    const uint32_t G = gridDim.x, b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j = lane & 15, hsel = lane >> 4;
    if (CHAIN) pdl_launch();
    if (persist_start(sm, phases, n, stages)) return;
    uint32_t i = 0;
    for (int p = 0; p < n; ++p) {
        const Phase ph = phases[p];
        const uint32_t steps = ph.k / 64;
        if (CHAIN) pdl_wait();
        else if (threadIdx.x == 0 && !(MODE & 4))
            while (load_acquire(arrived) < (uint32_t)p * G) {
            }
        sync_warps<NW, true>();
        float2* cs = reinterpret_cast<float2*>(xs + PS_XS_BYTES / 4);  // MODE 16: the chunks' (2^-s, Σ x16)
        if (MODE & 16) stage_i16<NW, true>(ph, in, xs, cs, scratch);
        else if (!(MODE & 2) || p < 4) stage<NW, true>(ph, in, xs, scratch);
        for (uint32_t t = b; t < ph.tiles; t += G) {
            float acc = 0.f;
            for (uint32_t s0 = 0; s0 < steps; s0 += PS_STEPS, ++i) {
                const uint32_t slot = i % stages, ns = min(PS_STEPS, steps - s0), g_lo = s0 * 64 / GROUP;
                const unsigned char* st = ring + slot * PS_STAGE;
                mbar_wait(full + slot, (i / stages) & 1);
                for (uint32_t u = warp; u < ns; u += NW) {
                    const uint32_t s = s0 + u;
                    const uint4 w = reinterpret_cast<const uint4*>(st)[u * 32 + lane];
                    const uint32_t grp = (2 * s + hsel) * 32 / GROUP - g_lo;
                    const uint32_t szb = reinterpret_cast<const uint32_t*>(st + PS_WBYTES)[grp * 16 + j];
                    if (MODE & 1) acc += (float)(w.x ^ w.y ^ w.z ^ w.w ^ szb);
                    else if (MODE & 8) acc = dot_lite(w, xs + (2 * s + hsel) * 16, szb, acc);
                    else if (MODE & 16) acc = dot_i16(w, xs + (2 * s + hsel) * 16, szb, cs[2 * s + hsel], acc);
                    else acc = dot_chunk(w, xs + (2 * s + hsel) * 16, szb, acc);
                }
                __syncwarp();
                if (lane == 0) mbar_arrive(empty + slot);
            }
            acc += __shfl_xor_sync(0xffffffffu, acc, 16);
            if (lane < 16) red[warp * 16 + j] = acc;
            sync_warps<NW, true>();
            if (warp == 0) {
                float sum = 0.f;
                for (int w = 0; w < NW; ++w) sum += red[w * 16 + j];
                if (lane < 16) ph.y[t * 16 + j] = sum;
            }
            sync_warps<NW, true>();
        }
        if (!CHAIN && threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(arrived) : "memory");
    }
}

// The persistent kernel's multiply on mma.sync m16n8k16 with the weights as A, gathered straight from the ring stage
// (shared memory: any lane reads any word, so the engine's layout serves as is): lane (g, t) takes words 2 (t % 2),
// 2 (t % 2) + 1 of the step's lanes g + 16 (t / 2) and g + 8 + 16 (t / 2), slots g and g + 8 at rows 16 t .. 16 t +
// 15 — gemv_phase_mma's GATHER mapping without its regrouping store. The input is staged as B fragments with the
// per-step bias and Σ x (stage_fragments).
template <int NW, bool NAMED>
__device__ void stage_fragments(const Phase& ph, const Inputs& in, uint2* bfrag, float2* consts, float* scratch) {
    const uint32_t words = ph.k / 8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float inv_rms = 1.f;
    if (ph.norm) {
        float sq = 0.f;
        for (uint32_t i = threadIdx.x; i < 256; i += NW * 32) sq += in.ssq[i];
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        if (lane == 0) scratch[warp] = sq;
        sync_warps<NW, NAMED>();
        float sum = 0.f;
        for (int w = 0; w < NW; ++w) sum += scratch[w];
        inv_rms = rsqrtf(sum / (float)ph.k + 1e-6f);
    }
    for (uint32_t base = threadIdx.x - lane; base < words; base += NW * 32) {
        const uint32_t i = base + lane;
        float bias = 0.f, sx = 0.f;
        if (i < words) {
            float v[8];
            load_word(ph, in, i, v);
            // Word r = 2 tq + hb of step s is rows 16 tq + 8 hb .. + 7: lane tq's pair (8r + jj, 8r + jj + 4) of
            // k16 block jj, as b.x (hb 0) or b.y (hb 1), / 16 for odd jj.
            const uint32_t st = i / 8, r = i % 8, tq = r / 2, hb = r % 2;
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                const float m = (jj & 1) ? inv_rms / 16.f : inv_rms;
                const __half2 pr = __floats2half2_rn(v[jj] * m, v[jj + 4] * m);
                const float2 rr = __half22float2(pr);
                bias += 1024.f * (rr.x + rr.y), sx += (jj & 1 ? 16.f : 1.f) * (rr.x + rr.y);
                reinterpret_cast<uint32_t*>(bfrag + (4 * st + jj) * 4 + tq)[hb] = u32(pr);
            }
        }
        for (int o = 1; o < 8; o <<= 1) {
            bias += __shfl_xor_sync(0xffffffffu, bias, o);
            sx += __shfl_xor_sync(0xffffffffu, sx, o);
        }
        if ((i & 7) == 0 && i < words) consts[i / 8] = make_float2(bias, sx);
    }
    sync_warps<NW, NAMED>();
}

template <int NW, int MINB, int MODE = 0>
__global__ void __launch_bounds__((NW + 1) * 32, MINB) gemv_persist_mma(const Phase* phases, int n, Inputs in,
                                                                        uint32_t* arrived, uint32_t stages) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const PersistSmem<NW> sm(smem_raw, stages);
    unsigned char* ring = sm.ring;
    uint64_t *full = sm.full, *empty = sm.empty;
    float *red = sm.red, *scratch = sm.scratch;
    uint2* bfrag = reinterpret_cast<uint2*>(sm.input);                    // [k / 16][4]
    float2* consts = reinterpret_cast<float2*>(bfrag + PS_XS_BYTES / 8);  // [k / 64]
    const uint32_t G = gridDim.x, b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    if (persist_start(sm, phases, n, stages)) return;
    uint32_t i = 0;
    for (int p = 0; p < n; ++p) {
        const Phase ph = phases[p];
        const uint32_t steps = ph.k / 64;
        if (threadIdx.x == 0)
            while (load_acquire(arrived) < (uint32_t)p * G) {
            }
        sync_warps<NW, true>();
        if (!(MODE & 2) || p < 4) stage_fragments<NW, true>(ph, in, bfrag, consts, scratch);
        for (uint32_t tile = b; tile < ph.tiles; tile += G) {
            float acc0 = 0.f, acc1 = 0.f;  // slots g and g + 8
            for (uint32_t s0 = 0; s0 < steps; s0 += PS_STEPS, ++i) {
                const uint32_t slot = i % stages, ns = min(PS_STEPS, steps - s0), g_lo = s0 * 64 / GROUP;
                const unsigned char* st = ring + slot * PS_STAGE;
                mbar_wait(full + slot, (i / stages) & 1);
                for (uint32_t u = warp; u < ns; u += NW) {
                    const uint32_t s = s0 + u;
                    const uint4* step = reinterpret_cast<const uint4*>(st) + u * 32 + g + 16 * (t >> 1);
                    const uint2 w0 = reinterpret_cast<const uint2*>(step)[t & 1];
                    const uint2 w1 = reinterpret_cast<const uint2*>(step + 8)[t & 1];
                    float d[4] = {0.f, 0.f, 0.f, 0.f};
                    mma_step_gathered(d, w0, w1, bfrag + 16 * s, t);
                    const float2 c = consts[s];
                    const uint32_t* szr = reinterpret_cast<const uint32_t*>(st + PS_WBYTES) + (s * 64 / GROUP - g_lo) * 16;
                    const float2 sz0 = __half22float2(h2(szr[g])), sz1 = __half22float2(h2(szr[g + 8]));
                    acc0 = fmaf(sz0.x, d[0] - c.x - (sz0.y - 1024.f) * c.y, acc0);
                    acc1 = fmaf(sz1.x, d[2] - c.x - (sz1.y - 1024.f) * c.y, acc1);
                }
                __syncwarp();
                if (lane == 0) mbar_arrive(empty + slot);
            }
            if (t == 0) red[warp * 16 + g] = acc0, red[warp * 16 + g + 8] = acc1;
            sync_warps<NW, true>();
            if (warp == 0 && lane < 16) {
                float sum = 0.f;
                for (int w = 0; w < NW; ++w) sum += red[w * 16 + lane];
                ph.y[tile * 16 + lane] = sum;
            }
            sync_warps<NW, true>();
        }
        if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(arrived) : "memory");
    }
}

// The host's value of the mma kernel's output y[tile · 16 + slot] (plain-input phases: x16 as staged).
static double mma_reference(const std::vector<uint32_t>& w, const std::vector<__half>& x16, uint32_t k,
                            uint32_t tile, uint32_t slot) {
    const uint32_t steps = k / 64;
    double y = 0;
    for (uint32_t s = 0; s < steps; ++s)
        for (uint32_t lane = 0; lane < 32; ++lane) {
            const uint32_t g = lane >> 2, t = lane & 3;
            if (g != slot % 8) continue;
            const uint32_t h = slot / 8;
            for (uint32_t i = 0; i < 4; ++i) {
                const uint32_t word = w[(((size_t)tile * steps + s) * 32 + lane) * 4 + i];
                const uint32_t row0 = 64 * s + 16 * i + 2 * t;
                // (nibble, row): a0 / a1 = nibbles 0, 4 / 2, 6 at rows 2t, 2t + 1; a2 / a3 = 1, 5 / 3, 7 at + 8.
                const uint32_t nib[4] = {h ? 2u : 0u, h ? 6u : 4u, h ? 3u : 1u, h ? 7u : 5u};
                const uint32_t row[4] = {row0, row0 + 1, row0 + 8, row0 + 9};
                for (int q = 0; q < 4; ++q) {
                    const int v = (word >> (4 * nib[q])) & 15;
                    y += (v - 8) * (double)__half2float(x16[row[q]]) / 1024.0;
                }
            }
        }
    return y;
}

struct Variant {
    const char* name;
    int per_sm;  // balanced: blocks per SM; 0: tiled
    int dot;     // 0 fold, 1 the engine's dot product, 2 dot_lite, 3 gemv_phase_mma, 4 _bmma, 5 dot_denorm, ..., 12 dot_i16
    int pre;     // 0 block staging after the wait, 1 before it, 2 each warp its own rows after the wait
    int warps;   // tiled, engine dot, staged after the wait: warps per block for every phase (0: the engine's 8 / 16)
};

template <int NW, bool BAL, int DOT, int PRE>
static void launch(const Phase& ph, const Inputs& in, int grid, cudaStream_t s) {
    const size_t smem = (MAX_SEGS * NW * 16 + 32) * 4 + ph.k * 2 + (DOT == 5 || DOT == 7 || DOT == 12 ? ph.k / 32 * 8 : 0);
    launch_pdl(gemv_phase<NW, BAL, DOT, PRE>, dim3(grid), dim3(NW * 32), smem, s, ph, in);
}

template <int NW, int PRE>
static void launch_mma(const Phase& ph, const Inputs& in, cudaStream_t s) {
    const uint32_t steps = ph.k / 64, groups = ph.k / GROUP;
    const size_t smem = steps * 16 * 8 + steps * 8 + groups * 16 * 8 + (NW * 16 + 32 + 16) * 4 + NW * 512;
    launch_pdl(gemv_phase_mma<NW, PRE>, dim3(ph.tiles), dim3(NW * 32), smem, s, ph, in);
}

template <int NW>
static void launch_bmma(const Phase& ph, const Inputs& in, cudaStream_t s) {
    const size_t smem = ph.k * 2 + ph.k / 32 * 8 + 64 + (NW * 16 + 32) * 4;
    launch_pdl(gemv_phase_bmma<NW>, dim3(ph.tiles), dim3(NW * 32), smem, s, ph, in);
}

template <bool BAL, int DOT, int PRE>
static void launch_phase(const Phase& ph, const Inputs& in, int grid, cudaStream_t s) {
    if (BAL) launch<8, BAL, DOT, PRE>(ph, in, grid, s);
    else if (ph.tiles <= 512) launch<16, BAL, DOT, PRE>(ph, in, ph.tiles, s);  // the engine's wide o / down
    else launch<8, BAL, DOT, PRE>(ph, in, ph.tiles, s);
}

// The variant's compile-time switches from its run-time ones (the balanced kernel has no warp staging).
template <bool BAL>
static void launch_variant(const Phase& ph, const Inputs& in, int grid, int dot, int pre, cudaStream_t s) {
    switch (dot * 3 + (BAL ? std::min(pre, 1) : pre)) {
        case 0: return launch_phase<BAL, 0, 0>(ph, in, grid, s);
        case 1: return launch_phase<BAL, 0, 1>(ph, in, grid, s);
        case 2: return launch_phase<BAL, 0, 2>(ph, in, grid, s);
        case 3: return launch_phase<BAL, 1, 0>(ph, in, grid, s);
        case 4: return launch_phase<BAL, 1, 1>(ph, in, grid, s);
        case 5: return launch_phase<BAL, 1, 2>(ph, in, grid, s);
        case 6: return launch_phase<BAL, 2, 0>(ph, in, grid, s);
        case 7: return launch_phase<BAL, 2, 1>(ph, in, grid, s);
        default: return launch_phase<BAL, 2, 2>(ph, in, grid, s);
    }
}

template <int NW, bool MULHI = false, bool SYM = false, bool I16 = false, int MINB = 1024 / (NW * 32), bool PP = false,
          int BOUND = 0>
static void launch_lean(const Phase& ph, const Inputs& in, cudaStream_t s) {
    const size_t smem = (MAX_SEGS * NW * 16 + 32) * 4 + ph.k * 2 + (I16 || BOUND >= 4 ? ph.k / 32 * 8 : 0);
    launch_pdl(gemv_phase_lean<NW, MULHI, SYM, I16, MINB, PP, BOUND>, dim3(ph.tiles), dim3(NW * 32), smem, s, ph, in);
}

// Variant 31's lean scales-only loop (16 warps for o and down, 8 at 4 blocks per SM for the others) under timing
// bound `bound` (1-6, see gemv_phase_lean): variants 18-23.
static void launch_lean_bound(int bound, const Phase& ph, const Inputs& in, cudaStream_t s) {
    const bool wide = ph.tiles <= 512;
    switch (bound) {
        case 1: return wide ? launch_lean<16, false, true, false, 2, false, 1>(ph, in, s)
                            : launch_lean<8, false, true, false, 4, false, 1>(ph, in, s);
        case 2: return wide ? launch_lean<16, false, true, false, 2, false, 2>(ph, in, s)
                            : launch_lean<8, false, true, false, 4, false, 2>(ph, in, s);
        case 3: return wide ? launch_lean<16, false, true, false, 2, false, 3>(ph, in, s)
                            : launch_lean<8, false, true, false, 4, false, 3>(ph, in, s);
        case 4: return wide ? launch_lean<16, false, true, false, 2, false, 4>(ph, in, s)
                            : launch_lean<8, false, true, false, 4, false, 4>(ph, in, s);
        case 5: return wide ? launch_lean<16, false, true, false, 2, false, 5>(ph, in, s)
                            : launch_lean<8, false, true, false, 4, false, 5>(ph, in, s);
        default: return wide ? launch_lean<16, false, true, false, 2, false, 6>(ph, in, s)
                             : launch_lean<8, false, true, false, 4, false, 6>(ph, in, s);
    }
}

template <int NW, bool SYM>
static void launch_mma_lean(const Phase& ph, const Inputs& in, cudaStream_t s) {
    const uint32_t steps = ph.k / 64, groups = ph.k / GROUP;
    const size_t smem = steps * 16 * 8 + steps * 8 + groups * 16 * 8 + (NW * 16 + 32) * 4;
    launch_pdl(gemv_phase_mma_lean<NW, SYM>, dim3(ph.tiles), dim3(NW * 32), smem, s, ph, in);
}

static void launch_mma_variant(const Phase& ph, const Inputs& in, int pre, cudaStream_t s) {
    const bool wide = ph.tiles <= 512;  // as the engine's o / down: 16 warps
    if (pre == 0) wide ? launch_mma<16, 0>(ph, in, s) : launch_mma<8, 0>(ph, in, s);
    else if (pre == 1) wide ? launch_mma<16, 1>(ph, in, s) : launch_mma<8, 1>(ph, in, s);
    else if (pre == 2) wide ? launch_mma<16, 2>(ph, in, s) : launch_mma<8, 2>(ph, in, s);
    else wide ? launch_mma<16, 3>(ph, in, s) : launch_mma<8, 3>(ph, in, s);
}

// The median of 7 timed runs of `run` after a warm-up, µs, by CUDA events on stream s; `before` runs ahead of each,
// untimed (poisoning the outputs, resetting counters).
template <typename Before, typename Run>
static float time_us(cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, Before before, Run run) {
    std::vector<float> t;
    for (int rep = 0; rep < 8; ++rep) {
        float ms = 0;
        before();
        CHECK(cudaEventRecord(e0, s));
        run();
        CHECK(cudaEventRecord(e1, s));
        CHECK(cudaEventSynchronize(e1));
        CHECK(cudaGetLastError());
        CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep) t.push_back(ms * 1e3f);
    }
    return median(t);
}

// The largest relative L2 distance over the four projections' outputs (each 22016 apart in y); NaN (an output left
// unwritten) sticks.
static const uint32_t OUTPUTS[4] = {12288, 4096, 22016, 4096};
static double max_rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
    double worst = 0;
    for (int type = 0; type < 4; ++type) {
        double d = 0, r = 0;
        for (uint32_t i = 0; i < OUTPUTS[type]; ++i) {
            const double a = got[type * 22016 + i], b = want[type * 22016 + i];
            d += (a - b) * (a - b), r += b * b;
        }
        const double rel = std::sqrt(d / r);
        if (!(rel <= worst)) worst = rel;
    }
    return worst;
}

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const uint32_t shapes[4][2] = {{4096, 12288}, {4096, 4096}, {4096, 22016}, {11008, 4096}};  // K, N
    std::vector<Phase> chain;
    size_t wbytes = 0, sbytes = 0;
    for (int l = 0; l < 32; ++l)
        for (auto& sh : shapes) {
            Phase ph = {};
            ph.k = sh[0], ph.tiles = sh[1] / 16, ph.norm = sh[0] == 4096 && sh[1] != 4096;
            chain.push_back(ph);
            wbytes += (size_t)ph.k * sh[1] / 2, sbytes += (size_t)ph.k / GROUP * sh[1] * 4;
        }
    uint32_t *w = nullptr, *sz = nullptr;
    unsigned short* sc = nullptr;
    CHECK(cudaMalloc(&w, wbytes));
    CHECK(cudaMalloc(&sz, sbytes));
    CHECK(cudaMalloc(&sc, sbytes / 2));
    fill_random<<<1024, 256>>>(w, wbytes / 4, 12345u);
    // Scale 1/1024 with zero 8 (1024 + 8 in the high half): the engine's (scale, 1024 + zero) word; and the same
    // scales alone, as the engine's scales-only copy of a symmetric linear.
    std::vector<uint32_t> hsz(sbytes / 4, (uint32_t)0x6408u << 16 | 0x1400u);
    CHECK(cudaMemcpy(sz, hsz.data(), sbytes, cudaMemcpyHostToDevice));
    std::vector<unsigned short> hsc(sbytes / 4, 0x1400u);
    CHECK(cudaMemcpy(sc, hsc.data(), sbytes / 2, cudaMemcpyHostToDevice));
    float* y = nullptr;
    CHECK(cudaMalloc(&y, 4 * 22016 * 4));
    size_t wat = 0, sat = 0;
    for (auto& ph : chain) {
        ph.w = reinterpret_cast<const uint4*>(w) + wat / 16, ph.sz = sz + sat / 4, ph.sc = sc + sat / 4;
        const int type = ph.k == 11008 ? 3 : ph.tiles == 256 ? 1 : ph.tiles == 768 ? 0 : 2;
        ph.y = y + type * 22016;
        wat += (size_t)ph.k * ph.tiles * 8, sat += (size_t)ph.k / GROUP * ph.tiles * 64;
    }
    Inputs in = {};
    std::vector<__half> x16(11008);
    {
        std::vector<float> x(11008), ssq(256, 4096.f / 256.f);
        std::vector<__half> g(11008);
        for (int i = 0; i < 11008; ++i) {
            x[i] = std::sin(0.37f * i), x16[i] = __float2half(0.5f * std::cos(0.11f * i)), g[i] = __float2half(1.f);
        }
        float *dx, *dssq, *dpart;
        __half *dx16, *dg;
        uint32_t* dcount;
        CHECK(cudaMalloc(&dx, 11008 * 4));
        CHECK(cudaMalloc(&dssq, 256 * 4));
        CHECK(cudaMalloc(&dx16, 11008 * 2));
        CHECK(cudaMalloc(&dg, 11008 * 2));
        CHECK(cudaMalloc(&dpart, (size_t)1376 * MAX_PARTS * 16 * 4));
        CHECK(cudaMalloc(&dcount, 1376 * 4));
        CHECK(cudaMemset(dcount, 0, 1376 * 4));
        CHECK(cudaMemcpy(dx, x.data(), 11008 * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dssq, ssq.data(), 256 * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dx16, x16.data(), 11008 * 2, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dg, g.data(), 11008 * 2, cudaMemcpyHostToDevice));
        in = {dx, dx16, dg, dssq, dpart, dcount};
        const uint32_t shift_mul = 1u << 24;
        CHECK(cudaMemcpyToSymbol(c_shift_mul, &shift_mul, sizeof shift_mul));
    }
    // The balanced shares must fit the kernel's fixed bounds (at the fewest blocks per SM a variant uses).
    for (auto& sh : shapes) {
        const uint64_t steps = sh[0] / 64, total = steps * (sh[1] / 16), g = (uint64_t)sms * 2;
        const uint64_t share = total / g + 1;
        if ((share + steps - 1) / steps + 1 > MAX_SEGS || (steps + share - 1) / share + 1 > MAX_PARTS) {
            std::printf("shape %u x %u: shares outside MAX_SEGS / MAX_PARTS\n", sh[0], sh[1]);
            return 1;
        }
    }
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    std::printf("%d SMs, %.3f GB of weights + %.3f GB of scales in %zu phases\n", sms, wbytes / 1e9, sbytes / 1e9,
                chain.size());

    const Variant variants[] = {
        {"tiled          dot  stage (engine)", 0, 1, 0},
        {"tiled          dot  prestage", 0, 1, 1},
        {"tiled          dot  warpstage", 0, 1, 2},
        {"tiled          fold stage", 0, 0, 0},
        {"tiled          fold prestage", 0, 0, 1},
        {"tiled          fold warpstage", 0, 0, 2},
        {"tiled          dot  stage, 2nd batch before the wait", 0, 1, 4},
        {"tiled          dot  stage, 2nd batch before staging", 0, 1, 5},
        {"tiled          lite stage", 0, 2, 0},
        {"tiled          lite prestage", 0, 2, 1},
        {"tiled          lite warpstage", 0, 2, 2},
        {"balanced 4/SM  dot  stage", 4, 1, 0},
        {"balanced 4/SM  fold stage", 4, 0, 0},
        {"balanced 3/SM  dot  stage", 3, 1, 0},
        {"balanced 2/SM  dot  stage", 2, 1, 0},
        {"balanced 2/SM  dot  prestage", 2, 1, 1},
        {"balanced 2/SM  fold stage", 2, 0, 0},
        {"tiled, 4 warps for every phase", 0, 1, 0, 4},
        {"tiled, 8 warps for every phase", 0, 1, 0, 8},
        {"tiled, 16 warps for every phase", 0, 1, 0, 16},
        {"tiled          mma  stage", 0, 3, 0},
        {"tiled          mma  prestage", 0, 3, 1},
        {"tiled          mma  stage, correction per block", 0, 3, 2},
        {"tiled          mma  on the engine's layout", 0, 3, 3},
        {"tiled          mma, weights as B (engine layout)", 0, 4, 0},
        {"tiled          denorm stage", 0, 5, 0},
        {"tiled          denorm dot, engine's staging (timing)", 0, 6, 0},
        {"tiled          engine dot, denorm staging (timing)", 0, 7, 0},
        {"tiled          engine dot, shift as IMAD.HI", 0, 8, 0},
        {"tiled          engine dot, lean K loop", 0, 9, 0},
        {"tiled          lean K loop, shift as IMAD.HI", 0, 10, 0},
        {"tiled          lean K loop, scales only", 0, 11, 0},
        {"tiled          int16 input, dp2a", 0, 12, 0},
        {"tiled          int16 input, dp2a, lean K loop", 0, 13, 0},
        {"tiled          lean, scales only, 80 registers", 0, 14, 0},
        {"tiled          lean, scales only, 80 regs, 2 buffers", 0, 15, 0},
        {"tiled          mma  stage, lean K loop", 0, 16, 0},
        {"tiled          mma  stage, lean K loop, scales only", 0, 17, 0},
        {"tiled          lean, scales only, xor only (timing)", 0, 18, 0},
        {"tiled          lean, scales only, prestage (timing)", 0, 19, 0},
        {"tiled          lean, scales only, fp16 norm input (timing)", 0, 20, 0},
        {"tiled          lean sym, fp16 in, i16 dot (timing)", 0, 21, 0},
        {"tiled          lean sym, fp16 in, i8 dot (timing)", 0, 22, 0},
        {"tiled          lean sym, fp16 in, xor only (timing)", 0, 23, 0},
    };
    const int n_variants = sizeof(variants) / sizeof(variants[0]);
    std::vector<float> y_ref(4 * 22016), y_now(4 * 22016);
    // Arguments: the variants to run, by index (variant 0, the reference, always runs); none: all.
    std::vector<bool> chosen(n_variants, argc <= 1);
    chosen[0] = true;
    for (int a = 1; a < argc; ++a) {
        const int v = std::atoi(argv[a]);
        if (v >= 0 && v < n_variants) chosen[v] = true;
    }
    for (int v = 0; v < n_variants; ++v) {
        if (!chosen[v]) continue;
        const Variant& var = variants[v];
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        for (auto& ph : chain) {
            const int grid = sms * var.per_sm;
            if (var.warps == 4) launch<4, false, 1, 0>(ph, in, ph.tiles, s);
            else if (var.warps == 8) launch<8, false, 1, 0>(ph, in, ph.tiles, s);
            else if (var.warps == 16) launch<16, false, 1, 0>(ph, in, ph.tiles, s);
            else if (var.dot == 3) launch_mma_variant(ph, in, var.pre, s);
            else if (var.dot == 5) launch_phase<false, 5, 0>(ph, in, ph.tiles, s);
            else if (var.dot == 12) launch_phase<false, 12, 0>(ph, in, ph.tiles, s);
            else if (var.dot == 6) launch_phase<false, 6, 0>(ph, in, ph.tiles, s);
            else if (var.dot == 7) launch_phase<false, 7, 0>(ph, in, ph.tiles, s);
            else if (var.dot == 8) launch_phase<false, 8, 0>(ph, in, ph.tiles, s);
            else if (var.dot == 9) ph.tiles <= 512 ? launch_lean<16>(ph, in, s) : launch_lean<8>(ph, in, s);
            else if (var.dot == 10) ph.tiles <= 512 ? launch_lean<16, true>(ph, in, s) : launch_lean<8, true>(ph, in, s);
            else if (var.dot == 11)
                ph.tiles <= 512 ? launch_lean<16, false, true>(ph, in, s) : launch_lean<8, false, true>(ph, in, s);
            else if (var.dot == 13)
                ph.tiles <= 512 ? launch_lean<16, false, false, true>(ph, in, s)
                                : launch_lean<8, false, false, true>(ph, in, s);
            else if (var.dot == 14)  // o and down as variant 11: 16 warps at 2 blocks per SM are already at 64
                ph.tiles <= 512 ? launch_lean<16, false, true>(ph, in, s) : launch_lean<8, false, true, false, 3>(ph, in, s);
            else if (var.dot == 15)
                ph.tiles <= 512 ? launch_lean<16, false, true>(ph, in, s)
                                : launch_lean<8, false, true, false, 3, true>(ph, in, s);
            else if (var.dot >= 18 && var.dot <= 23) launch_lean_bound(var.dot - 17, ph, in, s);
            else if (var.dot == 16) ph.tiles <= 512 ? launch_mma_lean<16, false>(ph, in, s) : launch_mma_lean<8, false>(ph, in, s);
            else if (var.dot == 17) ph.tiles <= 512 ? launch_mma_lean<16, true>(ph, in, s) : launch_mma_lean<8, true>(ph, in, s);
            else if (var.dot == 4) ph.tiles <= 512 ? launch_bmma<16>(ph, in, s) : launch_bmma<8>(ph, in, s);
            else if (var.dot == 1 && var.pre >= 4)
                ph.tiles <= 512 ? (var.pre == 4 ? launch<16, false, 1, 4>(ph, in, ph.tiles, s)
                                                : launch<16, false, 1, 5>(ph, in, ph.tiles, s))
                                : (var.pre == 4 ? launch<8, false, 1, 4>(ph, in, ph.tiles, s)
                                                : launch<8, false, 1, 5>(ph, in, ph.tiles, s));
            else if (var.per_sm > 0) launch_variant<true>(ph, in, grid, var.dot, var.pre, s);
            else launch_variant<false>(ph, in, grid, var.dot, var.pre, s);
        }
        CHECK(cudaStreamEndCapture(s, &graph));
        CHECK(cudaGraphInstantiate(&exec, graph, 0));
        // Outputs poisoned before each run: every one must be written again.
        const float m = time_us(s, e0, e1, [&] { CHECK(cudaMemsetAsync(y, 0xFF, 4 * 22016 * 4, s)); },
                                [&] { CHECK(cudaGraphLaunch(exec, s)); });
        CHECK(cudaMemcpy(y_now.data(), y, y_now.size() * 4, cudaMemcpyDeviceToHost));
        const bool scales_only = var.dot == 11 || var.dot == 14 || var.dot == 15 || (var.dot >= 17 && var.dot <= 23);
        const double bytes = wbytes + (scales_only ? sbytes / 2 : sbytes);  // scales only: half the scale bytes
        std::printf("%-36s %8.1f us per step (%5.0f GB/s)", var.name, m, bytes / m / 1e3);
        if (var.dot == 4 || var.dot == 5 || var.dot == 12 || var.dot == 13) {
            // The engine's layout: the engine-like kernel's outputs (fp16 chunk sums there: ~1e-3 apart), and the
            // last layer's o projection against a float64 reading of its bytes.
            const double rel = max_rel_l2(y_now, y_ref);
            const Phase& o = chain[chain.size() - 3];
            std::vector<uint32_t> hw((size_t)o.k * o.tiles * 2);
            CHECK(cudaMemcpy(hw.data(), o.w, hw.size() * 4, cudaMemcpyDeviceToHost));
            double worst = 0, scale = 0, worst_ref = 0;
            for (uint32_t q = 0; q < 64; ++q) {
                const uint32_t tile = (q * 37) % o.tiles, slot = (q * 5) % 16;
                const double h = engine_reference(hw, x16, o.k, tile, slot), got = y_now[1 * 22016 + tile * 16 + slot];
                worst = std::max(worst, std::fabs(got - h)), scale = std::max(scale, std::fabs(h));
                worst_ref = std::max(worst_ref, std::fabs(y_ref[1 * 22016 + tile * 16 + slot] - h));
                if (!std::isfinite(got)) worst = INFINITY;
            }
            std::printf("  vs engine-like: max rel L2 %.2e%s; o vs the host: max |error| %.2e (engine-like %.2e) of %.2e%s",
                        rel, rel < 2e-3 ? "" : "  MISMATCH", worst, worst_ref, scale,
                        worst <= 1e-4 * scale ? "" : "  MISMATCH");
        } else if (var.dot == 3 && var.pre == 3) {
            // The engine's layout, so the engine-like kernel's outputs (fp16 chunk sums there: ~1e-3 apart).
            const double rel = max_rel_l2(y_now, y_ref);
            std::printf("  outputs vs the engine-like kernel: max rel L2 %.2e%s", rel, rel < 2e-3 ? "" : "  MISMATCH");
        } else if (var.dot == 3 || var.dot == 16 || var.dot == 17) {
            // The last layer's o projection (plain input) against the host, at a spread of outputs.
            const Phase& o = chain[chain.size() - 3];
            std::vector<uint32_t> hw((size_t)o.k * o.tiles * 2);  // 16 slots × k nibbles per tile
            CHECK(cudaMemcpy(hw.data(), o.w, hw.size() * 4, cudaMemcpyDeviceToHost));
            double worst = 0, scale = 0;
            for (uint32_t q = 0; q < 64; ++q) {
                const uint32_t tile = (q * 37) % o.tiles, slot = (q * 5) % 16;
                const double r = mma_reference(hw, x16, o.k, tile, slot), got = y_now[1 * 22016 + tile * 16 + slot];
                worst = std::max(worst, std::fabs(got - r)), scale = std::max(scale, std::fabs(r));
                if (!std::isfinite(got)) worst = INFINITY;
            }
            std::printf("  o outputs vs the host: max |error| %.2e of max |y| %.2e%s", worst, scale,
                        worst <= 1e-4 * scale ? "" : "  MISMATCH");
        }
        if (var.dot == 1 || var.dot == 8 || var.dot == 9 || var.dot == 10 || (scales_only && var.dot < 17)) {
            if (v == 0) {
                y_ref = y_now;
                for (int type = 0; type < 4; ++type)
                    for (uint32_t i = 0; i < shapes[type][1]; ++i)
                        if (!std::isfinite(y_ref[type * 22016 + i])) {
                            std::printf("  output %d.%u is not finite", type, i);
                            type = 4;
                            break;
                        }
            } else {
                const double worst = max_rel_l2(y_now, y_ref);
                std::printf("  outputs vs the engine-like kernel: max rel L2 %.2e%s", worst,
                            worst < 1e-5 ? "" : "  MISMATCH");
            }
        }
        std::printf("\n");
        CHECK(cudaGraphExecDestroy(exec));
        CHECK(cudaGraphDestroy(graph));
    }
    // The persistent kernel: blocks per SM × computing warps, the ring as deep as shared memory allows.
    {
        Phase* d_chain = nullptr;
        uint32_t* arrived = nullptr;
        CHECK(cudaMalloc(&d_chain, chain.size() * sizeof(Phase)));
        CHECK(cudaMemcpy(d_chain, chain.data(), chain.size() * sizeof(Phase), cudaMemcpyHostToDevice));
        CHECK(cudaMalloc(&arrived, 4));
        struct Config {
            int per_sm, nw, mma, mode;
        };
        const Config configs[] = {{2, 8, 0, 0}, {2, 8, 0, 1}, {2, 8, 0, 2}, {2, 8, 0, 3}, {2, 8, 0, 4},
                                  {2, 8, 0, 5}, {2, 8, 0, 6}, {2, 8, 0, 7}, {2, 8, 0, 8}, {2, 8, 0, 12},
                                  {2, 8, 0, 10}, {1, 16, 0, 1}, {2, 16, 0, 0}, {2, 8, 0, 16},
                                  {2, 8, 1, 0}, {2, 8, 1, 2}};
        for (const Config& c : configs) {
            int smem_max = 0;
            CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
            const size_t fixed = persist_smem(c.nw, c.mma, c.mode == 16);
            const uint32_t stages = (uint32_t)std::min<size_t>(24, (smem_max / c.per_sm - 1024 - fixed) / (PS_STAGE + 16));
            const size_t bytes = fixed + stages * (PS_STAGE + 16);
            using Kernel = void (*)(const Phase*, int, Inputs, uint32_t*, uint32_t);
            Kernel kernel = nullptr;
            if (c.mma && c.mode == 2) kernel = gemv_persist_mma<8, 2, 2>;
            else if (c.mma) kernel = c.nw == 16 ? (c.per_sm == 1 ? gemv_persist_mma<16, 1> : gemv_persist_mma<16, 2>)
                                                : (c.per_sm == 2 ? gemv_persist_mma<8, 2> : gemv_persist_mma<8, 3>);
            else if (c.mode == 1) kernel = c.per_sm == 1 ? gemv_persist<16, 1, 1> : gemv_persist<8, 2, 1>;
            else if (c.mode == 2) kernel = gemv_persist<8, 2, 2>;
            else if (c.mode == 3) kernel = gemv_persist<8, 2, 3>;
            else if (c.mode == 4) kernel = gemv_persist<8, 2, 4>;
            else if (c.mode == 5) kernel = gemv_persist<8, 2, 5>;
            else if (c.mode == 6) kernel = gemv_persist<8, 2, 6>;
            else if (c.mode == 7) kernel = gemv_persist<8, 2, 7>;
            else if (c.mode == 8) kernel = gemv_persist<8, 2, 8>;
            else if (c.mode == 10) kernel = gemv_persist<8, 2, 10>;
            else if (c.mode == 12) kernel = gemv_persist<8, 2, 12>;
            else if (c.mode == 16) kernel = gemv_persist<8, 2, 16>;
            else kernel = c.nw == 16 ? gemv_persist<16, 2> : c.per_sm == 2 ? gemv_persist<8, 2> : gemv_persist<8, 3>;
            CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
            int fits = 0;
            CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fits, kernel, (c.nw + 1) * 32, bytes));
            if (fits < c.per_sm) {
                std::printf("persistent%s, %d x %d warps per SM: only %d blocks fit\n", c.mma ? " mma" : "", c.per_sm,
                            c.nw, fits);
                continue;
            }
            const int grid = sms * c.per_sm;
            const float m = time_us(s, e0, e1, [&] {
                CHECK(cudaMemsetAsync(y, 0xFF, 4 * 22016 * 4, s));
                CHECK(cudaMemsetAsync(arrived, 0, 4, s));
            }, [&] { kernel<<<grid, (c.nw + 1) * 32, bytes, s>>>(d_chain, (int)chain.size(), in, arrived, stages); });
            CHECK(cudaMemcpy(y_now.data(), y, y_now.size() * 4, cudaMemcpyDeviceToHost));
            const double worst = max_rel_l2(y_now, y_ref);
            // mma and dot_i16: exact or f32 sums against the engine's fp16 chunk sums
            const double tol = c.mma || c.mode == 16 ? 2e-3 : 1e-5;
            const char* modes[] = {"", ", xor only", ", staged once", ", xor only, staged once", ", no wait",
                                   ", xor only, no wait", ", staged once, no wait", ", xor only, staged once, no wait",
                                   ", dot_lite", "", ", dot_lite, staged once", "", ", dot_lite, no wait"};
            std::printf("persistent%s, %d x %2d warps per SM, %2u stages of %u KB %8.1f us per step (%5.0f GB/s)",
                        c.mma ? " mma" : "    ", c.per_sm, c.nw, stages, PS_STAGE / 1024, m, (wbytes + sbytes) / m / 1e3);
            if (c.mode == 16) std::printf(", dot_i16  outputs vs the engine-like kernel: max rel L2 %.2e%s\n", worst,
                                          worst < tol ? "" : "  MISMATCH");
            else if (c.mode) std::printf("%s (a timing bound)\n", modes[c.mode]);
            else std::printf("  outputs vs the engine-like kernel: max rel L2 %.2e%s\n", worst, worst < tol ? "" : "  MISMATCH");
        }
        // The same kernel one phase per launch, in a graph with programmatic dependent launch: per_sm blocks per SM
        // of each kernel, sized so that two kernels' blocks fit on an SM at once.
        for (const Config& c : {Config{1, 16, 0, 0}, Config{1, 8, 0, 0}, Config{2, 8, 0, 0}, Config{1, 16, 0, 1}}) {
            int smem_max = 0;
            CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
            const size_t fixed = persist_smem(c.nw, 0);
            const uint32_t stages = (uint32_t)std::min<size_t>(24, (smem_max / (2 * c.per_sm) - 1024 - fixed) / (PS_STAGE + 16));
            const size_t bytes = fixed + stages * (PS_STAGE + 16);
            using Kernel = void (*)(const Phase*, int, Inputs, uint32_t*, uint32_t);
            Kernel kernel = c.mode == 1 ? gemv_persist<16, 2, 1, true>
                            : c.nw == 16 ? gemv_persist<16, 2, 0, true>
                            : c.per_sm == 1 ? gemv_persist<8, 2, 0, true> : gemv_persist<8, 4, 0, true>;
            CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
            int fits = 0;
            CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fits, kernel, (c.nw + 1) * 32, bytes));
            if (stages < 2 || fits < 2 * c.per_sm) {
                std::printf("ring chain, %d x %d warps per SM: %u stages, only %d blocks fit\n", c.per_sm, c.nw, stages,
                            fits);
                continue;
            }
            const int grid = sms * c.per_sm;
            cudaGraph_t graph;
            cudaGraphExec_t exec;
            CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            for (size_t q = 0; q < chain.size(); ++q)
                launch_pdl(kernel, dim3(grid), dim3((c.nw + 1) * 32), bytes, s, (const Phase*)(d_chain + q), 1, in,
                           arrived, stages);
            CHECK(cudaStreamEndCapture(s, &graph));
            CHECK(cudaGraphInstantiate(&exec, graph, 0));
            const float m = time_us(s, e0, e1, [&] { CHECK(cudaMemsetAsync(y, 0xFF, 4 * 22016 * 4, s)); },
                                    [&] { CHECK(cudaGraphLaunch(exec, s)); });
            CHECK(cudaMemcpy(y_now.data(), y, y_now.size() * 4, cudaMemcpyDeviceToHost));
            const double worst = max_rel_l2(y_now, y_ref);
            std::printf("ring chain    , %d x %2d warps per SM, %2u stages of %u KB %8.1f us per step (%5.0f GB/s)",
                        c.per_sm, c.nw, stages, PS_STAGE / 1024, m, (wbytes + sbytes) / m / 1e3);
            if (c.mode) std::printf(", xor only (a timing bound)\n");
            else std::printf("  outputs vs the engine-like kernel: max rel L2 %.2e%s\n", worst, worst < 1e-5 ? "" : "  MISMATCH");
            CHECK(cudaGraphExecDestroy(exec));
            CHECK(cudaGraphDestroy(graph));
        }
    }
    return 0;
}

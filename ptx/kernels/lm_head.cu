// The language-model head for one row: final RMSNorm, logits = x · W_lm^T over fp16 weights [vocab][hidden],
// and (optionally) the greedy argmax, all in one launch.
//
// Why this shape. The head is the largest single matrix of a decode step (64000 × 4096 fp16 = 524 MB for
// Baichuan-7B), read once: a warp owns 4 vocabulary rows at a time and streams them 16 bytes per lane, each lane
// keeping the next k-step's 4 loads in flight while it multiplies this one's; the normalized input sits in shared
// memory as f32 (the dot products are f32). The argmax is fused: each block writes its best (logit, id), and the
// last block to finish reduces those in block order — a fixed order, ties to the smaller id, NaN never chosen — so
// greedy decoding needs no extra launch and no copy of the logits to the host.
#include "tiles.cuh"  // HALF_INPUT_SCALE: the decode step's half input
#include <cuda_fp16.h>

struct LmHeadParams {
    const __half* w;        // [vocab][k]
    const float* x;         // the residual-stream row to project, f32 [k] (where x16 is null)
    const __half* norm_w;   // final RMSNorm weight [k] (where x16 is null)
    // Decode: null, or the half input the last residual update wrote (x · norm_w · HALF_INPUT_SCALE in fp16, see
    // tiles.cuh) and the n_ssq partial sums of squares of x it left, read instead of x and norm_w.
    const __half* x16;
    const float* ssq;
    float* logits;          // [vocab]
    float* part_val;        // [gridDim.x] best logit of each block
    uint32_t* part_idx;     // [gridDim.x] its id
    uint32_t* counter;      // one word, zero at rest (reset by the last block)
    uint32_t* token_out;    // argmax destination; null = logits only
    uint32_t vocab;
    uint32_t k;             // a multiple of 8
    uint32_t rows_per_block;
    uint32_t n_ssq;
    float eps;
};

namespace lmhead {

constexpr int WARPS = 8;
constexpr int ROWS = 4;  // vocabulary rows per warp pass

// (value, id) order for the argmax: larger value first, then smaller id; NaN ranks below everything.
ENGINE_DEV bool better(float v, uint32_t i, float bv, uint32_t bi) {
    if (v != v) return false;
    if (bv != bv) return true;
    return v > bv || (v == bv && i < bi);
}

ENGINE_DEV void block_best(float& v, uint32_t& i, float* sv, uint32_t* si) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(ov, oi, v, i)) v = ov, i = oi;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = v, si[warp] = i;
    __syncthreads();
    v = sv[0], i = si[0];
    for (int w = 1; w < WARPS; ++w)
        if (better(sv[w], si[w], v, i)) v = sv[w], i = si[w];
    __syncthreads();
}

// The normalized input row from the f32 residual stream and the norm weight (prefill rows): x is staged and its sum
// of squares reduced, then each thread scales the float4s it staged itself (so no barrier is needed between the
// passes) with the norm weight's four halves loaded 8 bytes at a time. 16-byte loads, four per thread in flight
// before the first is used: every block pays this prologue before it streams.
ENGINE_DEV void stage_normalized(const LmHeadParams& p, float* xs, float* scratch) {
    const uint32_t k4 = p.k / 4;
    const float4* x4 = reinterpret_cast<const float4*>(p.x);
    float4* xs4 = reinterpret_cast<float4*>(xs);
    float ss = 0.f;
    for (uint32_t base = threadIdx.x; base < k4; base += blockDim.x * 4) {
        float4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            v[u] = i < k4 ? x4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k4) xs4[i] = v[u];
            ss += v[u].x * v[u].x + v[u].y * v[u].y + v[u].z * v[u].z + v[u].w * v[u].w;
        }
    }
    const float inv_rms = rsqrtf(block_sum<WARPS>(ss, scratch) / (float)p.k + p.eps);
    for (uint32_t base = threadIdx.x; base < k4; base += blockDim.x * 4) {
        uint2 w[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k4) w[u] = reinterpret_cast<const uint2*>(p.norm_w)[i];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k4) {
                const float2 w01 = __half22float2(*reinterpret_cast<const __half2*>(&w[u].x));
                const float2 w23 = __half22float2(*reinterpret_cast<const __half2*>(&w[u].y));
                float4 v = xs4[i];
                v.x *= inv_rms * w01.x, v.y *= inv_rms * w01.y, v.z *= inv_rms * w23.x, v.w *= inv_rms * w23.y;
                xs4[i] = v;
            }
        }
    }
    __syncthreads();
}

// The normalized input row from the decode step's half input (x16, the norm weight folded in) and the partial sums
// of squares the last residual update left (one per tile of its columns). Why: 8 KB (7B) of fp16 and 1 KB of
// partials, loaded in one breath, where the f32 path loads 16 KB of x, reduces, then loads 8 KB of norm weight: one
// L2 round trip per block instead of two, and a third of the bytes, in front of each of the head's ~1000 blocks (the
// fused-norm GEMVs' half input, the same way; measured: BENCHMARKS.md).
ENGINE_DEV void stage_half_input(const LmHeadParams& p, float* xs, float* scratch) {
    const uint32_t k8 = p.k / 8;
    const uint4* x8 = reinterpret_cast<const uint4*>(p.x16);
    constexpr int IN_FLIGHT = 4;
    uint4 v[IN_FLIGHT];
    auto load_round = [&](uint32_t base) {
#pragma unroll
        for (int u = 0; u < IN_FLIGHT; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i < k8) v[u] = x8[i];
        }
    };
    // The first round's words and the partials are loaded before the reduction's barriers.
    load_round(threadIdx.x);
    float ss = 0.f;
    for (uint32_t i = threadIdx.x; i < p.n_ssq; i += blockDim.x) ss += p.ssq[i];
    const float scale = rsqrtf(block_sum<WARPS>(ss, scratch) / (float)p.k + p.eps) * (1.f / HALF_INPUT_SCALE);
    for (uint32_t base = threadIdx.x; base < k8; base += blockDim.x * IN_FLIGHT) {
        if (base != threadIdx.x) load_round(base);  // K past IN_FLIGHT words per thread (8192 at 256 threads)
#pragma unroll
        for (int u = 0; u < IN_FLIGHT; ++u) {
            const uint32_t i = base + u * blockDim.x;
            if (i >= k8) break;
            const __half2* h = reinterpret_cast<const __half2*>(&v[u]);
            const float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
            const float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
            reinterpret_cast<float4*>(xs)[2 * i] = make_float4(f0.x * scale, f0.y * scale, f1.x * scale, f1.y * scale);
            reinterpret_cast<float4*>(xs)[2 * i + 1] =
                make_float4(f2.x * scale, f2.y * scale, f3.x * scale, f3.y * scale);
        }
    }
    __syncthreads();
}

// Chunk c (16 bytes) of vocabulary rows r .. r + ROWS − 1; rows past the vocabulary are clamped to its last (computed,
// never stored).
ENGINE_DEV void load_rows(const LmHeadParams& p, uint32_t r, uint32_t c, uint4 (&wv)[ROWS]) {
#pragma unroll
    for (int j = 0; j < ROWS; ++j) {
        const uint32_t row = min(r + j, p.vocab - 1);
        wv[j] = ldg_stream_v4(reinterpret_cast<const uint4*>(p.w + (size_t)row * p.k) + c);
    }
}

}  // namespace lmhead

// Block: 256 threads; shared memory k * 4 bytes (+ a little static). Grid: ceil(vocab / rows_per_block), with
// rows_per_block a multiple of 32 (8 warps × 4 rows).
extern "C" __global__ void __launch_bounds__(256) lm_head_f16(const LmHeadParams p) {
    extern __shared__ __align__(16) float xs[];
    __shared__ float sv[lmhead::WARPS];
    __shared__ uint32_t si[lmhead::WARPS];
    __shared__ bool is_last;
    using namespace lmhead;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t row0 = blockIdx.x * p.rows_per_block;
    const uint32_t row_end = min(p.vocab, row0 + p.rows_per_block);
    const uint32_t k16 = p.k / 8;  // 16-byte chunks per row
    // The head's weights never change, so each lane's first chunks go out before the wait for the previous kernel
    // and the staging of x: their DRAM latency hides behind those instead of following them.
    uint4 wv[ROWS];
    if (row0 + warp * ROWS < row_end && (uint32_t)lane < k16) load_rows(p, row0 + warp * ROWS, lane, wv);
    pdl_wait();
    pdl_launch_dependents();

    if (p.x16) stage_half_input(p, xs, sv);
    else stage_normalized(p, xs, sv);

    float best_v = __int_as_float(0x7fc00000);  // NaN: "nothing yet"
    uint32_t best_i = 0xFFFFFFFFu;
    for (uint32_t r = row0 + warp * ROWS; r < row_end; r += WARPS * ROWS) {
        float acc[ROWS] = {0.f, 0.f, 0.f, 0.f};
        for (uint32_t c = lane; c < k16; c += 32) {
            // The next chunks (of these rows, or the warp's next rows) in flight while these are multiplied.
            uint32_t nc = c + 32, nr = r;
            if (nc >= k16) nc = lane, nr = r + WARPS * ROWS;
            uint4 next[ROWS];
            if (nr < row_end) load_rows(p, nr, nc, next);
            const float4 x0 = reinterpret_cast<const float4*>(xs)[2 * c];
            const float4 x1 = reinterpret_cast<const float4*>(xs)[2 * c + 1];
            const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
            for (int j = 0; j < ROWS; ++j) {
                const __half2* h = reinterpret_cast<const __half2*>(&wv[j]);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float2 f = __half22float2(h[e]);
                    acc[j] += f.x * xv[2 * e] + f.y * xv[2 * e + 1];
                }
            }
#pragma unroll
            for (int j = 0; j < ROWS; ++j) wv[j] = next[j];
        }
#pragma unroll
        for (int j = 0; j < ROWS; ++j) {
            const float v = warp_reduce_sum(acc[j]);
            const uint32_t row = r + j;
            if (row < row_end) {
                if (lane == 0) p.logits[row] = v;
                if (better(v, row, best_v, best_i)) best_v = v, best_i = row;
            }
        }
    }
    if (p.token_out == nullptr) return;

    block_best(best_v, best_i, sv, si);
    if (threadIdx.x == 0) {
        p.part_val[blockIdx.x] = best_v;
        p.part_idx[blockIdx.x] = best_i;
    }
    // The last block to arrive reduces every block's best in block order.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(p.counter, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    float v = __int_as_float(0x7fc00000);
    uint32_t i = 0xFFFFFFFFu;
    for (uint32_t b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
        const float bv = __ldcg(&p.part_val[b]);
        const uint32_t bi = __ldcg(&p.part_idx[b]);
        if (better(bv, bi, v, i)) v = bv, i = bi;
    }
    block_best(v, i, sv, si);
    if (threadIdx.x == 0) {
        // Every logit NaN: fall back to id 0 rather than an id outside the vocabulary.
        *p.token_out = i == 0xFFFFFFFFu ? 0u : i;
        *p.counter = 0;
    }
}

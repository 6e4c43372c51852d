// SwiGLU of prefill rows: h = silu(gate) * up, from the gate/up GEMM's output [rows][gate | up].
//
// Decode fuses this into the gate/up GEMV's epilogue (gemv.cu). The down projection's act-order permutation,
// when there is one, is applied on the way in: output k' is column perm[k'] (null: k' itself). Each thread loads its
// 8 columns' permutation entries in two 16-byte loads and then all 16 gathered values at once (two round trips,
// not two per column; the row's gate/up values are in L1 after the first touches), and stores 16 bytes. (Scattered
// 2-byte stores through the inverse permutation were measured 5x slower at 512 rows: every store a partial sector.)
// The columns of a row are spread over grid.y blocks: with one block per row the loop waited a memory round trip
// per 256 columns (43 of them for 11008: ~14 µs, measured, for a 16-row prompt). Each thread takes 8 columns with
// 16-byte loads (and stores, in place) — a 512-row prompt moves 34 MB through this kernel.
// With the 128-row weights-in-registers GEMM next, h is written in that tile's K order (k_order.cuh), zero-padded
// to the down projection's k_pad columns: each 16-byte output chunk then takes two halves of each of four input
// chunks, picked by byte permutes, and the GEMM needs no rearranging pass over its input.
#include "common.cuh"
#include "k_order.cuh"
#include <cuda_fp16.h>

struct SwigluParams {
    const __half* gu;       // [rows][2 * inter]: gate | up
    __half* h;              // [rows][ldh]; h[r][j] is column perm[k] (k = j, or korder::source(j) with k_steps)
    const uint32_t* perm;   // the down projection's act-order row order; may be null
    uint32_t inter;
    uint32_t ldh;           // columns of a row of h: inter, or the down projection's k_pad with k_steps
    uint32_t k_steps;       // nonzero: h in the weights-in-registers K order, zero where k ≥ inter
};

// Grid: (rows, ceil(inter / 2048)); 256 threads. Block y of a row covers columns [2048 y, 2048 (y + 1)), stepping
// by 2048 · gridDim.y.
extern "C" __global__ void __launch_bounds__(256) swiglu_rows(const SwigluParams a) {
    const __half* gu = a.gu;
    __half* h = a.h;
    const uint32_t* perm = a.perm;
    const uint32_t inter = a.inter;
    pdl_wait();
    pdl_launch_dependents();
    const __half* g = gu + (size_t)blockIdx.x * 2 * inter;
    __half* o = h + (size_t)blockIdx.x * a.ldh;
    const uint32_t per_block = 8 * blockDim.x;
    const bool vec = inter % 8 == 0;  // 16-byte aligned: a row starts at a multiple of 2 · inter halves
    for (uint32_t c0 = blockIdx.y * per_block + 8 * threadIdx.x; c0 < a.ldh; c0 += gridDim.y * per_block) {
        if (a.k_steps && perm == nullptr && vec) {
            // Output chunk q of its step: pair j from natural chunk 2 j + q % 2 of gate and of up (zero past inter).
            const uint32_t step = c0 / korder::STEP, q = (c0 % korder::STEP) / 8;
            const uint4* gc = reinterpret_cast<const uint4*>(g);
            const uint4* uc = reinterpret_cast<const uint4*>(g + inter);
            uint32_t gw[4], uw[4];  // pair j of the output chunk, as picked from gate's and up's natural chunks
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const uint32_t src = 8 * step + korder::natural_chunk(q, j);
                const bool in = src < inter / 8;
                gw[j] = korder::pick(in ? gc[src] : make_uint4(0u, 0u, 0u, 0u), q);
                uw[j] = korder::pick(in ? uc[src] : make_uint4(0u, 0u, 0u, 0u), q);
            }
            uint32_t out[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float2 gf = __half22float2(u32_as_half2(gw[j])), uf = __half22float2(u32_as_half2(uw[j]));
                out[j] = half2_as_u32(__floats2half2_rn(silu_times(gf.x, uf.x), silu_times(gf.y, uf.y)));
            }
            *reinterpret_cast<uint4*>(o + c0) = make_uint4(out[0], out[1], out[2], out[3]);
        } else if (a.k_steps) {
            for (uint32_t i = c0; i < min(c0 + 8, a.ldh); ++i) {
                const uint32_t k = korder::source(i);
                if (k >= inter) {
                    o[i] = __float2half_rn(0.f);
                    continue;
                }
                const uint32_t src = perm ? perm[k] : k;
                o[i] = __float2half_rn(silu_times(__half2float(g[src]), __half2float(g[inter + src])));
            }
        } else if (c0 + 8 <= inter && vec) {
            // 16-byte aligned: the row starts at a multiple of 2 · inter halves and c0 is a multiple of 8.
            float gv[8], uv[8];
            if (perm == nullptr) {
                const uint4 gq = *reinterpret_cast<const uint4*>(g + c0);
                const uint4 uq = *reinterpret_cast<const uint4*>(g + inter + c0);
                const __half2* gh = reinterpret_cast<const __half2*>(&gq);
                const __half2* uh = reinterpret_cast<const __half2*>(&uq);
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const float2 gf = __half22float2(gh[i]), uf = __half22float2(uh[i]);
                    gv[2 * i] = gf.x, gv[2 * i + 1] = gf.y, uv[2 * i] = uf.x, uv[2 * i + 1] = uf.y;
                }
            } else {
                const uint4 pa = __ldg(reinterpret_cast<const uint4*>(perm + c0));
                const uint4 pb = __ldg(reinterpret_cast<const uint4*>(perm + c0 + 4));
                const uint32_t src[8] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
                for (int i = 0; i < 8; ++i) gv[i] = __half2float(g[src[i]]), uv[i] = __half2float(g[inter + src[i]]);
            }
            uint4 out;
            __half2* oh = reinterpret_cast<__half2*>(&out);
#pragma unroll
            for (int i = 0; i < 4; ++i) oh[i] = __floats2half2_rn(silu_times(gv[2 * i], uv[2 * i]),
                                                                  silu_times(gv[2 * i + 1], uv[2 * i + 1]));
            *reinterpret_cast<uint4*>(o + c0) = out;
        } else {
            for (uint32_t i = c0; i < min(c0 + 8, inter); ++i) {
                const uint32_t src = perm ? perm[i] : i;
                o[i] = __float2half_rn(silu_times(__half2float(g[src]), __half2float(g[inter + src])));
            }
        }
    }
}

// Rotary embedding and KV-cache append for prefill rows.
//
// Decode does this in the q/k/v GEMV's epilogue (gemv.cu), and chunks of at most 16 rows on the short wgmma tile in
// its epilogue (gemm_wgmma_short.cu, with rope.cuh's arithmetic). Otherwise in prefill the GEMM writes q/k/v rows to
// memory first and this pass rotates q and k (Hugging Face rotate_half: dimension i pairs with i + head_dim/2) and
// moves k and v into the cache at their positions. Angles come from the host-computed f64 tables, so long positions
// keep their precision.
// The work of a row is cut into units of 8 rotary pairs (or 8 value elements), one per thread, so that every access
// is 16 bytes wide and a warp's touch 512 contiguous bytes: with one pair per thread and 2-byte accesses a 512-row
// prompt took 16.6 µs per layer on an H200 for 25 MB. (Earlier layouts, measured: a block walking a whole row waited
// a memory round trip per 128 pairs; one block per head made a 512-row prompt 49k tiny blocks.)
#include "rope.cuh"

// Pairs or elements per unit where a half head is a multiple of it (head_dim 16 and up); else units of one.
#define ROPE_VEC 8

// Grid: (rows, slices); 256 threads. A row's units are first (heads + kv_heads) · half_dim / v rotary units — v
// pairs (i, i + half_dim) of q head y, then of k head y - heads (rotated and appended) — then kv_heads · head_dim / v
// value units (appended), v = ROPE_VEC or 1; block y of a row takes units 256 y + t, stepping by 256 · gridDim.y,
// so any grid.y works.
extern "C" __global__ void __launch_bounds__(256) rope_kv_rows(const RopeParams a) {
    const uint32_t q_dim = a.q_dim, kv_dim = a.kv_dim, head_dim = a.head_dim, ctx = a.ctx;
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t row = blockIdx.x, pos = *a.pos0 + row, half_dim = head_dim / 2;
    const uint32_t heads = q_dim / head_dim, kv_heads = kv_dim / head_dim;
    const __half* src = a.qkv + (size_t)row * (q_dim + 2 * kv_dim);
    const float* cs = a.rope_cos + (size_t)pos * half_dim;
    const float* sn = a.rope_sin + (size_t)pos * half_dim;
    // 16-byte aligned wherever a unit is 8 wide: rows, heads and cache slots start at multiples of head_dim ≥ 16
    // halves, table rows at multiples of half_dim ≥ 8 floats.
    const bool vec = half_dim % ROPE_VEC == 0;
    const uint32_t per = vec ? ROPE_VEC : 1;
    const uint32_t rot_per_head = half_dim / per, rot_units = (heads + kv_heads) * rot_per_head;
    const uint32_t units = rot_units + kv_heads * (head_dim / per);
    for (uint32_t u = blockIdx.y * blockDim.x + threadIdx.x; u < units; u += gridDim.y * blockDim.x) {
        if (u < rot_units) {
            const uint32_t y = u / rot_per_head, i = (u % rot_per_head) * per;
            const __half* s = src + (size_t)y * head_dim;
            __half* dst = y < heads ? a.q_out + (size_t)row * q_dim + y * head_dim
                                    : cache_slot(a.k_cache, y - heads, ctx, pos, head_dim);
            if (vec) {
                const uint4 lo = *reinterpret_cast<const uint4*>(s + i);
                const uint4 hi = *reinterpret_cast<const uint4*>(s + i + half_dim);
                const float4 c[2] = {*reinterpret_cast<const float4*>(cs + i), *reinterpret_cast<const float4*>(cs + i + 4)};
                const float4 sv[2] = {*reinterpret_cast<const float4*>(sn + i), *reinterpret_cast<const float4*>(sn + i + 4)};
                const __half2* l2 = reinterpret_cast<const __half2*>(&lo);
                const __half2* h2 = reinterpret_cast<const __half2*>(&hi);
                uint4 out_lo, out_hi;
                __half2* ol = reinterpret_cast<__half2*>(&out_lo);
                __half2* oh = reinterpret_cast<__half2*>(&out_hi);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float2 x0 = __half22float2(l2[j]), x1 = __half22float2(h2[j]);
                    const float4& cj = c[j / 2];
                    const float4& sj = sv[j / 2];
                    const float ca = (j & 1) ? cj.z : cj.x, cb = (j & 1) ? cj.w : cj.y;
                    const float sa = (j & 1) ? sj.z : sj.x, sb = (j & 1) ? sj.w : sj.y;
                    const float2 ra = rotate(x0.x, x1.x, ca, sa), rb = rotate(x0.y, x1.y, cb, sb);
                    ol[j] = __floats2half2_rn(ra.x, rb.x);
                    oh[j] = __floats2half2_rn(ra.y, rb.y);
                }
                *reinterpret_cast<uint4*>(dst + i) = out_lo;
                *reinterpret_cast<uint4*>(dst + i + half_dim) = out_hi;
            } else {
                const float2 r = rotate(__half2float(s[i]), __half2float(s[i + half_dim]), cs[i], sn[i]);
                dst[i] = __float2half_rn(r.x);
                dst[i + half_dim] = __float2half_rn(r.y);
            }
        } else {
            const uint32_t v = u - rot_units, vh = v / (head_dim / per), d = (v % (head_dim / per)) * per;
            const __half* s = src + q_dim + kv_dim + (size_t)vh * head_dim + d;
            __half* dst = cache_slot(a.v_cache, vh, ctx, pos, head_dim) + d;
            if (vec) {
                *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(s);
            } else {
                *dst = *s;
            }
        }
    }
}

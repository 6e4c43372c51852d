// Causal attention of a prefill chunk on the tensor cores (FlashAttention-2 style), for head_dim 64 and 128.
// Same contract as attn_prefill (attention.cu): q is [rows][heads * head_dim] fp16, already rotated; the layer's
// k/v caches are [kv_heads][ctx][head_dim] and already hold every row of the chunk; row r sits at position
// *pos + r and attends to positions 0 ..= *pos + r (positions before *pos come from earlier chunks). The output
// is normalized fp16 [rows][heads * head_dim].
//
// Why this shape. attn_prefill gives each query row its own block and re-reads every key and value of the row's
// context on the CUDA cores: a 512-row chunk reads the head's cache 512 times. Here a block takes 64 query rows of
// one head, so each key/value tile is read once per 64 rows, and both products run on mma.sync.m16n8k16:
//   - 4 warps × 16 query rows. A warp's Q fragments (16 × head_dim) are loaded once into registers with ldmatrix
//     and stay there for the whole pass;
//   - the block walks the keys in tiles of 64 positions, from 0 up to the last position its last row needs.
//     K and V tiles are copied into shared memory with cp.async, double-buffered: tile t + 1's copy is in flight
//     while tile t is multiplied;
//   - S = Q·Kᵀ per warp (16 × 64 in f32 registers). K is stored [pos][dim], which is exactly the "col" layout
//     of the B operand, so a plain ldmatrix feeds it;
//   - online softmax in registers, in the log2 domain (scale_log2 folds 1/sqrt(hd) with log2(e), so each
//     exponential is one ex2): the row max and the rescale are per tile, reduced over the 4 lanes of a quad that
//     share a row; the row sum stays per lane until the end (every lane of a quad rescales by the same factor);
//   - the m16n8 accumulator layout of two adjacent n8 tiles of S is the A-fragment layout of one k16 step, so P
//     becomes the A operand of O += P·V by packing to f16 in registers, without a trip through shared memory.
//     V, stored [pos][dim] = k-major, is the transposed B operand: ldmatrix.trans;
//   - causality: a tile past a warp's last row is skipped by that warp; a tile that reaches past the warp's first
//     row is masked per element (score -inf). Every row has position 0 in tile 0, so a row's running max is finite
//     from tile 0 on; the -inf guards are there for the padding rows of the last tile and for robustness.
// Shared-memory rows are padded by 8 halves (16 bytes): the 8 row addresses of each ldmatrix then fall in 8
// distinct 4-bank groups (stride 36 or 68 words ≡ 4 mod 32), so ldmatrix is conflict-free.
// The tile order, the reductions and the accumulation order are fixed, so the result is the same bits every run.
#include "attn_params.cuh"
#include "tensor_core.cuh"
#include "k_order.cuh"
#include "frag16.cuh"
#include <cuda_fp16.h>

namespace attn_tc {

constexpr int BM = 64;  // query rows per block (16 per warp)
constexpr int BN = 64;  // key positions per tile
constexpr int THREADS = 128;
#define ATTN_TC_NEG_INF (-__int_as_float(0x7f800000))

// K and V tiles, double-buffered. The Q tile is staged in v[1] before the loop (v[1] is first written by the copy
// of tile 1, issued after every warp has its Q fragments), and the output tile in k[0] after the loop: 4 tiles in
// all, 69632 bytes for head_dim 128 instead of 87040 with a Q tile of its own. That is what lets two blocks share
// an A100 SM (164 KB); on H100/H200 the registers (~228 per thread) allow two blocks per SM either way.
template <int D>
struct Smem {
    __half k[2][BN][D + 8];
    __half v[2][BN][D + 8];
};

template <int D>
ENGINE_DEV void run(const AttnParams& p) {
    constexpr int CPR = D / 8;   // 16-byte chunks per row
    static_assert(D % korder::STEP == 0, "order 1 keeps the K order's permutation inside a head");
    constexpr int KD = D / 16;   // k16 steps of Q·Kᵀ over the head dim
    constexpr int NO = D / 8;    // n8 tiles of O over the head dim
    constexpr int NS = BN / 8;   // n8 tiles of S over a key tile
    extern __shared__ __align__(16) unsigned char attn_tc_smem[];
    Smem<D>& s = *reinterpret_cast<Smem<D>*>(attn_tc_smem);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const uint32_t h = blockIdx.x;
    // The last row tile has the most keys to walk: blocks are numbered so that it starts first, and the short
    // tiles fill in behind the long ones instead of leaving a long tail.
    const uint32_t r0 = (gridDim.y - 1 - blockIdx.y) * BM;
    const uint32_t rows = p.rows;
    const uint32_t kvh = h / (p.heads / p.kv_heads);

    pdl_wait();
    const uint32_t pos0 = *p.pos;
    const uint32_t r_end = min(r0 + BM, rows);          // one past the block's last row
    const uint32_t kv_len = pos0 + r_end;               // the block needs positions [0, kv_len)
    const uint32_t kv_fill = min(kv_len, p.ctx);        // copied; the rest of a tile is zero-filled
    const uint32_t n_tiles = (kv_len + BN - 1) / BN;
    const uint32_t wr0 = r0 + warp * 16;                // the warp's first row
    const bool active = wr0 < rows;                     // else the warp only helps copy and sync
    const uint32_t lim_lo = pos0 + wr0;                 // last position of the warp's first row
    const uint32_t lim_hi = pos0 + min(wr0 + 15, rows - 1);  // ... and of its last real row
    const uint32_t lim_g = pos0 + wr0 + g;              // ... of this lane's rows g and g + 8 (+ 8)

    const __half* kbase = p.k_cache + (size_t)kvh * p.ctx * D;
    const __half* vbase = p.v_cache + (size_t)kvh * p.ctx * D;
    // Positions at or past kv_fill are zero-filled, not read: the cache past the chunk may hold anything (stale
    // values, or NaN in the tests), and a zero V keeps 0 · garbage out of O.
    auto load_kv = [&](int buf, uint32_t kt) {
#pragma unroll
        for (int i = 0; i < BN * CPR / THREADS; ++i) {
            const int chunk = tid + i * THREADS;
            const int r = chunk / CPR, c = (chunk % CPR) * 8;
            const uint32_t pos = kt * BN + r;
            const bool ok = pos < kv_fill;
            const size_t off = ok ? (size_t)pos * D + c : 0;
            tc::cp_async16(&s.k[buf][r][c], kbase + off, ok ? 16u : 0u);
            tc::cp_async16(&s.v[buf][r][c], vbase + off, ok ? 16u : 0u);
        }
    };

    // Prologue: the Q tile (rows past `rows` zero-filled) into v[1] and key tile 0 into buffer 0, one group.
#pragma unroll
    for (int i = 0; i < BM * CPR / THREADS; ++i) {
        const int chunk = tid + i * THREADS;
        const int r = chunk / CPR, c = (chunk % CPR) * 8;
        const uint32_t row = r0 + r;
        const bool ok = row < rows;
        const size_t off = ok ? ((size_t)row * p.heads + h) * D + c : 0;
        tc::cp_async16(&s.v[1][r][c], p.q + off, ok ? 16u : 0u);
    }
    load_kv(0, 0);
    tc::cp_async_commit();
    tc::cp_async_wait<0>();
    __syncthreads();

    // Q fragments of the warp's 16 rows: for k step kd, matrices (rows 0-7 | 8-15) × (dims 16kd + 0-7 | 8-15) in
    // the order a[0..3] wants: lanes 0-15 address rows 0-15 at dim 16kd, lanes 16-31 the same rows at 16kd + 8.
    uint32_t qf[KD][4];
#pragma unroll
    for (int kd = 0; kd < KD; ++kd) tc::ldmatrix_x4(qf[kd], &s.v[1][warp * 16 + (lane & 15)][kd * 16 + (lane >> 4) * 8]);

    float o[NO][4];
#pragma unroll
    for (int j = 0; j < NO; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[j][e] = 0.f;
    // Running max of the raw scores (rows g and g + 8; the same in the 4 lanes of a quad) and this lane's share
    // of the running sum of exp2.
    float m[2] = {ATTN_TC_NEG_INF, ATTN_TC_NEG_INF};
    float l[2] = {0.f, 0.f};
    const float scale = p.scale_log2;

    for (uint32_t kt = 0; kt < n_tiles; ++kt) {
        const int buf = kt & 1;
        // Tile kt has landed for every thread, and every warp is done with buffer buf ^ 1 (tile kt - 1, or for
        // kt = 0 the Q staging area), which the copy below overwrites.
        tc::cp_async_wait<0>();
        __syncthreads();
        if (kt + 1 < n_tiles) load_kv(buf ^ 1, kt + 1);
        tc::cp_async_commit();

        const uint32_t kpos0 = kt * BN;
        if (!active || kpos0 > lim_hi) continue;  // warp-uniform: every position of the tile is masked for the warp

        // S = Q·Kᵀ. B operand of n8 tile j (keys 8j .. 8j+7): b[0] = the 8 × 8 matrix (keys, dims 16kd + 0-7),
        // b[1] = (keys, dims 16kd + 8-15), row-major as stored. One x4 covers two n8 tiles: lanes 0-7 keys
        // 16nj + 0-7 at dim +0, lanes 8-15 the same keys at dim +8, lanes 16-31 keys 16nj + 8-15 likewise.
        float sc[NS][4];
#pragma unroll
        for (int j = 0; j < NS; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) sc[j][e] = 0.f;
#pragma unroll
        for (int kd = 0; kd < KD; ++kd) {
#pragma unroll
            for (int nj = 0; nj < NS / 2; ++nj) {
                uint32_t kf[4];
                const int key = nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                const int dim = kd * 16 + ((lane >> 3) & 1) * 8;
                tc::ldmatrix_x4(kf, &s.k[buf][key][dim]);
                tc::mma_16816(sc[2 * nj], qf[kd], kf[0], kf[1]);
                tc::mma_16816(sc[2 * nj + 1], qf[kd], kf[2], kf[3]);
            }
        }

        // Causal mask: sc[j][e] is row g + 8 (e / 2), position kpos0 + 8j + 2t4 + e % 2. Only tiles that reach past
        // the warp's first row need it (at most two per warp, as pos0 need not be a multiple of 64).
        if (kpos0 + BN - 1 > lim_lo) {
#pragma unroll
            for (int j = 0; j < NS; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const uint32_t pos = kpos0 + j * 8 + 2 * t4 + (e & 1);
                    if (pos > lim_g + (e >> 1) * 8) sc[j][e] = ATTN_TC_NEG_INF;
                }
        }

        // Online softmax. New max per row over the tile, shared by the quad (lanes 4g .. 4g+3).
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int j = 0; j < NS; ++j) {
            mx[0] = fmaxf(mx[0], fmaxf(sc[j][0], sc[j][1]));
            mx[1] = fmaxf(mx[1], fmaxf(sc[j][2], sc[j][3]));
        }
        float ms[2];  // the new max in the log2 domain, 0 for a row with nothing valid yet (no -inf - -inf)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
            ms[i] = mx[i] == ATTN_TC_NEG_INF ? 0.f : mx[i] * scale;
            // exp2(-inf) = 0 when the old max was -inf (l and o are still 0 then).
            const float alpha = exp2f(m[i] * scale - ms[i]);
            m[i] = mx[i];
            l[i] *= alpha;
#pragma unroll
            for (int j = 0; j < NO; ++j) {
                o[j][2 * i] *= alpha;
                o[j][2 * i + 1] *= alpha;
            }
        }
        // P = exp2(s · scale − max), one FFMA and one ex2 per score; masked scores give exp2(-inf) = 0.
#pragma unroll
        for (int j = 0; j < NS; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                sc[j][e] = exp2f(fmaf(sc[j][e], scale, -ms[e >> 1]));
                l[e >> 1] += sc[j][e];
            }

        // O += P·V. A operand of k step kk (keys 16kk .. 16kk+15) = S tiles 2kk (a[0], a[1]) and 2kk + 1 (a[2],
        // a[3]), as f16. B operand of n8 tile dn (dims 8dn .. 8dn+7): b[0] = keys 16kk + 0-7, b[1] = keys
        // 16kk + 8-15, each the transpose of the stored 8 × 8 block (keys, dims). One x4.trans covers two n8
        // tiles: lanes 0-15 address keys 16kk + 0-15 at dim 16dn2, lanes 16-31 the same keys at dim 16dn2 + 8.
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            uint32_t pa[4];
            pa[0] = tc::pack_half2(sc[2 * kk][0], sc[2 * kk][1]);
            pa[1] = tc::pack_half2(sc[2 * kk][2], sc[2 * kk][3]);
            pa[2] = tc::pack_half2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            pa[3] = tc::pack_half2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
            for (int dn2 = 0; dn2 < NO / 2; ++dn2) {
                uint32_t vf[4];
                tc::ldmatrix_x4_trans(vf, &s.v[buf][kk * 16 + (lane & 15)][dn2 * 16 + (lane >> 4) * 8]);
                tc::mma_16816(o[2 * dn2], pa, vf[0], vf[1]);
                tc::mma_16816(o[2 * dn2 + 1], pa, vf[2], vf[3]);
            }
        }
    }

    // Epilogue: every warp is done with both buffers (and no copy is in flight: the last group committed was
    // empty, and all before it were waited for), so k[0] can stage the output. Each warp writes its 16 rows there
    // as f16 in the C layout, then stores them as whole 16-byte chunks (a quad's 4-byte pieces would make each
    // store instruction touch 8 rows). With order 1 each stored chunk is gathered in the K order of o_proj's
    // weights-in-registers tile (a head is D / 64 whole K steps, so the permutation stays inside it); with order 2
    // each natural chunk goes out as the four words of the 16-row tile's fragments (frag16.cuh).
    __syncthreads();
    if (!active) return;
    float inv[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        float sum = l[i];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        inv[i] = 1.f / sum;  // sum >= 1 for a real row: its max contributes exp2(0)
    }
#pragma unroll
    for (int j = 0; j < NO; ++j) {
        *reinterpret_cast<uint32_t*>(&s.k[0][warp * 16 + g][j * 8 + 2 * t4]) =
            tc::pack_half2(o[j][0] * inv[0], o[j][1] * inv[0]);
        *reinterpret_cast<uint32_t*>(&s.k[0][warp * 16 + g + 8][j * 8 + 2 * t4]) =
            tc::pack_half2(o[j][2] * inv[1], o[j][3] * inv[1]);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16 * CPR / 32; ++i) {
        const int chunk = lane + i * 32;
        const int r = chunk / CPR, c = (chunk % CPR) * 8;
        const uint32_t row = wr0 + r;
        if (row < rows) {
            const __half* staged = &s.k[0][warp * 16 + r][0];
            if (p.order == 2) {
                __half v[8];
                *reinterpret_cast<uint4*>(v) = *reinterpret_cast<const uint4*>(staged + c);
                frag16::store_chunk(p.out, row, (h * D + c) / 8, v, p.heads * D);
                continue;
            }
            const uint32_t step0 = c - c % korder::STEP;
            const uint4 v = p.order == 1
                                ? korder::chunk(reinterpret_cast<const uint32_t*>(staged + step0), (c % korder::STEP) / 8)
                                : *reinterpret_cast<const uint4*>(staged + c);
            stg_v4(reinterpret_cast<uint4*>(p.out + ((size_t)row * p.heads + h) * D + c), v);
        }
    }
}

}  // namespace attn_tc

// Block: 128 threads (4 warps × 16 query rows); grid (heads, ceil(rows / 64)); dynamic shared memory
// sizeof(attn_tc::Smem<D>) = 4 × 64 × (D + 8) × 2 bytes: 36864 for head_dim 64, 69632 for 128. `p.rows` is the
// chunk's row count; p.head_dim must be the kernel's D; part_o, part_ml, counters and splits are unused.
extern "C" __global__ void __launch_bounds__(128) attn_prefill_tc64(const AttnParams p) {
    attn_tc::run<64>(p);
}
extern "C" __global__ void __launch_bounds__(128) attn_prefill_tc128(const AttnParams p) {
    attn_tc::run<128>(p);
}

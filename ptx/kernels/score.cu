// Scoring a prefilled window for perplexity: the negative log-likelihood of each row's next token,
// nll[r] = logsumexp(logits[r]) − logits[r][target[r]], without ever storing the logits.
//
// The logits of m rows are an [m × hidden] · [hidden × vocab] product (268 GFLOP for 512 rows of Baichuan-7B):
// done row by row with the decode lm_head it would read the 524 MB head once per row. Here it is one tensor-core
// GEMM over all rows (score_tile), whose epilogue reduces each 64-column tile of logits to a partial (max, sum of
// exp) per row and keeps the target's logit; score_reduce merges the partials of a row. The rows come in
// normalized (rmsnorm_rows with the final norm's weight) as fp16, the head is the checkpoint's fp16 matrix.
//
// Deterministic: every partial is computed in a fixed order and merged in tile order.
#include "common.cuh"
#include "tensor_core.cuh"
#include <cuda_fp16.h>

struct ScoreParams {
    const __half* a;            // [m][lda] normalized rows
    const __half* w;            // [vocab][k] the head
    const uint32_t* targets;    // [m] the token each row predicts; >= vocab: none (nll left as it is)
    float* part;                // [m][n_tiles][2] per 64-column tile: max logit, sum of exp(logit − max)
    float* target_logit;        // [m]
    float* nll;                 // [m]
    uint32_t m;
    uint32_t k;                 // a multiple of 8
    uint32_t lda;               // a multiple of 8
    uint32_t vocab;
    uint32_t n_tiles;           // ceil(vocab / 64)
};

namespace score {

using namespace tc;

constexpr int BM = 64, BN = 64, BK = 64;
constexpr int STAGES = 3;
constexpr int THREADS = 128;  // 2 × 2 warps of 32 rows × 32 columns
constexpr int LDS = BK + 8;   // padded row (halves): ldmatrix rows land in different banks
#define SCORE_NEG_INF (-__int_as_float(0x7f800000))

struct Smem {
    __half a[STAGES][BM][LDS];
    __half w[STAGES][BN][LDS];
    float tile_max[2][BM];  // per warp column: the max of its 32 columns, per row
    float tile_sum[2][BM];
};
// engine/src/backend/cuda/shapes.rs (SCORE_SMEM_BYTES) launches with exactly this much.
static_assert(sizeof(Smem) == 56320, "sizeof(score::Smem) changed: update SCORE_SMEM_BYTES in shapes.rs");

}  // namespace score

// Grid (n_tiles, ceil(m / 64)); 128 threads; dynamic shared memory sizeof(score::Smem) = 56 320 bytes.
extern "C" __global__ void __launch_bounds__(128) score_tile(const ScoreParams p) {
    using namespace score;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    Smem& s = *reinterpret_cast<Smem*>(smem_raw);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp >> 1, warp_n = warp & 1;
    const uint32_t m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const uint32_t steps = (p.k + BK - 1) / BK;
    pdl_wait();
    pdl_launch_dependents();

    // One step: 64 rows of A and 64 rows of W, 64 columns each = 2 × 512 chunks of 16 bytes, 8 per thread.
    auto load_stage = [&](int buf, uint32_t step) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int chunk = tid + i * THREADS;
            const int r = chunk >> 3, c = (chunk & 7) * 8;
            const uint32_t col = step * BK + c;
            const uint32_t arow = m0 + r, wrow = n0 + r;
            const bool a_ok = arow < p.m && col < p.k, w_ok = wrow < p.vocab && col < p.k;
            cp_async16(&s.a[buf][r][c], a_ok ? p.a + (size_t)arow * p.lda + col : p.a, a_ok ? 16u : 0u);
            cp_async16(&s.w[buf][r][c], w_ok ? p.w + (size_t)wrow * p.k + col : p.w, w_ok ? 16u : 0u);
        }
    };

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // Every iteration commits one group (possibly empty), so wait_group<STAGES - 2> means "this step has landed".
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
        if ((uint32_t)i < steps) load_stage(i, i);
        cp_async_commit();
    }
    for (uint32_t step = 0; step < steps; ++step) {
        const int buf = step % STAGES;
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // the step landed for every thread; every warp is done with the stage reloaded below
        if (step + STAGES - 1 < steps) load_stage((step + STAGES - 1) % STAGES, step + STAGES - 1);
        cp_async_commit();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                ldmatrix_x4(af[mi], &s.a[buf][warp_m * 32 + mi * 16 + (lane & 15)][kk + (lane >> 4) * 8]);
            }
#pragma unroll
            for (int nj = 0; nj < 2; ++nj) {
                // Two n8 tiles per ldmatrix.x4: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ...).
                uint32_t bf[4];
                const int n = warp_n * 32 + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(bf, &s.w[buf][n][kk + ((lane >> 3) & 1) * 8]);
#pragma unroll
                for (int mi = 0; mi < 2; ++mi) {
                    mma_16816(acc[mi][2 * nj], af[mi], bf[0], bf[1]);
                    mma_16816(acc[mi][2 * nj + 1], af[mi], bf[2], bf[3]);
                }
            }
        }
    }

    // Epilogue. Lane (g = lane / 4, t = lane % 4) holds, for rows g and g + 8 of each m16 tile, columns 2t and 2t + 1
    // of each n8 tile: 8 columns per row, which the 4 lanes of a quad together extend to the warp's 32. Reduce each
    // row over the quad (fixed xor order), then the two warp columns through shared memory.
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row_l = warp_m * 32 + mi * 16 + h * 8 + g;
            const uint32_t row = m0 + row_l;
            const uint32_t target = row < p.m ? p.targets[row] : 0xFFFFFFFFu;
            float v[8];
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const uint32_t col = n0 + warp_n * 32 + ni * 8 + 2 * t4 + e;
                    v[2 * ni + e] = col < p.vocab ? acc[mi][ni][2 * h + e] : SCORE_NEG_INF;
                    if (col == target && row < p.m) p.target_logit[row] = acc[mi][ni][2 * h + e];
                }
            }
            float mx = SCORE_NEG_INF;
#pragma unroll
            for (int e = 0; e < 8; ++e) mx = fmaxf(mx, v[e]);
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float sum = 0.f;
#pragma unroll
            for (int e = 0; e < 8; ++e) sum += mx == SCORE_NEG_INF ? 0.f : expf(v[e] - mx);
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            if (t4 == 0) s.tile_max[warp_n][row_l] = mx, s.tile_sum[warp_n][row_l] = sum;
        }
    }
    __syncthreads();
    if (tid < BM && m0 + tid < p.m) {
        const float m_a = s.tile_max[0][tid], m_b = s.tile_max[1][tid];
        const float mx = fmaxf(m_a, m_b);
        float sum = 0.f;
        if (mx != SCORE_NEG_INF) sum = s.tile_sum[0][tid] * expf(m_a - mx) + s.tile_sum[1][tid] * expf(m_b - mx);
        float* out = p.part + ((size_t)(m0 + tid) * p.n_tiles + blockIdx.x) * 2;
        out[0] = mx, out[1] = sum;
    }
}

// Grid: m blocks (one per row), 256 threads. Merges the row's tile partials in tile order into its log-sum-exp
// and writes nll[row] = logsumexp − logit[target] (rows without a target are skipped).
extern "C" __global__ void __launch_bounds__(256) score_reduce(const ScoreParams p) {
    __shared__ float red[8];
    __shared__ float row_max;
    pdl_wait();
    pdl_launch_dependents();
    const uint32_t row = blockIdx.x;
    if (row >= p.m || p.targets[row] >= p.vocab) return;
    const float* part = p.part + (size_t)row * p.n_tiles * 2;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float mx = SCORE_NEG_INF;
    for (uint32_t t = threadIdx.x; t < p.n_tiles; t += blockDim.x) mx = fmaxf(mx, part[2 * t]);
    mx = warp_reduce_max(mx);
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = red[0];
        for (int w = 1; w < 8; ++w) m = fmaxf(m, red[w]);
        row_max = m;
    }
    __syncthreads();
    const float m = row_max;
    float sum = 0.f;
    for (uint32_t t = threadIdx.x; t < p.n_tiles; t += blockDim.x) {
        const float tm = part[2 * t];
        if (tm != SCORE_NEG_INF) sum += part[2 * t + 1] * expf(tm - m);
    }
    sum = warp_reduce_sum(sum);
    __syncthreads();
    if (lane == 0) red[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int w = 0; w < 8; ++w) total += red[w];
        p.nll[row] = m + logf(total) - p.target_logit[row];
    }
}

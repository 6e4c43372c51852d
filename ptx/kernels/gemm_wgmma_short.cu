// Prefill GEMM for chunks of at most 16 rows on Hopper's asynchronous tensor cores (sm_90a only), with the weights
// as the multiply's M side, dequantized in registers straight into wgmma's A fragments:
// Yᵀ[slot][row] = Σ_k Wᵀ[slot][k] · Aᵀ[k][row].
//
// Why. A short chunk's GEMM is a stream of weights: 16 rows make 32 flops per weight, a fraction of what the tensor
// cores could do in the time the bytes take, so what decides the time is how many bytes are in flight and how
// little each byte costs on the way. wgmma's M is 64 at least, so the rows of A go on its N side (m64n16k16), and
// its A operand — the weights — can come from registers: no dequantized tile is written to shared memory and read
// back (a version that did so was bound by shared-memory traffic, 12 bytes of it per byte of weights).
//   - 256 threads = 2 warpgroups; warp w owns slot-tile w of the block's 8 (16 slots: wgmma rows 16 (w % 4) .. of
//     its warpgroup's 64) and copies that tile's raw words, one uint4 per lane per step (cp.async, AHEAD steps
//     ahead: the bytes in flight are in shared memory, not in registers, so three blocks fit on an SM);
//   - the fragment mapping. wgmma's A fragment (as mma.m16n8k16's) gives lane (g, t) = (lane / 4, lane % 4) rows g
//     and g + 8 at k = 2t, 2t + 1 (a0, a1) and 2t + 8, 2t + 9 (a2, a3). The sum over k does not care which input
//     row stands behind each k, as long as B agrees, so lane (g, t) takes for each of its two slots the words
//     2 (t % 2) and 2 (t % 2) + 1 of the uint4 lane g + 16 (t / 2) (resp. g + 8 + ...) copied — that slot's input
//     rows 16t .. 16t + 15 of the step — and the dequantized pair i = (row i, row i + 4) of each word goes straight
//     into the k16 block i. So k16 block i, column c holds input row 16 (c' / 2) + 8h + i + 4 (c' % 2), with
//     h = c / 8 and c' = c % 8 (k_order.cuh);
//   - B, the rows of A, must then hold the same permutation: the kernels that produce A write it so (the norms,
//     SwiGLU, attention; `permute_k_steps` where none can), k_pad columns with zeros past k, and each step's 16 × 64
//     halves are plain 16-byte copies into the swizzled B tile (cp.async, AHEAD steps ahead, with the weights);
//   - one barrier per step; rows of A past m copy row m - 1 (never stored: row r of Y depends on row r of A only).
// The K loop is this file's own (`mainloop`, unrolled over its stages for the fewest instructions per step); the
// 128-row tile (gemm_wgmma_wreg.cu) shares the pipeline's stages and fragment mapping but not the loop.
// The epilogue holds the accumulators transposed (a thread has neighbouring rows of one slot), so it is this file's
// own; split-K uses gemm.cu's partial-sum layout and protocol.
#include "tiles.cuh"
#include "tensor_core.cuh"
#include "k_order.cuh"
#include "rope.cuh"

namespace wgs {

using wg::BK;
constexpr int THREADS = 256;
constexpr int BN = 128, TILES = BN / INT4_TILE_N;  // slots per block; one slot-tile per warp
constexpr int ROWS = 16;                           // rows of A per block: wgmma's N
constexpr int AHEAD = 6;                           // steps of {rows of A, raw words} in flight ahead of the multiply
constexpr int ACC = ROWS / 2;                      // f32 accumulators per thread (64 slots × 16 rows / 128 threads)
static_assert(TILES * 32 == THREADS, "one raw uint4 per thread and step");

// The pipeline's stages of a weights-in-registers tile with `R` rows of A (this one's 16, gemm_wgmma_wreg.cu's 128).
template <int R, int STAGES>
struct Stages {
    __half b[STAGES][R * BK];        // rows of A (already in the K order), wgmma's B: [row][k], swizzled
    uint4 wraw[STAGES][TILES][32];
    uint32_t sz[STAGES][THREADS];    // each lane's (scale, zero) word for its chunk of the step
};
using Smem = Stages<ROWS, AHEAD + 1>;
// The dynamic shared memory holds one Smem and 1 KB of room to start it on a 1024-byte boundary (the B tiles' swizzle
// period; each is 2 KB).
static_assert(sizeof(Smem) + 1024 == 51200, "GEMM_WGMMA_SHORT_SMEM_BYTES in shapes.rs must match");

// A lane's A fragments of one step, for the weights-in-registers tiles (this one and gemm_wgmma_wreg.cu's), from
// its warp's slot-tile as copied (32 lanes' uint4 words and (scale, zero) words; see the fragment mapping): for
// slot g (h = 0) and g + 8 (h = 1), words 2 (t % 2) and 2 (t % 2) + 1 of what lane g + 8h + 16 (t / 2) copied,
// each word's pair i into k16 block i. `words` / `sz` are the shared-memory addresses of this lane's reads for h = 0
// in the step's stage (`of`, below); h = 1 reads 8 lanes further.
struct FragmentSource {
    // The fragments from this lane's words (w[h]: words 2 (t % 2), 2 (t % 2) + 1 of slot g + 8h's copy) and their
    // (scale, zero) words.
    __device__ __forceinline__ static void build(const uint2 (&w)[2], const uint32_t (&szw)[2],
                                                 uint32_t (&frag)[4][4]) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const __half2 szh = u32_as_half2(szw[h]);
            const __half2 zz = __high2half2(szh), sc = __low2half2(szh);
            const __half2 zh = unshifted_zero(zz);
            uint32_t d0[4], d1[4];
            gsmall::dequant_scaled(w[h].x, zz, zh, sc, d0);
            gsmall::dequant_scaled(w[h].y, zz, zh, sc, d1);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                frag[i][h] = d0[i];      // a0 / a1: k 2t, 2t + 1 of slot g / g + 8
                frag[i][2 + h] = d1[i];  // a2 / a3: k 2t + 8, 2t + 9
            }
        }
    }
    // The short tile's reads: stage 0's shared-memory addresses of this lane's words and (scale, zero) words for
    // h = 0, given its warp's (`dequant_at` adds the stage's offset; h = 1 reads 8 lanes further).
    __device__ __forceinline__ static uint2 of(int lane, uint32_t warp_words, uint32_t warp_sz) {
        const uint32_t src = (lane >> 2) + 16 * ((lane & 3) >> 1), word0 = 2 * (lane & 1);
        return make_uint2(kept(warp_words + 16 * src + 4 * word0), kept(warp_sz + 4 * src));
    }
    __device__ __forceinline__ static void dequant_at(uint32_t words, uint32_t sz, uint32_t (&frag)[4][4]) {
        const uint2 w[2] = {tc::lds64(words), tc::lds64(words + 8 * 16)};
        const uint32_t szw[2] = {tc::lds32(sz), tc::lds32(sz + 8 * 4)};
        build(w, szw, frag);
    }
    // The 128-row tile's reads, through pointers into its warp's copy of the step.
    uint32_t src0, word0;
    __device__ __forceinline__ explicit FragmentSource(int lane)
        : src0((lane >> 2) + 16 * ((lane & 3) >> 1)), word0(2 * (lane & 1)) {}
    __device__ __forceinline__ void dequant(const uint4 (&words)[32], const uint32_t* sz,
                                            uint32_t (&frag)[4][4]) const {
        uint2 w[2];
        uint32_t szw[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t src = src0 + 8 * h;
            w[h] = *reinterpret_cast<const uint2*>(reinterpret_cast<const uint32_t*>(&words[src]) + word0);
            szw[h] = sz[src];
        }
        build(w, szw, frag);
    }
};

// A shared-memory matrix descriptor (wg::smem_desc) as its two 32-bit halves; `+ bytes / 16` moves its start
// address (the low 14 bits; the tiles' offsets never carry out of them).
struct Desc {
    uint32_t lo, hi;
    __device__ __forceinline__ explicit Desc(uint64_t d) : lo((uint32_t)d), hi((uint32_t)(d >> 32)) {}
    __device__ __forceinline__ Desc(uint32_t l, uint32_t h) : lo(l), hi(h) {}
    __device__ __forceinline__ Desc operator+(uint32_t units) const { return Desc(lo + units, hi); }
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d (64 × 16, f32) += A (64 × 16, f16, this thread's fragment a) · B (16 × 16, K-major, descriptor db).
// The descriptor comes as its two 32-bit halves (`Desc`): a step's and a k16's offsets change only the low one,
// one add instead of a 64-bit one and its constants.
ENGINE_DEV void wgmma_k16(float (&d)[8], const uint32_t (&a)[4], Desc db) {
    asm volatile(
        "{\n.reg .pred p;\n.reg .b64 db;\nsetp.ne.b32 p, %14, 0;\nmov.b64 db, {%12, %13};\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, db, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(db.lo), "r"(db.hi), "r"(1));
}
#endif

// The short tile's epilogue. Thread (warpgroup g, warp w4, lane) holds d[4j + 2h + e] = Y[row0 + 8j + 2(lane % 4)
// + e][slot0 + 64g + 16w4 + lane / 4 + 8h] (wgmma's m64nN C layout, slots as M); `slot_l` is that slot for h = 0.
// With split-K every block writes its partial sums into gemm.cu's [split][m][n_pad] buffer and the last to arrive
// (a counter per grid.x · grid.y tile) adds them in split order, the loads of up to 32 / (N / 16) splits at once:
// with ~16 splits of a short K range, one round trip per split would be the kernel's tail.
// The 16-row GEMV-shaped GEMM (gemv_rows.cu) ends the same way, with its sums rearranged into this layout;
// `YOrder` is the order its SwiGLU output takes (the down projection's input order: korder::Order, frag16::Order).
template <int OUT, int ACC, class YOrder = korder::Order>
ENGINE_DEV void finish(const GemmParams& p, float (&d)[ACC], uint32_t slot_l, uint32_t row0,
                       const RopeParams* rope = nullptr) {
    constexpr int BATCH = ACC >= 32 ? 1 : 32 / ACC;  // split partials whose loads are issued at once
    auto row_of = [&](int i) { return row0 + 8u * (i >> 2) + 2u * (threadIdx.x & 3u) + (i & 1); };
    auto slot_of = [&](int i) { return slot_l + 8u * ((i >> 1) & 1); };
    if (p.k_splits > 1) {
        float* part = p.part + (size_t)blockIdx.z * p.m * p.n_pad;
#pragma unroll
        for (int i = 0; i < ACC; ++i)
            if (row_of(i) < p.m && slot_of(i) < p.n_pad) part[(size_t)row_of(i) * p.n_pad + slot_of(i)] = d[i];
        uint32_t* counter = p.counters + blockIdx.y * gridDim.x + blockIdx.x;
        if (!gemm::last_split_arrives(counter, p.k_splits)) return;
#pragma unroll
        for (int i = 0; i < ACC; ++i) d[i] = 0.f;
#pragma unroll 1
        for (uint32_t z0 = 0; z0 < p.k_splits; z0 += BATCH) {
            float x[BATCH][ACC];
#pragma unroll
            for (int j = 0; j < BATCH; ++j) {
                const float* src = p.part + (size_t)(z0 + j) * p.m * p.n_pad;
#pragma unroll
                for (int i = 0; i < ACC; ++i) {
                    const bool in = z0 + j < p.k_splits && row_of(i) < p.m && slot_of(i) < p.n_pad;
                    x[j][i] = in ? __ldcg(src + (size_t)row_of(i) * p.n_pad + slot_of(i)) : 0.f;
                }
            }
#pragma unroll
            for (int j = 0; j < BATCH; ++j)
#pragma unroll
                for (int i = 0; i < ACC; ++i)
                    if (z0 + j < p.k_splits) d[i] += x[j][i];
        }
        if (threadIdx.x == 0) *counter = 0;
    }
    if (OUT == gemm::SWIGLU_K) {
        // Paired gate/up (ColumnOrder::GateUp): gate column i in slot g of a tile, up column i in slot g + 8 — this
        // thread holds both (h = 0 and 1), so SwiGLU needs no kernel of its own: silu(gate) · up, rounded once, goes
        // to column i of the down projection's input (y16, ldy = its k_pad), in the K order of k_order.cuh.
        const uint32_t i_col = slot_l < p.n_pad ? p.col_map[slot_l] : INT4_PAD_SLOT;
        if (i_col == INT4_PAD_SLOT) return;
#pragma unroll
        for (int i = 0; i < ACC; ++i)
            if ((i & 2) == 0 && row_of(i) < p.m)
                p.y16[YOrder::at(row_of(i), i_col, p.ldy)] = __float2half_rn(silu_times(d[i], d[i | 2]));
        return;
    }
    const uint32_t col[2] = {slot_l < p.n_pad ? p.col_map[slot_l] : INT4_PAD_SLOT,
                             slot_l + 8 < p.n_pad ? p.col_map[slot_l + 8] : INT4_PAD_SLOT};
    if constexpr (OUT == gemm::QKV_ROPE_K) {
        // q/k/v in ColumnOrder::QkvRope: the rotary partners d and d + head_dim / 2 of a q or k head sit in slots g
        // and g + 8 of a tile, so this thread holds both of each row (h = 0 and 1) and does what rope_kv_rows would
        // do after a plain GEMM — no q/k/v tensor and no launch of its own. It rounds the sums to fp16 first and
        // rotates those, as that pass rotates the GEMM's fp16 output, so the two paths give the same bits (the
        // kernel test checks it). Row r is at position *pos0 + r; where a column goes is worked out once per
        // column, a row only moves it by one row of q or one cache position.
        const RopeParams& r = *rope;
        const uint32_t pos0 = *r.pos0, half_dim = r.head_dim >> 1;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t c = col[h];
            if (c == INT4_PAD_SLOT) continue;
            const bool rotated = c < r.q_dim + r.kv_dim;
            const uint32_t d_in = c % r.head_dim, angle = d_in % half_dim;
            __half* dst;
            size_t row_step;
            if (c < r.q_dim) {
                dst = r.q_out + c, row_step = r.q_dim;
            } else {
                const uint32_t kv = rotated ? c - r.q_dim : c - r.q_dim - r.kv_dim;
                dst = cache_slot(rotated ? r.k_cache : r.v_cache, kv / r.head_dim, r.ctx, pos0, r.head_dim) + d_in;
                row_step = r.head_dim;
            }
#pragma unroll
            for (int i = 0; i < ACC; ++i) {
                const uint32_t row = row_of(i);
                if (((i >> 1) & 1) != h || row >= p.m) continue;  // slot h's accumulators
                float v = __half2float(__float2half_rn(d[i]));
                if (rotated) {
                    const float partner = __half2float(__float2half_rn(d[i ^ 2]));
                    const size_t t = (size_t)(pos0 + row) * half_dim + angle;
                    const float cs = r.rope_cos[t], sn = r.rope_sin[t];
                    v = d_in < half_dim ? rotate(v, partner, cs, sn).x : rotate(partner, v, cs, sn).y;
                }
                dst[row * row_step] = __float2half_rn(v);
            }
        }
    } else {
#pragma unroll
        for (int i = 0; i < ACC; ++i)
            if (row_of(i) < p.m) gemm::store_one<OUT>(p, (size_t)row_of(i) * p.ldy, col[(i >> 1) & 1], d[i]);
    }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The short tile's K loop: block `blk`'s steps of 16 rows of A (in the K order, lda = k_pad) times its 8 slot-tiles,
// into d (wgmma's m64n16 accumulators of this thread's warpgroup).
// Pipeline: L(j) = {rows of A and raw words of step j} into stage j % STAGES. L(0) .. L(AHEAD - 1) before the
// loop (the weights' part before the PDL wait), L(i + AHEAD) issued in step i (every group committed even when
// empty), so that in step i wait_group AHEAD - 2 means "L(i + 1) has landed". L(i + AHEAD) takes the stage of step
// i - 1, whose multiply every warpgroup waited for before step i's barrier, right after that barrier.
// Why it is written this way: at 16 rows the loop streams weights at 32 flops per byte, so its cost is the
// instructions each warp issues per step, not the multiply. The loop is unrolled over the STAGES stages so that
// every shared-memory address (the stage's copies, its fragments, its descriptor) is a register plus a constant
// ptxas folds into the instruction, the sources are pointers advanced by one step per copy instead of addresses
// recomputed from the step index, and the copies go out before the fragments hold registers (under the 64-register
// cap their addresses were otherwise recomputed): nvdisasm 158 -> 108 instructions per warp and step. A block's
// steps are a chain (barrier, multiply, wait), so the next step's fragments are dequantized while the tensor cores
// run this step's multiplies: a step of one block alone 327 -> 290 ns, at the price of a second fragment buffer
// (71 registers, three blocks per SM instead of four); and the weights of the first steps are requested before the
// PDL wait. 16-token prefill of the 7B shape 3.17 -> 3.09 ms (BENCHMARKS.md).
ENGINE_DEV void mainloop(const GemmParams& p, const gemm::RowsBlock& blk, Smem& s, float (&d)[ACC]) {
    constexpr int R = ROWS, AHEAD_ = AHEAD, STAGES = AHEAD + 1;
    using Smem_ = Smem;
    constexpr int CHUNKS = R * BK / 8;                              // 16-byte chunks of A per step: threads 0..127
    constexpr int PER_THREAD = (CHUNKS + THREADS - 1) / THREADS;    // 1
    constexpr uint32_t B_BYTES = sizeof(Smem_::b[0]), W_BYTES = sizeof(Smem_::wraw[0]),
                       SZ_BYTES = sizeof(Smem_::sz[0]);             // one stage of each
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_steps = blk.n_steps;

    // Rows of A: chunk tid + THREADS i is row tid / 8 + 32 i (rows 32 apart keep their swizzle), column chunk
    // tid % 8. Row offsets in 32 bits, computed once (support.rs keeps a chunk's rows under 2³² elements); every
    // column of the K-order copy exists (it is k_pad wide). Rows past m copy row m - 1.
    const int a_r = tid >> 3, a_c = (tid & 7) * 8;
    const bool copies_a = CHUNKS >= THREADS || tid < CHUNKS;
    uint32_t a_off[PER_THREAD];
#pragma unroll
    for (int i = 0; i < PER_THREAD; ++i) a_off[i] = min(blk.m0 + a_r + 32 * i, p.m - 1) * p.lda + a_c;
    // Raw weights: warp w copies slot-tile w of the block (512 contiguous bytes per step) and each lane the
    // (scale, zero) word of its 32-row chunk; a tile past the end copies nothing from tile 0's address. Group sizes
    // are 32 times a power of two (the loader checks), or there is one group: the group is a shift, clamped.
    const uint32_t tile = blockIdx.x * TILES + warp;
    const bool tile_ok = tile < blk.tiles;
    const uint32_t tile_at = tile_ok ? tile : 0;
    const uint32_t g_shift = 31 - __clz(p.group_size);
    const uint32_t* sz_tile = kept(p.sz + (size_t)tile_at * p.groups * INT4_TILE_N + (lane & 15));
    // The next step to copy, as pointers advanced one step per copy: A's step, the tile's step, the chunk's row.
    const __half* a_next = blk.a + (size_t)blk.step_begin * BK;
    const uint4* w_next = p.qw + ((size_t)tile_at * blk.steps_all + blk.step_begin) * 32 + lane;
    uint32_t k_next = blk.step_begin * BK + (lane >> 4) * INT4_CHUNK_K;
    // Stage 0's destinations; stage j's are j stages further (constant offsets).
    const uint32_t b_dst = kept(tc::smem_addr(&s.b[0][wg::swizzled(a_r % R, a_c)]));
    const uint32_t w_dst = kept(tc::smem_addr(&s.wraw[0][warp][lane]));
    const uint32_t sz_dst = kept(tc::smem_addr(&s.sz[0][tid]));
    auto copy_a = [&](int stage) {
        if (copies_a) {
#pragma unroll
            for (int i = 0; i < PER_THREAD; ++i)
                tc::cp_async16_at(b_dst + stage * B_BYTES + 32 * i * BK * 2, a_next + a_off[i], 16u);
        }
        a_next += BK;
    };
    auto copy_weights = [&](int stage) {
        tc::cp_async16_at(w_dst + stage * W_BYTES, w_next, tile_ok ? 16u : 0u);
        tc::cp_async4_at(sz_dst + stage * SZ_BYTES, sz_tile + min(k_next >> g_shift, p.groups - 1) * INT4_TILE_N);
        w_next += 32;
        k_next += BK;
    };
    auto copy_next = [&](int stage) {
        copy_a(stage);
        copy_weights(stage);
    };
    const uint2 frag_src =
        FragmentSource::of(lane, tc::smem_addr(&s.wraw[0][warp][0]), tc::smem_addr(&s.sz[0][warp * 32]));

    // The weights never change: the first AHEAD steps' go out before waiting for the previous kernel (programmatic
    // dependent launch), as one group committed before the rows of A, so that their memory latency overlaps that
    // kernel's tail. Any later wait for a step's group (A's) then covers this older one too.
#pragma unroll
    for (int j = 0; j < AHEAD_; ++j)
        if (j < n_steps) copy_weights(j);
    tc::cp_async_commit();
    // Nothing before this line may read what the previous kernel writes (A, the residual stream, the partials).
    pdl_wait();
    pdl_launch_dependents();
#pragma unroll
    for (int j = 0; j < AHEAD_; ++j) {
        if (j < n_steps) copy_a(j);
        tc::cp_async_commit();
    }

    const Desc b_desc(wg::smem_desc(tc::smem_addr(&s.b[0][0])));
    constexpr uint32_t B_STAGE = B_BYTES / 16, K16 = 32 / 16;  // in the descriptor's 16-byte units
    // The fragments of step i are dequantized during step i - 1, while its multiplies run (two buffers, the
    // unrolled loop's parity): step 0's here, once its group has landed (the weights group and A(0): all but the
    // AHEAD - 1 latest), visible to the warp whose lanes copied them.
    uint32_t frag[2][4][4];
    if (n_steps > 0) {
        tc::cp_async_wait<AHEAD_ - 1>();
        __syncwarp();
        FragmentSource::dequant_at(frag_src.x, frag_src.y, frag[0]);
    }
    for (int i0 = 0; i0 < n_steps; i0 += 2 * STAGES) {
#pragma unroll
        for (int u = 0; u < 2 * STAGES; ++u) {
            const int i = i0 + u, cur = u % STAGES, nxt = (u + 1) % STAGES;
            if (i >= n_steps) break;
            tc::cp_async_wait<AHEAD_ - 2>();
            wg::fence_proxy_async();
            // The step's barrier: L(i) and L(i + 1) have landed for everyone and are visible to the tensor cores
            // (each thread fenced its own copies); both warpgroups have waited for their multiply of step i - 1,
            // whose stage L(i + AHEAD) takes at once (its words were dequantized in step i - 2).
            __syncthreads();
            if (i + AHEAD_ < n_steps) copy_next(cur == 0 ? STAGES - 1 : cur - 1);
            tc::cp_async_commit();
            wg::wgmma_fence();
            wg::fence_operands(d);
#pragma unroll
            for (int kk = 0; kk < BK / 16; ++kk) wgmma_k16(d, frag[u & 1][kk], b_desc + cur * B_STAGE + kk * K16);
            wg::wgmma_commit();
            // The next step's fragments while the tensor cores work on this one's.
            if (i + 1 < n_steps)
                FragmentSource::dequant_at(frag_src.x + nxt * W_BYTES, frag_src.y + nxt * SZ_BYTES, frag[(u + 1) & 1]);
            wg::wgmma_wait<0>();
            wg::fence_operands(d);
        }
    }
    tc::cp_async_wait<0>();  // nothing real is pending (the last groups are empty); never leave a copy in flight
}
#endif

template <int OUT>
ENGINE_DEV void run(const GemmParams& p, const RopeParams* rope = nullptr) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t pad = (1024u - (tc::smem_addr(smem_raw) & 1023u)) & 1023u;
    Smem& s = *reinterpret_cast<Smem*>(smem_raw + pad);
    const gemm::RowsBlock blk = gemm::rows_block(p, BN);  // grid.y is 1: rows 0 .. m - 1

    float d[ACC];
#pragma unroll
    for (int i = 0; i < ACC; ++i) d[i] = 0.f;
    mainloop(p, blk, s, d);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, group = warp >> 2;
    finish<OUT, ACC>(p, d, blk.slot0 + 64 * group + 16 * (warp & 3) + (lane >> 2), 0, rope);
#else
    __trap();  // compute_80 module: the host launches these on sm_90 only, where the sm_90a module is loaded
#endif
}

}  // namespace wgs

// Block: 256 threads. Grid: (ceil(n_pad / 128), 1, k_splits); m ≤ 16; A in the K order of k_order.cuh (lda = k_pad,
// as `permute_k_steps` writes it). Dynamic shared memory sizeof(wgs::Smem) + 1024 = 51200 bytes, at most 85
// registers per thread (the two fragment buffers need 71): three blocks per SM. sm_90a only: in the compute_80
// module these trap.
extern "C" __global__ void __launch_bounds__(256, 3) gemm_wgmma_short_int4_store16(const GemmParams p) {
    wgs::run<gemm::STORE16>(p);
}
extern "C" __global__ void __launch_bounds__(256, 3) gemm_wgmma_short_int4_residual(const GemmParams p) {
    wgs::run<gemm::RESIDUAL>(p);
}
extern "C" __global__ void __launch_bounds__(256, 3) gemm_wgmma_short_int4_store32(const GemmParams p) {
    wgs::run<gemm::STORE32>(p);
}
// gate/up paired (ColumnOrder::GateUp) with SwiGLU: y16 is the down projection's input, in its K order (ldy = its
// k_pad, which must equal inter: the columns past it are not written).
extern "C" __global__ void __launch_bounds__(256, 3) gemm_wgmma_short_int4_swiglu(const GemmParams p) {
    wgs::run<gemm::SWIGLU_K>(p);
}
// q/k/v in ColumnOrder::QkvRope with the rotary embedding and the KV-cache append: what rope_kv_rows does after
// gemm_wgmma_short_int4_store16, in its epilogue (p.gemm's y16 and ldy unused; p.rope's qkv unused, q_out [m][q_dim],
// the caches at positions *pos0 + row). Its own parameter block, so that no other GEMM carries the rotary fields.
struct GemmRopeParams {
    GemmParams gemm;
    RopeParams rope;
};
extern "C" __global__ void __launch_bounds__(256, 3) gemm_wgmma_short_int4_qkv_rope(const GemmRopeParams p) {
    wgs::run<gemm::QKV_ROPE_K>(p.gemm, &p.rope);
}

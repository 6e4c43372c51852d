// Whether a 16-row prefill's GEMMs can run at a decode GEMV's pace, for issue 14 (16-token TTFT ≤ 2.5 ms; not part
// of the engine: built and run by hand with nvcc on the GPU machine, see tests/gpu/micro/README.md).
//
// The engine's short tile (gemm_wgmma_short.cu) takes ~2× the GEMV's time for the same bytes: split-K blocks that
// stage their slice of A, a block-wide chain per 4 KB K step (barrier, dequantize, wgmma, wait) and a merge by the
// last split. This program runs the 7B layer's four GEMMs at 16 rows (q/k/v 4096 × 12288, o 4096 × 4096, gate/up
// 4096 × 22016, down 11008 × 4096, 32 layers: 128 dependent phases, a graph of PDL kernels, 3.24 GB of weights)
// with a kernel built like the decode GEMV instead: every block owns TPB whole 16-column tiles over all of K, its
// NW warps stream disjoint K spans straight into registers (two batches in flight, no barrier in the K loop), and
// one shared-memory reduction ends the block. The dot product is mma.sync m16n8k16 with A = the 16 input rows and
// B = the weights, on the engine's present tile layout, no repacking:
//
//   the tile layout's uint4 `16 c + s` of a 64-row step holds slot s at rows 32 c .. 32 c + 31. Take two steps (a
//   span of 128 rows, chunks q = 2 step + c = 0..3) and let lane (g, t) load chunk t of slots g and g + 8: its B
//   fragments for slot g are then 4 of that chunk's rows per k16 block, for all 8 blocks of the span. Which rows
//   stand for which K index inside an MMA is free as long as A holds the same order, so: block j's B registers
//   b0b1 / b2b3 of lane (g, t) are word j / 2 of its chunk, nibble pairs (i, i + 4) with i = 2 (j % 2) and i + 1 —
//   one LOP3 each (the second unshifted, 1024 + 16 q) — i.e. rows k0, k0 + 4 / k0 + 1, k0 + 5 of the span, with
//   k0 = 32 t + 8 (j / 2) + 2 (j % 2). The input is stored in that order, one uint4 per lane and k16 block (its four
//   A registers), as a producer kernel would write it.
//
// Groups are whole chunks (a multiple of 32 rows), so a lane's (scale, zero) per span is one word per slot, any
// group size. Variants: TPB tiles per block (the input fragments are loaded once per warp and k16 block and used
// for all TPB tiles), NW warps per block, U spans per batch; DOT 0 only xors the weight words into the accumulators
// (the bytes alone). Medians of 7 replays of the captured graph after a warm-up, CUDA events; outputs poisoned
// before each run; the last layer's o and down outputs checked against a float64 reading of the same bytes.
#include <cmath>
#include "micro.cuh"

constexpr int ROWS = 16;      // input rows of one m16 MMA (a row block)
constexpr int MAX_RB = 4;     // row blocks at most (RB: 16, 32, 48 or 64 input rows)
constexpr int GROUP = 128;    // rows per (scale, zero) in this program's weights
constexpr int MAX_K = 11008;
constexpr int MAX_N = 22016;

struct Phase {
    const uint4* w;      // tiles × steps × 32 uint4 (the engine's tile layout)
    const uint32_t* sz;  // tiles × groups × 16 half2 (scale, 1024 + zero)
    float* y;            // [16 RB][n]
    uint32_t k, tiles;
};

// The input fragments: read by every block, so kept in L1.
__device__ __forceinline__ uint4 ldg_keep(const uint4* p) {
    uint4 v;
    asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ void mma16816(float (&d)[4], const uint4& a, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

// B registers of k16 block j (its word j / 2, pairs 2 (j % 2) and + 1), each (q − zero) · scale in fp16.
// zz = (1024 + zero) in both halves, ss = scale in both halves.
__device__ __forceinline__ void b_fragment(uint32_t word, int j, __half2 zz, __half2 ss, uint32_t& b0, uint32_t& b1) {
    const uint32_t bits = (j & 1) ? word >> 8 : word;
    const uint32_t lo = lop3_and_or(bits, 0x000F000Fu, 0x64006400u);  // 1024 + q
    const uint32_t hi = lop3_and_or(bits, 0x00F000F0u, 0x64006400u);  // 1024 + 16 q
    // 960 − (1024 + zero) = −(64 + zero): (1024 + 16 q) / 16 + that = q − zero, exactly.
    const __half2 hz = __hsub2(h2(0x63806380u), zz);
    b0 = u32(__hmul2(__hsub2(h2(lo), zz), ss));
    b1 = u32(__hmul2(__hfma2(h2(hi), h2(0x2C002C00u), hz), ss));
}

// The fp16 pair (q − zero) · scale of nibbles i, i + 4 of a word (i known at compile time after unrolling).
__device__ __forceinline__ uint32_t pair_of(uint32_t word, int i, __half2 zz, __half2 hz, __half2 ss) {
    const uint32_t bits = word >> (4 * (i & 2));
    if ((i & 1) == 0) return u32(__hmul2(__hsub2(h2(lop3_and_or(bits, 0x000F000Fu, 0x64006400u)), zz), ss));
    return u32(__hmul2(__hfma2(h2(lop3_and_or(bits, 0x00F000F0u, 0x64006400u)), h2(0x2C002C00u), hz), ss));
}
__device__ __forceinline__ uint2 ldg64_keep(const __half* p) {
    uint2 v;
    asm("ld.global.nc.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

// AK 0: the input as fragments (xf); AK 1: the input as rows in the short tile's K order (k_order.cuh: word
// 4 (2 i + h) + j of a 64-column step holds halves i, i + 4 of natural 8-chunk 2 j + h), lda = MAX_K. With AK 1 the
// k16 block j = 4 w0 + i takes pair i of the lane's words w0 (b0b1) and w0 + 2 (b2b3): in the K order those two
// pairs of a row are adjacent words, so a block's A is one 8-byte load per row (g and g + 8).
template <int NW, int TPB, int U, int DOT, int MINB, int AK, int RB>
__global__ void __launch_bounds__(NW * 32, MINB) short_phase(Phase ph, const uint4* __restrict__ xf, const __half* __restrict__ xk,
                                                           const __half* __restrict__ xs) {
    static_assert(AK == 0 || RB == 1, "several row blocks: fragments only");
    extern __shared__ __align__(16) float red[];  // [NW][TPB][RB * ROWS * 16]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t steps = ph.k / 64, spans = steps / 2, groups = ph.k / GROUP;
    const uint32_t tile0 = blockIdx.x * TPB;
    // The lane's chunk t of slot g in a span (uint4 units from the span's first): step t / 2, uint4 16 (t % 2) + g.
    const uint32_t lane_off = (t >> 1) * 32 + 16 * (t & 1) + g;

    float acc[TPB][RB][2][4];
#pragma unroll
    for (int i = 0; i < TPB; ++i)
#pragma unroll
        for (int rb = 0; rb < RB; ++rb)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][rb][h][e] = 0.f;

    uint4 cur[U][TPB][2], nxt[U][TPB][2];
    uint32_t cur_sz[U][TPB][2], nxt_sz[U][TPB][2];
    auto load = [&](uint32_t s0, uint4(&w)[U][TPB][2], uint32_t(&sz)[U][TPB][2]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const uint32_t s = s0 + u * NW;
            if (s < spans) {
                const uint32_t group = (128 * s + 32 * t) / GROUP;
#pragma unroll
                for (int i = 0; i < TPB; ++i)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        const uint32_t tile = tile0 + i;
                        w[u][i][h] = ldg_stream(ph.w + ((size_t)tile * steps + 2 * s) * 32 + lane_off + 8 * h);
                        sz[u][i][h] = __ldg(ph.sz + ((size_t)tile * groups + group) * 16 + g + 8 * h);
                    }
            }
        }
    };
    auto compute = [&](uint32_t s0, const uint4(&w)[U][TPB][2], const uint32_t(&sz)[U][TPB][2]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const uint32_t s = s0 + u * NW;
            if (s >= spans) continue;
            if (DOT == 0) {
#pragma unroll
                for (int i = 0; i < TPB; ++i)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
                        acc[i][0][h][0] += __uint_as_float((w[u][i][h].x ^ w[u][i][h].y ^ w[u][i][h].z ^ w[u][i][h].w ^
                                                         sz[u][i][h]) & 0x3FFFFFFFu);
                continue;
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                uint4 a, ab[RB];
                if (AK == 0) {
#pragma unroll
                    for (int rb = 0; rb < RB; ++rb)
                        ab[rb] = ldg_keep(xf + (size_t)rb * (MAX_K / 128) * 8 * 32 + ((size_t)s * 8 + j) * 32 + lane);
                    a = ab[0];
                } else if (AK == 2) {
                    // Span order: 16-byte chunk 4 m + t of the span holds natural chunk 4 t + m, halves
                    // 0, 4, 1, 5, 2, 6, 3, 7: rows g and g + 8, m = j / 2, words 2 (j % 2), + 1.
                    const size_t at = (size_t)s * 128 + 8 * (4 * (j >> 1) + t);
                    const uint4 lo = ldg_keep(reinterpret_cast<const uint4*>(xs + (size_t)g * MAX_K + at));
                    const uint4 hi = ldg_keep(reinterpret_cast<const uint4*>(xs + (size_t)(g + 8) * MAX_K + at));
                    a = (j & 1) ? make_uint4(lo.z, hi.z, lo.w, hi.w) : make_uint4(lo.x, hi.x, lo.y, hi.y);
                } else {
                    const int w0 = j >> 2, pi = j & 3;
                    const uint32_t col = (2 * s + (t >> 1)) * 64 + 2 * (4 * (2 * pi + w0) + 2 * (t & 1));
                    const uint2 lo = ldg64_keep(xk + (size_t)g * MAX_K + col);
                    const uint2 hi = ldg64_keep(xk + (size_t)(g + 8) * MAX_K + col);
                    a = make_uint4(lo.x, hi.x, lo.y, hi.y);
                }
#pragma unroll
                for (int i = 0; i < TPB; ++i)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        const __half2 p = h2(sz[u][i][h]);
                        uint32_t b0, b1;
                        if (AK != 1) {
                            b_fragment(word_of(w[u][i][h], j >> 1), j, __high2half2(p), __low2half2(p), b0, b1);
                        } else {
                            const __half2 zz = __high2half2(p), ss = __low2half2(p);
                            const __half2 hz = __hsub2(h2(0x63806380u), zz);
                            b0 = pair_of(word_of(w[u][i][h], j >> 2), j & 3, zz, hz, ss);
                            b1 = pair_of(word_of(w[u][i][h], (j >> 2) + 2), j & 3, zz, hz, ss);
                        }
                        if (AK == 0) {
#pragma unroll
                            for (int rb = 0; rb < RB; ++rb) mma16816(acc[i][rb][h], ab[rb], b0, b1);
                        } else {
                            mma16816(acc[i][0][h], a, b0, b1);
                        }
                    }
            }
        }
    };

    load(warp, cur, cur_sz);  // weights never change: asked for before the dependency wait
    pdl_wait();
    pdl_launch();
    for (uint32_t s0 = warp; s0 < spans; s0 += 2 * U * NW) {
        load(s0 + U * NW, nxt, nxt_sz);
        compute(s0, cur, cur_sz);
        if (s0 + U * NW >= spans) break;
        load(s0 + 2 * U * NW, cur, cur_sz);
        compute(s0 + U * NW, nxt, nxt_sz);
    }

    // C fragment: element e of (tile i, row block rb, half h) is row 16 rb + g + 8 (e / 2), slot 8 h + 2 t + e % 2.
    constexpr int R = RB * ROWS;
#pragma unroll
    for (int i = 0; i < TPB; ++i)
#pragma unroll
        for (int rb = 0; rb < RB; ++rb)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    red[(warp * TPB + i) * R * 16 + (16 * rb + g + 8 * (e >> 1)) * 16 + 8 * h + 2 * t + (e & 1)] =
                        acc[i][rb][h][e];
    __syncthreads();
    const uint32_t n = ph.tiles * 16;
    for (int q = threadIdx.x; q < TPB * R * 16; q += NW * 32) {
        const int i = q / (R * 16), r = (q / 16) % R, slot = q % 16;
        float sum = 0.f;
#pragma unroll
        for (int wi = 0; wi < NW; ++wi) sum += red[(wi * TPB + i) * R * 16 + r * 16 + slot];
        ph.y[(size_t)r * n + (tile0 + i) * 16 + slot] = sum;
    }
}

// The weight q of row kk, column col of a phase, read from its tile layout on the host.
static int weight_at(const std::vector<uint32_t>& w, uint32_t k, uint32_t kk, uint32_t col) {
    const uint32_t steps = k / 64, tile = col / 16, slot = col % 16, s = kk / 64, r = kk % 64;
    const uint32_t lane = 16 * (r / 32) + slot, word = (r % 32) / 8, nib = r % 8;
    return (w[(((size_t)tile * steps + s) * 32 + lane) * 4 + word] >> (4 * nib)) & 15;
}

struct Variant {
    int nw, tpb, u, dot, minb;  // minb: blocks per SM the registers are capped for (launch bounds), 1 = no cap
    int ak;  // the input's layout: 0 fragments, 1 rows in the short tile's K order, 2 rows in span order
    int rb;  // row blocks of 16 input rows each (fragments only)
};

template <int NW, int TPB, int U, int DOT, int MINB, int AK, int RB>
static void launch(const Phase& ph, const uint4* xf, const __half* xk, const __half* xs, cudaStream_t s) {
    const size_t smem = (size_t)NW * TPB * RB * ROWS * 16 * 4;
    static bool configured = false;
    if (!configured) {
        CHECK(cudaFuncSetAttribute(short_phase<NW, TPB, U, DOT, MINB, AK, RB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)smem));
        configured = true;
    }
    launch_pdl(short_phase<NW, TPB, U, DOT, MINB, AK, RB>, dim3(ph.tiles / TPB), dim3(NW * 32), smem, s, ph, xf, xk, xs);
}

template <int NW, int TPB, int U, int DOT, int MINB, int AK, int RB>
static int occupancy() {
    int b = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, short_phase<NW, TPB, U, DOT, MINB, AK, RB>, NW * 32,
                                                        (size_t)NW * TPB * RB * ROWS * 16 * 4));
    return b;
}

#define VARIANTS(X)          \
    X(8, 1, 1, 1, 4, 0, 1)   \
    X(16, 1, 1, 1, 2, 0, 1)  \
    X(8, 1, 1, 1, 4, 0, 2)   \
    X(16, 1, 1, 1, 2, 0, 2)  \
    X(8, 1, 1, 1, 3, 0, 2)   \
    X(8, 1, 1, 1, 3, 0, 3)   \
    X(16, 1, 1, 1, 1, 0, 3)  \
    X(8, 1, 1, 1, 2, 0, 4)   \
    X(16, 1, 1, 1, 1, 0, 4)  \
    X(8, 1, 1, 1, 2, 0, 3)

static void launch_variant(const Variant& v, const Phase& ph, const uint4* xf, const __half* xk, const __half* xs,
                           cudaStream_t s) {
#define X(NW_, TPB_, U_, DOT_, MINB_, AK_, RB_)                                                            \
    if (v.nw == NW_ && v.tpb == TPB_ && v.u == U_ && v.dot == DOT_ && v.minb == MINB_ && v.ak == AK_ &&     \
        v.rb == RB_)                                                                                         \
        return launch<NW_, TPB_, U_, DOT_, MINB_, AK_, RB_>(ph, xf, xk, xs, s);
    VARIANTS(X)
#undef X
    std::printf("no such variant\n");
    std::exit(1);
}

int main() {
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const uint32_t shapes[4][2] = {{4096, 12288}, {4096, 4096}, {4096, 22016}, {11008, 4096}};  // K, N
    std::vector<Phase> chain;
    size_t wbytes = 0, sbytes = 0;
    for (int l = 0; l < 32; ++l)
        for (auto& sh : shapes) {
            Phase ph = {};
            ph.k = sh[0], ph.tiles = sh[1] / 16;
            chain.push_back(ph);
            wbytes += (size_t)ph.k * sh[1] / 2, sbytes += (size_t)ph.k / GROUP * sh[1] * 4;
        }
    uint32_t *w = nullptr, *sz = nullptr;
    CHECK(cudaMalloc(&w, wbytes));
    CHECK(cudaMalloc(&sz, sbytes));
    fill_random<<<1024, 256>>>(w, wbytes / 4, 12345u);
    // (scale, 1024 + zero) words: scales 1/1024 .. 7/1024, zeros 0 .. 15, varying with group and slot.
    std::vector<uint32_t> hsz(sbytes / 4);
    for (size_t i = 0; i < hsz.size(); ++i) {
        const __half sc = __float2half((1 + i % 7) / 1024.f), zz = __float2half(1024.f + (i * 7 / 3) % 16);
        hsz[i] = (uint32_t)__half_as_ushort(zz) << 16 | __half_as_ushort(sc);
    }
    CHECK(cudaMemcpy(sz, hsz.data(), sbytes, cudaMemcpyHostToDevice));
    float* y = nullptr;
    const size_t y_len = (size_t)4 * MAX_RB * ROWS * MAX_N;
    CHECK(cudaMalloc(&y, y_len * 4));
    size_t wat = 0, sat = 0;
    for (auto& ph : chain) {
        ph.w = reinterpret_cast<const uint4*>(w) + wat / 16, ph.sz = sz + sat / 4;
        const int type = ph.k == 11008 ? 3 : ph.tiles == 256 ? 1 : ph.tiles == 768 ? 0 : 2;
        ph.y = y + (size_t)type * MAX_RB * ROWS * MAX_N;
        wat += (size_t)ph.k * ph.tiles * 8, sat += (size_t)ph.k / GROUP * ph.tiles * 64;
    }
    // The 16 input rows, and their fragments: [span][k16 block j][lane] uint4 = lane (g, t)'s four A registers.
    std::vector<__half> x((size_t)MAX_RB * ROWS * MAX_K);
    for (int r = 0; r < MAX_RB * ROWS; ++r)
        for (int k = 0; k < MAX_K; ++k) x[(size_t)r * MAX_K + k] = __float2half(std::sin(0.37f * k + 1.3f * r));
    // Row block rb (rows 16 rb ..) at fragment block rb.
    std::vector<uint32_t> xfh((size_t)MAX_RB * MAX_K / 128 * 8 * 32 * 4);
    for (int rb = 0; rb < MAX_RB; ++rb)
    for (int s = 0; s < MAX_K / 128; ++s)
        for (int j = 0; j < 8; ++j)
            for (int lane = 0; lane < 32; ++lane) {
                const int g = 16 * rb + (lane >> 2), t = lane & 3, k0 = 128 * s + 32 * t + 8 * (j >> 1) + 2 * (j & 1);
                auto pair = [&](int r, int kk) {
                    return (uint32_t)__half_as_ushort(x[(size_t)r * MAX_K + kk + 4]) << 16 |
                           __half_as_ushort(x[(size_t)r * MAX_K + kk]);
                };
                uint32_t* f = &xfh[((((size_t)rb * (MAX_K / 128) + s) * 8 + j) * 32 + lane) * 4];
                f[0] = pair(g, k0), f[1] = pair(g + 8, k0), f[2] = pair(g, k0 + 1), f[3] = pair(g + 8, k0 + 1);
            }
    // The same rows in the short tile's K order (k_order.cuh's `source`), row stride MAX_K.
    std::vector<__half> xkh((size_t)ROWS * MAX_K);
    for (int r = 0; r < ROWS; ++r)
        for (int col = 0; col < MAX_K; ++col) {
            const int c = col % 16, i = (col % 64) / 16, h = c >> 3, cc = c & 7;
            const int k = col - col % 64 + 16 * (cc >> 1) + 8 * h + i + 4 * (cc & 1);
            xkh[(size_t)r * MAX_K + col] = x[(size_t)r * MAX_K + k];
        }
    // And in span order: within each 128 columns, 16-byte chunk 4 m + t holds natural chunk 4 t + m with its halves
    // in the order 0, 4, 1, 5, 2, 6, 3, 7.
    std::vector<__half> xsh((size_t)ROWS * MAX_K);
    for (int r = 0; r < ROWS; ++r)
        for (int col = 0; col < MAX_K; ++col) {
            const int q = (col % 128) / 8, m = q / 4, t = q % 4, e = col % 8;
            const int k = col - col % 128 + 8 * (4 * t + m) + (e / 2) + 4 * (e % 2);
            xsh[(size_t)r * MAX_K + col] = x[(size_t)r * MAX_K + k];
        }
    __half* xs = nullptr;
    CHECK(cudaMalloc(&xs, xsh.size() * 2));
    CHECK(cudaMemcpy(xs, xsh.data(), xsh.size() * 2, cudaMemcpyHostToDevice));
    __half* xk = nullptr;
    CHECK(cudaMalloc(&xk, xkh.size() * 2));
    CHECK(cudaMemcpy(xk, xkh.data(), xkh.size() * 2, cudaMemcpyHostToDevice));
    uint4* xf = nullptr;
    CHECK(cudaMalloc(&xf, xfh.size() * 4));
    CHECK(cudaMemcpy(xf, xfh.data(), xfh.size() * 4, cudaMemcpyHostToDevice));

    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    std::printf("%d SMs, %.3f GB of weights + %.3f GB of scales in %zu phases, %d input rows\n", sms, wbytes / 1e9,
                sbytes / 1e9, chain.size(), ROWS);

    const Variant variants[] = {
#define X(NW_, TPB_, U_, DOT_, MINB_, AK_, RB_) {NW_, TPB_, U_, DOT_, MINB_, AK_, RB_},
        VARIANTS(X)
#undef X
    };
    std::vector<float> y_now(y_len);
    for (const Variant& var : variants) {
        int occ = 0;
#define X(NW_, TPB_, U_, DOT_, MINB_, AK_, RB_)                                                             \
    if (var.nw == NW_ && var.tpb == TPB_ && var.u == U_ && var.dot == DOT_ && var.minb == MINB_ &&           \
        var.ak == AK_ && var.rb == RB_)                                                                       \
        occ = occupancy<NW_, TPB_, U_, DOT_, MINB_, AK_, RB_>();
        VARIANTS(X)
#undef X
        // The whole chain, then each projection's 32 launches alone (µs per launch).
        auto time_chain = [&](int only) {
            cudaGraph_t graph;
            cudaGraphExec_t exec;
            CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            for (size_t i = 0; i < chain.size(); ++i)
                if (only < 0 || (int)(i % 4) == only) launch_variant(var, chain[i], xf, xk, xs, s);
            CHECK(cudaStreamEndCapture(s, &graph));
            CHECK(cudaGraphInstantiate(&exec, graph, 0));
            std::vector<float> times;
            for (int rep = 0; rep < 8; ++rep) {
                float ms = 0;
                CHECK(cudaMemsetAsync(y, 0xFF, y_len * 4, s));  // poisoned: every output must be written again
                CHECK(cudaEventRecord(e0, s));
                CHECK(cudaGraphLaunch(exec, s));
                CHECK(cudaEventRecord(e1, s));
                CHECK(cudaEventSynchronize(e1));
                CHECK(cudaGetLastError());
                CHECK(cudaEventElapsedTime(&ms, e0, e1));
                if (rep) times.push_back(ms * 1e3f);
            }
            CHECK(cudaGraphExecDestroy(exec));
            CHECK(cudaGraphDestroy(graph));
            return median(times);
        };
        float per_type[4];
        for (int type = 0; type < 4; ++type) per_type[type] = time_chain(type) / 32;
        const float m = time_chain(-1);
        CHECK(cudaMemcpy(y_now.data(), y, y_len * 4, cudaMemcpyDeviceToHost));
        std::printf("%2d rows %s NW %2d TPB %d U %d cap %d/SM %s  %d blocks/SM  %7.1f us per step (%4.0f GB/s)  per launch "
                    "q/k/v %5.2f o %5.2f gate/up %5.2f down %5.2f",
                    ROWS * var.rb, var.ak == 2 ? "A spans" : var.ak ? "A korder" : "A frags ", var.nw, var.tpb, var.u, var.minb, var.dot ? "mma" : "xor", occ, m, (wbytes + sbytes) / m / 1e3,
                    per_type[0], per_type[1], per_type[2], per_type[3]);
        if (var.dot) {
            // The last layer's o (type 1) and down (type 3) against float64, at a spread of outputs.
            double worst = 0, scale = 0;
            for (int type : {1, 3}) {
                const Phase& ph = chain[chain.size() - 4 + type];
                std::vector<uint32_t> hw((size_t)ph.k * ph.tiles * 2);
                std::vector<uint32_t> hs((size_t)ph.k / GROUP * ph.tiles * 16);
                CHECK(cudaMemcpy(hw.data(), ph.w, hw.size() * 4, cudaMemcpyDeviceToHost));
                CHECK(cudaMemcpy(hs.data(), ph.sz, hs.size() * 4, cudaMemcpyDeviceToHost));
                const uint32_t n = ph.tiles * 16, groups = ph.k / GROUP;
                for (uint32_t q = 0; q < 48; ++q) {
                    const uint32_t col = (q * 97 + 13) % n, r = (q * 7) % (ROWS * var.rb);
                    double ref = 0;
                    for (uint32_t kk = 0; kk < ph.k; ++kk) {
                        const uint32_t word = hs[((size_t)(col / 16) * groups + kk / GROUP) * 16 + col % 16];
                        const double sc = __half2float(__ushort_as_half(word & 0xFFFF));
                        const double z = __half2float(__ushort_as_half(word >> 16)) - 1024.0;
                        ref += (weight_at(hw, ph.k, kk, col) - z) * sc * __half2float(x[(size_t)r * MAX_K + kk]);
                    }
                    const double got = y_now[(size_t)type * MAX_RB * ROWS * MAX_N + (size_t)r * n + col];
                    worst = std::isfinite(got) ? std::max(worst, std::fabs(got - ref)) : INFINITY;
                    scale = std::max(scale, std::fabs(ref));
                }
            }
            std::printf("  o, down vs float64: max |error| %.2e of max |y| %.2e%s", worst, scale,
                        worst <= 2e-3 * scale ? "" : "  MISMATCH");
        }
        std::printf("\n");
    }
    return 0;
}

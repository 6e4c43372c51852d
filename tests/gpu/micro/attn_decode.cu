// The decode attention at long contexts, alone: the engine's kernels, two probes of their pass and a read-only
// pass over the same bytes on the same grid (not part of the engine: built and run by hand with nvcc on the GPU
// machine, see tests/gpu/micro/README.md).
//
// Why: in a 7B decode step at 2048 positions the attention reads 33.5 MB per layer and is charged ~18 µs for it on
// an H100, where the card reads those bytes in ~11. Is the pass bound by its loads (one round of 16-byte loads per
// warp in flight, the next after this round's softmax) or by its arithmetic? The probes answer: the same loads with
// no softmax, and the same softmax over rows that stay in L1.
//
// Each variant runs over 32 layers' caches (each 33.5 MB at 4096 positions of capacity, so nothing is an L2 hit
// from the layer before) in a row, 15 times after a warm-up; the median per layer is printed (launch included:
// ~4-5 µs of each figure is the launch, as the 20-position run shows), and the split kernel's outputs are compared
// with the cluster kernel's.
#include "../../../ptx/kernels/attention.cu"
#include "micro_check.cuh"
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

// Diagnostics of the engine's pass (attn::block_pass over attn::warp_pass): MODE 1 keeps its loads (the same
// addresses, rounds and UNROLL) and replaces the online softmax by an xor of the words (the access pattern's own
// time); MODE 2 keeps the softmax and reads every round's keys and values from the split's first round of
// positions (L1 / L2 hits after the first: the arithmetic and its dependency chain without the DRAM stream).
template <int MODE>
__global__ void __launch_bounds__(128) attn_pass_probe(const AttnParams p, uint32_t* sink) {
    const uint32_t h = blockIdx.x, split = blockIdx.y, lp = p.head_dim / 8, ppw = 32 / lp;
    const attn::Split s(p, split, attn::decode_position(p));
    if (split >= s.active) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t dl = lane % lp, pg = lane / lp, kvh = h / (p.heads / p.kv_heads);
    const __half* kbase = p.k_cache + (size_t)kvh * p.ctx * p.head_dim + dl * 8;
    const __half* vbase = p.v_cache + (size_t)kvh * p.ctx * p.head_dim + dl * 8;
    attn::State st = attn::empty_state();
    float q[8];
    attn::load8(p.q + h * p.head_dim + dl * 8, q);
    uint32_t x = 0;
    const uint32_t stride = attn::WARPS * ppw * attn::UNROLL;
    for (uint32_t base = s.begin + warp * ppw * attn::UNROLL; base < s.end; base += stride) {
        uint4 kr[attn::UNROLL], vr[attn::UNROLL];
#pragma unroll
        for (int u = 0; u < attn::UNROLL; ++u) {
            const uint32_t pos = base + u * ppw + pg;
            const uint32_t at = MODE == 2 ? s.begin + (pos - s.begin) % stride : pos;
            if (pos < s.end) {
                kr[u] = attn::load16(kbase + (size_t)at * p.head_dim);
                vr[u] = attn::load16(vbase + (size_t)at * p.head_dim);
            }
        }
        if (MODE == 1) {
#pragma unroll
            for (int u = 0; u < attn::UNROLL; ++u)
                if (base + u * ppw + pg < s.end) x ^= kr[u].x ^ kr[u].w ^ vr[u].y ^ vr[u].z;
        } else {
            attn::softmax_round(st, q, kr, vr, base, ppw, pg, s.end, lp, p.scale_log2);
        }
    }
    attn::merge_lane_groups(st, lp);
    if (x == 0x9E3779B9u || st.l == 12345.f) *sink = x;
}

// The same grid reading the same bytes and doing nothing with them (an xor per thread, stored only if it is a
// value random data never gives): the floor for this grid's shape. R 16-byte loads per thread in flight per round.
template <int R>
__global__ void __launch_bounds__(128) attn_read_only(const AttnParams p, uint32_t* sink) {
    const uint32_t h = blockIdx.x, split = blockIdx.y;
    const uint32_t kvh = h / (p.heads / p.kv_heads);
    const attn::Split s(p, split, attn::decode_position(p));
    if (split >= s.active) return;
    const uint4* k = reinterpret_cast<const uint4*>(p.k_cache + ((size_t)kvh * p.ctx + s.begin) * p.head_dim);
    const uint4* v = reinterpret_cast<const uint4*>(p.v_cache + ((size_t)kvh * p.ctx + s.begin) * p.head_dim);
    const uint32_t n16 = (s.end - s.begin) * p.head_dim / 8;
    uint32_t x = 0;
    for (uint32_t i0 = threadIdx.x; i0 < n16; i0 += 128 * R) {
        uint4 a[R], b[R];
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (i0 + r * 128 < n16) a[r] = ldg_nc_v4(k + i0 + r * 128), b[r] = ldg_nc_v4(v + i0 + r * 128);
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (i0 + r * 128 < n16) x ^= a[r].x ^ a[r].w ^ b[r].y ^ b[r].z;
    }
    if (x == 0x9E3779B9u) *sink = x;
}

__global__ void fill_half(__half* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 2654435761u ^ seed;
        x ^= x >> 15, x *= 2246822519u, x ^= x >> 13;
        p[i] = __float2half(((x & 0xFFFF) / 65536.f - 0.5f) * 2.f);
    }
}

struct Variant {
    const char* name;
    void (*launch)(const AttnParams&, cudaStream_t);
};

static uint32_t* g_sink;
static void run_cluster(const AttnParams& p, cudaStream_t st) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(p.heads, p.splits);
    cfg.blockDim = dim3(128);
    cfg.stream = st;
    cudaLaunchAttribute a[1];
    a[0].id = cudaLaunchAttributeClusterDimension;
    a[0].val.clusterDim.x = 1, a[0].val.clusterDim.y = p.splits, a[0].val.clusterDim.z = 1;
    cfg.attrs = a;
    cfg.numAttrs = 1;
    void* args[] = {(void*)&p};
    CHECK(cudaLaunchKernelExC(&cfg, (const void*)attn_decode_cluster, args));
}
static void run_split(const AttnParams& p, cudaStream_t st) { attn_decode<<<dim3(p.heads, p.splits), 128, 0, st>>>(p); }
template <int MODE>
static void run_probe(const AttnParams& p, cudaStream_t st) {
    attn_pass_probe<MODE><<<dim3(p.heads, p.splits), 128, 0, st>>>(p, g_sink);
}
template <int R>
static void run_read(const AttnParams& p, cudaStream_t st) {
    attn_read_only<R><<<dim3(p.heads, p.splits), 128, 0, st>>>(p, g_sink);
}

int main(int argc, char** argv) {
    const uint32_t heads = 32, hd = 128, ctx = 4096, layers = 32, splits = 16;
    const uint32_t position = argc > 1 ? (uint32_t)atoi(argv[1]) : 2100;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("%s, %d SMs; position %u, %u heads × %u, %u splits, %u layers\n", prop.name,
                prop.multiProcessorCount, position, heads, hd, splits, layers);
    CHECK(cudaFuncSetAttribute((const void*)attn_decode_cluster, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    const size_t cache = (size_t)heads * ctx * hd;  // elements per layer and array
    __half *k, *v, *q, *out;
    float *part_o, *part_ml;
    uint32_t *counters, *pos;
    CHECK(cudaMalloc(&k, cache * layers * 2));
    CHECK(cudaMalloc(&v, cache * layers * 2));
    CHECK(cudaMalloc(&q, heads * hd * 2));
    CHECK(cudaMalloc(&out, (size_t)layers * heads * hd * 2));
    CHECK(cudaMalloc(&part_o, (size_t)heads * 64 * hd * 4));
    CHECK(cudaMalloc(&part_ml, (size_t)heads * 64 * 2 * 4));
    CHECK(cudaMalloc(&counters, heads * 4));
    CHECK(cudaMalloc(&pos, 4));
    CHECK(cudaMalloc(&g_sink, 4));
    CHECK(cudaMemset(counters, 0, heads * 4));
    CHECK(cudaMemcpy(pos, &position, 4, cudaMemcpyHostToDevice));
    fill_half<<<1024, 256>>>(k, cache * layers, 1);
    fill_half<<<1024, 256>>>(v, cache * layers, 2);
    fill_half<<<64, 256>>>(q, heads * hd, 3);
    CHECK(cudaDeviceSynchronize());
    auto params = [&](uint32_t l) {
        AttnParams p{};
        p.q = q, p.k_cache = k + l * cache, p.v_cache = v + l * cache, p.out = out + (size_t)l * heads * hd;
        p.part_o = part_o, p.part_ml = part_ml, p.counters = counters, p.pos = pos, p.out_idx = nullptr;
        p.heads = heads, p.kv_heads = heads, p.head_dim = hd, p.ctx = ctx, p.splits = splits;
        p.scale_log2 = 1.4426950409f / sqrtf((float)hd), p.rows = 1, p.order = 0;
        return p;
    };
    const Variant variants[] = {
        {"engine attn_decode_cluster", run_cluster},
        {"engine attn_decode (split)", run_split},
        {"probe: the pass's loads, no softmax", run_probe<1>},
        {"probe: the pass's softmax on cached rows", run_probe<2>},
        {"read-only, 4 loads per array", run_read<4>},
        {"read-only, 8 per array", run_read<8>},
    };
    std::vector<__half> ref((size_t)layers * heads * hd), got(ref.size());
    cudaStream_t st;
    CHECK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    const double bytes = 2.0 * (position + 1) * heads * hd * 2;
    for (const Variant& var : variants) {
        CHECK(cudaMemset(out, 0xFF, ref.size() * 2));  // NaN: a variant that writes nothing fails the comparison
        std::vector<float> t;
        for (int rep = 0; rep < 16; ++rep) {
            CHECK(cudaEventRecord(e0, st));
            for (uint32_t l = 0; l < layers; ++l) var.launch(params(l), st);
            CHECK(cudaEventRecord(e1, st));
            CHECK(cudaEventSynchronize(e1));
            float ms;
            CHECK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep > 0) t.push_back(ms * 1000.f / layers);
        }
        CHECK(cudaGetLastError());
        std::sort(t.begin(), t.end());
        const float us = t[t.size() / 2];
        std::printf("%-34s %7.2f µs per layer (min %.2f, max %.2f) %7.0f GB/s", var.name, us, t.front(), t.back(),
                    bytes / us / 1e3);
        if (std::strncmp(var.name, "read", 4) != 0 && std::strncmp(var.name, "probe", 5) != 0) {
            CHECK(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost));
            if (&var == &variants[0]) ref = got;
            size_t diff = 0;
            double worst = 0;
            for (size_t i = 0; i < got.size(); ++i) {
                const float a = __half2float(ref[i]), b = __half2float(got[i]);
                if (std::memcmp(&ref[i], &got[i], 2) != 0) ++diff;
                worst = std::max(worst, (double)std::fabs(a - b));
                if (b != b) worst = INFINITY;
            }
            std::printf(" | %zu of %zu outputs differ from the cluster kernel's bits, max |diff| %.3g", diff,
                        got.size(), worst);
        }
        std::printf("\n");
    }
    return 0;
}

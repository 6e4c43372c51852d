// Tensor-core issue rates at a 16-row chunk's shapes, for choosing the short-prefill kernel's multiply (not part of
// the engine: built and run by hand with nvcc on the GPU machine, see tests/gpu/micro/README.md).
//
// What it measures, per SM, with B blocks of 256 threads resident (B = 1..4):
//   wgmma_chain  : 4 dependent wgmma m64n16k16 (A from registers) then commit + wait 0, per step — the short tile's
//                  step without its loads and dequantization;
//   wgmma_pipe   : the same with wait 1 (the next step's multiplies issued before the previous ones finish);
//   mma_sync     : mma.sync m16n8k16 on 4 independent accumulators per warp (16 rows × 8 slots each);
// as multiply-accumulates per cycle per SM (a dense H100/H200 SM peaks at 1024 fp16 MACs per cycle with wgmma).
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_fp16.h>

__device__ __forceinline__ uint64_t desc_of(uint32_t addr) {
    return (uint64_t)((addr & 0x3FFFFu) >> 4) | (1ull << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma16(float (&d)[8], const uint32_t (&a)[4], uint64_t db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

// The short tile's per-step dequantization: 2 words + 2 (scale, zero) words per slot half from shared memory, 16
// fragment registers out (lop3-or, hsub2, hmul2 per pair).
__device__ __forceinline__ void dequant(const __half* b, int s, uint32_t (&a)[4][4]) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(b) + ((threadIdx.x * 4 + 64 * (s & 7)) & 4095);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const uint2 w = *reinterpret_cast<const uint2*>(src + 8 * h);
        const uint32_t szw = src[2 + 8 * h];
        const __half2 szh = *reinterpret_cast<const __half2*>(&szw);
        const __half2 zz = __high2half2(szh), sc = __low2half2(szh);
        const uint32_t words[2] = {w.x, w.y};
#pragma unroll
        for (int q = 0; q < 2; ++q) {
            const uint32_t x = words[q], hi = x >> 8;
            const uint32_t m[4] = {(x & 0x000F000Fu) | 0x64006400u, (x & 0x00F000F0u) | 0x64006400u,
                                   (hi & 0x000F000Fu) | 0x64006400u, (hi & 0x00F000F0u) | 0x64006400u};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const __half2 v = __hmul2(__hsub2(*reinterpret_cast<const __half2*>(&m[i]), zz), sc);
                a[i][2 * q + h] = *reinterpret_cast<const uint32_t*>(&v);
            }
        }
    }
}

// SYNC: 0 none, 1 a block barrier per step, 2 the async-proxy fence and a barrier per step (the short tile's
// per-step protocol without its copies), 3 that and the fragments read from shared memory and dequantized as the
// short tile does (its loads from global memory are all that is missing), 4 as 3 with the next step's fragments
// dequantized while this step's multiplies run (two fragment buffers).
template <int WAIT, int SYNC = 0>
__global__ void __launch_bounds__(256) wgmma_steps(int steps, float* out) {
    __shared__ __align__(1024) __half b[8 * 1024];
    for (int i = threadIdx.x; i < 8 * 1024; i += 256) b[i] = __float2half(0.001f * (i & 7));
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(b);
    const uint64_t db = desc_of(base);
    float d[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t a[2][4][4];
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) a[s][i][j] = 0x3C003C00u ^ (threadIdx.x * 7 + i + j + s);
    if (SYNC == 4) dequant(b, 0, a[0]);
    for (int s0 = 0; s0 < steps; s0 += 2) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {  // two steps per iteration: the fragment buffers stay registers
            const int s = s0 + u;
            if (SYNC >= 2) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            if (SYNC >= 1) __syncthreads();
            if (SYNC == 3) dequant(b, s, a[u]);
            asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
            for (int k = 0; k < 4; ++k) wgmma16(d, a[u][k], db + 2 * k + 128 * (s & 3));
            asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
            if (SYNC == 4) dequant(b, s + 1, a[u ^ 1]);
            if (WAIT == 0) asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
            else asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
        }
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    float s = 0;
    for (int i = 0; i < 8; ++i) s += d[i];
    if (s == 12345.f) out[threadIdx.x] = s;
}

__global__ void __launch_bounds__(256) mma_steps(int steps, float* out) {
    float c[4][4] = {};
    uint32_t a[4], b[2];
    for (int i = 0; i < 4; ++i) a[i] = 0x3C003C00u ^ (threadIdx.x + i);
    b[0] = 0x3C00u ^ threadIdx.x, b[1] = 0x3800u;
    for (int s = 0; s < steps; ++s) {
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r)  // 4 k16 blocks per step, like the short tile's 64-row step
                asm volatile(
                    "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                    "{%0,%1,%2,%3};\n"
                    : "+f"(c[j][0]), "+f"(c[j][1]), "+f"(c[j][2]), "+f"(c[j][3])
                    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0] + r), "r"(b[1]));
    }
    float s = 0;
    for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i) s += c[j][i];
    if (s == 12345.f) out[threadIdx.x] = s;
}

template <typename F>
static float time_ms(F launch) {
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    launch();
    cudaDeviceSynchronize();
    float best = 1e30f;
    for (int r = 0; r < 5; ++r) {
        cudaEventRecord(e0);
        launch();
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        best = ms < best ? ms : best;
    }
    return best;
}

int main() {
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    int clock_khz = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
    const int sms = prop.multiProcessorCount;
    float* out;
    cudaMalloc(&out, 1024 * sizeof(float));
    const int steps = 20000;
    printf("%s, %d SMs, %d MHz\n", prop.name, sms, clock_khz / 1000);
    for (int blocks = 1; blocks <= 4; ++blocks) {
        const int grid = sms * blocks;
        // MACs per block-step: 2 warpgroups x 4 x (64 x 16 x 16) for wgmma; 8 warps x 16 x (16 x 8 x 16) for mma.sync.
        const double wg_macs = (double)grid * steps * 2 * 4 * 64 * 16 * 16;
        const double mma_macs = (double)grid * steps * 8 * 16 * 16 * 8 * 16;
        const float t0 = time_ms([&] { wgmma_steps<0><<<grid, 256>>>(steps, out); });
        const float t1 = time_ms([&] { wgmma_steps<1><<<grid, 256>>>(steps, out); });
        const float t2 = time_ms([&] { mma_steps<<<grid, 256>>>(steps, out); });
        const float t3 = time_ms([&] { wgmma_steps<0, 1><<<grid, 256>>>(steps, out); });
        const float t4 = time_ms([&] { wgmma_steps<0, 2><<<grid, 256>>>(steps, out); });
        const float t5 = time_ms([&] { wgmma_steps<0, 3><<<grid, 256>>>(steps, out); });
        const float t6 = time_ms([&] { wgmma_steps<0, 4><<<grid, 256>>>(steps, out); });
        auto per_sm_cycle = [&](double macs, float ms) { return macs / sms / (ms * 1e-3 * clock_khz * 1e3); };
        auto ns_per_step = [&](float ms) { return ms * 1e6 / steps; };
        printf("blocks/SM %d: wgmma_chain %.0f MAC/clk/SM (%.1f ns per block-step)  wgmma_pipe %.0f (%.1f ns)  "
               "mma_sync %.0f (%.1f ns per block-step of the same MACs x2)\n",
               blocks, per_sm_cycle(wg_macs, t0), ns_per_step(t0), per_sm_cycle(wg_macs, t1), ns_per_step(t1),
               per_sm_cycle(mma_macs, t2), ns_per_step(t2));
        printf("             wgmma_chain + barrier %.1f ns per block-step, + async-proxy fence and barrier %.1f ns\n",
               ns_per_step(t3), ns_per_step(t4));
        printf("             + fragments from shared memory, dequantized %.1f ns; the next step's dequantized during the "
               "multiply %.1f ns\n", ns_per_step(t5), ns_per_step(t6));
    }
    cudaError_t e = cudaGetLastError();
    printf("status: %s\n", cudaGetErrorString(e));
    return e == cudaSuccess ? 0 : 1;
}

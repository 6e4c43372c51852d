// What a decode step's kernel boundaries cost against one persistent kernel with a grid barrier per phase, for
// choosing issue 13's design (not part of the engine: built and run by hand with nvcc on the GPU machine, see
// tests/gpu/micro/README.md).
//
// A "step" is 128 phases over the 7B layer's four GEMV byte counts (q/k/v 25.2 MB, o 8.4, gate/up 45.1, down 22.5 MB,
// 32 times: 3.24 GB). Each phase streams its bytes like a decode GEMV does — every thread keeps BATCH 16-byte
// loads in flight, the first batch asked for before it may depend on the previous phase — and depends on it for
// real: it reads a value the previous phase's blocks wrote and writes one for the next. Four ways to run it:
//   one     : a single phase over all 3.24 GB (no boundary at all: the ideal);
//   chain   : 128 kernels in a CUDA graph with programmatic dependent launch (griddepcontrol), as the engine runs;
//   persist : one kernel whose blocks (all resident) walk the 128 phases, waiting on a global arrival counter
//             between phases — after asking for the next phase's first batch;
//   persist+ring : the same, with one more warp per block streaming the block's 16 or 32 KB chunks of every phase
//             into a shared-memory ring by bulk copies, never waiting for the grid (up to the ring's depth ahead);
//             also over all the bytes as one phase, the ring's own rate.
// Each with 1, 2 and 4 blocks of 256 threads per SM; medians of 7 timed runs after one warm-up, CUDA events.
#include "micro.cuh"

constexpr int THREADS = 256;
constexpr int BATCH = 4;  // 16-byte loads per thread in flight, as the decode GEMV's lanes keep

struct Phase {
    const uint4* w;
    uint64_t n16;  // 16-byte words
};

// Not kept in L1, no L2 line hint: what this program measured with.
__device__ __forceinline__ uint4 ldg_no_l1(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ uint32_t fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// The first batch of this thread's share of phase `ph` (block b of g): word i0 + k · stride, k < BATCH.
__device__ __forceinline__ void first_batch(const Phase& ph, uint32_t b, uint32_t g, uint4 (&v)[BATCH]) {
    const uint64_t stride = (uint64_t)g * THREADS, i0 = (uint64_t)b * THREADS + threadIdx.x;
#pragma unroll
    for (int k = 0; k < BATCH; ++k) {
        const uint64_t i = i0 + k * stride;
        v[k] = i < ph.n16 ? ldg_no_l1(ph.w + i) : make_uint4(0, 0, 0, 0);
    }
}

// The rest of the share: each batch consumed as the next one is in flight; returns the block's fold.
__device__ uint32_t stream_rest(const Phase& ph, uint32_t b, uint32_t g, uint4 (&v)[BATCH], uint32_t* red) {
    const uint64_t stride = (uint64_t)g * THREADS;
    uint32_t acc = 0;
    for (uint64_t i0 = (uint64_t)b * THREADS + threadIdx.x + BATCH * stride; ; i0 += BATCH * stride) {
        uint4 n[BATCH];
        const bool more = i0 < ph.n16;
#pragma unroll
        for (int k = 0; k < BATCH; ++k) {
            const uint64_t i = i0 + k * stride;
            n[k] = i < ph.n16 ? ldg_no_l1(ph.w + i) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int k = 0; k < BATCH; ++k) acc += fold(v[k]), v[k] = n[k];
        if (!more) break;
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
    __syncthreads();
    uint32_t total = 0;
    if (threadIdx.x == 0)
        for (int w = 0; w < THREADS / 32; ++w) total += red[w];
    return total;
}

// One phase as a kernel of the chain: x_in is what the previous phase's blocks wrote (one word per block).
__global__ void __launch_bounds__(THREADS) phase_kernel(Phase ph, const uint32_t* x_in, uint32_t* x_out) {
    __shared__ uint32_t red[THREADS / 32];
    uint4 v[BATCH];
    first_batch(ph, blockIdx.x, gridDim.x, v);
    asm volatile("griddepcontrol.wait;" ::: "memory");
    const uint32_t dep = x_in[blockIdx.x];
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    const uint32_t total = stream_rest(ph, blockIdx.x, gridDim.x, v, red);
    if (threadIdx.x == 0) x_out[blockIdx.x] = total + dep;
}


// The whole step in one kernel: phase p waits until every block has finished phase p − 1 (arrived == p · grid),
// after asking for its own first batch. xs[p][block] is what phase p − 1 left for phase p.
__global__ void __launch_bounds__(THREADS) persistent(const Phase* phases, int n, uint32_t* xs, uint32_t* arrived) {
    __shared__ uint32_t red[THREADS / 32];
    const uint32_t g = gridDim.x, b = blockIdx.x;
    for (int p = 0; p < n; ++p) {
        const Phase ph = phases[p];
        uint4 v[BATCH];
        first_batch(ph, b, g, v);
        if (threadIdx.x == 0)
            while (load_acquire(arrived) < (uint32_t)p * g) {
            }
        __syncthreads();
        const uint32_t dep = ((volatile uint32_t*)xs)[(size_t)p * g + b];
        const uint32_t total = stream_rest(ph, b, g, v, red);
        if (threadIdx.x == 0) {
            xs[(size_t)(p + 1) * g + b] = total + dep;
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(arrived) : "memory");
        }
        __syncthreads();  // red[] is reused by the next phase
    }
}


// ---------------------------------------------------------------------------------------------------------------
// persist+ring: the persistent kernel with one more warp that streams the block's chunks of every phase, in order,
// into a ring of shared-memory stages by bulk copies (cp.async.bulk, completing on an mbarrier per stage), without
// ever waiting for the grid: it runs up to STAGES chunks ahead across phase boundaries, while the 256 consuming
// threads wait for the previous phase at the barrier. Chunk j of phase p (`chunk` bytes) belongs to block j mod grid.

__device__ __forceinline__ uint32_t chunk_bytes(uint64_t bytes, uint32_t j, uint32_t chunk) {
    const uint64_t left = bytes - (uint64_t)j * chunk;
    return left < chunk ? (uint32_t)left : chunk;
}
__device__ __forceinline__ uint32_t chunks_of(const Phase& ph, uint32_t chunk) {
    return (uint32_t)((ph.n16 * 16 + chunk - 1) / chunk);
}

__global__ void __launch_bounds__(THREADS + 32) persistent_ring(const Phase* phases, int n, uint32_t* xs,
                                                               uint32_t* arrived, uint32_t stages, uint32_t chunk) {
    extern __shared__ __align__(128) unsigned char ring[];
    uint64_t* full = reinterpret_cast<uint64_t*>(ring + stages * chunk);
    uint64_t* empty = full + stages;
    __shared__ uint32_t red[THREADS / 32];
    const uint32_t g = gridDim.x, b = blockIdx.x, warp = threadIdx.x >> 5;
    if (threadIdx.x == 0) {
        for (uint32_t i = 0; i < stages; ++i) mbar_init(full + i, 1), mbar_init(empty + i, THREADS / 32);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (warp == THREADS / 32) {  // the copying warp
        if ((threadIdx.x & 31) == 0) {
            uint32_t i = 0;
            for (int p = 0; p < n; ++p) {
                const Phase ph = phases[p];
                const uint64_t bytes = ph.n16 * 16;
                for (uint32_t j = b; j < chunks_of(ph, chunk); j += g, ++i) {
                    const uint32_t slot = i % stages;
                    if (i >= stages) mbar_wait(empty + slot, (i / stages - 1) & 1);
                    const uint32_t nb = chunk_bytes(bytes, j, chunk);
                    mbar_expect(full + slot, nb);
                    bulk_copy(ring + slot * chunk, reinterpret_cast<const unsigned char*>(ph.w) + (uint64_t)j * chunk,
                              nb, full + slot);
                }
            }
        }
        return;
    }
    uint32_t i = 0;
    for (int p = 0; p < n; ++p) {
        const Phase ph = phases[p];
        const uint64_t bytes = ph.n16 * 16;
        if (threadIdx.x == 0)
            while (load_acquire(arrived) < (uint32_t)p * g) {
            }
        asm volatile("bar.sync 1, %0;" ::"r"(THREADS) : "memory");
        const uint32_t dep = ((volatile uint32_t*)xs)[(size_t)p * g + b];
        uint32_t acc = 0;
        for (uint32_t j = b; j < chunks_of(ph, chunk); j += g, ++i) {
            const uint32_t slot = i % stages;
            const uint32_t nb = chunk_bytes(bytes, j, chunk);
            mbar_wait(full + slot, (i / stages) & 1);
            const uint4* st = reinterpret_cast<const uint4*>(ring + slot * chunk);
            for (uint32_t k = threadIdx.x; k < nb / 16; k += THREADS) acc += fold(st[k]);
            __syncwarp();
            if ((threadIdx.x & 31) == 0) mbar_arrive(empty + slot);
        }
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if ((threadIdx.x & 31) == 0) red[warp] = acc;
        asm volatile("bar.sync 1, %0;" ::"r"(THREADS) : "memory");
        if (threadIdx.x == 0) {
            uint32_t total = 0;
            for (int w = 0; w < THREADS / 32; ++w) total += red[w];
            xs[(size_t)(p + 1) * g + b] = total + dep;
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(arrived) : "memory");
        }
    }
}

int main() {
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const uint64_t layer[4] = {4096ull * 12288 / 2, 4096ull * 4096 / 2, 4096ull * 22016 / 2, 11008ull * 4096 / 2};
    std::vector<Phase> chain;
    uint64_t total = 0;
    for (int l = 0; l < 32; ++l)
        for (uint64_t bytes : layer) chain.push_back({nullptr, bytes / 16}), total += bytes;
    uint4* w = nullptr;
    CHECK(cudaMalloc(&w, total));
    CHECK(cudaMemset(w, 0x5A, total));
    uint64_t at = 0;
    for (auto& ph : chain) ph.w = w + at, at += ph.n16;
    const int n = (int)chain.size();
    Phase* d_phases = nullptr;
    CHECK(cudaMalloc(&d_phases, n * sizeof(Phase)));
    CHECK(cudaMemcpy(d_phases, chain.data(), n * sizeof(Phase), cudaMemcpyHostToDevice));
    const int max_grid = sms * 4;
    uint32_t *xs = nullptr, *arrived = nullptr;
    CHECK(cudaMalloc(&xs, (size_t)(n + 1) * max_grid * 4));
    CHECK(cudaMalloc(&arrived, 4));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    std::printf("%d SMs, %.2f GB per step in %d phases\n", sms, total / 1e9, n);

    for (int per_sm : {1, 2, 4}) {
        const int grid = sms * per_sm;
        int fits = 0;
        CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fits, persistent, THREADS, 0));
        if (fits < per_sm) {
            std::printf("%d blocks/SM: only %d fit, skipped\n", per_sm, fits);
            continue;
        }
        auto launch_phase = [&](const Phase& ph, const uint32_t* in, uint32_t* out) {
            launch_pdl(phase_kernel, dim3(grid), dim3(THREADS), 0, s, ph, in, out);
        };
        // The chain, captured once as a graph.
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        for (int p = 0; p < n; ++p) launch_phase(chain[p], xs + (size_t)p * grid, xs + (size_t)(p + 1) * grid);
        CHECK(cudaStreamEndCapture(s, &graph));
        CHECK(cudaGraphInstantiate(&exec, graph, 0));
        const Phase all = {w, total / 16};
        std::vector<float> t_one, t_chain, t_persist;
        for (int rep = 0; rep < 8; ++rep) {
            float ms = 0;
            CHECK(cudaEventRecord(e0, s));
            launch_phase(all, xs, xs + grid);
            CHECK(cudaEventRecord(e1, s));
            CHECK(cudaEventSynchronize(e1));
            CHECK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep) t_one.push_back(ms * 1e3f);

            CHECK(cudaEventRecord(e0, s));
            CHECK(cudaGraphLaunch(exec, s));
            CHECK(cudaEventRecord(e1, s));
            CHECK(cudaEventSynchronize(e1));
            CHECK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep) t_chain.push_back(ms * 1e3f);

            CHECK(cudaMemsetAsync(arrived, 0, 4, s));
            CHECK(cudaEventRecord(e0, s));
            persistent<<<grid, THREADS, 0, s>>>(d_phases, n, xs, arrived);
            CHECK(cudaEventRecord(e1, s));
            CHECK(cudaEventSynchronize(e1));
            CHECK(cudaGetLastError());
            CHECK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep) t_persist.push_back(ms * 1e3f);
        }
        // The ring: as many stages as per_sm blocks leave room for (227 KB of shared memory per SM), over all the
        // phases and over the bytes as one phase (its own streaming rate without boundaries).
        Phase* d_all = nullptr;
        const Phase all_one = {w, total / 16};
        CHECK(cudaMalloc(&d_all, sizeof(Phase)));
        CHECK(cudaMemcpy(d_all, &all_one, sizeof(Phase), cudaMemcpyHostToDevice));
        for (uint32_t chunk : {16384u, 32768u}) {
            const uint32_t stages = std::min(12u, (uint32_t)((227 * 1024 / per_sm - 1024) / (chunk + 16)));
            const size_t ring_smem = stages * (chunk + 16);
            CHECK(cudaFuncSetAttribute(persistent_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ring_smem));
            int ring_fits = 0;
            CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ring_fits, persistent_ring, THREADS + 32, ring_smem));
            if (stages < 2 || ring_fits < per_sm) {
                std::printf("%d blocks/SM: persist+ring with %u KB chunks does not fit\n", per_sm, chunk / 1024);
                continue;
            }
            float r[2];
            for (int v = 0; v < 2; ++v) {
                std::vector<float> t;
                for (int rep = 0; rep < 8; ++rep) {
                    float ms = 0;
                    CHECK(cudaMemsetAsync(arrived, 0, 4, s));
                    CHECK(cudaEventRecord(e0, s));
                    persistent_ring<<<grid, THREADS + 32, ring_smem, s>>>(v ? d_all : d_phases, v ? 1 : n, xs, arrived,
                                                                         stages, chunk);
                    CHECK(cudaEventRecord(e1, s));
                    CHECK(cudaEventSynchronize(e1));
                    CHECK(cudaGetLastError());
                    CHECK(cudaEventElapsedTime(&ms, e0, e1));
                    if (rep) t.push_back(ms * 1e3f);
                }
                r[v] = median(t);
            }
            std::printf("%d blocks/SM: persist+ring (%u stages of %u KB) %8.1f us (%5.0f GB/s); its one phase %8.1f us "
                        "(%5.0f GB/s): %.2f us per boundary\n",
                        per_sm, stages, chunk / 1024, r[0], total / r[0] / 1e3, r[1], total / r[1] / 1e3,
                        (r[0] - r[1]) / (n - 1));
        }
        CHECK(cudaFree(d_all));
        const float one = median(t_one), ch = median(t_chain), pe = median(t_persist);
        std::printf("%d blocks/SM: one %8.1f us (%5.0f GB/s) | chain %8.1f us (%5.0f GB/s, %.2f us per boundary) | "
                    "persist %8.1f us (%5.0f GB/s, %.2f us per boundary)\n",
                    per_sm, one, total / one / 1e3, ch, total / ch / 1e3, (ch - one) / (n - 1), pe,
                    total / pe / 1e3, (pe - one) / (n - 1));
        CHECK(cudaGraphExecDestroy(exec));
        CHECK(cudaGraphDestroy(graph));
    }
    return 0;
}

// Tiny helpers shared by every kernel file. One module is built from all of ptx/kernels/*.cu, so everything here is
// `static __forceinline__`: it costs nothing unless a kernel uses it, and it never shows up as a PTX symbol.
//
// Conventions for kernel files (see ptx/README.md):
//   - one concern per .cu file; kernels are `extern "C" __global__` so their PTX names are the source names;
//   - sizes and indices that can pass 2^31 elements are uint64_t;
//   - a kernel calls pdl_wait() before its first global access that may touch what an earlier kernel wrote
//     (or still reads), and may call pdl_launch_dependents() as soon as it likes (see below).
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC ships no C/C++ standard headers. These match glibc's LP64 definitions, so a file that is also compiled by
// nvcc with <cstdint> sees the same types.
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long int64_t;
typedef unsigned long uint64_t;
typedef unsigned long uintptr_t;
#else
#include <cstdint>
#endif

#define ENGINE_DEV static __device__ __forceinline__

// ---------------------------------------------------------------------------------------------------------------
// 16-byte global loads and stores.
// One 16-byte access per thread is the widest a thread can issue (LDG.E.128 / STG.E.128): a warp then moves 512
// contiguous bytes per instruction, four times fewer instructions than 4-byte accesses for the same bytes.
// Every pointer must be 16-byte aligned.
// ---------------------------------------------------------------------------------------------------------------

// Load through the read-only (non-coherent) path, like __ldg. Buys: the load may be cached in L1/texture cache and
// the compiler may reorder it freely. Contract: no thread writes this memory while the kernel runs.
ENGINE_DEV uint4 ldg_nc_v4(const uint4* p) {
    uint4 v;
    asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

// Load data that this block reads exactly once (weights streamed in a GEMV, a copy's source). Buys:
// `L1::no_allocate` keeps such bytes out of L1, so L1 stays for data that is reused (activations, tables);
// `L2::128B` asks L2 to fetch the whole 128-byte line, which a warp reading consecutive 16-byte chunks will use.
// Same contract as ldg_nc_v4.
ENGINE_DEV uint4 ldg_stream_v4(const uint4* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

// Plain 16-byte store (write-back, the default caching). Use for outputs that the next kernel reads soon: they may
// still be in L2 when it does.
ENGINE_DEV void stg_v4(uint4* p, uint4 v) {
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}

// Streaming 16-byte store (`.cs`: cache-streaming, evict-first). Buys: bytes nobody will read soon do not push
// useful lines out of L2. Use for large outputs (a copy's destination, poisoned buffers).
ENGINE_DEV void stg_stream_v4(uint4* p, uint4 v) {
    asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}

// Ask for the line holding `p` to be brought into L2 (and L1 with `_l1`), without waiting and without a
// register to receive it: for data a kernel will need later, where a load held in flight would cost registers.
ENGINE_DEV void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
ENGINE_DEV void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }

// ---------------------------------------------------------------------------------------------------------------
// Warp reductions. All 32 lanes must be active and call them together. The xor butterfly leaves the result in every
// lane, so no broadcast is needed afterwards, and the order of operations is fixed, so results are bit-for-bit
// reproducible run to run.
// ---------------------------------------------------------------------------------------------------------------

// The items [lo, hi) of n that slice i of `slices` covers: slices of ceil(n / slices) items, the last ones shorter
// or empty. Row kernels split a row over several blocks this way when a short prompt has too few rows to fill the
// card.
struct Slice {
    uint32_t lo, hi;
};
ENGINE_DEV Slice slice_of(uint32_t n, uint32_t i, uint32_t slices) {
    const uint32_t per = (n + slices - 1) / slices, lo = min(n, i * per);
    return {lo, min(n, lo + per)};
}

ENGINE_DEV float warp_reduce_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Block-wide sum of NW warps with a fixed order: warp sums, then every thread sums the warps in index order, so every
// thread gets the same bits, and so does every kernel that reduces the same values through it (the fused-norm GEMVs
// and the lm_head compute the same 1 / rms). `scratch` holds NW floats; the trailing barrier lets the caller reuse
// it at once.
template <int NW>
ENGINE_DEV float block_sum(float v, float* scratch) {
    v = warp_reduce_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) s += scratch[w];
    __syncthreads();
    return s;
}

// fmaxf returns the other operand when one is NaN, so a NaN lane does not poison the max: callers that must see
// NaNs (e.g. NaN-poison tests) have to check for them separately.
ENGINE_DEV float warp_reduce_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Programmatic dependent launch (PDL, Hopper and newer). When the host launches a kernel with the
// programmatic-stream-serialization attribute, that kernel may start while the previous kernel in the stream is
// still running; it overlaps its launch latency and prologue (index math, shared-memory setup) with the previous
// kernel's tail. Both wrappers compile to nothing below sm_90 (the compute_80 module), and on sm_90 they are no-ops
// when the kernel was launched without the attribute, so every kernel can call them unconditionally.
// ---------------------------------------------------------------------------------------------------------------

// Block until every kernel this one depends on has completed and its memory writes are visible. Call before the
// first global access that may touch what an earlier kernel wrote or still reads.
ENGINE_DEV void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Allow the next kernel in the stream to be scheduled now. Safe at any point, because the dependent kernel's own
// pdl_wait() still waits for this kernel to finish; earlier calls buy more overlap.
ENGINE_DEV void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// SwiGLU of one column: silu(gate) · up, in f32. One definition for swiglu_rows and the GEMM epilogue that fuses it.
ENGINE_DEV float silu_times(float gate, float up) { return gate / (1.f + __expf(-gate)) * up; }

// `v`, with how it was computed hidden from the compiler. Why: NVVM rematerializes cheap-looking address arithmetic
// at every use inside a loop rather than keep the value in a register; in a loop that streams weights, where the
// instructions issued per step are the cost, one register held is cheaper than the arithmetic repeated every step.
ENGINE_DEV uint32_t kept(uint32_t v) {
    asm volatile("" : "+r"(v));
    return v;
}
template <class T>
ENGINE_DEV const T* kept(const T* p) {
    asm volatile("" : "+l"(p));
    return p;
}

// Hopper's bulk asynchronous copies (cp.async.bulk, the TMA unit's one-dimensional form) and the mbarriers that
// count their bytes — also the ones the warp-specialized GEMM's warpgroups wait on each other with
// (gemm_wgmma_ws.cu). sm_90 only: everything here exists in the sm_90a module alone.
//
// Why a kernel wants them: one instruction of one thread moves kilobytes from global into shared memory, and the
// bytes in flight cost no registers. A streaming kernel whose loads sit in registers can keep only as many bytes in
// flight as its registers hold (the decode GEMV: 4 × 16 bytes per lane under a 64-register cap); a ring of
// shared-memory stages filled by bulk copies keeps tens of kilobytes per block in flight, and can ask for them
// before the kernel it depends on has finished (the weights never change).
#pragma once
#include "tensor_core.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace bulk {

using tc::smem_addr;

// `count` arrivals complete a phase. Make the initialization visible to the copy engine (the async proxy) before
// any copy names the barrier: `init_fence` once, by the initializing thread, after its last init.
ENGINE_DEV void init(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
ENGINE_DEV void init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }

// One arrival (release: this thread's shared-memory reads before it are done when the phase completes).
ENGINE_DEV void arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

// One arrival that also says `bytes` more are coming from bulk copies: the phase completes when both the arrivals
// and the bytes are in.
ENGINE_DEV void arrive_expect_bytes(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}

// Wait until the phase of parity `parity` (0 for the first phase, then alternating) has completed.
ENGINE_DEV void wait(uint64_t* bar, uint32_t parity) {
    asm volatile(
        "{\n.reg .pred done;\nBULK_WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra BULK_WAIT;\n}\n" ::"r"(smem_addr(bar)),
        "r"(parity)
        : "memory");
}

// Copy `bytes` (a multiple of 16; both addresses 16-byte aligned) from global to shared memory; `bar` counts them
// as they land. The source is read once and never again by this kernel: the L2 may evict it first.
ENGINE_DEV void copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t evict_first) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::
            "r"(smem_addr(dst)),
        "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(evict_first)
        : "memory");
}

// Ask the L2 for `bytes` (a multiple of 16, 16-byte aligned) from global memory, to no shared memory and no
// register: for bytes a later kernel will copy.
ENGINE_DEV void prefetch_l2(const void* src, uint32_t bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(bytes) : "memory");
}

// The L2 policy `copy` takes: lines it brings in are the first to go.
ENGINE_DEV uint64_t evict_first_policy() {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

}  // namespace bulk
#endif

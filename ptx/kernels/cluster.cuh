// Thread block clusters (sm_90): the blocks of a cluster run at once on one GPC and can read and write each other's
// shared memory (distributed shared memory). Used by the decode attention's split merge (attention.cu): the splits
// of a head hand their partial states to one block through its shared memory, not through L2 and an atomic counter.
// sm_90 only: everything here exists in the sm_90a module alone.
#pragma once
#include "tensor_core.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace cluster {

using tc::smem_addr;

// Every thread of every block of the cluster: after it every block has started (its shared memory may be written
// by the others), and the blocks' writes before it are visible to the others.
ENGINE_DEV void sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// The shared-memory address (shared::cluster window) of `p`, a variable of this block, in block `rank` of the
// cluster.
ENGINE_DEV uint32_t map(const void* p, uint32_t rank) {
    uint32_t out;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(out) : "r"(smem_addr(p)), "r"(rank));
    return out;
}

ENGINE_DEV void store(uint32_t cluster_addr, float v) {
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(cluster_addr), "f"(v) : "memory");
}

// The two halves of `sync`, for blocks that only hand data on: `arrive` releases this thread's earlier writes
// (shared memory of other blocks included) to whoever passes the phase's `wait`, and a block may leave after it;
// `wait` returns once every thread of the cluster that has not exited has arrived. All threads of a warp alike.
ENGINE_DEV void arrive() { asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory"); }
ENGINE_DEV void wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }

}  // namespace cluster
#endif

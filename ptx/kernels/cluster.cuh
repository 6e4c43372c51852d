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

// A remote store that counts its 8 bytes on an mbarrier of the receiving block (`st.async`; `cluster_addr` 8-byte
// aligned, `cluster_bar` that block's barrier, both from `map`): the receiver's wait on the barrier's phase sees
// the data. Why not the cluster barrier: its arrival's release is a GPU-scope fence in SASS (MEMBAR.ALL.GPU, then
// ERRBAR), on the sender's path between its pass and the merge; a counted store needs no fence on either side.
ENGINE_DEV void store_counted(uint32_t cluster_addr, float a, float b, uint32_t cluster_bar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];" ::"r"(
                     cluster_addr),
                 "f"(a), "f"(b), "r"(cluster_bar)
                 : "memory");
}

}  // namespace cluster
#endif

// Bookkeeping between decode steps, on the device, so that a captured decode graph can be replayed back to back
// without the host touching device memory in between.
#include "common.cuh"

// One thread. After a greedy step wrote the next token into *token: record it in the ring at the step's
// position (the host reads tokens from there, possibly a few steps later) and advance the position.
extern "C" __global__ void decode_advance(uint32_t* pos, const uint32_t* token, uint32_t* ring, uint32_t ring_len) {
    pdl_wait();
    const uint32_t p = *pos;
    ring[p % ring_len] = *token;
    *pos = p + 1;
}

// Bookkeeping between decode steps, on the device, so that a captured decode graph can be replayed back to back
// without the host touching device memory in between.
#include "common.cuh"

// Mirrored by a #[repr(C)] struct in engine/src/backend/cuda/kernels.rs, like every kernel's parameters.
struct DecodeAdvanceParams {
    uint32_t* pos;          // the position the next step decodes at
    const uint32_t* token;  // the token the step just produced
    uint32_t* ring;         // [ring_len] tokens, by position modulo ring_len
    uint32_t ring_len;
};

// One thread. After a greedy step wrote the next token into *token: record it in the ring at the step's
// position (the host reads tokens from there, possibly a few steps later) and advance the position.
extern "C" __global__ void decode_advance(const DecodeAdvanceParams a) {
    uint32_t* pos = a.pos;
    const uint32_t* token = a.token;
    uint32_t* ring = a.ring;
    const uint32_t ring_len = a.ring_len;
    pdl_wait();
    const uint32_t p = *pos;
    ring[p % ring_len] = *token;
    *pos = p + 1;
}

// Bookkeeping between decode steps, on the device, so that a captured decode graph can be replayed back to back
// without the host touching device memory in between.
#include "common.cuh"

// Mirrored by a #[repr(C)] struct in engine/src/backend/cuda/kernels.rs, like every kernel's parameters.
struct DecodeAdvanceParams {
    uint32_t* pos;          // the position the next step decodes at
    const uint32_t* token;  // the token the step just produced
    uint32_t* host_ring;    // [ring_len] tokens by position modulo ring_len, in page-locked host memory mapped into
                            // the device's address space
    uint32_t ring_len;
};

// One thread. After a step wrote the next token into *token: record it in the host's ring at the step's position
// and advance the position. The host reads the decode loop's tokens from the mapped ring once the event recorded
// after the replay has completed (kernel completion makes the write visible to it), so no copy sits on the stream
// between two replays (a 4-byte copy there cost ~15 µs of idle device per step: BENCHMARKS.md). A single step's
// token the host copies from *token itself.
extern "C" __global__ void decode_advance(const DecodeAdvanceParams a) {
    pdl_wait();
    const uint32_t p = *a.pos, token = *a.token, slot = p % a.ring_len;
    a.host_ring[slot] = token;
    *a.pos = p + 1;
}

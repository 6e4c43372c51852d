// Utility kernels that are not part of the model's math: filling buffers and measuring the card's copy and read
// bandwidth.
#include "common.cuh"

// Fill p[0..n) with `value`.
// Why: tests poison output buffers with a NaN pattern before a kernel runs (0x7fc00000 for f32, 0x7e007e00 for a
// pair of f16, 0x7fc07fc0 for a pair of bf16), so an element the kernel forgot to write shows up as NaN instead of
// as a stale, plausible number.
// Launch: any 1-D grid; the grid-stride loop covers all of n. p must be 4-byte aligned, need not be 16-byte aligned.
struct FillParams {
    uint32_t* p;
    uint64_t n;
    uint32_t value;
};

extern "C" __global__ void fill_u32(const FillParams a) {
    uint32_t* __restrict__ p = a.p;
    const uint64_t n = a.n;
    const uint32_t value = a.value;
    pdl_launch_dependents();
    pdl_wait();  // the previous kernel may still be reading the buffer we are about to overwrite

    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;

    // Split into a head up to the first 16-byte boundary (0-3 words), a 16-byte-aligned body and a tail (0-3 words).
    // Buys: the body uses 16-byte stores whatever offset the caller's view starts at.
    uint64_t head = ((16u - ((uintptr_t)p & 15u)) & 15u) / 4u;
    if (head > n) head = n;
    const uint64_t n_body = (n - head) / 4u;  // in uint4
    const uint64_t tail_begin = head + 4u * n_body;

    if (tid < head) p[tid] = value;
    uint4* body = reinterpret_cast<uint4*>(p + head);
    const uint4 v = make_uint4(value, value, value, value);
    for (uint64_t i = tid; i < n_body; i += stride) stg_stream_v4(body + i, v);
    if (tid < n - tail_begin) p[tail_begin + tid] = value;
}

// dst[i] = src[i] for i in [0, n16): a copy of 16 * n16 bytes.
// Why: `bench` measures the bandwidth a kernel can reach on this card (bytes read + bytes written per second), the
// roof that the memory-bound decode kernels are judged against. Use buffers much larger than L2 (50 MB on H100) so
// the number is DRAM bandwidth, not L2 bandwidth.
// Launch: a 1-D grid of a few blocks per SM (2 x SMs x 256 threads was best on an H200: 4.0 TB/s read + write on
// 2 GiB, cuMemcpyDtoD 4.28 TB/s); the grid-stride loop covers all of n16. src and dst must not overlap.
struct CopyParams {
    const uint4* src;
    uint4* dst;
    uint64_t n16;
};

extern "C" __global__ void copy_bytes_read_bw(const CopyParams a) {
    const uint4* __restrict__ src = a.src;
    uint4* __restrict__ dst = a.dst;
    const uint64_t n16 = a.n16;
    pdl_launch_dependents();
    pdl_wait();

    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;

    // Four independent 16-byte loads are issued before the first store. Buys: 64 bytes in flight per thread instead
    // of 16, which is what it takes to cover DRAM latency with a grid of only a few blocks per SM. Consecutive lanes
    // touch consecutive 16-byte chunks, so each load instruction of a warp reads 512 contiguous bytes.
    for (; i + 3u * stride < n16; i += 4u * stride) {
        const uint4 a = ldg_stream_v4(src + i);
        const uint4 b = ldg_stream_v4(src + i + stride);
        const uint4 c = ldg_stream_v4(src + i + 2u * stride);
        const uint4 d = ldg_stream_v4(src + i + 3u * stride);
        stg_stream_v4(dst + i, a);
        stg_stream_v4(dst + i + stride, b);
        stg_stream_v4(dst + i + 2u * stride, c);
        stg_stream_v4(dst + i + 3u * stride, d);
    }
    for (; i < n16; i += stride) stg_stream_v4(dst + i, ldg_stream_v4(src + i));
}

// Read 16 * n16 bytes and keep nothing: the read-only streaming rate, the roof of a decode step, which only reads.
// Why next to the copy: a copy's writes share the memory's turnarounds with its reads, so read + write bytes per
// second understate what a read-only stream gets; `bench` reports the floor against both.
// Each thread folds its words into an XOR and stores it only if it equals `never` (the host passes a value no fold
// of its buffer gives in practice; the store is there so the loads cannot be dropped). Launch as the copy.
struct ReadParams {
    const uint4* src;
    uint32_t* sink;
    uint64_t n16;
    uint32_t never;
};

extern "C" __global__ void read_bytes_bw(const ReadParams a) {
    const uint4* __restrict__ src = a.src;
    const uint64_t n16 = a.n16;
    pdl_launch_dependents();
    pdl_wait();
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t acc = 0;
    // Four independent loads in flight per thread, as the copy.
    for (; i + 3u * stride < n16; i += 4u * stride) {
        const uint4 w0 = ldg_stream_v4(src + i), w1 = ldg_stream_v4(src + i + stride);
        const uint4 w2 = ldg_stream_v4(src + i + 2u * stride), w3 = ldg_stream_v4(src + i + 3u * stride);
        acc ^= w0.x ^ w0.y ^ w0.z ^ w0.w ^ w1.x ^ w1.y ^ w1.z ^ w1.w;
        acc ^= w2.x ^ w2.y ^ w2.z ^ w2.w ^ w3.x ^ w3.y ^ w3.z ^ w3.w;
    }
    for (; i < n16; i += stride) {
        const uint4 w = ldg_stream_v4(src + i);
        acc ^= w.x ^ w.y ^ w.z ^ w.w;
    }
    if (acc == a.never) a.sink[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

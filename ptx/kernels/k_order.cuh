// The K order of the weights-in-registers wgmma tiles (gemm_wgmma_short.cu, gemm_wgmma_wreg.cu), for every kernel
// that writes or rearranges the rows of A they read.
//
// Why there is one. Those tiles dequantize each lane's weight words straight into wgmma's A fragment registers,
// and the fragment layout then pairs K indices as the words hold them, not in order (the fragment mapping in
// gemm_wgmma_short.cu). The sum over K does not care, as long as the rows of A hold the same permutation. It stays
// inside each 64-column step: stored column 16 i + c of a step (k16 block i, c in 0..15) holds the step's K index
// 16 (c' / 2) + 8 h + i + 4 (c' % 2), with h = c / 8 and c' = c % 8.
//
// Seen as 16-byte chunks of 8 halves, stored chunk q = 2 i + h of a step is, in pairs j = 0..3, halves i and i + 4
// of natural chunk 2 j + h: four byte permutes of two words each. The kernels that produce A (the norms, SwiGLU,
// attention) write it this way when the next GEMM runs the 128-row weights-in-registers tile, and
// `permute_k_steps` does it for an A no producer rearranged.
#pragma once
#include "common.cuh"
#include "tiles.cuh"

namespace korder {

constexpr uint32_t STEP = 64;  // columns of one K step, the span the permutation stays in

// The K index stored column `col` of a row holds.
ENGINE_DEV uint32_t source(uint32_t col) {
    const uint32_t c = col % 16, i = (col % STEP) / 16, h = c >> 3, cc = c & 7;
    return col - col % STEP + 16 * (cc >> 1) + 8 * h + i + 4 * (cc & 1);
}

// The stored column that holds K index `k`: the inverse of `source`.
ENGINE_DEV uint32_t dest(uint32_t k) {
    const uint32_t kk = k % STEP, rem = kk % 16, r = rem % 8;
    const uint32_t i = r % 4, c = 8 * (rem / 8) + 2 * (kk / 16) + r / 4;
    return k - kk + 16 * i + c;
}

// The natural chunk (of the step's 8) from which pair j of stored chunk q comes.
ENGINE_DEV uint32_t natural_chunk(uint32_t q, int j) { return 2 * j + (q & 1); }

// Pair j of stored chunk q from the two words of its natural chunk that hold it: halves i % 2 of `lo` (half i)
// and of `hi` (half i + 4), i = q / 2.
ENGINE_DEV uint32_t pair(uint32_t lo, uint32_t hi, uint32_t q) {
    return __byte_perm(lo, hi, ((q >> 1) & 1) ? 0x7632u : 0x5410u);
}

// Pair j of stored chunk q (halves i and i + 4 of natural chunk `natural_chunk(q, j)`, i = q / 2) as one word.
ENGINE_DEV uint32_t pick(const uint4& natural, uint32_t q) {
    const uint32_t w = q >> 2;  // the word holding half i
    return pair(word_of(natural, w), word_of(natural, w + 2), q);
}

// Stored chunk q of a step from the step's 32 natural words (`words`: anything indexable, e.g. a row in shared
// memory): only the 8 words it needs are read.
template <class Words>
ENGINE_DEV uint4 chunk(const Words& words, uint32_t q) {
    uint32_t v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const uint32_t at = 4 * natural_chunk(q, j) + (q >> 2);
        v[j] = pair(words[at], words[at + 2], q);
    }
    return make_uint4(v[0], v[1], v[2], v[3]);
}

// The order as a type, for epilogues that write A one element at a time (wgs::finish's SwiGLU): row r of `ldy`.
struct Order {
    __device__ __forceinline__ static size_t at(uint32_t r, uint32_t k, uint32_t ldy) { return (size_t)r * ldy + dest(k); }
};

}  // namespace korder

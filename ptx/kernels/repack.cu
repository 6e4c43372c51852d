// The repack of a GPTQ int4 linear into the engine's tile layout (tiles.cuh), on the device: the loader can upload
// the checkpoint's own tensors and reorder them here instead of on the host (layout.rs: repack_in is the host
// version, and the oracle these kernels are tested against, word for word).
//
// Why it is a plain gather. Without act-order the rows keep their order, so every device word is one checkpoint
// word: word w of lane l at step s of tile t holds packed row 4 · (2s + l / 16) + w of the column in slot l % 16 of
// the tile (AutoGPTQ packs 8 rows of a column into a word, the lowest row in the low nibble, which is the tiles'
// order too). The (scale, 1024 + zero) words are a gather of the same kind. Act-order linears (rows gathered by a
// permutation) and 8-bit ones keep the host repack for now.
//
// Up to three fused parts (q, k, v or gate, up) are concatenated along N: a slot's column names its part by the
// parts' widths. Padding slots and rows past K are zeros, as on the host.
#include "common.cuh"
#include "tile_layout.h"
#include <cuda_fp16.h>

struct RepackParams {
    const uint32_t* qweight0;  // part i: [k / 8][n_i] packed rows, as the checkpoint stores them
    const uint32_t* qweight1;
    const uint32_t* qweight2;
    const uint32_t* qzeros0;   // part i: [groups][n_i / 8] packed zero points (stored value + 1 is the zero)
    const uint32_t* qzeros1;
    const uint32_t* qzeros2;
    const __half* scales0;     // part i: [groups][n_i]
    const __half* scales1;
    const __half* scales2;
    const uint32_t* col_map;   // [tiles · 16] the column of each slot; INT4_PAD_SLOT for padding
    uint32_t* qw;              // [tiles][steps][32 lanes][4 words]
    uint32_t* sz;              // [tiles][groups][16] half2 (scale, 1024 + zero)
    __half* scales;            // a symmetric linear's scales-only copy of sz, same order; null: none
    uint32_t n0;               // part widths (0 where there is no such part)
    uint32_t n1;
    uint32_t n2;
    uint32_t k;                // input rows, a multiple of 8
    uint32_t steps;            // k_pad / 64
    uint32_t tiles;
    uint32_t groups;
};

namespace repack {

// The part of fused column `col` and its column within the part.
struct Source {
    const uint32_t* qweight;
    const uint32_t* qzeros;
    const __half* scales;
    uint32_t n_cols, n;
};

ENGINE_DEV Source source_of(const RepackParams& p, uint32_t col) {
    if (col < p.n0) return {p.qweight0, p.qzeros0, p.scales0, p.n0, col};
    col -= p.n0;
    if (col < p.n1) return {p.qweight1, p.qzeros1, p.scales1, p.n1, col};
    return {p.qweight2, p.qzeros2, p.scales2, p.n2, col - p.n1};
}

}  // namespace repack

// Every word of qw: one thread per word, consecutive threads consecutive words (the writes coalesce; the reads
// walk a column's packed rows). Any 1-D grid (grid-stride loop).
extern "C" __global__ void repack_int4_words(const RepackParams p) {
    pdl_wait();  // the copies of the checkpoint's tensors, and whatever ran before, are done
    const uint64_t total = (uint64_t)p.tiles * p.steps * 32 * 4;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (uint64_t)gridDim.x * blockDim.x) {
        const uint32_t w = (uint32_t)i & 3u, lane = (uint32_t)(i >> 2) & 31u;
        const uint64_t tile_step = i >> 7;
        const uint32_t s = (uint32_t)(tile_step % p.steps), t = (uint32_t)(tile_step / p.steps);
        const uint32_t col = p.col_map[t * INT4_TILE_N + (lane & 15u)];
        const uint32_t word_row = 4 * (2 * s + (lane >> 4)) + w;
        uint32_t v = 0;
        if (col != INT4_PAD_SLOT && word_row < p.k / 8) {
            const repack::Source src = repack::source_of(p, col);
            v = src.qweight[(uint64_t)word_row * src.n_cols + src.n];
        }
        p.qw[i] = v;
    }
}

// Every (scale, 1024 + zero) word of sz: the scale's bits in the low half, and 1024 + zero (zero = stored nibble
// + 1 ∈ 1..16) as fp16 in the high half, which is 0x6400 + zero exactly; with `scales`, the scale alone there too.
// Any 1-D grid.
extern "C" __global__ void repack_int4_scales(const RepackParams p) {
    pdl_wait();
    const uint64_t total = (uint64_t)p.tiles * p.groups * INT4_TILE_N;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (uint64_t)gridDim.x * blockDim.x) {
        const uint32_t j = (uint32_t)i & 15u;
        const uint64_t tile_group = i >> 4;
        const uint32_t g = (uint32_t)(tile_group % p.groups), t = (uint32_t)(tile_group / p.groups);
        const uint32_t col = p.col_map[t * INT4_TILE_N + j];
        uint32_t v = 0;
        if (col != INT4_PAD_SLOT) {
            const repack::Source src = repack::source_of(p, col);
            const uint32_t scale = __half_as_ushort(src.scales[(uint64_t)g * src.n_cols + src.n]);
            const uint32_t packed = src.qzeros[(uint64_t)g * (src.n_cols / 8) + src.n / 8];
            const uint32_t zero = ((packed >> (4 * (src.n % 8))) & 15u) + 1;
            v = scale | (0x6400u + zero) << 16;
        }
        p.sz[i] = v;
        if (p.scales) p.scales[i] = __ushort_as_half((unsigned short)(v & 0xFFFFu));
    }
}

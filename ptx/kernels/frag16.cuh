// The input order of the 16-row GEMV-shaped GEMM (gemv_rows.cu), for every kernel that writes its A.
//
// Why there is one. That kernel streams each weight tile like the decode GEMV, lane (g, t) holding 32 rows of two
// slots, and multiplies them on mma.sync m16n8k16 with the chunk's 16 rows of A as the MMA's A operand. Every block
// reads all of A (its tile spans the whole K), so A must reach the registers as cheaply as the weights: one 16-byte
// load per lane and k16 block, 512 contiguous bytes per warp. Rows in order (or in k_order.cuh's order) cost a load
// per row and pair of blocks, and took 1.3-3x the time (tests/gpu/micro/short_chain.cu). So A is stored as the
// MMA's fragments: per 128 columns (a span: two of the tiles' 64-row K steps) and k16 block j = 0..7, lane
// (g, t)'s 16 bytes are its four A registers
//   (A[g][k0], A[g][k0 + 4]), (A[g + 8][k0], A[g + 8][k0 + 4]), (A[g][k0 + 1], A[g][k0 + 5]), (A[g + 8][k0 + 1], ..)
// with k0 = 32 t + 8 (j / 2) + 2 (j % 2) in the span: the rows the lane's weight words hold for that block (see
// gemv_rows.cu). Chunks of more than 16 rows are row blocks of 16, each 16 × k_pad halves (k_pad a multiple of
// SPAN) after the previous one; the last block is whole whatever the chunk's rows: rows past m are never written
// and only reach output rows past m, which nobody stores.
#pragma once
#include "common.cuh"
#include <cuda_fp16.h>

namespace frag16 {

constexpr uint32_t ROWS = 16;
constexpr uint32_t SPAN = 128;  // columns whose fragments lie together

// The half that holds A[r][k] of rows k_pad wide. A[r][k] and A[r][k + 4] are neighbours for k % 8 < 4: one
// 32-bit word.
ENGINE_DEV size_t at(uint32_t r, uint32_t k, uint32_t k_pad) {
    const uint32_t s = k / SPAN, kk = k % SPAN, t = kk / 32, w = (kk % 32) / 8, rho = kk % 8;
    const uint32_t j = 2 * w + ((rho & 3) >> 1), lane = 4 * (r & 7) + t, word = 2 * (rho & 1) + ((r >> 3) & 1);
    return (size_t)(r / ROWS) * ROWS * k_pad + ((s * 8 + j) * 32 + lane) * 8 + 2 * word + (rho >> 2);
}

// Writes natural 8-column chunk c of row r (its halves v[0..7] = A[r][8c .. 8c + 7]) as its four words.
ENGINE_DEV void store_chunk(__half* a, uint32_t r, uint32_t c, const __half (&v)[8], uint32_t k_pad) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
        *reinterpret_cast<__half2*>(a + at(r, 8 * c + i, k_pad)) = __halves2half2(v[i], v[i + 4]);
}

// The order as a type, for epilogues that write A one element at a time (wgs::finish's SwiGLU): `ldy` is k_pad.
struct Order {
    __device__ __forceinline__ static size_t at(uint32_t r, uint32_t k, uint32_t ldy) { return frag16::at(r, k, ldy); }
};

}  // namespace frag16

// Tensor-core building blocks for sm_80 and newer: cp.async copies into shared memory, ldmatrix, and the
// mma.sync.m16n8k16 (f16 in, f32 accumulate) they feed. Shared by kernels that tile through shared memory
// (attention_prefill.cu, gemm.cu, gemm_small.cu).
//
// Fragment layouts of mma.m16n8k16 (PTX ISA "Matrix Fragments for mma.m16n8k16"), with g = lane / 4 and
// t = lane % 4; a register holds two f16, the lower column (or k) index in the low 16 bits:
//   A (16 x 16, row-major) a[0]: (row g,     cols 2t, 2t+1)    a[1]: (row g + 8, cols 2t, 2t+1)
//                          a[2]: (row g,     cols 2t+8, 2t+9)  a[3]: (row g + 8, cols 2t+8, 2t+9)
//   B (16 x 8, "col")      b[0]: (k 2t, 2t+1,   col g)         b[1]: (k 2t+8, 2t+9, col g)
//   C (16 x 8, f32)        c[0], c[1]: (row g, cols 2t, 2t+1)  c[2], c[3]: (row g + 8, cols 2t, 2t+1)
// ldmatrix.x4: lanes 8i .. 8i+7 give the 8 row addresses (16 bytes each) of matrix i, and register i of lane l
// receives row l / 4, elements 2(l % 4), 2(l % 4) + 1 of matrix i — or with .trans, of its transpose, i.e. the
// elements (2(l % 4), l / 4) and (2(l % 4) + 1, l / 4) of the matrix as stored.
#pragma once
#include "common.cuh"
#include <cuda_fp16.h>

namespace tc {

ENGINE_DEV uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16-byte asynchronous copy global → shared that bypasses L1 (.cg); copies `bytes` (0 or 16) and zero-fills the
// rest, so a tile's out-of-range rows cost no branch and read nothing (src must still be a valid address).
ENGINE_DEV void cp_async16(void* dst, const void* src, uint32_t bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes)
                 : "memory");
}
// The same to a shared-space byte address: kernels that keep their destinations in registers and step through
// pipeline stages by constant offsets, which ptxas folds into the instruction.
ENGINE_DEV void cp_async16_at(uint32_t dst, const void* src, uint32_t bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
// 4 bytes through L1 (.ca: scales are reused by neighbouring blocks), to a shared-space byte address.
ENGINE_DEV void cp_async4_at(uint32_t dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}
ENGINE_DEV uint2 lds64(uint32_t addr) {
    uint2 v;
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(addr) : "memory");
    return v;
}
ENGINE_DEV uint32_t lds32(uint32_t addr) {
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr) : "memory");
    return v;
}
ENGINE_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
ENGINE_DEV void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

ENGINE_DEV void ldmatrix_x4(uint32_t r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// The same from a shared-space byte address, for kernels that keep their per-lane base addresses in registers.
ENGINE_DEV void ldmatrix_x4_at(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

ENGINE_DEV void ldmatrix_x4_trans(uint32_t r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// c += a · b for one m16n8k16 tile.
ENGINE_DEV void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one f16x2 register, `lo` in the low half (the lower column of a fragment), round to nearest.
ENGINE_DEV uint32_t pack_half2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
}

}  // namespace tc

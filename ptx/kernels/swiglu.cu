// SwiGLU of prefill rows: h = silu(gate) * up, from the gate/up GEMM's output [rows][gate | up].
//
// Decode fuses this into the gate/up GEMV's epilogue (gemv_int4.cu). The down projection's act-order permutation,
// when there is one, is applied on the way out (perm may be null).
// The columns of a row are spread over grid.y blocks, one element per thread: with one block per row the loop
// waited a memory round trip per 256 columns (43 of them for 11008: ~14 µs, measured, for a 16-row prompt).
#include "common.cuh"
#include <cuda_fp16.h>

// Grid: (rows, any); 256 threads (any multiple of 32). gu: [rows][2 * inter]; h: [rows][inter]; h[r][k'] uses
// column perm[k']. Block y of a row covers columns y·blockDim, stepping by gridDim.y·blockDim.
extern "C" __global__ void __launch_bounds__(256)
    swiglu_rows(const __half* gu, __half* h, const uint32_t* perm, uint32_t inter) {
    pdl_wait();
    pdl_launch_dependents();
    const __half* g = gu + (size_t)blockIdx.x * 2 * inter;
    __half* o = h + (size_t)blockIdx.x * inter;
    for (uint32_t i = blockIdx.y * blockDim.x + threadIdx.x; i < inter; i += gridDim.y * blockDim.x) {
        const uint32_t src = perm ? perm[i] : i;
        const float gate = __half2float(g[src]), up = __half2float(g[inter + src]);
        o[i] = __float2half_rn(gate / (1.f + __expf(-gate)) * up);
    }
}

// The micro-benchmarks' check of a CUDA runtime call: print where and why it failed, and exit. Apart from micro.cuh
// for the programs that include the engine's own kernels (attn_decode.cu), whose helpers have micro.cuh's names.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(x)                                                                                    \
    do {                                                                                            \
        cudaError_t e = (x);                                                                        \
        if (e != cudaSuccess) {                                                                     \
            std::printf("%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e));         \
            std::exit(1);                                                                           \
        }                                                                                           \
    } while (0)

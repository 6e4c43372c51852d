//! The engine's GPU kernels, compiled ahead of time to PTX (see `ptx/build_ptx.py`) and committed, so that building
//! the engine needs no CUDA toolkit and running it needs only an NVIDIA driver.
#![no_std]

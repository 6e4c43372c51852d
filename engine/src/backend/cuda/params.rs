//! `#[repr(C)]` mirrors of the kernels' parameter blocks (`ptx/kernels/*.cu`), field for field.
//!
//! Device pointers are `u64` (a `CUdeviceptr`), nullable pointers are 0. The C structs order pointers before
//! 32-bit scalars, so neither side has padding to disagree on; the size tests below pin that down.

/// `GemvParams` of `int4.cuh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GemvParams {
    pub qw: u64,
    pub sz: u64,
    pub perm: u64,
    pub col_map: u64,
    pub x: u64,
    pub x16: u64,
    pub norm_w: u64,
    pub ssq: u64,
    pub y: u64,
    pub ssq_out: u64,
    pub out16: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub rope_cos: u64,
    pub rope_sin: u64,
    pub pos: u64,
    pub k: u32,
    pub k_pad: u32,
    pub n_pad: u32,
    pub groups: u32,
    pub group_size: u32,
    pub tiles_per_block: u32,
    pub n_ssq: u32,
    pub eps: f32,
    pub ctx: u32,
    pub head_dim: u32,
    pub q_dim: u32,
    pub kv_dim: u32,
    pub chunk_shift: u32,
}

/// `GemmParams` of `gemm_int4.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GemmParams {
    pub qw: u64,
    pub sz: u64,
    pub col_map: u64,
    pub a: u64,
    pub y32: u64,
    pub y16: u64,
    pub m: u32,
    pub k: u32,
    pub k_pad: u32,
    pub n_pad: u32,
    pub groups: u32,
    pub group_size: u32,
    pub lda: u32,
    pub ldy: u32,
}

/// `AttnParams` of `attention.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AttnParams {
    pub q: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub out: u64,
    pub part_o: u64,
    pub part_ml: u64,
    pub counters: u64,
    pub pos: u64,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub ctx: u32,
    pub splits: u32,
    pub scale_log2: f32,
}

/// `LmHeadParams` of `lm_head.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LmHeadParams {
    pub w: u64,
    pub x: u64,
    pub norm_w: u64,
    pub logits: u64,
    pub part_val: u64,
    pub part_idx: u64,
    pub counter: u64,
    pub token_out: u64,
    pub vocab: u32,
    pub k: u32,
    pub rows_per_block: u32,
    pub eps: f32,
}

/// Shared memory of `gemm_int4_*`: `sizeof(gemm::Smem)` = A 2×64×72 halves + raw W 2×4×32 uint4 + W 64×72 halves.
pub const GEMM_SMEM_BYTES: u32 = 2 * 64 * 72 * 2 + 2 * 4 * 32 * 16 + 64 * 72 * 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_c_structs() {
        // 16 pointers + 13 scalars (+ 4 bytes of tail padding to 8-byte alignment, in C as in Rust); 6 + 8;
        // 8 + 6; 8 + 4.
        assert_eq!(std::mem::size_of::<GemvParams>(), 16 * 8 + 13 * 4 + 4);
        assert_eq!(std::mem::size_of::<GemmParams>(), 6 * 8 + 8 * 4);
        assert_eq!(std::mem::size_of::<AttnParams>(), 8 * 8 + 6 * 4);
        assert_eq!(std::mem::size_of::<LmHeadParams>(), 8 * 8 + 4 * 4);
    }
}

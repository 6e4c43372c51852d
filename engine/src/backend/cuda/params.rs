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

/// `GemmParams` of `int4.cuh` (the kernels of `gemm_int4.cu` and `gemm_small.cu`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GemmParams {
    pub qw: u64,
    pub sz: u64,
    pub col_map: u64,
    pub a: u64,
    pub y32: u64,
    pub y16: u64,
    pub part: u64,
    pub counters: u64,
    pub m: u32,
    pub k: u32,
    pub k_pad: u32,
    pub n_pad: u32,
    pub groups: u32,
    pub group_size: u32,
    pub lda: u32,
    pub ldy: u32,
    pub k_splits: u32,
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
    pub rows: u32,
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

impl GemvParams {
    /// Field names in declaration order (checked against the C struct by a test).
    pub const FIELDS: &'static [&'static str] = &[
        "qw",
        "sz",
        "perm",
        "col_map",
        "x",
        "x16",
        "norm_w",
        "ssq",
        "y",
        "ssq_out",
        "out16",
        "k_cache",
        "v_cache",
        "rope_cos",
        "rope_sin",
        "pos",
        "k",
        "k_pad",
        "n_pad",
        "groups",
        "group_size",
        "tiles_per_block",
        "n_ssq",
        "eps",
        "ctx",
        "head_dim",
        "q_dim",
        "kv_dim",
        "chunk_shift",
    ];
}

impl GemmParams {
    /// Field names in declaration order (checked against the C struct by a test).
    pub const FIELDS: &'static [&'static str] = &[
        "qw",
        "sz",
        "col_map",
        "a",
        "y32",
        "y16",
        "part",
        "counters",
        "m",
        "k",
        "k_pad",
        "n_pad",
        "groups",
        "group_size",
        "lda",
        "ldy",
        "k_splits",
    ];
}

impl AttnParams {
    /// Field names in declaration order (checked against the C struct by a test).
    pub const FIELDS: &'static [&'static str] = &[
        "q",
        "k_cache",
        "v_cache",
        "out",
        "part_o",
        "part_ml",
        "counters",
        "pos",
        "heads",
        "kv_heads",
        "head_dim",
        "ctx",
        "splits",
        "scale_log2",
        "rows",
    ];
}

impl LmHeadParams {
    /// Field names in declaration order (checked against the C struct by a test).
    pub const FIELDS: &'static [&'static str] = &[
        "w",
        "x",
        "norm_w",
        "logits",
        "part_val",
        "part_idx",
        "counter",
        "token_out",
        "vocab",
        "k",
        "rows_per_block",
        "eps",
    ];
}

/// Shared memory of `gemm_int4_*`: `sizeof(gemm::Smem)` = A 4×64×72 halves + raw W 4×4×32 uint4 + scales 4×128
/// words + dequantized W 64×72 halves (4 pipeline stages).
pub const GEMM_SMEM_BYTES: u32 = gemm_smem_bytes(64);

/// `sizeof(gemm::Smem<BM>)` for a row tile of `bm` rows.
pub const fn gemm_smem_bytes(bm: u32) -> u32 {
    4 * bm * 72 * 2 + 4 * 4 * 32 * 16 + 4 * 128 * 4 + 64 * 72 * 2
}

/// K steps (64 rows) per split of `gemm_small_int4_*`: ceil(steps / splits) rounded up to even, as the kernel computes
/// it (`gsmall::per_split_steps`; a warp walks its split two steps at a time).
pub const fn gemm_small_per_split(steps: u32, splits: u32) -> u32 {
    steps.div_ceil(splits).next_multiple_of(2)
}

/// Shared memory of `gemm_small_int4_*`: the 16 staged rows of A over one split's K range, each row padded by 64 bytes
/// (`gsmall::stage_a`).
pub const fn gemm_small_smem_bytes(steps: u32, splits: u32) -> u32 {
    16 * (gemm_small_per_split(steps, splits) * 128 + 64)
}

/// The most K steps per split the launch code gives `gemm_small_int4_*`: 46 keeps its shared memory at
/// [`GEMM_SMALL_MAX_SMEM_BYTES`] = 95232 bytes, under the 99 KB a block may have on sm_86/sm_89 and small enough for two
/// blocks per SM on sm_80/sm_90.
pub const GEMM_SMALL_MAX_STEPS_PER_SPLIT: u32 = 46;
pub const GEMM_SMALL_MAX_SMEM_BYTES: u32 = 16 * (GEMM_SMALL_MAX_STEPS_PER_SPLIT * 128 + 64);

/// Query rows per block of `attn_prefill_tc{64,128}` (grid (heads, ceil(rows / ATTN_TC_ROWS))).
pub const ATTN_TC_ROWS: u32 = 64;

/// Shared memory of `attn_prefill_tc{64,128}`: `sizeof(attn_tc::Smem<D>)` = K and V tiles of 64 positions ×
/// (head_dim + 8) halves, double-buffered.
pub const fn attn_prefill_tc_smem_bytes(head_dim: u32) -> u32 {
    4 * 64 * (head_dim + 8) * 2
}

/// Shared memory of `gemm128_int4_*`: `sizeof(gemm::SmemBig)` = A 3×128×72 halves + dequantized W 2×128×72
/// halves + raw W 3×8×32 uint4 + scales 3×256 words (3 pipeline stages, a double-buffered dequantized tile). The
/// kernel source `static_assert`s the same number.
pub const GEMM128_SMEM_BYTES: u32 = 3 * 128 * 72 * 2 + 2 * 128 * 72 * 2 + 3 * 8 * 32 * 16 + 3 * 256 * 4;
// Two blocks per SM on sm_90: 228 KB of shared memory per SM, each block also holding its 16 static bytes and the
// 1 KB the system reserves per block.
const _: () = assert!(2 * (GEMM128_SMEM_BYTES + 16 + 1024) <= 228 * 1024);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_c_structs() {
        // 16 pointers + 13 scalars (+ 4 bytes of tail padding to 8-byte alignment, in C as in Rust); 8 + 9 (+ 4);
        // 8 + 7 (+ 4); 8 + 4.
        assert_eq!(std::mem::size_of::<GemvParams>(), 16 * 8 + 13 * 4 + 4);
        assert_eq!(std::mem::size_of::<GemmParams>(), 8 * 8 + 9 * 4 + 4);
        assert_eq!(std::mem::size_of::<AttnParams>(), 8 * 8 + 7 * 4 + 4);
        assert_eq!(std::mem::size_of::<LmHeadParams>(), 8 * 8 + 4 * 4);
    }

    /// Field names of each struct as the C source declares them, in order, with their sizes.
    fn c_fields(source: &str, name: &str) -> Vec<(String, usize)> {
        let start = source.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("struct {name} not found"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        body.lines()
            .map(|l| l.split("//").next().unwrap().trim())
            .filter(|l| !l.is_empty())
            .map(|l| {
                let l = l.trim_end_matches(';');
                let (ty, field) = l.rsplit_once(' ').unwrap();
                let size = if ty.contains('*') { 8 } else { 4 }; // pointers, then uint32_t / float
                (field.trim_start_matches('*').to_string(), size)
            })
            .collect()
    }

    #[test]
    fn gemm128_smem_matches_the_kernels_static_assert() {
        assert_eq!(GEMM128_SMEM_BYTES, 107520);
        let src =
            std::fs::read_to_string(format!("{}/../ptx/kernels/gemm_int4.cu", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(
            src.contains(&format!("static_assert(sizeof(SmemBig) == {GEMM128_SMEM_BYTES}")),
            "gemm_int4.cu's static_assert on sizeof(SmemBig) must name GEMM128_SMEM_BYTES"
        );
    }

    #[test]
    fn gemm_small_split_ranges_are_even_and_cover_k() {
        for steps in 1..200u32 {
            for splits in 1..=32u32 {
                let per = gemm_small_per_split(steps, splits);
                assert!(per % 2 == 0 && per * splits >= steps, "steps {steps} splits {splits}");
                assert_eq!(gemm_small_smem_bytes(steps, splits), 16 * (per * 128 + 64));
            }
        }
        assert_eq!(GEMM_SMALL_MAX_SMEM_BYTES, 95232);
    }

    #[test]
    fn rust_mirrors_declare_the_c_fields_in_the_same_order() {
        let k =
            |f: &str| std::fs::read_to_string(format!("{}/../ptx/kernels/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mirrors: [(&str, &str, &[&str]); 4] = [
            ("int4.cuh", "GemvParams", GemvParams::FIELDS),
            ("int4.cuh", "GemmParams", GemmParams::FIELDS),
            ("attention.cu", "AttnParams", AttnParams::FIELDS),
            ("lm_head.cu", "LmHeadParams", LmHeadParams::FIELDS),
        ];
        for (file, name, rust) in mirrors {
            let c = c_fields(&k(file), name);
            let c_names: Vec<&str> = c.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(c_names, rust, "{name}: the Rust mirror's fields differ from {file}");
            let c_size: usize = c.iter().map(|(_, s)| s).sum::<usize>().next_multiple_of(8);
            let rust_size = match name {
                "GemvParams" => std::mem::size_of::<GemvParams>(),
                "GemmParams" => std::mem::size_of::<GemmParams>(),
                "AttnParams" => std::mem::size_of::<AttnParams>(),
                _ => std::mem::size_of::<LmHeadParams>(),
            };
            assert_eq!(c_size, rust_size, "{name}: size");
        }
    }
}

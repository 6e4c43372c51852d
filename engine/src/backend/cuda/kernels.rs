//! Every kernel of the module as a typed handle, and the `#[repr(C)]` mirror of each kernel's parameter struct
//! (`ptx/kernels/*.cu`), field for field.
//!
//! A kernel takes exactly one parameter, a C struct; here each struct is declared once (the `kernel_params!` list)
//! and each kernel name is paired with its struct once (the `kernels!` list), so `Gpu::launch(&k.attn_decode, ..)`
//! only compiles with an `AttnParams`. Device addresses are typed ([`DevPtr`]`<f16>` for `__half*`, ...), so a
//! buffer of the wrong element type does not compile either. The tests pin every struct against its C declaration
//! (names, order, types) and against the parameter size the compiled PTX declares.

use std::sync::Arc;

use cudarc::driver::CudaModule;
use half::f16;

use super::driver::{DevPtr, Gpu, Kernel, KernelParams};
use super::layout::TileFormat;
use super::shapes;
use super::tuning::Tuning;
use crate::error::{Error, Result};

/// Declares each parameter struct with its C source file; see the module comment.
macro_rules! kernel_params {
    ($( $(#[$doc:meta])* $file:literal struct $name:ident { $( $(#[$fdoc:meta])* $field:ident: $ty:ty, )* } )*) => {
        $(
            $(#[$doc])*
            #[repr(C)]
            #[derive(Debug, Clone, Copy, Default)]
            pub(crate) struct $name { $( $(#[$fdoc])* pub $field: $ty, )* }
            // SAFETY: `#[repr(C)]` with the C struct's fields in its order and of its sizes: the tests below check
            // this against the struct in `$file` and the parameter size in the compiled PTX.
            unsafe impl KernelParams for $name {}
        )*
        /// (C file, struct, [(field, Rust type)], size) of every parameter struct, for the layout tests.
        #[cfg(test)]
        const PARAM_STRUCTS: &[(&str, &str, &[(&str, &str)], usize)] = &[$((
            $file,
            stringify!($name),
            &[$((stringify!($field), stringify!($ty))),*],
            std::mem::size_of::<$name>(),
        )),*];
    };
}

/// A kernel compiled once per weight format: `*_int4_*`, `*_int8_*` and `*_f16_*`, the same code over 4-bit, 8-bit
/// and fp16 tiles. The linear a launch is for picks one ([`ByFormat::of`]), so no caller chooses a format apart from
/// its weights.
pub(crate) struct ByFormat<P> {
    int4: Kernel<P>,
    int8: Kernel<P>,
    f16: Kernel<P>,
}

impl<P> ByFormat<P> {
    pub fn of(&self, format: TileFormat) -> &Kernel<P> {
        match format {
            TileFormat::Int4 => &self.int4,
            TileFormat::Int8 => &self.int8,
            TileFormat::F16 => &self.f16,
        }
    }
    fn all(&self) -> [&Kernel<P>; 3] {
        [&self.int4, &self.int8, &self.f16]
    }
}

/// A kernel of the GEMV-shaped prefill tile compiled per row count: 16 rows with 8 warps and with 16 (`*_wide_*`,
/// for launches over few tiles, where more warps per tile keep the bytes in flight), and 32, 48 and 64 rows (2 to 4
/// row blocks of A). The launch shape picks one ([`ByRows::of`]).
pub(crate) struct ByRows<P> {
    r16: Kernel<P>,
    r16_wide: Kernel<P>,
    r32: Kernel<P>,
    r48: Kernel<P>,
    r64: Kernel<P>,
}

impl<P> ByRows<P> {
    /// The kernel for `blocks` row blocks of 16 (1..=4; `wide` applies to one block).
    pub fn of(&self, blocks: u32, wide: bool) -> &Kernel<P> {
        match (blocks, wide) {
            (0 | 1, false) => &self.r16,
            (0 | 1, true) => &self.r16_wide,
            (2, _) => &self.r32,
            (3, _) => &self.r48,
            _ => &self.r64,
        }
    }
}

/// Declares the kernel table: each field a kernel of the module paired with its parameter struct; in `by_format`,
/// the kernels compiled for every weight format, with their three names; in `by_rows`, those compiled per
/// row count (and 16-row width), with their five names.
macro_rules! kernels {
    (one { $( $(#[$doc:meta])* $field:ident: $params:ident = $name:path, )* }
     by_format { $( $(#[$wdoc:meta])* $wfield:ident: $wparams:ident = $int4:path, $int8:path, $f16:path; )* }
     by_rows { $( $(#[$bdoc:meta])* $bfield:ident: $bparams:ident =
                  $r16:path, $r16w:path, $r32:path, $r48:path, $r64:path; )* }) => {
        /// Every kernel of the engine's module, resolved once when the module loads.
        pub(crate) struct Kernels {
            $( $(#[$doc])* pub $field: Kernel<$params>, )*
            $( $(#[$wdoc])* pub $wfield: ByFormat<$wparams>, )*
            $( $(#[$bdoc])* pub $bfield: ByRows<$bparams>, )*
        }

        impl Kernels {
            fn functions(module: &Arc<CudaModule>) -> Result<Kernels> {
                Ok(Kernels {
                    $( $field: Kernel::load(module, $name)?, )*
                    $( $wfield: ByFormat {
                        int4: Kernel::load(module, $int4)?,
                        int8: Kernel::load(module, $int8)?,
                        f16: Kernel::load(module, $f16)?,
                    }, )*
                    $( $bfield: ByRows {
                        r16: Kernel::load(module, $r16)?,
                        r16_wide: Kernel::load(module, $r16w)?,
                        r32: Kernel::load(module, $r32)?,
                        r48: Kernel::load(module, $r48)?,
                        r64: Kernel::load(module, $r64)?,
                    }, )*
                })
            }
        }

        /// (kernel, parameter struct, its size) of every kernel, for the layout tests.
        #[cfg(test)]
        const KERNEL_PARAMS: &[(&str, &str, usize)] = &[
            $(($name, stringify!($params), std::mem::size_of::<$params>()),)*
            $(
                ($int4, stringify!($wparams), std::mem::size_of::<$wparams>()),
                ($int8, stringify!($wparams), std::mem::size_of::<$wparams>()),
                ($f16, stringify!($wparams), std::mem::size_of::<$wparams>()),
            )*
            $(
                ($r16, stringify!($bparams), std::mem::size_of::<$bparams>()),
                ($r16w, stringify!($bparams), std::mem::size_of::<$bparams>()),
                ($r32, stringify!($bparams), std::mem::size_of::<$bparams>()),
                ($r48, stringify!($bparams), std::mem::size_of::<$bparams>()),
                ($r64, stringify!($bparams), std::mem::size_of::<$bparams>()),
            )*
        ];
    };
}

kernel_params! {
    /// The decode GEMV kernels' parameters: one struct for every variant (`tiles.cuh`); fields a variant does not
    /// use are ignored.
    "tiles.cuh" struct GemvParams {
        qw: DevPtr<[u32; 4]>,
        sz: DevPtr<u32>,
        scales: DevPtr<f16>,
        col_map: DevPtr<u32>,
        x: DevPtr<f32>,
        x16: DevPtr<f16>,
        norm_w: DevPtr<f16>,
        ssq: DevPtr<f32>,
        y: DevPtr<f32>,
        ssq_out: DevPtr<f32>,
        out16: DevPtr<f16>,
        k_cache: DevPtr<f16>,
        v_cache: DevPtr<f16>,
        rope_cos: DevPtr<f32>,
        rope_sin: DevPtr<f32>,
        pos: DevPtr<u32>,
        out_idx: DevPtr<u32>,
        y_sorted: DevPtr<f32>,
        out_norm_w: DevPtr<f16>,
        next_qw: DevPtr<[u32; 4]>,
        k: u32,
        k_pad: u32,
        n_pad: u32,
        groups: u32,
        group_size: u32,
        tiles_per_block: u32,
        n_ssq: u32,
        eps: f32,
        ctx: u32,
        head_dim: u32,
        q_dim: u32,
        kv_dim: u32,
        chunk_shift: u32,
        part_slot1: u32,
        part_slot2: u32,
        out_parts: u32,
        out_stride: u32,
        next_chunks: u32,
        next_chunk_bytes: u32,
    }

    /// The prefill GEMM kernels' parameters (`gemm.cu`, `gemm_small.cu`).
    "tiles.cuh" struct GemmParams {
        qw: DevPtr<[u32; 4]>,
        sz: DevPtr<u32>,
        col_map: DevPtr<u32>,
        a: DevPtr<f16>,
        y32: DevPtr<f32>,
        y16: DevPtr<f16>,
        part: DevPtr<f32>,
        counters: DevPtr<u32>,
        m: u32,
        k: u32,
        k_pad: u32,
        n_pad: u32,
        groups: u32,
        group_size: u32,
        lda: u32,
        ldy: u32,
        k_splits: u32,
        a_part_stride: u32,
        part_slot1: u32,
        part_slot2: u32,
    }

    /// The short wgmma tile's q/k/v GEMM with the rotary embedding and KV-cache append in its epilogue: the
    /// GEMM's block and the rope pass's it replaces.
    "gemm_wgmma_short.cu" struct GemmRopeParams {
        gemm: GemmParams,
        rope: RopeParams,
    }

    /// Attention, decode and prefill.
    "attn_params.cuh" struct AttnParams {
        q: DevPtr<f16>,
        k_cache: DevPtr<f16>,
        v_cache: DevPtr<f16>,
        out: DevPtr<f16>,
        part_o: DevPtr<f32>,
        part_ml: DevPtr<f32>,
        counters: DevPtr<u32>,
        pos: DevPtr<u32>,
        out_idx: DevPtr<u32>,
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
        ctx: u32,
        splits: u32,
        scale_log2: f32,
        rows: u32,
        order: u32,
    }

    /// The fp16 lm_head with the final norm in front and the argmax behind.
    "lm_head.cu" struct LmHeadParams {
        w: DevPtr<f16>,
        x: DevPtr<f32>,
        norm_w: DevPtr<f16>,
        x16: DevPtr<f16>,
        ssq: DevPtr<f32>,
        logits: DevPtr<f32>,
        part_val: DevPtr<f32>,
        part_idx: DevPtr<u32>,
        counter: DevPtr<u32>,
        token_out: DevPtr<u32>,
        screen_q: DevPtr<u32>,
        screen_scales: DevPtr<f16>,
        screen_hi: DevPtr<f32>,
        screen_max: DevPtr<u32>,
        vocab: u32,
        k: u32,
        rows_per_block: u32,
        n_ssq: u32,
        eps: f32,
    }

    /// The int8 copy of the head that the greedy decode step screens with (`lm_head_screen_pack`).
    "lm_head.cu" struct HeadScreenPackParams {
        w: DevPtr<f16>,
        q: DevPtr<u32>,
        scales: DevPtr<f16>,
        vocab: u32,
        k: u32,
    }

    /// Token embedding rows into the residual stream.
    "embed.cu" struct EmbedParams {
        tokens: DevPtr<u32>,
        table: DevPtr<f16>,
        x: DevPtr<f32>,
        ssq_out: DevPtr<f32>,
        x_sorted: DevPtr<f32>,
        idx: DevPtr<u32>,
        norm_w: DevPtr<f16>,
        x16: DevPtr<f16>,
        dim: u32,
        parts: u32,
        stride: u32,
    }

    /// RMSNorm of prefill rows.
    "norm.cu" struct RmsNormParams {
        x: DevPtr<f32>,
        w: DevPtr<f16>,
        out: DevPtr<f16>,
        perm: DevPtr<u32>,
        dim: u32,
        eps: f32,
        perm_stride: u32,
        out_stride: u32,
        out_cols: u32,
        order: u32,
    }

    /// Column permutation of fp16 rows.
    "norm.cu" struct PermuteParams {
        input: DevPtr<f16>,
        out: DevPtr<f16>,
        perm: DevPtr<u32>,
        cols: u32,
    }

    /// Rows of A into the K order of the weights-in-registers GEMM tile.
    "gemm_wgmma_wreg.cu" struct PermuteKParams {
        input: DevPtr<f16>,
        out: DevPtr<f16>,
        lda: u32,
        k: u32,
        k_pad: u32,
        in_part_stride: u32,
    }

    /// Rotary embedding and KV-cache append of prefill rows.
    "rope.cuh" struct RopeParams {
        qkv: DevPtr<f16>,
        q_out: DevPtr<f16>,
        k_cache: DevPtr<f16>,
        v_cache: DevPtr<f16>,
        rope_cos: DevPtr<f32>,
        rope_sin: DevPtr<f32>,
        pos0: DevPtr<u32>,
        q_dim: u32,
        kv_dim: u32,
        head_dim: u32,
        ctx: u32,
    }

    /// SwiGLU of prefill rows.
    "swiglu.cu" struct SwigluParams {
        gu: DevPtr<f16>,
        h: DevPtr<f16>,
        perm: DevPtr<u32>,
        inter: u32,
        ldh: u32,
        k_steps: u32,
    }

    /// The greedy step's bookkeeping: record the token, advance the position.
    "decode.cu" struct DecodeAdvanceParams {
        pos: DevPtr<u32>,
        token: DevPtr<u32>,
        host_ring: DevPtr<u32>,
        ring_len: u32,
    }

    /// The sampler: the next token from one row of logits.
    "sample.cu" struct SampleParams {
        logits: DevPtr<f32>,
        config: DevPtr<SamplerConfig>,
        seen: DevPtr<u32>,
        token: DevPtr<u32>,
        pos: DevPtr<u32>,
        vocab: u32,
        pos_offset: u32,
    }

    /// Scoring a window: the tile GEMM with its (max, sum of exp) epilogue, and the per-row merge.
    "score.cu" struct ScoreParams {
        a: DevPtr<f16>,
        w: DevPtr<f16>,
        targets: DevPtr<u32>,
        part: DevPtr<f32>,
        target_logit: DevPtr<f32>,
        nll: DevPtr<f32>,
        m: u32,
        k: u32,
        lda: u32,
        vocab: u32,
        n_tiles: u32,
    }

    /// Fill a buffer with one 32-bit value (tests poison outputs with NaN bits).
    "util.cu" struct FillParams {
        p: DevPtr<u32>,
        n: u64,
        value: u32,
    }

    /// The copy-bandwidth probe.
    "util.cu" struct CopyParams {
        src: DevPtr<[u32; 4]>,
        dst: DevPtr<[u32; 4]>,
        n16: u64,
    }

    /// The device repack of a GPTQ int4 linear without act-order (`repack.cu`; tested against the host repack,
    /// not yet what the loader uses).
    "repack.cu" struct RepackParams {
        qweight0: DevPtr<u32>,
        qweight1: DevPtr<u32>,
        qweight2: DevPtr<u32>,
        qzeros0: DevPtr<u32>,
        qzeros1: DevPtr<u32>,
        qzeros2: DevPtr<u32>,
        scales0: DevPtr<f16>,
        scales1: DevPtr<f16>,
        scales2: DevPtr<f16>,
        col_map: DevPtr<u32>,
        qw: DevPtr<u32>,
        sz: DevPtr<u32>,
        scales: DevPtr<f16>,
        n0: u32,
        n1: u32,
        n2: u32,
        k: u32,
        steps: u32,
        tiles: u32,
        groups: u32,
    }

    /// The read-bandwidth probe.
    "util.cu" struct ReadParams {
        src: DevPtr<[u32; 4]>,
        sink: DevPtr<u32>,
        n16: u64,
        never: u32,
    }
}

/// The sampler settings as the device reads them (`SamplerConfig` of sample.cu), written by the host before a
/// generation rather than baked into the decode graph.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SamplerConfig {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub penalty: f32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub reserved: u32,
}

impl SamplerConfig {
    pub fn new(p: &crate::sampling::SamplerParams) -> SamplerConfig {
        SamplerConfig {
            temperature: p.temperature,
            top_k: p.top_k.min(u32::MAX as usize) as u32,
            top_p: p.top_p,
            min_p: p.min_p,
            penalty: p.repetition_penalty,
            seed_lo: p.seed as u32,
            seed_hi: (p.seed >> 32) as u32,
            reserved: 0,
        }
    }

    /// (field, Rust type) in order, for the layout test.
    #[cfg(test)]
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("temperature", "f32"),
        ("top_k", "u32"),
        ("top_p", "f32"),
        ("min_p", "f32"),
        ("penalty", "f32"),
        ("seed_lo", "u32"),
        ("seed_hi", "u32"),
        ("reserved", "u32"),
    ];
}

use engine_ptx::kernels as name;

kernels! {
    one {
        /// Tests poison outputs with it before each launch.
        #[cfg_attr(not(test), allow(dead_code))]
        fill_u32: FillParams = name::FILL_U32,
        copy_bw: CopyParams = name::COPY_BYTES_READ_BW,
        read_bw: ReadParams = name::READ_BYTES_BW,
        /// The loader's repack of int4 linears without act-order (`Tuning::gpu_repack`).
        repack_int4_words: RepackParams = name::REPACK_INT4_WORDS,
        repack_int4_scales: RepackParams = name::REPACK_INT4_SCALES,
        embed: EmbedParams = name::EMBED_TOKENS,
        rmsnorm_rows: RmsNormParams = name::RMSNORM_ROWS,
        permute_cols: PermuteParams = name::PERMUTE_COLS,
        rope_kv_rows: RopeParams = name::ROPE_KV_ROWS,
        swiglu_rows: SwigluParams = name::SWIGLU_ROWS,
        /// int4 only (an 8-bit 128-row tile would not fit two blocks per SM; see gemm.cu).
        gemm128_store16: GemmParams = name::GEMM128_INT4_STORE16,
        gemm128_residual: GemmParams = name::GEMM128_INT4_RESIDUAL,
        gemm128_store32: GemmParams = name::GEMM128_INT4_STORE32,
        /// sm_90 only (the sm_90a module; they trap in the compute_80 one): see `Gpu::has_wgmma`.
        gemm_wgmma_store16: GemmParams = name::GEMM_WGMMA_INT4_STORE16,
        gemm_wgmma_residual: GemmParams = name::GEMM_WGMMA_INT4_RESIDUAL,
        gemm_wgmma_store32: GemmParams = name::GEMM_WGMMA_INT4_STORE32,
        gemm_wgmma256_store16: GemmParams = name::GEMM_WGMMA256_INT4_STORE16,
        gemm_wgmma256_residual: GemmParams = name::GEMM_WGMMA256_INT4_RESIDUAL,
        gemm_wgmma256_store32: GemmParams = name::GEMM_WGMMA256_INT4_STORE32,
        gemm_wgmma_ws_store16: GemmParams = name::GEMM_WGMMA_WS_INT4_STORE16,
        gemm_wgmma_ws_residual: GemmParams = name::GEMM_WGMMA_WS_INT4_RESIDUAL,
        gemm_wgmma_ws_store32: GemmParams = name::GEMM_WGMMA_WS_INT4_STORE32,
        gemm_wgmma_short_store16: GemmParams = name::GEMM_WGMMA_SHORT_INT4_STORE16,
        gemm_wgmma_short_residual: GemmParams = name::GEMM_WGMMA_SHORT_INT4_RESIDUAL,
        gemm_wgmma_short_store32: GemmParams = name::GEMM_WGMMA_SHORT_INT4_STORE32,
        gemm_wgmma_short_swiglu: GemmParams = name::GEMM_WGMMA_SHORT_INT4_SWIGLU,
        gemm_wgmma_short_qkv_rope: GemmRopeParams = name::GEMM_WGMMA_SHORT_INT4_QKV_ROPE,
        gemm_wgmma_wreg_store16: GemmParams = name::GEMM_WGMMA_WREG_INT4_STORE16,
        gemm_wgmma_wreg_residual: GemmParams = name::GEMM_WGMMA_WREG_INT4_RESIDUAL,
        gemm_wgmma_wreg_store32: GemmParams = name::GEMM_WGMMA_WREG_INT4_STORE32,
        permute_k_steps: PermuteKParams = name::PERMUTE_K_STEPS,
        permute_frag16: PermuteKParams = name::PERMUTE_FRAG16,
        /// The int4 GEMVs over a symmetric linear's scales-only copy (see `GemvKernel`), register-pipelined and lean.
        sym_qkv: GemvParams = name::GEMV_SYM_INT4_QKV,
        sym_gate_up: GemvParams = name::GEMV_SYM_INT4_GATE_UP,
        sym_gate_up_split: GemvParams = name::GEMV_SYM_INT4_GATE_UP_SPLIT,
        sym_qkv_sorted: GemvParams = name::GEMV_SYM_INT4_QKV_SORTED,
        sym_residual_sorted: GemvParams = name::GEMV_SYM_INT4_RESIDUAL_SORTED,
        sym_residual_wide_sorted: GemvParams = name::GEMV_SYM_INT4_RESIDUAL_WIDE_SORTED,
        sym_residual: GemvParams = name::GEMV_SYM_INT4_RESIDUAL,
        sym_residual_wide: GemvParams = name::GEMV_SYM_INT4_RESIDUAL_WIDE,
        sym_store: GemvParams = name::GEMV_SYM_INT4_STORE,
        sym_norm_store: GemvParams = name::GEMV_SYM_INT4_NORM_STORE,
        lean_sym_qkv: GemvParams = name::GEMV_LEAN_SYM_INT4_QKV,
        lean_sym_gate_up: GemvParams = name::GEMV_LEAN_SYM_INT4_GATE_UP,
        lean_sym_gate_up_split: GemvParams = name::GEMV_LEAN_SYM_INT4_GATE_UP_SPLIT,
        lean_sym_qkv_sorted: GemvParams = name::GEMV_LEAN_SYM_INT4_QKV_SORTED,
        lean_sym_residual_sorted: GemvParams = name::GEMV_LEAN_SYM_INT4_RESIDUAL_SORTED,
        lean_sym_residual_wide_sorted: GemvParams = name::GEMV_LEAN_SYM_INT4_RESIDUAL_WIDE_SORTED,
        lean_sym_residual: GemvParams = name::GEMV_LEAN_SYM_INT4_RESIDUAL,
        lean_sym_residual_wide: GemvParams = name::GEMV_LEAN_SYM_INT4_RESIDUAL_WIDE,
        lean_sym_store: GemvParams = name::GEMV_LEAN_SYM_INT4_STORE,
        lean_sym_norm_store: GemvParams = name::GEMV_LEAN_SYM_INT4_NORM_STORE,
        attn_decode: AttnParams = name::ATTN_DECODE,
        /// sm_90 only (the sm_90a module; it traps in the compute_80 one): see `Gpu::has_wgmma`.
        attn_decode_cluster: AttnParams = name::ATTN_DECODE_CLUSTER,
        attn_prefill: AttnParams = name::ATTN_PREFILL,
        attn_prefill_tc64: AttnParams = name::ATTN_PREFILL_TC64,
        attn_prefill_tc128: AttnParams = name::ATTN_PREFILL_TC128,
        lm_head: LmHeadParams = name::LM_HEAD_F16,
        /// A greedy step's lm_head: the screen over the int8 copy, then the rows it leaves (`Step::lm_head_of`).
        lm_head_screen_pack: HeadScreenPackParams = name::LM_HEAD_SCREEN_PACK,
        lm_head_screen: LmHeadParams = name::LM_HEAD_SCREEN,
        lm_head_exact: LmHeadParams = name::LM_HEAD_EXACT,
        decode_advance: DecodeAdvanceParams = name::DECODE_ADVANCE,
        sample: SampleParams = name::SAMPLE_TOKEN,
        score_tile: ScoreParams = name::SCORE_TILE,
        score_reduce: ScoreParams = name::SCORE_REDUCE,
    }
    by_format {
        gemv_qkv: GemvParams = name::GEMV_INT4_QKV, name::GEMV_INT8_QKV, name::GEMV_F16_QKV;
        gemv_gate_up: GemvParams = name::GEMV_INT4_GATE_UP, name::GEMV_INT8_GATE_UP, name::GEMV_F16_GATE_UP;
        gemv_gate_up_split: GemvParams = name::GEMV_INT4_GATE_UP_SPLIT, name::GEMV_INT8_GATE_UP_SPLIT, name::GEMV_F16_GATE_UP_SPLIT;
        gemv_qkv_sorted: GemvParams = name::GEMV_INT4_QKV_SORTED, name::GEMV_INT8_QKV_SORTED, name::GEMV_F16_QKV_SORTED;
        gemv_residual_sorted: GemvParams = name::GEMV_INT4_RESIDUAL_SORTED, name::GEMV_INT8_RESIDUAL_SORTED, name::GEMV_F16_RESIDUAL_SORTED;
        gemv_residual_wide_sorted: GemvParams =
            name::GEMV_INT4_RESIDUAL_WIDE_SORTED, name::GEMV_INT8_RESIDUAL_WIDE_SORTED, name::GEMV_F16_RESIDUAL_WIDE_SORTED;
        gemv_residual: GemvParams = name::GEMV_INT4_RESIDUAL, name::GEMV_INT8_RESIDUAL, name::GEMV_F16_RESIDUAL;
        gemv_residual_wide: GemvParams = name::GEMV_INT4_RESIDUAL_WIDE, name::GEMV_INT8_RESIDUAL_WIDE, name::GEMV_F16_RESIDUAL_WIDE;
        gemv_store: GemvParams = name::GEMV_INT4_STORE, name::GEMV_INT8_STORE, name::GEMV_F16_STORE;
        gemv_norm_store: GemvParams = name::GEMV_INT4_NORM_STORE, name::GEMV_INT8_NORM_STORE, name::GEMV_F16_NORM_STORE;
        /// The same with the lean K loop (see `Kernels::gemvs`).
        lean_qkv: GemvParams = name::GEMV_LEAN_INT4_QKV, name::GEMV_LEAN_INT8_QKV, name::GEMV_LEAN_F16_QKV;
        lean_gate_up: GemvParams = name::GEMV_LEAN_INT4_GATE_UP, name::GEMV_LEAN_INT8_GATE_UP, name::GEMV_LEAN_F16_GATE_UP;
        lean_gate_up_split: GemvParams = name::GEMV_LEAN_INT4_GATE_UP_SPLIT, name::GEMV_LEAN_INT8_GATE_UP_SPLIT, name::GEMV_LEAN_F16_GATE_UP_SPLIT;
        lean_qkv_sorted: GemvParams = name::GEMV_LEAN_INT4_QKV_SORTED, name::GEMV_LEAN_INT8_QKV_SORTED, name::GEMV_LEAN_F16_QKV_SORTED;
        lean_residual_sorted: GemvParams = name::GEMV_LEAN_INT4_RESIDUAL_SORTED, name::GEMV_LEAN_INT8_RESIDUAL_SORTED, name::GEMV_LEAN_F16_RESIDUAL_SORTED;
        lean_residual_wide_sorted: GemvParams = name::GEMV_LEAN_INT4_RESIDUAL_WIDE_SORTED, name::GEMV_LEAN_INT8_RESIDUAL_WIDE_SORTED, name::GEMV_LEAN_F16_RESIDUAL_WIDE_SORTED;
        lean_residual: GemvParams = name::GEMV_LEAN_INT4_RESIDUAL, name::GEMV_LEAN_INT8_RESIDUAL, name::GEMV_LEAN_F16_RESIDUAL;
        lean_residual_wide: GemvParams = name::GEMV_LEAN_INT4_RESIDUAL_WIDE, name::GEMV_LEAN_INT8_RESIDUAL_WIDE, name::GEMV_LEAN_F16_RESIDUAL_WIDE;
        lean_store: GemvParams = name::GEMV_LEAN_INT4_STORE, name::GEMV_LEAN_INT8_STORE, name::GEMV_LEAN_F16_STORE;
        lean_norm_store: GemvParams = name::GEMV_LEAN_INT4_NORM_STORE, name::GEMV_LEAN_INT8_NORM_STORE, name::GEMV_LEAN_F16_NORM_STORE;
        /// The same on the weight ring: sm_90 only (see `Kernels::gemvs`).
        ring_qkv: GemvParams = name::GEMV_RING_INT4_QKV, name::GEMV_RING_INT8_QKV, name::GEMV_RING_F16_QKV;
        ring_gate_up: GemvParams = name::GEMV_RING_INT4_GATE_UP, name::GEMV_RING_INT8_GATE_UP, name::GEMV_RING_F16_GATE_UP;
        ring_gate_up_split: GemvParams = name::GEMV_RING_INT4_GATE_UP_SPLIT, name::GEMV_RING_INT8_GATE_UP_SPLIT, name::GEMV_RING_F16_GATE_UP_SPLIT;
        ring_qkv_sorted: GemvParams = name::GEMV_RING_INT4_QKV_SORTED, name::GEMV_RING_INT8_QKV_SORTED, name::GEMV_RING_F16_QKV_SORTED;
        ring_residual_sorted: GemvParams = name::GEMV_RING_INT4_RESIDUAL_SORTED, name::GEMV_RING_INT8_RESIDUAL_SORTED, name::GEMV_RING_F16_RESIDUAL_SORTED;
        ring_residual_wide_sorted: GemvParams = name::GEMV_RING_INT4_RESIDUAL_WIDE_SORTED, name::GEMV_RING_INT8_RESIDUAL_WIDE_SORTED, name::GEMV_RING_F16_RESIDUAL_WIDE_SORTED;
        ring_residual: GemvParams = name::GEMV_RING_INT4_RESIDUAL, name::GEMV_RING_INT8_RESIDUAL, name::GEMV_RING_F16_RESIDUAL;
        ring_residual_wide: GemvParams = name::GEMV_RING_INT4_RESIDUAL_WIDE, name::GEMV_RING_INT8_RESIDUAL_WIDE, name::GEMV_RING_F16_RESIDUAL_WIDE;
        ring_store: GemvParams = name::GEMV_RING_INT4_STORE, name::GEMV_RING_INT8_STORE, name::GEMV_RING_F16_STORE;
        ring_norm_store: GemvParams = name::GEMV_RING_INT4_NORM_STORE, name::GEMV_RING_INT8_NORM_STORE, name::GEMV_RING_F16_NORM_STORE;
        gemm_store16: GemmParams = name::GEMM_INT4_STORE16, name::GEMM_INT8_STORE16, name::GEMM_F16_STORE16;
        gemm_residual: GemmParams = name::GEMM_INT4_RESIDUAL, name::GEMM_INT8_RESIDUAL, name::GEMM_F16_RESIDUAL;
        gemm_store32: GemmParams = name::GEMM_INT4_STORE32, name::GEMM_INT8_STORE32, name::GEMM_F16_STORE32;
        gemm_small_store16: GemmParams = name::GEMM_SMALL_INT4_STORE16, name::GEMM_SMALL_INT8_STORE16, name::GEMM_SMALL_F16_STORE16;
        gemm_small_residual: GemmParams = name::GEMM_SMALL_INT4_RESIDUAL, name::GEMM_SMALL_INT8_RESIDUAL, name::GEMM_SMALL_F16_RESIDUAL;
    }
    by_rows {
        /// The GEMV-shaped prefill tile (`gemv_rows.cu`), int4 only.
        gemv_rows_store16: GemmParams = name::GEMV_ROWS16_INT4_STORE16, name::GEMV_ROWS16_WIDE_INT4_STORE16,
            name::GEMV_ROWS32_INT4_STORE16, name::GEMV_ROWS48_INT4_STORE16, name::GEMV_ROWS64_INT4_STORE16;
        gemv_rows_residual: GemmParams = name::GEMV_ROWS16_INT4_RESIDUAL, name::GEMV_ROWS16_WIDE_INT4_RESIDUAL,
            name::GEMV_ROWS32_INT4_RESIDUAL, name::GEMV_ROWS48_INT4_RESIDUAL, name::GEMV_ROWS64_INT4_RESIDUAL;
        /// f32 output: the kernel tests' reference epilogue.
        #[cfg_attr(not(test), allow(dead_code))]
        gemv_rows_store32: GemmParams = name::GEMV_ROWS16_INT4_STORE32, name::GEMV_ROWS16_WIDE_INT4_STORE32,
            name::GEMV_ROWS32_INT4_STORE32, name::GEMV_ROWS48_INT4_STORE32, name::GEMV_ROWS64_INT4_STORE32;
        gemv_rows_swiglu: GemmParams = name::GEMV_ROWS16_INT4_SWIGLU, name::GEMV_ROWS16_WIDE_INT4_SWIGLU,
            name::GEMV_ROWS32_INT4_SWIGLU, name::GEMV_ROWS48_INT4_SWIGLU, name::GEMV_ROWS64_INT4_SWIGLU;
        gemv_rows_qkv_rope: GemmRopeParams = name::GEMV_ROWS16_INT4_QKV_ROPE, name::GEMV_ROWS16_WIDE_INT4_QKV_ROPE,
            name::GEMV_ROWS32_INT4_QKV_ROPE, name::GEMV_ROWS48_INT4_QKV_ROPE, name::GEMV_ROWS64_INT4_QKV_ROPE;
    }
}

/// An open device with the engine's kernels loaded: what the launch code runs on.
pub(crate) struct Device {
    pub gpu: Gpu,
    pub k: Kernels,
    /// Seconds spent loading the module (the driver's JIT of the PTX, or the prebuilt cubin).
    pub module_load_s: f64,
    /// Most splits per head `attn_decode_cluster` runs with here: [`shapes::ATTN_MAX_CLUSTER`] where a cluster of
    /// that many blocks fits the device, else 0 (the split kernel for every head; sm_80 modules too).
    pub attn_cluster_max: u32,
}

impl Device {
    pub fn open(ordinal: usize, tuning: &Tuning) -> Result<Device> {
        let gpu = Gpu::open(ordinal, tuning.pdl)?;
        let (major, minor) = gpu.cc;
        let ptx = engine_ptx::ptx_for(major, minor).ok_or_else(|| {
            Error::BackendUnavailable(format!(
                "{} has compute capability {major}.{minor}; the engine needs 8.0 (sm_80) or newer",
                gpu.name
            ))
        })?;
        let cubin = engine_ptx::cubin_for(major, minor).filter(|_| tuning.cubin);
        let t0 = std::time::Instant::now();
        let module = gpu.load_module(ptx, cubin)?;
        let module_load_s = t0.elapsed().as_secs_f64();
        let k = Kernels::load(&module, &gpu)?;
        // A cluster must fit in one GPC; a partitioned GPU (MIG) may not hold one of 16 blocks, and the launch would
        // fail where the split kernel runs. A failed query means the same: the split kernel (the GPU suite's
        // attention test fails on an H100 or H200 where that happens, so it cannot go unnoticed there).
        let most = shapes::ATTN_MAX_CLUSTER;
        let fits = || k.attn_decode_cluster.max_active_clusters(shapes::attn_decode_cluster(1, most)).unwrap_or(0) > 0;
        let attn_cluster_max = if gpu.has_wgmma() && fits() { most } else { 0 };
        Ok(Device { gpu, k, module_load_s, attn_cluster_max })
    }
}

impl Device {
    /// How the decode GEMVs stream their weights under `tuning`: on the weight ring where it asks for it and the
    /// sm_90a module (the one [`Gpu::has_wgmma`] names) is loaded, else in registers (with the lean K loop where it
    /// asks for that).
    pub fn gemv_stream(&self, tuning: &Tuning) -> shapes::GemvStream {
        if tuning.gemv_ring && self.has_wgmma() {
            shapes::GemvStream::Ring
        } else if tuning.gemv_lean {
            shapes::GemvStream::Lean
        } else {
            shapes::GemvStream::Registers
        }
    }
}

/// One decode GEMV's kernels: one per weight format, and (in the register-pipelined and lean sets) the int4 kernel
/// that reads a symmetric linear's scales-only copy (`GemvParams::scales`) instead of its (scale, zero) words.
#[derive(Clone, Copy)]
pub(crate) struct GemvKernel<'a> {
    by_format: &'a ByFormat<GemvParams>,
    scales_only: Option<&'a Kernel<GemvParams>>,
}

impl<'a> GemvKernel<'a> {
    /// The kernel over `format` tiles that reads `sz`.
    pub fn of(&self, format: TileFormat) -> &'a Kernel<GemvParams> {
        self.by_format.of(format)
    }
    /// The int4 kernel that reads the scales-only copy of a symmetric linear (none on the weight ring).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn scales_only(&self) -> Option<&'a Kernel<GemvParams>> {
        self.scales_only
    }
    /// The kernel for a linear of `format` whose scales-only copy is `scales` (null: it has none, or the decode
    /// does not read it), and the `GemvParams::scales` to launch it with: that copy where this set has a kernel
    /// for it, else the `sz` kernel and null.
    pub fn for_linear(&self, format: TileFormat, scales: DevPtr<f16>) -> (&'a Kernel<GemvParams>, DevPtr<f16>) {
        match self.scales_only {
            Some(k) if format == TileFormat::Int4 && !scales.is_null() => (k, scales),
            _ => (self.of(format), DevPtr::NULL),
        }
    }
    /// Every kernel of it.
    fn all(&self) -> impl Iterator<Item = &'a Kernel<GemvParams>> {
        self.by_format.all().into_iter().chain(self.scales_only)
    }
}

/// One set of decode GEMV kernels: the register-pipelined ones, the same with the lean K loop, or the same on the
/// weight ring ([`Kernels::gemvs`]).
pub(crate) struct Gemvs<'a> {
    pub qkv: GemvKernel<'a>,
    pub gate_up: GemvKernel<'a>,
    pub gate_up_split: GemvKernel<'a>,
    pub qkv_sorted: GemvKernel<'a>,
    pub residual_sorted: GemvKernel<'a>,
    pub residual_wide_sorted: GemvKernel<'a>,
    pub residual: GemvKernel<'a>,
    pub residual_wide: GemvKernel<'a>,
    pub store: GemvKernel<'a>,
    pub norm_store: GemvKernel<'a>,
}

impl<'a> Gemvs<'a> {
    /// Every kernel of the set.
    fn all(&self) -> impl Iterator<Item = &'a Kernel<GemvParams>> {
        [
            self.qkv,
            self.gate_up,
            self.gate_up_split,
            self.qkv_sorted,
            self.residual_sorted,
            self.residual_wide_sorted,
            self.residual,
            self.residual_wide,
            self.store,
            self.norm_store,
        ]
        .into_iter()
        .flat_map(|g| g.all())
    }
}

/// Builds a `Gemvs` from the kernel table: per role the field of its by-format kernels and, where the set has one,
/// the field of its scales-only kernel.
macro_rules! gemv_set {
    ($k:expr, $($role:ident: $plain:ident $(, $sym:ident)?;)*) => {
        Gemvs { $($role: GemvKernel { by_format: &$k.$plain, scales_only: gemv_set!(@sym $k $(, $sym)?) },)* }
    };
    (@sym $k:expr) => { None };
    (@sym $k:expr, $sym:ident) => { Some(&$k.$sym) };
}

impl Kernels {
    /// The decode GEMVs that stream their weights by `stream`.
    pub fn gemvs(&self, stream: shapes::GemvStream) -> Gemvs<'_> {
        match stream {
            shapes::GemvStream::Registers => gemv_set!(self,
                qkv: gemv_qkv, sym_qkv;
                gate_up: gemv_gate_up, sym_gate_up;
                gate_up_split: gemv_gate_up_split, sym_gate_up_split;
                qkv_sorted: gemv_qkv_sorted, sym_qkv_sorted;
                residual_sorted: gemv_residual_sorted, sym_residual_sorted;
                residual_wide_sorted: gemv_residual_wide_sorted, sym_residual_wide_sorted;
                residual: gemv_residual, sym_residual;
                residual_wide: gemv_residual_wide, sym_residual_wide;
                store: gemv_store, sym_store;
                norm_store: gemv_norm_store, sym_norm_store;
            ),
            shapes::GemvStream::Lean => gemv_set!(self,
                qkv: lean_qkv, lean_sym_qkv;
                gate_up: lean_gate_up, lean_sym_gate_up;
                gate_up_split: lean_gate_up_split, lean_sym_gate_up_split;
                qkv_sorted: lean_qkv_sorted, lean_sym_qkv_sorted;
                residual_sorted: lean_residual_sorted, lean_sym_residual_sorted;
                residual_wide_sorted: lean_residual_wide_sorted, lean_sym_residual_wide_sorted;
                residual: lean_residual, lean_sym_residual;
                residual_wide: lean_residual_wide, lean_sym_residual_wide;
                store: lean_store, lean_sym_store;
                norm_store: lean_norm_store, lean_sym_norm_store;
            ),
            shapes::GemvStream::Ring => gemv_set!(self,
                qkv: ring_qkv;
                gate_up: ring_gate_up;
                gate_up_split: ring_gate_up_split;
                qkv_sorted: ring_qkv_sorted;
                residual_sorted: ring_residual_sorted;
                residual_wide_sorted: ring_residual_wide_sorted;
                residual: ring_residual;
                residual_wide: ring_residual_wide;
                store: ring_store;
                norm_store: ring_norm_store;
            ),
        }
    }
}

/// The launch code works on a device with kernels; most of what it calls is the device's.
impl std::ops::Deref for Device {
    type Target = Gpu;
    fn deref(&self) -> &Gpu {
        &self.gpu
    }
}

impl Kernels {
    /// Resolve every kernel of `module` and raise the shared-memory limits of those that take more than the
    /// default 48 KB, as far as the card allows.
    fn load(module: &Arc<CudaModule>, gpu: &Gpu) -> Result<Kernels> {
        let limits = &gpu.limits;
        let k = Kernels::functions(module)?;
        // The GEMVs and lm_head stage their input in shared memory: K × 2 (or × 4) bytes, up to the card's limit.
        let staged = shapes::GEMV_MAX_SMEM_BYTES.min(limits.smem_per_block);
        for stream in [shapes::GemvStream::Registers, shapes::GemvStream::Lean] {
            for f in k.gemvs(stream).all() {
                f.set_max_dynamic_smem(staged)?;
            }
        }
        if gpu.has_wgmma() {
            // The ring in front of the staged input.
            let ring = (staged + shapes::gemv_ring_bytes(TileFormat::F16) + 16).min(limits.smem_per_block);
            for f in k.gemvs(shapes::GemvStream::Ring).all() {
                f.set_max_dynamic_smem(ring)?;
            }
        }
        for f in [&k.lm_head, &k.lm_head_screen, &k.lm_head_exact] {
            f.set_max_dynamic_smem(staged)?;
        }
        for f in [&k.gemm_store16, &k.gemm_residual, &k.gemm_store32] {
            for format in [TileFormat::Int4, TileFormat::Int8, TileFormat::F16] {
                f.of(format).set_max_dynamic_smem(shapes::gemm_smem_bytes(64, format))?;
            }
        }
        // Exactly what they take (69632 bytes for head_dim 128, more than the default 48 KB).
        k.attn_prefill_tc64.set_max_dynamic_smem(shapes::attn_prefill_tc_smem_bytes(64))?;
        k.attn_prefill_tc128.set_max_dynamic_smem(shapes::attn_prefill_tc_smem_bytes(128))?;
        if shapes::gemm128_fits(limits) {
            for f in [&k.gemm128_store16, &k.gemm128_residual, &k.gemm128_store32] {
                f.set_max_dynamic_smem(shapes::GEMM128_SMEM_BYTES)?;
                // Two blocks per SM need 2 × 106 KB of the SM's unified L1 / shared memory: ask for the largest
                // shared-memory carveout rather than leave the split to the driver (the L1 left over is enough,
                // A and the weights bypass L1 anyway).
                f.prefer_shared_memory()?;
            }
        }
        if gpu.has_wgmma() {
            // Its clusters are a head's splits, up to 16.
            k.attn_decode_cluster.allow_large_clusters()?;
            for f in [&k.gemm_wgmma_store16, &k.gemm_wgmma_residual, &k.gemm_wgmma_store32] {
                f.set_max_dynamic_smem(shapes::GEMM_WGMMA_SMEM_BYTES)?;
                f.prefer_shared_memory()?;
            }
            for f in [&k.gemm_wgmma256_store16, &k.gemm_wgmma256_residual, &k.gemm_wgmma256_store32] {
                f.set_max_dynamic_smem(shapes::GEMM_WGMMA256_SMEM_BYTES)?;
                f.prefer_shared_memory()?;
            }
            for f in [&k.gemm_wgmma_ws_store16, &k.gemm_wgmma_ws_residual, &k.gemm_wgmma_ws_store32] {
                f.set_max_dynamic_smem(shapes::GEMM_WGMMA_WS_SMEM_BYTES)?;
                f.prefer_shared_memory()?;
            }
            for f in [
                &k.gemm_wgmma_short_store16,
                &k.gemm_wgmma_short_residual,
                &k.gemm_wgmma_short_store32,
                &k.gemm_wgmma_short_swiglu,
            ] {
                f.set_max_dynamic_smem(shapes::GEMM_WGMMA_SHORT_SMEM_BYTES)?;
                f.prefer_shared_memory()?;
            }
            let rope = &k.gemm_wgmma_short_qkv_rope;
            rope.set_max_dynamic_smem(shapes::GEMM_WGMMA_SHORT_SMEM_BYTES)?;
            rope.prefer_shared_memory()?;
            for f in [&k.gemm_wgmma_wreg_store16, &k.gemm_wgmma_wreg_residual, &k.gemm_wgmma_wreg_store32] {
                f.set_max_dynamic_smem(shapes::GEMM_WGMMA_WREG_SMEM_BYTES)?;
                f.prefer_shared_memory()?;
            }
        }
        k.score_tile.set_max_dynamic_smem(shapes::SCORE_SMEM_BYTES)?;
        for f in [&k.gemm_small_store16, &k.gemm_small_residual].into_iter().flat_map(ByFormat::all) {
            f.set_max_dynamic_smem(shapes::GEMM_SMALL_MAX_SMEM_BYTES)?;
        }
        Ok(k)
    }

    /// The prefill attention kernel `shapes::attn_prefill` chose.
    pub fn attn_prefill_kernel(&self, which: shapes::AttnPrefill) -> &Kernel<AttnParams> {
        match which {
            shapes::AttnPrefill::Tc64 => &self.attn_prefill_tc64,
            shapes::AttnPrefill::Tc128 => &self.attn_prefill_tc128,
            shapes::AttnPrefill::PerRow => &self.attn_prefill,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_source(file: &str) -> String {
        let path = format!("{}/../ptx/kernels/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// (field, C type without `const`, size, alignment) of `struct {name}` in `source`, one declaration per line;
    /// a field may be another of the parameter structs (its size is its mirror's, checked on its own).
    fn c_fields(source: &str, name: &str) -> Vec<(String, String, usize, usize)> {
        let start = source.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("struct {name} not found"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        body.lines()
            .map(|l| l.split("//").next().unwrap().trim())
            .filter(|l| !l.is_empty())
            .map(|l| {
                let l = l.trim_end_matches(';');
                let (ty, field) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{name}: cannot read `{l}`"));
                let pointer = ty.ends_with('*') || field.starts_with('*');
                let ty = ty.trim_start_matches("const ").trim_end_matches('*').trim().to_string();
                let ty = if pointer { format!("{ty}*") } else { ty };
                let nested = PARAM_STRUCTS.iter().find(|s| s.1 == ty).map(|s| s.3);
                let (size, align) = match nested {
                    Some(size) => (size, 8),
                    None if pointer || ty == "uint64_t" => (8, 8),
                    None => (4, 4),
                };
                (field.trim_start_matches('*').to_string(), ty, size, align)
            })
            .collect()
    }

    /// The Rust type that mirrors a C field type.
    fn rust_type_of(c: &str) -> &'static str {
        match c {
            "__half*" => "DevPtr<f16>",
            "float*" => "DevPtr<f32>",
            "uint32_t*" => "DevPtr<u32>",
            "uint4*" => "DevPtr<[u32; 4]>",
            "SamplerConfig*" => "DevPtr<SamplerConfig>",
            "GemmParams" => "GemmParams",
            "RopeParams" => "RopeParams",
            "AttnParams" => "AttnParams",
            "uint32_t" => "u32",
            "uint64_t" => "u64",
            "float" => "f32",
            other => panic!("no Rust mirror for C type `{other}`: extend kernels.rs's tests"),
        }
    }

    #[test]
    fn the_kernels_constants_mirror_the_host() {
        // The host sizes launches by these (threads, rows and columns per block, splits) and picks the short decode
        // graph by the attention's; a kernel that changed one alone would run other work than the host planned.
        // (The tile layout's numbers need no such check: the host reads them from the kernels' header.)
        let mirrors = [
            ("attention.cuh", format!("constexpr uint32_t MIN_PER_SPLIT = {};", shapes::ATTN_MIN_PER_SPLIT)),
            ("attention.cuh", format!("constexpr uint32_t MAX_CLUSTER = {};", shapes::ATTN_MAX_CLUSTER)),
            ("gemv.cu", format!("constexpr int WARPS = {};", shapes::GEMV_THREADS / 32)),
            ("gemv.cu", format!("constexpr int WIDE_WARPS = {};", shapes::GEMV_WIDE_WARPS)),
            ("lm_head.cu", format!("constexpr int WARPS = {};", shapes::GEMV_THREADS / 32)),
            ("lm_head.cu", format!("constexpr int ROWS = {};", shapes::LM_HEAD_ROWS / (shapes::GEMV_THREADS / 32))),
            ("score.cu", format!("constexpr int BM = {0}, BN = {0},", shapes::SCORE_TILE)),
            ("frag16.cuh", format!("constexpr uint32_t SPAN = {};", shapes::FRAG16_SPAN)),
            ("tiles.cuh", format!("constexpr float HALF_INPUT_SCALE = {}f;", shapes::HALF_INPUT_SCALE)),
            ("lm_head.cu", format!("constexpr uint32_t SCREEN_GROUP = {};", engine_format::plan::LM_HEAD_SCREEN_GROUP)),
        ];
        for (file, want) in &mirrors {
            assert!(kernel_source(file).contains(want.as_str()), "{file} does not declare `{want}`");
        }
    }

    #[test]
    fn every_param_struct_mirrors_its_c_struct() {
        let config = ("sample.cu", "SamplerConfig", SamplerConfig::FIELDS, std::mem::size_of::<SamplerConfig>());
        for &(file, name, fields, size) in PARAM_STRUCTS.iter().chain([&config]) {
            let c = c_fields(&kernel_source(file), name);
            // `in` is a Rust keyword; the mirror calls that field `input`.
            let c_names: Vec<&str> = c.iter().map(|(n, ..)| if n == "in" { "input" } else { n.as_str() }).collect();
            let rust_names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            assert_eq!(c_names, rust_names, "{name}: the Rust mirror's fields differ from {file}");
            for ((field, c_ty, ..), (_, rust_ty)) in c.iter().zip(fields.iter()) {
                let rust_ty: String = rust_ty.split_whitespace().collect::<Vec<_>>().join(" ").replace(" <", "<");
                let rust_ty = rust_ty.replace("< ", "<").replace(" >", ">").replace("[ ", "[").replace(" ]", "]");
                assert_eq!(rust_ty, rust_type_of(c_ty), "{name}.{field}: C type {c_ty}");
            }
            // Natural alignment, padded to the largest member (8 bytes: every struct holds a pointer or u64).
            let mut c_size = 0usize;
            for (.., s, align) in &c {
                c_size = c_size.next_multiple_of(*align) + s;
            }
            assert_eq!(c_size.next_multiple_of(8), size, "{name}: size");
        }
    }

    #[test]
    fn every_kernel_takes_its_param_struct_as_the_ptx_declares_it() {
        // Every kernel of the module has a typed handle, and nothing else does.
        let mut listed: Vec<&str> = KERNEL_PARAMS.iter().map(|(k, ..)| *k).collect();
        let mut all = engine_ptx::kernels::ALL.to_vec();
        listed.sort();
        all.sort();
        assert_eq!(listed, all, "the kernel table and engine_ptx::kernels::ALL differ");
        for (module, ptx) in [("sm80", engine_ptx::PTX_SM80), ("sm90a", engine_ptx::PTX_SM90A)] {
            for &(kernel, params, size) in KERNEL_PARAMS {
                let entry = format!(".visible .entry {kernel}(");
                let at = ptx.find(&entry).unwrap_or_else(|| panic!("{module}: no {entry}"));
                let decl = &ptx[at + entry.len()..];
                let decl = &decl[..decl.find(')').unwrap()];
                let params_declared: Vec<&str> = decl.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                assert_eq!(params_declared.len(), 1, "{module} {kernel}: one parameter expected, got {decl}");
                let want = format!(".param .align 8 .b8 {kernel}_param_0[{size}]");
                assert_eq!(params_declared[0], want, "{module} {kernel}: the PTX parameter is not a {params}");
            }
        }
    }
}

//! The engine's GPU kernels, compiled ahead of time to PTX (see `ptx/build_ptx.py`) and committed, so that building
//! the engine needs no CUDA toolkit and running it needs only an NVIDIA driver.
//!
//! Two modules hold every kernel of `ptx/kernels/*.cu`, compiled by NVRTC 12.4 to **PTX ISA 8.4**, which NVIDIA
//! drivers **R550 and newer** load (an older driver fails `cuModuleLoadData` with an unsupported-PTX error):
//! - [`PTX_SM80`] (`.target sm_80`): every card of compute capability 8.0 and up, through the driver's JIT;
//! - [`PTX_SM90A`] (`.target sm_90a`): sm_90 (H100/H200) only, with the Hopper-only instructions enabled.
//!
//! [`ptx_for`] picks the module for a card; [`kernels`] names the entry points; [`tile`] holds the numbers of the
//! int4 weight layout, generated from the header the kernels include (`kernels/tile_layout.h`).
#![no_std]

/// The int4 tile layout's numbers, from `kernels/tile_layout.h` (the build script generates this module, so the
/// kernels and the Rust layout code share one source).
pub mod tile {
    include!(concat!(env!("OUT_DIR"), "/tile.rs"));
}

/// All kernels for compute capability 8.0 and up (`.target sm_80`). The driver JIT-compiles it for the card; the
/// Hopper-only paths (`griddepcontrol`, wgmma, setmaxnreg) are compiled out.
pub const PTX_SM80: &str = include_str!("../generated/engine_sm80.ptx");

/// All kernels for compute capability 9.0 exactly (`.target sm_90a`: arch-specific, it loads on no other card), with
/// the Hopper-only paths compiled in.
pub const PTX_SM90A: &str = include_str!("../generated/engine_sm90a.ptx");

/// The same kernels assembled by ptxas 12.4 for the common cards, so that they load without the driver's JIT
/// (which takes seconds for this module on a first run): `sm_80` (A100), `sm_86` (RTX 30, A10, A40), `sm_89`
/// (RTX 40, L4, L40) from [`PTX_SM80`], `sm_90a` (H100, H200) from [`PTX_SM90A`].
pub const CUBIN_SM80: &[u8] = include_bytes!("../generated/engine_sm_80.cubin");
pub const CUBIN_SM86: &[u8] = include_bytes!("../generated/engine_sm_86.cubin");
pub const CUBIN_SM89: &[u8] = include_bytes!("../generated/engine_sm_89.cubin");
pub const CUBIN_SM90A: &[u8] = include_bytes!("../generated/engine_sm_90a.cubin");

/// The prebuilt cubin for a card of compute capability `cc_major.cc_minor`, when there is one: an exact match, or
/// the cubin of the same major version and the highest lower minor (cubins run on later minors of their major).
/// `None` means: load [`ptx_for`]'s PTX.
pub fn cubin_for(cc_major: u32, cc_minor: u32) -> Option<&'static [u8]> {
    match (cc_major, cc_minor) {
        (9, 0) => Some(CUBIN_SM90A),
        (8, 9..) => Some(CUBIN_SM89),
        (8, 6..=8) => Some(CUBIN_SM86),
        (8, 0..=5) => Some(CUBIN_SM80),
        _ => None,
    }
}

/// The PTX ISA version of both modules: drivers R550 and newer load it.
pub const PTX_ISA_VERSION: &str = "8.4";

/// The lowest compute capability the engine supports: sm_80 (A100). Older cards get `None` from [`ptx_for`].
pub const MIN_COMPUTE_CAPABILITY: (u32, u32) = (8, 0);

/// The PTX module for a card of compute capability `cc_major.cc_minor` (as the driver reports it), or `None` below
/// the minimum, sm_80.
///
/// - 9.0 (H100, H200): [`PTX_SM90A`], whose `sm_90a` target loads only there;
/// - every other capability from 8.0 up (8.0, 8.6, 8.7, 8.9, 10.x, 12.x, ...): [`PTX_SM80`], JIT-compiled by the
///   driver;
/// - below 8.0: `None`: sm_80 is the minimum (kernels may use `cp.async`, bf16 tensor cores and other sm_80
///   features).
pub fn ptx_for(cc_major: u32, cc_minor: u32) -> Option<&'static str> {
    match (cc_major, cc_minor) {
        (9, 0) => Some(PTX_SM90A),
        (major, minor) if (major, minor) >= MIN_COMPUTE_CAPABILITY => Some(PTX_SM80),
        _ => None,
    }
}

/// Kernel entry points, present in both modules under the same names (the kernels are `extern "C"`).
///
/// Every kernel takes exactly one parameter, a C struct declared next to it in its `.cu` file and mirrored by a
/// `#[repr(C)]` struct in the engine (`engine/src/backend/cuda/kernels.rs`, whose tests pin the two layouts). To add
/// a kernel: one `pub const` named like the kernel in capitals, with the source file, its parameter struct and the
/// launch shape in its doc comment; then add it to [`ALL`]. The tests fail if a kernel of the PTX is missing here or
/// a name here is missing from either module.
pub mod kernels {
    /// `util.cu`: `fill_u32(FillParams)`.
    ///
    /// Sets `p[0..n)` to `value`; tests poison outputs with a NaN pattern (`0x7fc00000` f32, `0x7e007e00` a pair
    /// of f16, `0x7fc07fc0` a pair of bf16) first. Any 1-D grid (grid-stride loop); `p` 4-byte aligned.
    pub const FILL_U32: &str = "fill_u32";

    /// `util.cu`: `copy_bytes_read_bw(CopyParams)`.
    ///
    /// Copies `16 * n16` bytes from `src` to `dst` (16-byte aligned, not overlapping); `bench` uses it for the
    /// card's copy bandwidth (count bytes read + written). Grid of a few blocks per SM, e.g. 2 x SMs x 256 threads.
    pub const COPY_BYTES_READ_BW: &str = "copy_bytes_read_bw";

    /// `util.cu`: `read_bytes_bw(ReadParams)`.
    ///
    /// Reads `16 * n16` bytes from `src` (16-byte aligned) and writes nothing unless a thread's XOR of its words
    /// equals `never` (then at `sink[global thread index]`: size `sink` for the grid); `bench` uses it for the
    /// card's read-only streaming bandwidth. Launch as the copy.
    pub const READ_BYTES_BW: &str = "read_bytes_bw";

    /// `repack.cu`: `repack_int4_words(RepackParams)` and `repack_int4_scales(RepackParams)`: a GPTQ int4 linear
    /// without act-order (up to three fused parts) from the checkpoint's tensors into the tile layout's words and
    /// (scale, 1024 + zero) words. Any 1-D grid (grid-stride loops), e.g. 4 × SMs × 256 threads.
    pub const REPACK_INT4_WORDS: &str = "repack_int4_words";
    pub const REPACK_INT4_SCALES: &str = "repack_int4_scales";

    /// `embed.cu`: `embed_tokens(EmbedParams)`. One block per row, 256 threads; `ssq_out` may be null.
    pub const EMBED_TOKENS: &str = "embed_tokens";
    /// `norm.cu`: `rmsnorm_rows(RmsNormParams)`. Grid (rows, copies), 256 threads; `perm` may be null.
    pub const RMSNORM_ROWS: &str = "rmsnorm_rows";
    /// `norm.cu`: `permute_cols(PermuteParams)`. One block per row, 256 threads.
    pub const PERMUTE_COLS: &str = "permute_cols";
    /// `rope.cu`: `rope_kv_rows(RopeParams)`. Grid (rows, ceil((heads + 2 · kv_heads) / 4)), 256 threads.
    pub const ROPE_KV_ROWS: &str = "rope_kv_rows";
    /// `swiglu.cu`: `swiglu_rows(SwigluParams)`. Grid (rows, ceil(inter / 2048)), 256 threads; `perm` may be null.
    pub const SWIGLU_ROWS: &str = "swiglu_rows";
    /// `gemv.cu`: `gemv_int4_qkv(GemvParams)`: norm prologue, rotary + KV-append epilogue. 256 threads,
    /// dynamic shared memory `672 + k_pad * 2` per staged input (act-order: one per fused part).
    pub const GEMV_INT4_QKV: &str = "gemv_int4_qkv";
    /// `gemv.cu`: `gemv_int4_gate_up(GemvParams)`: norm prologue, SwiGLU epilogue.
    pub const GEMV_INT4_GATE_UP: &str = "gemv_int4_gate_up";
    /// `gemv.cu`: `gemv_int4_gate_up_split(GemvParams)`: the same over act-order's split gate/up layout (gate
    /// tiles, then up tiles from `part_slot1`), one input staged per part.
    pub const GEMV_INT4_GATE_UP_SPLIT: &str = "gemv_int4_gate_up_split";
    /// `gemv.cu`: `gemv_int4_qkv_sorted(GemvParams)`: act-order q/k/v, one input copy per fused part.
    pub const GEMV_INT4_QKV_SORTED: &str = "gemv_int4_qkv_sorted";
    /// `gemv.cu`: `gemv_int4_residual_sorted(GemvParams)` and `gemv_int4_residual_wide_sorted`: the residual
    /// GEMVs whose epilogue also writes the next (act-order) projection's sorted input copies.
    pub const GEMV_INT4_RESIDUAL_SORTED: &str = "gemv_int4_residual_sorted";
    pub const GEMV_INT4_RESIDUAL_WIDE_SORTED: &str = "gemv_int4_residual_wide_sorted";
    /// `gemv.cu`: `gemv_int4_residual(GemvParams)`: f16 input, residual-add epilogue with partial sums of squares.
    pub const GEMV_INT4_RESIDUAL: &str = "gemv_int4_residual";
    /// `gemv.cu`: `gemv_int4_residual_wide(GemvParams)`: the same with 16 warps (512 threads), dynamic shared
    /// memory `1216 + k_pad * 2`, for projections with few tiles (o/down of a 7B model).
    pub const GEMV_INT4_RESIDUAL_WIDE: &str = "gemv_int4_residual_wide";
    /// `gemv.cu`: `gemv_int4_store(GemvParams)`: f16 input, f32 output (tests).
    pub const GEMV_INT4_STORE: &str = "gemv_int4_store";
    /// `gemv.cu`: `gemv_int4_norm_store(GemvParams)`: norm prologue, f32 output (tests).
    pub const GEMV_INT4_NORM_STORE: &str = "gemv_int4_norm_store";
    /// `gemm.cu`: `gemm_int4_store16(GemmParams)`: 64-row tiles, 128 threads, 56320 bytes of dynamic shared memory, grid
    /// (ceil(n_pad / 64), ceil(m / 64), k_splits); f16 output.
    pub const GEMM_INT4_STORE16: &str = "gemm_int4_store16";
    /// `gemm.cu`: `gemm_int4_residual(GemmParams)`: adds into an f32 output.
    pub const GEMM_INT4_RESIDUAL: &str = "gemm_int4_residual";
    /// `gemm.cu`: `gemm_int4_store32(GemmParams)`: f32 output (tests).
    pub const GEMM_INT4_STORE32: &str = "gemm_int4_store32";
    /// `gemm.cu`: `gemm128_int4_store16(GemmParams)`: 128-row × 128-slot tiles for chunks of at least 128 rows,
    /// 256 threads, 107520 bytes of dynamic shared memory (two blocks per SM on sm_90; needs a card that grants
    /// that much to one block), grid (ceil(n_pad / 128), ceil(m / 128), k_splits); f16 output.
    pub const GEMM128_INT4_STORE16: &str = "gemm128_int4_store16";
    /// `gemm.cu`: `gemm128_int4_residual(GemmParams)`: adds into an f32 output.
    pub const GEMM128_INT4_RESIDUAL: &str = "gemm128_int4_residual";
    /// `gemm.cu`: `gemm128_int4_store32(GemmParams)`: f32 output (tests).
    pub const GEMM128_INT4_STORE32: &str = "gemm128_int4_store32";
    /// `gemm_wgmma.cu`: `gemm_wgmma_int4_store16(GemmParams)`: gemm128's tiles, grid and split-K with the multiply
    /// on Hopper's asynchronous tensor cores (`wgmma`). **sm_90a module only** (in the compute_80 module it traps).
    /// 256 threads, 98304 bytes of dynamic shared memory (two blocks per SM), grid (ceil(n_pad / 128),
    /// ceil(m / 128), k_splits); f16 output.
    pub const GEMM_WGMMA_INT4_STORE16: &str = "gemm_wgmma_int4_store16";
    /// `gemm_wgmma.cu`: `gemm_wgmma_int4_residual(GemmParams)`: adds into an f32 output.
    pub const GEMM_WGMMA_INT4_RESIDUAL: &str = "gemm_wgmma_int4_residual";
    /// `gemm_wgmma.cu`: `gemm_wgmma_int4_store32(GemmParams)`: f32 output (tests).
    pub const GEMM_WGMMA_INT4_STORE32: &str = "gemm_wgmma_int4_store32";
    /// `gemm_wgmma.cu`: `gemm_wgmma256_int4_store16(GemmParams)`: the same with 256-slot tiles, one block per SM:
    /// 195584 bytes of dynamic shared memory, grid (ceil(n_pad / 256), ceil(m / 128), k_splits). sm_90a only.
    pub const GEMM_WGMMA256_INT4_STORE16: &str = "gemm_wgmma256_int4_store16";
    /// `gemm_wgmma.cu`: `gemm_wgmma256_int4_residual(GemmParams)`.
    pub const GEMM_WGMMA256_INT4_RESIDUAL: &str = "gemm_wgmma256_int4_residual";
    /// `gemm_wgmma.cu`: `gemm_wgmma256_int4_store32(GemmParams)` (tests).
    pub const GEMM_WGMMA256_INT4_STORE32: &str = "gemm_wgmma256_int4_store32";
    /// `gemm_wgmma_ws.cu`: `gemm_wgmma_ws_int4_store16(GemmParams)`: the 128 × 128 wgmma tile with a producer
    /// warpgroup and two consumer warpgroups on mbarriers. sm_90a only. 384 threads, 147520 bytes of dynamic shared
    /// memory (one block per SM), grid (ceil(n_pad / 128), ceil(m / 128), k_splits).
    pub const GEMM_WGMMA_WS_INT4_STORE16: &str = "gemm_wgmma_ws_int4_store16";
    /// `gemm_wgmma_ws.cu`: `gemm_wgmma_ws_int4_residual(GemmParams)`.
    pub const GEMM_WGMMA_WS_INT4_RESIDUAL: &str = "gemm_wgmma_ws_int4_residual";
    /// `gemm_wgmma_ws.cu`: `gemm_wgmma_ws_int4_store32(GemmParams)` (tests).
    pub const GEMM_WGMMA_WS_INT4_STORE32: &str = "gemm_wgmma_ws_int4_store32";
    /// `gemm_wgmma_short.cu`: `gemm_wgmma_short_int4_store16(GemmParams)`: chunks of at most 16 rows on wgmma with
    /// the weights, dequantized in registers, as the M side; A in the K order of `k_order.cuh` (lda = k_pad), as its
    /// producers or `permute_k_steps` write it. sm_90a only. 256 threads, 51200 bytes of dynamic shared
    /// memory (four blocks per SM), grid (ceil(n_pad / 128), 1, k_splits); split-K as gemm.cu's (`part`
    /// [k_splits][m][n_pad], a counter per grid.x block column).
    pub const GEMM_WGMMA_SHORT_INT4_STORE16: &str = "gemm_wgmma_short_int4_store16";
    /// `gemm_wgmma_short.cu`: `gemm_wgmma_short_int4_residual(GemmParams)`.
    pub const GEMM_WGMMA_SHORT_INT4_RESIDUAL: &str = "gemm_wgmma_short_int4_residual";
    /// `gemm_wgmma_short.cu`: `gemm_wgmma_short_int4_store32(GemmParams)` (tests).
    pub const GEMM_WGMMA_SHORT_INT4_STORE32: &str = "gemm_wgmma_short_int4_store32";
    /// `gemm_wgmma_short.cu`: `gemm_wgmma_short_int4_swiglu(GemmParams)`: gate/up paired (`ColumnOrder::GateUp`)
    /// with SwiGLU into the down projection's input in its K order (y16, ldy = its k_pad = inter).
    pub const GEMM_WGMMA_SHORT_INT4_SWIGLU: &str = "gemm_wgmma_short_int4_swiglu";
    /// `gemm_wgmma_short.cu`: `gemm_wgmma_short_int4_qkv_rope(GemmParams)`: q/k/v (`ColumnOrder::QkvRope`) with
    /// the rotary embedding and the KV-cache append: rotated q into y16, k and v into the caches at *pos + row.
    pub const GEMM_WGMMA_SHORT_INT4_QKV_ROPE: &str = "gemm_wgmma_short_int4_qkv_rope";
    /// `gemm_wgmma_wreg.cu`: `gemm_wgmma_wreg_int4_store16(GemmParams)`: chunks of 128 rows and more on wgmma with
    /// the weights, dequantized in registers, as the M side; A is `permute_k_steps`' output (lda = k_pad). sm_90a
    /// only. 256 threads, 87040 bytes of dynamic shared memory (two blocks per SM), grid (ceil(n_pad / 128),
    /// ceil(m / 128), k_splits); split-K as gemm.cu's (`part` [k_splits][m][n_pad], a counter per grid.x · grid.y
    /// tile).
    pub const GEMM_WGMMA_WREG_INT4_STORE16: &str = "gemm_wgmma_wreg_int4_store16";
    /// `gemm_wgmma_wreg.cu`: `gemm_wgmma_wreg_int4_residual(GemmParams)`.
    pub const GEMM_WGMMA_WREG_INT4_RESIDUAL: &str = "gemm_wgmma_wreg_int4_residual";
    /// `gemm_wgmma_wreg.cu`: `gemm_wgmma_wreg_int4_store32(GemmParams)` (tests).
    pub const GEMM_WGMMA_WREG_INT4_STORE32: &str = "gemm_wgmma_wreg_int4_store32";
    /// `gemm_wgmma_wreg.cu`: `permute_k_steps(PermuteKParams)`: rows of A into the K order of the
    /// weights-in-registers tile, k_pad wide, zero past k. 128 threads, grid (rows, slices, parts).
    pub const PERMUTE_K_STEPS: &str = "permute_k_steps";
    /// `gemv_rows.cu`: `gemv_rows16_int4_store16(GemmParams)`: chunks of at most 16 rows shaped like the decode
    /// GEMV, f16 output. 256 threads, grid n_pad / 16, no dynamic shared memory; k_pad a multiple of 128, one K
    /// split, A in `frag16.cuh`'s fragment order (a block of 16 × k_pad halves per 16 rows).
    pub const GEMV_ROWS16_INT4_STORE16: &str = "gemv_rows16_int4_store16";
    /// `gemv_rows.cu`: the same, adding into an f32 output.
    pub const GEMV_ROWS16_INT4_RESIDUAL: &str = "gemv_rows16_int4_residual";
    /// `gemv_rows.cu`: the same, f32 output (tests).
    pub const GEMV_ROWS16_INT4_STORE32: &str = "gemv_rows16_int4_store32";
    /// `gemv_rows.cu`: the same over a paired gate/up, silu(gate) · up into the down projection's input in the
    /// fragment order.
    pub const GEMV_ROWS16_INT4_SWIGLU: &str = "gemv_rows16_int4_swiglu";
    /// `gemv_rows.cu`: `gemv_rows16_int4_qkv_rope(GemmRopeParams)`: q/k/v with the rotary embedding and the
    /// KV-cache append in the epilogue (as `gemm_wgmma_short_int4_qkv_rope`).
    pub const GEMV_ROWS16_INT4_QKV_ROPE: &str = "gemv_rows16_int4_qkv_rope";
    /// `gemv_rows.cu`: the same five with 512 threads (16 warps per tile), for projections of few tiles.
    pub const GEMV_ROWS16_WIDE_INT4_STORE16: &str = "gemv_rows16_wide_int4_store16";
    pub const GEMV_ROWS16_WIDE_INT4_RESIDUAL: &str = "gemv_rows16_wide_int4_residual";
    pub const GEMV_ROWS16_WIDE_INT4_STORE32: &str = "gemv_rows16_wide_int4_store32";
    pub const GEMV_ROWS16_WIDE_INT4_SWIGLU: &str = "gemv_rows16_wide_int4_swiglu";
    pub const GEMV_ROWS16_WIDE_INT4_QKV_ROPE: &str = "gemv_rows16_wide_int4_qkv_rope";
    /// `gemv_rows.cu`: the same five for chunks of at most 32 rows (2 row blocks of A), 256 threads.
    pub const GEMV_ROWS32_INT4_STORE16: &str = "gemv_rows32_int4_store16";
    pub const GEMV_ROWS32_INT4_RESIDUAL: &str = "gemv_rows32_int4_residual";
    pub const GEMV_ROWS32_INT4_STORE32: &str = "gemv_rows32_int4_store32";
    pub const GEMV_ROWS32_INT4_SWIGLU: &str = "gemv_rows32_int4_swiglu";
    pub const GEMV_ROWS32_INT4_QKV_ROPE: &str = "gemv_rows32_int4_qkv_rope";
    /// `gemv_rows.cu`: the same five for chunks of at most 48 rows (3 row blocks of A), 256 threads.
    pub const GEMV_ROWS48_INT4_STORE16: &str = "gemv_rows48_int4_store16";
    pub const GEMV_ROWS48_INT4_RESIDUAL: &str = "gemv_rows48_int4_residual";
    pub const GEMV_ROWS48_INT4_STORE32: &str = "gemv_rows48_int4_store32";
    pub const GEMV_ROWS48_INT4_SWIGLU: &str = "gemv_rows48_int4_swiglu";
    pub const GEMV_ROWS48_INT4_QKV_ROPE: &str = "gemv_rows48_int4_qkv_rope";
    /// `gemv_rows.cu`: the same five for chunks of at most 64 rows (4 row blocks of A), 256 threads.
    pub const GEMV_ROWS64_INT4_STORE16: &str = "gemv_rows64_int4_store16";
    pub const GEMV_ROWS64_INT4_RESIDUAL: &str = "gemv_rows64_int4_residual";
    pub const GEMV_ROWS64_INT4_STORE32: &str = "gemv_rows64_int4_store32";
    pub const GEMV_ROWS64_INT4_SWIGLU: &str = "gemv_rows64_int4_swiglu";
    pub const GEMV_ROWS64_INT4_QKV_ROPE: &str = "gemv_rows64_int4_qkv_rope";
    /// `gemv_rows.cu`: `permute_frag16(PermuteKParams)`: at most 16 rows of A in order into the fragment order,
    /// k_pad wide, zero past k. 128 threads, grid (rows, slices).
    pub const PERMUTE_FRAG16: &str = "permute_frag16";
    /// `gemm_small.cu`: `gemm_small_int4_store16(GemmParams)`: chunks of at most 16 rows, f16 output. 256 threads,
    /// grid (ceil(tiles / tiles_per_block), k_splits) with tiles = n_pad / 16 (the kernel takes tiles_per_block =
    /// ceil(tiles / grid.x)), dynamic shared memory 16 · (per_split · 128 + 64) bytes, per_split = ceil(k_pad / 64 /
    /// k_splits) rounded up to even; split-K uses `part` and grid.x `counters`.
    pub const GEMM_SMALL_INT4_STORE16: &str = "gemm_small_int4_store16";
    /// `gemm_small.cu`: `gemm_small_int4_residual(GemmParams)`: the same, adding into an f32 output.
    pub const GEMM_SMALL_INT4_RESIDUAL: &str = "gemm_small_int4_residual";
    /// The same GEMVs over 8-bit GPTQ tiles (`gemv.cu` instantiates each kernel for both widths; same
    /// launch contracts).
    pub const GEMV_INT8_QKV: &str = "gemv_int8_qkv";
    pub const GEMV_INT8_GATE_UP: &str = "gemv_int8_gate_up";
    pub const GEMV_INT8_GATE_UP_SPLIT: &str = "gemv_int8_gate_up_split";
    pub const GEMV_INT8_QKV_SORTED: &str = "gemv_int8_qkv_sorted";
    pub const GEMV_INT8_RESIDUAL_SORTED: &str = "gemv_int8_residual_sorted";
    pub const GEMV_INT8_RESIDUAL_WIDE_SORTED: &str = "gemv_int8_residual_wide_sorted";
    pub const GEMV_INT8_RESIDUAL: &str = "gemv_int8_residual";
    pub const GEMV_INT8_RESIDUAL_WIDE: &str = "gemv_int8_residual_wide";
    pub const GEMV_INT8_STORE: &str = "gemv_int8_store";
    pub const GEMV_INT8_NORM_STORE: &str = "gemv_int8_norm_store";
    /// The 64-row and small-chunk GEMMs over 8-bit tiles (`gemm_int8_*`: 64512 bytes of dynamic shared memory;
    /// `gemm_small_int8_*`: as the int4 ones). There is no 128-row int8 tile: two blocks would not fit an SM.
    pub const GEMM_INT8_STORE16: &str = "gemm_int8_store16";
    pub const GEMM_INT8_RESIDUAL: &str = "gemm_int8_residual";
    pub const GEMM_INT8_STORE32: &str = "gemm_int8_store32";
    pub const GEMM_SMALL_INT8_STORE16: &str = "gemm_small_int8_store16";
    pub const GEMM_SMALL_INT8_RESIDUAL: &str = "gemm_small_int8_residual";
    /// The same GEMVs and GEMMs over fp16 tiles (unquantized checkpoints: the tile layout with a half per weight,
    /// `gemm_f16_*` with 80896 bytes of dynamic shared memory).
    pub const GEMV_F16_QKV: &str = "gemv_f16_qkv";
    pub const GEMV_F16_GATE_UP: &str = "gemv_f16_gate_up";
    pub const GEMV_F16_GATE_UP_SPLIT: &str = "gemv_f16_gate_up_split";
    pub const GEMV_F16_QKV_SORTED: &str = "gemv_f16_qkv_sorted";
    pub const GEMV_F16_RESIDUAL_SORTED: &str = "gemv_f16_residual_sorted";
    pub const GEMV_F16_RESIDUAL_WIDE_SORTED: &str = "gemv_f16_residual_wide_sorted";
    pub const GEMV_F16_RESIDUAL: &str = "gemv_f16_residual";
    pub const GEMV_F16_RESIDUAL_WIDE: &str = "gemv_f16_residual_wide";
    pub const GEMV_F16_STORE: &str = "gemv_f16_store";
    pub const GEMV_F16_NORM_STORE: &str = "gemv_f16_norm_store";
    pub const GEMM_F16_STORE16: &str = "gemm_f16_store16";
    pub const GEMM_F16_RESIDUAL: &str = "gemm_f16_residual";
    pub const GEMM_F16_STORE32: &str = "gemm_f16_store32";
    pub const GEMM_SMALL_F16_STORE16: &str = "gemm_small_f16_store16";
    pub const GEMM_SMALL_F16_RESIDUAL: &str = "gemm_small_f16_residual";
    /// `attention.cu`: `attn_decode(AttnParams)`: grid (heads, splits), 128 threads.
    pub const ATTN_DECODE: &str = "attn_decode";
    /// `attention.cu`: `attn_decode_cluster(AttnParams)`: grid (heads, splits) in clusters of (1, splits), splits at
    /// most 16, 128 threads; sm_90 only (it traps in the compute_80 module).
    pub const ATTN_DECODE_CLUSTER: &str = "attn_decode_cluster";
    /// `attention.cu`: `attn_prefill(AttnParams)`: grid (heads, rows), 128 threads.
    pub const ATTN_PREFILL: &str = "attn_prefill";
    /// `attention_prefill.cu`: `attn_prefill_tc64(AttnParams)`: tensor-core prefill attention for head_dim 64
    /// (`p.rows` = the chunk's rows): 128 threads, 36864 bytes of dynamic shared memory, grid (heads, ceil(rows / 64)).
    pub const ATTN_PREFILL_TC64: &str = "attn_prefill_tc64";
    /// `attention_prefill.cu`: `attn_prefill_tc128(AttnParams)`: the same for head_dim 128, 69632 bytes of dynamic
    /// shared memory.
    pub const ATTN_PREFILL_TC128: &str = "attn_prefill_tc128";
    /// `lm_head.cu`: `lm_head_f16(LmHeadParams)`: 256 threads, dynamic shared memory `k * 4`, grid
    /// ceil(vocab / rows_per_block).
    pub const LM_HEAD_F16: &str = "lm_head_f16";
    /// `lm_head.cu`: `lm_head_screen_pack(HeadScreenPackParams)`: the head's int8 copy for the greedy screen, once at
    /// load; 256 threads (a warp per row and 128-column group), grid ceil(vocab · groups / 8).
    pub const LM_HEAD_SCREEN_PACK: &str = "lm_head_screen_pack";
    /// `lm_head.cu`: `lm_head_screen(LmHeadParams)`: every row's bounds from the int8 copy (a greedy step); 256
    /// threads, dynamic shared memory `k * 4 + k / 16 * 4`, grid ceil(vocab / rows_per_block).
    pub const LM_HEAD_SCREEN: &str = "lm_head_screen";
    /// `lm_head.cu`: `lm_head_exact(LmHeadParams)`: the rows the screen left, from the fp16 head, and the argmax; 256
    /// threads, dynamic shared memory `k * 4`, grid ceil(vocab / 256).
    pub const LM_HEAD_EXACT: &str = "lm_head_exact";
    /// `decode.cu`: `decode_advance(DecodeAdvanceParams)`: one thread.
    pub const DECODE_ADVANCE: &str = "decode_advance";
    /// `sample.cu`: `sample_token(SampleParams)`: the next token from one row of logits under the sampler settings
    /// (`SamplerConfig`) and the penalty set; one block of 1024 threads, static shared memory only.
    pub const SAMPLE_TOKEN: &str = "sample_token";
    /// `score.cu`: `score_tile(ScoreParams)`: the logits of a window's normalized rows, 64 × 64 per block on the
    /// tensor cores, reduced to per-tile (max, sum of exp) partials and the targets' logits. Grid (ceil(vocab / 64),
    /// ceil(m / 64)), 128 threads, 56320 bytes of dynamic shared memory.
    pub const SCORE_TILE: &str = "score_tile";
    /// `score.cu`: `score_reduce(ScoreParams)`: each row's negative log-likelihood from its partials. One block of
    /// 256 threads per row.
    pub const SCORE_REDUCE: &str = "score_reduce";

    /// The same GEMVs on the weight ring (`gemv.cu`, `run_ring`; sm_90a only, they trap in the compute_80 module):
    /// one more warp per block, which copies the weights into shared-memory stages by bulk copies. 32 threads
    /// more per block, dynamic shared memory 16 bytes more plus the ring (41024 / 55344 / 65568 bytes for int4 /
    /// int8 / fp16) in front.
    pub const GEMV_RING_INT4_QKV: &str = "gemv_ring_int4_qkv";
    pub const GEMV_RING_INT4_GATE_UP: &str = "gemv_ring_int4_gate_up";
    pub const GEMV_RING_INT4_GATE_UP_SPLIT: &str = "gemv_ring_int4_gate_up_split";
    pub const GEMV_RING_INT4_QKV_SORTED: &str = "gemv_ring_int4_qkv_sorted";
    pub const GEMV_RING_INT4_RESIDUAL_SORTED: &str = "gemv_ring_int4_residual_sorted";
    pub const GEMV_RING_INT4_RESIDUAL_WIDE_SORTED: &str = "gemv_ring_int4_residual_wide_sorted";
    pub const GEMV_RING_INT4_RESIDUAL: &str = "gemv_ring_int4_residual";
    pub const GEMV_RING_INT4_RESIDUAL_WIDE: &str = "gemv_ring_int4_residual_wide";
    pub const GEMV_RING_INT4_STORE: &str = "gemv_ring_int4_store";
    pub const GEMV_RING_INT4_NORM_STORE: &str = "gemv_ring_int4_norm_store";
    pub const GEMV_RING_INT8_QKV: &str = "gemv_ring_int8_qkv";
    pub const GEMV_RING_INT8_GATE_UP: &str = "gemv_ring_int8_gate_up";
    pub const GEMV_RING_INT8_GATE_UP_SPLIT: &str = "gemv_ring_int8_gate_up_split";
    pub const GEMV_RING_INT8_QKV_SORTED: &str = "gemv_ring_int8_qkv_sorted";
    pub const GEMV_RING_INT8_RESIDUAL_SORTED: &str = "gemv_ring_int8_residual_sorted";
    pub const GEMV_RING_INT8_RESIDUAL_WIDE_SORTED: &str = "gemv_ring_int8_residual_wide_sorted";
    pub const GEMV_RING_INT8_RESIDUAL: &str = "gemv_ring_int8_residual";
    pub const GEMV_RING_INT8_RESIDUAL_WIDE: &str = "gemv_ring_int8_residual_wide";
    pub const GEMV_RING_INT8_STORE: &str = "gemv_ring_int8_store";
    pub const GEMV_RING_INT8_NORM_STORE: &str = "gemv_ring_int8_norm_store";
    pub const GEMV_RING_F16_QKV: &str = "gemv_ring_f16_qkv";
    pub const GEMV_RING_F16_GATE_UP: &str = "gemv_ring_f16_gate_up";
    pub const GEMV_RING_F16_GATE_UP_SPLIT: &str = "gemv_ring_f16_gate_up_split";
    pub const GEMV_RING_F16_QKV_SORTED: &str = "gemv_ring_f16_qkv_sorted";
    pub const GEMV_RING_F16_RESIDUAL_SORTED: &str = "gemv_ring_f16_residual_sorted";
    pub const GEMV_RING_F16_RESIDUAL_WIDE_SORTED: &str = "gemv_ring_f16_residual_wide_sorted";
    pub const GEMV_RING_F16_RESIDUAL: &str = "gemv_ring_f16_residual";
    pub const GEMV_RING_F16_RESIDUAL_WIDE: &str = "gemv_ring_f16_residual_wide";
    pub const GEMV_RING_F16_STORE: &str = "gemv_ring_f16_store";
    pub const GEMV_RING_F16_NORM_STORE: &str = "gemv_ring_f16_norm_store";
    /// The same GEMVs with the lean K loop (`gemv.cu`, `run<..., LEAN>`: the addressing strength-reduced, the same
    /// bits): launched as the register-pipelined ones.
    pub const GEMV_LEAN_INT4_QKV: &str = "gemv_lean_int4_qkv";
    pub const GEMV_LEAN_INT4_GATE_UP: &str = "gemv_lean_int4_gate_up";
    pub const GEMV_LEAN_INT4_GATE_UP_SPLIT: &str = "gemv_lean_int4_gate_up_split";
    pub const GEMV_LEAN_INT4_QKV_SORTED: &str = "gemv_lean_int4_qkv_sorted";
    pub const GEMV_LEAN_INT4_RESIDUAL_SORTED: &str = "gemv_lean_int4_residual_sorted";
    pub const GEMV_LEAN_INT4_RESIDUAL_WIDE_SORTED: &str = "gemv_lean_int4_residual_wide_sorted";
    pub const GEMV_LEAN_INT4_RESIDUAL: &str = "gemv_lean_int4_residual";
    pub const GEMV_LEAN_INT4_RESIDUAL_WIDE: &str = "gemv_lean_int4_residual_wide";
    pub const GEMV_LEAN_INT4_STORE: &str = "gemv_lean_int4_store";
    pub const GEMV_LEAN_INT4_NORM_STORE: &str = "gemv_lean_int4_norm_store";
    pub const GEMV_LEAN_INT8_QKV: &str = "gemv_lean_int8_qkv";
    pub const GEMV_LEAN_INT8_GATE_UP: &str = "gemv_lean_int8_gate_up";
    pub const GEMV_LEAN_INT8_GATE_UP_SPLIT: &str = "gemv_lean_int8_gate_up_split";
    pub const GEMV_LEAN_INT8_QKV_SORTED: &str = "gemv_lean_int8_qkv_sorted";
    pub const GEMV_LEAN_INT8_RESIDUAL_SORTED: &str = "gemv_lean_int8_residual_sorted";
    pub const GEMV_LEAN_INT8_RESIDUAL_WIDE_SORTED: &str = "gemv_lean_int8_residual_wide_sorted";
    pub const GEMV_LEAN_INT8_RESIDUAL: &str = "gemv_lean_int8_residual";
    pub const GEMV_LEAN_INT8_RESIDUAL_WIDE: &str = "gemv_lean_int8_residual_wide";
    pub const GEMV_LEAN_INT8_STORE: &str = "gemv_lean_int8_store";
    pub const GEMV_LEAN_INT8_NORM_STORE: &str = "gemv_lean_int8_norm_store";
    pub const GEMV_LEAN_F16_QKV: &str = "gemv_lean_f16_qkv";
    pub const GEMV_LEAN_F16_GATE_UP: &str = "gemv_lean_f16_gate_up";
    pub const GEMV_LEAN_F16_GATE_UP_SPLIT: &str = "gemv_lean_f16_gate_up_split";
    pub const GEMV_LEAN_F16_QKV_SORTED: &str = "gemv_lean_f16_qkv_sorted";
    pub const GEMV_LEAN_F16_RESIDUAL_SORTED: &str = "gemv_lean_f16_residual_sorted";
    pub const GEMV_LEAN_F16_RESIDUAL_WIDE_SORTED: &str = "gemv_lean_f16_residual_wide_sorted";
    pub const GEMV_LEAN_F16_RESIDUAL: &str = "gemv_lean_f16_residual";
    pub const GEMV_LEAN_F16_RESIDUAL_WIDE: &str = "gemv_lean_f16_residual_wide";
    pub const GEMV_LEAN_F16_STORE: &str = "gemv_lean_f16_store";
    pub const GEMV_LEAN_F16_NORM_STORE: &str = "gemv_lean_f16_norm_store";
    /// The int4 GEMVs over a symmetric linear (every zero point 8), register-pipelined and with the lean K loop
    /// (`gemv.cu`, `run<..., SYM>`): the scales from `GemvParams::scales` (2 bytes per group and slot) instead of the
    /// (scale, zero) words of `sz` (4), the zero a constant; the same bits. Launched as the others.
    pub const GEMV_SYM_INT4_QKV: &str = "gemv_sym_int4_qkv";
    pub const GEMV_SYM_INT4_GATE_UP: &str = "gemv_sym_int4_gate_up";
    pub const GEMV_SYM_INT4_GATE_UP_SPLIT: &str = "gemv_sym_int4_gate_up_split";
    pub const GEMV_SYM_INT4_QKV_SORTED: &str = "gemv_sym_int4_qkv_sorted";
    pub const GEMV_SYM_INT4_RESIDUAL_SORTED: &str = "gemv_sym_int4_residual_sorted";
    pub const GEMV_SYM_INT4_RESIDUAL_WIDE_SORTED: &str = "gemv_sym_int4_residual_wide_sorted";
    pub const GEMV_SYM_INT4_RESIDUAL: &str = "gemv_sym_int4_residual";
    pub const GEMV_SYM_INT4_RESIDUAL_WIDE: &str = "gemv_sym_int4_residual_wide";
    pub const GEMV_SYM_INT4_STORE: &str = "gemv_sym_int4_store";
    pub const GEMV_SYM_INT4_NORM_STORE: &str = "gemv_sym_int4_norm_store";
    pub const GEMV_LEAN_SYM_INT4_QKV: &str = "gemv_lean_sym_int4_qkv";
    pub const GEMV_LEAN_SYM_INT4_GATE_UP: &str = "gemv_lean_sym_int4_gate_up";
    pub const GEMV_LEAN_SYM_INT4_GATE_UP_SPLIT: &str = "gemv_lean_sym_int4_gate_up_split";
    pub const GEMV_LEAN_SYM_INT4_QKV_SORTED: &str = "gemv_lean_sym_int4_qkv_sorted";
    pub const GEMV_LEAN_SYM_INT4_RESIDUAL_SORTED: &str = "gemv_lean_sym_int4_residual_sorted";
    pub const GEMV_LEAN_SYM_INT4_RESIDUAL_WIDE_SORTED: &str = "gemv_lean_sym_int4_residual_wide_sorted";
    pub const GEMV_LEAN_SYM_INT4_RESIDUAL: &str = "gemv_lean_sym_int4_residual";
    pub const GEMV_LEAN_SYM_INT4_RESIDUAL_WIDE: &str = "gemv_lean_sym_int4_residual_wide";
    pub const GEMV_LEAN_SYM_INT4_STORE: &str = "gemv_lean_sym_int4_store";
    pub const GEMV_LEAN_SYM_INT4_NORM_STORE: &str = "gemv_lean_sym_int4_norm_store";
    /// Every kernel above.
    pub const ALL: &[&str] = &[
        GEMV_SYM_INT4_QKV,
        GEMV_SYM_INT4_GATE_UP,
        GEMV_SYM_INT4_GATE_UP_SPLIT,
        GEMV_SYM_INT4_QKV_SORTED,
        GEMV_SYM_INT4_RESIDUAL_SORTED,
        GEMV_SYM_INT4_RESIDUAL_WIDE_SORTED,
        GEMV_SYM_INT4_RESIDUAL,
        GEMV_SYM_INT4_RESIDUAL_WIDE,
        GEMV_SYM_INT4_STORE,
        GEMV_SYM_INT4_NORM_STORE,
        GEMV_LEAN_SYM_INT4_QKV,
        GEMV_LEAN_SYM_INT4_GATE_UP,
        GEMV_LEAN_SYM_INT4_GATE_UP_SPLIT,
        GEMV_LEAN_SYM_INT4_QKV_SORTED,
        GEMV_LEAN_SYM_INT4_RESIDUAL_SORTED,
        GEMV_LEAN_SYM_INT4_RESIDUAL_WIDE_SORTED,
        GEMV_LEAN_SYM_INT4_RESIDUAL,
        GEMV_LEAN_SYM_INT4_RESIDUAL_WIDE,
        GEMV_LEAN_SYM_INT4_STORE,
        GEMV_LEAN_SYM_INT4_NORM_STORE,
        GEMV_LEAN_INT4_QKV,
        GEMV_LEAN_INT4_GATE_UP,
        GEMV_LEAN_INT4_GATE_UP_SPLIT,
        GEMV_LEAN_INT4_QKV_SORTED,
        GEMV_LEAN_INT4_RESIDUAL_SORTED,
        GEMV_LEAN_INT4_RESIDUAL_WIDE_SORTED,
        GEMV_LEAN_INT4_RESIDUAL,
        GEMV_LEAN_INT4_RESIDUAL_WIDE,
        GEMV_LEAN_INT4_STORE,
        GEMV_LEAN_INT4_NORM_STORE,
        GEMV_LEAN_INT8_QKV,
        GEMV_LEAN_INT8_GATE_UP,
        GEMV_LEAN_INT8_GATE_UP_SPLIT,
        GEMV_LEAN_INT8_QKV_SORTED,
        GEMV_LEAN_INT8_RESIDUAL_SORTED,
        GEMV_LEAN_INT8_RESIDUAL_WIDE_SORTED,
        GEMV_LEAN_INT8_RESIDUAL,
        GEMV_LEAN_INT8_RESIDUAL_WIDE,
        GEMV_LEAN_INT8_STORE,
        GEMV_LEAN_INT8_NORM_STORE,
        GEMV_LEAN_F16_QKV,
        GEMV_LEAN_F16_GATE_UP,
        GEMV_LEAN_F16_GATE_UP_SPLIT,
        GEMV_LEAN_F16_QKV_SORTED,
        GEMV_LEAN_F16_RESIDUAL_SORTED,
        GEMV_LEAN_F16_RESIDUAL_WIDE_SORTED,
        GEMV_LEAN_F16_RESIDUAL,
        GEMV_LEAN_F16_RESIDUAL_WIDE,
        GEMV_LEAN_F16_STORE,
        GEMV_LEAN_F16_NORM_STORE,
        GEMV_RING_INT4_QKV,
        GEMV_RING_INT4_GATE_UP,
        GEMV_RING_INT4_GATE_UP_SPLIT,
        GEMV_RING_INT4_QKV_SORTED,
        GEMV_RING_INT4_RESIDUAL_SORTED,
        GEMV_RING_INT4_RESIDUAL_WIDE_SORTED,
        GEMV_RING_INT4_RESIDUAL,
        GEMV_RING_INT4_RESIDUAL_WIDE,
        GEMV_RING_INT4_STORE,
        GEMV_RING_INT4_NORM_STORE,
        GEMV_RING_INT8_QKV,
        GEMV_RING_INT8_GATE_UP,
        GEMV_RING_INT8_GATE_UP_SPLIT,
        GEMV_RING_INT8_QKV_SORTED,
        GEMV_RING_INT8_RESIDUAL_SORTED,
        GEMV_RING_INT8_RESIDUAL_WIDE_SORTED,
        GEMV_RING_INT8_RESIDUAL,
        GEMV_RING_INT8_RESIDUAL_WIDE,
        GEMV_RING_INT8_STORE,
        GEMV_RING_INT8_NORM_STORE,
        GEMV_RING_F16_QKV,
        GEMV_RING_F16_GATE_UP,
        GEMV_RING_F16_GATE_UP_SPLIT,
        GEMV_RING_F16_QKV_SORTED,
        GEMV_RING_F16_RESIDUAL_SORTED,
        GEMV_RING_F16_RESIDUAL_WIDE_SORTED,
        GEMV_RING_F16_RESIDUAL,
        GEMV_RING_F16_RESIDUAL_WIDE,
        GEMV_RING_F16_STORE,
        GEMV_RING_F16_NORM_STORE,
        FILL_U32,
        COPY_BYTES_READ_BW,
        READ_BYTES_BW,
        REPACK_INT4_WORDS,
        REPACK_INT4_SCALES,
        EMBED_TOKENS,
        RMSNORM_ROWS,
        PERMUTE_COLS,
        ROPE_KV_ROWS,
        SWIGLU_ROWS,
        GEMV_INT4_QKV,
        GEMV_INT4_GATE_UP,
        GEMV_INT4_GATE_UP_SPLIT,
        GEMV_INT4_QKV_SORTED,
        GEMV_INT4_RESIDUAL_SORTED,
        GEMV_INT4_RESIDUAL_WIDE_SORTED,
        GEMV_INT4_RESIDUAL,
        GEMV_INT4_RESIDUAL_WIDE,
        GEMV_INT4_STORE,
        GEMV_INT4_NORM_STORE,
        GEMM_INT4_STORE16,
        GEMM_INT4_RESIDUAL,
        GEMM_INT4_STORE32,
        GEMM128_INT4_STORE16,
        GEMM128_INT4_RESIDUAL,
        GEMM128_INT4_STORE32,
        GEMM_WGMMA_INT4_STORE16,
        GEMM_WGMMA_INT4_RESIDUAL,
        GEMM_WGMMA_INT4_STORE32,
        GEMM_WGMMA256_INT4_STORE16,
        GEMM_WGMMA256_INT4_RESIDUAL,
        GEMM_WGMMA256_INT4_STORE32,
        GEMM_WGMMA_WS_INT4_STORE16,
        GEMM_WGMMA_WS_INT4_RESIDUAL,
        GEMM_WGMMA_WS_INT4_STORE32,
        GEMM_WGMMA_SHORT_INT4_STORE16,
        GEMM_WGMMA_SHORT_INT4_RESIDUAL,
        GEMM_WGMMA_SHORT_INT4_STORE32,
        GEMM_WGMMA_SHORT_INT4_SWIGLU,
        GEMM_WGMMA_SHORT_INT4_QKV_ROPE,
        GEMM_WGMMA_WREG_INT4_STORE16,
        GEMM_WGMMA_WREG_INT4_RESIDUAL,
        GEMM_WGMMA_WREG_INT4_STORE32,
        PERMUTE_K_STEPS,
        GEMV_ROWS16_INT4_STORE16,
        GEMV_ROWS16_INT4_RESIDUAL,
        GEMV_ROWS16_INT4_STORE32,
        GEMV_ROWS16_INT4_SWIGLU,
        GEMV_ROWS16_INT4_QKV_ROPE,
        GEMV_ROWS16_WIDE_INT4_STORE16,
        GEMV_ROWS16_WIDE_INT4_RESIDUAL,
        GEMV_ROWS16_WIDE_INT4_STORE32,
        GEMV_ROWS16_WIDE_INT4_SWIGLU,
        GEMV_ROWS16_WIDE_INT4_QKV_ROPE,
        GEMV_ROWS32_INT4_STORE16,
        GEMV_ROWS32_INT4_RESIDUAL,
        GEMV_ROWS32_INT4_STORE32,
        GEMV_ROWS32_INT4_SWIGLU,
        GEMV_ROWS32_INT4_QKV_ROPE,
        GEMV_ROWS48_INT4_STORE16,
        GEMV_ROWS48_INT4_RESIDUAL,
        GEMV_ROWS48_INT4_STORE32,
        GEMV_ROWS48_INT4_SWIGLU,
        GEMV_ROWS48_INT4_QKV_ROPE,
        GEMV_ROWS64_INT4_STORE16,
        GEMV_ROWS64_INT4_RESIDUAL,
        GEMV_ROWS64_INT4_STORE32,
        GEMV_ROWS64_INT4_SWIGLU,
        GEMV_ROWS64_INT4_QKV_ROPE,
        PERMUTE_FRAG16,
        GEMM_SMALL_INT4_STORE16,
        GEMM_SMALL_INT4_RESIDUAL,
        GEMV_INT8_QKV,
        GEMV_INT8_GATE_UP,
        GEMV_INT8_GATE_UP_SPLIT,
        GEMV_INT8_QKV_SORTED,
        GEMV_INT8_RESIDUAL_SORTED,
        GEMV_INT8_RESIDUAL_WIDE_SORTED,
        GEMV_INT8_RESIDUAL,
        GEMV_INT8_RESIDUAL_WIDE,
        GEMV_INT8_STORE,
        GEMV_INT8_NORM_STORE,
        GEMM_INT8_STORE16,
        GEMM_INT8_RESIDUAL,
        GEMM_INT8_STORE32,
        GEMM_SMALL_INT8_STORE16,
        GEMM_SMALL_INT8_RESIDUAL,
        GEMV_F16_QKV,
        GEMV_F16_GATE_UP,
        GEMV_F16_GATE_UP_SPLIT,
        GEMV_F16_QKV_SORTED,
        GEMV_F16_RESIDUAL_SORTED,
        GEMV_F16_RESIDUAL_WIDE_SORTED,
        GEMV_F16_RESIDUAL,
        GEMV_F16_RESIDUAL_WIDE,
        GEMV_F16_STORE,
        GEMV_F16_NORM_STORE,
        GEMM_F16_STORE16,
        GEMM_F16_RESIDUAL,
        GEMM_F16_STORE32,
        GEMM_SMALL_F16_STORE16,
        GEMM_SMALL_F16_RESIDUAL,
        ATTN_DECODE,
        ATTN_DECODE_CLUSTER,
        ATTN_PREFILL,
        ATTN_PREFILL_TC64,
        ATTN_PREFILL_TC128,
        LM_HEAD_F16,
        LM_HEAD_SCREEN_PACK,
        LM_HEAD_SCREEN,
        LM_HEAD_EXACT,
        DECODE_ADVANCE,
        SAMPLE_TOKEN,
        SCORE_TILE,
        SCORE_REDUCE,
    ];
}

#[cfg(test)]
mod tests {
    extern crate std; // the test harness has std; the crate itself stays no_std
    use super::*;
    use std::format;

    const MODULES: [(&str, &str, &str); 2] =
        [("engine_sm80", PTX_SM80, "sm_80"), ("engine_sm90a", PTX_SM90A, "sm_90a")];

    /// The names of the `.entry` directives of a PTX module.
    fn entries(ptx: &str) -> impl Iterator<Item = &str> {
        ptx.lines().filter_map(|line| {
            let rest = line.strip_prefix(".visible ").unwrap_or(line).strip_prefix(".entry ")?;
            Some(rest.split('(').next().unwrap_or("").trim())
        })
    }

    #[test]
    fn every_listed_kernel_is_an_entry_of_both_modules() {
        for (module, ptx, _) in MODULES {
            for name in kernels::ALL {
                let pattern = format!(".visible .entry {name}(");
                assert!(ptx.contains(&pattern), "{module}: no `{pattern}`: regenerate with ptx/build_ptx.py");
            }
        }
    }

    #[test]
    fn every_entry_of_both_modules_is_listed() {
        for (module, ptx, _) in MODULES {
            let mut count = 0;
            for name in entries(ptx) {
                assert!(kernels::ALL.contains(&name), "{module}: kernel `{name}` is not listed in ptx::kernels");
                count += 1;
            }
            assert_eq!(count, kernels::ALL.len(), "{module}: entry count");
        }
    }

    #[test]
    fn modules_are_ptx_isa_8_4_for_their_target() {
        for (module, ptx, target) in MODULES {
            let version = ptx.lines().find_map(|l| l.strip_prefix(".version ")).map(str::trim);
            assert_eq!(version, Some(PTX_ISA_VERSION), "{module}: a newer ISA would raise the minimum driver");
            let t = ptx.lines().find_map(|l| l.strip_prefix(".target ")).map(str::trim);
            assert_eq!(t, Some(target), "{module}");
            assert!(!ptx.contains('\0'), "{module}: NUL byte (the driver takes a C string)");
        }
    }

    #[test]
    fn cubins_are_elf_images_for_the_cards_they_claim() {
        for (major, minor) in [(8, 0), (8, 6), (8, 7), (8, 9), (9, 0)] {
            let c = cubin_for(major, minor).unwrap();
            assert_eq!(&c[..4], b"\x7fELF", "cubin for {major}.{minor} is not an ELF image");
        }
        assert!(cubin_for(7, 5).is_none() && cubin_for(10, 0).is_none() && cubin_for(12, 0).is_none());
    }

    #[test]
    fn ptx_for_picks_the_module_by_compute_capability() {
        assert_eq!(ptx_for(9, 0), Some(PTX_SM90A));
        for (major, minor) in [(8, 0), (8, 6), (8, 7), (8, 9), (9, 1), (10, 0), (12, 0)] {
            assert_eq!(ptx_for(major, minor), Some(PTX_SM80), "{major}.{minor}");
        }
        for (major, minor) in [(7, 5), (7, 0), (6, 1), (0, 0)] {
            assert_eq!(ptx_for(major, minor), None, "{major}.{minor}");
        }
    }
}

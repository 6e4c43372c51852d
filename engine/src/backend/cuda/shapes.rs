//! Launch shapes: how many blocks of how many threads with how much shared memory each kernel runs with, and the
//! choices behind them (tile sizes, split-K counts). Pure arithmetic on the problem's sizes and the card's limits,
//! so every choice is unit-tested here and `step.rs` only says what runs.

use engine_format::plan::{self, GEMM_SPLIT_ROWS, STEP_K, TILE_N};

use super::driver::{DeviceLimits, Launch};
use super::layout::TileFormat;
use super::tuning::{Tuning, WgmmaTile};

// ---------------------------------------------------------------------------------------------------------------
// Decode GEMV and lm_head

/// Threads of the GEMV (8 warps) and lm_head kernels (`WARPS` in gemv.cu and lm_head.cu).
pub const GEMV_THREADS: u32 = 256;
/// Warps of the wide residual GEMV (`WIDE_WARPS` in gemv.cu).
pub const GEMV_WIDE_WARPS: u32 = 16;
/// The most dynamic shared memory a GEMV may stage its input in (K × 2 bytes plus the per-warp sums).
pub const GEMV_MAX_SMEM_BYTES: u32 = 160 * 1024;
/// Vocabulary rows per lm_head block (8 warps × 4 rows).
pub const LM_HEAD_ROWS: u32 = 32;
/// The scale of the fused norms' half input (`HALF_INPUT_SCALE` in ptx/kernels/tiles.cuh): the kernel tests write
/// that input as the kernels do.
#[cfg(test)]
pub const HALF_INPUT_SCALE: f32 = 0.0625;

/// Grid and tiles per block of a GEMV over `tiles` slot tiles: as few tiles per block as give the card
/// `blocks_per_sm` blocks per SM. More blocks than fit at once is deliberate: a block that finishes frees its slot
/// for one that starts streaming at once, and the kernel is bound by memory latency, so more independent blocks
/// keep more loads in flight.
pub fn gemv_grid(tiles: u32, sm_count: u32, blocks_per_sm: u32) -> (u32, u32) {
    let blocks = (sm_count * blocks_per_sm).max(1);
    let tpb = tiles.div_ceil(blocks).max(1);
    (tiles.div_ceil(tpb), tpb)
}

/// How the loaded module's GEMV kernels stream their weights (gemv.cu): each lane's next batch in registers (the
/// compute_80 module), or a ring of shared-memory stages that one more warp per block fills with bulk copies
/// (`run_ring`, the sm_90a module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemvStream {
    Registers,
    /// The same as `Registers` with the K loop's addressing strength-reduced (`gemv_lean_*`; `Tuning::gemv_lean`).
    Lean,
    Ring,
}

/// 16-byte words a lane reads per K step of a tile of `format` (`lane_words` in tiles.cuh).
fn lane_words(format: TileFormat) -> u32 {
    match format {
        TileFormat::Int4 => 1,
        TileFormat::Int8 => 2,
        TileFormat::F16 => 4,
    }
}

/// Bytes of one 16-slot weight tile over K padded to `k_pad`: its K steps of 32 lanes' words.
pub fn gemv_tile_bytes(k_pad: u32, format: TileFormat) -> u32 {
    k_pad / STEP_K as u32 * 32 * 16 * lane_words(format)
}

/// K steps per stage of a ring GEMV's ring (`gemv::ring::STAGE_STEPS`).
const GEMV_RING_STAGE_STEPS: u32 = 16;

/// Stages of a ring GEMV's ring, by weight format (`gemv::ring::stages`).
fn gemv_ring_stages(format: TileFormat) -> u32 {
    match format {
        TileFormat::Int4 => 4,
        TileFormat::Int8 => 3,
        TileFormat::F16 => 2,
    }
}

/// Weight bytes a ring GEMV block copies before it waits for the previous kernel: its ring's stages, fewer where
/// its tiles have fewer.
pub fn gemv_ring_first_fill(format: TileFormat) -> u32 {
    gemv_ring_stages(format) * gemv_tile_bytes(GEMV_RING_STAGE_STEPS * STEP_K as u32, format)
}

/// The ring and its mbarriers in front of a ring GEMV's shared memory, by weight format (`gemv::ring::bytes`): per
/// stage its weights, the (scale, zero) rows they may use (groups of 32 rows, 16 slots of 4 bytes; none for fp16)
/// and two 8-byte mbarriers.
pub fn gemv_ring_bytes(format: TileFormat) -> u32 {
    let scales = if format == TileFormat::F16 { 0 } else { 2 * GEMV_RING_STAGE_STEPS * 16 * 4 };
    gemv_ring_first_fill(format) + gemv_ring_stages(format) * (scales + 16)
}

/// Dynamic shared memory of a GEMV with `warps` warps over K padded to `k_pad` staging `inputs` copies of its
/// input (act-order: one per fused part): the per-warp sums, the split gate/up's 16 gate values and columns, and
/// the staged inputs; the ring kernels' ring in front and the copying warp's scratch (16 bytes).
pub fn gemv_smem(k_pad: u32, warps: u32, inputs: u32, format: TileFormat, stream: GemvStream) -> u32 {
    let staged = (warps * 16 + warps + 32) * 4 + inputs * k_pad * 2;
    match stream {
        GemvStream::Registers | GemvStream::Lean => staged,
        GemvStream::Ring => gemv_ring_bytes(format) + 16 + staged,
    }
}

/// Threads of a GEMV block with `warps` multiplying warps: the ring kernels have one more, which copies.
pub fn gemv_threads(warps: u32, stream: GemvStream) -> u32 {
    32 * (warps + u32::from(stream == GemvStream::Ring))
}

/// The launch of a GEMV over `units` units of work (tiles; pairs of tiles for the split gate/up) of K `k_pad` with
/// `warps` multiplying warps per block staging `inputs` inputs, and its units per block.
pub fn gemv(
    units: u32,
    k_pad: u32,
    warps: u32,
    inputs: u32,
    (format, stream): (TileFormat, GemvStream),
    limits: &DeviceLimits,
    tuning: &Tuning,
) -> (Launch, u32) {
    let (grid, per_block) = gemv_grid(units, limits.sm_count, tuning.gemv_blocks_per_sm);
    let smem = gemv_smem(k_pad, warps, inputs, format, stream);
    (Launch::new(grid, gemv_threads(warps, stream), smem), per_block)
}

/// Warps of the residual GEMV (o/down) over `tiles` tiles: 16 where the projection has fewer than 4 tiles per SM
/// (more load chains per SM for a latency-bound kernel; measured in BENCHMARKS.md), else 8.
pub fn residual_gemv_warps(tiles: u32, limits: &DeviceLimits, tuning: &Tuning) -> u32 {
    if tuning.gemv_wide && tiles < 4 * limits.sm_count {
        GEMV_WIDE_WARPS
    } else {
        GEMV_THREADS / 32
    }
}

/// lm_head over a vocabulary of `vocab` rows of `hidden`, blocks of `rows_per_block` (see [`lm_head_rows`]): the
/// f32 input row is staged in shared memory.
pub fn lm_head(vocab: u32, hidden: u32, rows_per_block: u32) -> Launch {
    Launch::new(vocab.div_ceil(rows_per_block), GEMV_THREADS, hidden * 4)
}

/// The head's int8 copy, made once at load: a warp per row and 128-column group, 8 warps per block.
pub fn lm_head_screen_pack(vocab: u32, hidden: u32) -> Launch {
    let groups = hidden.div_ceil(engine_format::plan::LM_HEAD_SCREEN_GROUP as u32);
    Launch::new((vocab * groups).div_ceil(8), 256, 0)
}

/// The greedy screen over the head's int8 copy: lm_head's grid, with a ‖x‖₁ per 16 columns beside the row.
pub fn lm_head_screen(vocab: u32, hidden: u32, rows_per_block: u32) -> Launch {
    Launch::new(vocab.div_ceil(rows_per_block), GEMV_THREADS, hidden * 4 + hidden / 16 * 4)
}

/// The rows the screen leaves: one 32-row batch per warp.
pub fn lm_head_exact(vocab: u32, hidden: u32) -> Launch {
    Launch::new(vocab.div_ceil(GEMV_THREADS), GEMV_THREADS, hidden * 4)
}

/// Vocabulary rows per lm_head block: `Tuning::lm_head_passes` passes of the block's warps, LM_HEAD_ROWS each.
pub fn lm_head_rows(tuning: &Tuning) -> u32 {
    LM_HEAD_ROWS * tuning.lm_head_passes.clamp(1, 16)
}

// ---------------------------------------------------------------------------------------------------------------
// Row kernels

/// One block of 256 threads per row (embedding, RMSNorm, column permutation).
pub fn per_row(rows: u32) -> Launch {
    Launch::new(rows, 256, 0)
}

/// Blocks the decode step's embedding of its one row is sliced over (at most one per hidden tile: each leaves a
/// partial sum of squares in `ws.ssq`, which has one per tile).
pub const EMBED_SLICES: u32 = 16;

/// `embed_tokens` of one row over `slices` blocks.
pub fn embed_decode(slices: u32) -> Launch {
    Launch::new((1, slices), 256, 0)
}

/// `rmsnorm_rows` writing `copies` copies of each row (act-order: one per fused part), each row's outputs sliced
/// over enough blocks to give a short prompt [`ROW_BLOCKS`] blocks.
pub fn per_row_parts(rows: u32, copies: u32) -> Launch {
    Launch::new((rows, copies, row_slices(rows * copies)), 256, 0)
}

/// The launch of a row kernel over `rows` rows that `gathers` through an act-order permutation: started after the
/// kernel before it (a prefill GEMM) has finished once the chunk is longer than [`GATHER_OVERLAP_ROWS`]; a row
/// kernel that does not gather keeps the overlap. Why: overlapped, its blocks become resident beside the GEMM's last
/// blocks, on SMs whose unified L1 / shared memory is split for the GEMM's 105 KB tiles, and its gathers — which
/// live on L1 hits within a row — then run from L2: a 512-token act-order prompt took 33.3 ms with every launch
/// overlapped and 30.8 ms with none (H200), against 29.4 / 29.5 ms without act-order. Short chunks keep the overlap:
/// their GEMMs stream weights from the launch on.
pub fn gathering(launch: Launch, rows: u32, gathers: bool) -> Launch {
    if gathers && rows > GATHER_OVERLAP_ROWS {
        launch.after_previous()
    } else {
        launch
    }
}

/// The longest chunk whose gathering row kernels overlap the kernel before them (see [`gathering`]).
pub const GATHER_OVERLAP_ROWS: u32 = 16;

/// `permute_cols` over `rows` rows, sliced as [`per_row_parts`].
pub fn permute(rows: u32) -> Launch {
    Launch::new((rows, row_slices(rows)), 256, 0)
}

/// `permute_k_steps` over `rows` rows of A with `parts` copies (act-order's per-part row orders).
pub fn permute_k(rows: u32, parts: u32) -> Launch {
    Launch::new((rows, row_slices(rows), parts.max(1)), 128, 0)
}

/// Blocks a row kernel should have at least (a 16-row prompt's one block per row leaves the card idle and each
/// block's memory round trips in series: 5-7 µs per launch, measured on an H200).
pub const ROW_BLOCKS: u32 = 128;

/// Slices per row so that `blocks` row-blocks become at least [`ROW_BLOCKS`] (at most 8).
fn row_slices(blocks: u32) -> u32 {
    ROW_BLOCKS.div_ceil(blocks.max(1)).clamp(1, 8)
}

/// `rope_kv_rows`: blocks of 256 threads, grid (rows, enough blocks for a row's units of work; rope.cu).
pub fn rope(rows: u32, heads: usize, kv_heads: usize, head_dim: usize) -> Launch {
    // A thread per unit of 8 rotary pairs or 8 value elements (1 where half a head is not a multiple of 8).
    let per = if (head_dim / 2) % 8 == 0 { 8 } else { 1 };
    let units = (heads + kv_heads) * (head_dim / 2 / per) + kv_heads * (head_dim / per);
    Launch::new((rows, units.div_ceil(256) as u32), 256, 0)
}

/// `swiglu_rows`: one thread per 8 output columns, 256 threads per block. (With a permutation, one block per row
/// for long prompts — so that a row is pulled into one SM's L1 once, not once per block — measured slower on an
/// H200: 35.2 against 33.5 ms for a 512-token act-order prompt; the blocks of a row are kept.)
pub fn swiglu(rows: u32, inter: u32) -> Launch {
    Launch::new((rows, inter.div_ceil(2048)), 256, 0)
}

/// `sample_token`: one block of 1024 threads (its shared memory is static).
pub fn sample() -> Launch {
    Launch::new(1, 1024, 0)
}

/// Columns of the vocabulary per `score_tile` block (and rows of the window).
pub const SCORE_TILE: u32 = 64;
/// Shared memory of `score_tile`: `sizeof(score::Smem)` (the kernel source `static_assert`s it): A and W tiles of
/// 64 × 72 halves in 3 stages, and 2 × 2 × 64 floats for the partials.
pub const SCORE_SMEM_BYTES: u32 = 2 * 3 * 64 * 72 * 2 + 2 * 2 * 64 * 4;

/// `score_tile` over a vocabulary of `vocab` and `m` rows.
pub fn score_tile(vocab: u32, m: u32) -> Launch {
    Launch::new((vocab.div_ceil(SCORE_TILE), m.div_ceil(SCORE_TILE)), 128, SCORE_SMEM_BYTES)
}

/// `score_reduce`: one block of 256 threads per row.
pub fn score_reduce(m: u32) -> Launch {
    Launch::new(m, 256, 0)
}

/// `decode_advance`: one thread.
pub fn single_thread() -> Launch {
    Launch::new(1, 1, 0)
}

// ---------------------------------------------------------------------------------------------------------------
// Attention

/// Split-K decode attention: one block of 128 threads per (head, split).
pub fn attn_decode(heads: u32, splits: u32) -> Launch {
    Launch::new((heads, splits), 128, 0)
}

/// Fewest positions per decode attention split (`attn::MIN_PER_SPLIT`): a context of `len` positions keeps
/// `ceil(len / 32)` splits busy at most, whatever the split count.
pub const ATTN_MIN_PER_SPLIT: u32 = 32;

/// Most splits per head of `attn_decode_cluster` (`attn::MAX_CLUSTER`: the largest cluster sm_90 allows).
pub const ATTN_MAX_CLUSTER: u32 = 16;

/// Split-K decode attention with each head's splits in one thread block cluster (`attn_decode_cluster`, sm_90,
/// `splits` <= [`ATTN_MAX_CLUSTER`]).
pub fn attn_decode_cluster(heads: u32, splits: u32) -> Launch {
    attn_decode(heads, splits).in_clusters_y(splits)
}

/// Query rows per block of `attn_prefill_tc{64,128}`.
pub const ATTN_TC_ROWS: u32 = 64;

/// Shared memory of `attn_prefill_tc{64,128}`: `sizeof(attn_tc::Smem<D>)` = K and V tiles of 64 positions ×
/// (head_dim + 8) halves, double-buffered.
pub const fn attn_prefill_tc_smem_bytes(head_dim: u32) -> u32 {
    4 * 64 * (head_dim + 8) * 2
}

/// Which prefill attention kernel runs: the tensor-core one for head_dim 64 and 128 (every real model), the
/// per-row one for the other head sizes (the tiny test models' 8 and 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnPrefill {
    Tc64,
    Tc128,
    PerRow,
}

pub fn attn_prefill(head_dim: u32, heads: u32, rows: u32) -> (AttnPrefill, Launch) {
    match head_dim {
        64 | 128 => {
            let which = if head_dim == 64 { AttnPrefill::Tc64 } else { AttnPrefill::Tc128 };
            (which, Launch::new((heads, rows.div_ceil(ATTN_TC_ROWS)), 128, attn_prefill_tc_smem_bytes(head_dim)))
        }
        _ => (AttnPrefill::PerRow, Launch::new((heads, rows), 128, 0)),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Prefill GEMMs

/// `sizeof(gemm::Smem<BM, W>)` for a row tile of `bm` rows over weights in `format`: A 4×BM×72 halves + raw W
/// 4×4×W×32 uint4 (W = 1 for int4, 2 for int8, 4 for fp16) + scales 4×128 words + dequantized W 64×72 halves (4 pipeline
/// stages). The kernel source `static_assert`s the 64-row numbers.
pub const fn gemm_smem_bytes(bm: u32, format: TileFormat) -> u32 {
    let lane_words = format.lane_words() as u32;
    4 * bm * 72 * 2 + 4 * 4 * lane_words * 32 * 16 + 4 * 128 * 4 + 64 * 72 * 2
}

/// Shared memory of `gemm128_int4_*`: `sizeof(gemm::SmemBig)` = A 3×128×72 halves + dequantized W 2×128×72
/// halves + raw W 3×8×32 uint4 + scales 3×256 words (3 pipeline stages, a double-buffered dequantized tile). The
/// kernel source `static_assert`s the same number.
pub const GEMM128_SMEM_BYTES: u32 = 3 * 128 * 72 * 2 + 2 * 128 * 72 * 2 + 3 * 8 * 32 * 16 + 3 * 256 * 4;
// Two blocks per SM on sm_90: 228 KB of shared memory per SM, each block also holding its 16 static bytes and the
// 1 KB the system reserves per block.
const _: () = assert!(2 * (GEMM128_SMEM_BYTES + 16 + 1024) <= 228 * 1024);

/// Whether one block of the 128 × 128 tile fits the card: sm_80 and sm_90 grant its shared memory (plus the
/// kernel's 16 static bytes, the split-K flag), sm_86 / sm_89 (99 KB per block) do not.
pub fn gemm128_fits(limits: &DeviceLimits) -> bool {
    limits.smem_per_block >= GEMM128_SMEM_BYTES + 16
}

/// Blocks of the 128 × 128 tile one SM holds at once, as its shared memory allows (2 on sm_90, 1 on sm_80): each
/// resident block also costs the SM 1 KB that the system reserves.
pub fn gemm128_blocks_per_sm(limits: &DeviceLimits) -> u32 {
    (limits.smem_per_sm / (GEMM128_SMEM_BYTES + 16 + 1024)).clamp(1, 2)
}

/// Shared memory of `gemm_wgmma_int4_*`: `sizeof(wg::Smem)` = A 3×128×64 halves + dequantized W 2×128×64 halves
/// (the swizzled layout needs no row padding) + raw W 3×8×32 uint4 + scales 3×256 words, and 1 KB of room to start
/// it on a 1024-byte boundary. The kernel source `static_assert`s the same number.
pub const GEMM_WGMMA_SMEM_BYTES: u32 = 3 * 128 * 64 * 2 + 2 * 128 * 64 * 2 + 3 * 8 * 32 * 16 + 3 * 256 * 4 + 1024;
const _: () = assert!(2 * (GEMM_WGMMA_SMEM_BYTES + 16 + 1024) <= 228 * 1024);
/// Shared memory of `gemm_wgmma256_int4_*` (`sizeof(wg::Smem<Wide>)` + 1 KB): A 4×128×64 halves + dequantized W
/// 3×256×64 halves + raw W 3×16×32 uint4 + scales 3×2×256 words: one block per SM.
pub const GEMM_WGMMA256_SMEM_BYTES: u32 =
    4 * 128 * 64 * 2 + 3 * 256 * 64 * 2 + 3 * 16 * 32 * 16 + 3 * 2 * 256 * 4 + 1024;
const _: () = assert!(GEMM_WGMMA256_SMEM_BYTES + 16 + 1024 <= 228 * 1024);
/// Shared memory of `gemm_wgmma_ws_int4_*` (`sizeof(wgws::Smem)` + 1 KB): 4 stages of A and dequantized W
/// (2 × 128×64 halves), the producer's raw ring 3×8×32 uint4 + scales 3×2×128 words, 8 mbarriers: one block per SM.
pub const GEMM_WGMMA_WS_SMEM_BYTES: u32 = 4 * 2 * 128 * 64 * 2 + 3 * 8 * 32 * 16 + 3 * 2 * 128 * 4 + 64 + 1024;
const _: () = assert!(GEMM_WGMMA_WS_SMEM_BYTES + 16 + 1024 <= 228 * 1024);

/// Shared memory of `gemm_wgmma_short_int4_*` (`sizeof(wgs::Smem)` + 1 KB): 7 stages of B (16 rows of A × 64
/// halves), raw W (8×32 uint4) and scales (256 words).
pub const GEMM_WGMMA_SHORT_SMEM_BYTES: u32 = 7 * (16 * 64 * 2 + 8 * 32 * 16 + 256 * 4) + 1024;
/// Blocks of `gemm_wgmma_short_int4_*` an SM holds: its shared memory and its 85-register cap allow three.
pub const GEMM_WGMMA_SHORT_BLOCKS_PER_SM: u32 = 3;
const _: () = assert!(GEMM_WGMMA_SHORT_BLOCKS_PER_SM * (GEMM_WGMMA_SHORT_SMEM_BYTES + 16 + 1024) <= 228 * 1024);

/// Shared memory of `gemm_wgmma_wreg_int4_*` (`sizeof(wgr::Smem)` + 1 KB): 4 stages of B (128 rows of A × 64
/// halves), raw W (8×32 uint4) and scales (256 words): two blocks per SM.
pub const GEMM_WGMMA_WREG_SMEM_BYTES: u32 = 4 * (128 * 64 * 2 + 8 * 32 * 16 + 256 * 4) + 1024;
const _: () = assert!(2 * (GEMM_WGMMA_WREG_SMEM_BYTES + 16 + 1024) <= 228 * 1024);

/// K steps (64 rows) per split of `gemm_small_int4_*`: ceil(steps / splits) rounded up to even, as the kernel
/// computes it (`gsmall::per_split_steps`; a warp walks its split two steps at a time).
pub const fn gemm_small_per_split(steps: u32, splits: u32) -> u32 {
    steps.div_ceil(splits).next_multiple_of(2)
}

/// Shared memory of `gemm_small_int4_*`: the 16 staged rows of A over one split's K range, each row padded by 64
/// bytes (`gsmall::stage_a`).
pub const fn gemm_small_smem_bytes(steps: u32, splits: u32) -> u32 {
    16 * (gemm_small_per_split(steps, splits) * 128 + 64)
}

/// The most K steps per split the launch code gives `gemm_small_int4_*`: 46 keeps its shared memory at
/// [`GEMM_SMALL_MAX_SMEM_BYTES`] = 95232 bytes, under the 99 KB a block may have on sm_86/sm_89 and small enough
/// for two blocks per SM on sm_80/sm_90.
pub const GEMM_SMALL_MAX_STEPS_PER_SPLIT: u32 = 46;
pub const GEMM_SMALL_MAX_SMEM_BYTES: u32 = 16 * (GEMM_SMALL_MAX_STEPS_PER_SPLIT * 128 + 64);

/// Which GEMM kernel family a prefill chunk uses, by rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmTile {
    /// Chunks of at most 16 rows (`gemm_small_int4_*`): weights streamed like the GEMV straight into mma operands;
    /// each block owns `tiles_per_block` 16-slot tiles (its 8 warps take every 8th) and one of `splits` ranges of K.
    Small { tiles_per_block: u32, splits: u32 },
    /// 64 × 64, 128 threads (`gemm_int4_*`).
    Rows64,
    /// 128 × 128, 256 threads, two blocks per SM on sm_90 (`gemm128_int4_*`): chunks of at least
    /// [`GEMM128_MIN_ROWS`] rows, where the 64 × 64 tile is bound by its shared-memory traffic and barriers rather
    /// than by the tensor cores.
    Rows128,
    /// The same tile on Hopper's asynchronous tensor cores (`gemm_wgmma_int4_*`, sm_90 only), two blocks per SM.
    Wgmma128,
    /// 128 rows × 256 slots on wgmma (`gemm_wgmma256_int4_*`, sm_90 only), one block per SM.
    Wgmma256,
    /// 128 × 128 on wgmma with a producer warpgroup (`gemm_wgmma_ws_int4_*`, sm_90 only), 384 threads, one block
    /// per SM.
    WgmmaWs,
    /// Chunks of at most 16 rows on wgmma with the weights, dequantized in registers, as the M side
    /// (`gemm_wgmma_short_int4_*`, sm_90 only): 128 slots × 16 rows per block, four blocks per SM; A must be in
    /// its K order, as for [`GemmTile::WgmmaWreg`].
    WgmmaShort,
    /// 128 slots × 128 rows on wgmma with the weights dequantized in registers as the M side
    /// (`gemm_wgmma_wreg_int4_*`, sm_90 only), two blocks per SM; A must first be in its K order
    /// (`permute_k_steps`).
    WgmmaWreg,
    /// Chunks of at most 16 · `blocks` rows (1..=4 row blocks) shaped like the decode GEMV (`gemv_rows*_int4_*`,
    /// `mma.sync`): a block per 16-slot tile over all of K, 8 warps (16 when `wide`, one row block only, for
    /// projections of few tiles), no split-K; A in `ptx/kernels/frag16.cuh`'s order.
    GemvRows { blocks: u32, wide: bool },
}

/// The order a prefill GEMM tile reads its rows of A in, which the kernel producing them writes where it can
/// (the value is what the producers' `order` fields take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOrder {
    /// Row after row, columns in order.
    Rows = 0,
    /// Rows, each 64-column step permuted as the weights-in-registers tiles pair K (`ptx/kernels/k_order.cuh`),
    /// k_pad columns with zeros past k.
    KSteps = 1,
    /// The GEMV-shaped tile's MMA fragments (`ptx/kernels/frag16.cuh`): blocks of 16 rows × k_pad halves
    /// interleaved.
    Frag16 = 2,
}

/// Columns of A whose fragments lie together in [`InputOrder::Frag16`] (`frag16::SPAN`): K of a
/// [`GemmTile::GemvRows`] GEMM is padded to a multiple of it.
pub const FRAG16_SPAN: u32 = 128;

/// Row blocks of 16 the [`GemmTile::GemvRows`] kernels take at most (64 rows).
pub const GEMV_ROWS_MAX_BLOCKS: u32 = 4;

/// Projections of fewer 16-slot tiles than this take the 16-warp one-block [`GemmTile::GemvRows`]: few tiles need more
/// warps per tile to keep the bytes in flight. The reason of the decode GEMV's `residual_gemv_warps`, but a fixed
/// count, measured on a 132-SM H200 (o / down, 256 tiles: wide; q/k/v and gate/up, 768 and 1376: not), where that
/// rule's 4 tiles per SM would draw the line at 528.
pub const GEMV_ROWS16_WIDE_BELOW: u32 = 512;

/// Rows from which a prefill GEMM uses the 128 × 128 tile. Below, a 128-row tile would be mostly padding.
pub const GEMM128_MIN_ROWS: u32 = 128;
/// The same for the 128-row wgmma tiles (sm_90).
pub const GEMM128_WGMMA_MIN_ROWS: u32 = 65;

impl GemmTile {
    /// The order the tile reads its rows of A in.
    pub fn input_order(self) -> InputOrder {
        match self {
            GemmTile::WgmmaShort | GemmTile::WgmmaWreg => InputOrder::KSteps,
            GemmTile::GemvRows { .. } => InputOrder::Frag16,
            _ => InputOrder::Rows,
        }
    }

    /// The tile for `m` rows of a GEMM over `tiles` slot tiles and `steps` K steps: `gemm_small` for at most 16
    /// rows when a shape fits, the 128 × 128 tile from 128 rows when `gemm128` (the card allows it and the tuning
    /// wants it), else the 64 × 64 tile.
    /// `wgmma`: the wgmma tile that replaces the 128 × 128 one (the caller passes `Off` where the card has none);
    /// `wgmma_short`: chunks of at most 16 rows run `gemm_wgmma_short` (the caller passes false where the card has
    /// no wgmma or the weights are not int4).
    pub fn choose(
        m: u32,
        tiles: u32,
        steps: u32,
        sm_count: u32,
        gemm128: bool,
        wgmma: WgmmaTile,
        wgmma_short: bool,
    ) -> GemmTile {
        if m <= 16 && wgmma_short {
            return GemmTile::WgmmaShort;
        }
        if m <= 16 {
            if let Some(t) = gemm_small_shape(tiles, steps, m, sm_count) {
                return t;
            }
        }
        // The wgmma tiles pay little for padding rows: from 65 rows one 128-row tile (at 100 rows on an H200: the
        // 64 × 64 tile took 12.4 ms for the 7B prefill, the 128-row tile a 128-row chunk's ~7.5; BENCHMARKS.md).
        let min_rows = if wgmma == WgmmaTile::Off { GEMM128_MIN_ROWS } else { GEMM128_WGMMA_MIN_ROWS };
        if m >= min_rows && gemm128 {
            match wgmma {
                WgmmaTile::Off => GemmTile::Rows128,
                WgmmaTile::Slots128 => GemmTile::Wgmma128,
                WgmmaTile::Slots256 => GemmTile::Wgmma256,
                WgmmaTile::WarpSpecialized => GemmTile::WgmmaWs,
                WgmmaTile::WeightsInRegisters => GemmTile::WgmmaWreg,
            }
        } else {
            GemmTile::Rows64
        }
    }

    fn rows(self) -> u32 {
        match self {
            GemmTile::Small { .. } | GemmTile::WgmmaShort => 16,
            GemmTile::GemvRows { blocks, .. } => 16 * blocks,
            GemmTile::Rows64 => 64,
            GemmTile::Rows128 | GemmTile::Wgmma128 | GemmTile::Wgmma256 | GemmTile::WgmmaWs | GemmTile::WgmmaWreg => {
                128
            }
        }
    }
    /// Slots one block covers in a launch over `n_pad` slots (`gemm_small` spreads the tiles evenly over its grid,
    /// so a block may cover fewer than `tiles_per_block`).
    pub fn block_slots(self, n_pad: u32) -> u32 {
        match self {
            GemmTile::Small { tiles_per_block, .. } => {
                let tiles = n_pad / TILE_N as u32;
                tiles.div_ceil(tiles.div_ceil(tiles_per_block).max(1)) * TILE_N as u32
            }
            _ => self.slots(),
        }
    }
    /// Slots one block covers.
    pub fn slots(self) -> u32 {
        match self {
            GemmTile::Small { tiles_per_block, .. } => tiles_per_block * TILE_N as u32,
            GemmTile::GemvRows { .. } => TILE_N as u32,
            GemmTile::Rows64 => 64,
            GemmTile::Rows128 | GemmTile::Wgmma128 | GemmTile::WgmmaWs | GemmTile::WgmmaShort | GemmTile::WgmmaWreg => {
                128
            }
            GemmTile::Wgmma256 => 256,
        }
    }
    fn threads(self) -> u32 {
        match self {
            GemmTile::Small { .. }
            | GemmTile::Rows128
            | GemmTile::Wgmma128
            | GemmTile::Wgmma256
            | GemmTile::WgmmaShort
            | GemmTile::WgmmaWreg => 256,
            GemmTile::WgmmaWs => 384,
            GemmTile::Rows64 => 128,
            GemmTile::GemvRows { wide, .. } => 32 * if wide { 16 } else { 8 },
        }
    }

    /// The launch over `n_pad` slots of weights in `format`, K padded to `k_pad`, `m` rows in `k_splits` splits.
    pub fn launch(self, n_pad: u32, k_pad: u32, m: u32, k_splits: u32, format: TileFormat) -> Launch {
        // gemm_small spreads its tiles over its own grid; a row tile is a block per rows × slots tile and K split.
        let smem = match self {
            GemmTile::Small { tiles_per_block, splits } => {
                let tiles = n_pad / TILE_N as u32;
                let steps = k_pad / STEP_K as u32;
                return Launch::new(
                    (tiles.div_ceil(tiles_per_block), splits),
                    256,
                    gemm_small_smem_bytes(steps, splits),
                );
            }
            GemmTile::Rows64 => gemm_smem_bytes(64, format),
            GemmTile::Rows128 => GEMM128_SMEM_BYTES,
            GemmTile::Wgmma128 => GEMM_WGMMA_SMEM_BYTES,
            GemmTile::Wgmma256 => GEMM_WGMMA256_SMEM_BYTES,
            GemmTile::WgmmaWs => GEMM_WGMMA_WS_SMEM_BYTES,
            GemmTile::WgmmaShort => GEMM_WGMMA_SHORT_SMEM_BYTES,
            GemmTile::WgmmaWreg => GEMM_WGMMA_WREG_SMEM_BYTES,
            GemmTile::GemvRows { .. } => 0,
        };
        let grid = (n_pad.div_ceil(self.slots()), m.div_ceil(self.rows()), k_splits);
        Launch::new(grid, self.threads(), smem)
    }
}

/// Chooses the launch shape of `gemm_small_int4_*` for `m` ≤ 16 rows over `tiles` slot tiles and `steps` K steps
/// of 64 rows, or `None` when K is too long for any split count the workspace allows (the 64-row GEMM runs then).
///
/// The kernel streams the weights like the GEMV; the shape decides the traffic around them, all through L2: each
/// block stages its rows of A over its K range (4/tiles_per_block of the weights' bytes at 16 rows), and with
/// split-K each tile's partial sums (1 KB per split) are written and read back once. It also sets two round trips
/// that the streaming does not hide: staging A (a thread loads 8 of its 16-byte pieces at a time) and the split
/// reduction of a warp's last tile (4 splits at a time). Among tiles_per_block ∈ {8, 16, 32} (whole tiles for every
/// warp) and the split counts that leave no split empty, keep a split's A within
/// [`GEMM_SMALL_MAX_STEPS_PER_SPLIT`] steps and the partials within the workspace, it takes the least estimated
/// time: the larger of the weights over DRAM and all bytes over L2, stretched by √(2 blocks per SM / blocks) when
/// the grid is smaller (fewer loads in flight) and by the number of waves of two blocks per SM, plus the round
/// trips. The rates are estimates for an H100/H200; `gemm_small_int4_time_per_launch` measures every candidate.
pub fn gemm_small_shape(tiles: u32, steps: u32, m: u32, sm_count: u32) -> Option<GemmTile> {
    const DRAM_BYTES_PER_US: f64 = 3.0e6; // what the GEMV streams at
    const L2_BYTES_PER_US: f64 = 6.0e6;
    const ROUND_TRIP_US: f64 = 0.5; // one L2 round trip under load
    let m = m.clamp(1, 16) as f64;
    let resident = 2 * sm_count.max(1) as u64;
    let weights = tiles as f64 * steps as f64 * 512.0;
    // The partials are [splits][tiles][16 rows × 16 slots] floats, whatever m: 16 splits fill the workspace.
    let max_splits = GEMM_SPLIT_ROWS as u32 / 16;
    let mut best: Option<(f64, GemmTile)> = None;
    for tiles_per_block in [8u32, 16, 32] {
        let columns = tiles.div_ceil(tiles_per_block) as u64;
        for splits in 1..=max_splits {
            let per_split = gemm_small_per_split(steps, splits);
            if per_split > GEMM_SMALL_MAX_STEPS_PER_SPLIT || steps.div_ceil(per_split) != splits {
                continue;
            }
            let blocks = columns * splits as u64;
            let a_bytes = blocks as f64 * m * per_split as f64 * 128.0;
            let part_bytes = if splits > 1 { 2.0 * splits as f64 * tiles as f64 * 1024.0 } else { 0.0 };
            let stream = (weights / DRAM_BYTES_PER_US).max((weights + a_bytes + part_bytes) / L2_BYTES_PER_US);
            let short = (resident as f64 / blocks as f64).max(1.0).sqrt();
            let waves = blocks.div_ceil(resident) as f64;
            let stage = per_split.div_ceil(16) as f64 * ROUND_TRIP_US;
            let tail = if splits > 1 { splits.div_ceil(4) as f64 * ROUND_TRIP_US } else { 0.0 };
            let us = stream * short * waves + stage + tail;
            if best.is_none_or(|(b, _)| us < b) {
                best = Some((us, GemmTile::Small { tiles_per_block, splits }));
            }
        }
    }
    best.map(|(_, s)| s)
}

/// How many blocks along K the 64-row prefill GEMM over `n_pad` slots and K `k_pad` with `m` rows uses: enough
/// blocks to fill the card a few times over, at least 2 K steps per block, within the split-K workspace.
pub fn gemm64_splits(n_pad: u32, k_pad: u32, m: u32, sm_count: u32) -> u32 {
    let base = n_pad.div_ceil(64) * m.div_ceil(64);
    let want = (4 * sm_count).div_ceil(base);
    let by_steps = (k_pad / 64 / 2).max(1);
    let by_space = GEMM_SPLIT_ROWS as u32 / m.max(1);
    want.min(by_steps).min(by_space).max(1)
}

/// Fewest K steps (of 64) a split of the 128 × 128 tile gets: the pipeline's prologue loads 3 steps.
pub const GEMM128_MIN_SPLIT_STEPS: u32 = 4;
/// What a split-K reduction costs, in K steps of one block (each block writes its 64 KB partial tile, the last one
/// reads them all back from L2): about 2–4; the larger guess keeps the split for when it clearly pays.
const GEMM128_REDUCE_STEPS: u32 = 4;

/// What the split-K workspace allows a GEMM whose grid has `base` output tiles over `m` rows × `n_pad` slots: `None`
/// when there is no tile or more tiles than counters (it then runs unsplit), else how many [split][m][n_pad]
/// partial-sum buffers `part_floats` holds.
fn split_room(base: u32, m: u32, n_pad: u32, part_floats: usize, counters: usize) -> Option<u32> {
    if base == 0 || base as usize > counters {
        return None;
    }
    Some((part_floats / (m as usize * n_pad as usize).max(1)).min(u32::MAX as usize) as u32)
}

/// K splits for the 128-row tiles of `slots` slots (128, or 256 for the wide wgmma tile) over `n_pad` slots,
/// `k_pad` rows of K and `m` rows, on a card holding `resident` such blocks at once (SMs × blocks per SM: 2 for the
/// 128-slot tiles on sm_90, where registers and shared memory allow two; 1 for the wide one), with a split-K
/// workspace of `part_floats` partial sums and `counters` tile counters.
///
/// A grid of n_pad/128 × m/128 blocks is small next to the card for narrow projections (o and down of a 7B model:
/// 32 × 4 = 128 blocks at 512 rows, on 132 SMs that hold 264), so such GEMMs split K. The split minimizes
/// waves × (steps per split + the reduction's cost), where a wave is one set of resident blocks: it fills idle SMs,
/// and adds a wave only where shorter blocks more than pay for it (ties go to fewer splits). The workspace holds
/// `GEMM_SPLIT_ROWS` rows of the widest projection, so narrow projections can split 512-row chunks (2 × 512 × 4096
/// partials fit); wide ones at 512 rows (q/k/v, gate/up: 384 and 688 blocks) already fill the card, and stay
/// unsplit.
pub fn gemm128_splits(
    resident: u32,
    n_pad: u32,
    k_pad: u32,
    m: u32,
    slots: u32,
    part_floats: usize,
    counters: usize,
) -> u32 {
    let base = n_pad.div_ceil(slots) * m.div_ceil(128);
    let resident = resident.max(1);
    let steps = k_pad / 64;
    let Some(by_space) = split_room(base, m, n_pad, part_floats, counters) else {
        return 1;
    };
    let by_steps = (steps / GEMM128_MIN_SPLIT_STEPS).max(1);
    let max = by_steps.min(by_space).max(1);
    let cost = |s: u32| {
        let waves = (base * s).div_ceil(resident);
        waves * (steps.div_ceil(s) + if s > 1 { GEMM128_REDUCE_STEPS } else { 0 })
    };
    (1..=max).min_by_key(|&s| (cost(s), s)).unwrap_or(1)
}

/// K splits for `gemm_wgmma_short_int4_*` (at most 16 rows, blocks of 128 slots) over `n_pad` slots and `k_pad`
/// rows of K on a card holding `resident` such blocks, within a workspace of `part_floats` partial sums and `counters`
/// tile counters. The kernel streams weights, so it wants the card full — n_pad / 128 blocks are a fraction of it
/// (o and down of a 7B model: 32) — but each split also costs its pipeline's fill (~3 steps) and, in the last
/// block, a batch of 4 partials per L2 round trip (~2 steps). It minimizes waves × (steps per split + 3) + 2 ·
/// ceil(splits / 4), ties to fewer splits.
pub fn gemm_short_splits(resident: u32, n_pad: u32, k_pad: u32, m: u32, part_floats: usize, counters: usize) -> u32 {
    const FILL_STEPS: u32 = 3;
    const ROUND_TRIP_STEPS: u32 = 2;
    let base = n_pad.div_ceil(128);
    let steps = k_pad / 64;
    let Some(by_space) = split_room(base, m, n_pad, part_floats, counters) else {
        return 1;
    };
    let max = steps.min(by_space).clamp(1, 32);
    let cost = |s: u32| {
        let waves = (base * s).div_ceil(resident.max(1));
        let reduce = if s > 1 { s.div_ceil(4) * ROUND_TRIP_STEPS } else { 0 };
        waves * (steps.div_ceil(s) + FILL_STEPS) + reduce
    };
    (1..=max).min_by_key(|&s| (cost(s), s)).unwrap_or(1)
}

/// The split-K count of a GEMM of `tile` over `n_pad` slots, K `k_pad`, `m` rows, with the workspace `ws`.
pub fn gemm_splits(
    tile: GemmTile,
    n_pad: u32,
    k_pad: u32,
    m: u32,
    limits: &DeviceLimits,
    ws: &plan::WorkspaceBuffers,
) -> u32 {
    match tile {
        GemmTile::Small { splits, .. } => splits,
        GemmTile::GemvRows { .. } => 1,
        GemmTile::Rows64 => gemm64_splits(n_pad, k_pad, m, limits.sm_count),
        GemmTile::Rows128 | GemmTile::Wgmma128 | GemmTile::WgmmaWreg => {
            // Two blocks per SM either way on sm_90 (the wgmma tiles' shared memory is the smaller).
            let resident = limits.sm_count * gemm128_blocks_per_sm(limits);
            gemm128_splits(resident, n_pad, k_pad, m, 128, ws.gemm_partial.len, ws.gemm_counters.len)
        }
        GemmTile::Wgmma256 => {
            gemm128_splits(limits.sm_count, n_pad, k_pad, m, 256, ws.gemm_partial.len, ws.gemm_counters.len)
        }
        GemmTile::WgmmaWs => {
            gemm128_splits(limits.sm_count, n_pad, k_pad, m, 128, ws.gemm_partial.len, ws.gemm_counters.len)
        }
        GemmTile::WgmmaShort => gemm_short_splits(
            limits.sm_count * GEMM_WGMMA_SHORT_BLOCKS_PER_SM,
            n_pad,
            k_pad,
            m,
            ws.gemm_partial.len,
            ws.gemm_counters.len,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split-K workspace of a 7B-shaped model (`GEMM_SPLIT_ROWS` × the widest projection, gate/up's 22016 slots).
    const PART: usize = GEMM_SPLIT_ROWS * 22016;
    const COUNTERS: usize = GEMM_SPLIT_ROWS.div_ceil(64) * 22016usize.div_ceil(64);

    #[test]
    fn gemm128_splits_fill_the_card_only_where_the_grid_is_small() {
        // An H200: 132 SMs × 2 blocks.
        let splits = |n: u32, k: u32, m: u32| gemm128_splits(264, n, k, m, 128, PART, COUNTERS);
        // 512 rows: o and down (128 blocks) split in two; q/k/v and gate/up (384, 688 blocks) don't.
        assert_eq!(splits(4096, 4096, 512), 2);
        assert_eq!(splits(4096, 11008, 512), 2);
        assert_eq!(splits(12288, 4096, 512), 1);
        assert_eq!(splits(22016, 4096, 512), 1);
        // Fewer rows split more, never past the workspace, the counters or 4 steps per split.
        for m in [128u32, 200, 256, 300, 512, 1000, 2048] {
            for (n, k) in [(4096u32, 4096u32), (4096, 11008), (12288, 4096), (22016, 4096), (592, 320), (16, 64)] {
                let s = splits(n, k, m);
                assert!(s >= 1 && (s == 1 || s as u64 * m as u64 * n as u64 <= PART as u64), "m={m} n={n} k={k}: {s}");
                assert!(s == 1 || (k / 64) / s >= GEMM128_MIN_SPLIT_STEPS, "m={m} n={n} k={k}: {s}");
                assert!(s == 1 || (n.div_ceil(128) * m.div_ceil(128)) as usize <= COUNTERS);
            }
        }
        assert!(splits(4096, 4096, 128) > 2);
        // A tiny K never splits, nor does anything on a workspace without room.
        assert_eq!(splits(4096, 192, 128), 1);
        assert_eq!(gemm128_splits(264, 4096, 4096, 512, 128, 0, COUNTERS), 1);
        assert_eq!(gemm128_splits(264, 4096, 4096, 512, 128, PART, 0), 1);
        // An A100 (108 SMs × 1 block): o at 512 rows unsplit is 128 blocks, a full wave and one of 20 blocks
        // (2 × 64 steps); two splits make 3 waves of 32 steps (+ the reduction), which the model prefers.
        assert_eq!(gemm128_splits(108, 4096, 4096, 512, 128, PART, COUNTERS), 2);
    }

    #[test]
    fn gemm_short_splits_fill_the_card_and_keep_splits_long() {
        // An H200: 132 SMs × 4 blocks. The 7B projections at 16 rows.
        let splits = |n: u32, k: u32| gemm_short_splits(528, n, k, 16, PART, COUNTERS);
        // q/k/v: 96 × 5 = 480 blocks of 13 steps; gate/up: 172 × 3; o: 32 × 8 of 8 steps; down: 32 × 16 of 11.
        assert_eq!(splits(12288, 4096), 5);
        assert_eq!(splits(22016, 4096), 3);
        assert_eq!(splits(4096, 4096), 8);
        assert_eq!(splits(4096, 11008), 16);
        // Never past K's steps, the workspace or the counters.
        assert_eq!(splits(4096, 64), 1);
        assert_eq!(gemm_short_splits(528, 4096, 4096, 16, 0, COUNTERS), 1);
        assert_eq!(gemm_short_splits(528, 4096, 4096, 16, PART, 0), 1);
        assert!(gemm_short_splits(528, 4096, 4096, 16, 4096 * 16 * 3, COUNTERS) <= 3);
    }

    #[test]
    fn gemm_tiles_by_rows() {
        // At most 16 rows take gemm_small when a shape fits; the 64-row tile is its fallback.
        let choose = |m: u32, gemm128: bool| GemmTile::choose(m, 256, 64, 132, gemm128, WgmmaTile::Off, false);
        assert!(matches!(choose(1, true), GemmTile::Small { .. }));
        assert!(matches!(choose(16, true), GemmTile::Small { .. }));
        assert_eq!(GemmTile::choose(16, 256, 100_000, 132, true, WgmmaTile::Off, false), GemmTile::Rows64);
        assert_eq!(choose(17, true), GemmTile::Rows64);
        assert_eq!(choose(127, true), GemmTile::Rows64);
        assert_eq!(choose(128, true), GemmTile::Rows128);
        assert_eq!(choose(512, true), GemmTile::Rows128);
        assert_eq!(choose(512, false), GemmTile::Rows64);
        // wgmma replaces the 128-row tile only: it needs gemm128, and shorter chunks keep their tiles.
        assert_eq!(GemmTile::choose(512, 256, 64, 132, true, WgmmaTile::Slots128, false), GemmTile::Wgmma128);
        assert_eq!(GemmTile::choose(512, 256, 64, 132, false, WgmmaTile::Slots128, false), GemmTile::Rows64);
        let wreg = GemmTile::choose(128, 256, 64, 132, true, WgmmaTile::WeightsInRegisters, true);
        assert_eq!(wreg, GemmTile::WgmmaWreg);
        assert_eq!(
            wreg.launch(4096, 4096, 512, 2, TileFormat::Int4),
            Launch::new((32, 4, 2), 256, GEMM_WGMMA_WREG_SMEM_BYTES)
        );
        // The wgmma tiles from 65 rows, the mma.sync 128-row tile from 128.
        assert_eq!(GemmTile::choose(127, 256, 64, 132, true, WgmmaTile::Slots256, false), GemmTile::Wgmma256);
        assert_eq!(GemmTile::choose(65, 256, 64, 132, true, WgmmaTile::WeightsInRegisters, true), GemmTile::WgmmaWreg);
        assert_eq!(GemmTile::choose(64, 256, 64, 132, true, WgmmaTile::WeightsInRegisters, true), GemmTile::Rows64);
        assert_eq!(GemmTile::choose(127, 256, 64, 132, true, WgmmaTile::Off, false), GemmTile::Rows64);
        assert!(matches!(
            GemmTile::choose(16, 256, 64, 132, true, WgmmaTile::WarpSpecialized, false),
            GemmTile::Small { .. }
        ));
        assert_eq!(GemmTile::choose(512, 256, 64, 132, true, WgmmaTile::Slots256, false), GemmTile::Wgmma256);
        assert_eq!(GemmTile::choose(512, 256, 64, 132, true, WgmmaTile::WarpSpecialized, false), GemmTile::WgmmaWs);
        // The short wgmma tile takes every chunk of at most 16 rows where the caller allows it, whatever K.
        for m in [1u32, 7, 16] {
            assert_eq!(GemmTile::choose(m, 256, 100_000, 132, true, WgmmaTile::Off, true), GemmTile::WgmmaShort);
        }
        assert_eq!(GemmTile::choose(17, 256, 64, 132, true, WgmmaTile::Slots128, true), GemmTile::Rows64);
        assert_eq!(GemmTile::WgmmaShort.block_slots(4096), 128);
        assert_eq!(
            GemmTile::WgmmaShort.launch(12288, 4096, 16, 4, TileFormat::Int4),
            Launch::new((96, 1, 4), 256, GEMM_WGMMA_SHORT_SMEM_BYTES)
        );
        assert_eq!(
            GemmTile::WgmmaWs.launch(4096, 4096, 512, 1, TileFormat::Int4),
            Launch::new((32, 4, 1), 384, GEMM_WGMMA_WS_SMEM_BYTES)
        );
        assert_eq!(
            GemmTile::Wgmma256.launch(4096, 4096, 512, 1, TileFormat::Int4),
            Launch::new((16, 4, 1), 256, GEMM_WGMMA256_SMEM_BYTES)
        );
        assert_eq!(
            GemmTile::Wgmma128.launch(4096, 4096, 512, 2, TileFormat::Int4),
            Launch::new((32, 4, 2), 256, GEMM_WGMMA_SMEM_BYTES)
        );
        let (four, eight) = (TileFormat::Int4, TileFormat::Int8);
        assert_eq!(
            GemmTile::Rows128.launch(4096, 4096, 512, 2, four),
            Launch::new((32, 4, 2), 256, GEMM128_SMEM_BYTES)
        );
        assert_eq!(GemmTile::Rows64.launch(4096, 4096, 100, 3, four), Launch::new((64, 2, 3), 128, 56320));
        assert_eq!(GemmTile::Rows64.launch(4096, 4096, 100, 3, eight), Launch::new((64, 2, 3), 128, 64512));
    }

    #[test]
    fn only_long_gathering_row_kernels_wait_for_the_kernel_before_them() {
        let row = per_row_parts(512, 2);
        assert!(gathering(row, 512, false).overlap, "no permutation: overlapped as every launch");
        assert!(gathering(row, GATHER_OVERLAP_ROWS, true).overlap, "a short chunk keeps the overlap");
        let after = gathering(row, GATHER_OVERLAP_ROWS + 1, true);
        assert_eq!((after.overlap, after.grid, after.threads), (false, row.grid, row.threads));
    }

    #[test]
    fn gemm_small_blocks_cover_the_tiles_the_kernel_gives_them() {
        // The kernel spreads the tiles evenly over its grid: ceil(tiles / grid) per block.
        let small = |tiles_per_block| GemmTile::Small { tiles_per_block, splits: 1 };
        assert_eq!(small(32).block_slots(768 * 16), 32 * 16);
        assert_eq!(small(32).block_slots(100 * 16), 25 * 16); // 4 blocks of 25 tiles
        assert_eq!(small(8).block_slots(12 * 16), 6 * 16);
        assert_eq!(GemmTile::Rows128.block_slots(4096), 128);
    }

    #[test]
    fn gemm128_smem_matches_the_kernels_static_assert() {
        assert_eq!(GEMM128_SMEM_BYTES, 107520);
        let src = std::fs::read_to_string(format!("{}/../ptx/kernels/gemm.cu", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(
            src.contains(&format!("static_assert(sizeof(SmemBig) == {GEMM128_SMEM_BYTES}")),
            "gemm.cu's static_assert on sizeof(SmemBig) must name GEMM128_SMEM_BYTES"
        );
    }

    #[test]
    fn gemm_wgmma_smem_matches_the_kernels_static_assert() {
        assert_eq!((GEMM_WGMMA_SMEM_BYTES, GEMM_WGMMA256_SMEM_BYTES), (98304, 195584));
        let path = format!("{}/../ptx/kernels/gemm_wgmma.cu", env!("CARGO_MANIFEST_DIR"));
        let src = std::fs::read_to_string(path).unwrap();
        assert!(
            src.contains(&format!("static_assert(sizeof(Smem<Narrow>) + 1024 == {GEMM_WGMMA_SMEM_BYTES}")),
            "gemm_wgmma.cu's static_assert on sizeof(Smem) must name GEMM_WGMMA_SMEM_BYTES"
        );
        assert!(src.contains(&format!("static_assert(sizeof(Smem<Wide>) + 1024 == {GEMM_WGMMA256_SMEM_BYTES}")));
        let path = format!("{}/../ptx/kernels/gemm_wgmma_ws.cu", env!("CARGO_MANIFEST_DIR"));
        let src = std::fs::read_to_string(path).unwrap();
        assert!(src.contains(&format!("static_assert(sizeof(Smem) + 1024 == {GEMM_WGMMA_WS_SMEM_BYTES}")));
        let path = format!("{}/../ptx/kernels/gemm_wgmma_short.cu", env!("CARGO_MANIFEST_DIR"));
        let src = std::fs::read_to_string(path).unwrap();
        assert!(src.contains(&format!("static_assert(sizeof(Smem) + 1024 == {GEMM_WGMMA_SHORT_SMEM_BYTES}")));
        let path = format!("{}/../ptx/kernels/gemm_wgmma_wreg.cu", env!("CARGO_MANIFEST_DIR"));
        let src = std::fs::read_to_string(path).unwrap();
        assert!(src.contains(&format!("static_assert(sizeof(Smem) + 1024 == {GEMM_WGMMA_WREG_SMEM_BYTES}")));
    }

    #[test]
    fn gemv_ring_bytes_match_the_kernels_static_assert() {
        let src = std::fs::read_to_string(format!("{}/../ptx/kernels/gemv.cu", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let [a, b, c] = [TileFormat::Int4, TileFormat::Int8, TileFormat::F16].map(gemv_ring_bytes);
        assert!(src.contains(&format!("static_assert(bytes<4>() == {a} && bytes<8>() == {b} && bytes<16>() == {c}")));
    }

    #[test]
    fn score_smem_matches_the_kernels_static_assert() {
        let src = std::fs::read_to_string(format!("{}/../ptx/kernels/score.cu", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(src.contains(&format!("static_assert(sizeof(Smem) == {SCORE_SMEM_BYTES}")));
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

    /// The small-chunk GEMM's launch shapes: within the split-K workspace and the shared memory the driver allows,
    /// no empty split, a counter for every block column; `None` only where no split count fits K.
    #[test]
    fn gemm_small_shapes_fit_the_workspace_and_shared_memory() {
        for sm in [1u32, 46, 108, 132] {
            for m in 1..=16u32 {
                let max_splits = GEMM_SPLIT_ROWS as u32 / 16;
                for (tiles, steps) in
                    [(1u32, 1u32), (3, 4), (256, 64), (768, 64), (1376, 64), (256, 172), (4, 700), (9000, 9)]
                {
                    let what = format!("sm {sm} m {m} tiles {tiles} steps {steps}");
                    let Some(shape) = gemm_small_shape(tiles, steps, m, sm) else {
                        assert!(gemm_small_per_split(steps, max_splits) > GEMM_SMALL_MAX_STEPS_PER_SPLIT, "{what}");
                        continue;
                    };
                    let GemmTile::Small { splits, .. } = shape else { panic!("{what}: {shape:?}") };
                    let per_split = gemm_small_per_split(steps, splits);
                    assert!(per_split <= GEMM_SMALL_MAX_STEPS_PER_SPLIT, "{what}");
                    assert!(gemm_small_smem_bytes(steps, splits) <= GEMM_SMALL_MAX_SMEM_BYTES, "{what}");
                    assert_eq!(steps.div_ceil(per_split), splits, "{what}: an empty split");
                    assert!(splits * 16 <= GEMM_SPLIT_ROWS as u32, "{what}: partials past the workspace");
                    let l = shape.launch(tiles * TILE_N as u32, steps * STEP_K as u32, m, splits, TileFormat::Int4);
                    assert_eq!(l.smem, gemm_small_smem_bytes(steps, splits), "{what}");
                    let (gx, gy, gz) = l.grid;
                    assert!(gx <= tiles && gy == splits && gz == 1, "{what}: more block columns than counters");
                }
            }
        }
    }

    #[test]
    fn gemv_inputs_stay_16_byte_aligned() {
        // The staged input follows the ring and the sums; it is stored with 16-byte stores.
        for format in [TileFormat::Int4, TileFormat::Int8, TileFormat::F16] {
            for stream in [GemvStream::Registers, GemvStream::Lean, GemvStream::Ring] {
                for warps in [8, 16] {
                    assert_eq!(gemv_smem(0, warps, 0, format, stream) % 16, 0, "{format:?} {stream:?} {warps}");
                }
            }
        }
        assert_eq!(gemv_threads(8, GemvStream::Ring), 288);
        assert_eq!(gemv_threads(16, GemvStream::Registers), 512);
    }

    #[test]
    fn gemv_grids_cover_every_tile() {
        for tiles in [1u32, 5, 256, 1376, 10000] {
            for bps in [1u32, 4, 12, 16] {
                let (grid, tpb) = gemv_grid(tiles, 132, bps);
                assert!(grid * tpb >= tiles && (grid - 1) * tpb < tiles, "{tiles} {bps}");
            }
        }
    }
}

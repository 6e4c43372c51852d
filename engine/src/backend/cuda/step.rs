//! The launch sequences: one decode step (captured into a graph), one prefill chunk, and the lm_head of a row.
//! Read top to bottom, each follows the forward pass of the CPU backend, with the fusions noted where they happen.

use engine_format::plan;

use super::driver::Gpu;
use super::params::{
    attn_prefill_tc_smem_bytes, gemm_small_per_split, gemm_small_smem_bytes, gemm_smem_bytes, AttnParams, GemmParams,
    GemvParams, LmHeadParams, ATTN_TC_ROWS, GEMM128_SMEM_BYTES, GEMM_SMALL_MAX_STEPS_PER_SPLIT,
};
use super::weights::DevLinear;
use super::CudaBackend;
use crate::error::Result;

/// Threads of the GEMV and lm_head kernels.
const GEMV_THREADS: u32 = 256;
/// Vocabulary rows per lm_head block (8 warps × 4 rows).
const LM_HEAD_ROWS: u32 = 32;

/// Grid and tiles per block for a GEMV over `lin`: as few tiles per block as give the card
/// `gemv_blocks_per_sm` blocks per SM.
pub(super) fn gemv_grid(tiles: u32, sm_count: u32, blocks_per_sm: u32) -> (u32, u32) {
    let blocks = (sm_count * blocks_per_sm).max(1);
    let tpb = tiles.div_ceil(blocks).max(1);
    (tiles.div_ceil(tpb), tpb)
}

fn gemv_grid_for(b: &CudaBackend, lin: &DevLinear) -> (u32, u32) {
    gemv_grid(lin.tiles(), b.gpu.sm_count, b.gpu.tuning.gemv_blocks_per_sm)
}

/// Warps of the wide residual GEMV (`WIDE_WARPS` in gemv_int4.cu).
pub(super) const GEMV_WIDE_WARPS: u32 = 16;

/// Dynamic shared memory of a GEMV over `lin` with `warps` warps per block: the staged input and the per-warp sums.
pub(super) fn gemv_smem(k_pad: u32, warps: u32) -> u32 {
    k_pad * 2 + (warps * 16 + warps) * 4
}

/// The residual GEMV kernel (o/down) for `lin` and its warps per block: the 16-warp one where the projection has
/// fewer than 4 tiles per SM (more load chains per SM for a latency-bound kernel; measured in BENCHMARKS.md).
fn residual_gemv<'a>(b: &'a CudaBackend, lin: &DevLinear) -> (&'a cudarc::driver::CudaFunction, u32) {
    if b.gpu.tuning.gemv_wide && lin.tiles() < 4 * b.gpu.sm_count {
        (&b.gpu.k.gemv_residual_wide, GEMV_WIDE_WARPS)
    } else {
        (&b.gpu.k.gemv_residual, GEMV_THREADS / 32)
    }
}

fn gemv_params(b: &CudaBackend, lin: &DevLinear) -> GemvParams {
    let (_, tpb) = gemv_grid_for(b, lin);
    let c = b.config_ref();
    GemvParams {
        qw: lin.qw,
        sz: lin.sz,
        perm: lin.perm,
        col_map: lin.col_map,
        k: lin.k,
        k_pad: lin.k_pad,
        n_pad: lin.n_pad,
        groups: lin.groups,
        group_size: lin.group_size,
        chunk_shift: lin.chunk_shift,
        tiles_per_block: tpb,
        eps: c.rms_norm_eps,
        ..Default::default()
    }
}

fn launch_gemv(b: &CudaBackend, f: &cudarc::driver::CudaFunction, lin: &DevLinear, p: &GemvParams) -> Result<()> {
    launch_gemv_warps(b, f, GEMV_THREADS / 32, lin, p)
}

fn launch_gemv_warps(
    b: &CudaBackend,
    f: &cudarc::driver::CudaFunction,
    warps: u32,
    lin: &DevLinear,
    p: &GemvParams,
) -> Result<()> {
    let (grid, _) = gemv_grid_for(b, lin);
    b.gpu.launch_struct(f, (grid, 1, 1), warps * 32, gemv_smem(lin.k_pad, warps), p)
}

impl CudaBackend {
    fn config_ref(&self) -> &engine_format::ModelConfig {
        &self.model.desc.config
    }
}

/// Bytes a linear's kernel streams from memory: its repacked weights and tables.
pub fn linear_bytes(lin: &DevLinear) -> u64 {
    let (k_pad, n_pad, groups) = (lin.k_pad as u64, lin.n_pad as u64, lin.groups as u64);
    k_pad * n_pad / 2 + n_pad * groups * 4 + n_pad * 4 + if lin.perm != 0 { k_pad * 4 } else { 0 }
}

/// The kernels of one decode step for the token in `ws.tokens[0]` at position `ws.pos`, over the KV cache at
/// `kv` of `ctx` positions. With `greedy`, the step ends by writing the argmax token back into `ws.tokens[0]`
/// and the token ring, and advancing `ws.pos`, so that the captured graph can be replayed step after step.
///
/// `mark(kernel, bytes)` is called after each launch with the bytes the kernel must read at context length
/// `len` (attention depends on it); the profiler records an event there, graph capture ignores it.
pub fn decode(
    b: &CudaBackend,
    kv: u64,
    ctx: usize,
    greedy: bool,
    len: usize,
    mark: &mut dyn FnMut(&'static str, u64) -> Result<()>,
) -> Result<()> {
    let c = b.config_ref();
    let (hidden, hd) = (c.hidden_size as u32, c.head_dim as u32);
    let (q_dim, kv_dim) = ((c.num_attention_heads * c.head_dim) as u32, c.kv_dim() as u32);
    let layer_kv = (c.num_key_value_heads * ctx * c.head_dim * 2) as u64;
    let values = kv + layer_kv * c.num_hidden_layers as u64;
    let (x, q, att, h) = (b.buf("act.x"), b.buf("act.q"), b.buf("act.att"), b.buf("act.h"));
    let (ssq, tokens, pos) = (b.buf("ws.ssq"), b.buf("ws.tokens"), b.buf("ws.pos"));
    let hidden_tiles = (plan::slots_identity(c.hidden_size) / plan::TILE_N) as u32;

    // Embedding, with the sum of squares the first layer's fused norm needs.
    let (mut a_tok, mut a_tab, mut a_x, mut a_ssq, mut a_dim) = (tokens, b.w.embed, x, ssq, hidden);
    // SAFETY: embed_tokens(const uint32_t*, const __half*, float*, float*, uint32_t): five arguments of these
    // sizes; tokens holds one id, x and ssq have room for one row.
    unsafe {
        b.gpu.launch_raw(
            &b.gpu.k.embed,
            (1, 1, 1),
            256,
            0,
            &mut [arg(&mut a_tok), arg(&mut a_tab), arg(&mut a_x), arg(&mut a_ssq), arg(&mut a_dim)],
        )?;
    }
    mark("embed", hidden as u64 * 2)?;
    let kv_bytes = (2 * c.num_key_value_heads * len * c.head_dim * 2) as u64;
    let splits = plan::attention_splits(c) as u32;
    for (l, lw) in b.w.layers.iter().enumerate() {
        let (k_cache, v_cache) = (kv + layer_kv * l as u64, values + layer_kv * l as u64);
        // q/k/v with the input norm fused in front and rotary + KV append fused behind.
        let p = GemvParams {
            x,
            norm_w: lw.input_norm,
            ssq,
            n_ssq: if l == 0 { 1 } else { hidden_tiles },
            out16: q,
            k_cache,
            v_cache,
            rope_cos: b.w.rope_cos,
            rope_sin: b.w.rope_sin,
            pos,
            ctx: ctx as u32,
            head_dim: hd,
            q_dim,
            kv_dim,
            ..gemv_params(b, &lw.qkv)
        };
        launch_gemv(b, &b.gpu.k.gemv_qkv, &lw.qkv, &p)?;
        mark("gemv q/k/v + norm + rope + kv append", linear_bytes(&lw.qkv))?;
        // Attention over positions 0..=pos, split over the sequence.
        let ap = AttnParams {
            q,
            k_cache,
            v_cache,
            out: att,
            part_o: b.buf("ws.attn_partial_o"),
            part_ml: b.buf("ws.attn_partial_ml"),
            counters: b.buf("ws.attn_counters"),
            pos,
            heads: c.num_attention_heads as u32,
            kv_heads: c.num_key_value_heads as u32,
            head_dim: hd,
            ctx: ctx as u32,
            splits,
            scale_log2: std::f32::consts::LOG2_E / (hd as f32).sqrt(),
            rows: 1,
        };
        b.gpu.launch_struct(&b.gpu.k.attn_decode, (c.num_attention_heads as u32, splits, 1), 128, 0, &ap)?;
        mark("attention (split-K decode)", kv_bytes)?;
        // o_proj, added to the residual stream, leaving the sums of squares for the next norm.
        let p = GemvParams { x16: att, y: x, ssq_out: ssq, ..gemv_params(b, &lw.o) };
        let (f, warps) = residual_gemv(b, &lw.o);
        launch_gemv_warps(b, f, warps, &lw.o, &p)?;
        mark("gemv o_proj + residual", linear_bytes(&lw.o))?;
        // gate/up with the post-attention norm fused in front and SwiGLU behind.
        let p =
            GemvParams { x, norm_w: lw.post_norm, ssq, n_ssq: hidden_tiles, out16: h, ..gemv_params(b, &lw.gate_up) };
        launch_gemv(b, &b.gpu.k.gemv_gate_up, &lw.gate_up, &p)?;
        mark("gemv gate/up + norm + swiglu", linear_bytes(&lw.gate_up))?;
        // down_proj, added to the residual stream.
        let p = GemvParams { x16: h, y: x, ssq_out: ssq, ..gemv_params(b, &lw.down) };
        let (f, warps) = residual_gemv(b, &lw.down);
        launch_gemv_warps(b, f, warps, &lw.down, &p)?;
        mark("gemv down_proj + residual", linear_bytes(&lw.down))?;
    }
    launch_lm_head(b, x, greedy)?;
    mark("lm_head + norm + argmax", (c.vocab_size * c.hidden_size * 2) as u64)?;
    if greedy {
        let (mut a_pos, mut a_tok, mut a_ring, mut a_len) =
            (pos, tokens, b.buf("ws.token_ring"), plan::TOKEN_RING as u32);
        // SAFETY: decode_advance(uint32_t*, const uint32_t*, uint32_t*, uint32_t) with the ring of ring_len words.
        unsafe {
            b.gpu.launch_raw(
                &b.gpu.k.decode_advance,
                (1, 1, 1),
                1,
                0,
                &mut [arg(&mut a_pos), arg(&mut a_tok), arg(&mut a_ring), arg(&mut a_len)],
            )?;
        }
        mark("decode_advance", 0)?;
    }
    Ok(())
}

/// The lm_head of one residual-stream row `x` into `ws.logits`; with `argmax`, the greedy token into
/// `ws.tokens[0]`.
fn launch_lm_head(b: &CudaBackend, x: u64, argmax: bool) -> Result<()> {
    let c = b.config_ref();
    let p = LmHeadParams {
        w: b.w.lm_head,
        x,
        norm_w: b.w.norm,
        logits: b.buf("ws.logits"),
        part_val: b.buf("ws.argmax_val"),
        part_idx: b.buf("ws.argmax_idx"),
        counter: b.buf("ws.argmax_counter"),
        token_out: if argmax { b.buf("ws.tokens") } else { 0 },
        vocab: c.vocab_size as u32,
        k: c.hidden_size as u32,
        rows_per_block: LM_HEAD_ROWS,
        eps: c.rms_norm_eps,
    };
    let grid = (c.vocab_size as u32).div_ceil(LM_HEAD_ROWS);
    b.gpu.launch_struct(&b.gpu.k.lm_head, (grid, 1, 1), GEMV_THREADS, c.hidden_size as u32 * 4, &p)
}

/// The lm_head of prefill row `row` (its residual stream is in `act.x`).
pub fn lm_head(b: &CudaBackend, row: usize, argmax: bool) -> Result<()> {
    let x = b.buf("act.x") + (row * b.config_ref().hidden_size * 4) as u64;
    launch_lm_head(b, x, argmax)
}

/// The kernels of one prefill chunk of `m` rows (ids in `ws.tokens`, first position in `ws.pos`).
pub fn prefill(b: &CudaBackend, kv: u64, ctx: usize, m: usize) -> Result<()> {
    let c = b.config_ref();
    let m32 = m as u32;
    let (hidden, inter, hd) = (c.hidden_size as u32, c.intermediate_size as u32, c.head_dim as u32);
    let (q_dim, kv_dim) = ((c.num_attention_heads * c.head_dim) as u32, c.kv_dim() as u32);
    let layer_kv = (c.num_key_value_heads * ctx * c.head_dim * 2) as u64;
    let values = kv + layer_kv * c.num_hidden_layers as u64;
    let (x, xn, qkv, q) = (b.buf("act.x"), b.buf("act.xn"), b.buf("act.qkv"), b.buf("act.q"));
    let (att, att_perm, xn2) = (b.buf("act.att"), b.buf("act.att_perm"), b.buf("act.xn2"));
    let (gate_up, hbuf) = (b.buf("act.gate_up"), b.buf("act.h"));
    let (tokens, pos) = (b.buf("ws.tokens"), b.buf("ws.pos"));
    let g = &b.gpu;

    let (mut a_tok, mut a_tab, mut a_x, mut a_null, mut a_dim) = (tokens, b.w.embed, x, 0u64, hidden);
    // SAFETY: embed_tokens(const uint32_t*, const __half*, float*, float*, uint32_t); ws.tokens holds m ids and
    // act.x m rows; a null ssq_out is skipped.
    unsafe {
        g.launch_raw(
            &g.k.embed,
            (m32, 1, 1),
            256,
            0,
            &mut [arg(&mut a_tok), arg(&mut a_tab), arg(&mut a_x), arg(&mut a_null), arg(&mut a_dim)],
        )?;
    }
    for (l, lw) in b.w.layers.iter().enumerate() {
        let (k_cache, v_cache) = (kv + layer_kv * l as u64, values + layer_kv * l as u64);
        rmsnorm(b, x, lw.input_norm, xn, lw.qkv.perm, hidden, m32)?;
        gemm(b, GemmOut::Store16, &lw.qkv, xn, hidden, qkv, q_dim + 2 * kv_dim, m32)?;
        // Rotary + KV append.
        {
            let (mut a_qkv, mut a_q, mut a_k, mut a_v) = (qkv, q, k_cache, v_cache);
            let (mut a_cos, mut a_sin, mut a_pos) = (b.w.rope_cos, b.w.rope_sin, pos);
            let (mut a_qd, mut a_kvd, mut a_hd, mut a_ctx) = (q_dim, kv_dim, hd, ctx as u32);
            // SAFETY: rope_kv_rows(const __half*, __half*, __half*, __half*, const float*, const float*,
            // const uint32_t*, uint32_t, uint32_t, uint32_t, uint32_t); buffers sized by the plan for m rows.
            unsafe {
                g.launch_raw(
                    &g.k.rope_kv_rows,
                    rope_grid(c, m32),
                    ROPE_THREADS,
                    0,
                    &mut [
                        arg(&mut a_qkv),
                        arg(&mut a_q),
                        arg(&mut a_k),
                        arg(&mut a_v),
                        arg(&mut a_cos),
                        arg(&mut a_sin),
                        arg(&mut a_pos),
                        arg(&mut a_qd),
                        arg(&mut a_kvd),
                        arg(&mut a_hd),
                        arg(&mut a_ctx),
                    ],
                )?;
            }
        }
        let ap = AttnParams {
            q,
            k_cache,
            v_cache,
            out: att,
            pos,
            heads: c.num_attention_heads as u32,
            kv_heads: c.num_key_value_heads as u32,
            head_dim: hd,
            ctx: ctx as u32,
            splits: 1,
            scale_log2: std::f32::consts::LOG2_E / (hd as f32).sqrt(),
            rows: m32,
            ..Default::default()
        };
        attention_prefill(g, &ap)?;
        let o_in = if lw.o.perm != 0 {
            permute(b, att, att_perm, lw.o.perm, q_dim, m32)?;
            att_perm
        } else {
            att
        };
        gemm(b, GemmOut::Residual, &lw.o, o_in, q_dim, x, hidden, m32)?;
        rmsnorm(b, x, lw.post_norm, xn2, lw.gate_up.perm, hidden, m32)?;
        gemm(b, GemmOut::Store16, &lw.gate_up, xn2, hidden, gate_up, 2 * inter, m32)?;
        {
            let (mut a_gu, mut a_h, mut a_perm, mut a_inter) = (gate_up, hbuf, lw.down.perm, inter);
            // SAFETY: swiglu_rows(const __half*, __half*, const uint32_t*, uint32_t); m rows of 2·inter → inter.
            unsafe {
                g.launch_raw(
                    &g.k.swiglu_rows,
                    swiglu_grid(m32, inter),
                    256,
                    0,
                    &mut [arg(&mut a_gu), arg(&mut a_h), arg(&mut a_perm), arg(&mut a_inter)],
                )?;
            }
        }
        gemm(b, GemmOut::Residual, &lw.down, hbuf, inter, x, hidden, m32)?;
    }
    Ok(())
}

/// Threads of a `rope_kv_rows` block: 4 heads (`ROPE_HEADS` in rope.cu) of 64 threads.
pub(super) const ROPE_THREADS: u32 = 256;

/// `rope_kv_rows` grid: one block per row and 4 of its q / k / v heads.
fn rope_grid(c: &engine_format::ModelConfig, m: u32) -> (u32, u32, u32) {
    rope_grid_dims(m, c.num_attention_heads, c.num_key_value_heads)
}

pub(super) fn rope_grid_dims(m: u32, heads: usize, kv_heads: usize) -> (u32, u32, u32) {
    (m, (heads + 2 * kv_heads).div_ceil(4) as u32, 1)
}

/// `swiglu_rows` grid: one thread per 8 output columns.
pub(super) fn swiglu_grid(m: u32, inter: u32) -> (u32, u32, u32) {
    (m, inter.div_ceil(2048), 1)
}

/// Causal attention of a prefill chunk of `p.rows` rows: the tensor-core kernel for head_dim 64 and 128 (every
/// real model), the per-row kernel for the other head sizes (the tiny test models' 8 and 16).
pub(super) fn attention_prefill(g: &Gpu, p: &AttnParams) -> Result<()> {
    let f = match p.head_dim {
        64 => &g.k.attn_prefill_tc64,
        128 => &g.k.attn_prefill_tc128,
        _ => return g.launch_struct(&g.k.attn_prefill, (p.heads, p.rows, 1), 128, 0, p),
    };
    let grid = (p.heads, p.rows.div_ceil(ATTN_TC_ROWS), 1);
    g.launch_struct(f, grid, 128, attn_prefill_tc_smem_bytes(p.head_dim), p)
}

/// What a prefill GEMM does with its result.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GemmOut {
    /// f16 into `y16[row][col]`.
    Store16,
    /// Added into the f32 residual stream `y32[row][col]`.
    Residual,
}

/// The tile of a prefill GEMM, by chunk rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GemmTile {
    /// 64 × 64, 128 threads.
    Rows64,
    /// 128 × 128, 256 threads, two blocks per SM on sm_90 (`gemm128_*`): chunks of at least [`GEMM128_MIN_ROWS`] rows, where
    /// the 64 × 64 tile is bound by its shared-memory traffic and barriers rather than by the tensor cores.
    Rows128,
}

/// Rows from which a prefill GEMM uses the 128 × 128 tile. Below, a 128-row tile would be mostly padding.
const GEMM128_MIN_ROWS: u32 = 128;

impl GemmTile {
    /// `gemm128`: whether to use the 128 × 128 tile ([`super::driver::Gpu::gemm128_prefill`]).
    fn for_rows(m: u32, gemm128: bool) -> GemmTile {
        if m >= GEMM128_MIN_ROWS && gemm128 {
            GemmTile::Rows128
        } else {
            GemmTile::Rows64
        }
    }
    fn rows(self) -> u32 {
        match self {
            GemmTile::Rows64 => 64,
            GemmTile::Rows128 => 128,
        }
    }
    fn slots(self) -> u32 {
        if self == GemmTile::Rows128 {
            128
        } else {
            64
        }
    }
    fn threads(self) -> u32 {
        if self == GemmTile::Rows128 {
            256
        } else {
            128
        }
    }
    fn smem(self) -> u32 {
        match self {
            GemmTile::Rows128 => GEMM128_SMEM_BYTES,
            t => gemm_smem_bytes(t.rows()),
        }
    }
}

/// Launch shape of `gemm_small_int4_*`, the GEMM for chunks of at most 16 rows: each block owns
/// `tiles_per_block` 16-slot tiles (its 8 warps take every 8th) and one of `splits` ranges of K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SmallGemm {
    pub tiles_per_block: u32,
    pub splits: u32,
}

impl SmallGemm {
    pub fn grid(&self, tiles: u32) -> (u32, u32, u32) {
        (tiles.div_ceil(self.tiles_per_block), self.splits, 1)
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
pub(super) fn gemm_small_shape(tiles: u32, steps: u32, m: u32, sm_count: u32) -> Option<SmallGemm> {
    const DRAM_BYTES_PER_US: f64 = 3.0e6; // what the GEMV streams at
    const L2_BYTES_PER_US: f64 = 6.0e6;
    const ROUND_TRIP_US: f64 = 0.5; // one L2 round trip under load
    let m = m.clamp(1, 16) as f64;
    let resident = 2 * sm_count.max(1) as u64;
    let weights = tiles as f64 * steps as f64 * 512.0;
    // The partials are [splits][tiles][16 rows × 16 slots] floats, whatever m: 16 splits fill the workspace.
    let max_splits = plan::GEMM_SPLIT_ROWS as u32 / 16;
    let mut best: Option<(f64, SmallGemm)> = None;
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
                best = Some((us, SmallGemm { tiles_per_block, splits }));
            }
        }
    }
    best.map(|(_, s)| s)
}

/// Launch `f` (a `gemm_small_int4_*` kernel) with `shape`; `p.k_splits` is taken from it.
pub(super) fn launch_gemm_small(
    g: &Gpu,
    f: &cudarc::driver::CudaFunction,
    p: &GemmParams,
    shape: SmallGemm,
) -> Result<()> {
    let steps = p.k_pad / 64;
    let p = GemmParams { k_splits: shape.splits, ..*p };
    g.launch_struct(f, shape.grid(p.n_pad / 16), 256, gemm_small_smem_bytes(steps, shape.splits), &p)
}

/// How many blocks along K the 64-row prefill GEMM over `lin` with `m` rows uses: enough blocks to fill the card a
/// few times over, at least 2 K steps per block, within the split-K workspace.
fn gemm_splits(b: &CudaBackend, lin: &DevLinear, m: u32) -> u32 {
    let base = lin.n_pad.div_ceil(64) * m.div_ceil(64);
    let want = (4 * b.gpu.sm_count).div_ceil(base);
    let by_steps = (lin.k_pad / 64 / 2).max(1);
    let by_space = plan::GEMM_SPLIT_ROWS as u32 / m.max(1);
    want.min(by_steps).min(by_space).max(1)
}

/// Fewest K steps (of 64) a split of the 128 × 128 tile gets: the pipeline's prologue loads 3 steps.
const GEMM128_MIN_SPLIT_STEPS: u32 = 4;
/// What a split-K reduction costs, in K steps of one block (each block writes its 64 KB partial tile, the last one
/// reads them all back from L2): about 2–4; the larger guess keeps the split for when it clearly pays.
const GEMM128_REDUCE_STEPS: u32 = 4;

/// K splits for the 128 × 128 tile over `n_pad` slots, `k_pad` rows of K and `m` rows, on a card holding
/// `resident` such blocks at once (SMs × blocks per SM: 2 on sm_90, where registers and shared memory allow two),
/// with a split-K workspace of `part_floats` partial sums and `counters` tile counters.
///
/// A grid of n_pad/128 × m/128 blocks is small next to the card for narrow projections (o and down of a 7B model:
/// 32 × 4 = 128 blocks at 512 rows, on 132 SMs that hold 264), so such GEMMs split K. The split minimizes
/// waves × (steps per split + the reduction's cost), where a wave is one set of resident blocks: it fills idle SMs,
/// and adds a wave only where shorter blocks more than pay for it (ties go to fewer splits). The workspace holds `GEMM_SPLIT_ROWS` rows of the widest
/// projection, so narrow projections can split 512-row chunks (2 × 512 × 4096 partials fit); wide ones at 512 rows
/// (q/k/v, gate/up: 384 and 688 blocks) already fill the card, and stay unsplit.
fn gemm128_splits(resident: u32, n_pad: u32, k_pad: u32, m: u32, part_floats: usize, counters: usize) -> u32 {
    let base = n_pad.div_ceil(128) * m.div_ceil(128);
    let resident = resident.max(1);
    let steps = k_pad / 64;
    if base == 0 || base as usize > counters {
        return 1;
    }
    let by_steps = (steps / GEMM128_MIN_SPLIT_STEPS).max(1);
    let by_space = (part_floats / (m as usize * n_pad as usize).max(1)).min(u32::MAX as usize) as u32;
    let max = by_steps.min(by_space).max(1);
    let cost = |s: u32| {
        let waves = (base * s).div_ceil(resident);
        waves * (steps.div_ceil(s) + if s > 1 { GEMM128_REDUCE_STEPS } else { 0 })
    };
    (1..=max).min_by_key(|&s| (cost(s), s)).unwrap_or(1)
}

/// `out`(Y[m][ldy]) = A[m][lda] · W over `lin`: chunks of at most 16 rows on `gemm_small_int4_*`, longer ones on
/// the 64-row tiles of `gemm_int4_*`, or from 128 rows its 128 × 128 tiles where the card allows.
#[allow(clippy::too_many_arguments)]
fn gemm(b: &CudaBackend, out: GemmOut, lin: &DevLinear, a: u64, lda: u32, y: u64, ldy: u32, m: u32) -> Result<()> {
    let (y32, y16) = if out == GemmOut::Residual { (y, 0) } else { (0, y) };
    let p = GemmParams {
        qw: lin.qw,
        sz: lin.sz,
        col_map: lin.col_map,
        a,
        y32,
        y16,
        part: b.buf("ws.gemm_partial"),
        counters: b.buf("ws.gemm_counters"),
        m,
        k: lin.k,
        k_pad: lin.k_pad,
        n_pad: lin.n_pad,
        groups: lin.groups,
        group_size: lin.group_size,
        lda,
        ldy,
        k_splits: 1,
    };
    if m <= 16 {
        if let Some(shape) = gemm_small_shape(lin.tiles(), lin.k_pad / 64, m, b.gpu.sm_count) {
            let f = match out {
                GemmOut::Store16 => &b.gpu.k.gemm_small_store16,
                GemmOut::Residual => &b.gpu.k.gemm_small_residual,
            };
            return launch_gemm_small(&b.gpu, f, &p, shape);
        }
    }
    let tile = GemmTile::for_rows(m, b.gpu.gemm128_prefill);
    let k_splits = match tile {
        GemmTile::Rows128 => {
            let size = |name: &str| b.plan.get(name).map_or(0, |p| p.size / 4);
            let (part, counters) = (size("ws.gemm_partial"), size("ws.gemm_counters"));
            let resident = b.gpu.sm_count * b.gpu.gemm128_blocks_per_sm;
            gemm128_splits(resident, lin.n_pad, lin.k_pad, m, part, counters)
        }
        GemmTile::Rows64 => gemm_splits(b, lin, m),
    };
    let k = &b.gpu.k;
    let f = match (out, tile) {
        (GemmOut::Store16, GemmTile::Rows64) => &k.gemm_store16,
        (GemmOut::Residual, GemmTile::Rows64) => &k.gemm_residual,
        (GemmOut::Store16, GemmTile::Rows128) => &k.gemm128_store16,
        (GemmOut::Residual, GemmTile::Rows128) => &k.gemm128_residual,
    };
    let p = GemmParams { k_splits, ..p };
    let grid = (lin.n_pad.div_ceil(tile.slots()), m.div_ceil(tile.rows()), k_splits);
    b.gpu.launch_struct(f, grid, tile.threads(), tile.smem(), &p)
}

fn rmsnorm(b: &CudaBackend, x: u64, w: u64, out: u64, perm: u64, dim: u32, m: u32) -> Result<()> {
    let (mut a_x, mut a_w, mut a_out, mut a_perm, mut a_dim) = (x, w, out, perm, dim);
    let mut a_eps = b.config_ref().rms_norm_eps;
    // SAFETY: rmsnorm_rows(const float*, const __half*, __half*, const uint32_t*, uint32_t, float) over m rows.
    unsafe {
        b.gpu.launch_raw(
            &b.gpu.k.rmsnorm_rows,
            (m, 1, 1),
            256,
            0,
            &mut [arg(&mut a_x), arg(&mut a_w), arg(&mut a_out), arg(&mut a_perm), arg(&mut a_dim), arg(&mut a_eps)],
        )
    }
}

fn permute(b: &CudaBackend, input: u64, out: u64, perm: u64, cols: u32, m: u32) -> Result<()> {
    let (mut a_in, mut a_out, mut a_perm, mut a_cols) = (input, out, perm, cols);
    // SAFETY: permute_cols(const __half*, __half*, const uint32_t*, uint32_t) over m rows of `cols`.
    unsafe {
        b.gpu.launch_raw(
            &b.gpu.k.permute_cols,
            (m, 1, 1),
            256,
            0,
            &mut [arg(&mut a_in), arg(&mut a_out), arg(&mut a_perm), arg(&mut a_cols)],
        )
    }
}

/// A kernel argument: a pointer to the value (the driver copies it at launch).
pub(super) fn arg<T>(v: &mut T) -> *mut std::ffi::c_void {
    v as *mut T as *mut std::ffi::c_void
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split-K workspace of a 7B-shaped model (`GEMM_SPLIT_ROWS` × the widest projection, gate/up's 22016 slots).
    const PART: usize = plan::GEMM_SPLIT_ROWS * 22016;
    const COUNTERS: usize = plan::GEMM_SPLIT_ROWS.div_ceil(64) * 22016usize.div_ceil(64);

    #[test]
    fn gemm128_splits_fill_the_card_only_where_the_grid_is_small() {
        // An H200: 132 SMs × 2 blocks.
        let splits = |n: u32, k: u32, m: u32| gemm128_splits(264, n, k, m, PART, COUNTERS);
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
        assert_eq!(gemm128_splits(264, 4096, 4096, 512, 0, COUNTERS), 1);
        assert_eq!(gemm128_splits(264, 4096, 4096, 512, PART, 0), 1);
        // An A100 (108 SMs × 1 block): o at 512 rows unsplit is 128 blocks, a full wave and one of 20 blocks
        // (2 × 64 steps); two splits make 3 waves of 32 steps (+ the reduction), which the model prefers.
        assert_eq!(gemm128_splits(108, 4096, 4096, 512, PART, COUNTERS), 2);
    }

    #[test]
    fn gemm_tiles_by_rows() {
        // (Chunks of at most 16 rows take gemm_small first; the 64-row tile is its fallback.)
        assert_eq!(GemmTile::for_rows(1, true), GemmTile::Rows64);
        assert_eq!(GemmTile::for_rows(17, true), GemmTile::Rows64);
        assert_eq!(GemmTile::for_rows(127, true), GemmTile::Rows64);
        assert_eq!(GemmTile::for_rows(128, true), GemmTile::Rows128);
        assert_eq!(GemmTile::for_rows(512, true), GemmTile::Rows128);
        assert_eq!(GemmTile::for_rows(512, false), GemmTile::Rows64);
        assert_eq!(GemmTile::Rows128.smem(), GEMM128_SMEM_BYTES);
        assert_eq!(GemmTile::Rows64.smem(), gemm_smem_bytes(64));
    }
}

//! The launch sequences: one decode step (captured into a graph), one prefill chunk, and the lm_head of a row.
//! Read top to bottom, each follows the forward pass of the CPU backend, with the fusions noted where they happen.

use engine_format::plan;

use super::driver::Gpu;
use super::params::{
    attn_prefill_tc_smem_bytes, gemm_smem_bytes, AttnParams, GemmParams, GemvParams, LmHeadParams, ATTN_TC_ROWS,
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

fn gemv_smem(lin: &DevLinear) -> u32 {
    lin.k_pad * 2 + (8 * 16 + 8) * 4
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
    let (grid, _) = gemv_grid_for(b, lin);
    b.gpu.launch_struct(f, (grid, 1, 1), GEMV_THREADS, gemv_smem(lin), p)
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
        launch_gemv(b, &b.gpu.k.gemv_residual, &lw.o, &p)?;
        mark("gemv o_proj + residual", linear_bytes(&lw.o))?;
        // gate/up with the post-attention norm fused in front and SwiGLU behind.
        let p =
            GemvParams { x, norm_w: lw.post_norm, ssq, n_ssq: hidden_tiles, out16: h, ..gemv_params(b, &lw.gate_up) };
        launch_gemv(b, &b.gpu.k.gemv_gate_up, &lw.gate_up, &p)?;
        mark("gemv gate/up + norm + swiglu", linear_bytes(&lw.gate_up))?;
        // down_proj, added to the residual stream.
        let p = GemvParams { x16: h, y: x, ssq_out: ssq, ..gemv_params(b, &lw.down) };
        launch_gemv(b, &b.gpu.k.gemv_residual, &lw.down, &p)?;
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

/// Rows per tile: 16 for chunks of at most 16 rows (a 64-row tile would spend most of its MMAs on padding), else 64.
fn gemm_rows(m: u32) -> u32 {
    if m <= 16 {
        16
    } else {
        64
    }
}

/// How many blocks along K a prefill GEMM over `lin` with `m` rows uses: enough blocks to fill the card a few
/// times over, at least 2 K steps per block, within the split-K workspace. (8 blocks per SM instead of 4 for
/// 16-row chunks measured the same: 6.3 vs 6.1 ms GPU time for a 16-token prompt on an H200.)
fn gemm_splits(b: &CudaBackend, lin: &DevLinear, m: u32) -> u32 {
    let base = lin.n_pad.div_ceil(64) * m.div_ceil(gemm_rows(m));
    let want = (4 * b.gpu.sm_count).div_ceil(base);
    let by_steps = (lin.k_pad / 64 / 2).max(1);
    let by_space = plan::GEMM_SPLIT_ROWS as u32 / m.max(1);
    want.min(by_steps).min(by_space).max(1)
}

#[allow(clippy::too_many_arguments)]
fn gemm(b: &CudaBackend, out: GemmOut, lin: &DevLinear, a: u64, lda: u32, y: u64, ldy: u32, m: u32) -> Result<()> {
    let k_splits = gemm_splits(b, lin, m);
    let bm = gemm_rows(m);
    let f = match (out, bm) {
        (GemmOut::Store16, 16) => &b.gpu.k.gemm16_store16,
        (GemmOut::Residual, 16) => &b.gpu.k.gemm16_residual,
        (GemmOut::Store16, _) => &b.gpu.k.gemm_store16,
        (GemmOut::Residual, _) => &b.gpu.k.gemm_residual,
    };
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
        k_splits,
    };
    b.gpu.launch_struct(f, (lin.n_pad.div_ceil(64), m.div_ceil(bm), k_splits), 128, gemm_smem_bytes(bm), &p)
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

//! The launch sequences: one decode step (captured into a graph), one prefill chunk, and the lm_head of a row.
//! Read top to bottom, each follows the CPU backend's forward pass, with the fusions noted where they happen.
//!
//! Every device address a launch gets comes from the resolved memory plan ([`Activations`], [`Workspace`],
//! [`DeviceWeights`], [`KvCacheMem`]), whose buffers the plan sized for its limits: `prefill_chunk` rows, the
//! cache's positions and the vocabulary. That is the invariant each launch's safety rests on; `prefill` checks the
//! ids, rows and positions it is given against it, and `decode`, whose token and position live on the device (a
//! captured graph advances them itself), states it as its contract.

use engine_format::plan::{self, WorkspaceBuffers};
use engine_format::ModelConfig;
use half::f16;

use super::buffers::{Activations, KvCacheMem, Workspace};
use super::driver::{DevPtr, DeviceBuffer, Kernel, KernelParams, Launch};
use super::kernels::{
    AttnParams, DecodeAdvanceParams, Device, EmbedParams, GemmParams, GemmRopeParams, GemvKernel, GemvParams, Gemvs,
    LmHeadParams, PermuteKParams, PermuteParams, RmsNormParams, RopeParams, SampleParams, ScoreParams, SwigluParams,
};
use super::layout::{self, TileFormat};
use super::shapes::{self, GemmTile, InputOrder, GEMV_THREADS};
use super::staging::TOKEN_RING;
use super::tuning::{Tuning, WgmmaTile};
use super::weights::{DevLinear, DeviceWeights};
use crate::error::{Error, Result};

/// Bytes per bulk L2 prefetch of the next GEMV's weights (`Tuning::gemv_prefetch_mb`): small enough that a
/// projection's share spreads over many blocks, large enough that the instructions are few.
const PREFETCH_CHUNK: u32 = 16 << 10;

/// What a launch reads from memory, for the profiler: a fixed number of bytes, or the KV cache of one layer over
/// the positions attended to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reads {
    Bytes(u64),
    LayerKv,
}

/// Called after each launch of a decode step with the kernel's label and what it reads (the profiler records an
/// event there; graph capture and ordinary runs pass [`no_observer`]).
pub(crate) type Observe<'o> = &'o mut dyn FnMut(&'static str, Reads) -> Result<()>;

/// The observer that does nothing.
pub(crate) fn no_observer(_: &'static str, _: Reads) -> Result<()> {
    Ok(())
}

/// Everything a launch sequence reads: the device, the tuning, the model's shape and the resolved plan.
pub(crate) struct Step<'a> {
    pub gpu: &'a Device,
    pub tuning: &'a Tuning,
    pub config: &'a ModelConfig,
    pub weights: &'a DeviceWeights,
    pub act: &'a Activations,
    pub ws: &'a Workspace,
    /// The workspace allocation and the plan's view of it (host copies of ids and positions; the split-K choices
    /// depend on its sizes).
    pub ws_mem: &'a DeviceBuffer,
    pub ws_plan: &'a WorkspaceBuffers,
    /// Rows the activation buffers hold (the plan's prefill chunk).
    pub chunk: usize,
    /// The host's mapped token ring (`TokenRing::device_words`), where `decode_advance` writes each token.
    pub host_ring: DevPtr<u32>,
}

/// How a decode step ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepEnd {
    /// With the logits in `ws.logits`, for the host.
    Logits,
    /// With the argmax of the raw logits (fused into lm_head) as the next token: greedy decoding without a penalty.
    Argmax,
    /// With the sampler's token (settings in `ws.sampler`, the penalty's set in `ws.seen`) as the next token.
    Sample,
}

/// What a captured decode step is specialized for: how it ends, and how many blocks per head its attention
/// launches. The step's kernels read the token and position from the device, so one graph serves every position
/// whose attention wants that split count ([`AttnSplits::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeKind {
    pub end: StepEnd,
    pub attn_splits: u32,
}

/// The decode attention's split counts: `short` blocks per head while the context is at most `short ×
/// ATTN_MIN_PER_SPLIT` positions (0: never), `full` beyond ([`Step::attn_splits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttnSplits {
    pub short: u32,
    pub full: u32,
}

impl AttnSplits {
    /// The decode step for position `pos` that ends as `end`.
    pub fn kind(self, pos: usize, end: StepEnd) -> DecodeKind {
        let fits_short = (pos as u64) < self.short as u64 * shapes::ATTN_MIN_PER_SPLIT as u64;
        DecodeKind { end, attn_splits: if fits_short { self.short } else { self.full } }
    }
}

/// The kernel a GEMM launch runs: one that takes [`GemmParams`], or the short tile's q/k/v kernel with the rotary
/// epilogue, whose parameter block adds the rotary fields.
enum GemmKernel<'k> {
    Plain(&'k Kernel<GemmParams>),
    QkvRope(&'k Kernel<GemmRopeParams>, RopeParams),
}

/// Where a prefill GEMM puts its result.
#[derive(Clone, Copy)]
enum GemmOut {
    /// f16 into `y[row][col]`.
    Store16(DevPtr<f16>),
    /// Added into the f32 residual stream `y[row][col]`.
    Residual(DevPtr<f32>),
    /// SwiGLU of a paired gate/up (its gate column `i` and up column `i` side by side in each tile), f16 into the
    /// down projection's input `y[row][i]` in the order the down projection's tile reads: the short-chunk tiles'
    /// only (the wgmma short tile writes the K order, the GEMV-shaped one its fragment order).
    SwiGlu(DevPtr<f16>),
    /// q/k/v (`ColumnOrder::QkvRope`) followed by what `rope_kv_rows` does with these parameters (its `qkv` unused):
    /// the rotated q rows into `q_out`, k and v into the layer's caches at the chunk's positions. The short-chunk
    /// tiles' only.
    QkvRope(RopeParams),
}

/// What the lm_head projects.
#[derive(Clone, Copy)]
enum HeadInput {
    /// A row of the f32 residual stream, normalized in the kernel (prefill).
    Row(DevPtr<f32>),
    /// The decode step's half input in `ws.x_half` (the final norm's weight folded in, see [`Step::head_input`])
    /// and the `n_ssq` partial sums of squares in `ws.ssq` that its writer left.
    Half { n_ssq: u32 },
}

/// A prefill GEMM's input rows as the kernel that produced them wrote them.
#[derive(Clone, Copy)]
struct GemmInput {
    a: DevPtr<f16>,
    /// Elements between two rows.
    lda: u32,
    /// Elements between the copies of two act-order parts (with one copy, unused).
    part_stride: u32,
    /// The order the rows are in. A tile that reads another order has its input rearranged before it runs.
    order: InputOrder,
}

/// How a prefill GEMM over a linear is launched.
enum GemmLaunches {
    /// One launch over every part of the linear.
    Whole(GemmTile),
    /// A launch per act-order part (each a linear of its own: one input copy, one row order), in part order.
    PerPart(Vec<(DevLinear, GemmTile)>),
}

impl GemmInput {
    /// Rows in order.
    fn rows(a: DevPtr<f16>, lda: u32, part_stride: u32) -> GemmInput {
        GemmInput { a, lda, part_stride, order: InputOrder::Rows }
    }
    /// Part `i`'s copy alone.
    fn part(self, i: usize) -> GemmInput {
        GemmInput { a: self.a.add(i * self.part_stride as usize), part_stride: 0, ..self }
    }
}

impl Step<'_> {
    /// How many blocks per head the decode attention runs with at each position: `Tuning::attn_splits` (capped by
    /// the plan), or `Tuning::attn_short_splits` while the context fits that many splits of
    /// [`shapes::ATTN_MIN_PER_SPLIT`] positions — there the larger count's extra splits would have no positions, so
    /// both run the same splits over the same positions and the short one launches no idle blocks (the same bits
    /// where both counts take the same kernel: on sm_90 the cluster kernel, up to 16 splits).
    pub fn attn_splits(&self) -> AttnSplits {
        let full = self.tuning.attn_splits.min(plan::attention_splits(self.config) as u32);
        AttnSplits { full, short: self.tuning.attn_short_splits.min(full) }
    }

    /// One decode step for the token in `ws.tokens[0]` at the position in `ws.pos`, over the KV cache `kv`. With
    /// `StepEnd::Argmax` or `StepEnd::Sample` the step ends by writing the next token back into `ws.tokens[0]` and
    /// the token ring and advancing `ws.pos`, so that the captured graph can be replayed step after step; with
    /// `StepEnd::Logits` it ends with the logits in `ws.logits`. Its attention runs `kind.attn_splits` blocks per
    /// head.
    ///
    /// # Safety
    /// Whenever these launches run (now, or as a captured graph's replay), `ws.tokens[0]` holds an id below the
    /// vocabulary size, `ws.pos` a position below `kv.positions()`, and `kv` is alive: the kernels index the
    /// embedding table and the cache by them ([`Step::upload`] puts checked values there).
    pub unsafe fn decode(&self, kv: &KvCacheMem, kind: DecodeKind, observe: Observe) -> Result<()> {
        let end = kind.end;
        let c = self.config;
        let (hidden, hd) = (c.hidden_size as u32, c.head_dim as u32);
        let (q_dim, kv_dim) = ((c.num_attention_heads * c.head_dim) as u32, c.kv_dim() as u32);
        let (k, w, act, ws) = (&self.gpu.k, self.weights, self.act, self.ws);
        let g = self.gemvs();
        let ctx = kv.positions() as u32;
        let hidden_tiles = (plan::slots_identity(c.hidden_size) / plan::TILE_N) as u32;

        // Embedding, with the sum of squares the first layer's fused norm needs and its input (the half input, or
        // with act-order the first q/k/v's input in its sorted row order; with no layers, the lm_head's).
        let first =
            w.layers.first().map(|lw| self.next_input(&lw.qkv, lw.input_norm)).unwrap_or_else(|| self.head_input());
        let p = EmbedParams {
            tokens: ws.tokens,
            table: w.embed,
            x: act.x,
            ssq_out: ws.ssq,
            x_sorted: first.y_sorted,
            idx: first.out_idx,
            norm_w: first.out_norm_w,
            x16: first.out16,
            dim: hidden,
            parts: first.out_parts,
            stride: first.out_stride,
        };
        // Sliced over several blocks (the act-order scatter is scalar), each leaving a partial sum of squares.
        let embed_slices = hidden_tiles.min(shapes::EMBED_SLICES);
        self.run(&k.embed, shapes::embed_decode(embed_slices), &p)?;
        // How many partial sums of squares the residual writer in front of layer l (l = layers: the lm_head) left:
        // the embedding's slices in front of the first, one per column tile of a residual GEMV after that.
        let ssq_partials_before = |l: usize| if l == 0 { embed_slices } else { hidden_tiles };
        observe("embed", Reads::Bytes(hidden as u64 * 2))?;
        for (l, lw) in w.layers.iter().enumerate() {
            let (k_cache, v_cache) = (kv.keys[l], kv.values[l]);
            // Attention over positions 0..=pos, split over the sequence (its output in o_proj's row order).
            let attn = AttnParams {
                q: act.q,
                k_cache,
                v_cache,
                out: act.att,
                part_o: ws.attn_partial_o,
                part_ml: ws.attn_partial_ml,
                counters: ws.attn_counters,
                pos: ws.pos,
                out_idx: lw.o.inv,
                heads: c.num_attention_heads as u32,
                kv_heads: c.num_key_value_heads as u32,
                head_dim: hd,
                ctx,
                splits: kind.attn_splits,
                scale_log2: std::f32::consts::LOG2_E / (hd as f32).sqrt(),
                rows: 1,
                order: 0,
            };
            // q/k/v with the input norm fused in front and rotary + KV append fused behind.
            let p = GemvParams {
                ssq: ws.ssq,
                n_ssq: ssq_partials_before(l),
                out16: act.q,
                k_cache,
                v_cache,
                rope_cos: w.rope_cos,
                rope_sin: w.rope_sin,
                pos: ws.pos,
                ctx,
                head_dim: hd,
                q_dim,
                kv_dim,
                ..self.norm_input(&lw.qkv)
            };
            let p = self.prefetch_of(Some(&lw.o), p);
            let qkv = if lw.qkv.inv.is_null() { g.qkv } else { g.qkv_sorted };
            self.gemv(qkv, &lw.qkv, GEMV_THREADS / 32, p)?;
            observe("gemv q/k/v + norm + rope + kv append", Reads::Bytes(lw.qkv.bytes()))?;
            if self.tuning.attn_cluster && attn.splits <= self.gpu.attn_cluster_max {
                self.run(&k.attn_decode_cluster, shapes::attn_decode_cluster(attn.heads, attn.splits), &attn)?;
            } else {
                self.run(&k.attn_decode, shapes::attn_decode(attn.heads, attn.splits), &attn)?;
            }
            observe("attention (split-K decode)", Reads::LayerKv)?;
            // o_proj, added to the residual stream, leaving the sums of squares for the next norm and gate/up's input.
            let next = self.prefetch_of(Some(&lw.gate_up), self.next_input(&lw.gate_up, lw.post_norm));
            self.residual_gemv(&lw.o, act.att, next)?;
            observe("gemv o_proj + residual", Reads::Bytes(lw.o.bytes()))?;
            // gate/up with the post-attention norm fused in front and SwiGLU behind (its output in down_proj's
            // row order).
            let p = GemvParams {
                ssq: ws.ssq,
                n_ssq: hidden_tiles,
                out16: act.h,
                out_idx: lw.down.inv,
                ..self.norm_input(&lw.gate_up)
            };
            let p = self.prefetch_of(Some(&lw.down), p);
            // Act-order lays gate and up out in tiles of their own (each has its row order): the split kernel, whose
            // unit of work is a gate tile and its up tile.
            if lw.gate_up.parts() > 1 {
                let pairs = lw.gate_up.part_slots[0] / plan::TILE_N as u32;
                self.gemv_units(g.gate_up_split, &lw.gate_up, pairs, GEMV_THREADS / 32, p)?;
            } else {
                self.gemv(g.gate_up, &lw.gate_up, GEMV_THREADS / 32, p)?;
            }
            observe("gemv gate/up + norm + swiglu", Reads::Bytes(lw.gate_up.bytes()))?;
            // down_proj, added to the residual stream (and the next q/k/v's input).
            let next =
                w.layers.get(l + 1).map(|n| self.next_input(&n.qkv, n.input_norm)).unwrap_or_else(|| self.head_input());
            let next = self.prefetch_of(w.layers.get(l + 1).map(|n| &n.qkv), next);
            self.residual_gemv(&lw.down, act.h, next)?;
            observe("gemv down_proj + residual", Reads::Bytes(lw.down.bytes()))?;
        }
        // The lm_head reads the half input the last residual update (or the embedding) wrote, with its sums of squares.
        self.lm_head_of(HeadInput::Half { n_ssq: ssq_partials_before(w.layers.len()) }, end == StepEnd::Argmax)?;
        observe("lm_head + norm + argmax", Reads::Bytes(self.head_bytes(end)))?;
        if end == StepEnd::Sample {
            self.sample(1)?;
            observe("sample", Reads::Bytes((c.vocab_size * 4) as u64))?;
        }
        if end != StepEnd::Logits {
            let p = DecodeAdvanceParams {
                pos: ws.pos,
                token: ws.tokens,
                host_ring: self.host_ring,
                ring_len: TOKEN_RING as u32,
            };
            self.run(&k.decode_advance, shapes::single_thread(), &p)?;
            observe("decode_advance", Reads::Bytes(0))?;
        }
        Ok(())
    }

    /// Put `tokens` (at most the plan's chunk, every id inside the vocabulary) and the position `start` of the
    /// first where the kernels read them (`ws.tokens`, `ws.pos`).
    pub fn upload(&self, start: usize, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        if tokens.is_empty() || tokens.len() > self.chunk || tokens.iter().any(|&t| t as usize >= vocab) {
            return Err(Error::InvalidArgument(format!(
                "{} ids for the device: at most {} (the prefill chunk), each below {vocab}",
                tokens.len(),
                self.chunk
            )));
        }
        let pos = u32::try_from(start).map_err(|_| Error::InvalidArgument(format!("position {start}")))?;
        self.gpu.upload(self.ws_mem, self.ws_plan.tokens, tokens)?;
        self.gpu.upload(self.ws_mem, self.ws_plan.pos, &[pos])
    }

    /// One prefill chunk of `tokens` at positions `start..start + tokens.len()` over the KV cache `kv`; leaves the
    /// rows' residual stream in `act.x`.
    pub fn prefill(&self, kv: &KvCacheMem, start: usize, tokens: &[u32]) -> Result<()> {
        let m = tokens.len();
        if start + m > kv.positions() {
            return Err(Error::InvalidArgument(format!(
                "prefill of {m} rows at {start}: the cache holds {} positions",
                kv.positions()
            )));
        }
        self.upload(start, tokens)?;
        let c = self.config;
        let m32 = m as u32;
        let (hidden, inter, hd) = (c.hidden_size as u32, c.intermediate_size as u32, c.head_dim as u32);
        let (q_dim, kv_dim) = ((c.num_attention_heads * c.head_dim) as u32, c.kv_dim() as u32);
        let (k, w, act, ws) = (&self.gpu.k, self.weights, self.act, self.ws);

        let p = EmbedParams { tokens: ws.tokens, table: w.embed, x: act.x, dim: hidden, ..Default::default() };
        self.run(&k.embed, shapes::per_row(m32), &p)?;
        for (l, lw) in w.layers.iter().enumerate() {
            let (k_cache, v_cache) = (kv.keys[l], kv.values[l]);
            // Attention block: x += o_proj(attention(rope(W_pack(rmsnorm(x))))).
            let xn = self.rmsnorm(act.x, lw.input_norm, act.xn, Some(&lw.qkv), m32)?;
            let rope = RopeParams {
                qkv: act.qkv,
                q_out: act.q,
                k_cache,
                v_cache,
                rope_cos: w.rope_cos,
                rope_sin: w.rope_sin,
                pos0: ws.pos,
                q_dim,
                kv_dim,
                head_dim: hd,
                ctx: kv.positions() as u32,
            };
            if self.rope_in_qkv(&lw.qkv, m32) {
                // The short tile rotates q and k and appends k and v in its epilogue.
                self.gemm(&lw.qkv, xn, GemmOut::QkvRope(rope), q_dim, m32)?;
            } else {
                self.gemm(&lw.qkv, xn, GemmOut::Store16(act.qkv), q_dim + 2 * kv_dim, m32)?;
                let launch = shapes::rope(m32, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
                self.run(&k.rope_kv_rows, launch, &rope)?;
            }
            // The attention output as o_proj reads it: in its tile's order (the K order or the 16-row fragments)
            // where the kernel can write that (a head is whole K steps; no padding columns), else in order,
            // permuted for act-order (or rearranged by the GEMM for its tile).
            let (which, _) = shapes::attn_prefill(hd, c.num_attention_heads as u32, m32);
            let att_order = self
                .order_for(&lw.o, m32)
                .filter(|_| lw.o.perm.is_null() && which != shapes::AttnPrefill::PerRow && lw.o.k_pad == q_dim)
                .unwrap_or(InputOrder::Rows);
            self.attention_prefill(&AttnParams {
                q: act.q,
                k_cache,
                v_cache,
                out: act.att,
                pos: ws.pos,
                heads: c.num_attention_heads as u32,
                kv_heads: c.num_key_value_heads as u32,
                head_dim: hd,
                ctx: kv.positions() as u32,
                splits: 1,
                scale_log2: std::f32::consts::LOG2_E / (hd as f32).sqrt(),
                rows: m32,
                order: att_order as u32,
                ..Default::default()
            })?;
            let o_in = if att_order != InputOrder::Rows {
                GemmInput { a: act.att, lda: q_dim, part_stride: 0, order: att_order }
            } else if lw.o.perm.is_null() {
                GemmInput::rows(act.att, q_dim, 0)
            } else {
                // With act-order, o_proj wants its input columns in its weights' sorted row order.
                let p = PermuteParams { input: act.att, out: act.att_perm, perm: lw.o.perm, cols: q_dim };
                self.run(&k.permute_cols, shapes::permute(m32), &p)?;
                GemmInput::rows(act.att_perm, q_dim, 0)
            };
            self.gemm(&lw.o, o_in, GemmOut::Residual(act.x), hidden, m32)?;

            // Feed-forward block: x += down(silu(gate(h)) * up(h)), h = rmsnorm(x).
            let xn2 = self.rmsnorm(act.x, lw.post_norm, act.xn2, Some(&lw.gate_up), m32)?;
            let h = if self.swiglu_in_gate_up(&lw.gate_up, &lw.down, m32) {
                // Into `act.h`: the GEMM still reads its input from `act.gemm_in`.
                let ld = lw.down.k_pad;
                self.gemm(&lw.gate_up, xn2, GemmOut::SwiGlu(act.h), ld, m32)?;
                let order = self.order_for(&lw.down, m32).unwrap_or(InputOrder::Rows);
                GemmInput { a: act.h, lda: ld, part_stride: 0, order }
            } else {
                self.gemm(&lw.gate_up, xn2, GemmOut::Store16(act.gate_up), 2 * inter, m32)?;
                self.swiglu(&lw.down, m32)?
            };
            self.gemm(&lw.down, h, GemmOut::Residual(act.x), hidden, m32)?;
        }
        Ok(())
    }

    /// The lm_head of prefill row `row` (its residual stream is in `act.x`) into `ws.logits`; with `argmax`, the
    /// greedy token into `ws.tokens[0]`.
    pub fn lm_head(&self, row: usize, argmax: bool) -> Result<()> {
        if row >= self.chunk {
            return Err(Error::InvalidArgument(format!("lm_head of row {row}: the plan holds {} rows", self.chunk)));
        }
        self.lm_head_of(HeadInput::Row(self.act.x.add(row * self.config.hidden_size)), argmax)
    }

    /// The negative log-likelihood of each of the `m` prefilled rows' next token (the ids in `ws.score_targets`;
    /// ids outside the vocabulary are skipped) into `ws.score_nll`: the final norm into `act.xn`, the head as one
    /// tensor-core GEMM reduced to per-tile partials, then a merge per row.
    pub fn score(&self, m: usize) -> Result<()> {
        if m == 0 || m > self.chunk {
            return Err(Error::InvalidArgument(format!("scoring {m} rows: the plan holds {} rows", self.chunk)));
        }
        let (c, w, ws, k) = (self.config, self.weights, self.ws, &self.gpu.k);
        let m32 = m as u32;
        self.rmsnorm(self.act.x, w.norm, self.act.xn, None, m32)?;
        let vocab = c.vocab_size as u32;
        let p = ScoreParams {
            a: self.act.xn,
            w: w.lm_head,
            targets: ws.score_targets,
            part: ws.score_part,
            target_logit: ws.score_target_logit,
            nll: ws.score_nll,
            m: m32,
            k: c.hidden_size as u32,
            lda: c.hidden_size as u32,
            vocab,
            n_tiles: vocab.div_ceil(shapes::SCORE_TILE),
        };
        self.run(&k.score_tile, shapes::score_tile(vocab, m32), &p)?;
        self.run(&k.score_reduce, shapes::score_reduce(m32), &p)
    }

    /// The sampler over `ws.logits` (the row at `ws.pos + pos_offset − 1`): the token at position
    /// `ws.pos + pos_offset` into `ws.tokens[0]`, after marking the token in `ws.tokens[0]` as seen.
    pub fn sample(&self, pos_offset: u32) -> Result<()> {
        let ws = self.ws;
        let p = SampleParams {
            logits: ws.logits,
            config: ws.sampler,
            seen: ws.seen,
            token: ws.tokens,
            pos: ws.pos,
            vocab: self.config.vocab_size as u32,
            pos_offset,
        };
        self.run(&self.gpu.k.sample, shapes::sample(), &p)
    }

    /// Bytes the decode step's head streams: with the greedy screen the int8 copy and its scales (the few fp16
    /// rows it leaves to compute are not counted: their number depends on the logits), else the fp16 head.
    pub fn head_bytes(&self, end: StepEnd) -> u64 {
        match self.weights.lm_head_screen {
            Some(screen) if end == StepEnd::Argmax => screen.bytes,
            _ => self.config.vocab_size as u64 * self.config.hidden_size as u64 * 2,
        }
    }

    fn lm_head_of(&self, input: HeadInput, argmax: bool) -> Result<()> {
        let (c, ws, w) = (self.config, self.ws, self.weights);
        let (x, x16, n_ssq) = match input {
            HeadInput::Row(x) => (x, DevPtr::NULL, 0),
            HeadInput::Half { n_ssq } => (DevPtr::NULL, ws.x_half, n_ssq),
        };
        let screen = w.lm_head_screen.filter(|_| argmax);
        let p = LmHeadParams {
            w: w.lm_head,
            x,
            norm_w: w.norm,
            x16,
            ssq: ws.ssq,
            logits: ws.logits,
            part_val: ws.argmax_val,
            part_idx: ws.argmax_idx,
            counter: ws.argmax_counter,
            token_out: if argmax { ws.tokens } else { DevPtr::NULL },
            screen_q: screen.map_or(DevPtr::NULL, |s| s.q),
            screen_scales: screen.map_or(DevPtr::NULL, |s| s.scales),
            screen_hi: ws.screen_hi,
            screen_max: ws.screen_max,
            vocab: c.vocab_size as u32,
            k: c.hidden_size as u32,
            rows_per_block: shapes::lm_head_rows(self.tuning),
            n_ssq,
            eps: c.rms_norm_eps,
        };
        if screen.is_none() {
            return self.run(&self.gpu.k.lm_head, shapes::lm_head(p.vocab, p.k, p.rows_per_block), &p);
        }
        // Greedy: the int8 screen bounds every row, then the rows it leaves are computed from the fp16 head as
        // lm_head_f16 would (the same token; lm_head.cu says why it is).
        self.run(&self.gpu.k.lm_head_screen, shapes::lm_head_screen(p.vocab, p.k, p.rows_per_block), &p)?;
        self.run(&self.gpu.k.lm_head_exact, shapes::lm_head_exact(p.vocab, p.k), &p)
    }

    /// A GEMV over `lin` with `warps` warps per block: `p` says what comes in and goes out, the linear's fields
    /// are filled in here.
    fn gemv(&self, kernel: GemvKernel<'_>, lin: &DevLinear, warps: u32, p: GemvParams) -> Result<()> {
        self.gemv_units(kernel, lin, lin.tiles(), warps, p)
    }

    /// [`Step::gemv`] over `units` units of work (a kernel's tiles, or pairs of them), with the kernel instance
    /// of the linear's weight format (and scales: see [`GemvKernel::for_linear`]).
    fn gemv_units(&self, kernel: GemvKernel<'_>, lin: &DevLinear, units: u32, warps: u32, p: GemvParams) -> Result<()> {
        let limits = &self.gpu.limits;
        let stream = (lin.format, self.gpu.gemv_stream(self.tuning));
        let (launch, tiles_per_block) = shapes::gemv(units, lin.k_pad, warps, lin.parts(), stream, limits, self.tuning);
        let (kernel, scales) = kernel.for_linear(lin.format, lin.scales);
        let p = GemvParams {
            qw: lin.qw,
            sz: lin.sz,
            scales,
            col_map: lin.col_map,
            k: lin.k,
            k_pad: lin.k_pad,
            n_pad: lin.n_pad,
            groups: lin.groups,
            group_size: lin.group_size,
            chunk_shift: lin.chunk_shift,
            part_slot1: lin.part_slots[0],
            part_slot2: lin.part_slots[1],
            tiles_per_block,
            eps: self.config.rms_norm_eps,
            ..p
        };
        self.run(kernel, launch, &p)
    }

    /// `x += x16 · W` over `lin` (o_proj, down_proj), leaving the new sums of squares in `ws.ssq` and what `next`
    /// (from [`Step::next_input`]) asks for: the next projection's input (act-order copies, or the half input).
    fn residual_gemv(&self, lin: &DevLinear, x16: DevPtr<f16>, next: GemvParams) -> Result<()> {
        let warps = shapes::residual_gemv_warps(lin.tiles(), &self.gpu.limits, self.tuning);
        let g = self.gemvs();
        let kernel = match (warps == shapes::GEMV_WIDE_WARPS, next.out_parts > 0) {
            (false, false) => g.residual,
            (true, false) => g.residual_wide,
            (false, true) => g.residual_sorted,
            (true, true) => g.residual_wide_sorted,
        };
        let p = GemvParams { x16, y: self.act.x, ssq_out: self.ws.ssq, ..next };
        self.gemv(kernel, lin, warps, p)
    }

    /// The decode GEMV kernels the tuning picks (on the weight ring or not).
    fn gemvs(&self) -> Gemvs<'_> {
        self.gpu.k.gemvs(self.gpu.gemv_stream(self.tuning))
    }

    /// `p` with the fields by which a decode GEMV asks the L2 for the first `Tuning::gemv_prefetch_mb` MB of
    /// `next`'s weights (the GEMV that follows it in the step), in chunks its blocks share. None where that is 0, or
    /// `next` is the split gate/up (its first blocks' tiles are not its first bytes).
    fn prefetch_of(&self, next: Option<&DevLinear>, p: GemvParams) -> GemvParams {
        let Some(next) = next.filter(|n| n.parts() == 1 && self.tuning.gemv_prefetch_mb > 0) else {
            return p;
        };
        let words = next.tiles() as u64 * next.words_per_tile() as u64;
        let bytes = (self.tuning.gemv_prefetch_mb as u64) << 20;
        let chunks = bytes.min(words * 16) / PREFETCH_CHUNK as u64;
        GemvParams { next_qw: next.qw, next_chunks: chunks as u32, next_chunk_bytes: PREFETCH_CHUNK, ..p }
    }

    /// The fields by which the kernel that updates the residual stream writes `next`'s input: with act-order a copy
    /// per part in `ws.x_sorted`, in that part's row order, times `norm` (the norm in front of `next`); without, the
    /// half input in `ws.x_half` (`HALF_INPUT_SCALE` in ptx/kernels/tiles.cuh).
    fn next_input(&self, next: &DevLinear, norm: DevPtr<f16>) -> GemvParams {
        if next.inv.is_null() {
            // `next`'s half input, which Step::norm_input's GEMV reads.
            return GemvParams { out16: self.ws.x_half, out_norm_w: norm, ..Default::default() };
        }
        GemvParams {
            out_idx: next.inv,
            y_sorted: self.ws.x_sorted,
            out_norm_w: norm,
            out_parts: next.parts(),
            out_stride: next.k_pad,
            ..Default::default()
        }
    }

    /// The fields by which the last kernel that updates the residual stream writes the lm_head's half input (the
    /// final norm's weight folded in), which [`HeadInput::Half`] reads.
    fn head_input(&self) -> GemvParams {
        GemvParams { out16: self.ws.x_half, out_norm_w: self.weights.norm, ..Default::default() }
    }

    /// The input fields of a GEMV with a norm fused in front of `lin`: the half input, or with act-order the sorted
    /// copies, that [`Step::next_input`] had the kernel before write (the norm's weight folded into both).
    fn norm_input(&self, lin: &DevLinear) -> GemvParams {
        if lin.inv.is_null() {
            GemvParams { x16: self.ws.x_half, ..Default::default() }
        } else {
            GemvParams { x: self.ws.x_sorted, ..Default::default() }
        }
    }

    /// The norm of `m` rows as `next`, the projection it feeds, wants them: one copy per fused part with act-order
    /// (in that part's row order), else (or with no projection) one in order; into `act.gemm_in` in the order its
    /// tile reads where that is not rows in order, else into `out` ([`Step::part_stride`] apart).
    fn rmsnorm(
        &self,
        x: DevPtr<f32>,
        w: DevPtr<f16>,
        out: DevPtr<f16>,
        next: Option<&DevLinear>,
        m: u32,
    ) -> Result<GemmInput> {
        let c = self.config;
        let dim = c.hidden_size as u32;
        let perm = next.map_or(DevPtr::NULL, |lin| lin.perm);
        let ordered = next.and_then(|lin| Some((lin, self.order_for(lin, m)?)));
        let written = match ordered.filter(|(_, order)| *order != InputOrder::Rows) {
            Some((lin, order)) => GemmInput { a: self.act.gemm_in, lda: lin.k_pad, part_stride: m * lin.k_pad, order },
            None => GemmInput::rows(out, dim, self.part_stride()),
        };
        let p = RmsNormParams {
            x,
            w,
            out: written.a,
            perm,
            dim,
            eps: c.rms_norm_eps,
            perm_stride: next.map_or(0, |lin| lin.k_pad),
            out_stride: written.part_stride,
            out_cols: written.lda,
            order: written.order as u32,
        };
        let copies = next.filter(|_| !perm.is_null()).map_or(1, |lin| lin.parts());
        let launch = shapes::gathering(shapes::per_row_parts(m, copies), m, !perm.is_null());
        self.run(&self.gpu.k.rmsnorm_rows, launch, &p)?;
        Ok(written)
    }

    /// SwiGLU of the `m` rows of `act.gate_up` as `down` reads them: in its act-order row order if it has one,
    /// into `act.gemm_in` in the K order of the weights-in-registers tile where `down` runs it, else into `act.h`
    /// in order (rearranged by the GEMM for a tile that reads another order).
    fn swiglu(&self, down: &DevLinear, m: u32) -> Result<GemmInput> {
        let inter = self.config.intermediate_size as u32;
        let written = if self.order_for(down, m) == Some(InputOrder::KSteps) {
            GemmInput { a: self.act.gemm_in, lda: down.k_pad, part_stride: 0, order: InputOrder::KSteps }
        } else {
            GemmInput::rows(self.act.h, inter, 0)
        };
        let p = SwigluParams {
            gu: self.act.gate_up,
            h: written.a,
            perm: down.perm,
            inter,
            ldh: written.lda,
            k_steps: (written.order == InputOrder::KSteps) as u32,
        };
        let launch = shapes::gathering(shapes::swiglu(m, inter), m, !down.perm.is_null());
        self.run(&self.gpu.k.swiglu_rows, launch, &p)?;
        Ok(written)
    }

    /// Whether the gate/up GEMM of `m` rows can apply SwiGLU itself and write `down`'s input: one launch of a
    /// short-chunk tile over a paired gate/up (no act-order split), `down` reading the order that tile's epilogue
    /// writes (the wgmma short tile: the K order; the GEMV-shaped one: its fragments) without a row order of its own,
    /// and no padding columns in that input for the epilogue to leave zero (k_pad = inter).
    fn swiglu_in_gate_up(&self, gate_up: &DevLinear, down: &DevLinear, m: u32) -> bool {
        let writes = match self.gemm_launches(gate_up, m) {
            GemmLaunches::Whole(GemmTile::WgmmaShort) => InputOrder::KSteps,
            GemmLaunches::Whole(GemmTile::GemvRows { .. }) => InputOrder::Frag16,
            _ => return false,
        };
        gate_up.parts() == 1
            && down.perm.is_null()
            && down.k_pad == self.config.intermediate_size as u32
            && self.order_for(down, m) == Some(writes)
    }

    /// Whether the q/k/v GEMM of `m` rows runs on a short-chunk tile alone, which then applies the rotary embedding
    /// and appends to the KV cache in its epilogue (its layout pairs each rotary partner in one thread).
    fn rope_in_qkv(&self, qkv: &DevLinear, m: u32) -> bool {
        self.every_launch(qkv, m, |tile| matches!(tile, GemmTile::WgmmaShort | GemmTile::GemvRows { .. }))
    }

    /// Elements between the per-part copies of a normalized chunk (`act.xn`, `act.xn2`): one chunk of rows.
    fn part_stride(&self) -> u32 {
        (self.chunk * self.config.hidden_size) as u32
    }

    /// Causal attention of the chunk's `p.rows` rows over the cache.
    fn attention_prefill(&self, p: &AttnParams) -> Result<()> {
        let (which, launch) = shapes::attn_prefill(p.head_dim, p.heads, p.rows);
        self.run(self.gpu.k.attn_prefill_kernel(which), launch, p)
    }

    /// `out` = A[m][k] · W over `lin`, into `ldy`-wide rows: the tile shapes.rs picks for `m` rows. With act-order
    /// and several fused parts each part reads its own copy of A (`a.part_stride` apart, as [`Step::rmsnorm`]
    /// writes them): every tile picks it per block where the parts start on block boundaries (one launch; the 7B
    /// shapes have them); otherwise each part is a launch of its own.
    fn gemm(&self, lin: &DevLinear, a: GemmInput, out: GemmOut, ldy: u32, m: u32) -> Result<()> {
        match self.gemm_launches(lin, m) {
            // One launch: with act-order parts, the kernel picks each part's copy of the input itself.
            GemmLaunches::Whole(tile) => self.gemm_launch(lin, tile, a, out, ldy, m),
            GemmLaunches::PerPart(parts) => {
                for (i, (part, tile)) in parts.into_iter().enumerate() {
                    self.gemm_launch(&part, tile, a.part(i), out, ldy, m)?;
                }
                Ok(())
            }
        }
    }

    /// The launches of a GEMM over `lin` with `m` rows: all of it with one tile, or each part with its own where
    /// the tile's blocks would straddle the parts' boundaries.
    fn gemm_launches(&self, lin: &DevLinear, m: u32) -> GemmLaunches {
        let tile = self.gemm_tile(lin, m);
        let block = tile.block_slots(lin.n_pad);
        let on_block_boundaries = lin.part_slots.iter().all(|&s| s == layout::NO_PART || s % block == 0);
        if lin.parts() == 1 || on_block_boundaries {
            return GemmLaunches::Whole(tile);
        }
        let parts = lin
            .part_ranges()
            .map(|(start, end)| {
                let tile0 = (start / plan::TILE_N as u32) as usize;
                let part = DevLinear {
                    qw: lin.qw.add(tile0 * lin.words_per_tile()),
                    sz: lin.sz.add(tile0 * (lin.groups as usize) * plan::TILE_N),
                    col_map: lin.col_map.add(start as usize),
                    n_pad: end - start,
                    part_slots: [layout::NO_PART; 2],
                    ..*lin
                };
                (part, self.gemm_tile(&part, m))
            })
            .collect();
        GemmLaunches::PerPart(parts)
    }

    /// The order every launch of the GEMM over `lin` with `m` rows reads its input in, where they agree: the
    /// kernel producing that input then writes it so.
    fn order_for(&self, lin: &DevLinear, m: u32) -> Option<InputOrder> {
        match self.gemm_launches(lin, m) {
            GemmLaunches::Whole(tile) => Some(tile.input_order()),
            GemmLaunches::PerPart(parts) => {
                let first = parts.first()?.1.input_order();
                parts.iter().all(|(_, tile)| tile.input_order() == first).then_some(first)
            }
        }
    }

    /// Whether the tile of every launch of the GEMM over `lin` with `m` rows is one `ok` accepts.
    fn every_launch(&self, lin: &DevLinear, m: u32, ok: impl Fn(GemmTile) -> bool) -> bool {
        match self.gemm_launches(lin, m) {
            GemmLaunches::Whole(tile) => ok(tile),
            GemmLaunches::PerPart(parts) => parts.iter().all(|(_, tile)| ok(*tile)),
        }
    }

    /// The tile shapes.rs picks for `m` rows of `lin` (the 128-row tile is int4's only), or the GEMV-shaped tile
    /// for chunks of at most 64 rows where it applies: int4 without act-order, K whole spans of its fragment order,
    /// and whole row blocks of 16 within the plan's chunk (its input is 16 · ceil(m / 16) rows × k_pad, in buffers
    /// sized for the chunk).
    fn gemm_tile(&self, lin: &DevLinear, m: u32) -> GemmTile {
        let limits = &self.gpu.limits;
        let blocks = m.div_ceil(16).max(1);
        let gemv_rows = self.tuning.gemv_rows
            && lin.format == TileFormat::Int4
            && lin.perm.is_null()
            && lin.k_pad % shapes::FRAG16_SPAN == 0
            && blocks <= shapes::GEMV_ROWS_MAX_BLOCKS
            && 16 * blocks as usize <= self.chunk;
        if gemv_rows {
            let wide = blocks == 1 && lin.tiles() < shapes::GEMV_ROWS16_WIDE_BELOW;
            return GemmTile::GemvRows { blocks, wide };
        }
        let gemm128 = self.tuning.gemm128 && shapes::gemm128_fits(limits) && lin.format == TileFormat::Int4;
        let wgmma = if self.gpu.has_wgmma() { self.tuning.wgmma } else { WgmmaTile::Off };
        let wgmma_short = self.gpu.has_wgmma() && self.tuning.wgmma_short && lin.format == TileFormat::Int4;
        let steps = lin.k_pad / plan::STEP_K as u32;
        GemmTile::choose(m, lin.tiles(), steps, limits.sm_count, gemm128, wgmma, wgmma_short)
    }

    /// One GEMM launch over all of `lin` with `tile`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_launch(&self, lin: &DevLinear, tile: GemmTile, a: GemmInput, out: GemmOut, ldy: u32, m: u32) -> Result<()> {
        let k_splits = shapes::gemm_splits(tile, lin.n_pad, lin.k_pad, m, &self.gpu.limits, self.ws_plan);
        let k = &self.gpu.k;
        let format = lin.format;
        use GemmKernel::{Plain, QkvRope};
        let (kernel, y32, y16) = match (out, tile) {
            (GemmOut::Store16(y), GemmTile::Small { .. }) => (Plain(k.gemm_small_store16.of(format)), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::Small { .. }) => {
                (Plain(k.gemm_small_residual.of(format)), y, DevPtr::NULL)
            }
            (GemmOut::Store16(y), GemmTile::Rows64) => (Plain(k.gemm_store16.of(format)), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::Rows64) => (Plain(k.gemm_residual.of(format)), y, DevPtr::NULL),
            (GemmOut::Store16(y), GemmTile::Rows128) => (Plain(&k.gemm128_store16), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::Rows128) => (Plain(&k.gemm128_residual), y, DevPtr::NULL),
            (GemmOut::Store16(y), GemmTile::Wgmma128) => (Plain(&k.gemm_wgmma_store16), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::Wgmma128) => (Plain(&k.gemm_wgmma_residual), y, DevPtr::NULL),
            (GemmOut::Store16(y), GemmTile::Wgmma256) => (Plain(&k.gemm_wgmma256_store16), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::Wgmma256) => (Plain(&k.gemm_wgmma256_residual), y, DevPtr::NULL),
            (GemmOut::Store16(y), GemmTile::WgmmaWs) => (Plain(&k.gemm_wgmma_ws_store16), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::WgmmaWs) => (Plain(&k.gemm_wgmma_ws_residual), y, DevPtr::NULL),
            (GemmOut::Store16(y), GemmTile::WgmmaShort) => (Plain(&k.gemm_wgmma_short_store16), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::WgmmaShort) => (Plain(&k.gemm_wgmma_short_residual), y, DevPtr::NULL),
            (GemmOut::SwiGlu(y), GemmTile::WgmmaShort) => (Plain(&k.gemm_wgmma_short_swiglu), DevPtr::NULL, y),
            (GemmOut::QkvRope(rope), GemmTile::WgmmaShort) => {
                (QkvRope(&k.gemm_wgmma_short_qkv_rope, rope), DevPtr::NULL, DevPtr::NULL)
            }
            (GemmOut::Store16(y), GemmTile::GemvRows { blocks, wide }) => {
                (Plain(k.gemv_rows_store16.of(blocks, wide)), DevPtr::NULL, y)
            }
            (GemmOut::Residual(y), GemmTile::GemvRows { blocks, wide }) => {
                (Plain(k.gemv_rows_residual.of(blocks, wide)), y, DevPtr::NULL)
            }
            (GemmOut::SwiGlu(y), GemmTile::GemvRows { blocks, wide }) => {
                (Plain(k.gemv_rows_swiglu.of(blocks, wide)), DevPtr::NULL, y)
            }
            (GemmOut::QkvRope(rope), GemmTile::GemvRows { blocks, wide }) => {
                (QkvRope(k.gemv_rows_qkv_rope.of(blocks, wide), rope), DevPtr::NULL, DevPtr::NULL)
            }
            (GemmOut::SwiGlu(_), _) => {
                return Err(Error::Device(format!("the {tile:?} GEMM tile has no SwiGLU epilogue")));
            }
            (GemmOut::QkvRope(_), _) => {
                return Err(Error::Device(format!("the {tile:?} GEMM tile has no rotary epilogue")));
            }
            (GemmOut::Store16(y), GemmTile::WgmmaWreg) => (Plain(&k.gemm_wgmma_wreg_store16), DevPtr::NULL, y),
            (GemmOut::Residual(y), GemmTile::WgmmaWreg) => (Plain(&k.gemm_wgmma_wreg_residual), y, DevPtr::NULL),
        };
        let int4_only = matches!(
            tile,
            GemmTile::Rows128
                | GemmTile::Wgmma128
                | GemmTile::Wgmma256
                | GemmTile::WgmmaWs
                | GemmTile::WgmmaShort
                | GemmTile::WgmmaWreg
                | GemmTile::GemvRows { .. }
        );
        if int4_only && format != TileFormat::Int4 {
            return Err(Error::Device(format!("the {tile:?} GEMM tile runs int4 weights, not {format:?}")));
        }
        // A as the tile reads it: rearranged here into `act.gemm_in` where the producer wrote the rows in order
        // and the tile reads another order.
        let a = match (tile.input_order(), a.order) {
            (want, have) if want == have => a,
            (want, InputOrder::Rows) => {
                let p = PermuteKParams {
                    input: a.a,
                    out: self.act.gemm_in,
                    lda: a.lda,
                    k: lin.k,
                    k_pad: lin.k_pad,
                    in_part_stride: a.part_stride,
                };
                let permute = if want == InputOrder::KSteps { &k.permute_k_steps } else { &k.permute_frag16 };
                self.run(permute, shapes::permute_k(m, lin.parts()), &p)?;
                GemmInput { a: self.act.gemm_in, lda: lin.k_pad, part_stride: m * lin.k_pad, order: want }
            }
            (want, have) => {
                return Err(Error::Device(format!(
                    "a {tile:?} GEMM, which reads {want:?} input, was given its input in {have:?} order"
                )));
            }
        };
        let a_part_stride = if lin.parts() > 1 { a.part_stride } else { 0 };
        let p = GemmParams {
            qw: lin.qw,
            sz: lin.sz,
            col_map: lin.col_map,
            a: a.a,
            y32,
            y16,
            part: self.ws.gemm_partial,
            counters: self.ws.gemm_counters,
            m,
            k: lin.k,
            k_pad: lin.k_pad,
            n_pad: lin.n_pad,
            groups: lin.groups,
            group_size: lin.group_size,
            lda: a.lda,
            ldy,
            k_splits,
            a_part_stride,
            part_slot1: lin.part_slots[0],
            part_slot2: lin.part_slots[1],
        };
        let launch = tile.launch(lin.n_pad, lin.k_pad, m, k_splits, format);
        match kernel {
            Plain(kernel) => self.run(kernel, launch, &p),
            QkvRope(kernel, rope) => self.run(kernel, launch, &GemmRopeParams { gemm: p, rope }),
        }
    }

    /// Launch `kernel` with `params`, which the callers in this module build from the resolved plan within its
    /// limits (see the module comment).
    fn run<P: KernelParams>(&self, kernel: &Kernel<P>, launch: Launch, params: &P) -> Result<()> {
        // SAFETY: every address in `params` comes from the resolved plan, the weights or the KV cache, alive for
        // as long as the backend that owns this `Step`'s sources, and sized for the rows and positions the entry
        // points checked (or, for `decode`, that its caller guarantees); the launch shapes come from shapes.rs,
        // which follows each kernel's stated launch contract.
        unsafe { self.gpu.launch(kernel, launch, params) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_split_count_holds_exactly_while_the_full_counts_extra_splits_would_idle() {
        let splits = AttnSplits { short: 8, full: 16 };
        let at = |pos| splits.kind(pos, StepEnd::Argmax).attn_splits;
        // Up to 8 × 32 positions (position 255) at most 8 splits have any; from position 256 the ninth has one.
        assert_eq!((at(0), at(16), at(255)), (8, 8, 8));
        assert_eq!((at(256), at(2047)), (16, 16));
        assert_eq!(splits.kind(3, StepEnd::Sample), DecodeKind { end: StepEnd::Sample, attn_splits: 8 });
        let one = AttnSplits { short: 0, full: 16 };
        assert_eq!(one.kind(0, StepEnd::Logits).attn_splits, 16);
    }
}

//! The static device memory plan: every buffer the CUDA backend will ever use, with region, offset, size and
//! element type, computed from the model description and the run limits before anything is allocated.
//!
//! Four regions, each one device allocation:
//! - **Weights** ([`WeightBuffers`]): every tensor in the device layout (GPTQ linears repacked into tiles, see
//!   [`slots_qkv`] and friends; fp16 tensors as stored) plus the rotary tables. 8-bit GPTQ linears are planned in
//!   the same tiles with one byte per weight ([`LinearBuffers::Int8`]), what the CUDA kernels will need once they
//!   run them; today the CUDA backend refuses those checkpoints before it allocates anything.
//! - **KV cache** ([`KvLayout`]): keys and values of one sequence, `[layer][kv_head][position][head_dim]` fp16.
//! - **Activations** ([`ActivationBuffers`]): the rows of one prefill chunk as they flow through a layer. Buffers
//!   whose lifetimes (the steps of a layer during which they hold live data) do not overlap share memory: see
//!   [`ACTIVATIONS`].
//! - **Workspace** ([`WorkspaceBuffers`]): small per-step scratch (norm partial sums, attention partials, logits,
//!   argmax, token slots).
//!
//! Every buffer is a field of a typed struct ([`Buf<T>`]: offset and element count), so a backend reaches its
//! buffers by name at compile time, never by string at run time. [`MemoryPlan::buffers`] lists them all for
//! printing (`engine-cli plan`). The engine allocates exactly these sizes and nothing per token.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::marker::PhantomData;

use half::f16;

use crate::config::ModelConfig;
use crate::desc::{LayerDesc, Linear, ModelDesc};
use crate::gptq::Bits;

/// The int4 tile layout's numbers, shared with the kernels (one source: the kernels' `tile_layout.h`).
pub use engine_ptx::tile::{STEP_K, TILE_N};

/// Limits the plan is computed for. Build them with [`PlanLimits::new`], the one place that decides what a chunk
/// longer than the context means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Positions of KV cache per sequence.
    pub max_context: usize,
    /// Most tokens processed by one prefill chunk: never more than `max_context`.
    pub prefill_chunk: usize,
    /// Plan the int8 copy of the head that the CUDA backend's greedy steps screen with
    /// ([`WeightBuffers::lm_head_screen`]; half the head's bytes again, ~0.27 GB on a 7B). On unless turned off.
    pub lm_head_screen: bool,
}

impl PlanLimits {
    /// Limits for sessions of `max_context` positions, prefilled in chunks of `prefill_chunk` tokens. A chunk longer
    /// than the context is planned as long as the context: the extra activation rows are ones no prompt can fill.
    pub fn new(max_context: usize, prefill_chunk: usize) -> PlanLimits {
        PlanLimits { max_context, prefill_chunk: prefill_chunk.min(max_context), lm_head_screen: true }
    }

    /// The same limits with the head's int8 copy planned or not.
    pub fn with_lm_head_screen(self, on: bool) -> PlanLimits {
        PlanLimits { lm_head_screen: on, ..self }
    }
}

/// Columns per scale of the head's int8 copy (`SCREEN_GROUP` in the CUDA kernels' lm_head.cu).
pub const LM_HEAD_SCREEN_GROUP: usize = 128;

/// Which allocation a buffer lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Region {
    Weights,
    KvCache,
    Activations,
    Workspace,
}

impl Region {
    pub const ALL: [Region; 4] = [Region::Weights, Region::KvCache, Region::Activations, Region::Workspace];
    pub fn name(self) -> &'static str {
        match self {
            Region::Weights => "weights",
            Region::KvCache => "kv cache",
            Region::Activations => "activations",
            Region::Workspace => "workspace",
        }
    }
}

/// One buffer of the plan: `len` elements of `T` starting `offset` bytes into its region.
pub struct Buf<T> {
    pub offset: usize,
    pub len: usize,
    _elem: PhantomData<fn() -> T>,
}

impl<T> Buf<T> {
    pub const fn new(offset: usize, len: usize) -> Self {
        Buf { offset, len, _elem: PhantomData }
    }
    /// Size in bytes.
    pub const fn bytes(&self) -> usize {
        self.len * core::mem::size_of::<T>()
    }
    /// One past the last byte.
    pub const fn end(&self) -> usize {
        self.offset + self.bytes()
    }
    /// Elements `start..start + len` of this buffer. Panics if they are not inside it (a bug in the caller).
    pub fn slice(&self, start: usize, len: usize) -> Buf<T> {
        assert!(
            start.checked_add(len).is_some_and(|e| e <= self.len),
            "{start}+{len} outside a buffer of {}",
            self.len
        );
        Buf::new(self.offset + start * core::mem::size_of::<T>(), len)
    }
}

impl<T> Clone for Buf<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Buf<T> {}
impl<T> PartialEq for Buf<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.offset, self.len) == (o.offset, o.len)
    }
}
impl<T> Eq for Buf<T> {}
impl<T> core::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Buf<{}>({} x {} @ {})",
            core::any::type_name::<T>(),
            self.len,
            core::mem::size_of::<T>(),
            self.offset
        )
    }
}

/// One line of the printable plan ([`MemoryPlan::buffers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanBuffer {
    pub name: String,
    pub region: Region,
    /// Byte offset inside its region.
    pub offset: usize,
    pub size: usize,
    pub align: usize,
    /// For activations: the first and last step of a layer (see [`ACTIVATIONS`]) during which it holds live data.
    pub live: Option<(u8, u8)>,
}

/// The buffers of one linear in the tile layout (`engine/src/backend/cuda/layout.rs`): GPTQ or fp16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileBuffers {
    /// `[tiles][k_pad / STEP_K][32 lanes × bits / 4]` 16-byte words: at 4 bits each lane's 32 rows of a slot are one
    /// 16-byte word; at 8 bits the same tile walk with one byte per weight takes two, with fp16 weights four.
    pub qw: Buf<[u32; 4]>,
    /// `[tiles][groups][TILE_N]` (scale, 1024 + zero) half2 pairs (fp16 weights: one group of (1, 1024)).
    pub sz: Buf<u32>,
    /// A symmetric 4-bit linear (every part's zero points 8, [`Linear::Gptq`]'s `symmetric`): the scales of `sz`
    /// alone, `[tiles][groups][TILE_N]` fp16, which the decode GEMVs can read instead of `sz` — half the bytes, as
    /// the zero is a constant there. The prefill GEMMs read `sz`. `None` for every other linear.
    pub scales: Option<Buf<f16>>,
    /// Output column of each slot.
    pub col_map: Buf<u32>,
    /// Act-order: the original row of each sorted row, one permutation of `k_pad` rows per fused part
    /// (`[parts][k_pad]`, see [`perms`]); `None` without act-order.
    pub perm: Option<Buf<u32>>,
    /// Act-order: the inverse permutations (the sorted row of each original row, `[parts][k_pad]`), by which the
    /// kernel before this linear writes its input in sorted order; `None` without act-order.
    pub inv: Option<Buf<u32>>,
}

/// The buffers of one (possibly fused) linear layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinearBuffers {
    Int4(TileBuffers),
    /// 8-bit GPTQ: the int4 tile layout with one byte per weight (twice the `qw` words), the same
    /// `(scale, 1024 + zero)` pairs (exact in fp16 for zeros up to 256), column maps and act-order permutations.
    Int8(TileBuffers),
    /// Unquantized (fp16, or bf16 converted to fp16 at load): the tile layout with one half per weight (four times
    /// int4's `qw` words), one group, no permutations.
    F16(TileBuffers),
}

/// The weights of one decoder layer, projections fused as the kernels want them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBuffers {
    pub input_norm: Buf<f16>,
    pub qkv: LinearBuffers,
    pub o_proj: LinearBuffers,
    pub post_norm: Buf<f16>,
    pub gate_up: LinearBuffers,
    pub down_proj: LinearBuffers,
}

/// The weights region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightBuffers {
    pub embed: Buf<f16>,
    pub layers: Vec<LayerBuffers>,
    pub norm: Buf<f16>,
    /// The same buffer as `embed` when the embeddings are tied.
    pub lm_head: Buf<f16>,
    /// The head in int8 for the greedy steps' screen, where [`PlanLimits::lm_head_screen`] asks for it and the
    /// hidden size is a multiple of 16 (whole 16-byte chunks per row).
    pub lm_head_screen: Option<HeadScreenBuffers>,
    /// `[max_position_embeddings][head_dim / 2]` rotary cosines and sines.
    pub rope_cos: Buf<f32>,
    pub rope_sin: Buf<f32>,
}

/// The head's int8 copy: `q` holds `q + 128` as bytes, four per word in column order (`[vocab][hidden / 4]`), and
/// `scales` one fp16 scale per row and [`LM_HEAD_SCREEN_GROUP`] columns (`[vocab][ceil(hidden / group)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadScreenBuffers {
    pub q: Buf<u32>,
    pub scales: Buf<f16>,
}

impl HeadScreenBuffers {
    /// Bytes a greedy step's screen streams: the int8 copy and its scales.
    pub const fn bytes(&self) -> usize {
        self.q.bytes() + self.scales.bytes()
    }
}

/// Keys and values of one sequence of `positions` positions: all keys `[layer][kv_head][position][head_dim]` fp16,
/// then (at the next aligned offset) all values in the same shape. The one place KV-cache sizes are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub positions: usize,
    pub head_dim: usize,
}

impl KvLayout {
    pub fn new(c: &ModelConfig, positions: usize) -> KvLayout {
        KvLayout { layers: c.num_hidden_layers, kv_heads: c.num_key_value_heads, positions, head_dim: c.head_dim }
    }
    /// Elements of one layer's keys (or values).
    pub fn layer_len(&self) -> usize {
        self.kv_heads * self.positions * self.head_dim
    }
    /// Every layer's keys.
    pub fn keys(&self) -> Buf<f16> {
        Buf::new(0, self.layers * self.layer_len())
    }
    /// Every layer's values.
    pub fn values(&self) -> Buf<f16> {
        Buf::new(self.keys().bytes().next_multiple_of(ALIGN), self.layers * self.layer_len())
    }
    pub fn layer_keys(&self, layer: usize) -> Buf<f16> {
        self.keys().slice(layer * self.layer_len(), self.layer_len())
    }
    pub fn layer_values(&self, layer: usize) -> Buf<f16> {
        self.values().slice(layer * self.layer_len(), self.layer_len())
    }
    /// Bytes of the allocation that holds this cache.
    pub fn bytes(&self) -> usize {
        self.values().end()
    }
    /// Bytes of keys and values of every position (what a decode step at this length reads).
    pub fn data_bytes(&self) -> usize {
        2 * self.keys().bytes()
    }
}

/// The activation buffers of one prefill chunk (decode uses the first row of each). See [`ACTIVATIONS`] for when
/// each holds live data; buffers that are never live together share bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationBuffers {
    /// The residual stream, `[rows][hidden]`.
    pub x: Buf<f32>,
    /// The input norm's output, `[rows][hidden]`; with act-order one such block per permutation of q/k/v
    /// (`[perms][prefill_chunk][hidden]`).
    pub xn: Buf<f16>,
    /// The q/k/v projection, `[rows][q_dim + 2 kv_dim]`.
    pub qkv: Buf<f16>,
    /// Rotated queries, `[rows][q_dim]`.
    pub q: Buf<f16>,
    /// The attention output, `[rows][q_dim]`.
    pub att: Buf<f16>,
    /// The attention output in o_proj's act-order row order, `[rows][q_dim]`.
    pub att_perm: Buf<f16>,
    /// The post-attention norm's output, `[rows][hidden]`; with act-order `[perms][prefill_chunk][hidden]` as `xn`.
    pub xn2: Buf<f16>,
    /// The gate/up projection, `[rows][2 inter]`.
    pub gate_up: Buf<f16>,
    /// SwiGLU's output, `[rows][inter]`.
    pub h: Buf<f16>,
    /// The input of a prefill GEMM on a tile that wants it rearranged (the CUDA backend's weights-in-registers
    /// tile: K reordered within each 64-column step, rows `k_pad` wide), written just before that GEMM:
    /// `[parts][rows][k_pad]` for the widest such input.
    pub gemm_in: Buf<f16>,
}

/// Per-step scratch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceBuffers {
    /// Split-K partial sums of the prefill GEMMs: `GEMM_SPLIT_ROWS` rows of the widest projection.
    pub gemm_partial: Buf<f32>,
    /// Split-K tile counters, zero at rest.
    pub gemm_counters: Buf<u32>,
    /// Sums of squares of the residual stream, one per hidden tile (the fused norms' input).
    pub ssq: Buf<f32>,
    /// Decode with act-order: the residual stream × the next norm's weight, a copy per fused part of the next
    /// projection in that part's sorted row order (`[parts][k_pad(hidden)]`).
    pub x_sorted: Buf<f32>,
    /// Decode without act-order: the residual stream × the next norm's weight in fp16 (scaled: the CUDA backend's
    /// `HALF_INPUT_SCALE`), which the fused norm in front of the next GEMV stages instead of the f32 stream and the
    /// norm weight (`[k_pad(hidden)]`).
    pub x_half: Buf<f16>,
    /// Decode attention partials: `[heads][splits][head_dim]` outputs and `[heads][splits][2]` (max, sum).
    pub attn_partial_o: Buf<f32>,
    pub attn_partial_ml: Buf<f32>,
    /// Decode attention counters, one per head, zero at rest.
    pub attn_counters: Buf<u32>,
    /// The logits of one row.
    pub logits: Buf<f32>,
    /// The greedy screen's upper bound on each row's logit, and the largest lower bound (an order key, zero at
    /// rest); empty where the head's int8 copy is not planned ([`WeightBuffers::lm_head_screen`]).
    pub screen_hi: Buf<f32>,
    pub screen_max: Buf<u32>,
    /// lm_head's per-block best logit and its id, and the counter of the block that merges them.
    pub argmax_val: Buf<f32>,
    pub argmax_idx: Buf<u32>,
    pub argmax_counter: Buf<u32>,
    /// The ids of the chunk being run (decode: one, rewritten by the greedy step).
    pub tokens: Buf<u32>,
    /// The position of the first row.
    pub pos: Buf<u32>,
    /// The sampler's settings (8 words: `SamplerConfig` of `ptx/kernels/sample.cu`).
    pub sampler: Buf<u32>,
    /// The repetition penalty's set: one bit per vocabulary id, set for the tokens in the context.
    pub seen: Buf<u32>,
    /// Scoring a chunk (perplexity): each row's next token, its logit, per-64-column partials (max, sum of exp) and
    /// the rows' negative log-likelihoods.
    pub score_targets: Buf<u32>,
    pub score_target_logit: Buf<f32>,
    pub score_part: Buf<f32>,
    pub score_nll: Buf<f32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub limits: PlanLimits,
    pub weights: WeightBuffers,
    /// The KV cache of one sequence of `limits.max_context` positions.
    pub kv: KvLayout,
    pub act: ActivationBuffers,
    pub ws: WorkspaceBuffers,
    /// Every buffer above, for printing.
    pub buffers: Vec<PlanBuffer>,
    /// Bytes of each region, in [`Region::ALL`] order (offsets of the last buffer plus its size, aligned).
    pub region_sizes: [usize; 4],
}

/// Alignment of every buffer: 256 bytes, what the driver gives allocations, more than any kernel's 16-byte loads.
pub const ALIGN: usize = 256;

/// Slots of the fused q/k/v projection: rotary pairs of q, 8 per tile, then those of k, then the v columns, 16 per
/// tile; each of q, k and v starts a tile, so that a tile belongs to one of them (with act-order each has its own
/// row order).
pub fn slots_qkv(c: &ModelConfig) -> usize {
    let (q_pairs, k_pairs) = (c.num_attention_heads * c.head_dim / 2, c.num_key_value_heads * c.head_dim / 2);
    TILE_N * (q_pairs.div_ceil(TILE_N / 2) + k_pairs.div_ceil(TILE_N / 2) + c.kv_dim().div_ceil(TILE_N))
}
/// Slots of the fused gate/up projection. Paired (`split` false): gate column i and up column i share a tile, 8
/// pairs per tile. Split (act-order, where gate and up each have their own row order): the gate columns' tiles,
/// then the up columns' in the same order.
pub fn slots_gate_up(c: &ModelConfig, split: bool) -> usize {
    if split {
        2 * slots_identity(c.intermediate_size)
    } else {
        TILE_N * c.intermediate_size.div_ceil(TILE_N / 2)
    }
}
/// Act-order permutations a fused linear of these `parts` carries on the device: none without act-order, else one
/// per part (AutoGPTQ sorts every linear by its own `g_idx`; Baichuan's W_pack is one part).
pub fn perms(parts: &[&Linear]) -> usize {
    let act_order = parts.iter().any(|p| matches!(p, Linear::Gptq { g_idx_is_trivial: false, .. }));
    if act_order {
        parts.len()
    } else {
        0
    }
}
/// Whether a gate/up pair is laid out split (see [`slots_gate_up`]): with act-order.
pub fn gate_up_split(gate: &Linear, up: &Linear) -> bool {
    perms(&[gate, up]) > 0
}
/// Slots of a plain projection of `n` columns.
pub fn slots_identity(n: usize) -> usize {
    n.next_multiple_of(TILE_N)
}
/// K padded to whole warp steps.
pub fn k_pad(k: usize) -> usize {
    k.next_multiple_of(STEP_K)
}

/// Attention splits per head in decode (flash-decoding): enough blocks to cover a large GPU at any head count. (64
/// per head for 32 heads measured 1% slower than 16 on an H200, after 16 and after 2048 tokens: BENCHMARKS.md.)
pub fn attention_splits(c: &ModelConfig) -> usize {
    (512 / c.num_attention_heads).clamp(1, 64)
}

/// Words of the sampler's settings on the device (`SamplerConfig` of `ptx/kernels/sample.cu`).
pub const SAMPLER_CONFIG_WORDS: usize = 8;

/// Rows × splits the prefill GEMM's split-K workspace holds: chunks of at most this many rows (over their split
/// count) split K; larger chunks have enough row tiles to fill the card without it.
pub const GEMM_SPLIT_ROWS: usize = 256;

/// Largest slot count of any projection (the split-K partials are `[splits][rows][slots]`).
pub fn max_slots(c: &ModelConfig) -> usize {
    slots_qkv(c).max(slots_gate_up(c, true)).max(slots_identity(c.hidden_size))
}

/// Largest grid of the lm_head kernel (one partial argmax per block).
pub fn lm_head_blocks(c: &ModelConfig) -> usize {
    c.vocab_size.div_ceil(32)
}

/// The activation buffers of one prefill chunk, in [`ActivationBuffers`] field order, and the steps of a layer
/// during which each is live: 0 norm → 1 q/k/v GEMM → 2 rotary + KV append → 3 attention → 4 (act-order) permute
/// → 5 o GEMM + residual → 6 norm → 7 gate/up GEMM → 8 SwiGLU → 9 down GEMM + residual. `x` (the residual stream)
/// lives throughout; `gemm_in` is rewritten before each GEMM (steps 1, 5, 7, 9). `h`, SwiGLU's output, from step 7:
/// the short GEMM tile writes it from the gate/up GEMM's epilogue.
pub const ACTIVATIONS: [(&str, u8, u8); 10] = [
    ("act.x", 0, 9),
    ("act.xn", 0, 1),
    ("act.qkv", 1, 2),
    ("act.q", 2, 3),
    ("act.att", 3, 5),
    ("act.att_perm", 4, 5),
    ("act.xn2", 6, 7),
    ("act.gate_up", 7, 8),
    ("act.h", 7, 9),
    ("act.gemm_in", 1, 9),
];

struct Builder {
    buffers: Vec<PlanBuffer>,
    sizes: [usize; 4],
}

impl Builder {
    /// Append `len` elements of `T` to `region`, aligned, and list the buffer as `name`.
    fn push<T>(&mut self, name: String, region: Region, len: usize) -> Buf<T> {
        let r = region as usize;
        let offset = self.sizes[r].next_multiple_of(ALIGN);
        let buf = Buf::new(offset, len);
        self.sizes[r] = buf.end();
        self.buffers.push(PlanBuffer { name, region, offset, size: buf.bytes(), align: ALIGN, live: None });
        buf
    }

    /// The buffers of one linear (`parts` fused along N into `slots` slots) in the tile layout, named
    /// `{prefix}.{qw,sz,scales,col_map,perm,inv}`.
    fn linear(&mut self, prefix: &str, parts: &[&Linear], slots: usize) -> LinearBuffers {
        let (bits, groups) = match parts[0] {
            Linear::Gptq { bits, groups, .. } => (bits.count() as usize, *groups),
            Linear::Dense { .. } => (16, 1),
        };
        let kp = k_pad(parts[0].in_features());
        let perms = perms(parts);
        let w = Region::Weights;
        // kp × slots weights of `bits` bits in 16-byte (128-bit) words.
        let buffers = TileBuffers {
            qw: self.push(format!("{prefix}.qw"), w, kp * slots * bits / 128),
            sz: self.push(format!("{prefix}.sz"), w, slots * groups),
            scales: symmetric_int4(parts).then(|| self.push(format!("{prefix}.scales"), w, slots * groups)),
            col_map: self.push(format!("{prefix}.col_map"), w, slots),
            perm: (perms > 0).then(|| self.push(format!("{prefix}.perm"), w, perms * kp)),
            inv: (perms > 0).then(|| self.push(format!("{prefix}.inv"), w, perms * kp)),
        };
        match parts[0] {
            Linear::Gptq { bits: Bits::Four, .. } => LinearBuffers::Int4(buffers),
            Linear::Gptq { bits: Bits::Eight, .. } => LinearBuffers::Int8(buffers),
            Linear::Dense { .. } => LinearBuffers::F16(buffers),
        }
    }
}

/// Whether every part of a fused linear is 4-bit GPTQ with every zero point 8: what the decode GEMVs' scales-only
/// kernels take ([`TileBuffers::scales`]).
pub fn symmetric_int4(parts: &[&Linear]) -> bool {
    parts.iter().all(|p| matches!(p, Linear::Gptq { bits: Bits::Four, symmetric: true, .. }))
}

/// Compute the plan. The config's limits already keep every product in range.
pub fn plan(desc: &ModelDesc, limits: PlanLimits) -> MemoryPlan {
    let c = &desc.config;
    let mut b = Builder { buffers: Vec::new(), sizes: [0; 4] };
    let (hidden, inter, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q_dim, kv_dim, hd) = (c.num_attention_heads * c.head_dim, c.kv_dim(), c.head_dim);

    // Weights, in the order a forward pass reads them.
    let w = Region::Weights;
    let embed = b.push("embed_tokens".into(), w, vocab * hidden);
    let mut layers = Vec::with_capacity(desc.layers.len());
    for (l, layer) in desc.layers.iter().enumerate() {
        let input_norm = b.push(format!("layers.{l}.input_layernorm"), w, hidden);
        let qkv: Vec<&Linear> = layer.qkv.parts.iter().collect();
        let qkv = b.linear(&format!("layers.{l}.qkv"), &qkv, slots_qkv(c));
        let o_proj = b.linear(&format!("layers.{l}.o_proj"), &[&layer.o_proj], slots_identity(hidden));
        let post_norm = b.push(format!("layers.{l}.post_attention_layernorm"), w, hidden);
        let split = gate_up_split(&layer.gate_proj, &layer.up_proj);
        let gate_up =
            b.linear(&format!("layers.{l}.gate_up"), &[&layer.gate_proj, &layer.up_proj], slots_gate_up(c, split));
        let down_proj = b.linear(&format!("layers.{l}.down_proj"), &[&layer.down_proj], slots_identity(hidden));
        layers.push(LayerBuffers { input_norm, qkv, o_proj, post_norm, gate_up, down_proj });
    }
    let norm = b.push("norm".into(), w, hidden);
    let lm_head = if desc.lm_head != desc.embed_tokens { b.push("lm_head".into(), w, vocab * hidden) } else { embed };
    let screened = limits.lm_head_screen && hidden % 16 == 0;
    let lm_head_screen = screened.then(|| HeadScreenBuffers {
        q: b.push("lm_head.screen_q".into(), w, vocab * hidden / 4),
        scales: b.push("lm_head.screen_scales".into(), w, vocab * hidden.div_ceil(LM_HEAD_SCREEN_GROUP)),
    });
    let rope = c.max_position_embeddings * (hd / 2);
    let rope_cos = b.push("rope.cos".into(), w, rope);
    let rope_sin = b.push("rope.sin".into(), w, rope);
    let weights = WeightBuffers { embed, layers, norm, lm_head, lm_head_screen, rope_cos, rope_sin };

    // KV cache of one sequence.
    let kv = KvLayout::new(c, limits.max_context);
    for (name, buf) in [("kv.keys", kv.keys()), ("kv.values", kv.values())] {
        let size = buf.bytes();
        b.buffers.push(PlanBuffer {
            name: name.into(),
            region: Region::KvCache,
            offset: buf.offset,
            size,
            align: ALIGN,
            live: None,
        });
    }
    b.sizes[Region::KvCache as usize] = kv.bytes();

    // Activations of one prefill chunk, placed so that buffers with disjoint lifetimes share bytes.
    let m = limits.prefill_chunk;
    let qkv_dim = q_dim + 2 * kv_dim;
    // The norms write one copy of their rows per act-order permutation of the projection they feed.
    let copies =
        |parts: fn(&LayerDesc) -> Vec<&Linear>| desc.layers.iter().map(|l| perms(&parts(l))).max().unwrap_or(0);
    let xn_copies = copies(|l| l.qkv.parts.iter().collect()).max(1);
    let xn2_copies = copies(|l| vec![&l.gate_proj, &l.up_proj]).max(1);
    // (elements, element size) in ACTIVATIONS order.
    let gemm_in = (xn_copies.max(xn2_copies) * k_pad(hidden)).max(k_pad(q_dim)).max(k_pad(inter));
    let shapes: [(usize, usize); 10] = [
        (m * hidden, 4),
        (xn_copies * m * hidden, 2),
        (m * qkv_dim, 2),
        (m * q_dim, 2),
        (m * q_dim, 2),
        (m * q_dim, 2),
        (xn2_copies * m * hidden, 2),
        (m * 2 * inter, 2),
        (m * inter, 2),
        (m * gemm_in, 2),
    ];
    let at = place_activations(&mut b, &shapes.map(|(n, size)| n * size));
    let act = ActivationBuffers {
        x: Buf::new(at[0], shapes[0].0),
        xn: Buf::new(at[1], shapes[1].0),
        qkv: Buf::new(at[2], shapes[2].0),
        q: Buf::new(at[3], shapes[3].0),
        att: Buf::new(at[4], shapes[4].0),
        att_perm: Buf::new(at[5], shapes[5].0),
        xn2: Buf::new(at[6], shapes[6].0),
        gate_up: Buf::new(at[7], shapes[7].0),
        h: Buf::new(at[8], shapes[8].0),
        gemm_in: Buf::new(at[9], shapes[9].0),
    };

    // Workspace of one step.
    let s = Region::Workspace;
    let (heads, splits) = (c.num_attention_heads, attention_splits(c));
    let ws = WorkspaceBuffers {
        gemm_partial: b.push("ws.gemm_partial".into(), s, GEMM_SPLIT_ROWS * max_slots(c)),
        gemm_counters: b.push("ws.gemm_counters".into(), s, GEMM_SPLIT_ROWS.div_ceil(64) * max_slots(c).div_ceil(64)),
        ssq: b.push("ws.ssq".into(), s, slots_identity(hidden) / TILE_N),
        x_sorted: b.push("ws.x_sorted".into(), s, xn_copies.max(xn2_copies) * k_pad(hidden)),
        x_half: b.push("ws.x_half".into(), s, k_pad(hidden)),
        attn_partial_o: b.push("ws.attn_partial_o".into(), s, heads * splits * hd),
        attn_partial_ml: b.push("ws.attn_partial_ml".into(), s, heads * splits * 2),
        attn_counters: b.push("ws.attn_counters".into(), s, heads),
        logits: b.push("ws.logits".into(), s, vocab),
        screen_hi: b.push("ws.screen_hi".into(), s, if screened { vocab } else { 0 }),
        screen_max: b.push("ws.screen_max".into(), s, usize::from(screened)),
        argmax_val: b.push("ws.argmax_val".into(), s, lm_head_blocks(c)),
        argmax_idx: b.push("ws.argmax_idx".into(), s, lm_head_blocks(c)),
        argmax_counter: b.push("ws.argmax_counter".into(), s, 1),
        tokens: b.push("ws.tokens".into(), s, m.max(1)),
        pos: b.push("ws.pos".into(), s, 1),
        sampler: b.push("ws.sampler".into(), s, SAMPLER_CONFIG_WORDS),
        seen: b.push("ws.seen".into(), s, vocab.div_ceil(32)),
        score_targets: b.push("ws.score_targets".into(), s, m.max(1)),
        score_target_logit: b.push("ws.score_target_logit".into(), s, m.max(1)),
        score_part: b.push("ws.score_part".into(), s, m.max(1) * vocab.div_ceil(64) * 2),
        score_nll: b.push("ws.score_nll".into(), s, m.max(1)),
    };

    let mut region_sizes = b.sizes;
    for s in region_sizes.iter_mut() {
        *s = s.next_multiple_of(ALIGN);
    }
    MemoryPlan { limits, weights, kv, act, ws, buffers: b.buffers, region_sizes }
}

/// Greedy interval placement of the [`ACTIVATIONS`] of the given byte sizes: each goes at the lowest offset where
/// it overlaps no live-overlapping buffer already placed. Lifetimes are inclusive step ranges. Returns the offsets.
fn place_activations(b: &mut Builder, sizes: &[usize; 10]) -> [usize; 10] {
    let r = Region::Activations as usize;
    let mut placed: Vec<(usize, usize, u8, u8)> = Vec::new(); // offset, size, first, last
    let mut offsets = [0usize; 10];
    // Largest first packs best.
    let mut order: Vec<usize> = (0..ACTIVATIONS.len()).collect();
    order.sort_by_key(|&i| core::cmp::Reverse(sizes[i]));
    for i in order {
        let ((name, first, last), size) = (ACTIVATIONS[i], sizes[i]);
        let mut offset = 0usize;
        loop {
            let clash =
                placed.iter().find(|&&(o, s, f, l)| first <= l && f <= last && offset < o + s && o < offset + size);
            match clash {
                Some(&(o, s, _, _)) => offset = (o + s).next_multiple_of(ALIGN),
                None => break,
            }
        }
        placed.push((offset, size, first, last));
        offsets[i] = offset;
        b.sizes[r] = b.sizes[r].max(offset + size);
        b.buffers.push(PlanBuffer {
            name: name.into(),
            region: Region::Activations,
            offset,
            size,
            align: ALIGN,
            live: Some((first, last)),
        });
    }
    offsets
}

impl MemoryPlan {
    /// Bytes of all regions together: what the engine allocates for one sequence.
    pub fn total(&self) -> usize {
        self.region_sizes.iter().sum()
    }
    pub fn region_size(&self, r: Region) -> usize {
        self.region_sizes[r as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    #[test]
    fn a_chunk_is_never_planned_longer_than_the_context() {
        assert_eq!(PlanLimits::new(64, 1024), PlanLimits { max_context: 64, prefill_chunk: 64, lm_head_screen: true });
        assert_eq!(
            PlanLimits::new(4096, 1024),
            PlanLimits { max_context: 4096, prefill_chunk: 1024, lm_head_screen: true }
        );
    }

    fn tiny_desc() -> ModelDesc {
        let (config, quant, shard) = testutil::tiny_checkpoint();
        let config = crate::config::parse_model_config("config.json", &config).unwrap();
        let quant = crate::config::parse_quant_config("quantize_config.json", &quant).unwrap();
        crate::describe(&config, Some(&quant), &[crate::Shard { name: "model.safetensors", bytes: &shard }]).unwrap()
    }

    #[test]
    fn activations_with_overlapping_lifetimes_never_share_bytes() {
        let desc = tiny_desc();
        for chunk in [1, 7, 512] {
            let p = plan(&desc, PlanLimits { prefill_chunk: chunk, ..PlanLimits::new(64, 64) });
            let acts: Vec<&PlanBuffer> = p.buffers.iter().filter(|b| b.region == Region::Activations).collect();
            assert_eq!(acts.len(), ACTIVATIONS.len());
            for a in &acts {
                assert!(a.offset + a.size <= p.region_size(Region::Activations));
                for b in &acts {
                    if a.name == b.name {
                        continue;
                    }
                    let (af, al) = a.live.unwrap();
                    let (bf, bl) = b.live.unwrap();
                    let live_overlap = af <= bl && bf <= al;
                    let mem_overlap = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
                    assert!(!(live_overlap && mem_overlap), "{} and {} overlap", a.name, b.name);
                }
            }
            // Reuse happened: the region is smaller than the sum of its buffers (once buffers outgrow the alignment).
            let sum: usize = acts.iter().map(|b| b.size).sum();
            if chunk >= 512 {
                assert!(p.region_size(Region::Activations) < sum, "no reuse at chunk {chunk}");
            }
        }
    }

    #[test]
    fn the_heads_screen_is_planned_only_where_asked() {
        let desc = tiny_desc();
        let (vocab, hidden) = (desc.config.vocab_size, desc.config.hidden_size);
        let on = plan(&desc, PlanLimits::new(64, 16));
        let copy = on.weights.lm_head_screen.expect("the screen is on by default");
        assert_eq!(copy.q.bytes(), vocab * hidden);
        assert_eq!(copy.scales.len, vocab * hidden.div_ceil(LM_HEAD_SCREEN_GROUP));
        assert_eq!((on.ws.screen_hi.len, on.ws.screen_max.len), (vocab, 1));
        let off = plan(&desc, PlanLimits::new(64, 16).with_lm_head_screen(false));
        assert!(off.weights.lm_head_screen.is_none());
        assert_eq!((off.ws.screen_hi.len, off.ws.screen_max.len), (0, 0));
        assert_eq!(copy.bytes(), vocab * hidden + vocab * hidden.div_ceil(LM_HEAD_SCREEN_GROUP) * 2);
        assert!(off.region_size(Region::Weights) + copy.bytes() <= on.region_size(Region::Weights));
    }

    #[test]
    fn typed_activation_fields_are_the_listed_buffers() {
        let p = plan(&tiny_desc(), PlanLimits::new(64, 9));
        let a = &p.act;
        let fields = [
            (a.x.offset, a.x.bytes()),
            (a.xn.offset, a.xn.bytes()),
            (a.qkv.offset, a.qkv.bytes()),
            (a.q.offset, a.q.bytes()),
            (a.att.offset, a.att.bytes()),
            (a.att_perm.offset, a.att_perm.bytes()),
            (a.xn2.offset, a.xn2.bytes()),
            (a.gate_up.offset, a.gate_up.bytes()),
            (a.h.offset, a.h.bytes()),
            (a.gemm_in.offset, a.gemm_in.bytes()),
        ];
        for ((name, ..), (offset, size)) in ACTIVATIONS.iter().zip(fields) {
            let listed = p.buffers.iter().find(|b| b.name == *name).unwrap();
            assert_eq!((listed.offset, listed.size), (offset, size), "{name}");
        }
        let c = &tiny_desc().config;
        assert_eq!(a.x.len, 9 * c.hidden_size);
        assert_eq!(a.h.len, 9 * c.intermediate_size);
    }

    #[test]
    fn buffers_are_aligned_and_disjoint_within_fixed_regions() {
        let desc = tiny_desc();
        let p = plan(&desc, PlanLimits::new(100, 16));
        for r in [Region::Weights, Region::KvCache, Region::Workspace] {
            let mut bufs: Vec<&PlanBuffer> = p.buffers.iter().filter(|b| b.region == r).collect();
            bufs.sort_by_key(|b| b.offset);
            for w in bufs.windows(2) {
                assert!(w[0].offset + w[0].size <= w[1].offset, "{} overlaps {}", w[0].name, w[1].name);
            }
            assert!(bufs.iter().all(|b| b.offset % ALIGN == 0));
            assert!(bufs.iter().all(|b| b.offset + b.size <= p.region_size(r)), "{r:?}");
        }
        // The KV cache holds layers × 2 × kv_heads × ctx × head_dim halves, and every layer's slice lies inside.
        let c = &desc.config;
        let kv = 2 * c.num_hidden_layers * c.num_key_value_heads * 100 * c.head_dim * 2;
        let got: usize = p.buffers.iter().filter(|b| b.region == Region::KvCache).map(|b| b.size).sum();
        assert_eq!(got, kv);
        assert_eq!(p.kv.data_bytes(), kv);
        let last = p.kv.layer_values(c.num_hidden_layers - 1);
        assert_eq!(last.end(), p.kv.bytes());
        assert!(p.kv.layer_keys(c.num_hidden_layers - 1).end() <= p.kv.values().offset);
    }

    /// The plan of a tiny GPTQ checkpoint made from `spec`.
    fn plan_of(spec: testutil::TinySpec) -> MemoryPlan {
        let config = crate::config::parse_model_config("config.json", spec.config_json().as_bytes()).unwrap();
        let quant = spec.quant_json().unwrap();
        let quant = crate::config::parse_quant_config("quantize_config.json", quant.as_bytes()).unwrap();
        let shard = testutil::serialize(&spec.tensors());
        let desc = crate::describe(&config, Some(&quant), &[crate::Shard { name: "m", bytes: &shard }]).unwrap();
        plan(&desc, PlanLimits::new(64, 16))
    }

    #[test]
    fn eight_bit_linears_take_one_byte_per_weight_in_the_same_tiles() {
        let describe = |bits: u32| plan_of(testutil::TinySpec { bits, ..testutil::TinySpec::llama() });
        let (p4, p8) = (describe(4), describe(8));
        for (l4, l8) in p4.weights.layers.iter().zip(&p8.weights.layers) {
            for (a, b) in [(&l4.qkv, &l8.qkv), (&l4.o_proj, &l8.o_proj), (&l4.gate_up, &l8.gate_up)] {
                let (LinearBuffers::Int4(a), LinearBuffers::Int8(b)) = (a, b) else { panic!("{a:?} / {b:?}") };
                assert_eq!(b.qw.bytes(), 2 * a.qw.bytes());
                assert_eq!(
                    (b.sz.len, b.col_map.len, b.perm.map(|p| p.len)),
                    (a.sz.len, a.col_map.len, a.perm.map(|p| p.len))
                );
            }
        }
        // One byte per (padded row, slot): hidden 32 rows padded to a warp step, times the q/k/v slots.
        let LinearBuffers::Int8(qkv) = &p8.weights.layers[0].qkv else { panic!() };
        assert_eq!(qkv.qw.bytes(), k_pad(32) * qkv.col_map.len);
    }

    #[test]
    fn symmetric_int4_linears_get_a_scales_only_copy() {
        // Baichuan's tiny spec is symmetric: every linear gets one scale per sz word, listed.
        let p = plan_of(testutil::TinySpec::baichuan());
        for (l, layer) in p.weights.layers.iter().enumerate() {
            for (name, lin) in [("qkv", &layer.qkv), ("o_proj", &layer.o_proj), ("gate_up", &layer.gate_up)] {
                let LinearBuffers::Int4(t) = lin else { panic!("{lin:?}") };
                let scales = t.scales.unwrap_or_else(|| panic!("layer {l} {name}: symmetric int4 without scales"));
                assert_eq!(scales.len, t.sz.len);
                let listed = p.buffers.iter().find(|b| b.name == format!("layers.{l}.{name}.scales")).unwrap();
                assert_eq!((listed.offset, listed.size), (scales.offset, scales.bytes()));
            }
        }
        // Symmetric 8-bit and asymmetric 4-bit: none.
        for spec in [
            testutil::TinySpec { bits: 8, ..testutil::TinySpec::baichuan() },
            testutil::TinySpec { sym: false, ..testutil::TinySpec::baichuan() },
        ] {
            let p = plan_of(spec);
            assert!(!p.buffers.iter().any(|b| b.name.ends_with(".scales")));
        }
    }

    #[test]
    fn weight_buffers_match_the_listing() {
        let desc = tiny_desc();
        let p = plan(&desc, PlanLimits::new(64, 16));
        let find = |name: &str| p.buffers.iter().find(|b| b.name == name).map(|b| (b.offset, b.size)).unwrap();
        let l0 = &p.weights.layers[0];
        let LinearBuffers::Int4(qkv) = &l0.qkv else { panic!("tiny model is GPTQ") };
        assert_eq!(find("layers.0.qkv.qw"), (qkv.qw.offset, qkv.qw.bytes()));
        assert_eq!(find("layers.0.qkv.sz"), (qkv.sz.offset, qkv.sz.bytes()));
        // The tiny model is asymmetric: no scales-only copy.
        assert!(qkv.scales.is_none() && !p.buffers.iter().any(|b| b.name.ends_with(".scales")));
        assert_eq!(find("layers.0.post_attention_layernorm"), (l0.post_norm.offset, l0.post_norm.bytes()));
        assert_eq!(find("rope.sin"), (p.weights.rope_sin.offset, p.weights.rope_sin.bytes()));
        assert_eq!(qkv.qw.bytes(), k_pad(desc.config.hidden_size) * slots_qkv(&desc.config) / 2);
    }
}

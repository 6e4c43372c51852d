//! The static device memory plan: every buffer the CUDA backend will ever use, with region, offset, size and
//! alignment, computed from the model description and the run limits before anything is allocated.
//!
//! Four regions, each one device allocation:
//! - **Weights**: every tensor in the device layout (GPTQ linears repacked into tiles, see [`slots_qkv`] and
//!   friends; fp16 tensors as stored) plus the rotary tables.
//! - **KV cache**: keys and values of one sequence, `[layer][kv_head][position][head_dim]` fp16.
//! - **Activations**: the rows of one prefill chunk as they flow through a layer. Buffers whose lifetimes (the
//!   steps of a layer during which they hold live data) do not overlap share memory: see [`ACTIVATIONS`].
//! - **Workspace**: small per-step scratch (norm partial sums, attention partials, logits, argmax, token slots).
//!
//! The engine allocates exactly these sizes and nothing per token. `engine-cli plan` prints this table.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::config::ModelConfig;
use crate::desc::{Linear, ModelDesc};

/// Limits the plan is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Positions of KV cache per sequence.
    pub max_context: usize,
    /// Most tokens processed by one prefill chunk.
    pub prefill_chunk: usize,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub limits: PlanLimits,
    pub buffers: Vec<PlanBuffer>,
    /// Bytes of each region, in [`Region::ALL`] order (offsets of the last buffer plus its size, aligned).
    pub region_sizes: [usize; 4],
}

/// Alignment of every buffer: 256 bytes, what the driver gives allocations, more than any kernel's 16-byte loads.
pub const ALIGN: usize = 256;

/// Rows of K per warp step of the int4 kernels (padding of K); must match the CUDA layout.
pub const STEP_K: usize = 64;
/// Output slots per tile of the int4 kernels; must match the CUDA layout.
pub const TILE_N: usize = 16;

/// Slots of the fused q/k/v projection: rotary pairs of q and k, 8 per tile, then v columns, 16 per tile.
pub fn slots_qkv(c: &ModelConfig) -> usize {
    let pairs = (c.num_attention_heads + c.num_key_value_heads) * c.head_dim / 2;
    TILE_N * (pairs.div_ceil(TILE_N / 2) + c.kv_dim().div_ceil(TILE_N))
}
/// Slots of the fused gate/up projection: gate column i and up column i share a tile, 8 pairs per tile.
pub fn slots_gate_up(c: &ModelConfig) -> usize {
    TILE_N * c.intermediate_size.div_ceil(TILE_N / 2)
}
/// Slots of a plain projection of `n` columns.
pub fn slots_identity(n: usize) -> usize {
    n.next_multiple_of(TILE_N)
}
/// K padded to whole warp steps.
pub fn k_pad(k: usize) -> usize {
    k.next_multiple_of(STEP_K)
}

/// Attention splits per head in decode (flash-decoding): enough blocks to cover a large GPU at any head count.
pub fn attention_splits(c: &ModelConfig) -> usize {
    (512 / c.num_attention_heads).clamp(1, 64)
}

/// Decode steps whose sampled tokens the device keeps before the host must have read them (decode runs ahead of
/// the host by at most this many steps).
pub const TOKEN_RING: usize = 64;

/// Rows × splits the prefill GEMM's split-K workspace holds: chunks of at most this many rows (over their split
/// count) split K; larger chunks have enough row tiles to fill the card without it.
pub const GEMM_SPLIT_ROWS: usize = 256;

/// Largest slot count of any projection (the split-K partials are `[splits][rows][slots]`).
pub fn max_slots(c: &ModelConfig) -> usize {
    slots_qkv(c).max(slots_gate_up(c)).max(slots_identity(c.hidden_size))
}

/// Largest grid of the lm_head kernel (one partial argmax per block).
pub fn lm_head_blocks(c: &ModelConfig) -> usize {
    c.vocab_size.div_ceil(32)
}

/// The activation buffers of one prefill chunk and the steps of a layer during which each is live:
/// 0 norm → 1 q/k/v GEMM → 2 rotary + KV append → 3 attention → 4 (act-order) permute → 5 o GEMM + residual →
/// 6 norm → 7 gate/up GEMM → 8 SwiGLU → 9 down GEMM + residual. `x` (the residual stream) lives throughout.
pub const ACTIVATIONS: &[(&str, u8, u8)] = &[
    ("act.x", 0, 9),
    ("act.xn", 0, 1),
    ("act.qkv", 1, 2),
    ("act.q", 2, 3),
    ("act.att", 3, 5),
    ("act.att_perm", 4, 5),
    ("act.xn2", 6, 7),
    ("act.gate_up", 7, 8),
    ("act.h", 8, 9),
];

struct Builder {
    buffers: Vec<PlanBuffer>,
    sizes: [usize; 4],
}

impl Builder {
    fn push(&mut self, name: String, region: Region, size: usize) {
        let r = region as usize;
        let offset = self.sizes[r].next_multiple_of(ALIGN);
        self.sizes[r] = offset + size;
        self.buffers.push(PlanBuffer { name, region, offset, size, align: ALIGN, live: None });
    }
}

/// Device bytes of one linear: (name suffix, bytes) for each buffer it needs.
fn linear_buffers(parts: &[&Linear], slots: usize) -> Vec<(&'static str, usize)> {
    match parts[0] {
        Linear::Gptq { in_features, groups, .. } => {
            let kp = k_pad(*in_features);
            let act_order = parts.iter().any(|p| matches!(p, Linear::Gptq { g_idx_is_trivial: false, .. }));
            let mut v = alloc::vec![("qw", kp * slots / 2), ("sz", slots * groups * 4), ("col_map", slots * 4)];
            if act_order {
                v.push(("perm", kp * 4));
            }
            v
        }
        Linear::F16 { .. } => parts.iter().map(|p| ("fp16", p.in_features() * p.out_features() * 2)).collect(),
    }
}

/// Compute the plan. Sizes use checked arithmetic; the config's limits already keep every product in range.
pub fn plan(desc: &ModelDesc, limits: PlanLimits) -> MemoryPlan {
    let c = &desc.config;
    let mut b = Builder { buffers: Vec::new(), sizes: [0; 4] };
    let (hidden, inter, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q_dim, kv_dim, hd) = (c.num_attention_heads * c.head_dim, c.kv_dim(), c.head_dim);

    // Weights, in the order a forward pass reads them.
    b.push("embed_tokens".into(), Region::Weights, vocab * hidden * 2);
    for (l, layer) in desc.layers.iter().enumerate() {
        b.push(format!("layers.{l}.input_layernorm"), Region::Weights, hidden * 2);
        let qkv: Vec<&Linear> = layer.qkv.parts.iter().collect();
        let projections: [(&str, Vec<&Linear>, usize); 4] = [
            ("qkv", qkv, slots_qkv(c)),
            ("o_proj", alloc::vec![&layer.o_proj], slots_identity(hidden)),
            ("gate_up", alloc::vec![&layer.gate_proj, &layer.up_proj], slots_gate_up(c)),
            ("down_proj", alloc::vec![&layer.down_proj], slots_identity(hidden)),
        ];
        for (name, parts, slots) in projections {
            if name == "gate_up" {
                b.push(format!("layers.{l}.post_attention_layernorm"), Region::Weights, hidden * 2);
            }
            for (suffix, size) in linear_buffers(&parts, slots) {
                b.push(format!("layers.{l}.{name}.{suffix}"), Region::Weights, size);
            }
        }
    }
    b.push("norm".into(), Region::Weights, hidden * 2);
    if desc.lm_head != desc.embed_tokens {
        b.push("lm_head".into(), Region::Weights, vocab * hidden * 2);
    }
    let rope = c.max_position_embeddings * (hd / 2) * 4;
    b.push("rope.cos".into(), Region::Weights, rope);
    b.push("rope.sin".into(), Region::Weights, rope);

    // KV cache of one sequence.
    let kv = c.num_hidden_layers * c.num_key_value_heads * limits.max_context * hd * 2;
    b.push("kv.keys".into(), Region::KvCache, kv);
    b.push("kv.values".into(), Region::KvCache, kv);

    // Activations of one prefill chunk, placed so that buffers with disjoint lifetimes share bytes.
    let m = limits.prefill_chunk;
    let act_size = |name: &str| -> usize {
        match name {
            "act.x" => m * hidden * 4,
            "act.xn" | "act.xn2" => m * hidden * 2,
            "act.qkv" => m * (q_dim + 2 * kv_dim) * 2,
            "act.q" | "act.att" | "act.att_perm" => m * q_dim * 2,
            "act.gate_up" => m * 2 * inter * 2,
            "act.h" => m * inter * 2,
            _ => 0,
        }
    };
    place_activations(&mut b, &act_size);

    // Workspace of one step.
    let ws: [(&str, usize); 13] = [
        ("ws.gemm_partial", GEMM_SPLIT_ROWS * max_slots(c) * 4),
        ("ws.gemm_counters", GEMM_SPLIT_ROWS.div_ceil(64) * max_slots(c).div_ceil(64) * 4),
        ("ws.ssq", slots_identity(hidden) / TILE_N * 4),
        ("ws.attn_partial_o", c.num_attention_heads * attention_splits(c) * hd * 4),
        ("ws.attn_partial_ml", c.num_attention_heads * attention_splits(c) * 2 * 4),
        ("ws.attn_counters", c.num_attention_heads * 4),
        ("ws.logits", vocab * 4),
        ("ws.argmax_val", lm_head_blocks(c) * 4),
        ("ws.argmax_idx", lm_head_blocks(c) * 4),
        ("ws.argmax_counter", 4),
        ("ws.tokens", m.max(1) * 4),
        ("ws.pos", 4),
        ("ws.token_ring", TOKEN_RING * 4),
    ];
    for (name, size) in ws {
        b.push(name.into(), Region::Workspace, size);
    }

    let mut region_sizes = b.sizes;
    for s in region_sizes.iter_mut() {
        *s = s.next_multiple_of(ALIGN);
    }
    MemoryPlan { limits, buffers: b.buffers, region_sizes }
}

/// Greedy interval placement: each activation goes at the lowest offset where it overlaps no live-overlapping
/// buffer already placed. Lifetimes are inclusive step ranges.
fn place_activations(b: &mut Builder, size_of: &dyn Fn(&str) -> usize) {
    let r = Region::Activations as usize;
    let mut placed: Vec<(usize, usize, u8, u8)> = Vec::new(); // offset, size, first, last
    let mut order: Vec<&(&str, u8, u8)> = ACTIVATIONS.iter().collect();
    // Largest first packs best.
    order.sort_by_key(|a| core::cmp::Reverse(size_of(a.0)));
    for &&(name, first, last) in &order {
        let size = size_of(name);
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
}

impl MemoryPlan {
    /// Bytes of all regions together: what the engine allocates for one sequence.
    pub fn total(&self) -> usize {
        self.region_sizes.iter().sum()
    }
    pub fn region_size(&self, r: Region) -> usize {
        self.region_sizes[r as usize]
    }
    pub fn get(&self, name: &str) -> Option<&PlanBuffer> {
        self.buffers.iter().find(|b| b.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

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
            let p = plan(&desc, PlanLimits { max_context: 64, prefill_chunk: chunk });
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
    fn buffers_are_aligned_and_disjoint_within_fixed_regions() {
        let desc = tiny_desc();
        let p = plan(&desc, PlanLimits { max_context: 100, prefill_chunk: 16 });
        for r in [Region::Weights, Region::KvCache, Region::Workspace] {
            let mut bufs: Vec<&PlanBuffer> = p.buffers.iter().filter(|b| b.region == r).collect();
            bufs.sort_by_key(|b| b.offset);
            for w in bufs.windows(2) {
                assert!(w[0].offset + w[0].size <= w[1].offset, "{} overlaps {}", w[0].name, w[1].name);
            }
            assert!(bufs.iter().all(|b| b.offset % ALIGN == 0));
        }
        // The KV cache is exactly layers × 2 × kv_heads × ctx × head_dim × 2 bytes.
        let c = &desc.config;
        let kv = 2 * c.num_hidden_layers * c.num_key_value_heads * 100 * c.head_dim * 2;
        let got: usize = p.buffers.iter().filter(|b| b.region == Region::KvCache).map(|b| b.size).sum();
        assert_eq!(got, kv);
    }
}

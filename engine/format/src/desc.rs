//! The validated description of a checkpoint: what every later layer reads instead of the raw files.
//!
//! A [`TensorRef`] is only ever built by [`crate::checkpoint::describe`] after the tensor's dtype, shape, byte
//! range and alignment were checked, so holders may slice the shard's bytes with it without re-validating.

use alloc::string::String;
use alloc::vec::Vec;

use crate::config::{ModelConfig, QuantConfig};
use crate::gptq::Bits;

/// Element types the engine reads from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    /// bfloat16: the top half of an f32 (checkpoints whose config says `torch_dtype: bfloat16`).
    BF16,
    I32,
}

impl DType {
    pub const fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::I32 => 4,
        }
    }
    /// The name safetensors uses.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
        }
    }
}

/// A checked tensor: `len` bytes at absolute byte offset `start` of shard `shard`.
///
/// Invariants (established by `describe`): `start + len <= shard length`, `start % dtype.size() == 0`,
/// `len == product(shape) * dtype.size()`, and no two tensors of one shard overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub name: String,
    pub shard: usize,
    pub start: usize,
    pub len: usize,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorRef {
    pub fn numel(&self) -> usize {
        self.len / self.dtype.size()
    }
    pub fn range(&self) -> core::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

/// One linear layer `y = x · W` with `in_features` (K) inputs and `out_features` (N) outputs.
// A model holds a few hundred of these, so the size gap between variants costs nothing; boxing would only make
// every match on them noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linear {
    /// AutoGPTQ at `bits` bits, `P = 32 / bits` values per word: `qweight` I32 [K/P, N], `qzeros` I32
    /// [groups, N/P], `scales` F16 [groups, N], `g_idx` I32 [K] (every entry checked to lie in `0..groups`). See
    /// [`crate::gptq`] for the exact bit layout.
    Gptq {
        /// 4 or 8 bits per weight, as `quantize_config.json` says (every linear of a checkpoint has the same).
        bits: Bits,
        qweight: TensorRef,
        qzeros: TensorRef,
        scales: TensorRef,
        g_idx: TensorRef,
        in_features: usize,
        out_features: usize,
        /// Rows per group as configured (`K` when the checkpoint uses one group, `group_size: -1`).
        group_size: usize,
        /// Number of groups: `ceil(K / group_size)`.
        groups: usize,
        /// Whether `g_idx` is exactly `k / group_size` for every row (no act-order permutation in effect).
        g_idx_is_trivial: bool,
        /// Whether every stored zero point is `2^(bits - 1) - 1` (AutoGPTQ's `sym: true`, the zero point
        /// `2^(bits - 1)`): read from `qzeros` itself, not from the config, so that a kernel that takes the zero as a
        /// constant never meets a linear that has others.
        symmetric: bool,
    },
    /// Unquantized, PyTorch `nn.Linear` layout: `weight` F16 or BF16 [N, K].
    Dense { weight: TensorRef, in_features: usize, out_features: usize },
}

impl Linear {
    pub fn in_features(&self) -> usize {
        match self {
            Linear::Gptq { in_features, .. } | Linear::Dense { in_features, .. } => *in_features,
        }
    }
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Gptq { out_features, .. } | Linear::Dense { out_features, .. } => *out_features,
        }
    }
}

/// A projection whose output is the concatenation of its parts along the output dimension.
///
/// Baichuan's fused `W_pack` is one part with rows q, k, v; LLaMA's separate `q_proj`, `k_proj`, `v_proj` are three
/// parts. Every later layer sees the same thing: one projection producing `[q | k | v]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub parts: Vec<Linear>,
}

impl Projection {
    pub fn in_features(&self) -> usize {
        self.parts[0].in_features()
    }
    pub fn out_features(&self) -> usize {
        self.parts.iter().map(Linear::out_features).sum()
    }
}

/// The tensors of one transformer layer. "Float" tensors are F16, or BF16 where the config says bfloat16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDesc {
    /// Float [hidden]
    pub input_layernorm: TensorRef,
    /// Output `[q (heads·head_dim) | k (kv_heads·head_dim) | v (kv_heads·head_dim)]`.
    pub qkv: Projection,
    pub o_proj: Linear,
    /// Float [hidden]
    pub post_attention_layernorm: TensorRef,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

/// A fully validated checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDesc {
    pub config: ModelConfig,
    /// `None` for an unquantized (fp16 or bf16) checkpoint.
    pub quant: Option<QuantConfig>,
    /// Shard file names, index = `TensorRef::shard`.
    pub shards: Vec<String>,
    /// Float (F16 or BF16) [vocab, hidden]
    pub embed_tokens: TensorRef,
    pub layers: Vec<LayerDesc>,
    /// Float [hidden]
    pub norm: TensorRef,
    /// Float [vocab, hidden]; the same tensor as `embed_tokens` when the config ties them.
    pub lm_head: TensorRef,
    /// Things that are odd but harmless (unexpected extra tensors), one line each, for the user to see.
    pub warnings: Vec<String>,
}

impl Linear {
    /// The tensors of this layer, in a fixed order (`qweight, qzeros, scales, g_idx` or `weight`).
    pub fn tensors(&self) -> Vec<&TensorRef> {
        match self {
            Linear::Gptq { qweight, qzeros, scales, g_idx, .. } => alloc::vec![qweight, qzeros, scales, g_idx],
            Linear::Dense { weight, .. } => alloc::vec![weight],
        }
    }
}

impl LayerDesc {
    /// The linear layers in computation order: q/k/v parts, o_proj, gate_proj, up_proj, down_proj.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut out: Vec<&Linear> = self.qkv.parts.iter().collect();
        out.extend([&self.o_proj, &self.gate_proj, &self.up_proj, &self.down_proj]);
        out
    }
}

impl ModelDesc {
    /// Every tensor the model uses, each once (a tied `lm_head` is the embedding and is not repeated), in
    /// computation order. Extra tensors of the checkpoint are not included.
    pub fn tensors(&self) -> Vec<&TensorRef> {
        let mut out = alloc::vec![&self.embed_tokens];
        for l in &self.layers {
            out.push(&l.input_layernorm);
            out.extend(l.qkv.parts.iter().flat_map(Linear::tensors));
            out.extend(l.o_proj.tensors());
            out.push(&l.post_attention_layernorm);
            for lin in [&l.gate_proj, &l.up_proj, &l.down_proj] {
                out.extend(lin.tensors());
            }
        }
        out.push(&self.norm);
        if self.lm_head != self.embed_tokens {
            out.push(&self.lm_head);
        }
        out
    }
}

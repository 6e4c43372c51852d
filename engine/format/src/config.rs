//! `config.json` and `quantize_config.json` → [`ModelConfig`] and [`QuantConfig`], with every value checked.

use alloc::string::String;

use crate::error::FormatError;

/// Which tensor naming the checkpoint uses. Both run the same computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `BaiChuanForCausalLM` / model_type `baichuan`: fused `self_attn.W_pack` (rows q, k, v), no GQA.
    Baichuan,
    /// `LlamaForCausalLM` / model_type `llama`: separate `q_proj`, `k_proj`, `v_proj`, optional GQA.
    Llama,
}

/// The model's dimensions and constants, all validated (positive, divisible as the computation needs).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// Equal to `num_attention_heads` unless the config gives `num_key_value_heads` (GQA).
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    /// `hidden_size / num_attention_heads`; even, as rotary embedding pairs dimensions.
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Rotary base; 10000 when the config does not say.
    pub rope_theta: f32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: Option<u32>,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Output width of the fused q/k/v projection.
    pub fn qkv_dim(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

/// GPTQ settings from `quantize_config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantConfig {
    /// Always 4: other widths are rejected as unsupported.
    pub bits: u32,
    /// Rows per group; `None` when the file says `-1` (one group spanning all input rows).
    pub group_size: Option<usize>,
    pub desc_act: bool,
    pub sym: bool,
    /// The safetensors file's base name, when given (`gptq_model-4bit-128g`).
    pub model_file_base_name: Option<String>,
}

impl QuantConfig {
    /// Rows per group for a layer with `in_features` inputs.
    pub fn group_size_for(&self, in_features: usize) -> usize {
        self.group_size.unwrap_or(in_features)
    }
}

/// Parse and validate `config.json`. `file` is the name used in errors.
pub fn parse_model_config(file: &str, bytes: &[u8]) -> Result<ModelConfig, FormatError> {
    let _ = (file, bytes);
    todo!("parse_model_config")
}

/// Parse and validate `quantize_config.json`. `file` is the name used in errors.
pub fn parse_quant_config(file: &str, bytes: &[u8]) -> Result<QuantConfig, FormatError> {
    let _ = (file, bytes);
    todo!("parse_quant_config")
}

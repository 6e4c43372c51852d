//! `config.json` and `quantize_config.json` → [`ModelConfig`] and [`QuantConfig`], with every value checked.
//!
//! Both files are parsed to a `serde_json::Value` first and fields are pulled out by hand instead of through a
//! derived `Deserialize`: that way every error names the file and the field and says what was expected and what was
//! found, which a derive cannot do, and unknown keys (`auto_map`, `use_cache`, ...) are ignored for free.
//!
//! Every dimension is bounded (see [`MAX_DIM`] and friends) so that products of dimensions computed later — tensor
//! sizes, KV cache sizes — cannot overflow a 64-bit `usize`.

use alloc::format;
use alloc::string::{String, ToString};

use serde_json::{Map, Value};

use crate::error::{FormatError, FormatErrorKind};

/// Largest accepted hidden size, intermediate size or head count. Far above any real model; it exists so that
/// `vocab × hidden`, `layers × intermediate × hidden` and friends stay far below `usize::MAX`.
pub const MAX_DIM: usize = 1 << 20;
/// Largest accepted `num_hidden_layers`.
pub const MAX_LAYERS: usize = 1024;
/// Largest accepted `vocab_size`.
pub const MAX_VOCAB: usize = 1 << 22;
/// Largest accepted `max_position_embeddings`.
pub const MAX_POSITIONS: usize = 1 << 24;

/// Which tensor naming the checkpoint uses. Both run the same computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `BaiChuanForCausalLM` / model_type `baichuan`: fused `self_attn.W_pack` (rows q, k, v), no GQA.
    Baichuan,
    /// `LlamaForCausalLM` / model_type `llama`: separate `q_proj`, `k_proj`, `v_proj`, optional GQA.
    Llama,
}

impl Arch {
    /// The `architectures` entry Hugging Face writes for this naming.
    pub const fn hf_architecture(self) -> &'static str {
        match self {
            Arch::Baichuan => "BaiChuanForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }
    }
    /// The `model_type` Hugging Face writes for this naming.
    pub const fn model_type(self) -> &'static str {
        match self {
            Arch::Baichuan => "baichuan",
            Arch::Llama => "llama",
        }
    }
}

/// `torch_dtype` of `config.json`: the element type the model was saved in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchDtype {
    /// `"float16"` (or `"half"`), and what an absent `torch_dtype` means.
    Float16,
    /// `"bfloat16"`: the checkpoint's float tensors may be BF16.
    Bfloat16,
    /// `"float32"` (or `"float"`): accepted as a config value; F32 tensors themselves are refused.
    Float32,
}

impl TorchDtype {
    /// The name Hugging Face writes.
    pub const fn name(self) -> &'static str {
        match self {
            TorchDtype::Float16 => "float16",
            TorchDtype::Bfloat16 => "bfloat16",
            TorchDtype::Float32 => "float32",
        }
    }
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
    /// Which float tensors the checkpoint may hold: F16 always, BF16 only when this says `bfloat16` (GPTQ
    /// checkpoints of bfloat16 models often keep `"bfloat16"` here while storing F16 tensors).
    pub torch_dtype: TorchDtype,
}

impl ModelConfig {
    /// Output width of the fused q/k/v projection.
    pub fn qkv_dim(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
    /// Width of the attention output (`num_attention_heads × head_dim`, equal to `hidden_size`).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
}

/// GPTQ settings from `quantize_config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantConfig {
    /// 4 or 8 ([`crate::gptq::Bits`]): other widths are rejected as unsupported.
    pub bits: u32,
    /// Rows per group; `None` when the file says `-1` (one group spanning all input rows).
    pub group_size: Option<usize>,
    pub desc_act: bool,
    pub sym: bool,
    /// The safetensors file's base name, when given (`gptq_model-4bit-128g`). Checked to be a plain file name (no
    /// path separators, not `..`), so that joining it to the model directory cannot escape it.
    pub model_file_base_name: Option<String>,
}

impl QuantConfig {
    /// Rows per group for a layer with `in_features` inputs.
    pub fn group_size_for(&self, in_features: usize) -> usize {
        self.group_size.unwrap_or(in_features)
    }
}

/// Rotary base used when a config does not give `rope_theta` (Baichuan-7B never does).
pub const DEFAULT_ROPE_THETA: f32 = 10000.0;

/// Parse and validate `config.json`. `file` is the name used in errors.
pub fn parse_model_config(file: &str, bytes: &[u8]) -> Result<ModelConfig, FormatError> {
    let root = parse_object(file, bytes)?;
    let f = Fields { file, map: &root };

    let arch = f.arch()?;

    // Keys whose presence changes the computation: refuse them rather than run a different model silently.
    match f.get("hidden_act") {
        None => {}
        Some(Value::String(s)) if s == "silu" => {}
        Some(v) => {
            return Err(f.err(
                FormatErrorKind::Unsupported,
                "hidden_act",
                format!("activation {} is not supported: expected \"silu\"", show(v)),
            ))
        }
    }
    if let Some(v) = f.get("rope_scaling") {
        return Err(f.err(
            FormatErrorKind::Unsupported,
            "rope_scaling",
            format!("rotary scaling is not supported: expected null or absent, found {}", show(v)),
        ));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if f.opt_bool(key, false)? {
            return Err(f.err(
                FormatErrorKind::Unsupported,
                key,
                "linear layers with bias are not supported: expected false or absent, found true",
            ));
        }
    }

    let hidden_size = f.req_usize("hidden_size", MAX_DIM)?;
    let intermediate_size = f.req_usize("intermediate_size", MAX_DIM)?;
    let num_attention_heads = f.req_usize("num_attention_heads", MAX_DIM)?;
    let num_key_value_heads = f.opt_usize("num_key_value_heads", MAX_DIM)?.unwrap_or(num_attention_heads);
    let num_hidden_layers = f.req_usize("num_hidden_layers", MAX_LAYERS)?;
    let vocab_size = f.req_usize("vocab_size", MAX_VOCAB)?;
    let max_position_embeddings = f.req_usize("max_position_embeddings", MAX_POSITIONS)?;
    let rms_norm_eps = f.positive_f32("rms_norm_eps", None)?;
    let rope_theta = f.positive_f32("rope_theta", Some(DEFAULT_ROPE_THETA))?;
    let tie_word_embeddings = f.opt_bool("tie_word_embeddings", false)?;
    let torch_dtype = f.torch_dtype()?;

    if hidden_size % num_attention_heads != 0 {
        return Err(f.err(
            FormatErrorKind::InvalidValue,
            "num_attention_heads",
            format!("hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_attention_heads})"),
        ));
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(f.err(
            FormatErrorKind::InvalidValue,
            "num_key_value_heads",
            format!(
                "num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads \
                 ({num_key_value_heads})"
            ),
        ));
    }
    let head_dim = hidden_size / num_attention_heads;
    if head_dim % 2 != 0 {
        return Err(f.err(
            FormatErrorKind::InvalidValue,
            "num_attention_heads",
            format!(
                "head dimension hidden_size / num_attention_heads = {hidden_size} / {num_attention_heads} = \
                 {head_dim} must be even: rotary embeddings rotate pairs of dimensions"
            ),
        ));
    }
    if let Some(v) = f.get("head_dim") {
        if v.as_u64() != Some(head_dim as u64) {
            return Err(f.err(
                FormatErrorKind::Unsupported,
                "head_dim",
                format!(
                    "expected hidden_size / num_attention_heads = {head_dim}, found {}: a separate head dimension \
                     is not supported",
                    show(v)
                ),
            ));
        }
    }

    let bos_token_id = f.token_id("bos_token_id", 1, vocab_size)?;
    let eos_token_id = f.token_id("eos_token_id", 2, vocab_size)?;
    let pad_token_id = f.pad_token_id(vocab_size)?;

    Ok(ModelConfig {
        arch,
        hidden_size,
        intermediate_size,
        num_attention_heads,
        num_key_value_heads,
        num_hidden_layers,
        head_dim,
        rms_norm_eps,
        vocab_size,
        max_position_embeddings,
        rope_theta,
        bos_token_id,
        eos_token_id,
        pad_token_id,
        tie_word_embeddings,
        torch_dtype,
    })
}

/// Parse and validate `quantize_config.json`. `file` is the name used in errors.
///
/// The same fields appear in the `quantization_config` object that newer `config.json` files embed; a caller may
/// pass that object's JSON here as well.
pub fn parse_quant_config(file: &str, bytes: &[u8]) -> Result<QuantConfig, FormatError> {
    let root = parse_object(file, bytes)?;
    let f = Fields { file, map: &root };

    // Other packings use the same file name but another bit layout; running them as AutoGPTQ would be silently wrong.
    for (key, want) in [("quant_method", "gptq"), ("checkpoint_format", "gptq")] {
        match f.get(key) {
            None => {}
            Some(Value::String(s)) if s == want => {}
            Some(v) => {
                return Err(f.err(
                    FormatErrorKind::Unsupported,
                    key,
                    format!("{} is not supported: expected \"{want}\"", show(v)),
                ))
            }
        }
    }
    if f.opt_bool("is_marlin_format", false)? {
        return Err(f.err(
            FormatErrorKind::Unsupported,
            "is_marlin_format",
            "the Marlin packing is not supported: expected the AutoGPTQ layout (false or absent)",
        ));
    }

    // AutoGPTQ also writes 2- and 3-bit checkpoints (3 bits even straddle word boundaries); only 4 and 8 run here.
    let bits = match f.get("bits") {
        None => return Err(f.err(FormatErrorKind::MissingField, "bits", "required field is absent: expected 4 or 8")),
        Some(v) => match v.as_i64() {
            Some(b @ (4 | 8)) => b as u32,
            Some(b) if b > 0 && b <= 64 => {
                return Err(f.err(
                    FormatErrorKind::Unsupported,
                    "bits",
                    format!("{b}-bit quantization is not supported: expected 4 or 8"),
                ))
            }
            _ => {
                return Err(f.err(FormatErrorKind::InvalidValue, "bits", format!("expected 4 or 8, found {}", show(v))))
            }
        },
    };

    let group_size = match f.get("group_size") {
        None => {
            return Err(f.err(
                FormatErrorKind::MissingField,
                "group_size",
                "required field is absent: expected a positive integer or -1",
            ))
        }
        Some(v) => match v.as_i64() {
            Some(-1) => None,
            Some(g) if g > 0 && (g as u64) <= MAX_DIM as u64 => Some(g as usize),
            _ => {
                return Err(f.err(
                    FormatErrorKind::InvalidValue,
                    "group_size",
                    format!("expected a positive integer up to {MAX_DIM} or -1, found {}", show(v)),
                ))
            }
        },
    };

    let desc_act = f.opt_bool("desc_act", false)?;
    let sym = f.opt_bool("sym", true)?;
    let model_file_base_name = match f.get("model_file_base_name") {
        None => None,
        Some(Value::String(s)) => {
            if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) {
                return Err(f.err(
                    FormatErrorKind::InvalidValue,
                    "model_file_base_name",
                    format!(
                        "expected a plain file name without directories, found {}",
                        show(&Value::String(s.clone()))
                    ),
                ));
            }
            Some(s.clone())
        }
        Some(v) => {
            return Err(f.err(
                FormatErrorKind::InvalidValue,
                "model_file_base_name",
                format!("expected a string, found {}", show(v)),
            ))
        }
    };

    Ok(QuantConfig { bits, group_size, desc_act, sym, model_file_base_name })
}

/// Parse `bytes` as a JSON object; anything else is `InvalidJson` naming `file`.
pub(crate) fn parse_object(file: &str, bytes: &[u8]) -> Result<Map<String, Value>, FormatError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(FormatError::new(
            FormatErrorKind::InvalidJson,
            file,
            format!("expected a JSON object at the top level, found {}", show(&other)),
        )),
        Err(e) => Err(FormatError::new(FormatErrorKind::InvalidJson, file, format!("not valid JSON: {e}"))),
    }
}

/// A short rendering of a JSON value for "found ..." in messages: scalars as written, containers by kind, long
/// strings cut so that a hostile file cannot make an error message huge.
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for (i, c) in s.chars().enumerate() {
                if i == 40 {
                    out.push('…');
                    break;
                }
                out.extend(c.escape_debug());
            }
            out.push('"');
            out
        }
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// The fields of one JSON object and the file they came from, so that every accessor can name both in errors.
struct Fields<'a> {
    file: &'a str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, kind: FormatErrorKind, field: &str, detail: impl Into<String>) -> FormatError {
        FormatError::new(kind, self.file, detail).with_subject(field)
    }

    /// The field's value; `null` counts as absent, as Hugging Face writes `null` for "not set".
    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn req_usize(&self, field: &str, max: usize) -> Result<usize, FormatError> {
        match self.opt_usize(field, max)? {
            Some(v) => Ok(v),
            None => Err(self.err(
                FormatErrorKind::MissingField,
                field,
                format!("required field is absent: expected a positive integer up to {max}"),
            )),
        }
    }

    fn opt_usize(&self, field: &str, max: usize) -> Result<Option<usize>, FormatError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        match v.as_u64() {
            Some(n) if n > 0 && n <= max as u64 => Ok(Some(n as usize)),
            Some(n) if n > max as u64 => Err(self.err(
                FormatErrorKind::InvalidValue,
                field,
                format!("expected a positive integer up to {max}, found {n}: larger than any model this engine runs"),
            )),
            _ => Err(self.err(
                FormatErrorKind::InvalidValue,
                field,
                format!("expected a positive integer, found {}", show(v)),
            )),
        }
    }

    fn positive_f32(&self, field: &str, default: Option<f32>) -> Result<f32, FormatError> {
        let v = match (self.get(field), default) {
            (Some(v), _) => v,
            (None, Some(d)) => return Ok(d),
            (None, None) => {
                return Err(self.err(
                    FormatErrorKind::MissingField,
                    field,
                    "required field is absent: expected a positive number",
                ))
            }
        };
        // Checked after narrowing too: 1e-50 is positive as f64 but zero as f32, and 1e300 is infinite as f32.
        match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 && (x as f32).is_finite() && (x as f32) > 0.0 => Ok(x as f32),
            _ => Err(self.err(
                FormatErrorKind::InvalidValue,
                field,
                format!("expected a finite positive number (representable as f32), found {}", show(v)),
            )),
        }
    }

    fn opt_bool(&self, field: &str, default: bool) -> Result<bool, FormatError> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(
                FormatErrorKind::InvalidValue,
                field,
                format!("expected true or false, found {}", show(v)),
            )),
        }
    }

    /// A token id: an integer, or a list whose first entry is used (some configs list several end tokens).
    fn token_id(&self, field: &str, default: u32, vocab: usize) -> Result<u32, FormatError> {
        let v = match self.get(field) {
            None => default as u64,
            Some(Value::Array(items)) => match items.first().and_then(Value::as_u64) {
                Some(id) => id,
                None => {
                    return Err(self.err(
                        FormatErrorKind::InvalidValue,
                        field,
                        "expected a token id or a non-empty list of token ids",
                    ))
                }
            },
            Some(v) => match v.as_u64() {
                Some(id) => id,
                None => {
                    return Err(self.err(
                        FormatErrorKind::InvalidValue,
                        field,
                        format!("expected a token id (a non-negative integer), found {}", show(v)),
                    ))
                }
            },
        };
        if v >= vocab as u64 {
            return Err(self.err(
                FormatErrorKind::InvalidValue,
                field,
                format!("token id {v} is not below vocab_size ({vocab})"),
            ));
        }
        Ok(v as u32)
    }

    /// `torch_dtype`: absent means float16, as Hugging Face assumes for GPTQ checkpoints.
    fn torch_dtype(&self) -> Result<TorchDtype, FormatError> {
        match self.get("torch_dtype") {
            None => Ok(TorchDtype::Float16),
            Some(Value::String(s)) => match s.as_str() {
                "float16" | "half" => Ok(TorchDtype::Float16),
                "bfloat16" => Ok(TorchDtype::Bfloat16),
                "float32" | "float" => Ok(TorchDtype::Float32),
                _ => Err(self.err(
                    FormatErrorKind::Unsupported,
                    "torch_dtype",
                    format!(
                        "{} is not supported: expected \"float16\", \"bfloat16\" or \"float32\"",
                        show(&Value::String(s.clone()))
                    ),
                )),
            },
            Some(v) => Err(self.err(
                FormatErrorKind::InvalidValue,
                "torch_dtype",
                format!("expected a dtype name such as \"float16\", found {}", show(v)),
            )),
        }
    }

    /// `pad_token_id` is optional and unused by inference; old LLaMA configs write `-1` for "none".
    fn pad_token_id(&self, vocab: usize) -> Result<Option<u32>, FormatError> {
        let Some(v) = self.get("pad_token_id") else { return Ok(None) };
        match (v.as_u64(), v.as_i64()) {
            (Some(id), _) if id < vocab as u64 => Ok(Some(id as u32)),
            (None, Some(n)) if n < 0 => Ok(None),
            _ => Err(self.err(
                FormatErrorKind::InvalidValue,
                "pad_token_id",
                format!("expected a token id below vocab_size ({vocab}), found {}", show(v)),
            )),
        }
    }

    /// Which naming the checkpoint uses, from `architectures` (preferred) and `model_type`, which must agree.
    fn arch(&self) -> Result<Arch, FormatError> {
        let model_type = match self.get("model_type") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(v) => {
                return Err(self.err(
                    FormatErrorKind::InvalidValue,
                    "model_type",
                    format!("expected a string, found {}", show(v)),
                ))
            }
        };
        let from_arch = match self.get("architectures") {
            None => None,
            Some(Value::Array(items)) => match items.first() {
                Some(Value::String(name)) => Some(match name.as_str() {
                    "BaiChuanForCausalLM" => Arch::Baichuan,
                    "LlamaForCausalLM" => Arch::Llama,
                    // Same model_type, different computation: Baichuan-13B uses ALiBi instead of rotary embeddings
                    // and Baichuan2 normalizes lm_head. Running them as Baichuan-7B would produce garbage.
                    "BaichuanForCausalLM" => {
                        return Err(self.err(
                            FormatErrorKind::Unsupported,
                            "architectures",
                            "\"BaichuanForCausalLM\" (Baichuan-13B or Baichuan2) is not supported: expected \
                             \"BaiChuanForCausalLM\" (Baichuan-7B) or \"LlamaForCausalLM\"",
                        ))
                    }
                    _ => {
                        return Err(self.err(
                            FormatErrorKind::Unsupported,
                            "architectures",
                            format!(
                                "architecture {} is not supported: expected \"BaiChuanForCausalLM\" or \
                                 \"LlamaForCausalLM\"",
                                show(&Value::String(name.clone()))
                            ),
                        ))
                    }
                }),
                _ => {
                    return Err(self.err(
                        FormatErrorKind::InvalidValue,
                        "architectures",
                        "expected a non-empty list of strings such as [\"BaiChuanForCausalLM\"]",
                    ))
                }
            },
            Some(v) => {
                return Err(self.err(
                    FormatErrorKind::InvalidValue,
                    "architectures",
                    format!("expected a list of strings, found {}", show(v)),
                ))
            }
        };
        let from_type = match model_type {
            None => None,
            Some("baichuan") => Some(Arch::Baichuan),
            Some("llama") => Some(Arch::Llama),
            Some(other) => {
                return Err(self.err(
                    FormatErrorKind::Unsupported,
                    "model_type",
                    format!(
                        "model type {} is not supported: expected \"baichuan\" or \"llama\"",
                        show(&Value::String(other.to_string()))
                    ),
                ))
            }
        };
        match (from_arch, from_type) {
            (Some(a), Some(t)) if a != t => Err(self.err(
                FormatErrorKind::InvalidValue,
                "model_type",
                format!(
                    "\"{}\" contradicts architectures [\"{}\"]: expected \"{}\"",
                    t.model_type(),
                    a.hf_architecture(),
                    a.model_type()
                ),
            )),
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Err(self.err(
                FormatErrorKind::MissingField,
                "architectures",
                "neither `architectures` nor `model_type` is given: expected [\"BaiChuanForCausalLM\"] or \
                 [\"LlamaForCausalLM\"]",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAICHUAN: &str = r#"{
        "architectures": ["BaiChuanForCausalLM"], "auto_map": {"AutoConfig": "configuration_baichuan.BaiChuanConfig"},
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
        "model_type": "baichuan", "num_attention_heads": 32, "num_hidden_layers": 32, "pad_token_id": 0,
        "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "torch_dtype": "float16",
        "transformers_version": "4.29.1", "use_cache": true, "vocab_size": 64000
    }"#;

    fn with(key: &str, value: &str) -> alloc::vec::Vec<u8> {
        let mut v: Value = serde_json::from_str(BAICHUAN).unwrap();
        let obj = v.as_object_mut().unwrap();
        if value.is_empty() {
            obj.remove(key);
        } else {
            obj.insert(key.into(), serde_json::from_str(value).unwrap());
        }
        serde_json::to_vec(&v).unwrap()
    }

    fn err(bytes: &[u8]) -> FormatError {
        parse_model_config("config.json", bytes).unwrap_err()
    }

    #[test]
    fn baichuan_7b_config_parses() {
        let c = parse_model_config("config.json", BAICHUAN.as_bytes()).unwrap();
        assert_eq!(c.arch, Arch::Baichuan);
        assert_eq!((c.hidden_size, c.intermediate_size, c.num_hidden_layers), (4096, 11008, 32));
        assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (32, 32, 128));
        assert_eq!(c.qkv_dim(), 3 * 4096);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert_eq!((c.bos_token_id, c.eos_token_id, c.pad_token_id), (1, 2, Some(0)));
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn negative_size_names_field_and_value() {
        let e = err(&with("hidden_size", "-3"));
        assert_eq!(e.kind, FormatErrorKind::InvalidValue);
        assert_eq!(e.to_string(), "config.json: `hidden_size`: expected a positive integer, found -3");
    }

    #[test]
    fn zero_and_absurd_sizes_are_rejected() {
        for (key, value) in [
            ("hidden_size", "0"),
            ("num_hidden_layers", "0"),
            ("vocab_size", "0"),
            ("hidden_size", "2097152"),
            ("num_hidden_layers", "1025"),
            ("vocab_size", "8388608"),
            ("intermediate_size", "1e30"),
            ("intermediate_size", "\"11008\""),
            ("rms_norm_eps", "0"),
            ("rms_norm_eps", "-1e-6"),
            ("rms_norm_eps", "1e-60"),
            ("rope_theta", "1e300"),
            ("rope_theta", "\"big\""),
        ] {
            let e = err(&with(key, value));
            assert_eq!(e.kind, FormatErrorKind::InvalidValue, "{key}={value}: {e}");
            assert_eq!(e.subject.as_deref(), Some(key));
        }
    }

    #[test]
    fn inconsistent_sizes_are_rejected() {
        let e = err(&with("num_attention_heads", "30"));
        assert_eq!(e.kind, FormatErrorKind::InvalidValue);
        assert!(e.detail.contains("multiple of num_attention_heads"), "{e}");
        let e = err(&with("num_key_value_heads", "5"));
        assert_eq!(e.kind, FormatErrorKind::InvalidValue);
        // 4096 / 4096 = head_dim 1: odd.
        let e = err(&with("num_attention_heads", "4096"));
        assert!(e.detail.contains("must be even"), "{e}");
        let e = err(&with("eos_token_id", "64000"));
        assert_eq!(e.subject.as_deref(), Some("eos_token_id"));
        let e = err(&with("head_dim", "64"));
        assert_eq!(e.kind, FormatErrorKind::Unsupported);
    }

    #[test]
    fn torch_dtype_says_which_float_tensors_to_expect() {
        let dtype = |v: &str| parse_model_config("config.json", &with("torch_dtype", v)).map(|c| c.torch_dtype);
        assert_eq!(dtype(r#""float16""#), Ok(TorchDtype::Float16));
        assert_eq!(dtype(""), Ok(TorchDtype::Float16));
        assert_eq!(dtype(r#""bfloat16""#), Ok(TorchDtype::Bfloat16));
        assert_eq!(dtype(r#""float32""#), Ok(TorchDtype::Float32));
        let e = dtype(r#""float8_e4m3fn""#).unwrap_err();
        assert_eq!((e.kind, e.subject.as_deref()), (FormatErrorKind::Unsupported, Some("torch_dtype")));
        assert!(e.detail.contains("float8_e4m3fn") && e.detail.contains("\"bfloat16\""), "{e}");
        assert_eq!(dtype("16").unwrap_err().kind, FormatErrorKind::InvalidValue);
    }

    #[test]
    fn missing_fields_are_named() {
        for key in ["hidden_size", "vocab_size", "rms_norm_eps", "max_position_embeddings"] {
            let e = err(&with(key, ""));
            assert_eq!(e.kind, FormatErrorKind::MissingField, "{key}");
            assert_eq!(e.subject.as_deref(), Some(key));
        }
    }

    #[test]
    fn invalid_json() {
        for bad in [&b"{"[..], b"", b"[1,2]", b"\xff\xfe", b"{\"a\":1} x"] {
            assert_eq!(err(bad).kind, FormatErrorKind::InvalidJson);
        }
    }

    #[test]
    fn architectures_and_types() {
        let e = err(&with("architectures", r#"["MistralForCausalLM"]"#));
        assert_eq!(e.kind, FormatErrorKind::Unsupported);
        assert!(e.detail.contains("MistralForCausalLM"));
        assert_eq!(err(&with("architectures", r#"["BaichuanForCausalLM"]"#)).kind, FormatErrorKind::Unsupported);
        assert_eq!(err(&with("model_type", r#""mistral""#)).kind, FormatErrorKind::Unsupported);
        assert_eq!(err(&with("model_type", r#""llama""#)).kind, FormatErrorKind::InvalidValue);
        assert_eq!(err(&with("hidden_act", r#""gelu""#)).kind, FormatErrorKind::Unsupported);
        assert_eq!(err(&with("rope_scaling", r#"{"type":"linear","factor":2}"#)).kind, FormatErrorKind::Unsupported);
        // Without `architectures` the model type decides.
        let c = parse_model_config("config.json", &with("architectures", "")).unwrap();
        assert_eq!(c.arch, Arch::Baichuan);
    }

    #[test]
    fn llama_gqa_and_token_lists() {
        let mut v: Value = serde_json::from_str(BAICHUAN).unwrap();
        let o = v.as_object_mut().unwrap();
        o.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
        o.insert("model_type".into(), "llama".into());
        o.insert("num_key_value_heads".into(), 8.into());
        o.insert("rope_theta".into(), serde_json::json!(500000.0));
        o.insert("eos_token_id".into(), serde_json::json!([7, 2]));
        o.insert("pad_token_id".into(), serde_json::json!(-1));
        o.insert("tie_word_embeddings".into(), true.into());
        let c = parse_model_config("config.json", &serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!((c.num_key_value_heads, c.kv_dim(), c.qkv_dim()), (8, 1024, 4096 + 2048));
        assert_eq!((c.rope_theta, c.eos_token_id, c.pad_token_id), (500000.0, 7, None));
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn quant_config() {
        let q = br#"{"bits": 4, "group_size": 128, "damp_percent": 0.01, "desc_act": false, "sym": true,
            "true_sequential": true, "model_name_or_path": null, "model_file_base_name": "gptq_model-4bit-128g"}"#;
        let q = parse_quant_config("quantize_config.json", q).unwrap();
        assert_eq!(q.group_size, Some(128));
        assert_eq!(q.group_size_for(4096), 128);
        assert_eq!(q.model_file_base_name.as_deref(), Some("gptq_model-4bit-128g"));
        let q = parse_quant_config("q", br#"{"bits": 4, "group_size": -1, "desc_act": true, "sym": false}"#).unwrap();
        assert_eq!((q.group_size, q.desc_act, q.sym, q.group_size_for(96)), (None, true, false, 96));

        let q = parse_quant_config("q", br#"{"bits": 8, "group_size": 32, "desc_act": true, "sym": false}"#).unwrap();
        assert_eq!((q.bits, q.group_size, q.desc_act, q.sym), (8, Some(32), true, false));
        for b in [2, 3, 5, 16] {
            let bytes = format!(r#"{{"bits": {b}, "group_size": 128}}"#);
            let e = parse_quant_config("quantize_config.json", bytes.as_bytes()).unwrap_err();
            assert_eq!(e.kind, FormatErrorKind::Unsupported);
            assert_eq!(
                e.to_string(),
                format!("quantize_config.json: `bits`: {b}-bit quantization is not supported: expected 4 or 8")
            );
        }
        for bad in [
            &br#"{"bits": 4, "group_size": 0}"#[..],
            br#"{"bits": 4, "group_size": -2}"#,
            br#"{"bits": -4, "group_size": 128}"#,
            br#"{"bits": 4, "group_size": 128, "sym": "yes"}"#,
            br#"{"bits": 4, "group_size": 128, "model_file_base_name": "../etc/passwd"}"#,
        ] {
            assert_eq!(parse_quant_config("q", bad).unwrap_err().kind, FormatErrorKind::InvalidValue);
        }
        let e = parse_quant_config("q", br#"{"bits": 4, "group_size": 128, "checkpoint_format": "gptq_v2"}"#);
        assert_eq!(e.unwrap_err().kind, FormatErrorKind::Unsupported);
        assert_eq!(parse_quant_config("q", br#"{"group_size": 128}"#).unwrap_err().kind, FormatErrorKind::MissingField);
    }
}

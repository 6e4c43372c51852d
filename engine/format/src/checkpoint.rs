//! Safetensors shards + configs → a validated [`ModelDesc`].
//!
//! Each shard's header is parsed and checked by `safetensors::SafeTensors::read_metadata` (header length, UTF-8,
//! JSON, contiguous non-overlapping offsets that cover exactly the rest of the file); its errors are translated
//! into [`FormatErrorKind`] classes naming the shard. Then the tensors the config implies are taken out one by one
//! — dtype, shape and alignment checked, `g_idx` entries range-checked — and whatever is left over becomes a warning,
//! not an error, since AutoGPTQ writes harmless extras such as `*.bias`.
//!
//! Nothing here indexes untrusted data without a bounds check and all offsets come from the validated header, so
//! no input can make it panic; the fuzz targets in `fuzz/` hold it to that.

use alloc::collections::btree_map::Entry;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use safetensors::tensor::{Metadata, SafeTensorError, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::config::{parse_object, show, Arch, ModelConfig, QuantConfig, TorchDtype};
use crate::desc::{DType, LayerDesc, Linear, ModelDesc, Projection, TensorRef};
use crate::error::{FormatError, FormatErrorKind};
use crate::gptq::{self, Bits};

/// The largest header the safetensors format (and its reference parser) accepts.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// At most this many warning lines; a hostile file with a million extra tensors should not make a million lines.
const MAX_WARNINGS: usize = 64;

/// One safetensors file: its name (for errors) and all of its bytes.
#[derive(Clone, Copy)]
pub struct Shard<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// Validate the shards against the config and build the description of the model.
///
/// `quant` is `None` for an unquantized (fp16 or bf16) checkpoint. Every expected tensor must be present exactly once
/// across the shards with the dtype and shape the config implies; tensors must lie inside their file, be aligned to
/// their element size, and not overlap; every `g_idx` entry must name an existing group.
pub fn describe(
    config: &ModelConfig,
    quant: Option<&QuantConfig>,
    shards: &[Shard<'_>],
) -> Result<ModelDesc, FormatError> {
    let bits = check_config(config, quant)?;
    if let Some(bits) = bits {
        check_gptq_dims(config, bits)?;
    }
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for (index, shard) in shards.iter().enumerate() {
        for t in read_shard(shard)? {
            match found.entry(t.name) {
                Entry::Occupied(e) => {
                    let first = shards.get(e.get().shard).map_or("?", |s| s.name);
                    return Err(FormatError::new(
                        FormatErrorKind::Inconsistent,
                        shard.name,
                        format!("tensor also present in {first}: expected each tensor exactly once across shards"),
                    )
                    .with_subject(e.key().as_str()));
                }
                Entry::Vacant(v) => {
                    v.insert(Found { shard: index, dtype: t.dtype, shape: t.shape, start: t.start, len: t.len });
                }
            }
        }
    }

    let gptq = quant.zip(bits);
    let mut l = Layout { config, gptq, shards, found, warnings: Vec::new() };
    let c = config;
    let (hidden, inter) = (c.hidden_size, c.intermediate_size);

    let embed_tokens =
        l.take_float("model.embed_tokens.weight", &[c.vocab_size, hidden], "[vocab_size, hidden_size]")?;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let input_layernorm = l.take_float(&format!("{p}.input_layernorm.weight"), &[hidden], "[hidden_size]")?;
        let qkv = match c.arch {
            Arch::Baichuan => {
                Projection { parts: vec![l.linear(&format!("{p}.self_attn.W_pack"), hidden, c.qkv_dim())?] }
            }
            Arch::Llama => Projection {
                parts: vec![
                    l.linear(&format!("{p}.self_attn.q_proj"), hidden, c.q_dim())?,
                    l.linear(&format!("{p}.self_attn.k_proj"), hidden, c.kv_dim())?,
                    l.linear(&format!("{p}.self_attn.v_proj"), hidden, c.kv_dim())?,
                ],
            },
        };
        let o_proj = l.linear(&format!("{p}.self_attn.o_proj"), c.q_dim(), hidden)?;
        let post_attention_layernorm =
            l.take_float(&format!("{p}.post_attention_layernorm.weight"), &[hidden], "[hidden_size]")?;
        let gate_proj = l.linear(&format!("{p}.mlp.gate_proj"), hidden, inter)?;
        let up_proj = l.linear(&format!("{p}.mlp.up_proj"), hidden, inter)?;
        let down_proj = l.linear(&format!("{p}.mlp.down_proj"), inter, hidden)?;
        layers.push(LayerDesc {
            input_layernorm,
            qkv,
            o_proj,
            post_attention_layernorm,
            gate_proj,
            up_proj,
            down_proj,
        });
    }
    let norm = l.take_float("model.norm.weight", &[hidden], "[hidden_size]")?;
    let lm_head = if c.tie_word_embeddings {
        if let Some(f) = l.found.remove("lm_head.weight") {
            let file = l.shard_name(f.shard);
            l.warnings.push(format!(
                "`lm_head.weight` in {file} is ignored: config.json sets tie_word_embeddings, so the output layer is \
                 model.embed_tokens.weight"
            ));
        }
        embed_tokens.clone()
    } else {
        l.take_float("lm_head.weight", &[c.vocab_size, hidden], "[vocab_size, hidden_size]")?
    };

    l.warn_extras();
    Ok(ModelDesc {
        config: config.clone(),
        quant: quant.cloned(),
        shards: shards.iter().map(|s| s.name.to_string()).collect(),
        embed_tokens,
        layers,
        norm,
        lm_head,
        warnings: l.warnings,
    })
}

/// The invariants `parse_model_config` / `parse_quant_config` establish, re-checked because the structs have public
/// fields and may be built by hand: with them, no size computed below can divide by zero or overflow. Returns the
/// GPTQ bit width (`None` for an unquantized checkpoint).
fn check_config(c: &ModelConfig, quant: Option<&QuantConfig>) -> Result<Option<Bits>, FormatError> {
    use crate::config::{MAX_DIM, MAX_LAYERS, MAX_VOCAB};
    let bounded = [
        ("hidden_size", c.hidden_size, MAX_DIM),
        ("intermediate_size", c.intermediate_size, MAX_DIM),
        ("num_attention_heads", c.num_attention_heads, MAX_DIM),
        ("num_key_value_heads", c.num_key_value_heads, MAX_DIM),
        ("head_dim", c.head_dim, MAX_DIM),
        ("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS),
        ("vocab_size", c.vocab_size, MAX_VOCAB),
        ("group_size", quant.and_then(|q| q.group_size).unwrap_or(1), MAX_DIM),
    ];
    for (field, v, max) in bounded {
        if v == 0 || v > max {
            return Err(FormatError::new(
                FormatErrorKind::InvalidValue,
                "config.json",
                format!("expected 1..={max}, found {v}"),
            )
            .with_subject(field));
        }
    }
    if c.num_attention_heads.checked_mul(c.head_dim) != Some(c.hidden_size)
        || c.num_attention_heads % c.num_key_value_heads != 0
    {
        return Err(FormatError::new(
            FormatErrorKind::InvalidValue,
            "config.json",
            format!(
                "expected hidden_size = num_attention_heads × head_dim and num_attention_heads a multiple of \
                 num_key_value_heads, found {} = {} × {} with {} key/value heads",
                c.hidden_size, c.num_attention_heads, c.head_dim, c.num_key_value_heads
            ),
        )
        .with_subject("num_attention_heads"));
    }
    let Some(q) = quant else { return Ok(None) };
    match Bits::from_count(q.bits) {
        Some(bits) => Ok(Some(bits)),
        None => Err(FormatError::new(
            FormatErrorKind::Unsupported,
            "quantize_config.json",
            format!("{}-bit quantization is not supported: expected 4 or 8", q.bits),
        )
        .with_subject("bits")),
    }
}

/// GPTQ packs `32 / bits` rows (qweight) and columns (qzeros) per 32-bit word — 8 at 4 bits, 4 at 8 bits — so every
/// linear's in and out features must be multiples of that; checked on the config first so that the error names the
/// config field, not a tensor.
fn check_gptq_dims(c: &ModelConfig, bits: Bits) -> Result<(), FormatError> {
    let dims = [
        ("hidden_size", c.hidden_size),
        ("intermediate_size", c.intermediate_size),
        ("num_key_value_heads", c.kv_dim()),
        ("num_attention_heads", c.q_dim()),
    ];
    let per_word = bits.per_word();
    for (field, v) in dims {
        if v % per_word != 0 {
            let what = match field {
                "num_key_value_heads" => "the key/value width num_key_value_heads × head_dim",
                "num_attention_heads" => "the attention width num_attention_heads × head_dim",
                _ => field,
            };
            return Err(FormatError::new(
                FormatErrorKind::InvalidValue,
                "config.json",
                format!(
                    "{what} = {v} is not a multiple of {per_word}: GPTQ int{} packs {per_word} values per 32-bit \
                     word, so no {}-bit GPTQ checkpoint can have this shape",
                    bits.count(),
                    bits.count()
                ),
            )
            .with_subject(field));
        }
    }
    Ok(())
}

/// A tensor entry of one shard's header, with its absolute byte range in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTensor {
    pub name: String,
    /// The dtype as safetensors names it (`"F16"`, `"BF16"`, ...).
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file: `8 + header length + data_offsets.0`.
    pub start: usize,
    pub len: usize,
}

/// Parse and validate one shard's header (every structural check of the safetensors format) and list its tensors
/// in file order. Errors name the shard and, where one is at fault, the tensor.
pub fn read_shard(shard: &Shard<'_>) -> Result<Vec<ShardTensor>, FormatError> {
    let bytes = shard.bytes;
    let err = |kind, detail: String| FormatError::new(kind, shard.name, detail);
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(if bytes.is_empty() {
            err(
                FormatErrorKind::Truncated,
                "the file is empty: expected a safetensors file (8-byte header length, JSON header, tensor data)"
                    .to_string(),
            )
        } else {
            err(
                FormatErrorKind::Truncated,
                format!("the file is {} bytes long: expected at least the 8-byte header length", bytes.len()),
            )
        });
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let after = (bytes.len() - 8) as u64;
    if header_len > MAX_HEADER_LEN {
        return Err(err(
            FormatErrorKind::HeaderTooLarge,
            format!(
                "the header length field says {header_len} bytes: expected at most {MAX_HEADER_LEN} (is this a \
                 safetensors file?)"
            ),
        ));
    }
    if header_len > after {
        return Err(err(
            FormatErrorKind::Truncated,
            format!(
                "the header length field says {header_len} bytes but only {after} bytes follow it: the file is \
                 truncated"
            ),
        ));
    }

    let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| map_safetensors_error(shard, header_len, e))?;
    // `n + 8 <= bytes.len()` and every data offset lies inside the file: read_metadata checked both.
    let base = n.saturating_add(8);
    let mut out = Vec::new();
    for name in meta.offset_keys() {
        let Some(info) = meta.info(&name) else { continue };
        let (s, e) = info.data_offsets;
        out.push(ShardTensor {
            start: base.saturating_add(s),
            len: e.saturating_sub(s),
            dtype: info.dtype,
            shape: info.shape.clone(),
            name,
        });
    }
    Ok(out)
}

/// Translate a safetensors error into a kind and a message that names the shard and, where possible, the tensor.
fn map_safetensors_error(shard: &Shard<'_>, header_len: u64, e: SafeTensorError) -> FormatError {
    let name = shard.name;
    // Already bounds-checked by the caller; `get` keeps it panic-free regardless.
    let header = usize::try_from(header_len).ok().and_then(|n| shard.bytes.get(8..8usize.saturating_add(n)));
    let data_len = shard.bytes.len().saturating_sub(8).saturating_sub(header.map_or(0, <[u8]>::len));
    match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => FormatError::new(
            FormatErrorKind::Truncated,
            name,
            format!("the header length field says {header_len} bytes, more than the file holds: the file is truncated"),
        ),
        SafeTensorError::HeaderTooLarge => FormatError::new(
            FormatErrorKind::HeaderTooLarge,
            name,
            format!("the header length field says {header_len} bytes: expected at most {MAX_HEADER_LEN}"),
        ),
        SafeTensorError::InvalidHeader(u) => FormatError::new(
            FormatErrorKind::InvalidHeader,
            name,
            format!("the header is not valid UTF-8 ({u}): expected a JSON header"),
        ),
        SafeTensorError::InvalidHeaderDeserialization(j) => FormatError::new(
            FormatErrorKind::InvalidHeader,
            name,
            format!(
                "the header is not a valid safetensors header ({j}): expected a JSON object mapping each tensor \
                 name to {{\"dtype\", \"shape\", \"data_offsets\"}}"
            ),
        ),
        SafeTensorError::InvalidOffset(t) => FormatError::new(
            FormatErrorKind::InvalidOffsets,
            name,
            "data_offsets overlap another tensor, leave a gap, or end before they start: expected tensors stored \
             back to back from offset 0",
        )
        .with_subject(t),
        SafeTensorError::TensorInvalidInfo | SafeTensorError::ValidationOverflow | SafeTensorError::MisalignedSlice => {
            match header.and_then(find_bad_size) {
                Some((t, detail)) => FormatError::new(FormatErrorKind::InvalidOffsets, name, detail).with_subject(t),
                None => FormatError::new(
                    FormatErrorKind::InvalidOffsets,
                    name,
                    "a tensor's data_offsets disagree with its dtype and shape",
                ),
            }
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            let needed = header.and_then(|h| serde_json::from_slice::<Metadata>(h).ok()).map(|m| m.data_len());
            match needed {
                Some(needed) if needed > data_len => FormatError::new(
                    FormatErrorKind::Truncated,
                    name,
                    format!(
                        "the header describes {needed} bytes of tensor data but the file holds only {data_len}: the \
                         file is truncated"
                    ),
                ),
                Some(needed) => FormatError::new(
                    FormatErrorKind::InvalidOffsets,
                    name,
                    format!(
                        "the file holds {data_len} bytes of tensor data but the header accounts for only {needed}: \
                         expected the last tensor to end at the end of the file"
                    ),
                ),
                None => FormatError::new(
                    FormatErrorKind::InvalidOffsets,
                    name,
                    "the tensors do not cover exactly the data after the header",
                ),
            }
        }
        other => FormatError::new(FormatErrorKind::InvalidHeader, name, format!("invalid safetensors header: {other}")),
    }
}

/// Find the tensor whose byte range disagrees with its dtype and shape, for the message. Only called on a header
/// that the safetensors parser already rejected for that reason.
fn find_bad_size(header: &[u8]) -> Option<(String, String)> {
    let Value::Object(map) = serde_json::from_slice::<Value>(header).ok()? else { return None };
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let Ok(info) = serde_json::from_value::<TensorInfo>(v) else { continue };
        let (s, e) = info.data_offsets;
        let bits = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()));
        let detail = match bits {
            None => {
                format!("shape {:?} of dtype {} overflows: expected a size that fits in memory", info.shape, info.dtype)
            }
            Some(b) if b % 8 != 0 => {
                format!("shape {:?} of dtype {} is not a whole number of bytes", info.shape, info.dtype)
            }
            Some(b) if e.checked_sub(s) != Some(b / 8) => format!(
                "data_offsets [{s}, {e}] span {} bytes, but dtype {} and shape {:?} need {} bytes",
                e.wrapping_sub(s),
                info.dtype,
                info.shape,
                b / 8
            ),
            Some(_) => continue,
        };
        return Some((name, detail));
    }
    None
}

/// A tensor found in some shard, not yet matched to the layout.
struct Found {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// The matching state: tensors not yet claimed by the layout, and the warnings so far.
struct Layout<'a> {
    config: &'a ModelConfig,
    /// The quantization and its checked width; `None` for an unquantized checkpoint.
    gptq: Option<(&'a QuantConfig, Bits)>,
    shards: &'a [Shard<'a>],
    found: BTreeMap<String, Found>,
    warnings: Vec<String>,
}

impl Layout<'_> {
    fn shard_name(&self, shard: usize) -> &str {
        self.shards.get(shard).map_or("?", |s| s.name)
    }

    /// The file to name when a tensor is absent from all of them.
    fn all_shards(&self) -> String {
        match self.shards {
            [] => "(no safetensors file)".to_string(),
            [one] => one.name.to_string(),
            many => many.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
        }
    }

    /// The float dtypes this checkpoint may hold: F16, and BF16 when config.json says `torch_dtype: bfloat16`.
    fn float_dtypes(&self) -> &'static [DType] {
        match self.config.torch_dtype {
            TorchDtype::Bfloat16 => &[DType::F16, DType::BF16],
            TorchDtype::Float16 | TorchDtype::Float32 => &[DType::F16],
        }
    }

    /// [`Layout::take`] for a float tensor (embedding, norm, output layer, unquantized linear).
    fn take_float(&mut self, name: &str, shape: &[usize], dims: &str) -> Result<TensorRef, FormatError> {
        self.take(name, self.float_dtypes(), shape, dims)
    }

    /// Remove the tensor `name` from the unclaimed set and check it is one of `dtypes` with `shape` (described to
    /// the user as `dims`, e.g. `[vocab_size, hidden_size]`) and aligned to its element size.
    fn take(&mut self, name: &str, dtypes: &[DType], shape: &[usize], dims: &str) -> Result<TensorRef, FormatError> {
        let expected = dtypes.iter().map(|d| d.name()).collect::<Vec<_>>().join(" or ");
        let Some(f) = self.found.remove(name) else {
            let mut detail = format!("absent: expected a {expected} tensor of shape {shape:?} {dims}");
            if let Some(hint) = self.hint(name) {
                detail.push_str("; ");
                detail.push_str(&hint);
            }
            return Err(FormatError::new(FormatErrorKind::MissingTensor, self.all_shards(), detail).with_subject(name));
        };
        let file = self.shard_name(f.shard);
        let Some(dtype) = dtypes.iter().copied().find(|&d| same_dtype(f.dtype, d)) else {
            let mut detail = format!("expected {expected}, found {}", f.dtype);
            let float = dtypes.contains(&DType::F16);
            if float && f.dtype == Dtype::BF16 {
                if name.ends_with(".scales") {
                    detail.push_str(": GPTQ scales are float16 in the AutoGPTQ format");
                } else {
                    detail.push_str(&format!(
                        ": config.json says torch_dtype \"{}\"; a bfloat16 checkpoint says \"bfloat16\" (or convert \
                         the checkpoint to float16)",
                        self.config.torch_dtype.name()
                    ));
                }
            } else if float && matches!(f.dtype, Dtype::F32 | Dtype::F64) {
                detail.push_str(": this engine reads float16 and bfloat16 weights; convert the checkpoint to float16");
            }
            return Err(FormatError::new(FormatErrorKind::WrongDtype, file, detail).with_subject(name));
        };
        if f.shape != shape {
            return Err(FormatError::new(
                FormatErrorKind::WrongShape,
                file,
                format!("expected shape {shape:?} {dims}, found {:?}", f.shape),
            )
            .with_subject(name));
        }
        if f.start % dtype.size() != 0 {
            return Err(FormatError::new(
                FormatErrorKind::Misaligned,
                file,
                format!(
                    "data starts at byte {} of the file: expected a multiple of {} (the size of {})",
                    f.start,
                    dtype.size(),
                    dtype.name()
                ),
            )
            .with_subject(name));
        }
        Ok(TensorRef {
            name: name.to_string(),
            shard: f.shard,
            start: f.start,
            len: f.len,
            dtype,
            shape: shape.to_vec(),
        })
    }

    /// A guess at why `name` is missing, from what is present instead.
    fn hint(&self, name: &str) -> Option<String> {
        let has = |n: &str| self.found.contains_key(n);
        if let Some(prefix) = name.strip_suffix(".qweight") {
            if has(&format!("{prefix}.weight")) {
                return Some(format!(
                    "found `{prefix}.weight` instead: the checkpoint looks unquantized (fp16), but quantize_config.json \
                     describes a GPTQ checkpoint"
                ));
            }
        }
        if let Some(prefix) = name.strip_suffix(".weight") {
            if has(&format!("{prefix}.qweight")) {
                return Some(format!(
                    "found `{prefix}.qweight` instead: the checkpoint is GPTQ-quantized, but there is no \
                     quantize_config.json"
                ));
            }
        }
        if name.contains(".self_attn.W_pack.") && has(&name.replace(".W_pack.", ".q_proj.")) {
            return Some(
                "found `q_proj`/`k_proj`/`v_proj` instead: the checkpoint uses LLaMA naming, but config.json says \
                 BaiChuanForCausalLM"
                    .to_string(),
            );
        }
        if name.contains(".self_attn.q_proj.") && has(&name.replace(".q_proj.", ".W_pack.")) {
            return Some(
                "found `W_pack` instead: the checkpoint uses Baichuan naming, but config.json says LlamaForCausalLM"
                    .to_string(),
            );
        }
        if name == "lm_head.weight" {
            return Some("if the output layer shares the embedding, config.json should set tie_word_embeddings".into());
        }
        None
    }

    /// The linear layer `prefix` with `k` inputs and `n` outputs, GPTQ or fp16 as the checkpoint is.
    fn linear(&mut self, prefix: &str, k: usize, n: usize) -> Result<Linear, FormatError> {
        let Some((q, bits)) = self.gptq else {
            let weight = self.take_float(&format!("{prefix}.weight"), &[n, k], "[out_features, in_features]")?;
            return Ok(Linear::Dense { weight, in_features: k, out_features: n });
        };
        let p = bits.per_word();
        let group_size = q.group_size_for(k);
        let groups = gptq::groups(k, group_size);
        let qweight = self.take(
            &format!("{prefix}.qweight"),
            &[DType::I32],
            &[k / p, n],
            &format!("[in_features / {p}, out_features] ({}-bit)", bits.count()),
        )?;
        let qzeros = self.take(
            &format!("{prefix}.qzeros"),
            &[DType::I32],
            &[groups, n / p],
            &format!("[groups, out_features / {p}] ({}-bit)", bits.count()),
        )?;
        let scales = self.take(&format!("{prefix}.scales"), &[DType::F16], &[groups, n], "[groups, out_features]")?;
        let g_idx = self.take(&format!("{prefix}.g_idx"), &[DType::I32], &[k], "[in_features]")?;
        let g_idx_is_trivial = self.check_g_idx(&g_idx, group_size, groups)?;
        let symmetric = self.zeros_are_symmetric(&qzeros, bits)?;
        Ok(Linear::Gptq {
            bits,
            qweight,
            qzeros,
            scales,
            g_idx,
            in_features: k,
            out_features: n,
            group_size,
            groups,
            g_idx_is_trivial,
            symmetric,
        })
    }

    /// The bytes of tensor `t` in its shard (checked to lie inside it when the tensor was taken).
    fn data_of(&self, t: &TensorRef) -> Result<&[u8], FormatError> {
        self.shards.get(t.shard).and_then(|s| s.bytes.get(t.range())).ok_or_else(|| {
            // Unreachable after read_shard's checks; an error rather than a panic all the same.
            FormatError::new(
                FormatErrorKind::InvalidOffsets,
                self.shard_name(t.shard),
                "tensor data lies outside the file",
            )
            .with_subject(t.name.as_str())
        })
    }

    /// Whether every field of `qzeros` holds `2^(bits - 1) - 1`: every packed word is that value repeated.
    fn zeros_are_symmetric(&self, t: &TensorRef, bits: Bits) -> Result<bool, FormatError> {
        let sym = bits.symmetric_zeros().to_le_bytes();
        Ok(self.data_of(t)?.chunks_exact(4).all(|w| w == sym))
    }

    /// Check every `g_idx` entry names a group; return whether it is the plain `k / group_size` mapping.
    fn check_g_idx(&self, t: &TensorRef, group_size: usize, groups: usize) -> Result<bool, FormatError> {
        let file = self.shard_name(t.shard);
        let bytes = self.data_of(t)?;
        let mut trivial = true;
        for (k, word) in bytes.chunks_exact(4).enumerate() {
            let &[a, b, c, d] = word else { continue };
            let v = i32::from_le_bytes([a, b, c, d]);
            if v < 0 || v as usize >= groups {
                return Err(FormatError::new(
                    FormatErrorKind::ValueOutOfRange,
                    file,
                    format!(
                        "entry {k} is {v}: expected a group index in 0..{groups} (ceil(in_features {} / group_size \
                         {group_size}))",
                        t.numel()
                    ),
                )
                .with_subject(t.name.as_str()));
            }
            trivial &= v as usize == k / group_size;
        }
        Ok(trivial)
    }

    /// Turn the unclaimed tensors into warnings, one line per name pattern (`model.layers.{i}.x.bias` in 32 layers
    /// is one line, not 32).
    fn warn_extras(&mut self) {
        let arch = match self.config.arch {
            Arch::Baichuan => "Baichuan",
            Arch::Llama => "LLaMA",
        };
        // pattern → (count, first name, where the first one is)
        let mut patterns: BTreeMap<String, (usize, &str, String)> = BTreeMap::new();
        for (name, f) in &self.found {
            let e = patterns.entry(layer_pattern(name)).or_insert((0, name, String::new()));
            e.0 += 1;
            if e.0 == 1 {
                e.2 = format!("in {} ({} {:?})", self.shard_name(f.shard), f.dtype, f.shape);
            }
        }
        let total = patterns.len();
        let mut lines = Vec::new();
        for (i, (pattern, (count, first, place))) in patterns.into_iter().enumerate() {
            if i == MAX_WARNINGS {
                lines.push(format!("... and {} more kinds of extra tensors, also ignored", total - i));
                break;
            }
            lines.push(if count == 1 {
                format!("extra tensor `{first}` {place} is not part of the {arch} layout and is ignored")
            } else {
                format!("extra tensor `{pattern}` (in {count} layers) is not part of the {arch} layout and is ignored")
            });
        }
        self.warnings.extend(lines);
    }
}

/// `model.layers.17.mlp.up_proj.bias` → `model.layers.{i}.mlp.up_proj.bias`; other names unchanged.
fn layer_pattern(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.layers.") {
        if let Some((num, tail)) = rest.split_once('.') {
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
                return format!("model.layers.{{i}}.{tail}");
            }
        }
    }
    name.to_string()
}

fn same_dtype(found: Dtype, want: DType) -> bool {
    matches!((found, want), (Dtype::F16, DType::F16) | (Dtype::BF16, DType::BF16) | (Dtype::I32, DType::I32))
}

/// `model.safetensors.index.json`, parsed: which shard file holds each tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// The shard files the index names, sorted, each once.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        files.sort_unstable();
        files.dedup();
        files
    }
}

/// Parse a `*.safetensors.index.json`. File names in it must be plain names (no directories), so that joining them
/// to the model directory cannot reach outside it.
pub fn parse_index(file: &str, bytes: &[u8]) -> Result<ShardIndex, FormatError> {
    let root = parse_object(file, bytes)?;
    let map = match root.get("weight_map") {
        Some(Value::Object(m)) => m,
        Some(v) => {
            return Err(FormatError::new(
                FormatErrorKind::InvalidValue,
                file,
                format!("expected an object mapping tensor names to file names, found {}", show(v)),
            )
            .with_subject("weight_map"))
        }
        None => {
            return Err(FormatError::new(
                FormatErrorKind::MissingField,
                file,
                "required field is absent: expected an object mapping tensor names to file names",
            )
            .with_subject("weight_map"))
        }
    };
    let mut weight_map = BTreeMap::new();
    for (tensor, v) in map {
        let ok = match v {
            Value::String(f) if !f.is_empty() && f != "." && f != ".." && !f.contains(['/', '\\', '\0']) => Some(f),
            _ => None,
        };
        let Some(f) = ok else {
            return Err(FormatError::new(
                FormatErrorKind::InvalidValue,
                file,
                format!("weight_map entry for tensor `{tensor}`: expected a plain file name, found {}", show(v)),
            )
            .with_subject("weight_map"));
        };
        weight_map.insert(tensor.clone(), f.clone());
    }
    if weight_map.is_empty() {
        return Err(FormatError::new(FormatErrorKind::InvalidValue, file, "weight_map is empty: expected tensors")
            .with_subject("weight_map"));
    }
    Ok(ShardIndex { weight_map })
}

/// Check that the index and the shards agree: every tensor the index lists is in the shard it names, and every
/// tensor in a shard is listed for that shard. `shards` are named as in the index.
pub fn check_index(index_file: &str, index: &ShardIndex, shards: &[Shard<'_>]) -> Result<(), FormatError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for shard in shards {
        for t in read_shard(shard)? {
            match index.weight_map.get(&t.name) {
                Some(f) if f == shard.name => {}
                Some(f) => {
                    return Err(FormatError::new(
                        FormatErrorKind::Inconsistent,
                        index_file,
                        format!("the index places this tensor in {f}, but it is in {}", shard.name),
                    )
                    .with_subject(t.name))
                }
                None => {
                    return Err(FormatError::new(
                        FormatErrorKind::Inconsistent,
                        index_file,
                        format!("tensor in {} is not listed in weight_map", shard.name),
                    )
                    .with_subject(t.name))
                }
            }
            seen.insert(t.name, shard.name);
        }
    }
    for (tensor, f) in &index.weight_map {
        if !seen.contains_key(tensor) {
            return Err(FormatError::new(
                FormatErrorKind::Inconsistent,
                index_file,
                format!("weight_map places this tensor in {f}, but that file does not contain it"),
            )
            .with_subject(tensor.as_str()));
        }
    }
    Ok(())
}

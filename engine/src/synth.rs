//! Synthetic checkpoints: random weights in exactly the published layout, for tests and benchmarks.
//!
//! [`write_checkpoint`] writes a model directory that [`crate::Model::open`] loads like the real one:
//! `config.json`, `quantize_config.json` (GPTQ only), the safetensors file(s) (`gptq_model-{4,8}bit-{g}g.safetensors`
//! as AutoGPTQ names it, `model.safetensors` unquantized, or `model-0000i-of-0000N.safetensors` +
//! `model.safetensors.index.json` when sharded), `tokenizer.model` (bytes supplied by the caller),
//! `tokenizer_config.json` and `special_tokens_map.json`. Formats: 4- or 8-bit GPTQ, unquantized fp16 or bf16.
//!
//! The weights are random but numerically sane, so a real forward pass keeps activations finite and O(1): every
//! linear has weights of standard deviation about `1/sqrt(in_features)`, norms are about 1, embeddings have unit
//! variance (std 1/sqrt(hidden) when tied to the output layer) and `lm_head` gives logits of unit variance. With
//! `desc_act` the `g_idx` tensors have AutoGPTQ's act-order structure (`g_idx[perm[i]] = i / G` for a random
//! permutation), shared by the linears that read the same input, or (`g_idx_per_linear`) one per linear, as
//! AutoGPTQ writes act-order checkpoints.
//!
//! Speed: the 7B preset is ~4 GB. Data is generated in fixed 4 MiB chunks, each from its own RNG stream seeded by
//! (seed, tensor, chunk) so the output does not depend on the thread count, by rayon workers while the previous
//! batch is being written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use engine_format::config::{MAX_DIM, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB};
use engine_format::gptq::Bits;
use engine_format::write::{encode_header, HeaderEntry};
use engine_format::{Arch, DType};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::json;

use crate::error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// Tensor naming: Baichuan's fused `W_pack` or LLaMA's `q_proj`/`k_proj`/`v_proj`.
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    /// Equal to `heads` for Baichuan; fewer for LLaMA with grouped-query attention.
    pub kv_heads: usize,
    pub layers: usize,
    pub vocab: usize,
    pub max_pos: usize,
    /// GPTQ bits per weight: 4 (8 values per 32-bit word) or 8 (4 per word), AutoGPTQ's packing.
    pub bits: u32,
    /// Rows per GPTQ group; `None` writes `group_size: -1` (one group).
    pub group_size: Option<usize>,
    /// Act-order: `g_idx` is a permuted group assignment.
    pub desc_act: bool,
    /// With `desc_act`: every linear gets its own permutation — q, k, v, gate and up each theirs, as AutoGPTQ writes
    /// act-order checkpoints (it quantizes each linear separately) — instead of one per distinct input. Baichuan's
    /// W_pack is one linear, so it has one.
    pub g_idx_per_linear: bool,
    /// Symmetric quantization (every zero point 8) or asymmetric (random zero points).
    pub sym: bool,
    /// `false` writes an unquantized checkpoint (`{name}.weight` [N, K], no `quantize_config.json`).
    pub quantized: bool,
    /// Element type of every float tensor but the GPTQ scales (which AutoGPTQ keeps F16): `F16`, or `BF16` with
    /// `torch_dtype: bfloat16` in config.json (an unquantized bfloat16 checkpoint, or GPTQ with bfloat16 embeddings
    /// and norms).
    pub float_dtype: DType,
    /// Number of safetensors files; more than one also writes `model.safetensors.index.json`.
    pub shards: usize,
    pub seed: u64,
    pub rope_theta: f32,
    /// No `lm_head.weight`: the output layer is the embedding.
    pub tie_word_embeddings: bool,
    /// Written verbatim as `tokenizer.model` (unless `tokenizer_json` is set).
    pub tokenizer_model: Vec<u8>,
    /// When set, written verbatim as `tokenizer.json` instead of `tokenizer.model`, with a `tokenizer_config.json`
    /// in the style of `transformers`' fast tokenizers naming ids 1 and 2 (the `bos_token_id` and `eos_token_id` of
    /// `config.json`) as BOS and EOS, BOS added.
    pub tokenizer_json: Option<Vec<u8>>,
    /// Hidden dims (evenly spaced, at most `hidden`) whose weight in every decoder layer's feed-forward RMSNorm
    /// (`post_attention_layernorm`) is [`SynthSpec::outlier_norm_weight`] instead of ~1: the gate/up projections'
    /// normalized input then carries a few values ~30x the others, as trained models' "massive activations" do —
    /// what the GEMVs' fp16 input and sums must get right. 0: none.
    ///
    /// The attention's norm keeps none: with random weights, outliers in the q/k/v input make the attention scores
    /// ~15x larger and the softmax nearly one-hot, a model so ill-conditioned that rounding the normalized input to
    /// fp16 (what every fp16 engine does) alone moves its logits 4e-2 relative L2 from the f32 forward pass (CPU
    /// backend, measured on the `baichuan-g128-outliers` test checkpoint) — no tolerance could then tell a kernel's
    /// error from the model's. With the feed-forward norm alone that rounding costs 9e-4, as on the other checkpoints.
    pub outliers: usize,
}

impl SynthSpec {
    /// The RMSNorm weight of an outlier dim ([`SynthSpec::outliers`]). (A function, not a public constant: those
    /// reach the C header the Python package generates, whose parser takes integer constants only.)
    pub const fn outlier_norm_weight() -> f32 {
        30.0
    }

    /// A tiny Baichuan-named GPTQ model with awkward-but-valid sizes: `intermediate` 176 is not a multiple of the
    /// group size 32 (the last group of `down_proj` is partial), the vocabulary is not a power of the hidden size.
    pub fn tiny() -> Self {
        SynthSpec {
            arch: Arch::Baichuan,
            hidden: 64,
            intermediate: 176,
            heads: 4,
            kv_heads: 4,
            layers: 2,
            vocab: 1024,
            max_pos: 512,
            bits: 4,
            group_size: Some(32),
            desc_act: false,
            g_idx_per_linear: false,
            sym: true,
            quantized: true,
            float_dtype: DType::F16,
            shards: 1,
            seed: 0x5eed,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            tokenizer_model: Vec::new(),
            tokenizer_json: None,
            outliers: 0,
        }
    }

    /// The shape of TheBloke/baichuan-7B-GPTQ (`gptq_model-4bit-128g`).
    pub fn baichuan_7b() -> Self {
        SynthSpec {
            hidden: 4096,
            intermediate: 11008,
            heads: 32,
            kv_heads: 32,
            layers: 32,
            vocab: 64000,
            max_pos: 4096,
            group_size: Some(128),
            ..Self::tiny()
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// The file base name AutoGPTQ uses: `gptq_model-4bit-128g`, `gptq_model-8bit-32g`, or `gptq_model-4bit--1g`
    /// for one group.
    pub fn gptq_base_name(&self) -> String {
        format!("gptq_model-{}bit-{}g", self.bits, self.group_size.map_or(-1, |g| g as i64))
    }

    /// The packing of the GPTQ tensors; `None` when `bits` is not a width the engine reads.
    fn packing(&self) -> Option<Bits> {
        Bits::from_count(self.bits)
    }

    /// Check that the spec describes a model the engine can load; the message names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(format!("synth spec: {what}")));
        for (name, v, max) in [
            ("hidden", self.hidden, MAX_DIM),
            ("intermediate", self.intermediate, MAX_DIM),
            ("heads", self.heads, MAX_DIM),
            ("kv_heads", self.kv_heads, MAX_DIM),
            ("layers", self.layers, MAX_LAYERS),
            ("vocab", self.vocab, MAX_VOCAB),
            ("max_pos", self.max_pos, MAX_POSITIONS),
        ] {
            if v == 0 || v > max {
                return bad(format!("{name} = {v}: expected 1..={max}"));
            }
        }
        if self.hidden % self.heads != 0 {
            return bad(format!("hidden ({}) must be a multiple of heads ({})", self.hidden, self.heads));
        }
        if self.heads % self.kv_heads != 0 {
            return bad(format!("heads ({}) must be a multiple of kv_heads ({})", self.heads, self.kv_heads));
        }
        if self.head_dim() % 2 != 0 {
            return bad(format!("head dimension hidden / heads = {} must be even (rotary pairs)", self.head_dim()));
        }
        if self.arch == Arch::Baichuan && self.kv_heads != self.heads {
            return bad(format!(
                "Baichuan has no grouped-query attention: kv_heads ({}) must equal heads ({})",
                self.kv_heads, self.heads
            ));
        }
        if self.outliers > self.hidden {
            return bad(format!("outliers = {}: expected at most hidden ({})", self.outliers, self.hidden));
        }
        if self.vocab < 3 {
            return bad(format!("vocab = {}: expected at least 3 (bos 1 and eos 2 must exist)", self.vocab));
        }
        if self.g_idx_per_linear && !(self.quantized && self.desc_act) {
            return bad("g_idx_per_linear: a permutation per linear needs a quantized act-order (desc_act) spec".into());
        }
        if !matches!(self.float_dtype, DType::F16 | DType::BF16) {
            return bad(format!("float_dtype = {}: expected F16 or BF16", self.float_dtype.name()));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta = {}: expected a finite positive number", self.rope_theta));
        }
        if self.quantized {
            let Some(bits) = self.packing() else {
                return bad(format!("bits = {}: expected 4 or 8", self.bits));
            };
            let (kv_dim, p) = (self.kv_heads * self.head_dim(), bits.per_word());
            for (name, v) in
                [("hidden", self.hidden), ("intermediate", self.intermediate), ("kv_heads × head_dim", kv_dim)]
            {
                if v % p != 0 {
                    return bad(format!(
                        "{name} = {v}: {}-bit GPTQ packs {p} values per word, so it must be a multiple of {p}",
                        self.bits
                    ));
                }
            }
            if let Some(g) = self.group_size {
                if g == 0 || g > MAX_DIM {
                    return bad(format!("group_size = {g}: expected 1..={MAX_DIM}, or None for one group"));
                }
            }
        }
        let tensors = self.plan().len();
        if self.shards == 0 || self.shards > tensors {
            return bad(format!("shards = {}: expected 1..={tensors} (one tensor per shard at least)", self.shards));
        }
        Ok(())
    }

    /// `config.json` in Hugging Face's form (keys sorted, as `json.dumps(sort_keys=True)` writes them).
    fn config_json(&self) -> serde_json::Value {
        let mut c = json!({
            "architectures": [self.arch.hf_architecture()],
            "model_type": self.arch.model_type(),
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "initializer_range": 0.02,
            "max_position_embeddings": self.max_pos,
            "num_attention_heads": self.heads,
            "num_hidden_layers": self.layers,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": if self.float_dtype == DType::BF16 { "bfloat16" } else { "float16" },
            "transformers_version": "4.29.1",
            "use_cache": true,
            "vocab_size": self.vocab,
        });
        let obj = c.as_object_mut().expect("a json! object");
        match self.arch {
            Arch::Baichuan => {
                obj.insert(
                    "auto_map".into(),
                    json!({
                        "AutoConfig": "configuration_baichuan.BaiChuanConfig",
                        "AutoModelForCausalLM": "modeling_baichuan.BaiChuanForCausalLM"
                    }),
                );
                // Baichuan-7B's config has no rope_theta (the model hard-codes 10000); write it only if it differs.
                if self.rope_theta != 10000.0 {
                    obj.insert("rope_theta".into(), json!(self.rope_theta));
                }
            }
            Arch::Llama => {
                obj.insert("num_key_value_heads".into(), json!(self.kv_heads));
                obj.insert("rope_theta".into(), json!(self.rope_theta));
                obj.insert("rope_scaling".into(), serde_json::Value::Null);
                obj.insert("pretraining_tp".into(), json!(1));
            }
        }
        c
    }

    fn quantize_config_json(&self, base_name: &str) -> serde_json::Value {
        json!({
            "bits": self.bits,
            "group_size": self.group_size.map_or(-1, |g| g as i64),
            "damp_percent": 0.01,
            "desc_act": self.desc_act,
            "sym": self.sym,
            "true_sequential": true,
            "model_name_or_path": null,
            "model_file_base_name": base_name,
        })
    }

    /// Every tensor in model order, with how to fill it.
    fn plan(&self) -> Vec<TensorPlan> {
        let (h, inter, hd) = (self.hidden, self.intermediate, self.head_dim());
        let (q_dim, kv_dim) = (self.heads * hd, self.kv_heads * hd);
        let mut out = Vec::new();
        let sqrt3 = 3f32.sqrt();
        let lm_head_half_width = sqrt3 / (h as f32).sqrt();
        // Unit-variance embeddings; when tied they are also the output layer, which needs std 1/sqrt(hidden) for
        // unit-variance logits (the first RMSNorm makes the residual's scale irrelevant to the layers).
        let embed_half_width = if self.tie_word_embeddings { lm_head_half_width } else { sqrt3 };
        let float = |name: &str, shape, center, half_width| {
            TensorPlan::uniform(name, self.float_dtype, shape, center, half_width)
        };
        out.push(float("model.embed_tokens.weight", vec![self.vocab, h], 0.0, embed_half_width));
        let norm = |name: String| float(&name, vec![h], 1.0, 0.05);
        // The feed-forward norms carry the outlier dims (see SynthSpec::outliers for why not the attention's; the
        // final norm does not either: the lm_head reads no GEMV tile).
        let ffn_norm = |name: String| match self.outliers {
            0 => norm(name),
            n => TensorPlan {
                fill: Fill::Spiked { center: 1.0, half_width: 0.05, every: h / n, value: Self::outlier_norm_weight() },
                ..norm(name)
            },
        };
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            out.push(norm(format!("{p}.input_layernorm.weight")));
            // The g_idx table of each linear: by its input (q/k/v or W_pack, o_proj, gate/up, down_proj) and its
            // place among the linears reading that input (see g_idx_tables).
            let g = |input: usize, part: usize| self.g_table(l, input, part);
            match self.arch {
                Arch::Baichuan => {
                    self.linear(&mut out, &format!("{p}.self_attn.W_pack"), h, q_dim + 2 * kv_dim, g(0, 0))
                }
                Arch::Llama => {
                    self.linear(&mut out, &format!("{p}.self_attn.q_proj"), h, q_dim, g(0, 0));
                    self.linear(&mut out, &format!("{p}.self_attn.k_proj"), h, kv_dim, g(0, 1));
                    self.linear(&mut out, &format!("{p}.self_attn.v_proj"), h, kv_dim, g(0, 2));
                }
            }
            self.linear(&mut out, &format!("{p}.self_attn.o_proj"), q_dim, h, g(1, 0));
            out.push(ffn_norm(format!("{p}.post_attention_layernorm.weight")));
            self.linear(&mut out, &format!("{p}.mlp.gate_proj"), h, inter, g(2, 0));
            self.linear(&mut out, &format!("{p}.mlp.up_proj"), h, inter, g(2, 1));
            self.linear(&mut out, &format!("{p}.mlp.down_proj"), inter, h, g(3, 0));
        }
        out.push(norm("model.norm.weight".into()));
        if !self.tie_word_embeddings {
            out.push(float("lm_head.weight", vec![self.vocab, h], 0.0, lm_head_half_width));
        }
        out
    }

    /// The tensors of one linear layer with `k` inputs and `n` outputs, whose `g_idx` is table `g_table`.
    fn linear(&self, out: &mut Vec<TensorPlan>, prefix: &str, k: usize, n: usize, g_table: usize) {
        let inv_sqrt_k = 1.0 / (k as f32).sqrt();
        if !self.quantized {
            let w = TensorPlan::uniform(
                &format!("{prefix}.weight"),
                self.float_dtype,
                vec![n, k],
                0.0,
                3f32.sqrt() * inv_sqrt_k,
            );
            out.push(w);
            return;
        }
        let groups = k.div_ceil(self.group_size.unwrap_or(k));
        let bits = self.packing().expect("validate() refuses other widths before anything is planned");
        let p = bits.per_word();
        // At 4 bits q - zero has rms ≈ 4.6 (sym, zero 8) or ≈ 6.6 (asym, zero 1..16); each further bit doubles
        // both. Pick the scale so that W has std ≈ 1/sqrt(K).
        let base = if self.sym { 0.25 } else { 0.17 } * inv_sqrt_k / (1u32 << (bits.count() - 4)) as f32;
        let i32_plan =
            |name: String, shape: Vec<usize>, fill: Fill| TensorPlan { name, dtype: DType::I32, shape, fill };
        out.push(i32_plan(format!("{prefix}.qweight"), vec![k / p, n], Fill::Words));
        let zeros = if self.sym { Fill::Const(bits.symmetric_zeros()) } else { Fill::Words };
        out.push(i32_plan(format!("{prefix}.qzeros"), vec![groups, n / p], zeros));
        // U(0.5, 1.5) × base.
        out.push(TensorPlan::uniform(&format!("{prefix}.scales"), DType::F16, vec![groups, n], base, 0.5 * base));
        out.push(i32_plan(format!("{prefix}.g_idx"), vec![k], Fill::GIdx(g_table)));
    }

    /// The index in [`SynthSpec::g_idx_tables`] of the table of layer `l`'s linear number `part` among those reading
    /// input `input` (0 q/k/v or W_pack, 1 o_proj, 2 gate/up, 3 down_proj). Without `g_idx_per_linear` the linears
    /// of one input share part 0's table.
    fn g_table(&self, l: usize, input: usize, part: usize) -> usize {
        (4 * l + input) * LINEARS_PER_INPUT + if self.g_idx_per_linear { part } else { 0 }
    }

    /// The `g_idx` tables: for each layer and each of its 4 distinct linear inputs, [`LINEARS_PER_INPUT`] tables
    /// (all but the first empty unless `g_idx_per_linear`). Act-order gives each AutoGPTQ's structure:
    /// `g_idx[perm[i]] = i / G` for a random permutation.
    fn g_idx_tables(&self) -> Vec<Vec<i32>> {
        if !self.quantized {
            return Vec::new();
        }
        let (h, q_dim) = (self.hidden, self.heads * self.head_dim());
        let mut tables = Vec::with_capacity(4 * LINEARS_PER_INPUT * self.layers);
        for l in 0..self.layers {
            for (input, k) in [h, q_dim, h, self.intermediate].into_iter().enumerate() {
                for part in 0..LINEARS_PER_INPUT {
                    if part > 0 && !self.g_idx_per_linear {
                        tables.push(Vec::new());
                        continue;
                    }
                    let g = self.group_size.unwrap_or(k);
                    let mut idx: Vec<i32> = (0..k).map(|r| (r / g) as i32).collect();
                    if self.desc_act {
                        // Part 0 keeps the stream a shared table always had, so those checkpoints stay the same.
                        let stream = 0xD35C_AC70 + part as u64;
                        let mut rng = Wy::new(mix(self.seed, stream, (4 * l + input) as u64));
                        let mut perm: Vec<usize> = (0..k).collect();
                        for r in (1..k).rev() {
                            perm.swap(r, (rng.next() % (r as u64 + 1)) as usize);
                        }
                        for (i, &p) in perm.iter().enumerate() {
                            idx[p] = (i / g) as i32;
                        }
                    }
                    tables.push(idx);
                }
            }
        }
        tables
    }
}

/// The most linears that read one input: q, k and v (gate and up are two).
const LINEARS_PER_INPUT: usize = 3;

/// What [`write_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthReport {
    pub dir: PathBuf,
    /// Every file written, config and tokenizer files included.
    pub files: Vec<PathBuf>,
    /// The safetensors files, in shard order.
    pub weight_files: Vec<PathBuf>,
    /// Number of tensors written.
    pub tensors: usize,
    /// Total size of the safetensors files.
    pub weight_bytes: u64,
}

/// Write a random checkpoint for `spec` into `dir` (created if needed; files of the same names, and weight files an
/// earlier synthetic checkpoint left there, are replaced). Deterministic: the same spec and seed give
/// byte-identical files.
pub fn write_checkpoint(dir: &Path, spec: &SynthSpec) -> Result<SynthReport> {
    spec.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    remove_previous_weights(dir)?;
    let mut files = Vec::new();
    let mut write_file = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        files.push(path);
        Ok(())
    };

    let plan = spec.plan();
    let shards = split_into_shards(&plan, spec.shards);
    let single_name =
        if spec.quantized { format!("{}.safetensors", spec.gptq_base_name()) } else { "model.safetensors".into() };
    let shard_names: Vec<String> = if shards.len() == 1 {
        vec![single_name]
    } else {
        (1..=shards.len()).map(|i| format!("model-{i:05}-of-{:05}.safetensors", shards.len())).collect()
    };

    write_file("config.json", &to_json(&spec.config_json()))?;
    if spec.quantized {
        // Sharded: the base name "model" matches model.safetensors.index.json, as in sharded GPTQ repositories.
        let base = if shards.len() == 1 { spec.gptq_base_name() } else { "model".to_string() };
        write_file("quantize_config.json", &to_json(&spec.quantize_config_json(&base)))?;
    }
    match &spec.tokenizer_json {
        None => {
            write_file("tokenizer.model", &spec.tokenizer_model)?;
            write_file("tokenizer_config.json", tokenizer_config(spec.arch).as_bytes())?;
        }
        Some(json) => {
            write_file("tokenizer.json", json)?;
            write_file("tokenizer_config.json", &json_tokenizer_config(json)?)?;
        }
    }
    write_file("special_tokens_map.json", SPECIAL_TOKENS_MAP.as_bytes())?;

    let tables = spec.g_idx_tables();
    let mut weight_files = Vec::new();
    let mut weight_bytes = 0u64;
    let mut weight_map = serde_json::Map::new();
    for (members, name) in shards.iter().zip(&shard_names) {
        let path = dir.join(name);
        weight_bytes += write_shard(&path, &plan, members, &tables, spec.seed)?;
        for &t in members {
            weight_map.insert(plan[t].name.clone(), json!(name));
        }
        weight_files.push(path.clone());
        files.push(path);
    }
    if shards.len() > 1 {
        let total: usize = plan.iter().map(TensorPlan::bytes).sum();
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let path = dir.join("model.safetensors.index.json");
        std::fs::write(&path, to_json(&index)).map_err(|e| Error::io(&path, e))?;
        files.push(path);
    }
    Ok(SynthReport { dir: dir.to_path_buf(), files, weight_files, tensors: plan.len(), weight_bytes })
}

/// Remove weight files an earlier `write_checkpoint` into `dir` may have left with other settings: a stale index,
/// quantize_config.json or second candidate file would make the loader pick the wrong weights or refuse to choose. Only names this module
/// writes are touched.
fn remove_previous_weights(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        // quantize_config.json too: it is rewritten for GPTQ, and a stale one would make an fp16 checkpoint GPTQ.
        // Both tokenizer files: the engine prefers tokenizer.model, so a stale one would hide a new tokenizer.json.
        let ours = name == "model.safetensors"
            || name == "quantize_config.json"
            || name == "tokenizer.model"
            || name == "tokenizer.json"
            || name == "model.safetensors.index.json"
            || (name.starts_with("gptq_model-") && name.contains("bit-") && name.ends_with("g.safetensors"))
            || (name.starts_with("model-") && name.contains("-of-") && name.ends_with(".safetensors"));
        if ours {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

fn to_json(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap_or_default();
    s.push(b'\n');
    s
}

/// Split the tensors (in model order) into `n` consecutive runs of roughly equal byte size, each non-empty.
fn split_into_shards(plan: &[TensorPlan], n: usize) -> Vec<Vec<usize>> {
    let total: usize = plan.iter().map(TensorPlan::bytes).sum();
    let mut shards: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut acc = 0usize;
    for (i, t) in plan.iter().enumerate() {
        // The shard this tensor's first byte falls in, but never before the previous tensor's shard nor more than
        // one past it (no shard left empty), and early enough that every later shard still gets a tensor.
        let remaining = plan.len() - i;
        let prev = shards.iter().rposition(|s| !s.is_empty()).unwrap_or(0);
        let by_bytes = if total == 0 { 0 } else { (acc as u128 * n as u128 / total as u128) as usize };
        let s = by_bytes.clamp(prev, prev + 1).max(n.saturating_sub(remaining)).min(n - 1);
        shards[s].push(i);
        acc += t.bytes();
    }
    shards
}

/// Write one safetensors file holding `members` of `plan`; returns its size.
fn write_shard(path: &Path, plan: &[TensorPlan], members: &[usize], tables: &[Vec<i32>], seed: u64) -> Result<u64> {
    // I32 tensors first, then F16 (stable within each), as the Python writer orders by alignment: with the header
    // padded to 8 bytes, every tensor then starts at a multiple of its element size.
    let mut order = members.to_vec();
    order.sort_by_key(|&t| if plan[t].dtype == DType::I32 { 0 } else { 1 });
    let mut offset = 0;
    let entries: Vec<HeaderEntry<'_>> = order
        .iter()
        .map(|&t| {
            let p = &plan[t];
            let start = offset;
            offset += p.bytes();
            HeaderEntry { name: &p.name, dtype: p.dtype.name(), shape: &p.shape, data_offsets: (start, offset) }
        })
        .collect();
    let header = encode_header(&entries);

    let io = |e| Error::io(path, e);
    let file = File::create(path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&header).map_err(io)?;

    // Jobs: (tensor, chunk) pairs in file order. A dedicated thread writes while rayon generates the next batch, so
    // the two overlap and memory stays at a few batches whatever the model size.
    let jobs: Vec<(usize, usize)> =
        order.iter().flat_map(|&t| (0..plan[t].bytes().div_ceil(CHUNK_BYTES)).map(move |c| (t, c))).collect();
    let batch = (2 * rayon::current_num_threads()).max(4);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(Vec<u32>, usize)>>(1);
    // Written buffers come back for reuse: fresh 4 MiB allocations each cost a round of page faults and zeroing.
    let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u32>>();
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<()> {
            for chunks in rx {
                for (words, len) in chunks {
                    w.write_all(&bytemuck::cast_slice::<u32, u8>(&words)[..len])?;
                    let _ = recycle_tx.send(words);
                }
            }
            w.flush()
        });
        for jobs in jobs.chunks(batch) {
            let buffers: Vec<Vec<u32>> = jobs.iter().map(|_| recycle_rx.try_recv().unwrap_or_default()).collect();
            let chunks: Vec<(Vec<u32>, usize)> =
                jobs.par_iter().zip(buffers).map(|(&(t, c), buf)| plan[t].chunk(t, c, tables, seed, buf)).collect();
            // A send fails only if the writer stopped on an error, which join() below returns.
            if tx.send(chunks).is_err() {
                break;
            }
        }
        drop(tx);
        writer.join()
    });
    match written {
        Ok(r) => r.map_err(io)?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    Ok((header.len() + offset) as u64)
}

/// Bytes per generated chunk: a multiple of 4 so that chunks of I32 and F16 tensors both split on element bounds.
const CHUNK_BYTES: usize = 4 << 20;

/// How a tensor's elements are produced.
#[derive(Debug, Clone)]
enum Fill {
    /// F16 or BF16 (the tensor's dtype), uniform in `center ± half_width`.
    Uniform { center: f32, half_width: f32 },
    /// Random 32-bit words (packed nibbles, each uniform 0..15).
    Words,
    /// Every word the same.
    Const(u32),
    /// A copy of `g_idx` table `n`.
    GIdx(usize),
    /// `Uniform`, but element `every / 2` of every `every` is `value`.
    Spiked { center: f32, half_width: f32, every: usize, value: f32 },
}

#[derive(Debug, Clone)]
struct TensorPlan {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    fill: Fill,
}

impl TensorPlan {
    /// A float tensor (F16 or BF16) uniform in `center ± half_width`.
    fn uniform(name: &str, dtype: DType, shape: Vec<usize>, center: f32, half_width: f32) -> Self {
        TensorPlan { name: name.to_string(), dtype, shape, fill: Fill::Uniform { center, half_width } }
    }

    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }

    /// Chunk `c` of tensor number `t`, generated into `words` (reused storage): the words and how many of their
    /// bytes belong to the tensor.
    fn chunk(&self, t: usize, c: usize, tables: &[Vec<i32>], seed: u64, mut words: Vec<u32>) -> (Vec<u32>, usize) {
        let len = (self.bytes() - c * CHUNK_BYTES).min(CHUNK_BYTES);
        words.clear();
        words.resize(len.div_ceil(4), 0);
        let mut rng = Wy::new(mix(seed, t as u64, c as u64));
        match &self.fill {
            Fill::Words => words.iter_mut().for_each(|w| *w = rng.next() as u32),
            Fill::Const(v) => words.fill(*v),
            Fill::GIdx(n) => {
                let first = c * CHUNK_BYTES / 4;
                for (w, v) in words.iter_mut().zip(tables[*n].iter().skip(first)) {
                    *w = *v as u32;
                }
            }
            &Fill::Uniform { center, half_width } | &Fill::Spiked { center, half_width, .. } => {
                let halves: &mut [u16] = bytemuck::cast_slice_mut(&mut words);
                let (lo, width) = (center - half_width, 2.0 * half_width);
                let spike = match self.fill {
                    Fill::Spiked { every, value, .. } => Some((every, value)),
                    _ => None,
                };
                // Small blocks on the stack, converted with the CPU's f16 instructions where it has them.
                let mut scratch = [0f32; 64];
                let first = c * CHUNK_BYTES / self.dtype.size();
                for (b, block) in halves.chunks_mut(64).enumerate() {
                    let xs = &mut scratch[..block.len()];
                    for pair in xs.chunks_mut(2) {
                        let r = rng.next();
                        for (x, bits) in pair.iter_mut().zip([r as u32, (r >> 32) as u32]) {
                            *x = lo + width * ((bits >> 8) as f32 * (1.0 / (1u32 << 24) as f32));
                        }
                    }
                    if let Some((every, value)) = spike {
                        for (i, x) in xs.iter_mut().enumerate() {
                            if (first + 64 * b + i) % every == every / 2 {
                                *x = value;
                            }
                        }
                    }
                    // validate() allows only the two float types here.
                    if self.dtype == DType::BF16 {
                        bytemuck::cast_slice_mut::<u16, bf16>(block).convert_from_f32_slice(xs);
                    } else {
                        bytemuck::cast_slice_mut::<u16, f16>(block).convert_from_f32_slice(xs);
                    }
                }
            }
        }
        (words, len)
    }
}

/// Seed of one RNG stream from the checkpoint seed and two stream coordinates.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// wyrand: one multiply per 64 random bits, plenty for test weights.
struct Wy(u64);

impl Wy {
    fn new(seed: u64) -> Self {
        Wy(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) ^ t) as u64
    }
}

/// `tokenizer_config.json` for a `tokenizer.json`, as `transformers` writes it for a fast tokenizer: BOS and EOS are
/// the tokens of ids 1 and 2 (config.json's `bos_token_id` and `eos_token_id`), and BOS is added.
fn json_tokenizer_config(tokenizer_json: &[u8]) -> Result<Vec<u8>> {
    let tok = engine_tools::Tokenizer::from_json(tokenizer_json, None).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let piece = |id: u32| tok.id_to_piece(id).map(str::to_owned).map_err(|e| Error::Tokenizer(e.to_string()));
    Ok(to_json(&json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "bos_token": piece(1)?,
        "clean_up_tokenization_spaces": false,
        "eos_token": piece(2)?,
        "model_max_length": 1_000_000_000_000_000_000u64,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })))
}

/// `tokenizer_config.json` as the published repositories ship it (Baichuan's remote-code tokenizer, or LLaMA's).
fn tokenizer_config(arch: Arch) -> String {
    let token = |s: &str| {
        format!(
            "{{\"__type\": \"AddedToken\", \"content\": \"{s}\", \"lstrip\": false, \"normalized\": true, \
             \"rstrip\": false, \"single_word\": false}}"
        )
    };
    let (class, head) = match arch {
        Arch::Baichuan => (
            "BaiChuanTokenizer",
            "\"auto_map\": {\"AutoTokenizer\": [\"tokenization_baichuan.BaiChuanTokenizer\", null]},\n  \
             \"add_bos_token\": false,\n  \"add_eos_token\": false,\n",
        ),
        Arch::Llama => ("LlamaTokenizer", "\"add_bos_token\": true,\n  \"add_eos_token\": false,\n"),
    };
    format!(
        "{{\n  {head}  \"bos_token\": {},\n  \"clean_up_tokenization_spaces\": false,\n  \"eos_token\": {},\n  \
         \"model_max_length\": 1000000000000000019884624838656,\n  \"pad_token\": null,\n  \"sp_model_kwargs\": {{}},\n  \
         \"tokenizer_class\": \"{class}\",\n  \"unk_token\": {}\n}}\n",
        token("<s>"),
        token("</s>"),
        token("<unk>")
    )
}

const SPECIAL_TOKENS_MAP: &str = r#"{
  "bos_token": {"content": "<s>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false},
  "eos_token": {"content": "</s>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false},
  "unk_token": {"content": "<unk>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false}
}
"#;

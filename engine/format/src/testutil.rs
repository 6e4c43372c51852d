//! Tiny valid checkpoints built in memory, shared by the format crate's tests, the engine's loader tests and the
//! fuzz targets (which cannot depend on the std engine crate). Enabled by the `test-util` feature.
//!
//! Deliberately independent of the engine's `synth` module: a naming or layout mistake would have to be made twice,
//! the same way, to slip through the round-trip tests.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use half::{bf16, f16};

use crate::config::Arch;
use crate::desc::DType;
use crate::write::{encode_header, HeaderEntry};

/// A tensor to be written: any dtype string, any shape, any bytes (tests make them disagree on purpose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The shape of a tiny checkpoint. Fields are public so that tests can make any variant.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub layers: usize,
    pub vocab: usize,
    /// `false`: an fp16 checkpoint without `quantize_config.json`.
    pub quantized: bool,
    /// Element type of the float tensors but GPTQ scales (`F16` or `BF16`; BF16 also writes `torch_dtype:
    /// bfloat16`). Anything else is written as F16.
    pub float_dtype: DType,
    /// GPTQ bits per weight (any number: tests write unsupported widths on purpose; 4 and 8 pack as AutoGPTQ does).
    pub bits: u32,
    /// `None` = `group_size: -1`.
    pub group_size: Option<usize>,
    pub desc_act: bool,
    pub sym: bool,
    pub tie_word_embeddings: bool,
    pub seed: u64,
}

impl TinySpec {
    /// Baichuan naming, GPTQ with group size 8 (so layers have 2 and 3 groups), sym, no act-order.
    pub fn baichuan() -> Self {
        TinySpec {
            arch: Arch::Baichuan,
            hidden: 16,
            intermediate: 24,
            heads: 2,
            kv_heads: 2,
            layers: 2,
            vocab: 32,
            quantized: true,
            float_dtype: DType::F16,
            bits: 4,
            group_size: Some(8),
            desc_act: false,
            sym: true,
            tie_word_embeddings: false,
            seed: 1,
        }
    }

    /// LLaMA naming with GQA (2 query heads per key/value head), act-order, asym: the most varied layout.
    pub fn llama() -> Self {
        TinySpec {
            arch: Arch::Llama,
            heads: 4,
            kv_heads: 2,
            hidden: 32,
            desc_act: true,
            sym: false,
            ..Self::baichuan()
        }
    }

    /// The naming × format variants the fuzz targets use, one layer each to keep headers small (the safetensors
    /// header parser dominates the cost of an execution): Baichuan GPTQ, LLaMA GQA act-order asym GPTQ, Baichuan
    /// fp16, LLaMA fp16 with tied embeddings, LLaMA GQA act-order asym 8-bit GPTQ with bf16 floats, Baichuan bf16.
    /// Named for seed files; new variants go at the end, so that committed seeds keep choosing the same ones.
    pub fn fuzz_variants() -> [(&'static str, TinySpec); 6] {
        let one = |s: TinySpec| TinySpec { layers: 1, ..s };
        [
            ("baichuan-gptq", one(Self::baichuan())),
            ("llama-gqa-actorder", one(Self::llama())),
            ("baichuan-f16", one(TinySpec { quantized: false, ..Self::baichuan() })),
            ("llama-f16-tied", one(TinySpec { quantized: false, tie_word_embeddings: true, ..Self::llama() })),
            ("llama-gptq8-bf16", one(TinySpec { bits: 8, float_dtype: DType::BF16, ..Self::llama() })),
            ("baichuan-bf16", one(TinySpec { quantized: false, float_dtype: DType::BF16, ..Self::baichuan() })),
        ]
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// `config.json` as Hugging Face writes it, with a few keys the parser must ignore.
    pub fn config_json(&self) -> String {
        let (archs, model_type) = match self.arch {
            Arch::Baichuan => ("BaiChuanForCausalLM", "baichuan"),
            Arch::Llama => ("LlamaForCausalLM", "llama"),
        };
        let extra = match self.arch {
            Arch::Baichuan => String::new(),
            Arch::Llama => format!("\"num_key_value_heads\": {}, \"rope_theta\": 500000.0, ", self.kv_heads),
        };
        format!(
            "{{\"architectures\": [\"{archs}\"], \"model_type\": \"{model_type}\", \"hidden_act\": \"silu\", \
             \"hidden_size\": {}, \"intermediate_size\": {}, \"num_attention_heads\": {}, {extra}\
             \"num_hidden_layers\": {}, \"rms_norm_eps\": 1e-06, \"vocab_size\": {}, \
             \"max_position_embeddings\": 64, \"bos_token_id\": 1, \"eos_token_id\": 2, \"pad_token_id\": 0, \
             \"tie_word_embeddings\": {}, \"torch_dtype\": \"{}\", \"use_cache\": true, \
             \"initializer_range\": 0.02}}",
            self.hidden,
            self.intermediate,
            self.heads,
            self.layers,
            self.vocab,
            self.tie_word_embeddings,
            if self.float_dtype == DType::BF16 { "bfloat16" } else { "float16" }
        )
    }

    /// `quantize_config.json`, or `None` for an fp16 checkpoint.
    pub fn quant_json(&self) -> Option<String> {
        if !self.quantized {
            return None;
        }
        let (g, bits) = (self.group_size.map_or(-1, |g| g as i64), self.bits);
        Some(format!(
            "{{\"bits\": {bits}, \"group_size\": {g}, \"damp_percent\": 0.01, \"desc_act\": {}, \"sym\": {}, \
             \"true_sequential\": true, \"model_name_or_path\": null, \"model_file_base_name\": \
             \"gptq_model-{bits}bit-{g}g\"}}",
            self.desc_act, self.sym
        ))
    }

    /// Every tensor of the checkpoint, I32 ones first so that writing them back to back keeps each aligned.
    pub fn tensors(&self) -> Vec<RawTensor> {
        let mut rng = SplitMix(self.seed);
        let (h, i, hd) = (self.hidden, self.intermediate, self.head_dim());
        let (qd, kvd) = (self.heads * hd, self.kv_heads * hd);
        let mut out = Vec::new();
        out.push(self.float(f16_tensor(&mut rng, "model.embed_tokens.weight", &[self.vocab, h], 0x3400)));
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            out.push(self.float(f16_const(format!("{p}.input_layernorm.weight"), h, 0x3C00)));
            out.push(self.float(f16_const(format!("{p}.post_attention_layernorm.weight"), h, 0x3C00)));
            // q/k/v and gate/up share their input, so act-order gives them the same g_idx.
            let g_attn = self.g_idx(&mut rng, h);
            let g_mlp = self.g_idx(&mut rng, h);
            let g_o = self.g_idx(&mut rng, qd);
            let g_down = self.g_idx(&mut rng, i);
            match self.arch {
                Arch::Baichuan => {
                    self.linear(&mut rng, &mut out, &format!("{p}.self_attn.W_pack"), h, qd + 2 * kvd, &g_attn)
                }
                Arch::Llama => {
                    self.linear(&mut rng, &mut out, &format!("{p}.self_attn.q_proj"), h, qd, &g_attn);
                    self.linear(&mut rng, &mut out, &format!("{p}.self_attn.k_proj"), h, kvd, &g_attn);
                    self.linear(&mut rng, &mut out, &format!("{p}.self_attn.v_proj"), h, kvd, &g_attn);
                }
            }
            self.linear(&mut rng, &mut out, &format!("{p}.self_attn.o_proj"), qd, h, &g_o);
            self.linear(&mut rng, &mut out, &format!("{p}.mlp.gate_proj"), h, i, &g_mlp);
            self.linear(&mut rng, &mut out, &format!("{p}.mlp.up_proj"), h, i, &g_mlp);
            self.linear(&mut rng, &mut out, &format!("{p}.mlp.down_proj"), i, h, &g_down);
        }
        out.push(self.float(f16_const("model.norm.weight".to_string(), h, 0x3C00)));
        if !self.tie_word_embeddings {
            out.push(self.float(f16_tensor(&mut rng, "lm_head.weight", &[self.vocab, h], 0x2C00)));
        }
        // Stable sort: I32 (4-byte) tensors first, then F16, as the Python writer orders by alignment.
        out.sort_by_key(|t| if t.dtype == "I32" { 0 } else { 1 });
        out
    }

    /// An F16 tensor in the spec's float type: BF16 rounds each value to the nearest bfloat16.
    fn float(&self, t: RawTensor) -> RawTensor {
        if self.float_dtype != DType::BF16 {
            return t;
        }
        let data = t
            .data
            .chunks_exact(2)
            .flat_map(|b| {
                bf16::from_f32(f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).to_bits().to_le_bytes()
            })
            .collect();
        RawTensor { dtype: "BF16".into(), data, ..t }
    }

    /// `g_idx` for `k` input rows: `k / G`, or with act-order `g_idx[perm[r]] = r / G` for a random permutation.
    fn g_idx(&self, rng: &mut SplitMix, k: usize) -> Vec<i32> {
        let g = self.group_size.unwrap_or(k).max(1);
        let mut idx: Vec<i32> = (0..k).map(|r| (r / g) as i32).collect();
        if self.desc_act {
            let mut perm: Vec<usize> = (0..k).collect();
            for r in (1..k).rev() {
                perm.swap(r, (rng.next() % (r as u64 + 1)) as usize);
            }
            for (r, &p) in perm.iter().enumerate() {
                if let Some(slot) = idx.get_mut(p) {
                    *slot = (r / g) as i32;
                }
            }
        }
        idx
    }

    fn linear(&self, rng: &mut SplitMix, out: &mut Vec<RawTensor>, prefix: &str, k: usize, n: usize, g_idx: &[i32]) {
        if !self.quantized {
            out.push(self.float(f16_tensor(rng, &format!("{prefix}.weight"), &[n, k], 0x2C00)));
            return;
        }
        let groups = k.div_ceil(self.group_size.unwrap_or(k).max(1));
        // Values per 32-bit word; for widths the engine refuses, whatever keeps the shapes meaningful.
        let per_word = (32 / self.bits.clamp(1, 32)) as usize;
        // Symmetric: every stored zero is 2^(bits-1) - 1 (the zero point 2^(bits-1) minus one), in every field.
        let sym_zero = match self.bits {
            8 => 0x7F7F_7F7Fu32,
            _ => 0x7777_7777,
        };
        let qweight: Vec<u8> = (0..k / per_word * n).flat_map(|_| (rng.next() as u32).to_le_bytes()).collect();
        let qzeros: Vec<u8> = (0..groups * (n / per_word))
            .flat_map(|_| if self.sym { sym_zero } else { rng.next() as u32 }.to_le_bytes())
            .collect();
        out.push(RawTensor {
            name: format!("{prefix}.qweight"),
            dtype: "I32".into(),
            shape: vec![k / per_word, n],
            data: qweight,
        });
        out.push(RawTensor {
            name: format!("{prefix}.qzeros"),
            dtype: "I32".into(),
            shape: vec![groups, n / per_word],
            data: qzeros,
        });
        out.push(f16_tensor(rng, &format!("{prefix}.scales"), &[groups, n], 0x2C00));
        let g: Vec<u8> = g_idx.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.push(RawTensor { name: format!("{prefix}.g_idx"), dtype: "I32".into(), shape: vec![k], data: g });
    }
}

/// F16 values of magnitude about `base` (an f16 bit pattern) with random sign and mantissa.
fn f16_tensor(rng: &mut SplitMix, name: &str, shape: &[usize], base: u16) -> RawTensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .flat_map(|_| {
            let r = rng.next() as u16;
            ((r & 0x8000) | base | (r & 0x03FF)).to_le_bytes()
        })
        .collect();
    RawTensor { name: name.to_string(), dtype: "F16".into(), shape: shape.to_vec(), data }
}

fn f16_const(name: String, n: usize, bits: u16) -> RawTensor {
    RawTensor { name, dtype: "F16".into(), shape: vec![n], data: bits.to_le_bytes().repeat(n) }
}

/// A safetensors file holding `tensors` back to back in the given order.
pub fn serialize(tensors: &[RawTensor]) -> Vec<u8> {
    let mut offset = 0;
    let entries: Vec<HeaderEntry<'_>> = tensors
        .iter()
        .map(|t| {
            let start = offset;
            offset += t.data.len();
            HeaderEntry { name: &t.name, dtype: &t.dtype, shape: &t.shape, data_offsets: (start, offset) }
        })
        .collect();
    let mut out = encode_header(&entries);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// The default tiny checkpoint (LLaMA naming, GQA, act-order, asym, group size 8) as
/// `(config.json, quantize_config.json, the one shard)`.
pub fn tiny_checkpoint() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let spec = TinySpec::llama();
    (spec.config_json().into_bytes(), spec.quant_json().unwrap_or_default().into_bytes(), serialize(&spec.tensors()))
}

/// A small deterministic generator (SplitMix64): enough for test data, no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

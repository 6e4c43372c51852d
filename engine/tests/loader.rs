//! `Model::open` on synthetic checkpoints (every layout variant round-trips) and on broken directories (each
//! class of problem gives the right error kind and names the file).

use std::path::{Path, PathBuf};

use engine::format::gptq::Bits;
use engine::format::testutil::{serialize, RawTensor, TinySpec};
use engine::format::{Arch, DType, FormatErrorKind, Linear, TensorRef};
use engine::synth::{write_checkpoint, SynthSpec};
use engine::{Error, Model};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("engine-loader-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.0.join(name), bytes).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn synth(name: &str, spec: &SynthSpec) -> (TempDir, Model) {
    let dir = TempDir::new(name);
    write_checkpoint(dir.path(), spec).unwrap();
    let model = Model::open(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
    (dir, model)
}

fn format_err(r: Result<Model, Error>) -> engine::format::FormatError {
    match r {
        Err(Error::Format(e)) => e,
        Err(other) => panic!("expected a format error, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

fn llama(kv_heads: usize) -> SynthSpec {
    SynthSpec { arch: Arch::Llama, kv_heads, rope_theta: 500000.0, ..SynthSpec::tiny() }
}

/// Structural checks every synthetic model must pass, against its spec.
fn check_desc(m: &Model, spec: &SynthSpec) {
    let d = &m.desc;
    let c = &d.config;
    assert_eq!(c.arch, spec.arch);
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (spec.hidden, spec.intermediate, spec.layers)
    );
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.vocab_size), (spec.heads, spec.kv_heads, spec.vocab));
    assert_eq!((c.max_position_embeddings, c.rope_theta), (spec.max_pos, spec.rope_theta));
    assert_eq!(d.layers.len(), spec.layers);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    assert_eq!(d.shards.len(), spec.shards);
    assert_eq!(d.quant.is_some(), spec.quantized);
    assert_eq!(d.lm_head == d.embed_tokens, spec.tie_word_embeddings);
    let hd = spec.hidden / spec.heads;
    for l in &d.layers {
        let parts = match spec.arch {
            Arch::Baichuan => vec![(spec.heads + 2 * spec.kv_heads) * hd],
            Arch::Llama => vec![spec.heads * hd, spec.kv_heads * hd, spec.kv_heads * hd],
        };
        assert_eq!(l.qkv.parts.iter().map(Linear::out_features).collect::<Vec<_>>(), parts);
        for lin in l.linears() {
            match lin {
                Linear::Gptq { group_size, groups, g_idx_is_trivial, in_features, .. } => {
                    assert!(spec.quantized);
                    assert_eq!(*group_size, spec.group_size.unwrap_or(*in_features));
                    assert_eq!(*groups, in_features.div_ceil(*group_size));
                    // A permutation can leave g_idx trivial only by chance; with these sizes it never does.
                    assert_eq!(*g_idx_is_trivial, !spec.desc_act || *groups == 1);
                }
                Linear::Dense { .. } => assert!(!spec.quantized),
            }
        }
    }
    let sum: usize = d.tensors().iter().map(|t| t.len).sum();
    assert_eq!(m.total_weight_bytes(), sum);
    for t in d.tensors() {
        assert_eq!(m.bytes(t).len(), t.len);
    }
}

/// `x · W` for one linear layer of the model, dequantizing as the GPTQ layout says.
fn matvec(m: &Model, lin: &Linear, x: &[f32]) -> Vec<f32> {
    match lin {
        Linear::Gptq { bits, qweight, qzeros, scales, g_idx, in_features: k, out_features: n, .. } => {
            let (qw, qz, sc, gi) = (m.u32(qweight), m.u32(qzeros), m.f16(scales), m.u32(g_idx));
            let mut y = vec![0f32; *n];
            for (row, &xv) in x.iter().enumerate().take(*k) {
                let g = gi[row] as usize;
                for (col, yv) in y.iter_mut().enumerate() {
                    let q = bits.q_at(qw, *n, row, col) as f32;
                    let z = bits.zero_at(qz, *n, g, col) as f32;
                    *yv += xv * sc[g * n + col].to_f32() * (q - z);
                }
            }
            y
        }
        Linear::Dense { weight, in_features: k, out_features: n } => {
            let w = floats(m, weight);
            (0..*n).map(|col| (0..*k).map(|row| x[row] * w[col * k + row]).sum()).collect()
        }
    }
}

/// A float tensor (F16 or BF16) widened to f32.
fn floats(m: &Model, t: &TensorRef) -> Vec<f32> {
    let f = m.floats(t);
    f.to_f32_vec(0, f.len())
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * r * w).collect()
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// A real forward pass of one token at position 0 (attention over one position returns its own value vector and
/// rotary embedding is the identity there): activations must stay finite and O(1) through every layer.
fn check_numerics(m: &Model, token: usize) {
    let d = &m.desc;
    let c = &d.config;
    let (h, hd) = (c.hidden_size, c.head_dim);
    let mut x: Vec<f32> = m.floats(&d.embed_tokens).to_f32_vec(token * h, h);
    for (i, l) in d.layers.iter().enumerate() {
        let a = rms_norm(&x, &floats(m, &l.input_layernorm), c.rms_norm_eps);
        let qkv: Vec<f32> = l.qkv.parts.iter().flat_map(|p| matvec(m, p, &a)).collect();
        let v = &qkv[c.q_dim() + c.kv_dim()..];
        let group = c.num_attention_heads / c.num_key_value_heads;
        let attn: Vec<f32> = (0..c.q_dim()).map(|j| v[(j / hd / group) * hd + j % hd]).collect();
        for (xv, o) in x.iter_mut().zip(matvec(m, &l.o_proj, &attn)) {
            *xv += o;
        }
        let a = rms_norm(&x, &floats(m, &l.post_attention_layernorm), c.rms_norm_eps);
        let (g, u) = (matvec(m, &l.gate_proj, &a), matvec(m, &l.up_proj, &a));
        let act: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
        let down = matvec(m, &l.down_proj, &act);
        assert!((0.05..20.0).contains(&rms(&down)), "layer {i}: mlp output rms {}", rms(&down));
        for (xv, o) in x.iter_mut().zip(down) {
            *xv += o;
        }
        assert!(x.iter().all(|v| v.is_finite()) && (0.1..50.0).contains(&rms(&x)), "layer {i}: rms {}", rms(&x));
    }
    let a = rms_norm(&x, &floats(m, &d.norm), c.rms_norm_eps);
    let lm = floats(m, &d.lm_head);
    let logits: Vec<f32> = (0..c.vocab_size).map(|t| (0..h).map(|k| a[k] * lm[t * h + k]).sum()).collect();
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!((0.2..5.0).contains(&rms(&logits)), "logits rms {}", rms(&logits));
}

// ---- round trips ----

#[test]
fn tiny_baichuan_round_trip() {
    let spec = SynthSpec { tokenizer_model: b"not a real tokenizer".to_vec(), ..SynthSpec::tiny() };
    let (dir, m) = synth("tiny", &spec);
    check_desc(&m, &spec);
    check_numerics(&m, 5);
    assert_eq!(m.desc.shards, ["gptq_model-4bit-32g.safetensors"]);
    assert_eq!(std::fs::read(dir.path().join("tokenizer.model")).unwrap(), spec.tokenizer_model);
    for f in ["tokenizer_config.json", "special_tokens_map.json", "quantize_config.json"] {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(f)).unwrap()).unwrap();
        assert!(v.is_object(), "{f}");
    }
    // Sym: every stored zero is 7 (zero point 8).
    let Linear::Gptq { qzeros, .. } = &m.desc.layers[0].down_proj else { panic!() };
    assert!(m.u32(qzeros).iter().all(|&w| w == 0x7777_7777));
    // Dequantized weights have std ≈ 1/sqrt(K).
    let std = weight_std_times_sqrt_k(&m, &m.desc.layers[1].gate_proj);
    assert!((0.7..1.5).contains(&std), "std × sqrt(K) = {std}");
}

#[test]
fn llama_gqa_act_order_asym_round_trip() {
    let spec = SynthSpec { desc_act: true, sym: false, ..llama(2) };
    let (_dir, m) = synth("llama-gqa", &spec);
    check_desc(&m, &spec);
    check_numerics(&m, 1000);
    // q, k, v share their input, so act-order gives them the same g_idx; gate and up likewise.
    let l = &m.desc.layers[1];
    let g = |lin: &Linear| match lin {
        Linear::Gptq { g_idx, .. } => m.u32(g_idx).to_vec(),
        _ => panic!(),
    };
    assert_eq!(g(&l.qkv.parts[0]), g(&l.qkv.parts[1]));
    assert_eq!(g(&l.qkv.parts[0]), g(&l.qkv.parts[2]));
    assert_eq!(g(&l.gate_proj), g(&l.up_proj));
    assert_ne!(g(&l.qkv.parts[0]), g(&l.gate_proj));
    // Act-order structure: each group still holds exactly G rows.
    let gi = g(&l.down_proj);
    for group in 0..6 {
        let n = gi.iter().filter(|&&v| v == group).count();
        assert_eq!(n, if group < 5 { 32 } else { 176 - 5 * 32 }, "group {group}");
    }
}

/// std × sqrt(K) of a linear's dequantized weights, from its response to every unit input.
fn weight_std_times_sqrt_k(m: &Model, lin: &Linear) -> f64 {
    let k = lin.in_features();
    let mut sum2 = 0f64;
    for row in 0..k {
        let mut e = vec![0f32; k];
        e[row] = 1.0;
        sum2 += matvec(m, lin, &e).iter().map(|&v| f64::from(v * v)).sum::<f64>();
    }
    (sum2 / (k * lin.out_features()) as f64).sqrt() * (k as f64).sqrt()
}

#[test]
fn eight_bit_round_trip() {
    let sym = SynthSpec { bits: 8, intermediate: 172, ..SynthSpec::tiny() };
    let asym = SynthSpec { bits: 8, intermediate: 172, desc_act: true, sym: false, ..llama(2) };
    for (name, spec) in [("int8-sym", sym), ("int8-asym-actorder", asym)] {
        let (dir, m) = synth(name, &spec);
        check_desc(&m, &spec);
        check_numerics(&m, 11);
        assert_eq!(m.desc.shards, ["gptq_model-8bit-32g.safetensors"]);
        let q: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("quantize_config.json")).unwrap()).unwrap();
        assert_eq!(q["bits"], 8);
        for lin in m.desc.layers[0].linears() {
            let Linear::Gptq { bits, qweight, qzeros, in_features: k, out_features: n, .. } = lin else { panic!() };
            assert_eq!((*bits, qweight.shape.as_slice(), qzeros.shape[1]), (Bits::Eight, &[k / 4, *n][..], n / 4));
            if spec.sym {
                // Every stored zero is 127 (zero point 128).
                assert!(m.u32(qzeros).iter().all(|&w| w == 0x7F7F_7F7F), "{}", qzeros.name);
            }
        }
        let std = weight_std_times_sqrt_k(&m, &m.desc.layers[1].gate_proj);
        assert!((0.7..1.5).contains(&std), "{name}: std × sqrt(K) = {std}");
    }
}

#[test]
fn act_order_per_linear_round_trip() {
    let g = |m: &Model, lin: &Linear| match lin {
        Linear::Gptq { g_idx, .. } => m.u32(g_idx).to_vec(),
        _ => panic!(),
    };
    // LLaMA: q, k, v, gate and up each have their own permutation, as AutoGPTQ writes them.
    let spec = SynthSpec { desc_act: true, g_idx_per_linear: true, sym: false, ..llama(2) };
    let (_dir, m) = synth("per-linear-llama", &spec);
    check_desc(&m, &spec);
    check_numerics(&m, 17);
    for l in &m.desc.layers {
        let (q, k, v) = (g(&m, &l.qkv.parts[0]), g(&m, &l.qkv.parts[1]), g(&m, &l.qkv.parts[2]));
        assert!(q != k && k != v && q != v);
        assert_ne!(g(&m, &l.gate_proj), g(&m, &l.up_proj));
        // Each is still AutoGPTQ's structure: every group holds exactly G rows.
        for t in [q, k, v] {
            assert!((0..2).all(|group| t.iter().filter(|&&x| x == group).count() == 32));
        }
    }
    // The shared-permutation checkpoint of the same seed is what it always was: the first linear of each input keeps
    // its permutation.
    let shared = SynthSpec { g_idx_per_linear: false, ..spec.clone() };
    let (_dir2, m2) = synth("per-linear-shared", &shared);
    let (l, l2) = (&m.desc.layers[1], &m2.desc.layers[1]);
    assert_eq!(g(&m, &l.qkv.parts[0]), g(&m2, &l2.qkv.parts[0]));
    assert_eq!(g(&m, &l.gate_proj), g(&m2, &l2.gate_proj));
    assert_eq!(g(&m2, &l2.gate_proj), g(&m2, &l2.up_proj));
    // Baichuan: W_pack is one linear; its gate and up differ.
    let spec = SynthSpec { bits: 8, desc_act: true, g_idx_per_linear: true, ..SynthSpec::tiny() };
    let (_dir3, m) = synth("per-linear-baichuan", &spec);
    check_desc(&m, &spec);
    let l = &m.desc.layers[0];
    assert_eq!(l.qkv.parts.len(), 1);
    assert_ne!(g(&m, &l.gate_proj), g(&m, &l.up_proj));
}

#[test]
fn group_sizes_round_trip() {
    for g in [Some(32), Some(64), Some(128), None] {
        let spec = SynthSpec { group_size: g, hidden: 128, intermediate: 352, desc_act: g == Some(64), ..llama(1) };
        let (dir, m) = synth(&format!("group-{g:?}"), &spec);
        check_desc(&m, &spec);
        let name = format!("gptq_model-4bit-{}g.safetensors", g.map_or(-1, |g| g as i64));
        assert!(dir.path().join(&name).exists(), "{name}");
    }
}

#[test]
fn fp16_round_trip() {
    let spec = SynthSpec { quantized: false, tie_word_embeddings: true, ..llama(2) };
    let (dir, m) = synth("fp16", &spec);
    check_desc(&m, &spec);
    check_numerics(&m, 3);
    assert!(!dir.path().join("quantize_config.json").exists());
    assert_eq!(m.desc.shards, ["model.safetensors"]);
}

#[test]
fn bf16_round_trip() {
    // Unquantized bfloat16, and 8-bit GPTQ of a bfloat16 model (embeddings and norms BF16, scales F16).
    let dense = SynthSpec { quantized: false, float_dtype: DType::BF16, tie_word_embeddings: true, ..llama(2) };
    let gptq = SynthSpec { bits: 8, float_dtype: DType::BF16, ..SynthSpec::tiny() };
    for (name, spec) in [("bf16-dense", dense), ("bf16-int8", gptq)] {
        let (dir, m) = synth(name, &spec);
        check_desc(&m, &spec);
        check_numerics(&m, 3);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(config["torch_dtype"], "bfloat16");
        for t in m.desc.tensors() {
            let want = match t.name.rsplit('.').next() {
                Some("qweight" | "qzeros" | "g_idx") => DType::I32,
                Some("scales") => DType::F16,
                _ => DType::BF16,
            };
            assert_eq!(t.dtype, want, "{name}: {}", t.name);
        }
    }
}

#[test]
fn two_shards_round_trip() {
    for spec in [SynthSpec { shards: 2, ..SynthSpec::tiny() }, SynthSpec { shards: 3, quantized: false, ..llama(4) }] {
        let (dir, m) = synth(&format!("shards-{}", spec.shards), &spec);
        check_desc(&m, &spec);
        check_numerics(&m, 7);
        let n = spec.shards;
        let names: Vec<String> = (1..=n).map(|i| format!("model-{i:05}-of-{n:05}.safetensors")).collect();
        assert_eq!(m.desc.shards, names);
        assert!(dir.path().join("model.safetensors.index.json").exists());
        assert!(m.desc.tensors().iter().any(|t| t.shard == n - 1));
    }
}

#[test]
fn synth_is_deterministic() {
    let a = TempDir::new("det-a");
    let b = TempDir::new("det-b");
    let spec = SynthSpec { desc_act: true, sym: false, ..SynthSpec::tiny() };
    let ra = write_checkpoint(a.path(), &spec).unwrap();
    write_checkpoint(b.path(), &spec).unwrap();
    for f in &ra.files {
        let name = f.file_name().unwrap();
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(b.path().join(name)).unwrap(), "{name:?}");
    }
    assert_eq!(ra.weight_bytes, std::fs::metadata(&ra.weight_files[0]).unwrap().len());
    write_checkpoint(b.path(), &SynthSpec { seed: 7, ..spec }).unwrap();
    assert_ne!(
        std::fs::read(&ra.weight_files[0]).unwrap(),
        std::fs::read(b.path().join(ra.weight_files[0].file_name().unwrap())).unwrap()
    );
}

#[test]
fn synth_outliers_are_evenly_spaced_feed_forward_norm_weights_in_every_layer() {
    let spec = SynthSpec { outliers: 4, ..SynthSpec::tiny() };
    let (_dir, m) = synth("outliers", &spec);
    let every = spec.hidden / spec.outliers;
    for layer in &m.desc.layers {
        let t = &layer.post_attention_layernorm;
        let w: Vec<f32> = m.f16(t).iter().map(|v| v.to_f32()).collect();
        for (i, &v) in w.iter().enumerate() {
            let want_spike = i % every == every / 2;
            assert_eq!(v == SynthSpec::outlier_norm_weight(), want_spike, "{} [{i}] = {v}", t.name);
            assert!(want_spike || (0.94..=1.06).contains(&v), "{} [{i}] = {v}", t.name);
        }
        // The attention's norm keeps none.
        assert!(m.f16(&layer.input_layernorm).iter().all(|v| v.to_f32() < 2.0), "{}", layer.input_layernorm.name);
    }
    // Nor does the final norm.
    assert!(m.f16(&m.desc.norm).iter().all(|v| v.to_f32() < 2.0));
}

#[test]
fn synth_rejects_bad_specs() {
    let dir = TempDir::new("bad-spec");
    for (spec, needle) in [
        (SynthSpec { hidden: 68, heads: 2, kv_heads: 2, ..SynthSpec::tiny() }, "multiple of 8"),
        (SynthSpec { heads: 5, ..SynthSpec::tiny() }, "multiple of heads"),
        (SynthSpec { kv_heads: 2, ..SynthSpec::tiny() }, "Baichuan"),
        (SynthSpec { group_size: Some(0), ..SynthSpec::tiny() }, "group_size"),
        (SynthSpec { shards: 0, ..SynthSpec::tiny() }, "shards"),
        (SynthSpec { layers: 0, ..SynthSpec::tiny() }, "layers"),
        (SynthSpec { heads: 64, kv_heads: 64, ..SynthSpec::tiny() }, "even"),
        (SynthSpec { bits: 3, ..SynthSpec::tiny() }, "bits = 3: expected 4 or 8"),
        (SynthSpec { g_idx_per_linear: true, ..SynthSpec::tiny() }, "desc_act"),
        (SynthSpec { bits: 8, intermediate: 170, ..SynthSpec::tiny() }, "multiple of 4"),
        (SynthSpec { outliers: 65, ..SynthSpec::tiny() }, "outliers = 65"),
    ] {
        match write_checkpoint(dir.path(), &spec) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("{needle}: {other:?}"),
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written for an invalid spec");
}

// ---- broken directories ----

/// A valid tiny directory written from the format crate's in-memory builder, for precise breakage.
fn tiny_dir(name: &str, spec: &TinySpec, tensors: &[RawTensor]) -> TempDir {
    let dir = TempDir::new(name);
    dir.write("config.json", spec.config_json());
    if let Some(q) = spec.quant_json() {
        dir.write("quantize_config.json", q);
    }
    let file = match spec.group_size {
        Some(g) if spec.quantized => format!("gptq_model-{}bit-{g}g.safetensors", spec.bits),
        _ => "model.safetensors".into(),
    };
    dir.write(&file, serialize(tensors));
    dir
}

#[test]
fn missing_directory_and_config() {
    let e = format_err(Model::open(Path::new("/nonexistent/model-dir")));
    assert_eq!(e.kind, FormatErrorKind::MissingFile);
    assert!(e.to_string().contains("/nonexistent/model-dir"), "{e}");

    let dir = TempDir::new("no-config");
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::MissingFile);
    assert!(e.file.ends_with("config.json") && e.detail.contains("expected"), "{e}");
}

#[test]
fn missing_weights_file() {
    let spec = TinySpec::baichuan();
    let dir = tiny_dir("no-weights", &spec, &spec.tensors());
    std::fs::remove_file(dir.path().join("gptq_model-4bit-8g.safetensors")).unwrap();
    dir.write("pytorch_model.bin", b"pickle");
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::MissingFile);
    let msg = e.to_string();
    assert!(msg.contains("gptq_model-4bit-8g.safetensors") && msg.contains("model_file_base_name"), "{msg}");
    assert!(msg.contains("index.json") && msg.contains("pytorch_model.bin"), "{msg}");
}

#[test]
fn empty_weights_file_is_truncated_not_mapped() {
    let spec = TinySpec::baichuan();
    let dir = tiny_dir("empty", &spec, &spec.tensors());
    dir.write("gptq_model-4bit-8g.safetensors", b"");
    let e = format_err(Model::open(dir.path()));
    assert_eq!((e.kind, e.file.as_str()), (FormatErrorKind::Truncated, "gptq_model-4bit-8g.safetensors"), "{e}");
}

#[test]
fn truncated_weights_file() {
    let spec = TinySpec::baichuan();
    let dir = tiny_dir("truncated", &spec, &spec.tensors());
    let path = dir.path().join("gptq_model-4bit-8g.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::Truncated, "{e}");
}

#[test]
fn renamed_weights_file_is_found_with_a_warning() {
    let spec = TinySpec::baichuan();
    let dir = tiny_dir("renamed", &spec, &spec.tensors());
    std::fs::rename(dir.path().join("gptq_model-4bit-8g.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let m = Model::open(dir.path()).unwrap();
    assert_eq!(m.desc.shards, ["model.safetensors"]);
    assert!(m.desc.warnings.iter().any(|w| w.contains("gptq_model-4bit-8g.safetensors")), "{:?}", m.desc.warnings);
    // A second candidate makes the choice ambiguous.
    dir.write("other.safetensors", serialize(&spec.tensors()));
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::MissingFile);
    assert!(e.detail.contains("several") && e.detail.contains("other.safetensors"), "{e}");
}

#[test]
fn index_problems() {
    let spec = SynthSpec { shards: 2, ..SynthSpec::tiny() };
    let dir = TempDir::new("index");
    write_checkpoint(dir.path(), &spec).unwrap();
    let index_path = dir.path().join("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path).unwrap();

    // A tensor placed in the wrong file.
    let moved = index.replacen(
        "\"model.norm.weight\": \"model-00002-of-00002",
        "\"model.norm.weight\": \"model-00001-of-00002",
        1,
    );
    assert_ne!(moved, index);
    std::fs::write(&index_path, &moved).unwrap();
    let e = format_err(Model::open(dir.path()));
    assert_eq!((e.kind, e.subject.as_deref()), (FormatErrorKind::Inconsistent, Some("model.norm.weight")), "{e}");

    // A file the index names is gone.
    std::fs::write(&index_path, &index).unwrap();
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::MissingFile);
    assert!(e.file.ends_with("model-00002-of-00002.safetensors"), "{e}");

    // Several files and no index: no guessing.
    write_checkpoint(dir.path(), &spec).unwrap();
    std::fs::remove_file(&index_path).unwrap();
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::MissingFile, "several files without an index: {e}");

    // Rewriting the directory unsharded leaves no stale shards or index behind.
    let single = SynthSpec { quantized: false, ..SynthSpec::tiny() };
    write_checkpoint(dir.path(), &SynthSpec { shards: 3, ..single.clone() }).unwrap();
    write_checkpoint(dir.path(), &single).unwrap();
    let m = Model::open(dir.path()).unwrap();
    assert_eq!(m.desc.shards, ["model.safetensors"]);
    assert!(m.desc.quant.is_none());
}

#[test]
fn config_problems() {
    let spec = TinySpec::baichuan();
    let dir = tiny_dir("config", &spec, &spec.tensors());
    let cases: [(&str, &str, FormatErrorKind, &str); 7] = [
        ("config.json", "{\"hidden_size\": ", FormatErrorKind::InvalidJson, "config.json"),
        (
            "config.json",
            &spec.config_json().replace("BaiChuanForCausalLM", "GPT2LMHeadModel"),
            FormatErrorKind::Unsupported,
            "GPT2LMHeadModel",
        ),
        (
            "config.json",
            &spec.config_json().replace("\"hidden_size\": 16", "\"hidden_size\": 0"),
            FormatErrorKind::InvalidValue,
            "hidden_size",
        ),
        (
            "config.json",
            &spec.config_json().replace("\"intermediate_size\": 24", "\"intermediate_size\": 28"),
            FormatErrorKind::InvalidValue,
            "intermediate_size",
        ),
        (
            "quantize_config.json",
            &spec.quant_json().unwrap().replace("\"bits\": 4", "\"bits\": 3"),
            FormatErrorKind::Unsupported,
            "quantize_config.json: `bits`: 3-bit quantization is not supported: expected 4 or 8",
        ),
        (
            "quantize_config.json",
            &spec.quant_json().unwrap().replace("\"bits\": 4", "\"bits\": 5"),
            FormatErrorKind::Unsupported,
            "quantize_config.json: `bits`: 5-bit quantization is not supported: expected 4 or 8",
        ),
        ("quantize_config.json", "[]", FormatErrorKind::InvalidJson, "quantize_config.json"),
    ];
    for (file, content, kind, needle) in cases {
        dir.write(file, content);
        let e = format_err(Model::open(dir.path()));
        assert_eq!(e.kind, kind, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        dir.write("config.json", spec.config_json());
        dir.write("quantize_config.json", spec.quant_json().unwrap());
    }
    Model::open(dir.path()).unwrap();
}

#[test]
fn eight_bit_tensors_are_checked_against_the_eight_bit_packing() {
    let eight = TinySpec { bits: 8, ..TinySpec::baichuan() };
    let dir = tiny_dir("int8", &eight, &eight.tensors());
    let m = Model::open(dir.path()).unwrap();
    assert_eq!(m.desc.shards, ["gptq_model-8bit-8g.safetensors"]);
    assert!(m.desc.warnings.is_empty(), "{:?}", m.desc.warnings);

    // Tensors packed 8 values per word under a config that says 8 bits: the file and the tensor are named.
    let dir = tiny_dir("int8-packed-as-int4", &eight, &TinySpec::baichuan().tensors());
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::WrongShape);
    assert!(
        e.to_string().starts_with(
            "gptq_model-8bit-8g.safetensors: `model.layers.0.self_attn.W_pack.qweight`: expected shape [4, 48] \
             [in_features / 4, out_features] (8-bit), found [2, 48]"
        ),
        "{e}"
    );
}

#[test]
fn embedded_quantization_config() {
    let spec = TinySpec::baichuan();
    let dir = tiny_dir("embedded-quant", &spec, &spec.tensors());
    std::fs::remove_file(dir.path().join("quantize_config.json")).unwrap();
    let config = spec.config_json();
    let q = spec.quant_json().unwrap().replace('{', "{\"quant_method\": \"gptq\", ");
    dir.write("config.json", format!("{}, \"quantization_config\": {q}}}", &config[..config.len() - 1]));
    let m = Model::open(dir.path()).unwrap();
    assert_eq!(m.desc.quant.as_ref().unwrap().group_size, Some(8));
}

#[test]
fn extra_tensor_is_a_warning() {
    let spec = TinySpec::baichuan();
    let mut tensors = spec.tensors();
    tensors.push(RawTensor {
        name: "model.layers.0.self_attn.W_pack.bias".into(),
        dtype: "F16".into(),
        shape: vec![48],
        data: vec![0; 96],
    });
    let dir = tiny_dir("extra", &spec, &tensors);
    let m = Model::open(dir.path()).unwrap();
    assert_eq!(m.desc.warnings.len(), 1);
    assert!(m.desc.warnings[0].contains("model.layers.0.self_attn.W_pack.bias"), "{:?}", m.desc.warnings);
}

#[test]
fn bad_tensor_in_file_names_file_and_tensor() {
    let spec = TinySpec::baichuan();
    let mut tensors = spec.tensors();
    tensors.iter_mut().find(|t| t.name == "model.norm.weight").unwrap().dtype = "BF16".into();
    let dir = tiny_dir("bf16", &spec, &tensors);
    let e = format_err(Model::open(dir.path()));
    assert_eq!(e.kind, FormatErrorKind::WrongDtype);
    assert!(
        e.to_string().starts_with("gptq_model-4bit-8g.safetensors: `model.norm.weight`: expected F16, found BF16"),
        "{e}"
    );
}

/// The full Baichuan-7B shape (~4 GB on disk): run with `cargo test --release -p engine --test loader -- --ignored`.
#[test]
#[ignore = "writes ~4 GB"]
fn baichuan_7b_preset_writes_and_loads() {
    let dir = TempDir::new("7b");
    let spec = SynthSpec::baichuan_7b();
    let t = std::time::Instant::now();
    let report = write_checkpoint(dir.path(), &spec).unwrap();
    let written = t.elapsed();
    let m = Model::open(dir.path()).unwrap();
    eprintln!("7b: wrote {} bytes in {written:.2?}, opened in {:.2?}", report.weight_bytes, t.elapsed() - written);
    check_desc(&m, &spec);
    assert_eq!(m.desc.shards, ["gptq_model-4bit-128g.safetensors"]);
}

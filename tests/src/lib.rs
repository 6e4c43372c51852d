//! Shared helpers for the end-to-end tests: synthetic checkpoints in temporary directories, the Python
//! interpreter of the float64 reference, and error measures.

use std::path::{Path, PathBuf};

use engine::synth::{write_checkpoint, SynthSpec};
use engine_format::{Arch, DType};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("engine-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A named synthetic configuration.
pub struct Case {
    pub name: &'static str,
    pub spec: SynthSpec,
    /// `None` when the CUDA backend runs this checkpoint; else a phrase its refusal must contain (every refusal
    /// also names `--backend cpu`).
    pub cuda_refuses: Option<&'static str>,
}

impl Case {
    fn new(name: &'static str, spec: SynthSpec) -> Case {
        Case { name, spec, cuda_refuses: None }
    }
    fn cuda_refuses(self, because: &'static str) -> Case {
        Case { cuda_refuses: Some(because), ..self }
    }
}

/// Checkpoints of awkward sizes covering both namings, GQA, 4- and 8-bit GPTQ, every group size, act-order (one
/// permutation per input, and one per linear as AutoGPTQ writes them), sym/asym, fp16 and bf16, tied embeddings,
/// shards, and activation outliers.
pub fn cases() -> Vec<Case> {
    let tiny = SynthSpec::tiny();
    let llama = SynthSpec {
        arch: Arch::Llama,
        hidden: 128,
        intermediate: 344,
        heads: 8,
        kv_heads: 2,
        layers: 2,
        vocab: 1100,
        group_size: Some(64),
        desc_act: true,
        sym: false,
        seed: 7,
        rope_theta: 500000.0,
        ..tiny.clone()
    };
    vec![
        Case::new("baichuan-g32", tiny.clone()),
        Case::new(
            "baichuan-g128-actorder",
            SynthSpec {
                hidden: 256,
                intermediate: 640,
                heads: 4,
                kv_heads: 4,
                group_size: Some(128),
                desc_act: true,
                seed: 3,
                ..tiny.clone()
            },
        ),
        Case::new(
            "baichuan-g64-asym-2shards",
            SynthSpec { group_size: Some(64), sym: false, shards: 2, seed: 4, ..tiny.clone() },
        ),
        Case::new("baichuan-one-group", SynthSpec { group_size: None, seed: 5, ..tiny.clone() }),
        // A few hidden dims ~30x the others in the gate/up projections' normalized input (SynthSpec::outliers):
        // half of the 32-row chunks of K carry one, as trained models' massive activations do.
        Case::new(
            "baichuan-g128-outliers",
            SynthSpec { hidden: 256, intermediate: 640, group_size: Some(128), outliers: 4, seed: 18, ..tiny.clone() },
        ),
        Case::new("llama-gqa-g64-actorder-asym", llama.clone()),
        Case::new(
            "llama-g32-tied",
            SynthSpec {
                group_size: Some(32),
                desc_act: false,
                sym: true,
                tie_word_embeddings: true,
                seed: 8,
                ..llama.clone()
            },
        ),
        // An intermediate size that is a multiple of 64, without act-order: at <= 16 rows the short wgmma tile's
        // gate/up GEMM applies SwiGLU in its epilogue (the other cases keep swiglu_rows).
        Case::new(
            "llama-g64-inter384",
            SynthSpec { intermediate: 384, desc_act: false, group_size: Some(64), seed: 18, ..llama.clone() },
        ),
        Case::new("baichuan-fp16", SynthSpec { quantized: false, seed: 6, ..tiny.clone() }),
        // 8-bit GPTQ. intermediate 172 is a multiple of 4 (the 8-bit packing) but not of 8 and leaves a partial last
        // group (the CUDA GEMMs copy A in 8-column pieces and refuse it); 8-bit zero points run 1..=256 (asym) or
        // are 128 (sym).
        Case::new("baichuan-int8-g32", SynthSpec { bits: 8, intermediate: 172, seed: 9, ..tiny.clone() })
            .cuda_refuses("multiples of 8"),
        Case::new(
            "llama-int8-gqa-g64-actorder-per-linear-asym",
            SynthSpec { bits: 8, g_idx_per_linear: true, seed: 10, ..llama.clone() },
        ),
        Case::new(
            "baichuan-int8-g32-actorder-per-linear",
            SynthSpec { bits: 8, desc_act: true, g_idx_per_linear: true, seed: 15, ..tiny.clone() },
        ),
        Case::new(
            "baichuan-int8-one-group-asym",
            SynthSpec { bits: 8, group_size: None, sym: false, seed: 11, ..tiny.clone() },
        ),
        // AutoGPTQ's act-order: every linear its own permutation (LLaMA's q, k, v, gate, up separately; Baichuan's
        // W_pack is one linear, its gate and up differ).
        Case::new(
            "llama-gqa-g32-actorder-per-linear",
            SynthSpec { group_size: Some(32), g_idx_per_linear: true, seed: 16, ..llama.clone() },
        ),
        Case::new(
            "baichuan-g32-actorder-per-linear-asym",
            SynthSpec { desc_act: true, g_idx_per_linear: true, sym: false, seed: 17, ..tiny.clone() },
        ),
        // bfloat16: unquantized in both namings (tied embeddings in LLaMA's), and 4-bit GPTQ of a bfloat16 model
        // (embeddings and norms BF16, scales F16).
        Case::new("baichuan-bf16", SynthSpec { quantized: false, float_dtype: DType::BF16, seed: 12, ..tiny.clone() }),
        Case::new(
            "llama-bf16-gqa-tied",
            SynthSpec {
                quantized: false,
                float_dtype: DType::BF16,
                tie_word_embeddings: true,
                seed: 13,
                ..llama.clone()
            },
        ),
        Case::new("baichuan-g32-bf16", SynthSpec { float_dtype: DType::BF16, seed: 14, ..tiny.clone() }),
    ]
}

/// Write `spec` (with the test tokenizer) into a fresh temporary directory.
pub fn synth(tag: &str, spec: &SynthSpec) -> TempDir {
    let dir = TempDir::new(tag);
    let spec = engine::tiny::with_test_tokenizer(spec.clone()).unwrap();
    write_checkpoint(dir.path(), &spec).unwrap();
    dir
}

/// The Python interpreter with numpy and sentencepiece: `$ENGINE_PYTHON`, else `.venv/bin/python` at the
/// repository root if present, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ENGINE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_l2(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// Deterministic pseudo-random token ids in `1..vocab` (never 0, the unknown piece).
pub fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            1 + (s % (vocab as u64 - 1)) as u32
        })
        .collect()
}

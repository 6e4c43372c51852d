//! Shared by the fuzz targets: the fixed tiny checkpoints and the invariant every successful `describe` must keep.

// Each target is its own binary that includes this module and uses only part of it.
#![allow(dead_code)]

use engine_format::testutil::{serialize, RawTensor, TinySpec};
use engine_format::{parse_model_config, parse_quant_config, Arch, ModelConfig, ModelDesc, QuantConfig, Shard};

/// A valid tiny checkpoint: parsed configs, its tensors, and the serialized single shard.
pub struct Tiny {
    pub config: ModelConfig,
    pub quant: Option<QuantConfig>,
    pub tensors: Vec<RawTensor>,
    pub shard: Vec<u8>,
}

/// The naming × format variants (see `TinySpec::fuzz_variants`), in that order.
pub fn variants() -> Vec<Tiny> {
    TinySpec::fuzz_variants()
        .into_iter()
        .map(|(_, s)| {
            let config = parse_model_config("config.json", s.config_json().as_bytes()).expect("valid tiny config");
            let quant =
                s.quant_json().map(|q| parse_quant_config("quantize_config.json", q.as_bytes()).expect("valid"));
            let tensors = s.tensors();
            let shard = serialize(&tensors);
            Tiny { config, quant, tensors, shard }
        })
        .collect()
}

/// The variant whose tensors match this config: same naming, quantization (bits) and torch_dtype where one exists,
/// else same naming and quantized-or-not.
pub fn matching<'a>(variants: &'a [Tiny], config: &ModelConfig, quant: Option<&QuantConfig>) -> &'a Tiny {
    let bits = quant.map(|q| q.bits);
    variants
        .iter()
        .find(|v| {
            v.config.arch == config.arch
                && v.quant.as_ref().map(|q| q.bits) == bits
                && v.config.torch_dtype == config.torch_dtype
        })
        .unwrap_or_else(|| of_kind(variants, config.arch, quant.is_some()))
}

/// The first variant of this naming, quantized or not.
pub fn of_kind(variants: &[Tiny], arch: Arch, quantized: bool) -> &Tiny {
    variants.iter().find(|v| v.config.arch == arch && v.quant.is_some() == quantized).unwrap_or(&variants[0])
}

/// What `TensorRef` promises the engine: inside its shard, aligned, as long as its shape says. A violation is a
/// validation bug, so it panics (a crash for the fuzzer).
pub fn check_invariants(desc: &ModelDesc, shards: &[Shard<'_>]) {
    assert_eq!(desc.shards.len(), shards.len());
    for t in desc.tensors() {
        let shard = shards.get(t.shard).expect("shard index in range");
        assert!(t.start.checked_add(t.len).is_some_and(|end| end <= shard.bytes.len()), "{} out of bounds", t.name);
        assert_eq!(t.start % t.dtype.size(), 0, "{} misaligned", t.name);
        assert_eq!(Some(t.len), t.shape.iter().try_fold(t.dtype.size(), |a, &d| a.checked_mul(d)), "{}", t.name);
    }
    assert_eq!(desc.layers.len(), desc.config.num_hidden_layers);
}

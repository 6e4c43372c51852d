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

/// The four naming × quantization variants (see `TinySpec::fuzz_variants`), in that order.
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

/// The variant whose tensors match a config of this naming and quantization.
pub fn matching(variants: &[Tiny], arch: Arch, quantized: bool) -> &Tiny {
    let i = match (arch, quantized) {
        (Arch::Baichuan, true) => 0,
        (Arch::Llama, true) => 1,
        (Arch::Baichuan, false) => 2,
        (Arch::Llama, false) => 3,
    };
    &variants[i]
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

//! Arbitrary bytes split at NUL bytes into `config.json`, `quantize_config.json` and a shard index (JSON text never
//! contains a raw NUL): the parsers must never panic, and a config they accept is described against the valid tiny
//! shard of the matching naming, which must never panic either.
#![no_main]

use std::sync::OnceLock;

use engine_format::{check_index, describe, parse_index, parse_model_config, parse_quant_config, Shard};
use libfuzzer_sys::fuzz_target;

mod common;

static VARIANTS: OnceLock<Vec<common::Tiny>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let variants = VARIANTS.get_or_init(common::variants);
    let mut parts = data.splitn(3, |&b| b == 0);
    let (config, quant, index) = (parts.next().unwrap_or(&[]), parts.next(), parts.next());

    let quant = quant.filter(|q| !q.is_empty()).and_then(|q| parse_quant_config("quantize_config.json", q).ok());
    if let Some(index) = index {
        if let Ok(index) = parse_index("model.safetensors.index.json", index) {
            let _ = index.files();
            let v = &variants[1];
            let _ = check_index(
                "model.safetensors.index.json",
                &index,
                &[Shard { name: "model.safetensors", bytes: &v.shard }],
            );
        }
    }
    let Ok(config) = parse_model_config("config.json", config) else { return };
    let v = common::matching(variants, &config, quant.as_ref());
    let shards = [Shard { name: "model.safetensors", bytes: &v.shard }];
    if let Ok(desc) = describe(&config, quant.as_ref(), &shards) {
        common::check_invariants(&desc, &shards);
    }
    // The same config against the shard of the other quantization: wrong names and shapes must be errors.
    let other = common::of_kind(variants, config.arch, quant.is_none());
    let shards = [Shard { name: "model.safetensors", bytes: &other.shard }];
    if let Ok(desc) = describe(&config, quant.as_ref(), &shards) {
        common::check_invariants(&desc, &shards);
    }
});

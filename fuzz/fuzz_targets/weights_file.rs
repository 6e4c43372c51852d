//! Arbitrary bytes as the one safetensors shard of fixed valid tiny configs: `describe` must never panic, and when
//! it accepts the bytes every tensor reference must be sound.
#![no_main]

use std::sync::OnceLock;

use engine_format::{describe, read_shard, Shard};
use libfuzzer_sys::fuzz_target;

mod common;

static VARIANTS: OnceLock<Vec<common::Tiny>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let variants = VARIANTS.get_or_init(common::variants);
    let shards = [Shard { name: "gptq_model-4bit-8g.safetensors", bytes: data }];
    if read_shard(&shards[0]).is_err() {
        return;
    }
    // The header parsed: try it against every variant, GPTQ and fp16, Baichuan and LLaMA naming.
    for v in variants {
        if let Ok(desc) = describe(&v.config, v.quant.as_ref(), &shards) {
            common::check_invariants(&desc, &shards);
        }
    }
});

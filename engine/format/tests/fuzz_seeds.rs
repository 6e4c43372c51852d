//! Writes the seed corpora committed under `fuzz/corpus-seeds/` (run after changing the tiny checkpoints):
//! `cargo test -p engine-format --test fuzz_seeds -- --ignored`.

use std::path::PathBuf;

use engine_format::testutil::{serialize, TinySpec};

#[test]
#[ignore = "writes fuzz/corpus-seeds"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus-seeds");
    let dir = |t: &str| {
        let d = root.join(t);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (weights, configs, mutations) = (dir("weights_file"), dir("configs"), dir("checkpoint_mutations"));
    for (i, (name, spec)) in TinySpec::fuzz_variants().into_iter().enumerate() {
        let tensors = spec.tensors();
        let shard = serialize(&tensors);
        std::fs::write(weights.join(format!("{name}.safetensors")), &shard).unwrap();
        let header_len = u64::from_le_bytes(shard[..8].try_into().unwrap()) as usize;
        std::fs::write(weights.join(format!("{name}-header-only")), &shard[..8 + header_len]).unwrap();
        std::fs::write(weights.join(format!("{name}-one-tensor.safetensors")), serialize(&tensors[..1])).unwrap();

        let map: Vec<String> = tensors.iter().map(|t| format!("\"{}\": \"model.safetensors\"", t.name)).collect();
        let index =
            format!("{{\"metadata\": {{\"total_size\": {}}}, \"weight_map\": {{{}}}}}", shard.len(), map.join(", "));
        let mut seed = spec.config_json().into_bytes();
        seed.push(0);
        seed.extend_from_slice(spec.quant_json().unwrap_or_default().as_bytes());
        seed.push(0);
        seed.extend_from_slice(index.as_bytes());
        std::fs::write(configs.join(name), seed).unwrap();

        // Variant choice, edit count, then edits: none, a g_idx write, a dtype change, a split into two shards.
        for (j, edits) in
            [&[0u8][..], &[11, 0, 0, 0, 0, 1, 9, 0, 0, 0], &[4, 3, 0, 0, 0, 2], &[13, 20, 0, 0, 0]].iter().enumerate()
        {
            let mut input = vec![i as u8, 0]; // variant, then "1 edit"
            input.extend_from_slice(edits);
            std::fs::write(mutations.join(format!("{name}-{j}")), input).unwrap();
        }
    }
}

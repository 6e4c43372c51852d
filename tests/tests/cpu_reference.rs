//! The CPU backend against the independent float64 reference (tests/reference/forward.py, numpy), and decoding
//! with the KV cache against the full-prompt pass.

use e2e_tests::{cases, python, random_ids, rel_l2, repo_root, synth};
use engine::engine::{Engine, EngineOptions};
use engine::BackendKind;

fn cpu(dir: &std::path::Path) -> Engine {
    Engine::load(dir, &EngineOptions { backend: BackendKind::Cpu, ..Default::default() }).unwrap()
}

#[test]
fn logits_match_the_float64_reference_at_every_position() {
    for case in cases() {
        let dir = synth(case.name, &case.spec);
        let engine = cpu(dir.path());
        let vocab = engine.config().vocab_size;
        let ids = random_ids(23, vocab, 1);
        let got = engine.new_session(None).unwrap().feed_all_logits(&ids).unwrap();

        let out = dir.path().join("reference.f64");
        let ids_arg = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let status = std::process::Command::new(python())
            .arg(repo_root().join("tests/reference/forward.py"))
            .arg(dir.path())
            .arg(&ids_arg)
            .arg(&out)
            .status()
            .expect("run the Python reference (set ENGINE_PYTHON to a python with numpy)");
        assert!(
            status.success(),
            "{}: the float64 reference failed (is numpy installed? pip install numpy)",
            case.name
        );
        let bytes = std::fs::read(&out).unwrap();
        let want: Vec<f64> = bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(want.len(), ids.len() * vocab);
        let mut worst = 0f64;
        for (p, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
            let e = rel_l2(g, w);
            assert!(e <= 1e-4, "{}: position {p}: relative L2 error {e:.2e} > 1e-4", case.name);
            worst = worst.max(e);
        }
        // The measured margin, for the record (`cargo test --test cpu_reference -- --nocapture`).
        println!("{:<44} worst relative L2 over {} positions: {worst:.2e}", case.name, ids.len());
    }
}

#[test]
fn decoding_with_the_cache_agrees_with_the_full_prompt_pass() {
    for case in cases() {
        let dir = synth(case.name, &case.spec);
        let engine = cpu(dir.path());
        let vocab = engine.config().vocab_size;
        let ids = random_ids(19, vocab, 2);
        let full = engine.new_session(None).unwrap().feed_all_logits(&ids).unwrap();
        // Prompt of 5, then one token at a time.
        let mut s = engine.new_session(None).unwrap();
        let mut rows = s.feed_all_logits(&ids[..5]).unwrap();
        for &t in &ids[5..] {
            rows.extend(s.feed(&[t]).unwrap());
        }
        for (p, (a, b)) in rows.chunks(vocab).zip(full.chunks(vocab)).enumerate() {
            let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            let e = rel_l2(a, &b64);
            assert!(e <= 1e-5, "{}: position {p}: cached decode differs from the full pass by {e:.2e}", case.name);
        }
    }
}

//! The CUDA backend refuses every synthetic checkpoint it cannot run (K not a multiple of 8, ...) with one clear
//! error — what the checkpoint is, what CUDA runs, and `--backend cpu` — before it touches a device, so this runs
//! on any machine, GPU or not. The checkpoints it does run are compared with the CPU in gpu_vs_cpu.rs.

use e2e_tests::{cases, synth};
use engine::engine::{Engine, EngineOptions};
use engine::{BackendKind, Error};

#[test]
fn cuda_refuses_what_it_cannot_run_and_names_the_cpu_backend() {
    let mut refused = 0;
    for case in cases() {
        let Some(because) = case.cuda_refuses else { continue };
        let dir = synth(case.name, &case.spec);
        let cuda = EngineOptions { backend: BackendKind::Cuda, ..Default::default() };
        match Engine::load(dir.path(), &cuda) {
            Err(Error::BackendUnavailable(msg)) => {
                assert!(msg.contains(because) && msg.contains("--backend cpu"), "{}: {msg}", case.name);
            }
            Err(other) => panic!("{}: expected the backend to be unavailable, got: {other}", case.name),
            Ok(_) => panic!("{}: the CUDA backend loaded a checkpoint it cannot run", case.name),
        }
        // `auto` falls back to the CPU, which runs it.
        let auto = Engine::load(dir.path(), &EngineOptions { backend: BackendKind::Auto, ..Default::default() });
        assert_eq!(auto.unwrap_or_else(|e| panic!("{}: {e}", case.name)).backend_name(), "cpu", "{}", case.name);
        refused += 1;
    }
    assert!(refused >= 1, "no refusal exercised");
}

/// A prefill chunk whose rows of activations the GEMM tiles cannot address with 32-bit offsets is refused up
/// front, naming the largest chunk that works, also before any device is touched. The engine never plans a chunk
/// longer than the context, so the checkpoint declares the longest context the loader accepts (2^24 positions) and
/// rows wide enough (512 + a K step of halves) that 2^24 of them pass 2^32.
#[test]
fn cuda_refuses_a_prefill_chunk_too_long_to_address() {
    let case = cases().into_iter().find(|c| c.cuda_refuses.is_none()).expect("a case CUDA runs");
    let spec = engine::synth::SynthSpec { max_pos: 1 << 24, intermediate: 512, ..case.spec.clone() };
    let dir = synth(&format!("{}-long-context", case.name), &spec);
    let opts = EngineOptions { backend: BackendKind::Cuda, prefill_chunk: 1 << 40, ..Default::default() };
    match Engine::load(dir.path(), &opts) {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains("prefill chunk of 16777216 rows") && msg.contains("at most"), "{msg}")
        }
        Err(other) => panic!("expected the chunk to be refused, got: {other}"),
        Ok(_) => panic!("the CUDA backend took a chunk of 2^40 rows"),
    }
}

//! Test support: the built-in tiny model written to a folder of its own and loaded on the CPU.

use std::path::PathBuf;

use crate::backend::BackendKind;
use crate::engine::{Engine, EngineOptions};
use crate::synth::{write_checkpoint, SynthSpec};

/// The built-in tiny model in a folder of its own (removed on drop), loaded on the CPU.
pub(crate) struct TinyModel {
    dir: PathBuf,
    pub engine: Engine,
}

impl TinyModel {
    /// `name` keeps tests running in parallel apart; `prefill_chunk` is the engine's.
    pub fn new(name: &str, prefill_chunk: usize) -> TinyModel {
        let dir = std::env::temp_dir().join(format!("engine-unit-{}-{name}", std::process::id()));
        write_checkpoint(&dir, &crate::tiny::with_test_tokenizer(SynthSpec::tiny()).unwrap()).unwrap();
        let opts = EngineOptions { backend: BackendKind::Cpu, prefill_chunk, ..Default::default() };
        let engine = Engine::load(&dir, &opts).unwrap();
        TinyModel { dir, engine }
    }
}

impl Drop for TinyModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A loaded model ready to run: the validated checkpoint, the chosen backend, and the tokenizer. Sessions are
//! made from it; the C ABI's model handle and the CLI both hold one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_format::PlanLimits;
use engine_tools::{Tokenizer, TokenizerKind};

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{CudaBackend, CudaOptions, Tuning};
use crate::backend::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::measure::Measure;
use crate::model::Model;
use crate::session::{Session, SharedBackend};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub backend: BackendKind,
    /// CUDA device ordinal.
    pub device: usize,
    /// Positions of KV cache per session; `None` = the model's `max_position_embeddings`.
    pub max_context: Option<usize>,
    /// Most tokens per prefill forward pass (at most the context is used). Longer chunks read the weights fewer
    /// times per prompt and take more memory for the activations: 1024 made a 2048-token prompt 10% faster than
    /// 512 on an H200 (7B shape, BENCHMARKS.md) for 54 MB more, and 2048 no faster.
    pub prefill_chunk: usize,
    /// Report loading progress on stderr.
    pub progress: bool,
    /// Launch choices of the CUDA backend (the defaults are what measured fastest; see [`Tuning`]).
    pub tuning: Tuning,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backend: BackendKind::Auto,
            device: 0,
            max_context: None,
            prefill_chunk: 1024,
            progress: false,
            tuning: Tuning::default(),
        }
    }
}

/// A model loaded on a backend, with its tokenizer.
pub struct Engine {
    model: Arc<Model>,
    backend: Arc<SharedBackend>,
    backend_name: &'static str,
    device: String,
    tokenizer: Tokenizer,
    max_context: usize,
    prefill_chunk: usize,
    /// Why `Auto` did not pick CUDA, when it did not.
    pub fallback_note: Option<String>,
    pub load_time: Duration,
}

impl Engine {
    /// Open the checkpoint in `dir`, its tokenizer (`tokenizer.model`, else `tokenizer.json`), and the backend `opts`
    /// asks for.
    pub fn load(dir: &Path, opts: &EngineOptions) -> Result<Engine> {
        let t0 = Instant::now();
        let model = Arc::new(Model::open(dir)?);
        let c = &model.desc.config;
        let max_context = opts.max_context.unwrap_or(c.max_position_embeddings);
        if max_context == 0 || max_context > c.max_position_embeddings {
            return Err(Error::InvalidArgument(format!(
                "max context must be in 1..={} (max_position_embeddings of {}), got {max_context}",
                c.max_position_embeddings,
                dir.display()
            )));
        }
        if opts.prefill_chunk == 0 {
            return Err(Error::InvalidArgument("prefill chunk must be at least 1".into()));
        }
        let limits = PlanLimits::new(max_context, opts.prefill_chunk);
        let opts = &EngineOptions { prefill_chunk: limits.prefill_chunk, ..opts.clone() };
        let tokenizer = load_tokenizer(dir, c).map_err(|e| Error::Tokenizer(e.to_string()))?;
        if tokenizer.vocab_size() > c.vocab_size {
            return Err(Error::Tokenizer(format!(
                "{} has {} pieces but the model's vocab_size is {}",
                tokenizer.origin(),
                tokenizer.vocab_size(),
                c.vocab_size
            )));
        }

        let (backend, fallback_note) = make_backend(&model, opts, max_context)?;
        let backend_name = backend.name();
        let device = backend.device_description();
        Ok(Engine {
            model,
            backend: Arc::new(SharedBackend::new(backend)),
            backend_name,
            device,
            tokenizer,
            max_context,
            prefill_chunk: opts.prefill_chunk,
            fallback_note,
            load_time: t0.elapsed(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn config(&self) -> &engine_format::ModelConfig {
        &self.model.desc.config
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }
    pub fn device_description(&self) -> &str {
        &self.device
    }
    pub fn max_context(&self) -> usize {
        self.max_context
    }
    /// Most tokens one forward pass takes while prefilling.
    pub fn prefill_chunk(&self) -> usize {
        self.prefill_chunk
    }

    /// A new sequence with its own KV cache of `max_context` positions (`None`: the engine's).
    pub fn new_session(&self, max_context: Option<usize>) -> Result<Session> {
        let n = max_context.unwrap_or(self.max_context);
        if n == 0 || n > self.max_context {
            return Err(Error::InvalidArgument(format!(
                "session context must be in 1..={}, got {n}",
                self.max_context
            )));
        }
        Session::new(self.backend.clone(), n, self.prefill_chunk)
    }

    /// Run `f` with the backend's measurement interface (benchmarks, kernel breakdowns), holding the backend for
    /// the call; `None` when the backend measures nothing (the CPU).
    pub fn with_measure<R>(&self, f: impl FnOnce(&mut dyn Measure) -> R) -> Option<R> {
        let mut b = self.backend.lock();
        b.measure().map(f)
    }
}

/// The checkpoint's tokenizer with its special ids. A SentencePiece model takes BOS and EOS from `config.json`
/// (Baichuan's files name them there). A `tokenizer.json` keeps what `tokenizer_config.json` (or its post-processor)
/// says, as `transformers` does, and takes from `config.json` only what neither names. Generation ends at
/// `config.json`'s `eos_token_id` in both cases.
fn load_tokenizer(dir: &Path, c: &engine_format::ModelConfig) -> Result<Tokenizer, engine_tools::TokenizerError> {
    let tokenizer = Tokenizer::open(dir)?;
    match tokenizer.kind() {
        TokenizerKind::SentencePiece => tokenizer.with_bos_id(c.bos_token_id)?.with_eos_id(c.eos_token_id),
        TokenizerKind::HuggingFace => {
            let vocab = tokenizer.vocab_size();
            let fits = |id: u32| (id as usize) < vocab;
            let (bos, eos) = (tokenizer.bos_id(), tokenizer.eos_id());
            let mut tokenizer = tokenizer;
            if bos.is_none() && fits(c.bos_token_id) {
                tokenizer = tokenizer.with_bos_id(c.bos_token_id)?;
            }
            if eos.is_none() && fits(c.eos_token_id) {
                tokenizer = tokenizer.with_eos_id(c.eos_token_id)?;
            }
            Ok(tokenizer)
        }
    }
}

fn make_backend(
    model: &Arc<Model>,
    opts: &EngineOptions,
    max_context: usize,
) -> Result<(Box<dyn Backend>, Option<String>)> {
    let cuda = || {
        let o = CudaOptions {
            device: opts.device,
            max_context,
            prefill_chunk: opts.prefill_chunk,
            progress: opts.progress,
            tuning: opts.tuning,
        };
        CudaBackend::new(model.clone(), o)
    };
    match opts.backend {
        BackendKind::Cpu => Ok((Box::new(CpuBackend::new(model.clone())), None)),
        BackendKind::Cuda => Ok((Box::new(cuda()?), None)),
        BackendKind::Auto => match cuda() {
            Ok(b) => Ok((Box::new(b), None)),
            // Only a missing or unsuitable GPU falls back; a failure on a working GPU is reported.
            Err(Error::BackendUnavailable(why)) => Ok((Box::new(CpuBackend::new(model.clone())), Some(why))),
            Err(e) => Err(e),
        },
    }
}

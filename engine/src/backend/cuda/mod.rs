//! The CUDA backend: the memory plan allocated once, weights repacked and uploaded at load, a prefill path of
//! tensor-core GEMMs, and a decode step captured once per KV cache as a CUDA graph and replayed per token.
//!
//! Where the work is: `ptx/kernels/` (one concern per file). This module decides what runs when; below it:
//! - [`step`]: the launch sequences of a decode step and a prefill chunk, read like the CPU forward pass;
//! - [`shapes`]: every launch's grid, block and shared memory, and the choices behind them;
//! - [`kernels`]: each kernel as a typed handle, with the `#[repr(C)]` mirror of its parameter struct;
//! - [`buffers`] and [`weights`]: the memory plan resolved to typed device addresses, the weights uploaded;
//! - [`layout`]: the weight tiles the kernels read (GPTQ int4 / int8, fp16), repacked at load;
//! - [`driver`]: device, module, typed memory, copies, launches; [`staging`]: page-locked host memory;
//! - [`tuning`]: the launch choices as options; [`measure`]: what `engine-cli bench` asks of the backend;
//! - [`support`]: which checkpoints it runs, checked before any device is touched.

mod buffers;
mod driver;
mod kernels;
mod layout;
mod measure;
mod shapes;
mod staging;
mod step;
mod support;
mod tuning;
mod weights;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use cudarc::driver::CudaGraph;
use engine_format::plan::{self, KvLayout, MemoryPlan, PlanLimits, Region};
use engine_format::ModelConfig;

use crate::backend::{check_forward_args, Backend, KvCache, LogitsOut};
use crate::error::{Error, Result};
use crate::measure::Measure;
use crate::model::Model;
use crate::sampling::{Sampler, SamplerParams};
use buffers::{Activations, KvCacheMem, Workspace};
use driver::DeviceBuffer;
use kernels::Device;
use kernels::SamplerConfig;
use shapes::GemvStream;
use staging::TokenRing;
use step::{no_observer, DecodeKind, Step, StepEnd};
use weights::DeviceWeights;

pub use tuning::{Tuning, WgmmaTile, TUNING_KEYS};

/// Whether the CUDA backend runs `model` — `Err` says why not, and that `--backend cpu` does — decided from the
/// checkpoint alone, with or without a GPU (`engine-cli inspect` prints it).
pub fn runs(model: &Model) -> Result<()> {
    support::check(model)
}

/// Load-time choices for the CUDA backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CudaOptions {
    pub device: usize,
    pub max_context: usize,
    pub prefill_chunk: usize,
    pub progress: bool,
    pub tuning: Tuning,
}

pub(crate) struct CudaBackend {
    /// Page-locked words the greedy loop reads tokens from. First, so that it is freed while the context exists.
    token_ring: TokenRing,
    gpu: Device,
    tuning: Tuning,
    model: Arc<Model>,
    plan: MemoryPlan,
    weights: DeviceWeights,
    act_mem: DeviceBuffer,
    ws_mem: DeviceBuffer,
    act: Activations,
    ws: Workspace,
    /// Seconds the weight upload took (repack + copy).
    upload_s: f64,
}

/// A KV cache on the device, and the decode graphs captured for it (their kernel parameters point into it).
pub(crate) struct CudaKvCache {
    graphs: DecodeGraphs,
    mem: KvCacheMem,
}

/// One graph per kind of decode step (see [`DecodeKind`]: how it ends, how many attention splits), captured when
/// first needed. At most two split counts per ending (short and long contexts, `AttnSplits::kind`).
#[derive(Default)]
struct DecodeGraphs {
    graphs: Vec<(DecodeKind, SendGraph)>,
}

impl DecodeGraphs {
    fn get(&self, kind: DecodeKind) -> Option<&SendGraph> {
        self.graphs.iter().find(|(k, _)| *k == kind).map(|(_, g)| g)
    }
    fn insert(&mut self, kind: DecodeKind, graph: SendGraph) {
        self.graphs.push((kind, graph));
    }
}

/// A captured graph. cudarc's `CudaGraph` is not `Send` because graph handles must not be used from two threads
/// at once; every use here happens under the backend's lock (`&mut CudaBackend`), which serializes them.
struct SendGraph(CudaGraph);
// SAFETY: see the type's comment: access is serialized by `&mut` on the backend that owns the cache's use.
unsafe impl Send for SendGraph {}

impl KvCache for CudaKvCache {
    fn capacity(&self) -> usize {
        self.mem.positions()
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl CudaBackend {
    pub fn new(model: Arc<Model>, opts: CudaOptions) -> Result<CudaBackend> {
        // Before the device: a checkpoint CUDA cannot run is refused the same way with or without a GPU.
        support::check(&model)?;
        support::check_chunk(&model.desc, opts.prefill_chunk)?;
        let gpu = Device::open(opts.device, &opts.tuning)?;
        let limits =
            PlanLimits::new(opts.max_context, opts.prefill_chunk).with_lm_head_screen(opts.tuning.lm_head_screen);
        let plan = plan::plan(&model.desc, limits);
        let t0 = std::time::Instant::now();
        let weights = DeviceWeights::upload(&gpu, &model, &plan, &opts.tuning, opts.progress)?;
        let upload_s = t0.elapsed().as_secs_f64();
        // The lean K loop addresses a linear's words by 32-bit offsets.
        if gpu.gemv_stream(&opts.tuning) == GemvStream::Lean {
            let linears = weights.layers.iter().flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down]);
            if let Some(words) = linears.map(|l| l.words()).find(|&w| w > u32::MAX as u64) {
                return Err(Error::InvalidArgument(format!(
                    "tuning gemv_lean: a linear of {words} 16-byte words is past the lean K loop's 32-bit offsets; \
                     run with --tune gemv_lean=off (Tuning::gemv_lean = false)"
                )));
            }
        }
        let act_mem = gpu.alloc(plan.region_size(Region::Activations), "activations")?;
        let ws_mem = gpu.alloc(plan.region_size(Region::Workspace), "workspace")?;
        let (act, ws) = (Activations::resolve(&act_mem, &plan.act), Workspace::resolve(&ws_mem, &plan.ws));
        let token_ring = TokenRing::new(&gpu)?;
        gpu.sync()?;
        Ok(CudaBackend {
            token_ring,
            gpu,
            tuning: opts.tuning,
            model,
            plan,
            weights,
            act_mem,
            ws_mem,
            act,
            ws,
            upload_s,
        })
    }

    fn config_ref(&self) -> &ModelConfig {
        &self.model.desc.config
    }

    /// The launch sequences over this backend's resolved plan.
    fn step(&self) -> Step<'_> {
        Step {
            gpu: &self.gpu,
            tuning: &self.tuning,
            config: &self.model.desc.config,
            weights: &self.weights,
            act: &self.act,
            ws: &self.ws,
            ws_mem: &self.ws_mem,
            ws_plan: &self.plan.ws,
            chunk: self.plan.limits.prefill_chunk,
            host_ring: self.token_ring.device_words(),
        }
    }

    /// A KV cache of `positions` positions on the device.
    fn new_kv(&self, positions: usize) -> Result<KvCacheMem> {
        let layout = KvLayout::new(self.config_ref(), positions);
        // Not zeroed: attention reads only positions a step wrote (and the prefill kernels mask the rest of a tile).
        Ok(KvCacheMem::new(self.gpu.alloc_uninit(layout.bytes(), "the KV cache")?, layout))
    }

    fn cache<'a>(&self, cache: &'a mut dyn KvCache) -> Result<&'a mut CudaKvCache> {
        cache
            .as_any_mut()
            .downcast_mut::<CudaKvCache>()
            .ok_or_else(|| Error::InvalidArgument("KV cache was made by another backend".into()))
    }

    fn check_chunk(&self, tokens: &[u32]) -> Result<()> {
        if tokens.len() > self.plan.limits.prefill_chunk {
            return Err(Error::InvalidArgument(format!(
                "{} tokens in one forward pass; the CUDA backend takes at most the prefill chunk ({})",
                tokens.len(),
                self.plan.limits.prefill_chunk
            )));
        }
        Ok(())
    }

    /// Put the sampler's settings and the penalty's set (the ids in `context`) where the sampler kernel reads them.
    fn load_sampler(&self, params: &SamplerParams, context: &[u32]) -> Result<()> {
        let config = SamplerConfig::new(params);
        self.gpu.upload(&self.ws_mem, self.plan.ws.sampler, bytemuck::cast_slice(&[config]))?;
        if params.repetition_penalty != 1.0 {
            let mut seen = vec![0u32; self.plan.ws.seen.len];
            for &t in context.iter().filter(|&&t| (t as usize) < self.config_ref().vocab_size) {
                seen[t as usize / 32] |= 1 << (t % 32);
            }
            self.gpu.upload(&self.ws_mem, self.plan.ws.seen, &seen)?;
        }
        Ok(())
    }

    /// Capture the decode graph of `cache` for steps of `kind`, if it has not been captured yet.
    fn ensure_graph(&self, cache: &mut CudaKvCache, kind: DecodeKind) -> Result<()> {
        if cache.graphs.get(kind).is_some() {
            return Ok(());
        }
        let stream = &self.gpu.stream;
        stream
            .begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| Error::Device(format!("starting graph capture: {e}")))?;
        // SAFETY: the graph runs only through `replay`, whose callers have put a checked token and a position below
        // the cache's capacity into ws.tokens / ws.pos first (`decode_step`), or bound the greedy steps, which
        // write argmax tokens and advance the position on the device, by the capacity (`decode_greedy`); the cache
        // owns the graph, so it outlives every replay.
        let launched = unsafe { self.step().decode(&cache.mem, kind, &mut no_observer) };
        let graph = stream.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
        launched?;
        let graph = graph
            .map_err(|e| Error::Device(format!("capturing the decode graph: {e}")))?
            .ok_or_else(|| Error::Device("graph capture produced no graph".into()))?;
        cache.graphs.insert(kind, SendGraph(graph));
        Ok(())
    }

    fn replay(cache: &CudaKvCache, kind: DecodeKind) -> Result<()> {
        let graph = &cache.graphs.get(kind).expect("ensure_graph ran first").0;
        graph.launch().map_err(|e| Error::Device(format!("replaying the decode graph: {e}")))
    }

    /// Run one decode step for `token` at `pos` (< the cache's capacity) through the graph that ends as `end`.
    fn decode_step(&self, cache: &mut CudaKvCache, pos: usize, token: u32, end: StepEnd) -> Result<()> {
        self.step().upload(pos, &[token])?;
        let kind = self.step().attn_splits().kind(pos, end);
        self.ensure_graph(cache, kind)?;
        Self::replay(cache, kind)
    }

    /// Run a prefill chunk of `tokens` at positions `start..`; leaves the rows' residual stream in `act.x`.
    fn prefill(&self, cache: &CudaKvCache, start: usize, tokens: &[u32]) -> Result<()> {
        self.step().prefill(&cache.mem, start, tokens)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn config(&self) -> &ModelConfig {
        self.config_ref()
    }

    fn device_description(&self) -> String {
        self.gpu.describe()
    }

    fn measure(&mut self) -> Option<&mut dyn Measure> {
        Some(self)
    }

    fn new_cache(&mut self, max_context: usize) -> Result<Box<dyn KvCache>> {
        if max_context == 0 || max_context > self.plan.limits.max_context {
            return Err(Error::InvalidArgument(format!(
                "max context must be in 1..={} (the context the model was loaded for), got {max_context}",
                self.plan.limits.max_context
            )));
        }
        Ok(Box::new(CudaKvCache { graphs: DecodeGraphs::default(), mem: self.new_kv(max_context)? }))
    }

    fn forward(&mut self, cache: &mut dyn KvCache, start: usize, tokens: &[u32], out: LogitsOut<'_>) -> Result<()> {
        let cache = self.cache(cache)?;
        check_forward_args(self.config_ref(), cache.capacity(), start, tokens, &out)?;
        self.check_chunk(tokens)?;
        let (vocab, logits) = (self.config_ref().vocab_size, self.plan.ws.logits);
        if tokens.len() == 1 {
            self.decode_step(cache, start, tokens[0], StepEnd::Logits)?;
            match out {
                LogitsOut::None => self.gpu.sync(),
                LogitsOut::Last(dst) | LogitsOut::All(dst) => self.gpu.download(dst, &self.ws_mem, logits),
            }
        } else {
            self.prefill(cache, start, tokens)?;
            let rows: Vec<(usize, &mut [f32])> = match out {
                LogitsOut::None => return self.gpu.sync(),
                LogitsOut::Last(dst) => vec![(tokens.len() - 1, dst)],
                LogitsOut::All(dst) => dst.chunks_mut(vocab).enumerate().collect(),
            };
            for (row, dst) in rows {
                self.step().lm_head(row, false)?;
                self.gpu.download(dst, &self.ws_mem, logits)?;
            }
            Ok(())
        }
    }

    /// Prefill, then the scoring kernels: the head as one GEMM over the chunk's rows, reduced to each row's
    /// negative log-likelihood on the device; only `next.len()` floats come back.
    fn forward_nll(&mut self, cache: &mut dyn KvCache, start: usize, tokens: &[u32], next: &[u32]) -> Result<Vec<f64>> {
        let cache = self.cache(cache)?;
        check_forward_args(self.config_ref(), cache.capacity(), start, tokens, &LogitsOut::None)?;
        crate::backend::check_next(self.config_ref(), tokens, next)?;
        self.check_chunk(tokens)?;
        self.prefill(cache, start, tokens)?;
        // Rows without a target (the last, when `next` is one short) are marked by an id outside the vocabulary.
        let mut targets = next.to_vec();
        targets.resize(tokens.len(), u32::MAX);
        self.gpu.upload(&self.ws_mem, self.plan.ws.score_targets, &targets)?;
        self.step().score(tokens.len())?;
        let mut nll = vec![0f32; next.len()];
        self.gpu.download(&mut nll, &self.ws_mem, self.plan.ws.score_nll)?;
        Ok(nll.into_iter().map(f64::from).collect())
    }

    fn forward_sample(
        &mut self,
        cache: &mut dyn KvCache,
        start: usize,
        tokens: &[u32],
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        // The fused argmax answers greedy decoding without a penalty; every other setting is the sampler kernel's.
        let end = if sampler.params.is_plain_argmax() { StepEnd::Argmax } else { StepEnd::Sample };
        let cache = self.cache(cache)?;
        check_forward_args(self.config_ref(), cache.capacity(), start, tokens, &LogitsOut::None)?;
        self.check_chunk(tokens)?;
        if end == StepEnd::Sample {
            self.load_sampler(&sampler.params, history)?;
        }
        let mut next = [0u32];
        if tokens.len() == 1 {
            // The step's token is where the graph's argmax or sampler wrote it (decode_advance only copies it).
            self.decode_step(cache, start, tokens[0], end)?;
            self.gpu.download(&mut next, &self.ws_mem, self.plan.ws.tokens)?;
        } else {
            self.prefill(cache, start, tokens)?;
            let step = self.step();
            step.lm_head(tokens.len() - 1, end == StepEnd::Argmax)?;
            if end == StepEnd::Sample {
                step.sample(tokens.len() as u32)?;
            }
            self.gpu.download(&mut next, &self.ws_mem, self.plan.ws.tokens)?;
        }
        Ok(next[0])
    }

    /// The whole decode loop on the device, whatever the sampler settings: the graph (fused argmax, or the sampler
    /// kernel) writes each step's token where the next replay reads it, so replays are queued back to back, up to
    /// [`staging::RUN_AHEAD`] steps ahead of the host, which only copies each token out (4 bytes, into pinned
    /// memory) to stream it and check the stop conditions. The sampler keeps the penalty's set on the device and
    /// adds each fed token to it itself.
    fn decode_loop(
        &mut self,
        cache: &mut dyn KvCache,
        start: usize,
        first: u32,
        max_tokens: usize,
        params: &SamplerParams,
        history: &[u32],
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<usize> {
        params.validate()?;
        let cache = self.cache(cache)?;
        check_forward_args(self.config_ref(), cache.capacity(), start, &[first], &LogitsOut::None)?;
        // Each replay decodes at the position the previous one advanced to: at most capacity − start of them.
        let max_tokens = max_tokens.min(cache.capacity() - start);
        let end = if params.is_plain_argmax() { StepEnd::Argmax } else { StepEnd::Sample };
        if end == StepEnd::Sample {
            self.load_sampler(params, history)?;
        }
        self.step().upload(start, &[first])?;
        // Replay i decodes at position start + i, and the split count only grows with the position: the graphs of
        // the first and the last position are every graph the loop replays, captured before any replay is queued.
        let splits = self.step().attn_splits();
        let kind_at = |i: usize| splits.kind(start + i, end);
        let (first_kind, last_kind) = (kind_at(0), kind_at(max_tokens.saturating_sub(1)));
        self.ensure_graph(cache, first_kind)?;
        self.ensure_graph(cache, last_kind)?;
        self.token_ring.reset(start);
        let (mut launched, mut consumed) = (0usize, 0usize);
        let mut run = || -> Result<usize> {
            while consumed < max_tokens {
                while launched < max_tokens && self.token_ring.has_room() {
                    Self::replay(cache, kind_at(launched))?;
                    self.token_ring.launched(&self.gpu)?;
                    launched += 1;
                }
                let token = self.token_ring.take()?;
                consumed += 1;
                if token as usize >= self.model.desc.config.vocab_size {
                    return Err(Error::Device(format!("the device produced token id {token}, outside the vocabulary")));
                }
                if !on_token(token) {
                    break;
                }
            }
            Ok(consumed)
        };
        let result = run();
        // Let the steps that ran ahead finish (what they wrote lies past the tokens the session keeps), and the
        // token copies with them, on every path out.
        self.gpu.sync()?;
        result
    }
}

//! The CUDA backend: the memory plan allocated once, weights repacked and uploaded at load, a prefill path of
//! tensor-core GEMMs, and a decode step captured once per KV cache as a CUDA graph and replayed per token.
//!
//! Where the work is: `ptx/kernels/` (one concern per file). This module only decides what runs where:
//! - [`driver`]: device, module, memory, launches;
//! - [`layout`]: the repacked int4 layout the kernels read;
//! - [`params`]: the kernels' parameter blocks;
//! - [`weights`]: the upload;
//! - [`step`]: the launch sequences of a prefill chunk and of a decode step.

pub mod driver;
pub mod layout;
pub mod params;
pub mod staging;
mod step;
pub mod weights;

#[cfg(test)]
mod tests;

use std::any::Any;
use std::sync::Arc;

use cudarc::driver::CudaGraph;
use engine_format::plan::{self, MemoryPlan, PlanLimits, Region};
use engine_format::ModelConfig;

use crate::backend::{Backend, KvCache, LogitsOut};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sampling::Sampler;
use driver::{DeviceMem, Gpu};
use weights::DeviceWeights;

/// Load-time choices for the CUDA backend.
#[derive(Debug, Clone, Copy)]
pub struct CudaOptions {
    pub device: usize,
    pub max_context: usize,
    pub prefill_chunk: usize,
    pub progress: bool,
}

pub struct CudaBackend {
    /// Host memory the greedy loop copies tokens into (`TOKEN_RING` words, pinned, so the copies are
    /// asynchronous). First, so that it is freed while the context still exists.
    pinned: staging::Pinned,
    gpu: Gpu,
    model: Arc<Model>,
    plan: MemoryPlan,
    w: DeviceWeights,
    act: DeviceMem,
    ws: DeviceMem,
    prefill_chunk: usize,
    /// Seconds the weight upload took (repack + copy).
    pub upload_s: f64,
}

/// Decode steps the device may run ahead of the host in [`CudaBackend`]'s greedy loop.
pub const RUN_AHEAD: usize = 8;

/// A KV cache on the device, and the decode graphs captured for it (their kernel parameters point into it).
pub struct CudaKvCache {
    mem: DeviceMem,
    capacity: usize,
    graphs: DecodeGraphs,
}

#[derive(Default)]
struct DecodeGraphs {
    /// Ends in the fused argmax and `decode_advance`: the next token never leaves the device.
    greedy: Option<SendGraph>,
    /// Ends with the logits in the workspace, for sampling on the host.
    logits: Option<SendGraph>,
}

/// A captured graph. cudarc's `CudaGraph` is not `Send` because graph handles must not be used from two threads
/// at once; every use here happens under the backend's lock (`&mut CudaBackend`), which serializes them.
struct SendGraph(CudaGraph);
// SAFETY: see the type's comment: access is serialized by `&mut` on the backend that owns the cache's use.
unsafe impl Send for SendGraph {}

impl KvCache for CudaKvCache {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl CudaBackend {
    pub fn new(model: Arc<Model>, opts: CudaOptions) -> Result<CudaBackend> {
        let gpu = Gpu::open(opts.device)?;
        check_supported(&model.desc.config)?;
        let limits = PlanLimits { max_context: opts.max_context, prefill_chunk: opts.prefill_chunk };
        let plan = plan::plan(&model.desc, limits);
        let t0 = std::time::Instant::now();
        let w = DeviceWeights::upload(&gpu, &model, &plan, opts.progress)?;
        let upload_s = t0.elapsed().as_secs_f64();
        let act = gpu.alloc(plan.region_size(Region::Activations), "activations")?;
        let ws = gpu.alloc(plan.region_size(Region::Workspace), "workspace")?;
        let pinned = staging::Pinned::new(plan::TOKEN_RING * 4)?;
        gpu.sync()?;
        Ok(CudaBackend { gpu, model, plan, w, act, ws, prefill_chunk: opts.prefill_chunk, pinned, upload_s })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// Device address of a plan buffer in the activation or workspace region.
    fn buf(&self, name: &str) -> u64 {
        let b = self.plan.get(name).unwrap_or_else(|| panic!("plan has no buffer {name}"));
        match b.region {
            Region::Activations => self.act.ptr + b.offset as u64,
            Region::Workspace => self.ws.ptr + b.offset as u64,
            _ => unreachable!("{name} is not an activation or workspace buffer"),
        }
    }

    fn cache<'a>(&self, cache: &'a mut dyn KvCache) -> Result<&'a mut CudaKvCache> {
        cache
            .as_any_mut()
            .downcast_mut::<CudaKvCache>()
            .ok_or_else(|| Error::InvalidArgument("KV cache was made by another backend".into()))
    }

    /// Capture the decode graph of `cache` (greedy or logits flavour) if it has not been captured yet.
    fn ensure_graph(&mut self, cache: &mut CudaKvCache, greedy: bool) -> Result<()> {
        let captured = if greedy { cache.graphs.greedy.is_some() } else { cache.graphs.logits.is_some() };
        if captured {
            return Ok(());
        }
        let stream = self.gpu.stream.clone();
        stream
            .begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| Error::Device(format!("starting graph capture: {e}")))?;
        let launched = step::decode(self, cache.mem.ptr, cache.capacity, greedy, 0, &mut |_, _| Ok(()));
        let graph = stream.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
        launched?;
        let graph = graph
            .map_err(|e| Error::Device(format!("capturing the decode graph: {e}")))?
            .ok_or_else(|| Error::Device("graph capture produced no graph".into()))?;
        let graph = Some(SendGraph(graph));
        if greedy {
            cache.graphs.greedy = graph;
        } else {
            cache.graphs.logits = graph;
        }
        Ok(())
    }

    fn replay(cache: &CudaKvCache, greedy: bool) -> Result<()> {
        let slot = if greedy { &cache.graphs.greedy } else { &cache.graphs.logits };
        let graph = &slot.as_ref().expect("ensure_graph ran first").0;
        graph.launch().map_err(|e| Error::Device(format!("replaying the decode graph: {e}")))
    }

    /// Run one decode step for `token` at `pos` through the greedy or the logits graph.
    fn decode_step(&mut self, cache: &mut CudaKvCache, pos: usize, token: u32, greedy: bool) -> Result<()> {
        self.gpu.upload(self.buf("ws.tokens"), bytemuck::bytes_of(&token))?;
        self.gpu.upload(self.buf("ws.pos"), bytemuck::bytes_of(&(pos as u32)))?;
        self.ensure_graph(cache, greedy)?;
        Self::replay(cache, greedy)
    }

    /// Run a prefill chunk of `tokens` at positions `start..`; leaves the last row's residual in `act.x`.
    fn prefill(&mut self, cache: &CudaKvCache, start: usize, tokens: &[u32]) -> Result<()> {
        self.gpu.upload(self.buf("ws.tokens"), bytemuck::cast_slice(tokens))?;
        self.gpu.upload(self.buf("ws.pos"), bytemuck::bytes_of(&(start as u32)))?;
        step::prefill(self, cache.mem.ptr, cache.capacity, tokens.len())
    }
}

/// One kernel's share of a decode step, summed over the layers.
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub launches: usize,
    pub ms: f64,
    pub bytes: u64,
}

impl CudaBackend {
    /// Time each kernel of a decode step at context length `pos + 1`: the step's kernels are launched one by one
    /// (no graph) with an event after each, `reps` times; the median of each kernel's time is kept.
    pub fn profile_decode_step(
        &mut self,
        cache: &mut dyn KvCache,
        pos: usize,
        token: u32,
        reps: usize,
    ) -> Result<Vec<KernelTime>> {
        let cache = self.cache(cache)?;
        if pos >= cache.capacity {
            return Err(Error::ContextOverflow { needed: pos + 1, limit: cache.capacity, what: "KV cache capacity" });
        }
        let ctx = self.gpu.ctx.clone();
        let event = || {
            ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| Error::Device(format!("creating an event: {e}")))
        };
        let mut samples: Vec<Vec<(&'static str, f64, u64)>> = Vec::new();
        for _ in 0..reps.max(1) {
            self.gpu.upload(self.buf("ws.tokens"), bytemuck::bytes_of(&token))?;
            self.gpu.upload(self.buf("ws.pos"), bytemuck::bytes_of(&(pos as u32)))?;
            let start = event()?;
            start.record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
            let mut marks = Vec::new();
            step::decode(self, cache.mem.ptr, cache.capacity, false, pos + 1, &mut |name, bytes| {
                let e = event()?;
                e.record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
                marks.push((name, bytes, e));
                Ok(())
            })?;
            self.gpu.sync()?;
            let mut prev = &start;
            let mut row = Vec::new();
            for (name, bytes, e) in &marks {
                let ms = prev.elapsed_ms(e).map_err(|e| Error::Device(e.to_string()))? as f64;
                row.push((*name, ms, *bytes));
                prev = e;
            }
            samples.push(row);
        }
        // Median per launch position, then summed per kernel name in first-seen order.
        let n = samples[0].len();
        let mut out: Vec<KernelTime> = Vec::new();
        for i in 0..n {
            let mut t: Vec<f64> = samples.iter().map(|r| r[i].1).collect();
            t.sort_by(|a, b| a.total_cmp(b));
            let (name, bytes) = (samples[0][i].0, samples[0][i].2);
            let ms = t[t.len() / 2];
            match out.iter_mut().find(|k| k.kernel == name) {
                Some(k) => {
                    k.launches += 1;
                    k.ms += ms;
                    k.bytes += bytes;
                }
                None => out.push(KernelTime { kernel: name, launches: 1, ms, bytes }),
            }
        }
        Ok(out)
    }

    /// The card's copy bandwidth in bytes per second (read + written), from a 2 × 1 GiB device-to-device copy by
    /// the engine's own 16-byte copy kernel; median of 10 after a warm-up. The buffers are freed on return.
    pub fn copy_bandwidth(&self) -> Result<f64> {
        let bytes: usize = 1 << 30;
        let (src, dst) = (self.gpu.alloc(bytes, "the bandwidth probe")?, self.gpu.alloc(bytes, "the bandwidth probe")?);
        // Random-looking contents, not zeros.
        let pattern: Vec<u8> = (0..bytes / 64).map(|i| (i as u32).wrapping_mul(2654435761) as u8).collect();
        for c in 0..64 {
            self.gpu.upload(src.ptr + (c * bytes / 64) as u64, &pattern)?;
        }
        let ctx = self.gpu.ctx.clone();
        let event = || {
            ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| Error::Device(format!("creating an event: {e}")))
        };
        let mut times = Vec::new();
        for i in 0..11 {
            let (a, b) = (event()?, event()?);
            a.record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
            let (mut s, mut d, mut n) = (src.ptr, dst.ptr, (bytes / 16) as u64);
            let grid = 2 * self.gpu.sm_count;
            // SAFETY: copy_bytes_read_bw(const uint4*, uint4*, uint64_t) over n 16-byte chunks of two 1 GiB buffers.
            unsafe {
                self.gpu.launch_raw(
                    &self.gpu.k.copy_bw,
                    (grid, 1, 1),
                    256,
                    0,
                    &mut [step::arg(&mut s), step::arg(&mut d), step::arg(&mut n)],
                )?;
            }
            b.record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
            self.gpu.sync()?;
            if i > 0 {
                times.push(a.elapsed_ms(&b).map_err(|e| Error::Device(e.to_string()))? as f64);
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        Ok(2.0 * bytes as f64 / (times[times.len() / 2] / 1e3))
    }

    /// GPU time of a prefill of `tokens` at position 0 followed by the lm_head of the last row, in ms, measured with
    /// events around the launches (so host launch cost is excluded when the GPU runs ahead of it).
    pub fn time_prefill(&mut self, cache: &mut dyn KvCache, tokens: &[u32]) -> Result<f64> {
        let cache = self.cache(cache)?;
        crate::backend::check_forward_args(self.config(), cache.capacity, 0, tokens, &LogitsOut::None)?;
        if tokens.len() > self.prefill_chunk || tokens.len() < 2 {
            return Err(Error::InvalidArgument(format!("time_prefill takes 2..={} tokens", self.prefill_chunk)));
        }
        let ev = |ctx: &std::sync::Arc<cudarc::driver::CudaContext>| {
            ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| Error::Device(format!("creating an event: {e}")))
        };
        let (a, b) = (ev(&self.gpu.ctx)?, ev(&self.gpu.ctx)?);
        a.record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
        self.prefill(cache, 0, tokens)?;
        step::lm_head(self, tokens.len() - 1, true)?;
        b.record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
        self.gpu.sync()?;
        Ok(a.elapsed_ms(&b).map_err(|e| Error::Device(e.to_string()))? as f64)
    }

    /// Bytes a decode step must read at context length `len`: every weight the step touches once (the embedding
    /// only for its one row) plus the KV cache.
    pub fn decode_bytes(&self, len: usize) -> u64 {
        let c = self.config();
        let mut bytes: u64 = self
            .w
            .layers
            .iter()
            .map(|l| {
                step::linear_bytes(&l.qkv)
                    + step::linear_bytes(&l.o)
                    + step::linear_bytes(&l.gate_up)
                    + step::linear_bytes(&l.down)
                    + 2 * 2 * c.hidden_size as u64
            })
            .sum();
        bytes += (c.vocab_size * c.hidden_size * 2 + c.hidden_size * 2 + c.hidden_size * 2) as u64;
        bytes + (2 * c.num_hidden_layers * c.num_key_value_heads * len * c.head_dim * 2) as u64
    }

    /// Device memory the engine holds: the plan's weights, activations and workspace (KV caches are counted by
    /// the caller, one per session).
    pub fn device_bytes(&self) -> (usize, usize, usize) {
        (self.w.mem.len, self.act.len, self.ws.len)
    }
}

/// What the CUDA kernels need of a model's shape, checked before anything is allocated.
fn check_supported(c: &ModelConfig) -> Result<()> {
    let hd = c.head_dim;
    if !(hd.is_power_of_two() && (8..=256).contains(&hd)) {
        return Err(Error::BackendUnavailable(format!(
            "head_dim {hd}: the CUDA attention kernels need a power of two in 8..=256; use --backend cpu"
        )));
    }
    if c.hidden_size % 8 != 0 || c.intermediate_size % 8 != 0 {
        return Err(Error::BackendUnavailable(
            "hidden_size and intermediate_size must be multiples of 8 on the CUDA backend; use --backend cpu".into(),
        ));
    }
    Ok(())
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn config(&self) -> &ModelConfig {
        &self.model.desc.config
    }

    fn device_description(&self) -> String {
        self.gpu.describe()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn new_cache(&mut self, max_context: usize) -> Result<Box<dyn KvCache>> {
        if max_context == 0 || max_context > self.plan.limits.max_context {
            return Err(Error::InvalidArgument(format!(
                "max context must be in 1..={} (the context the model was loaded for), got {max_context}",
                self.plan.limits.max_context
            )));
        }
        let c = self.config();
        let bytes = 2 * c.num_hidden_layers * c.num_key_value_heads * max_context * c.head_dim * 2;
        let mem = self.gpu.alloc(bytes, "the KV cache")?;
        Ok(Box::new(CudaKvCache { mem, capacity: max_context, graphs: DecodeGraphs::default() }))
    }

    fn forward(&mut self, cache: &mut dyn KvCache, start: usize, tokens: &[u32], out: LogitsOut<'_>) -> Result<()> {
        let cache = self.cache(cache)?;
        crate::backend::check_forward_args(self.config(), cache.capacity, start, tokens, &out)?;
        if tokens.len() > self.prefill_chunk {
            return Err(Error::InvalidArgument(format!(
                "{} tokens in one forward pass; the CUDA backend takes at most the prefill chunk ({})",
                tokens.len(),
                self.prefill_chunk
            )));
        }
        let vocab = self.config().vocab_size;
        let logits = self.buf("ws.logits");
        if tokens.len() == 1 {
            self.decode_step(cache, start, tokens[0], false)?;
            match out {
                LogitsOut::None => self.gpu.sync(),
                LogitsOut::Last(dst) | LogitsOut::All(dst) => self.gpu.download(dst, logits),
            }
        } else {
            self.prefill(cache, start, tokens)?;
            let rows: Vec<(usize, &mut [f32])> = match out {
                LogitsOut::None => return self.gpu.sync(),
                LogitsOut::Last(dst) => vec![(tokens.len() - 1, dst)],
                LogitsOut::All(dst) => dst.chunks_mut(vocab).enumerate().collect(),
            };
            for (row, dst) in rows {
                step::lm_head(self, row, false)?;
                self.gpu.download(dst, logits)?;
            }
            Ok(())
        }
    }

    fn forward_sample(
        &mut self,
        cache: &mut dyn KvCache,
        start: usize,
        tokens: &[u32],
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        // The fused argmax answers greedy decoding without a penalty; everything else samples on the host.
        let on_device = sampler.params.is_greedy() && sampler.params.repetition_penalty == 1.0;
        if !on_device {
            return crate::backend::sample_on_host(self, cache, start, tokens, sampler, history);
        }
        let cache = self.cache(cache)?;
        crate::backend::check_forward_args(self.config(), cache.capacity, start, tokens, &LogitsOut::None)?;
        let mut next = [0u32];
        if tokens.len() == 1 {
            self.decode_step(cache, start, tokens[0], true)?;
            let ring = self.buf("ws.token_ring") + 4 * (start % plan::TOKEN_RING) as u64;
            self.gpu.download(&mut next, ring)?;
        } else {
            if tokens.len() > self.prefill_chunk {
                return Err(Error::InvalidArgument(format!(
                    "{} tokens in one forward pass; the CUDA backend takes at most the prefill chunk ({})",
                    tokens.len(),
                    self.prefill_chunk
                )));
            }
            self.prefill(cache, start, tokens)?;
            step::lm_head(self, tokens.len() - 1, true)?;
            self.gpu.download(&mut next, self.buf("ws.tokens"))?;
        }
        Ok(next[0])
    }

    /// The whole greedy loop on the device: the greedy graph writes each step's token where the next replay
    /// reads it, so replays are queued back to back, up to [`RUN_AHEAD`] steps ahead of the host, which only
    /// copies each token out (4 bytes, into pinned memory) to stream it and check the stop conditions.
    fn decode_greedy(
        &mut self,
        cache: &mut dyn KvCache,
        start: usize,
        first: u32,
        max_tokens: usize,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<usize> {
        let cache = self.cache(cache)?;
        crate::backend::check_forward_args(self.config(), cache.capacity, start, &[first], &LogitsOut::None)?;
        let max_tokens = max_tokens.min(cache.capacity - start);
        self.gpu.upload(self.buf("ws.tokens"), bytemuck::bytes_of(&first))?;
        self.gpu.upload(self.buf("ws.pos"), bytemuck::bytes_of(&(start as u32)))?;
        self.ensure_graph(cache, true)?;
        let ring = self.buf("ws.token_ring");
        let stream = self.gpu.stream.cu_stream();
        let events: Vec<cudarc::driver::CudaEvent> = (0..RUN_AHEAD)
            .map(|_| self.gpu.ctx.new_event(None))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Device(format!("creating an event: {e}")))?;
        let (mut launched, mut consumed) = (0usize, 0usize);
        let mut result = Ok(());
        while consumed < max_tokens {
            while launched < max_tokens && launched < consumed + RUN_AHEAD {
                Self::replay(cache, true)?;
                let slot = (start + launched) % plan::TOKEN_RING;
                // SAFETY: the pinned ring has TOKEN_RING words and lives as long as the backend; slot < TOKEN_RING;
                // `ring + 4 * slot` lies in the device ring of TOKEN_RING words.
                unsafe {
                    let dst = &mut self.pinned.as_mut_slice()[4 * slot..4 * slot + 4];
                    cudarc::driver::result::memcpy_dtoh_async(dst, ring + 4 * slot as u64, stream)
                        .map_err(|e| Error::Device(format!("copying a token: {e}")))?;
                }
                events[launched % RUN_AHEAD].record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
                launched += 1;
            }
            events[consumed % RUN_AHEAD]
                .synchronize()
                .map_err(|e| Error::Device(format!("running the decode graph: {e}")))?;
            // SAFETY: the event above orders this read after the copy into the slot; the slot is not written again
            // before this token is read (at most RUN_AHEAD < TOKEN_RING copies are in flight); `at` is a 4-byte
            // aligned offset inside the TOKEN_RING words of page-aligned pinned memory.
            let at = 4 * ((start + consumed) % plan::TOKEN_RING);
            let token = unsafe { std::ptr::read_volatile(self.pinned.as_ptr().add(at) as *const u32) };
            consumed += 1;
            if token as usize >= self.config().vocab_size {
                result = Err(Error::Device(format!("the device produced token id {token}, outside the vocabulary")));
                break;
            }
            if !on_token(token) {
                break;
            }
        }
        // Let the steps that ran ahead finish; what they wrote lies past the tokens the session keeps.
        self.gpu.sync()?;
        result.map(|_| consumed)
    }
}

//! [`Measure`] for the CUDA backend: the copy-bandwidth probe, the bytes of a decode step, prefill timing with
//! events, and the per-kernel profile of a decode step. Used by `engine-cli bench`, never by generation.

use engine_format::plan::KvLayout;

use super::driver::{DeviceBuffer, Gpu, Launch};
use super::kernels::{CopyParams, ReadParams};
use super::step::{Reads, StepEnd};
use super::CudaBackend;
use crate::backend::{check_forward_args, LogitsOut};
use crate::error::{Error, Result};
use crate::measure::{KernelTime, Measure, MemoryUse};

fn elapsed_ms(a: &cudarc::driver::CudaEvent, b: &cudarc::driver::CudaEvent) -> Result<f64> {
    a.elapsed_ms(b).map(|ms| ms as f64).map_err(|e| Error::Device(format!("reading an event: {e}")))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Bytes each bandwidth probe streams: far more than L2 holds, so the rate is the memory's.
const PROBE_BYTES: usize = 1 << 30;

/// The probes' source: PROBE_BYTES of random-looking contents, not zeros.
fn probe_source(g: &Gpu) -> Result<DeviceBuffer> {
    let src = g.alloc(PROBE_BYTES, "the bandwidth probe")?;
    let pattern: Vec<u8> = (0..PROBE_BYTES / 64).map(|i| (i as u32).wrapping_mul(2654435761) as u8).collect();
    for c in 0..64 {
        g.upload(&src, src.all::<u8>().slice(c * pattern.len(), pattern.len()), &pattern)?;
    }
    Ok(src)
}

/// The probes' grid: 2 blocks of 256 threads per SM (the best copy rate on an H200).
fn probe_launch(g: &Gpu) -> Launch {
    Launch::new(2 * g.limits.sm_count, 256, 0)
}

/// Median ms of 10 runs of `launch` between events, after one warm-up.
fn time_probe(g: &Gpu, launch: impl Fn() -> Result<()>) -> Result<f64> {
    let mut times = Vec::new();
    for i in 0..11 {
        let (a, b) = (g.event(true)?, g.event(true)?);
        g.record(&a)?;
        launch()?;
        g.record(&b)?;
        g.sync()?;
        if i > 0 {
            times.push(elapsed_ms(&a, &b)?);
        }
    }
    Ok(median(times))
}

impl Measure for CudaBackend {
    fn tuning(&self) -> String {
        self.tuning.describe()
    }

    fn load_phases(&self) -> Vec<(&'static str, f64)> {
        vec![("kernel module load", self.gpu.module_load_s), ("weight repack + upload", self.upload_s)]
    }

    /// A 2 × 1 GiB device-to-device copy by the engine's own 16-byte copy kernel; median of 10 after a warm-up.
    /// The buffers are freed on return.
    fn copy_bandwidth(&mut self) -> Result<f64> {
        let g = &self.gpu;
        let src = probe_source(g)?;
        let dst = g.alloc(PROBE_BYTES, "the bandwidth probe")?;
        let p = CopyParams { src: src.ptr(), dst: dst.ptr(), n16: (PROBE_BYTES / 16) as u64 };
        // SAFETY: copy_bytes_read_bw copies n16 16-byte words from src to dst, two live, disjoint 1 GiB
        // allocations; any 1-D grid is fine.
        let ms = time_probe(g, || unsafe { g.launch(&g.k.copy_bw, probe_launch(g), &p) })?;
        Ok(2.0 * PROBE_BYTES as f64 / (ms / 1e3))
    }

    /// A 1 GiB read by the engine's read-only streaming kernel; median of 10 after a warm-up.
    fn read_bandwidth(&mut self) -> Result<f64> {
        let g = &self.gpu;
        let src = probe_source(g)?;
        let launch = probe_launch(g);
        let sink = g.alloc((launch.grid.0 * launch.threads) as usize * 4, "the bandwidth probe")?;
        // The fold of the probe's contents is some other value (XOR of the pattern's words), so nothing is written.
        let p = ReadParams { src: src.ptr(), sink: sink.ptr(), n16: (PROBE_BYTES / 16) as u64, never: 0x5EED_F00D };
        // SAFETY: read_bytes_bw reads n16 16-byte words of src (a live 1 GiB allocation) and may write one word per
        // thread of the grid into sink, which holds one per thread.
        let ms = time_probe(g, || unsafe { g.launch(&g.k.read_bw, launch, &p) })?;
        Ok(PROBE_BYTES as f64 / (ms / 1e3))
    }

    fn decode_step_bytes(&self, len: usize) -> u64 {
        let c = self.config_ref();
        let layers: u64 = self
            .weights
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes() + 2 * 2 * c.hidden_size as u64)
            .sum();
        // lm_head (greedy: its int8 screen where there is one), the final norm, one embedding row.
        let head = self.step().head_bytes(StepEnd::Argmax) + (c.hidden_size * 2 + c.hidden_size * 2) as u64;
        layers + head + KvLayout::new(c, len).data_bytes() as u64
    }

    fn kv_cache_bytes(&self, positions: usize) -> u64 {
        KvLayout::new(self.config_ref(), positions).bytes() as u64
    }

    fn memory(&self) -> MemoryUse {
        MemoryUse { weights: self.weights.mem.len(), activations: self.act_mem.len(), workspace: self.ws_mem.len() }
    }

    fn time_prefill(&mut self, tokens: &[u32]) -> Result<f64> {
        let chunk = self.plan.limits.prefill_chunk;
        if tokens.len() > chunk || tokens.len() < 2 {
            return Err(Error::InvalidArgument(format!("time_prefill takes 2..={chunk} tokens")));
        }
        let kv = self.new_kv(tokens.len() + 1)?;
        check_forward_args(self.config_ref(), kv.positions(), 0, tokens, &LogitsOut::None)?;
        let g = &self.gpu;
        let (a, b) = (g.event(true)?, g.event(true)?);
        let run = || -> Result<f64> {
            g.record(&a)?;
            let step = self.step();
            step.prefill(&kv, 0, tokens)?;
            step.lm_head(tokens.len() - 1, true)?;
            g.record(&b)?;
            g.sync()?;
            elapsed_ms(&a, &b)
        };
        run()?; // warm-up
        run()
    }

    fn profile_decode_step(&mut self, pos: usize, token: u32, reps: usize) -> Result<Vec<KernelTime>> {
        // A cache of the loaded context, as sessions have: its size sets the attention kernels' strides.
        let kv = self.new_kv(self.plan.limits.max_context)?;
        check_forward_args(self.config_ref(), kv.positions(), pos, &[token], &LogitsOut::None)?;
        let c = self.config_ref();
        let layer_kv = (KvLayout::new(c, pos + 1).data_bytes() / c.num_hidden_layers) as u64;
        let g = &self.gpu;
        let mut samples: Vec<Vec<(&'static str, f64, u64)>> = Vec::new();
        for _ in 0..reps.max(1) {
            self.step().upload(pos, &[token])?;
            let start = g.event(true)?;
            g.record(&start)?;
            let mut marks = Vec::new();
            let mut observe = |name: &'static str, reads: Reads| -> Result<()> {
                let e = g.event(true)?;
                g.record(&e)?;
                let bytes = match reads {
                    Reads::Bytes(b) => b,
                    Reads::LayerKv => layer_kv,
                };
                marks.push((name, bytes, e));
                Ok(())
            };
            // The greedy step, the one `bench`'s decode figure times: its head is the int8 screen and the exact
            // pass where the checkpoint has the screen's copy, and the token goes back through decode_advance.
            let kind = self.step().attn_splits().kind(pos, StepEnd::Argmax);
            // SAFETY: ws.tokens / ws.pos hold the checked `token` and `pos` < kv.positions() (uploaded just above,
            // after check_forward_args); `kv` lives until the sync below.
            unsafe { self.step().decode(&kv, kind, &mut observe)? };
            g.sync()?;
            let mut prev = &start;
            let mut row = Vec::new();
            for (name, bytes, e) in &marks {
                row.push((*name, elapsed_ms(prev, e)?, *bytes));
                prev = e;
            }
            samples.push(row);
        }
        // Median per launch position, then summed per kernel name in first-seen order.
        let mut out: Vec<KernelTime> = Vec::new();
        for i in 0..samples[0].len() {
            let ms = median(samples.iter().map(|r| r[i].1).collect());
            let (name, bytes) = (samples[0][i].0, samples[0][i].2);
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
}

//! Measuring a backend's own speed, for `engine-cli bench`: the memory bandwidth that sets the floor, the bytes a
//! decode step must read, the device time of a prefill, and a per-kernel breakdown of a decode step.
//!
//! Backend-neutral: a backend that can measure itself hands out a [`Measure`] (see
//! [`Engine::with_measure`](crate::engine::Engine::with_measure)); callers never need to know which backend it is.
//! Nothing here runs on the product path.

use crate::error::Result;

/// One kernel's share of a decode step, summed over the layers.
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub launches: usize,
    pub ms: f64,
    /// Bytes its launches must read from memory.
    pub bytes: u64,
}

/// Device memory a loaded model holds (KV caches are per session: see [`Measure::kv_cache_bytes`]).
#[derive(Debug, Clone, Copy)]
pub struct MemoryUse {
    pub weights: usize,
    pub activations: usize,
    pub workspace: usize,
}

/// What a backend can measure about itself.
pub trait Measure {
    /// The launch choices in effect, as `key=value` text.
    fn tuning(&self) -> String;
    /// Where the load time went: (phase, seconds).
    fn load_phases(&self) -> Vec<(&'static str, f64)>;
    /// Bytes per second (read + written) the device's own copy kernel reaches over buffers far larger than its
    /// caches: the denominator of the floor.
    fn copy_bandwidth(&mut self) -> Result<f64>;
    /// Bytes per second a read-only stream (nothing written) reaches over a buffer far larger than the caches: a
    /// decode step only reads, so this is the other denominator of its floor, reported beside the copy's.
    fn read_bandwidth(&mut self) -> Result<f64>;
    /// Bytes one greedy decode step must read at context length `len`: every weight it uses once (the embedding
    /// only for its one row; the head as the greedy step reads it) and the KV cache of `len` positions.
    fn decode_step_bytes(&self, len: usize) -> u64;
    /// Bytes of one session's KV cache of `positions` positions.
    fn kv_cache_bytes(&self, positions: usize) -> u64;
    fn memory(&self) -> MemoryUse;
    /// Device time, in ms, of a prefill of `tokens` (2 ..= the prefill chunk) at position 0 followed by the
    /// lm_head of the last row, measured with events around the launches (so host launch cost is excluded when the
    /// device runs ahead of it).
    fn time_prefill(&mut self, tokens: &[u32]) -> Result<f64>;
    /// Each kernel's time in one greedy decode step of `token` at context length `pos + 1`: the step's kernels
    /// launched one by one (no graph) with an event after each, `reps` times; the median of each launch, summed per
    /// kernel.
    fn profile_decode_step(&mut self, pos: usize, token: u32, reps: usize) -> Result<Vec<KernelTime>>;
}

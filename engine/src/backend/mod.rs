//! The interface every backend implements: token ids and positions in, logits (or a sampled id) out.
//!
//! Backends know no text and no sampling policy beyond what they are handed; sessions, the C ABI and the CLI sit
//! above this trait and are shared by all backends.

use std::any::Any;

use crate::error::{Error, Result};
use crate::measure::Measure;
use crate::sampling::{Sampler, SamplerParams};
use engine_format::ModelConfig;

pub mod cpu;
pub mod cuda;
pub mod rope;

/// Which backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Cuda,
    /// CUDA when a usable GPU is present, else the CPU.
    Auto,
}

/// What the caller wants back from a forward pass.
pub enum LogitsOut<'a> {
    /// Nothing: a prefill chunk that is not the last.
    None,
    /// The logits of the last position: `vocab_size` floats.
    Last(&'a mut [f32]),
    /// The logits of every position, row-major `[tokens.len(), vocab_size]`.
    All(&'a mut [f32]),
}

/// The KV cache of one sequence, owned by its session and handed back to the backend that made it.
pub trait KvCache: Send + Any {
    /// Positions this cache holds at most.
    fn capacity(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

pub trait Backend: Send {
    /// `"cpu"` or `"cuda"`.
    fn name(&self) -> &'static str;
    fn config(&self) -> &ModelConfig;
    /// A description of the device for reports (`"CPU, 16 threads"`, `"NVIDIA H200, sm_90"`).
    fn device_description(&self) -> String;

    /// What the backend can measure about itself (`engine-cli bench`), if anything.
    fn measure(&mut self) -> Option<&mut dyn Measure> {
        None
    }

    /// Allocate the KV cache for one sequence of up to `max_context` positions.
    fn new_cache(&mut self, max_context: usize) -> Result<Box<dyn KvCache>>;

    /// Run `tokens` at positions `start..start + tokens.len()` of `cache`, overwriting whatever the cache held
    /// at those positions (positions before `start` must have been filled by earlier calls), and write the logits
    /// `out` asks for.
    fn forward(&mut self, cache: &mut dyn KvCache, start: usize, tokens: &[u32], out: LogitsOut<'_>) -> Result<()>;

    /// Like [`Backend::forward`], then pick the token for position `start + tokens.len()` from the last position's
    /// logits with `sampler`. `history` is every token of the sequence so far, `tokens` included (for the
    /// repetition penalty). Backends that can sample on the device override this to avoid copying the logits back.
    fn forward_sample(
        &mut self,
        cache: &mut dyn KvCache,
        start: usize,
        tokens: &[u32],
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        sample_on_host(self, cache, start, tokens, sampler, history)
    }

    /// Like [`Backend::forward`], then the negative log-likelihood (natural log) of `next[r]` after row `r`, for
    /// each of the first `next.len()` rows (`next.len()` is `tokens.len()` or one less): −log softmax(logits)[next].
    /// Backends that can score on the device override this to keep the logits there.
    fn forward_nll(&mut self, cache: &mut dyn KvCache, start: usize, tokens: &[u32], next: &[u32]) -> Result<Vec<f64>> {
        check_next(self.config(), tokens, next)?;
        let vocab = self.config().vocab_size;
        let mut logits = vec![0f32; tokens.len() * vocab];
        self.forward(cache, start, tokens, LogitsOut::All(&mut logits))?;
        Ok(next.iter().zip(logits.chunks(vocab)).map(|(&t, row)| nll(row, t)).collect())
    }

    /// The decode loop: feed `first` at position `start`, pick the next token with `params` (the repetition
    /// penalty over `history`, every token before `first`, and over the tokens fed since), feed it, and so on,
    /// calling `on_token` with each new token until it returns `false` or `max_tokens` tokens were produced.
    /// Returns how many tokens were fed (the first, then every produced token but the last). Backends that can
    /// keep this loop on the device override it; the cache may then hold a few positions beyond the last fed
    /// token, which later calls overwrite.
    #[allow(clippy::too_many_arguments)]
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
        let mut sampler = Sampler::new(*params)?;
        let mut context = history.to_vec();
        let (mut token, mut fed) = (first, 0);
        while fed < max_tokens {
            context.push(token);
            let next = self.forward_sample(cache, start + fed, &[token], &mut sampler, &context)?;
            fed += 1;
            if !on_token(next) {
                break;
            }
            token = next;
        }
        Ok(fed)
    }
}

/// [`Backend::forward`] for the last position's logits, then `sampler` on the host: what
/// [`Backend::forward_sample`] does unless a backend can sample on the device.
pub fn sample_on_host<B: Backend + ?Sized>(
    b: &mut B,
    cache: &mut dyn KvCache,
    start: usize,
    tokens: &[u32],
    sampler: &mut Sampler,
    history: &[u32],
) -> Result<u32> {
    let mut logits = vec![0f32; b.config().vocab_size];
    b.forward(cache, start, tokens, LogitsOut::Last(&mut logits))?;
    Ok(sampler.sample(&mut logits, history, start + tokens.len()))
}

/// −log softmax(`row`)[`target`] in f64: the log-sum-exp minus the target's logit.
pub fn nll(row: &[f32], target: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    lse - row[target as usize] as f64
}

/// The scoring targets of [`Backend::forward_nll`]: one per row, or one fewer, each inside the vocabulary.
pub fn check_next(c: &ModelConfig, tokens: &[u32], next: &[u32]) -> Result<()> {
    if next.len() > tokens.len() || next.len() + 1 < tokens.len() {
        return Err(Error::InvalidArgument(format!(
            "{} targets for {} rows: one per row, or one fewer",
            next.len(),
            tokens.len()
        )));
    }
    if let Some(&bad) = next.iter().find(|&&t| t as usize >= c.vocab_size) {
        return Err(Error::InvalidArgument(format!(
            "target id {bad} is outside the vocabulary (size {})",
            c.vocab_size
        )));
    }
    Ok(())
}

/// The checks every backend makes before a forward pass: positions inside the cache, ids inside the vocabulary,
/// output buffers of the right size.
pub fn check_forward_args(
    c: &ModelConfig,
    capacity: usize,
    start: usize,
    tokens: &[u32],
    out: &LogitsOut<'_>,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::InvalidArgument("no tokens to run".into()));
    }
    let end = start.saturating_add(tokens.len());
    if end > capacity {
        return Err(Error::ContextOverflow { needed: end, limit: capacity, what: "KV cache capacity" });
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
        return Err(Error::InvalidArgument(format!(
            "token id {bad} is outside the vocabulary (size {})",
            c.vocab_size
        )));
    }
    // The size the logits buffer must have, when it has another.
    let want = match out {
        LogitsOut::None => None,
        LogitsOut::Last(l) => Some(c.vocab_size).filter(|&n| l.len() != n),
        LogitsOut::All(l) => Some(tokens.len() * c.vocab_size).filter(|&n| l.len() != n),
    };
    if let Some(want) = want {
        return Err(Error::InvalidArgument(format!("logits buffer must hold {want} floats")));
    }
    Ok(())
}

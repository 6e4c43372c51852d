//! A conversation with the model: its KV cache and tokens, prefill in chunks, and the token-level generation loop.
//! [`text`] turns that loop into streamed text with stop strings, for the CLI and the C ABI.

mod shared;
mod stop;
pub mod text;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, KvCache, LogitsOut};
use crate::error::{Error, Result};
use crate::sampling::{Sampler, SamplerParams};
pub use shared::SharedBackend;
pub use stop::StopMatcher;

/// One sequence: the tokens whose keys and values are in the cache, and the cache itself.
pub struct Session {
    backend: Arc<SharedBackend>,
    cache: Box<dyn KvCache>,
    tokens: Vec<u32>,
    prefill_chunk: usize,
    vocab_size: usize,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced the end-of-sequence token.
    Eos,
    /// The text matched one of the stop strings.
    StopString,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The KV cache is full.
    ContextFull,
    /// The per-token callback asked to stop.
    Callback,
}

/// What a generation call is asked to do besides sampling.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampler: SamplerParams,
    /// The end-of-sequence id; `None` to never stop on it (benchmarks).
    pub eos_token_id: Option<u32>,
}

/// Timings and counts of one generation call.
#[derive(Debug, Clone, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From the call until the first new token was known.
    pub time_to_first_token: Duration,
    /// From the first new token until the last.
    pub decode_time: Duration,
}

impl GenerateStats {
    /// Decode speed over the tokens after the first (the first is produced by the prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let n = self.generated_tokens.saturating_sub(1);
        if n == 0 || self.decode_time.is_zero() {
            return 0.0;
        }
        n as f64 / self.decode_time.as_secs_f64()
    }
}

/// What stands in a session's place for its cache while the cache itself is dropped (see [`Session`]'s `Drop`).
struct Released;

impl KvCache for Released {
    fn capacity(&self) -> usize {
        0
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Drop for Session {
    /// The cache goes under the backend's lock, like every other use of it. Why: a CUDA cache frees its memory and
    /// destroys its decode graphs through the backend's stream, and a free enqueued there while another session's
    /// thread captures a decode graph on it is taken into that capture or breaks it — the C ABI client's three
    /// sessions of one model on three threads crashed or failed their capture in 3 runs of 40 on an H200 before this.
    /// Inside a backend call of this thread (a generate callback of another session) the lock is already this
    /// thread's, and nothing else can use the backend meanwhile.
    fn drop(&mut self) {
        let cache = std::mem::replace(&mut self.cache, Box::new(Released));
        if self.backend.held_here() {
            drop(cache);
        } else {
            let _backend = self.backend.lock();
            drop(cache);
        }
    }
}

impl Session {
    pub(crate) fn new(backend: Arc<SharedBackend>, max_context: usize, prefill_chunk: usize) -> Result<Session> {
        let (cache, vocab_size) = {
            let mut b = backend.lock();
            (b.new_cache(max_context)?, b.config().vocab_size)
        };
        Ok(Session { backend, cache, tokens: Vec::new(), prefill_chunk: prefill_chunk.max(1), vocab_size })
    }

    /// Tokens currently in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Forget every token; the cache is reused.
    pub fn reset(&mut self) {
        self.tokens.clear();
    }

    /// Drop tokens after the first `len` (to rewind a conversation).
    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    fn check_room(&self, extra: usize) -> Result<()> {
        let needed = self.tokens.len() + extra;
        if needed > self.capacity() {
            return Err(Error::ContextOverflow { needed, limit: self.capacity(), what: "session context" });
        }
        Ok(())
    }

    /// Append `tokens` to the sequence, in prefill chunks, and return the logits of the last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = vec![0f32; self.vocab_size];
        self.feed_with(tokens, |b, cache, start, chunk, last| {
            let out = if last { LogitsOut::Last(&mut logits) } else { LogitsOut::None };
            b.forward(cache, start, chunk, out)
        })?;
        Ok(logits)
    }

    /// Append `tokens` and return the logits of every one of them, row-major `[tokens.len(), vocab]`.
    pub fn feed_all_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let vocab = self.vocab_size;
        let mut logits = vec![0f32; tokens.len() * vocab];
        let mut row = 0;
        self.feed_with(tokens, |b, cache, start, chunk, _| {
            let dst = &mut logits[row * vocab..(row + chunk.len()) * vocab];
            row += chunk.len();
            b.forward(cache, start, chunk, LogitsOut::All(dst))
        })?;
        Ok(logits)
    }

    /// Append `tokens` and score them: the negative log-likelihood (natural log) of each token after the first,
    /// given everything before it (`tokens.len() - 1` values; a perplexity is exp of their mean). The logits stay on
    /// the device where the backend can score there.
    pub fn feed_scored(&mut self, tokens: &[u32]) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(tokens.len().saturating_sub(1));
        let mut offset = 0;
        self.feed_with(tokens, |b, cache, start, chunk, _| {
            // Row r of this chunk predicts the token after it, which may open the next chunk.
            let next = &tokens[(offset + 1).min(tokens.len())..(offset + chunk.len() + 1).min(tokens.len())];
            offset += chunk.len();
            out.extend(b.forward_nll(cache, start, chunk, next)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Append `tokens` and pick the next token with `sampler` (not yet appended: pass it to the next call).
    pub fn feed_and_sample(&mut self, tokens: &[u32], sampler: &mut Sampler) -> Result<u32> {
        let mut next = 0;
        // The repetition penalty sees the whole sequence, including the tokens being fed.
        let mut history = self.tokens.clone();
        history.extend_from_slice(tokens);
        self.feed_with(tokens, |b, cache, start, chunk, last| {
            if last {
                next = b.forward_sample(cache, start, chunk, sampler, &history)?;
                Ok(())
            } else {
                b.forward(cache, start, chunk, LogitsOut::None)
            }
        })?;
        Ok(next)
    }

    fn feed_with(
        &mut self,
        tokens: &[u32],
        mut run: impl FnMut(&mut dyn Backend, &mut dyn KvCache, usize, &[u32], bool) -> Result<()>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to feed".into()));
        }
        self.check_room(tokens.len())?;
        let mut b = self.backend.lock();
        let n_chunks = tokens.len().div_ceil(self.prefill_chunk);
        for (i, chunk) in tokens.chunks(self.prefill_chunk).enumerate() {
            let start = self.tokens.len();
            run(&mut **b, &mut *self.cache, start, chunk, i + 1 == n_chunks)?;
            self.tokens.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// Generate after `prompt` (appended to whatever the session holds). `on_token(id)` is called for each new
    /// token in order and returns `false` to stop. Returns the new tokens, why it stopped, and timings.
    ///
    /// Text, and stop strings over it, are [`text::generate_text`]'s business: `on_token` can return `false`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<(Vec<u32>, StopReason, GenerateStats)> {
        let mut sampler = Sampler::new(opts.sampler)?;
        let t0 = Instant::now();
        let mut stats = GenerateStats { prompt_tokens: prompt.len(), ..Default::default() };
        let mut out = Vec::new();
        if opts.max_new_tokens == 0 {
            return Ok((out, StopReason::MaxTokens, stats));
        }
        let next = self.feed_and_sample(prompt, &mut sampler)?;
        stats.time_to_first_token = t0.elapsed();
        let t1 = Instant::now();
        let reason = 'decode: {
            out.push(next);
            stats.generated_tokens = out.len();
            if Some(next) == opts.eos_token_id {
                break 'decode StopReason::Eos;
            }
            if !on_token(next) {
                break 'decode StopReason::Callback;
            }
            if out.len() >= opts.max_new_tokens {
                break 'decode StopReason::MaxTokens;
            }
            if self.tokens.len() + 1 > self.capacity() {
                break 'decode StopReason::ContextFull;
            }
            // The rest of the loop is the backend's: the CUDA backend keeps it on the device, the host only reads
            // each token behind it.
            let start = self.tokens.len();
            let budget = (opts.max_new_tokens - out.len()).min(self.capacity() - start);
            let produced_from = out.len();
            let mut stop = None;
            let fed = {
                let mut b = self.backend.lock();
                b.decode_loop(&mut *self.cache, start, next, budget, &opts.sampler, &self.tokens, &mut |t| {
                    out.push(t);
                    if Some(t) == opts.eos_token_id {
                        stop = Some(StopReason::Eos);
                    } else if !on_token(t) {
                        stop = Some(StopReason::Callback);
                    }
                    stop.is_none()
                })?
            };
            // Fed: `next`, then every produced token but the last.
            self.tokens.push(next);
            self.tokens.extend_from_slice(&out[produced_from..produced_from + fed - 1]);
            stats.generated_tokens = out.len();
            stop.unwrap_or(if out.len() >= opts.max_new_tokens {
                StopReason::MaxTokens
            } else {
                StopReason::ContextFull
            })
        };
        stats.decode_time = t1.elapsed();
        Ok((out, reason, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::GenerateOptions;
    use crate::backend::nll;
    use crate::sampling::SamplerParams;
    use crate::testing::TinyModel;

    /// Scoring in chunks (targets opening the next chunk) gives each token's loss from the full pass's logits.
    #[test]
    fn feed_scored_is_the_loss_of_every_next_token_across_chunks() {
        let tiny = TinyModel::new("scored", 3);
        let vocab = tiny.engine.config().vocab_size;
        let ids: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % vocab as u32).collect();
        let losses = tiny.engine.new_session(None).unwrap().feed_scored(&ids).unwrap();
        let logits = tiny.engine.new_session(None).unwrap().feed_all_logits(&ids).unwrap();
        assert_eq!(losses.len(), ids.len() - 1);
        for (r, &loss) in losses.iter().enumerate() {
            let want = nll(&logits[r * vocab..(r + 1) * vocab], ids[r + 1]);
            assert!((loss - want).abs() < 1e-9, "position {}: {loss} vs {want}", r + 1);
        }
        // One token has nothing to score.
        assert!(tiny.engine.new_session(None).unwrap().feed_scored(&ids[..1]).unwrap().is_empty());
    }

    /// A session dropped inside another session's generate callback, where this thread holds the backend (the
    /// tokens after the first come from the backend's decode loop), and one dropped on another thread meanwhile,
    /// which waits for it: neither hangs, and the generation goes on unchanged.
    #[test]
    fn sessions_dropped_during_a_generation_release_their_caches() {
        let tiny = std::sync::Arc::new(TinyModel::new("drop-in-callback", 8));
        let opts = GenerateOptions { max_new_tokens: 6, sampler: SamplerParams::default(), eos_token_id: None };
        let prompt = [1u32, 5, 9];
        let (alone, _, _) = tiny.engine.new_session(None).unwrap().generate(&prompt, &opts, |_| true).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let shared = tiny.clone();
        // Not scoped: if a drop hangs, the test fails on the timeout below instead of waiting for the thread.
        std::thread::spawn(move || {
            let engine = &shared.engine;
            let (mut here, mut elsewhere) =
                (Some(engine.new_session(None).unwrap()), Some(engine.new_session(None).unwrap()));
            let (mut seen, mut waiting) = (0, None);
            let mut session = engine.new_session(None).unwrap();
            let (tokens, _, _) = session
                .generate(&prompt, &opts, |_| {
                    seen += 1;
                    if seen == 3 {
                        drop(here.take());
                        let other = elsewhere.take().unwrap();
                        waiting = Some(std::thread::spawn(move || drop(other)));
                    }
                    true
                })
                .unwrap();
            waiting.expect("the callback ran three times").join().unwrap();
            done_tx.send(tokens).unwrap();
        });
        let tokens = done_rx.recv_timeout(std::time::Duration::from_secs(60)).expect("a session drop hung");
        assert_eq!(tokens, alone);
    }
}

//! The session handle: one sequence with its own KV cache. Feed tokens, read logits, sample, reset, truncate.

use std::sync::{Arc, Mutex, TryLockError};

use super::args::{check_out, slice_arg, slice_arg_mut, write_out};
use super::handles::{self, Kind};
use super::model::{model_ref, EngineModel, ModelShared};
use super::status::{guard, guard_value, CResult, CapiError, EngineStatus};
use super::token::EngineToken;
use crate::sampling::{Sampler, SamplerParams};
use crate::session::Session;

/// How to pick tokens (Hugging Face semantics: repetition penalty, then temperature, top-k, top-p, min-p). Start
/// from `engine_sampler_default_options()` (greedy decoding).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineSamplerOptions {
    /// 0 = greedy (argmax); otherwise a finite value > 0 that divides the logits.
    pub temperature: f32,
    /// Keep only the top_k most likely tokens; 0 = no limit.
    pub top_k: u32,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p: in (0, 1]; 1 = no limit.
    pub top_p: f32,
    /// Penalty on every token already in the sequence: a finite value > 0; 1 = none (Baichuan's card uses 1.1).
    pub repetition_penalty: f32,
    /// Seed of the random generator. The number drawn for a token depends only on the seed and the token's position
    /// in the session, so the same seed gives the same tokens, on either backend (except where two tokens are
    /// within rounding of a sampling boundary).
    pub seed: u64,
    /// Keep only tokens at least min_p times as likely as the most likely one: in [0, 1]; 0 = no limit.
    pub min_p: f32,
}

/// A sequence (opaque to C).
pub struct EngineSession {
    state: Arc<Mutex<SessionState>>,
}

pub(crate) struct SessionState {
    pub model: Arc<ModelShared>,
    pub session: Session,
    /// The sampler of `engine_session_sample` / `_feed_and_sample`, kept for its scratch space (it holds no random
    /// state: the draw depends on the seed and the position); replaced when the options change, dropped on reset.
    sampler: Option<Sampler>,
    /// Logits of the last position fed by `engine_session_feed` / `_feed_all_logits`, for `engine_session_sample`.
    last_logits: Option<Vec<f32>>,
}

impl SessionState {
    fn sampler(&mut self, params: SamplerParams) -> CResult<&mut Sampler> {
        if self.sampler.as_ref().is_none_or(|s| s.params != params) {
            self.sampler = Some(Sampler::new(params)?);
        }
        Ok(self.sampler.as_mut().expect("set above"))
    }

    /// Forget the kept logits (the sequence is about to change).
    pub(crate) fn clear_logits(&mut self) {
        self.last_logits = None;
    }

    fn check_tokens(&self, tokens: &[EngineToken]) -> CResult<()> {
        let vocab = self.model.engine.config().vocab_size;
        if let Some((i, id)) = tokens.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(CapiError::invalid(format!("tokens[{i}] = {id} is outside the vocabulary (0..{vocab})")));
        }
        Ok(())
    }
}

/// Run `f` on the state of the live session `session`, refusing concurrent and re-entrant use.
pub(crate) fn with_session<R>(
    session: *mut EngineSession,
    f: impl FnOnce(&mut SessionState) -> CResult<R>,
) -> CResult<R> {
    if session.is_null() {
        return Err(CapiError::null("session"));
    }
    let state = handles::with_live(session as usize, Kind::Session, || {
        // SAFETY: the registry lists `session` as a live session, a `Box<EngineSession>` leaked by
        // `engine_session_new`; `engine_session_free` unregisters it under the lock held during this closure
        // before dropping it, so the box is alive while the Arc is cloned.
        unsafe { (*session).state.clone() }
    })?;
    let mut guard = match state.try_lock() {
        Ok(g) => g,
        // A panic during an earlier call (a bug, reported as INTERNAL): the state is still consistent (see
        // status::guard), so carry on.
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            return Err(CapiError::new(
                EngineStatus::SessionBusy,
                "the session is in use by another call (another thread, or a generate callback re-entering it)",
            ))
        }
    };
    f(&mut guard)
}

/// The default sampler options: greedy decoding, no penalty, seed 0. Thread-safe; cannot fail.
#[no_mangle]
pub extern "C" fn engine_sampler_default_options() -> EngineSamplerOptions {
    // SamplerParams::default(), spelled out so that it is a constant (a test checks that they agree).
    const DEFAULT: EngineSamplerOptions =
        EngineSamplerOptions { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0, min_p: 0.0 };
    guard_value(DEFAULT, || DEFAULT)
}

/// Read and validate the caller's sampler options; NULL means the defaults.
///
/// # Safety
/// `p` is NULL or points to an `engine_sampler_options`.
pub(crate) unsafe fn sampler_params(p: *const EngineSamplerOptions) -> CResult<SamplerParams> {
    let o = if p.is_null() {
        engine_sampler_default_options()
    } else {
        if !p.is_aligned() {
            return Err(CapiError::invalid("sampler options are not aligned"));
        }
        // SAFETY: non-NULL and aligned; the caller guarantees it points to an engine_sampler_options, whose
        // fields are plain numbers (any bit pattern is valid; NaN and the like are rejected below).
        unsafe { p.read() }
    };
    sampler_params_from(&o)
}

pub(crate) fn sampler_params_from(o: &EngineSamplerOptions) -> CResult<SamplerParams> {
    let p = SamplerParams {
        temperature: o.temperature,
        top_k: o.top_k as usize,
        top_p: o.top_p,
        min_p: o.min_p,
        repetition_penalty: o.repetition_penalty,
        seed: o.seed,
    };
    p.validate()?;
    Ok(p)
}

/// Create a session on `model` with a KV cache of `max_context` positions (1..=the model's max_context; 0 = the
/// model's). On success `*out_session` is a new session to free with `engine_session_free`; on failure NULL.
///
/// Thread-safe (sessions of one model may be created and used on different threads).
///
/// # Safety
/// `out_session` is NULL or points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn engine_session_new(
    model: *const EngineModel,
    max_context: u32,
    out_session: *mut *mut EngineSession,
) -> EngineStatus {
    guard(|| {
        check_out(out_session, "out_session")?;
        // SAFETY: checked non-NULL and aligned; the caller provides storage for a pointer.
        unsafe { out_session.write(std::ptr::null_mut()) };
        let model = model_ref(model)?;
        model.check_not_generating()?;
        let session = model.engine.new_session((max_context != 0).then_some(max_context as usize))?;
        let state = SessionState { model, session, sampler: None, last_logits: None };
        let p = Box::into_raw(Box::new(EngineSession { state: Arc::new(Mutex::new(state)) }));
        handles::register(p as usize, Kind::Session);
        // SAFETY: checked above.
        unsafe { out_session.write(p) };
        Ok(())
    })
}

/// Free a session and its KV cache. NULL is a no-op returning OK; a freed or foreign pointer gives INVALID_HANDLE
/// and is not touched. If a call on this session is still running on another thread, it finishes safely and the
/// memory is released when it returns. Thread-safe, also from a generate callback of another session: the cache is
/// released between two uses of the model's device, so the call may wait for another thread's call on the model.
///
/// # Safety
/// None: `session` is only dereferenced if the registry lists it as a live session.
#[no_mangle]
pub unsafe extern "C" fn engine_session_free(session: *mut EngineSession) -> EngineStatus {
    guard(|| {
        if session.is_null() {
            return Ok(());
        }
        handles::unregister(session as usize, Kind::Session)?;
        // SAFETY: the registry listed `session` as a live session (a leaked Box<EngineSession>); removing it
        // succeeded, which happens once per registration, so this is its only release.
        drop(unsafe { Box::from_raw(session) });
        Ok(())
    })
}

/// Append `tokens[0..n_tokens]` to the sequence (run through the model in prefill chunks). If `logits` is not
/// NULL, the logits of the last token are copied to `logits[0..vocab_size]` (`logits_capacity` is its length in
/// floats; less than vocab_size gives BUFFER_TOO_SMALL before anything is fed). The logits are also kept for
/// `engine_session_sample`.
///
/// Errors: INVALID_ARGUMENT (no tokens, an id >= vocab_size), CONTEXT_OVERFLOW (the tokens do not fit: nothing is
/// fed), DEVICE. One thread at a time per session.
///
/// # Safety
/// `tokens` holds `n_tokens` ids; `logits` is NULL or has room for `logits_capacity` floats.
#[no_mangle]
pub unsafe extern "C" fn engine_session_feed(
    session: *mut EngineSession,
    tokens: *const EngineToken,
    n_tokens: usize,
    logits: *mut f32,
    logits_capacity: usize,
) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            // SAFETY: the caller guarantees `tokens` holds `n_tokens` ids.
            let ids = unsafe { slice_arg(tokens, n_tokens, "tokens") }?;
            s.check_tokens(ids)?;
            s.model.check_not_generating()?;
            let vocab = s.model.engine.config().vocab_size;
            let out = if logits.is_null() {
                None
            } else {
                // SAFETY: the caller guarantees room for `logits_capacity` floats at `logits`.
                let buf = unsafe { slice_arg_mut(logits, logits_capacity, "logits") }?;
                if buf.len() < vocab {
                    return Err(too_small("logits", logits_capacity, vocab));
                }
                Some(buf)
            };
            s.last_logits = None;
            let l = s.session.feed(ids)?;
            if let Some(out) = out {
                out[..vocab].copy_from_slice(&l);
            }
            s.last_logits = Some(l);
            Ok(())
        })
    })
}

/// Like `engine_session_feed`, but copies the logits of every fed token: row i (the prediction after `tokens[i]`)
/// is `logits[i * vocab_size .. (i + 1) * vocab_size]`. `logits` is required and must hold
/// `n_tokens * vocab_size` floats (`logits_capacity`), else BUFFER_TOO_SMALL before anything is fed.
/// For scoring text (perplexity). One thread at a time per session.
///
/// # Safety
/// `tokens` holds `n_tokens` ids; `logits` is NULL or has room for `logits_capacity` floats.
#[no_mangle]
pub unsafe extern "C" fn engine_session_feed_all_logits(
    session: *mut EngineSession,
    tokens: *const EngineToken,
    n_tokens: usize,
    logits: *mut f32,
    logits_capacity: usize,
) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            // SAFETY: the caller guarantees `tokens` holds `n_tokens` ids.
            let ids = unsafe { slice_arg(tokens, n_tokens, "tokens") }?;
            s.check_tokens(ids)?;
            s.model.check_not_generating()?;
            let vocab = s.model.engine.config().vocab_size;
            if logits.is_null() {
                return Err(CapiError::null("logits"));
            }
            // SAFETY: the caller guarantees room for `logits_capacity` floats at `logits` (non-NULL).
            let buf = unsafe { slice_arg_mut(logits, logits_capacity, "logits") }?;
            let needed = ids.len().saturating_mul(vocab);
            if buf.len() < needed {
                return Err(too_small("logits", logits_capacity, needed));
            }
            s.last_logits = None;
            let all = s.session.feed_all_logits(ids)?;
            buf[..all.len()].copy_from_slice(&all);
            s.last_logits = all.len().checked_sub(vocab).map(|start| all[start..].to_vec());
            Ok(())
        })
    })
}

/// Pick a token from the logits of the last `engine_session_feed` / `_feed_all_logits` with `options` (NULL =
/// greedy); the penalty sees every token in the session. The token is not appended: feed it to continue.
/// The draw depends on options->seed and the position the token will take (the session's length), so sampling
/// the same logits twice gives the same token. INVALID_ARGUMENT if nothing was fed since the last reset, truncation or
/// `engine_session_feed_and_sample`, or if an option is out of range. One thread at a time per session.
///
/// # Safety
/// `options` is NULL or points to an `engine_sampler_options`; `out_token` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_session_sample(
    session: *mut EngineSession,
    options: *const EngineSamplerOptions,
    out_token: *mut EngineToken,
) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            check_out(out_token, "out_token")?;
            // SAFETY: the caller passes NULL or a valid engine_sampler_options.
            let params = unsafe { sampler_params(options) }?;
            let Some(mut logits) = s.last_logits.clone() else {
                return Err(CapiError::invalid(
                    "no logits to sample from: call engine_session_feed first (reset, truncate and \
                     feed_and_sample discard them)",
                ));
            };
            let history = s.session.tokens().to_vec();
            let token = s.sampler(params)?.sample(&mut logits, &history, history.len());
            // SAFETY: checked above.
            unsafe { write_out(out_token, token, "out_token") }
        })
    })
}

/// Append `tokens[0..n_tokens]` and pick the next token with `options` (NULL = greedy) in one step; on the GPU
/// the logits never leave the device. The picked token is not appended: pass it to the next call. Same errors as
/// `engine_session_feed`. One thread at a time per session.
///
/// # Safety
/// `tokens` holds `n_tokens` ids; `options` is NULL or points to an `engine_sampler_options`; `out_token` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_session_feed_and_sample(
    session: *mut EngineSession,
    tokens: *const EngineToken,
    n_tokens: usize,
    options: *const EngineSamplerOptions,
    out_token: *mut EngineToken,
) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            check_out(out_token, "out_token")?;
            // SAFETY: the caller guarantees `tokens` holds `n_tokens` ids.
            let ids = unsafe { slice_arg(tokens, n_tokens, "tokens") }?;
            s.check_tokens(ids)?;
            // SAFETY: the caller passes NULL or a valid engine_sampler_options.
            let params = unsafe { sampler_params(options) }?;
            s.model.check_not_generating()?;
            s.last_logits = None;
            s.sampler(params)?;
            let SessionState { session: sess, sampler, .. } = s;
            let token = sess.feed_and_sample(ids, sampler.as_mut().expect("made above"))?;
            // SAFETY: checked above.
            unsafe { write_out(out_token, token, "out_token") }
        })
    })
}

/// Forget every token (the KV cache memory is kept for reuse) and the sampler state. One thread at a time.
#[no_mangle]
pub extern "C" fn engine_session_reset(session: *mut EngineSession) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            s.session.reset();
            s.sampler = None;
            s.last_logits = None;
            Ok(())
        })
    })
}

/// Keep only the first `n_tokens` tokens (rewind a conversation); more than the session holds is
/// INVALID_ARGUMENT. One thread at a time.
#[no_mangle]
pub extern "C" fn engine_session_truncate(session: *mut EngineSession, n_tokens: usize) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            let len = s.session.tokens().len();
            if n_tokens > len {
                return Err(CapiError::invalid(format!(
                    "n_tokens ({n_tokens}) is more than the session holds ({len})"
                )));
            }
            if n_tokens < len {
                s.session.truncate(n_tokens);
                s.last_logits = None;
            }
            Ok(())
        })
    })
}

/// The number of tokens in the session (`*out_n_tokens`) and the most it can hold (`*out_capacity`); either
/// pointer may be NULL. One thread at a time.
///
/// # Safety
/// Each out-pointer is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_session_length(
    session: *mut EngineSession,
    out_n_tokens: *mut usize,
    out_capacity: *mut usize,
) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            for (p, v, what) in [
                (out_n_tokens, s.session.tokens().len(), "out_n_tokens"),
                (out_capacity, s.session.capacity(), "out_capacity"),
            ] {
                if !p.is_null() {
                    // SAFETY: non-NULL, and the caller guarantees it is writable.
                    unsafe { write_out(p, v, what) }?;
                }
            }
            Ok(())
        })
    })
}

/// Copy the session's tokens to `tokens[0..n]` where n is the session length (written to `*out_n_tokens`);
/// BUFFER_TOO_SMALL (with `*out_n_tokens` set) if `capacity` is less. One thread at a time.
///
/// # Safety
/// `tokens` is NULL or has room for `capacity` ids; `out_n_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_session_tokens(
    session: *mut EngineSession,
    tokens: *mut EngineToken,
    capacity: usize,
    out_n_tokens: *mut usize,
) -> EngineStatus {
    guard(|| {
        with_session(session, |s| {
            check_out(out_n_tokens, "out_n_tokens")?;
            // SAFETY: the caller guarantees room for `capacity` ids at `tokens` (or capacity is 0).
            let buf = unsafe { slice_arg_mut(tokens, capacity, "tokens") }?;
            let held = s.session.tokens();
            // SAFETY: checked above.
            unsafe { write_out(out_n_tokens, held.len(), "out_n_tokens") }?;
            if buf.len() < held.len() {
                return Err(too_small("tokens", capacity, held.len()));
            }
            buf[..held.len()].copy_from_slice(held);
            Ok(())
        })
    })
}

fn too_small(what: &str, capacity: usize, needed: usize) -> CapiError {
    CapiError::new(EngineStatus::BufferTooSmall, format!("{what}: capacity {capacity} is too small, {needed} needed"))
}

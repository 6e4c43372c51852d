//! One-call generation with streaming: `engine_generate` runs the engine's text loop (`session::text`, the same
//! as `engine-cli generate`) and hands each token and its text to the caller's callback, NUL-terminated.

use std::ffi::{c_char, c_void};
use std::ptr::addr_of;

use super::args::{check_out, slice_arg, u32_sat};
use super::model::GeneratingGuard;
use super::session::{sampler_params_from, with_session, EngineSamplerOptions, EngineSession};
use super::status::{guard, guard_value, CResult, CapiError, EngineStatus};
use super::strings::{new_string, str_arg};
use super::token::{EngineToken, ENGINE_NO_TOKEN};
use crate::session::text::{generate_text, TextOptions};
use crate::session::{GenerateOptions, StopReason};

/// Called by `engine_generate` once per generated token, in order, on the calling thread:
/// `token` is the id, `piece` the new text it completes (NUL-terminated UTF-8, `piece_len` bytes without the
/// NUL; may be empty while a character or a possible stop string is incomplete; valid only during the call).
/// Return true to go on, false to stop (the stop reason is then ENGINE_STOP_REASON_CALLBACK and the callback is
/// not called again). After the last token, held-back text is delivered by one more call with token
/// ENGINE_NO_TOKEN, whose return value is ignored; the pieces then add up to `engine_generate_result.text`.
/// The EOS token is not passed to the callback. The callback must not unwind (no C++ exceptions or longjmp out
/// of it). It may call the library, except to use this same session (refused with SESSION_BUSY) or to run this
/// same model (a feed, generate or new session on any of its sessions: refused with MODEL_BUSY, as the generation
/// may hold the model's backend while it calls back); tokenization and other models are fine.
pub type EngineTokenCallback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, token: EngineToken, piece: *const c_char, piece_len: usize) -> bool,
>;

/// Why `engine_generate` stopped.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineStopReason {
    /// Not set (the result of a failed call).
    None = 0,
    /// The model produced the end-of-sequence token.
    Eos = 1,
    /// The text matched one of the stop strings (it and whatever followed are not in the text).
    StopString = 2,
    /// max_new_tokens were generated.
    MaxTokens = 3,
    /// The session's KV cache is full.
    ContextFull = 4,
    /// The callback returned false.
    Callback = 5,
}

/// What `engine_generate` is asked to do. Start from `engine_generate_default_options()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EngineGenerateOptions {
    /// Most tokens to generate (an EOS included); 0 generates nothing and does not feed the prompt.
    pub max_new_tokens: u32,
    /// Start a new sequence: the BOS token goes before the prompt when the tokenizer starts sequences with one
    /// (always for tokenizer.model; as tokenizer_config.json says for tokenizer.json). True for a new
    /// conversation, false to continue one.
    pub add_bos: bool,
    /// Do not stop at the EOS token (benchmarks).
    pub ignore_eos: bool,
    pub sampler: EngineSamplerOptions,
    /// `n_stop_strings` NUL-terminated UTF-8 strings; generation stops when the text contains one (empty ones are
    /// ignored). May be NULL when n_stop_strings is 0. Borrowed for the call only.
    pub stop_strings: *const *const c_char,
    pub n_stop_strings: usize,
}

/// What `engine_generate` did. Fields are zero / NULL / ENGINE_STOP_REASON_NONE when the call fails.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EngineGenerateResult {
    pub stop_reason: EngineStopReason,
    pub n_prompt_tokens: u32,
    /// Tokens sampled, an EOS included.
    pub n_generated_tokens: u32,
    /// The last token sampled, ENGINE_NO_TOKEN if none. It is *not* in the session (it has not been run through
    /// the model): to continue the conversation, feed it first (unless it is the EOS).
    pub last_token: EngineToken,
    /// From the call until the first new token was known (prefill), in milliseconds.
    pub time_to_first_token_ms: f64,
    /// Decode speed over the tokens after the first.
    pub decode_tokens_per_second: f64,
    /// The generated text (stop string excluded), NUL-terminated UTF-8, owned by the caller: free it with
    /// `engine_string_free`.
    pub text: *mut c_char,
    /// Length of `text` in bytes, without the NUL.
    pub text_len: usize,
}

impl EngineGenerateResult {
    pub(crate) fn empty() -> Self {
        EngineGenerateResult {
            stop_reason: EngineStopReason::None,
            n_prompt_tokens: 0,
            n_generated_tokens: 0,
            last_token: ENGINE_NO_TOKEN,
            time_to_first_token_ms: 0.0,
            decode_tokens_per_second: 0.0,
            text: std::ptr::null_mut(),
            text_len: 0,
        }
    }
}

/// The default generate options: 256 new tokens, BOS added, stop at EOS, greedy sampling, no stop strings.
/// Thread-safe; cannot fail.
#[no_mangle]
pub extern "C" fn engine_generate_default_options() -> EngineGenerateOptions {
    let default = EngineGenerateOptions {
        max_new_tokens: 256,
        add_bos: true,
        ignore_eos: false,
        sampler: super::session::engine_sampler_default_options(),
        stop_strings: std::ptr::null(),
        n_stop_strings: 0,
    };
    guard_value(default, || default)
}

struct Options {
    max_new_tokens: usize,
    add_bos: bool,
    ignore_eos: bool,
    sampler: EngineSamplerOptions,
    stops: Vec<String>,
}

/// Read the caller's options field by field (the flags as bytes, so a stray value in a bool is "true", not
/// undefined behaviour) and copy the stop strings.
///
/// # Safety
/// `p` is NULL or points to an `engine_generate_options` whose `stop_strings` holds `n_stop_strings`
/// NUL-terminated strings.
unsafe fn read_options(p: *const EngineGenerateOptions) -> CResult<Options> {
    if p.is_null() {
        let d = engine_generate_default_options();
        return Ok(Options {
            max_new_tokens: d.max_new_tokens as usize,
            add_bos: d.add_bos,
            ignore_eos: d.ignore_eos,
            sampler: d.sampler,
            stops: Vec::new(),
        });
    }
    if !p.is_aligned() {
        return Err(CapiError::invalid("options is not aligned"));
    }
    // SAFETY: `p` is non-NULL, aligned and points to an engine_generate_options (caller's contract); each field
    // is read in place with its own type, except the two bools, read as the bytes they are stored in.
    let (max_new_tokens, add_bos, ignore_eos, sampler, stop_ptr, n_stops) = unsafe {
        (
            addr_of!((*p).max_new_tokens).read(),
            addr_of!((*p).add_bos).cast::<u8>().read() != 0,
            addr_of!((*p).ignore_eos).cast::<u8>().read() != 0,
            addr_of!((*p).sampler).read(),
            addr_of!((*p).stop_strings).read(),
            addr_of!((*p).n_stop_strings).read(),
        )
    };
    // SAFETY: the caller guarantees `stop_strings` holds `n_stop_strings` pointers.
    let ptrs = unsafe { slice_arg(stop_ptr, n_stops, "options.stop_strings") }?;
    let stops = ptrs
        .iter()
        .enumerate()
        // SAFETY: each entry is a NUL-terminated string valid for the call (caller's contract); NULL is reported.
        .map(|(i, &s)| unsafe { str_arg(s, &format!("options.stop_strings[{i}]")) }.map(str::to_owned))
        .collect::<CResult<Vec<_>>>()?;
    Ok(Options { max_new_tokens: max_new_tokens as usize, add_bos, ignore_eos, sampler, stops })
}

/// Tokenize `prompt` (NUL-terminated UTF-8), append it to the session and generate up to
/// `options->max_new_tokens` tokens, streaming each to `callback` (may be NULL) with `user_data`.
/// `options` may be NULL for `engine_generate_default_options()`. If `out_result` is not NULL it receives the
/// counts, timings, stop reason and the whole text (free `out_result->text` with `engine_string_free`).
///
/// The session keeps the prompt and every generated token except the last (see
/// `engine_generate_result.last_token`), so a conversation continues with the next call (add_bos false).
///
/// Errors: NULL_POINTER (session, prompt), INVALID_UTF8 (prompt, a stop string), INVALID_ARGUMENT (an empty
/// prompt, sampler options out of range), CONTEXT_OVERFLOW (the prompt does not fit in what is left of the
/// session's context; nothing is fed), TOKENIZER, DEVICE. One thread at a time per session.
///
/// # Safety
/// `prompt` is NULL or NUL-terminated; `options` is NULL or valid (see `engine_generate_options`); `callback`,
/// if not NULL, is a function of the documented type, called with `user_data`; `out_result` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_generate(
    session: *mut EngineSession,
    prompt: *const c_char,
    options: *const EngineGenerateOptions,
    callback: EngineTokenCallback,
    user_data: *mut c_void,
    out_result: *mut EngineGenerateResult,
) -> EngineStatus {
    guard(|| {
        if !out_result.is_null() {
            check_out(out_result, "out_result")?;
            // SAFETY: non-NULL, aligned (checked) and writable (caller's contract).
            unsafe { out_result.write(EngineGenerateResult::empty()) };
        }
        with_session(session, |s| {
            // SAFETY: the caller passes NULL or a NUL-terminated string valid for the call.
            let prompt = unsafe { str_arg(prompt, "prompt") }?;
            // SAFETY: the caller passes NULL or valid options.
            let o = unsafe { read_options(options) }?;
            let sampler = sampler_params_from(&o.sampler)?;

            let model = s.model.clone();
            model.check_not_generating()?;
            let engine = &model.engine;
            let tok = engine.tokenizer();
            // The time to the first token counts from here: tokenizing is part of what the caller waits for.
            let t0 = std::time::Instant::now();
            let ids = tok.encode(prompt, o.add_bos)?;
            let tokenize_time = t0.elapsed();
            if ids.is_empty() {
                return Err(CapiError::invalid("the prompt is empty (no tokens): pass some text or set add_bos"));
            }
            let eos = engine.config().eos_token_id;
            let opts = TextOptions {
                generate: GenerateOptions {
                    max_new_tokens: o.max_new_tokens,
                    sampler,
                    eos_token_id: (!o.ignore_eos).then_some(eos),
                },
                stop_strings: o.stops,
            };

            s.clear_logits();
            let mut generating = Some(GeneratingGuard::enter(&model));
            let mut piece_buf = Vec::new();
            let out = generate_text(&mut s.session, tok, &ids, &opts, |token, piece| {
                if token.is_none() {
                    // The held-back end comes after the last token, when the model is no longer running: from
                    // here on the callback may use it.
                    generating = None;
                }
                let Some(cb) = callback else { return true };
                piece_buf.clear();
                piece_buf.extend_from_slice(piece.as_bytes());
                piece_buf.push(0);
                // SAFETY: `cb` is the caller's function of the documented type; `piece_buf` is NUL-terminated,
                // `piece.len()` bytes before the NUL, and outlives the call; user_data is passed through untouched.
                unsafe { cb(user_data, token.unwrap_or(ENGINE_NO_TOKEN), piece_buf.as_ptr().cast(), piece.len()) }
            })?;
            drop(generating);

            if !out_result.is_null() {
                let r = EngineGenerateResult {
                    stop_reason: match out.reason {
                        StopReason::Eos => EngineStopReason::Eos,
                        StopReason::StopString => EngineStopReason::StopString,
                        StopReason::MaxTokens => EngineStopReason::MaxTokens,
                        StopReason::ContextFull => EngineStopReason::ContextFull,
                        StopReason::Callback => EngineStopReason::Callback,
                    },
                    n_prompt_tokens: u32_sat(ids.len()),
                    n_generated_tokens: u32_sat(out.tokens.len()),
                    last_token: out.tokens.last().copied().unwrap_or(ENGINE_NO_TOKEN),
                    time_to_first_token_ms: (tokenize_time + out.stats.time_to_first_token).as_secs_f64() * 1e3,
                    decode_tokens_per_second: out.stats.decode_tokens_per_second(),
                    text: new_string(out.text.as_bytes()),
                    text_len: out.text.len(),
                };
                // SAFETY: checked at the start; the caller provides storage for an engine_generate_result.
                unsafe { out_result.write(r) };
            }
            Ok(())
        })
    })
}

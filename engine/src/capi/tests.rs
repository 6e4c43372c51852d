//! Unit tests of the entry points on the tiny synthetic checkpoint (CPU). The C, Python and bindgen clients in
//! `tests/capi` cover the same ground from the other side of the boundary.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::ptr::{null, null_mut};

use super::*;
use crate::engine::{Engine, EngineOptions};
use crate::sampling::Sampler;
use crate::synth::{write_checkpoint, SynthSpec};

/// The tiny model in a temporary directory of its own, removed on drop (writing it takes milliseconds).
struct Tiny {
    dir: PathBuf,
    c_dir: CString,
}

impl Tiny {
    fn new(name: &str) -> Tiny {
        let dir = std::env::temp_dir().join(format!("engine-capi-unit-{}-{name}", std::process::id()));
        let spec = SynthSpec::tiny();
        let tok = engine_tools::padded_tokenizer_model(engine_tools::test_tokenizer_model(), spec.vocab).unwrap();
        write_checkpoint(&dir, &SynthSpec { tokenizer_model: tok, ..spec }).unwrap();
        Tiny { c_dir: CString::new(dir.to_str().unwrap()).unwrap(), dir }
    }
    /// The tiny model with the `tokenizer.json` test tokenizer instead of `tokenizer.model`.
    fn with_tokenizer_json(name: &str) -> Tiny {
        let dir = std::env::temp_dir().join(format!("engine-capi-unit-{}-{name}", std::process::id()));
        write_checkpoint(&dir, &crate::tiny::with_test_tokenizer_json(SynthSpec::tiny()).unwrap()).unwrap();
        Tiny { c_dir: CString::new(dir.to_str().unwrap()).unwrap(), dir }
    }
    fn load(&self, max_context: u32) -> *mut EngineModel {
        let mut m = null_mut();
        // SAFETY: valid string, options and out-pointer.
        let s = unsafe { engine_model_load(self.c_dir.as_ptr(), &cpu_options(max_context), &mut m) };
        assert_eq!(s, EngineStatus::Ok, "{}", last_error());
        m
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn last_error() -> String {
    // SAFETY: never NULL, valid until the next status call on this thread; copied at once.
    unsafe { CStr::from_ptr(engine_last_error()) }.to_string_lossy().into_owned()
}

fn cpu_options(max_context: u32) -> EngineModelOptions {
    EngineModelOptions { backend: EngineBackend::Cpu as i32, max_context, ..engine_model_default_options() }
}

fn new_session(m: *mut EngineModel) -> *mut EngineSession {
    let mut s = null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { engine_session_new(m, 0, &mut s) }, EngineStatus::Ok, "{}", last_error());
    s
}

fn tokenize(m: *mut EngineModel, text: &str, bos: bool) -> Vec<u32> {
    let text = CString::new(text).unwrap();
    let mut n = 0;
    // SAFETY: size query with capacity 0, then a buffer of the size reported.
    unsafe {
        assert_eq!(engine_tokenize(m, text.as_ptr(), bos, null_mut(), 0, &mut n), EngineStatus::BufferTooSmall);
        let mut ids = vec![0; n];
        assert_eq!(engine_tokenize(m, text.as_ptr(), bos, ids.as_mut_ptr(), n, &mut n), EngineStatus::Ok);
        ids
    }
}

struct Collected {
    tokens: Vec<u32>,
    text: String,
    stop_after: usize,
}

unsafe extern "C" fn collect(user: *mut c_void, token: u32, piece: *const c_char, len: usize) -> bool {
    // SAFETY: user_data is the &mut Collected passed to engine_generate; piece is `len` bytes + NUL.
    let c = unsafe { &mut *(user as *mut Collected) };
    let bytes = unsafe { std::slice::from_raw_parts(piece.cast::<u8>(), len + 1) };
    assert_eq!(bytes[len], 0);
    c.text.push_str(std::str::from_utf8(&bytes[..len]).unwrap());
    if token != ENGINE_NO_TOKEN {
        c.tokens.push(token);
    }
    c.tokens.len() < c.stop_after
}

fn generate(
    s: *mut EngineSession,
    prompt: &str,
    opts: &EngineGenerateOptions,
    stop_after: usize,
) -> (EngineStatus, Collected, EngineGenerateResult) {
    let prompt = CString::new(prompt).unwrap();
    let mut c = Collected { tokens: Vec::new(), text: String::new(), stop_after };
    let mut r = EngineGenerateResult::empty();
    // SAFETY: valid prompt, options, callback and user data for the call.
    let st =
        unsafe { engine_generate(s, prompt.as_ptr(), opts, Some(collect), (&mut c as *mut Collected).cast(), &mut r) };
    (st, c, r)
}

fn result_text(r: &EngineGenerateResult) -> String {
    // SAFETY: a successful engine_generate sets text to a live string of text_len bytes.
    let t = unsafe { std::slice::from_raw_parts(r.text.cast::<u8>(), r.text_len) };
    let t = String::from_utf8(t.to_vec()).unwrap();
    // SAFETY: the string came from the library.
    assert_eq!(unsafe { engine_string_free(r.text) }, EngineStatus::Ok);
    t
}

#[test]
fn generate_streams_what_the_engine_generates() {
    let tiny = Tiny::new("generate_streams_what_the_engine_generates");
    let m = tiny.load(0);
    let s = new_session(m);
    let opts = EngineGenerateOptions { max_new_tokens: 12, ignore_eos: true, ..engine_generate_default_options() };
    let (st, c, r) = generate(s, "Hello world", &opts, usize::MAX);
    assert_eq!(st, EngineStatus::Ok, "{}", last_error());
    assert_eq!(r.stop_reason, EngineStopReason::MaxTokens);
    assert_eq!(r.n_generated_tokens, 12);
    assert_eq!(c.tokens.len(), 12);
    assert_eq!(r.last_token, *c.tokens.last().unwrap());
    assert_eq!(result_text(&r), c.text);

    // The same greedy run through the engine's Rust API gives the same tokens.
    let engine =
        Engine::load(&tiny.dir, &EngineOptions { backend: crate::backend::BackendKind::Cpu, ..Default::default() })
            .unwrap();
    let ids = engine.tokenizer().encode("Hello world", true).unwrap();
    assert_eq!(r.n_prompt_tokens as usize, ids.len());
    let mut sess = engine.new_session(None).unwrap();
    let mut sampler = Sampler::new(Default::default()).unwrap();
    let mut next = sess.feed_and_sample(&ids, &mut sampler).unwrap();
    let mut expect = vec![next];
    while expect.len() < 12 {
        next = sess.feed_and_sample(&[next], &mut sampler).unwrap();
        expect.push(next);
    }
    assert_eq!(c.tokens, expect);
    assert_eq!(engine.tokenizer().decode(&expect).unwrap(), c.text);

    // The session holds the prompt and all but the last generated token.
    let (mut n, mut cap) = (0, 0);
    // SAFETY: valid out-pointers.
    assert_eq!(unsafe { engine_session_length(s, &mut n, &mut cap) }, EngineStatus::Ok);
    assert_eq!((n, cap), (ids.len() + 11, 512));

    // SAFETY: live handles, freed once.
    unsafe {
        assert_eq!(engine_session_free(s), EngineStatus::Ok);
        assert_eq!(engine_model_free(m), EngineStatus::Ok);
    }
}

#[test]
fn a_tokenizer_json_checkpoint_tokenizes_and_generates() {
    let tiny = Tiny::with_tokenizer_json("tokenizer-json");
    let m = tiny.load(0);
    let text = "Hello, 世界 😀  x";
    let ids = tokenize(m, text, true);
    // tokenizer_config.json (as synth writes it) asks for BOS <s> = 1.
    assert_eq!((ids[0], &ids[1..]), (1, &tokenize(m, text, false)[..]));
    let (mut out, mut len) = (null_mut(), 0);
    // SAFETY: valid ids and out-pointers; the string is freed below.
    unsafe {
        assert_eq!(engine_detokenize(m, ids.as_ptr(), ids.len(), &mut out, &mut len), EngineStatus::Ok);
        assert_eq!(CStr::from_ptr(out).to_str().unwrap(), text);
        assert_eq!(len, text.len());
        assert_eq!(engine_string_free(out), EngineStatus::Ok);
    }
    let s = new_session(m);
    let opts = EngineGenerateOptions { max_new_tokens: 16, ignore_eos: true, ..engine_generate_default_options() };
    let (st, c, r) = generate(s, text, &opts, usize::MAX);
    assert_eq!(st, EngineStatus::Ok, "{}", last_error());
    assert_eq!((r.n_prompt_tokens as usize, c.tokens.len()), (ids.len(), 16));
    assert_eq!(result_text(&r), c.text);
    // SAFETY: live handles, freed once.
    unsafe {
        assert_eq!(engine_session_free(s), EngineStatus::Ok);
        assert_eq!(engine_model_free(m), EngineStatus::Ok);
    }
}

#[test]
fn callback_stop_stop_strings_and_context_full() {
    let tiny = Tiny::new("callback_stop_stop_strings_and_context_full");
    let m = tiny.load(24);
    let s = new_session(m);
    let opts = EngineGenerateOptions { max_new_tokens: 50, ignore_eos: true, ..engine_generate_default_options() };
    let (st, c, r) = generate(s, "Hi", &opts, 3);
    assert_eq!(st, EngineStatus::Ok, "{}", last_error());
    assert_eq!((r.stop_reason, c.tokens.len()), (EngineStopReason::Callback, 3));
    result_text(&r);

    // A stop string taken from the text the model produces stops there and is not emitted.
    assert_eq!(engine_session_reset(s), EngineStatus::Ok);
    let (_, full, r) = generate(s, "Hi", &EngineGenerateOptions { max_new_tokens: 8, ..opts }, usize::MAX);
    result_text(&r);
    let stop_at = full.text.char_indices().nth(full.text.chars().count() / 2).unwrap().0;
    let stop = CString::new(&full.text[stop_at..]).unwrap();
    let stops = [stop.as_ptr()];
    let with_stop =
        EngineGenerateOptions { max_new_tokens: 8, stop_strings: stops.as_ptr(), n_stop_strings: 1, ..opts };
    assert_eq!(engine_session_reset(s), EngineStatus::Ok);
    let (st, c, r) = generate(s, "Hi", &with_stop, usize::MAX);
    assert_eq!(st, EngineStatus::Ok, "{}", last_error());
    assert_eq!(r.stop_reason, EngineStopReason::StopString);
    let text = result_text(&r);
    assert_eq!(text, c.text);
    assert_eq!(text, full.text[..full.text.find(stop.to_str().unwrap()).unwrap()]);

    // Context 24: the prompt plus generated tokens fill it.
    assert_eq!(engine_session_reset(s), EngineStatus::Ok);
    let (st, _, r) = generate(s, "Hi", &opts, usize::MAX);
    assert_eq!(st, EngineStatus::Ok);
    assert_eq!(r.stop_reason, EngineStopReason::ContextFull);
    result_text(&r);

    // A prompt longer than what is left: CONTEXT_OVERFLOW, nothing fed.
    let (mut before, mut after) = (0, 0);
    // SAFETY: valid out-pointers.
    unsafe { engine_session_length(s, &mut before, null_mut()) };
    let long = "word ".repeat(40);
    let (st, c, r) = generate(s, &long, &opts, usize::MAX);
    assert_eq!(st, EngineStatus::ContextOverflow, "{}", last_error());
    assert!(last_error().contains("context overflow"), "{}", last_error());
    assert!(c.tokens.is_empty() && r.text.is_null() && r.stop_reason == EngineStopReason::None);
    // SAFETY: valid out-pointers.
    unsafe { engine_session_length(s, &mut after, null_mut()) };
    assert_eq!(before, after);
    // SAFETY: live handles.
    unsafe {
        engine_model_free(m);
        engine_session_free(s);
    }
}

#[test]
fn feed_logits_sample_and_buffers() {
    let tiny = Tiny::new("feed_logits_sample_and_buffers");
    let m = tiny.load(0);
    let s = new_session(m);
    let mut info = std::mem::MaybeUninit::uninit();
    // SAFETY: valid out-pointer; initialized on OK.
    let info = unsafe {
        assert_eq!(engine_model_get_info(m, info.as_mut_ptr()), EngineStatus::Ok);
        info.assume_init()
    };
    let vocab = info.vocab_size as usize;
    assert_eq!((vocab, info.max_context, info.bos_token, info.eos_token), (1024, 512, 1, 2));
    // SAFETY: static strings.
    assert_eq!(unsafe { CStr::from_ptr(info.backend) }.to_str().unwrap(), "cpu");
    let ids = tokenize(m, "The cat", true);
    let mut logits = vec![0f32; vocab];
    // SAFETY: buffers of the stated lengths.
    unsafe {
        assert_eq!(
            engine_session_feed(s, ids.as_ptr(), ids.len(), logits.as_mut_ptr(), vocab - 1),
            EngineStatus::BufferTooSmall
        );
        let mut n = 0;
        engine_session_length(s, &mut n, null_mut());
        assert_eq!(n, 0, "a refused feed feeds nothing");
        assert_eq!(engine_session_feed(s, ids.as_ptr(), ids.len(), logits.as_mut_ptr(), vocab), EngineStatus::Ok);
        let mut t = 0;
        assert_eq!(engine_session_sample(s, null(), &mut t), EngineStatus::Ok);
        assert_eq!(t, crate::sampling::argmax(&logits));

        // All logits of the same tokens: the last row equals the last-token logits.
        let s2 = new_session(m);
        let mut all = vec![0f32; vocab * ids.len()];
        assert_eq!(
            engine_session_feed_all_logits(s2, ids.as_ptr(), ids.len(), all.as_mut_ptr(), all.len()),
            EngineStatus::Ok
        );
        assert_eq!(&all[(ids.len() - 1) * vocab..], &logits[..]);
        // feed_and_sample agrees with feed + sample (greedy).
        let mut t2 = 0;
        assert_eq!(engine_session_feed_and_sample(s2, &t, 1, null(), &mut t2), EngineStatus::Ok);
        assert_eq!(engine_session_sample(s2, null(), &mut t2), EngineStatus::InvalidArgument);
        assert_eq!(engine_session_feed(s, &t, 1, null_mut(), 0), EngineStatus::Ok);
        let mut t3 = 0;
        assert_eq!(engine_session_sample(s, null(), &mut t3), EngineStatus::Ok);
        assert_eq!(t2, t3);

        // Tokens out, truncate, reset.
        let mut held = vec![0u32; 16];
        let mut n = 0;
        assert_eq!(engine_session_tokens(s, held.as_mut_ptr(), 16, &mut n), EngineStatus::Ok);
        assert_eq!(&held[..n], &[&ids[..], &[t]].concat()[..]);
        assert_eq!(engine_session_truncate(s, n + 1), EngineStatus::InvalidArgument);
        assert_eq!(engine_session_truncate(s, 1), EngineStatus::Ok);
        assert_eq!(engine_session_sample(s, null(), &mut t3), EngineStatus::InvalidArgument);
        assert_eq!(engine_session_reset(s), EngineStatus::Ok);
        engine_session_length(s, &mut n, null_mut());
        assert_eq!(n, 0);

        // Sampler options out of range.
        let bad = EngineSamplerOptions { top_p: 1.5, ..engine_sampler_default_options() };
        assert_eq!(engine_session_feed(s, ids.as_ptr(), ids.len(), null_mut(), 0), EngineStatus::Ok);
        assert_eq!(engine_session_sample(s, &bad, &mut t3), EngineStatus::InvalidArgument);
        assert!(last_error().contains("top_p"), "{}", last_error());
        // Token ids outside the vocabulary.
        let oob = [vocab as u32];
        assert_eq!(engine_session_feed(s, oob.as_ptr(), 1, null_mut(), 0), EngineStatus::InvalidArgument);

        // Detokenize round trip and out-of-range ids.
        let mut text = null_mut();
        let mut len = 0;
        assert_eq!(engine_detokenize(m, ids.as_ptr(), ids.len(), &mut text, &mut len), EngineStatus::Ok);
        assert_eq!(CStr::from_ptr(text).to_str().unwrap(), "The cat");
        assert_eq!(len, 7);
        engine_string_free(text);
        assert_eq!(engine_detokenize(m, oob.as_ptr(), 1, &mut text, null_mut()), EngineStatus::InvalidArgument);

        // The memory plan.
        let mut plan = EngineMemoryPlan::default();
        assert_eq!(engine_model_memory_plan(m, 0, 0, &mut plan), EngineStatus::Ok);
        assert_eq!((plan.max_context, plan.prefill_chunk), (512, 512));
        let sum = plan.weights_bytes + plan.kv_cache_bytes + plan.activations_bytes + plan.workspace_bytes;
        assert!(plan.kv_cache_bytes > 0 && plan.total_bytes == sum);
        let mut half = EngineMemoryPlan::default();
        assert_eq!(engine_model_memory_plan(m, 256, 0, &mut half), EngineStatus::Ok);
        assert_eq!(half.kv_cache_bytes * 2, plan.kv_cache_bytes);
        assert_eq!(engine_model_memory_plan(m, 513, 0, &mut half), EngineStatus::InvalidArgument);

        engine_session_free(s2);
        engine_session_free(s);
        engine_model_free(m);
    }
}

#[test]
fn handles_are_checked_before_use() {
    let tiny = Tiny::new("handles_are_checked_before_use");
    let m = tiny.load(0);
    let s = new_session(m);
    // SAFETY: every pointer below is either live or checked by the registry before it is read.
    unsafe {
        // A session where a model is expected, and the reverse.
        let mut info = std::mem::zeroed::<EngineModelInfo>();
        assert_eq!(engine_model_get_info(s.cast(), &mut info), EngineStatus::InvalidHandle);
        assert_eq!(engine_session_reset(m.cast()), EngineStatus::InvalidHandle);
        // A pointer that was never a handle.
        let mut junk = [0u64; 8];
        assert_eq!(engine_model_get_info(junk.as_mut_ptr().cast(), &mut info), EngineStatus::InvalidHandle);
        // Freed handles.
        assert_eq!(engine_model_free(m), EngineStatus::Ok);
        assert_eq!(engine_model_free(m), EngineStatus::InvalidHandle);
        assert_eq!(engine_model_get_info(m, &mut info), EngineStatus::InvalidHandle);
        let mut s2 = null_mut();
        assert_eq!(engine_session_new(m, 0, &mut s2), EngineStatus::InvalidHandle);
        assert!(s2.is_null());
        // The session outlives its model.
        let ids = [1u32, 5, 9];
        let mut t = 0;
        assert_eq!(engine_session_feed_and_sample(s, ids.as_ptr(), 3, null(), &mut t), EngineStatus::Ok);
        assert_eq!(engine_session_free(s), EngineStatus::Ok);
        assert_eq!(engine_session_free(s), EngineStatus::InvalidHandle);
        assert_eq!(engine_session_feed(s, ids.as_ptr(), 3, null_mut(), 0), EngineStatus::InvalidHandle);
        // NULL frees are no-ops; other NULLs are errors naming the argument.
        assert_eq!(engine_model_free(null_mut()), EngineStatus::Ok);
        assert_eq!(engine_session_free(null_mut()), EngineStatus::Ok);
        assert_eq!(engine_model_get_info(null(), &mut info), EngineStatus::NullPointer);
        assert_eq!(last_error(), "model is NULL");
    }
}

#[test]
fn load_errors() {
    let tiny = Tiny::new("load_errors");
    let mut m = std::ptr::dangling_mut::<EngineModel>(); // must be reset to NULL on failure
                                                         // SAFETY: valid strings and out-pointers.
    unsafe {
        let missing = CString::new("/nonexistent/engine-model").unwrap();
        assert_eq!(engine_model_load(missing.as_ptr(), null(), &mut m), EngineStatus::NotFound);
        assert!(m.is_null());
        assert!(last_error().contains("/nonexistent/engine-model"), "{}", last_error());
        assert_eq!(engine_model_load(null(), null(), &mut m), EngineStatus::NullPointer);
        assert_eq!(engine_model_load(tiny.c_dir.as_ptr(), null(), null_mut()), EngineStatus::NullPointer);
        let bad_utf8 = b"/tmp/\xff\xfe\0";
        assert_eq!(engine_model_load(bad_utf8.as_ptr().cast(), null(), &mut m), EngineStatus::InvalidUtf8);
        for bad in [
            EngineModelOptions { backend: 7, ..cpu_options(0) },
            EngineModelOptions { backend: -1, ..cpu_options(0) },
            cpu_options(513),
            EngineModelOptions { prefill_chunk: ENGINE_MAX_PREFILL_CHUNK + 1, ..cpu_options(0) },
        ] {
            assert_eq!(engine_model_load(tiny.c_dir.as_ptr(), &bad, &mut m), EngineStatus::InvalidArgument, "{bad:?}");
            assert!(m.is_null());
        }
        let mut s = null_mut();
        let model = tiny.load(16);
        assert_eq!(engine_session_new(model, 17, &mut s), EngineStatus::InvalidArgument);
        engine_model_free(model);
    }
}

#[test]
fn auto_falls_back_and_cuda_reports_why_not() {
    let tiny = Tiny::new("auto_falls_back_and_cuda_reports_why_not");
    for (backend, allowed) in [
        (EngineBackend::Auto, [EngineStatus::Ok, EngineStatus::Ok]),
        (EngineBackend::Cuda, [EngineStatus::Ok, EngineStatus::BackendUnavailable]),
    ] {
        let o = EngineModelOptions { backend: backend as i32, ..engine_model_default_options() };
        let mut m = null_mut();
        // SAFETY: valid arguments.
        let st = unsafe { engine_model_load(tiny.c_dir.as_ptr(), &o, &mut m) };
        assert!(allowed.contains(&st), "{backend:?}: {st:?} {}", last_error());
        if st == EngineStatus::Ok {
            // SAFETY: a live model; the backend name is a static string.
            unsafe {
                let mut info = std::mem::zeroed::<EngineModelInfo>();
                assert_eq!(engine_model_get_info(m, &mut info), EngineStatus::Ok);
                let name = CStr::from_ptr(info.backend).to_str().unwrap();
                assert!(name == "cpu" || name == "cuda", "{name}");
                engine_model_free(m);
            }
        } else {
            assert!(m.is_null());
        }
    }
}

unsafe extern "C" fn reenter(user: *mut c_void, _: u32, _: *const c_char, _: usize) -> bool {
    // SAFETY: user_data is the &mut (session, status) passed to engine_generate, alive for the call.
    let (s, status) = unsafe { &mut *(user as *mut (*mut EngineSession, EngineStatus)) };
    *status = engine_session_reset(*s);
    false
}

#[test]
fn reentrant_and_concurrent_use() {
    let tiny = Tiny::new("reentrant_and_concurrent_use");
    let m = tiny.load(0);
    let s = new_session(m);
    let mut state = (s, EngineStatus::Ok);
    let prompt = CString::new("Hi").unwrap();
    // SAFETY: valid arguments; the callback gets &mut state.
    let st = unsafe {
        engine_generate(s, prompt.as_ptr(), null(), Some(reenter), (&mut state as *mut (_, _)).cast(), null_mut())
    };
    assert_eq!(st, EngineStatus::Ok, "{}", last_error());
    assert_eq!(state.1, EngineStatus::SessionBusy);

    // One model, sessions on several threads: each gets what it gets alone.
    let opts = EngineGenerateOptions { max_new_tokens: 6, ignore_eos: true, ..engine_generate_default_options() };
    assert_eq!(engine_session_reset(s), EngineStatus::Ok);
    let alone = generate(s, "Alone", &opts, usize::MAX).1.tokens;
    let mp = m as usize;
    let threads: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let opts =
                    EngineGenerateOptions { max_new_tokens: 6, ignore_eos: true, ..engine_generate_default_options() };
                let s = new_session(mp as *mut EngineModel);
                let toks = generate(s, "Alone", &opts, usize::MAX).1.tokens;
                // SAFETY: live session.
                unsafe { engine_session_free(s) };
                toks
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), alone);
    }
    // SAFETY: live handles.
    unsafe {
        engine_session_free(s);
        engine_model_free(m);
    }
}

struct Busy {
    model: *mut EngineModel,
    same_model_session: *mut EngineSession,
    other_model_session: *mut EngineSession,
    seen: Vec<[EngineStatus; 4]>,
}

unsafe extern "C" fn use_models(user: *mut c_void, _: u32, _: *const c_char, _: usize) -> bool {
    // SAFETY: user_data is the &mut Busy passed to engine_generate; the handles in it are live.
    unsafe {
        let b = &mut *(user as *mut Busy);
        let mut s = null_mut();
        let mut n = 0;
        let t = [5u32];
        b.seen.push([
            engine_session_new(b.model, 0, &mut s),
            engine_session_feed(b.same_model_session, t.as_ptr(), 1, null_mut(), 0),
            engine_tokenize(b.model, c"tokenizing is fine".as_ptr(), true, null_mut(), 0, &mut n),
            engine_session_feed(b.other_model_session, t.as_ptr(), 1, null_mut(), 0),
        ]);
        b.seen.len() < 3
    }
}

#[test]
fn callbacks_cannot_run_their_own_model() {
    let tiny = Tiny::new("callbacks_cannot_run_their_own_model");
    let (m, other) = (tiny.load(0), tiny.load(0));
    let (s, s2, s3) = (new_session(m), new_session(m), new_session(other));
    for temperature in [0.0, 0.8] {
        let mut b = Busy { model: m, same_model_session: s2, other_model_session: s3, seen: Vec::new() };
        let mut o = engine_generate_default_options();
        o.sampler.temperature = temperature;
        // SAFETY: valid arguments; the callback gets &mut b.
        let st = unsafe {
            engine_session_reset(s);
            engine_generate(s, c"Hi".as_ptr(), &o, Some(use_models), (&mut b as *mut Busy).cast(), null_mut())
        };
        assert_eq!(st, EngineStatus::Ok, "{}", last_error());
        let expect = [EngineStatus::ModelBusy, EngineStatus::ModelBusy, EngineStatus::BufferTooSmall, EngineStatus::Ok];
        assert_eq!(b.seen, vec![expect; 3], "temperature {temperature}");
        // After the call the model is free again.
        let t = [5u32];
        // SAFETY: live session, valid tokens.
        assert_eq!(unsafe { engine_session_feed(s2, t.as_ptr(), 1, null_mut(), 0) }, EngineStatus::Ok);
    }
    // SAFETY: live handles.
    unsafe {
        for x in [s, s2, s3] {
            engine_session_free(x);
        }
        engine_model_free(m);
        engine_model_free(other);
    }
}

#[test]
fn default_sampler_options_are_the_engines_defaults() {
    let d = crate::sampling::SamplerParams::default();
    assert_eq!(session::sampler_params_from(&engine_sampler_default_options()).unwrap(), d);
}

#[test]
fn version_is_the_crate_version() {
    // SAFETY: static string.
    assert_eq!(unsafe { CStr::from_ptr(engine_version()) }.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

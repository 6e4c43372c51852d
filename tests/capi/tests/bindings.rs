//! The library called through Rust declarations that bindgen generated from the committed header (build.rs): the
//! C view of the ABI. Layouts and constants of the header are compared with the Rust definitions, then the main
//! paths and every error path are walked through the header's declarations.

use std::ffi::{c_char, c_void, CStr, CString};
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::ptr::{null, null_mut};

use capi_tests::sys;
use engine::capi as rs;

/// Same size, alignment and field offsets in the header (bindgen) and in Rust (what the library was built with).
macro_rules! same_layout {
    ($c:ty, $r:ty, [$($f:ident),* $(,)?]) => {{
        assert_eq!(size_of::<$c>(), size_of::<$r>(), "size of {}", stringify!($c));
        assert_eq!(align_of::<$c>(), align_of::<$r>(), "alignment of {}", stringify!($c));
        $(assert_eq!(offset_of!($c, $f), offset_of!($r, $f), "{}.{}", stringify!($c), stringify!($f));)*
    }};
}

#[test]
fn header_layouts_and_constants_match_the_rust_abi() {
    same_layout!(sys::engine_model_options, rs::EngineModelOptions, [backend, device, max_context, prefill_chunk]);
    same_layout!(
        sys::engine_model_info,
        rs::EngineModelInfo,
        [
            vocab_size,
            tokenizer_vocab_size,
            max_context,
            max_position_embeddings,
            prefill_chunk,
            bos_token,
            eos_token,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            backend,
            device
        ]
    );
    same_layout!(
        sys::engine_memory_plan,
        rs::EngineMemoryPlan,
        [max_context, prefill_chunk, weights_bytes, kv_cache_bytes, activations_bytes, workspace_bytes, total_bytes]
    );
    same_layout!(
        sys::engine_sampler_options,
        rs::EngineSamplerOptions,
        [temperature, top_k, top_p, repetition_penalty, seed]
    );
    same_layout!(
        sys::engine_generate_options,
        rs::EngineGenerateOptions,
        [max_new_tokens, add_bos, ignore_eos, sampler, stop_strings, n_stop_strings]
    );
    same_layout!(
        sys::engine_generate_result,
        rs::EngineGenerateResult,
        [
            stop_reason,
            n_prompt_tokens,
            n_generated_tokens,
            last_token,
            time_to_first_token_ms,
            decode_tokens_per_second,
            text,
            text_len
        ]
    );
    assert_eq!(size_of::<sys::engine_status>(), size_of::<rs::EngineStatus>());
    assert_eq!(size_of::<sys::engine_stop_reason>(), size_of::<rs::EngineStopReason>());
    assert_eq!(size_of::<sys::engine_token>(), size_of::<rs::EngineToken>());

    use rs::EngineStatus as S;
    for (c, r) in [
        (sys::ENGINE_STATUS_OK, S::Ok),
        (sys::ENGINE_STATUS_NULL_POINTER, S::NullPointer),
        (sys::ENGINE_STATUS_INVALID_HANDLE, S::InvalidHandle),
        (sys::ENGINE_STATUS_INVALID_ARGUMENT, S::InvalidArgument),
        (sys::ENGINE_STATUS_INVALID_UTF8, S::InvalidUtf8),
        (sys::ENGINE_STATUS_BUFFER_TOO_SMALL, S::BufferTooSmall),
        (sys::ENGINE_STATUS_NOT_FOUND, S::NotFound),
        (sys::ENGINE_STATUS_IO, S::Io),
        (sys::ENGINE_STATUS_FORMAT, S::Format),
        (sys::ENGINE_STATUS_TOKENIZER, S::Tokenizer),
        (sys::ENGINE_STATUS_CONTEXT_OVERFLOW, S::ContextOverflow),
        (sys::ENGINE_STATUS_BACKEND_UNAVAILABLE, S::BackendUnavailable),
        (sys::ENGINE_STATUS_DEVICE, S::Device),
        (sys::ENGINE_STATUS_SESSION_BUSY, S::SessionBusy),
        (sys::ENGINE_STATUS_MODEL_BUSY, S::ModelBusy),
        (sys::ENGINE_STATUS_INTERNAL, S::Internal),
    ] {
        assert_eq!(c as i64, r as i64, "{r:?}");
    }
    use rs::EngineStopReason as R;
    for (c, r) in [
        (sys::ENGINE_STOP_REASON_NONE, R::None),
        (sys::ENGINE_STOP_REASON_EOS, R::Eos),
        (sys::ENGINE_STOP_REASON_STOP_STRING, R::StopString),
        (sys::ENGINE_STOP_REASON_MAX_TOKENS, R::MaxTokens),
        (sys::ENGINE_STOP_REASON_CONTEXT_FULL, R::ContextFull),
        (sys::ENGINE_STOP_REASON_CALLBACK, R::Callback),
    ] {
        assert_eq!(c as i64, r as i64, "{r:?}");
    }
    use rs::EngineBackend as B;
    for (c, r) in
        [(sys::ENGINE_BACKEND_AUTO, B::Auto), (sys::ENGINE_BACKEND_CPU, B::Cpu), (sys::ENGINE_BACKEND_CUDA, B::Cuda)]
    {
        assert_eq!(c as i64, r as i64, "{r:?}");
    }
    assert_eq!(sys::ENGINE_NO_TOKEN, rs::ENGINE_NO_TOKEN);
    assert_eq!(sys::ENGINE_MAX_PREFILL_CHUNK, rs::ENGINE_MAX_PREFILL_CHUNK);
}

fn last_error() -> String {
    // SAFETY: never NULL; valid until the next status call on this thread, and copied at once.
    unsafe { CStr::from_ptr(sys::engine_last_error()) }.to_string_lossy().into_owned()
}

fn load(dir: &Path, max_context: u32) -> *mut sys::engine_model {
    let dir = CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: default options by value, a valid directory string and out-pointer.
    unsafe {
        let mut o = sys::engine_model_default_options();
        o.backend = sys::ENGINE_BACKEND_CPU as i32;
        o.max_context = max_context;
        let mut m = null_mut();
        assert_eq!(sys::engine_model_load(dir.as_ptr(), &o, &mut m), sys::ENGINE_STATUS_OK, "{}", last_error());
        m
    }
}

struct Stream {
    text: String,
    tokens: Vec<u32>,
}

unsafe extern "C" fn on_token(user: *mut c_void, token: u32, piece: *const c_char, len: usize) -> bool {
    // SAFETY: `user` is the &mut Stream given to engine_generate; `piece` holds `len` bytes and a NUL.
    let (s, bytes) = unsafe { (&mut *(user as *mut Stream), std::slice::from_raw_parts(piece.cast::<u8>(), len)) };
    s.text.push_str(std::str::from_utf8(bytes).expect("pieces are UTF-8"));
    if token != sys::ENGINE_NO_TOKEN {
        s.tokens.push(token);
    }
    true
}

#[test]
fn generate_through_the_header() {
    let dir = capi_tests::tiny_model("bindings-generate");
    let m = load(dir.path(), 0);
    // SAFETY: every pointer passed is valid for its call, as the header documents.
    unsafe {
        let mut info = sys::engine_model_info::default();
        assert_eq!(sys::engine_model_get_info(m, &mut info), sys::ENGINE_STATUS_OK);
        assert_eq!(CStr::from_ptr(info.backend).to_str().unwrap(), "cpu");
        assert_eq!((info.vocab_size, info.max_context, info.num_layers), (1024, 512, 2));

        let mut s = null_mut();
        assert_eq!(sys::engine_session_new(m, 0, &mut s), sys::ENGINE_STATUS_OK);
        let mut opts = sys::engine_generate_default_options();
        opts.max_new_tokens = 10;
        opts.ignore_eos = true;
        opts.sampler.temperature = 0.8;
        opts.sampler.top_k = 40;
        opts.sampler.top_p = 0.95;
        opts.sampler.repetition_penalty = 1.1;
        opts.sampler.seed = 42;
        let run = |s: *mut sys::engine_session| {
            let mut st = Stream { text: String::new(), tokens: Vec::new() };
            let mut r = std::mem::zeroed::<sys::engine_generate_result>();
            let prompt = c"Once upon a time";
            let status = sys::engine_generate(
                s,
                prompt.as_ptr(),
                &opts,
                Some(on_token),
                (&mut st as *mut Stream).cast(),
                &mut r,
            );
            assert_eq!(status, sys::ENGINE_STATUS_OK, "{}", last_error());
            let text = std::str::from_utf8(std::slice::from_raw_parts(r.text.cast::<u8>(), r.text_len)).unwrap();
            assert_eq!(text, st.text);
            assert_eq!(sys::engine_string_free(r.text), sys::ENGINE_STATUS_OK);
            assert_eq!(r.stop_reason, sys::ENGINE_STOP_REASON_MAX_TOKENS);
            assert_eq!(r.n_generated_tokens, 10);
            st.tokens
        };
        let first = run(s);
        assert_eq!(sys::engine_session_reset(s), sys::ENGINE_STATUS_OK);
        assert_eq!(run(s), first, "same seed, same tokens");

        // Tokenize / detokenize through the header.
        let mut n = 0usize;
        let text = c"Hello, world";
        assert_eq!(
            sys::engine_tokenize(m, text.as_ptr(), false, null_mut(), 0, &mut n),
            sys::ENGINE_STATUS_BUFFER_TOO_SMALL
        );
        let mut ids = vec![0u32; n];
        assert_eq!(sys::engine_tokenize(m, text.as_ptr(), false, ids.as_mut_ptr(), n, &mut n), sys::ENGINE_STATUS_OK);
        let (mut out, mut len) = (null_mut(), 0usize);
        assert_eq!(sys::engine_detokenize(m, ids.as_ptr(), n, &mut out, &mut len), sys::ENGINE_STATUS_OK);
        assert_eq!(CStr::from_ptr(out), text);
        assert_eq!(len, text.to_bytes().len());
        assert_eq!(sys::engine_string_free(out), sys::ENGINE_STATUS_OK);

        let mut plan = sys::engine_memory_plan::default();
        assert_eq!(sys::engine_model_memory_plan(m, 0, 0, &mut plan), sys::ENGINE_STATUS_OK);
        assert!(plan.total_bytes > plan.weights_bytes && plan.weights_bytes > 0);

        assert_eq!(sys::engine_session_free(s), sys::ENGINE_STATUS_OK);
        assert_eq!(sys::engine_model_free(m), sys::ENGINE_STATUS_OK);
    }
}

#[test]
fn error_paths_through_the_header() {
    let model_dir = capi_tests::tiny_model("bindings-errors");
    let m = load(model_dir.path(), 16);
    // SAFETY: every pointer is valid, NULL, or a handle the registry checks before reading it.
    unsafe {
        // Null pointers.
        let mut s = null_mut();
        assert_eq!(sys::engine_session_new(null(), 0, &mut s), sys::ENGINE_STATUS_NULL_POINTER);
        assert_eq!(last_error(), "model is NULL");
        assert_eq!(sys::engine_session_new(m, 0, null_mut()), sys::ENGINE_STATUS_NULL_POINTER);
        assert_eq!(sys::engine_session_new(m, 0, &mut s), sys::ENGINE_STATUS_OK);
        assert_eq!(
            sys::engine_generate(s, null(), null(), None, null_mut(), null_mut()),
            sys::ENGINE_STATUS_NULL_POINTER
        );
        assert!(last_error().contains("prompt"), "{}", last_error());
        let mut n = 0usize;
        assert_eq!(
            sys::engine_tokenize(m, c"x".as_ptr(), true, null_mut(), 4, &mut n),
            sys::ENGINE_STATUS_NULL_POINTER
        );
        // A pointer array that claims elements but is NULL.
        assert_eq!(sys::engine_session_feed(s, null(), 3, null_mut(), 0), sys::ENGINE_STATUS_NULL_POINTER);

        // Invalid UTF-8, in the prompt and in a stop string.
        let bad = b"caf\xc3(\0";
        assert_eq!(
            sys::engine_generate(s, bad.as_ptr().cast(), null(), None, null_mut(), null_mut()),
            sys::ENGINE_STATUS_INVALID_UTF8
        );
        let stops = [c"ok".as_ptr(), bad.as_ptr().cast::<c_char>()];
        let mut opts = sys::engine_generate_default_options();
        opts.stop_strings = stops.as_ptr();
        opts.n_stop_strings = 2;
        assert_eq!(
            sys::engine_generate(s, c"hi".as_ptr(), &opts, None, null_mut(), null_mut()),
            sys::ENGINE_STATUS_INVALID_UTF8
        );
        assert!(last_error().contains("stop_strings[1]"), "{}", last_error());

        // Bad options.
        let mut o = sys::engine_model_default_options();
        o.backend = 42;
        let mut m2 = null_mut();
        let dir = CString::new(model_dir.path().to_str().unwrap()).unwrap();
        assert_eq!(sys::engine_model_load(dir.as_ptr(), &o, &mut m2), sys::ENGINE_STATUS_INVALID_ARGUMENT);
        assert!(m2.is_null());
        let mut g = sys::engine_generate_default_options();
        g.sampler.temperature = -1.0;
        assert_eq!(
            sys::engine_generate(s, c"hi".as_ptr(), &g, None, null_mut(), null_mut()),
            sys::ENGINE_STATUS_INVALID_ARGUMENT
        );
        assert!(last_error().contains("temperature"), "{}", last_error());
        let mut s2 = null_mut();
        assert_eq!(sys::engine_session_new(m, 17, &mut s2), sys::ENGINE_STATUS_INVALID_ARGUMENT);
        assert!(s2.is_null());

        // Missing model directory.
        assert_eq!(
            sys::engine_model_load(c"/no/such/model/dir".as_ptr(), null(), &mut m2),
            sys::ENGINE_STATUS_NOT_FOUND
        );
        assert!(last_error().contains("/no/such/model/dir"), "{}", last_error());

        // Context overflow: 16 positions.
        let ids: Vec<u32> = (10..30).collect();
        assert_eq!(
            sys::engine_session_feed(s, ids.as_ptr(), ids.len(), null_mut(), 0),
            sys::ENGINE_STATUS_CONTEXT_OVERFLOW
        );
        let long = CString::new("the cat sat on the mat ".repeat(10)).unwrap();
        assert_eq!(
            sys::engine_generate(s, long.as_ptr(), null(), None, null_mut(), null_mut()),
            sys::ENGINE_STATUS_CONTEXT_OVERFLOW
        );

        // Freed and foreign handles.
        assert_eq!(sys::engine_session_free(s), sys::ENGINE_STATUS_OK);
        assert_eq!(sys::engine_session_reset(s), sys::ENGINE_STATUS_INVALID_HANDLE);
        assert_eq!(sys::engine_session_free(s), sys::ENGINE_STATUS_INVALID_HANDLE);
        let mut fake = [0u8; 64];
        assert_eq!(sys::engine_model_free(fake.as_mut_ptr().cast()), sys::ENGINE_STATUS_INVALID_HANDLE);
        assert_eq!(sys::engine_string_free(fake.as_mut_ptr().cast()), sys::ENGINE_STATUS_INVALID_HANDLE);
        assert_eq!(sys::engine_model_free(m), sys::ENGINE_STATUS_OK);
        let mut info = sys::engine_model_info::default();
        assert_eq!(sys::engine_model_get_info(m, &mut info), sys::ENGINE_STATUS_INVALID_HANDLE);
        assert!(last_error().contains("freed"), "{}", last_error());
        assert_eq!(
            CStr::from_ptr(sys::engine_status_string(sys::ENGINE_STATUS_INVALID_HANDLE as i32)).to_str().unwrap(),
            "invalid handle (freed, foreign or of another type)"
        );
    }
}

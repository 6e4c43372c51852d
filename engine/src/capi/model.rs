//! The model handle: loading, freeing, information, the memory plan, tokenization and detokenization.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::sync::Arc;

use engine_format::plan::{plan, PlanLimits, Region};

use super::args::{check_out, slice_arg, slice_arg_mut, u32_sat, write_out};
use super::handles::{self, Kind};
use super::status::{guard, guard_value, CResult, CapiError, EngineStatus};
use super::strings::{new_string, str_arg};
use super::token::EngineToken;
use crate::backend::BackendKind;
use crate::engine::{Engine, EngineOptions};

/// Largest prefill chunk accepted (tokens per forward pass during prefill).
pub const ENGINE_MAX_PREFILL_CHUNK: u32 = 65536;

/// Which backend `engine_model_load` uses. Stored in `engine_model_options.backend` as an `int32_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineBackend {
    /// CUDA when a usable GPU is present, else the CPU (`engine_model_info.backend` tells which).
    Auto = 0,
    Cpu = 1,
    Cuda = 2,
}

/// How to load a model. Start from `engine_model_default_options()` and change fields: zero means "the default"
/// for every numeric field.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineModelOptions {
    /// An `engine_backend` value (`ENGINE_BACKEND_AUTO`, `_CPU`, `_CUDA`). An `int32_t` so that any value can be
    /// checked: others give `ENGINE_STATUS_INVALID_ARGUMENT`.
    pub backend: i32,
    /// CUDA device ordinal (ignored by the CPU backend).
    pub device: u32,
    /// Positions of KV cache per session: 1..=max_position_embeddings of the model; 0 = max_position_embeddings.
    pub max_context: u32,
    /// Most tokens per forward pass while prefilling: 1..=ENGINE_MAX_PREFILL_CHUNK (at most the context is used);
    /// 0 = 1024.
    pub prefill_chunk: u32,
}

/// What a model is; see `engine_model_get_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineModelInfo {
    /// Width of the logits: valid token ids for feeding are 0..vocab_size-1.
    pub vocab_size: u32,
    /// Pieces of the tokenizer (<= vocab_size): ids that `engine_detokenize` accepts.
    pub tokenizer_vocab_size: u32,
    /// Context of a session made with max_context 0 (as loaded).
    pub max_context: u32,
    /// The model's own limit (config.json `max_position_embeddings`).
    pub max_position_embeddings: u32,
    /// Prefill chunk the model was loaded with.
    pub prefill_chunk: u32,
    pub bos_token: EngineToken,
    pub eos_token: EngineToken,
    pub hidden_size: u32,
    pub num_layers: u32,
    pub num_heads: u32,
    pub num_kv_heads: u32,
    /// "cpu" or "cuda": static storage.
    pub backend: *const c_char,
    /// A description of the device ("CPU, 16 threads", "NVIDIA H100 80GB HBM3, sm_90"): owned by the model,
    /// valid until `engine_model_free`.
    pub device: *const c_char,
}

/// Memory the model needs, from the engine's static plan (what the CUDA backend allocates up front): see
/// `engine_model_memory_plan`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineMemoryPlan {
    /// The limits the plan was computed for.
    pub max_context: u32,
    pub prefill_chunk: u32,
    /// Weights in the device layout, rotary tables included.
    pub weights_bytes: u64,
    /// Keys and values of one sequence of max_context positions.
    pub kv_cache_bytes: u64,
    /// Activations of one prefill chunk.
    pub activations_bytes: u64,
    /// Per-step scratch.
    pub workspace_bytes: u64,
    /// The sum of the four.
    pub total_bytes: u64,
}

/// A loaded model (opaque to C).
pub struct EngineModel {
    pub(crate) shared: Arc<ModelShared>,
}

/// What the model handle and its sessions share; sessions hold it too, so it outlives `engine_model_free`.
pub(crate) struct ModelShared {
    pub engine: Engine,
    pub prefill_chunk: usize,
    device: CString,
}

thread_local! {
    /// The models (`ModelShared` addresses) whose `engine_generate` is running a callback on this thread.
    static GENERATING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks a model as generating on this thread for as long as it lives (see [`ModelShared::check_not_generating`]).
pub(crate) struct GeneratingGuard(usize);

impl GeneratingGuard {
    pub fn enter(model: &Arc<ModelShared>) -> GeneratingGuard {
        let addr = Arc::as_ptr(model) as usize;
        GENERATING.with(|g| g.borrow_mut().push(addr));
        GeneratingGuard(addr)
    }
}

impl Drop for GeneratingGuard {
    fn drop(&mut self) {
        let _ = GENERATING.try_with(|g| {
            let mut g = g.borrow_mut();
            if let Some(i) = g.iter().rposition(|&a| a == self.0) {
                g.remove(i);
            }
        });
    }
}

impl ModelShared {
    /// Refuse to use the backend from inside this model's own generate callback: the generation may hold the
    /// backend lock while it calls back (greedy decoding runs its whole loop under it), so waiting for the lock
    /// there would deadlock. Refused whatever the sampler, so that behaviour does not depend on it.
    pub fn check_not_generating(self: &Arc<Self>) -> CResult<()> {
        let addr = Arc::as_ptr(self) as usize;
        if GENERATING.try_with(|g| g.borrow().contains(&addr)).unwrap_or(false) {
            return Err(CapiError::new(
                EngineStatus::ModelBusy,
                "this model is generating on this thread (the call comes from its engine_generate callback): run \
                 its sessions after the callback returns",
            ));
        }
        Ok(())
    }
}

/// Clone the shared part of the model behind `model`, checking the registry first.
pub(crate) fn model_ref(model: *const EngineModel) -> CResult<Arc<ModelShared>> {
    if model.is_null() {
        return Err(CapiError::null("model"));
    }
    handles::with_live(model as usize, Kind::Model, || {
        // SAFETY: the registry lists `model` as a live model, i.e. a `Box<EngineModel>` leaked by
        // `engine_model_load` and not yet freed; `engine_model_free` removes it from the registry under the lock
        // held during this closure before dropping it, so the box is alive while we clone the Arc out of it.
        unsafe { (*model).shared.clone() }
    })
}

/// The default load options: backend auto, device 0, the model's full context, prefill chunk 1024.
/// Thread-safe; cannot fail.
#[no_mangle]
pub extern "C" fn engine_model_default_options() -> EngineModelOptions {
    const DEFAULT: EngineModelOptions =
        EngineModelOptions { backend: EngineBackend::Auto as i32, device: 0, max_context: 0, prefill_chunk: 0 };
    guard_value(DEFAULT, || DEFAULT)
}

fn engine_options(o: &EngineModelOptions) -> CResult<EngineOptions> {
    let backend = match o.backend {
        x if x == EngineBackend::Auto as i32 => BackendKind::Auto,
        x if x == EngineBackend::Cpu as i32 => BackendKind::Cpu,
        x if x == EngineBackend::Cuda as i32 => BackendKind::Cuda,
        x => {
            return Err(CapiError::invalid(format!(
                "options.backend must be ENGINE_BACKEND_AUTO (0), _CPU (1) or _CUDA (2), got {x}"
            )))
        }
    };
    if o.prefill_chunk > ENGINE_MAX_PREFILL_CHUNK {
        return Err(CapiError::invalid(format!(
            "options.prefill_chunk must be in 1..={ENGINE_MAX_PREFILL_CHUNK} (0 = default), got {}",
            o.prefill_chunk
        )));
    }
    let d = EngineOptions::default();
    Ok(EngineOptions {
        backend,
        device: o.device as usize,
        max_context: (o.max_context != 0).then_some(o.max_context as usize),
        prefill_chunk: if o.prefill_chunk == 0 { d.prefill_chunk } else { o.prefill_chunk as usize },
        ..d
    })
}

/// Load the checkpoint in directory `dir` (config.json, quantize_config.json, *.safetensors, and tokenizer.model or
/// else tokenizer.json with tokenizer_config.json) on the backend `options` asks for. `options` may be NULL for
/// `engine_model_default_options()`.
/// On success `*out_model` is a new model to free with `engine_model_free`; on failure it is set to NULL.
///
/// Errors: NOT_FOUND (no such directory or a required file missing), FORMAT, IO, TOKENIZER, INVALID_ARGUMENT
/// (options out of range), BACKEND_UNAVAILABLE (ENGINE_BACKEND_CUDA without a usable GPU), DEVICE.
///
/// Thread-safe. Slow (maps the weights, uploads them to the GPU).
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string; `options` is NULL or points to an `engine_model_options`;
/// `out_model` is NULL or points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn engine_model_load(
    dir: *const c_char,
    options: *const EngineModelOptions,
    out_model: *mut *mut EngineModel,
) -> EngineStatus {
    guard(|| {
        check_out(out_model, "out_model")?;
        // SAFETY: checked non-NULL and aligned above; the caller provides storage for a pointer.
        unsafe { out_model.write(std::ptr::null_mut()) };
        // SAFETY: the caller passes NULL or a NUL-terminated string valid for the call.
        let dir = unsafe { str_arg(dir, "dir") }?;
        let opts = if options.is_null() {
            engine_model_default_options()
        } else {
            if !options.is_aligned() {
                return Err(CapiError::invalid("options is not aligned"));
            }
            // SAFETY: non-NULL and aligned; the caller guarantees it points to an engine_model_options. Every
            // field is a plain integer, so any bit pattern is a valid value.
            unsafe { options.read() }
        };
        let engine = Engine::load(Path::new(dir), &engine_options(&opts)?)?;
        let prefill_chunk = engine.prefill_chunk();
        let device = CString::new(engine.device_description().replace('\0', " ")).unwrap_or_default();
        let model = Box::new(EngineModel { shared: Arc::new(ModelShared { engine, prefill_chunk, device }) });
        let p = Box::into_raw(model);
        handles::register(p as usize, Kind::Model);
        // SAFETY: checked above.
        unsafe { out_model.write(p) };
        Ok(())
    })
}

/// The directory of the built-in tiny model (random weights in the real layout, so that the library can be tried
/// on any machine), written there first if it is missing: `$ENGINE_TINY_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/engine/tiny-v1` or `~/.cache/engine/tiny-v1`; the model `engine-cli` uses without `--model`.
/// Pass the directory to `engine_model_load`. On success `*out_dir` is a new NUL-terminated UTF-8 string to free
/// with `engine_string_free`, and `*out_len` (if not NULL) its length in bytes.
///
/// Errors: IO (the directory cannot be written), INVALID_ARGUMENT (the path is not UTF-8). Thread-safe.
///
/// # Safety
/// `out_dir` is NULL or writable; `out_len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_tiny_model_dir(out_dir: *mut *mut c_char, out_len: *mut usize) -> EngineStatus {
    guard(|| {
        check_out(out_dir, "out_dir")?;
        if !out_len.is_null() {
            check_out(out_len, "out_len")?;
        }
        let dir = crate::tiny::builtin_tiny_model()?;
        let dir = dir
            .to_str()
            .ok_or_else(|| CapiError::invalid(format!("the tiny model's directory {} is not UTF-8", dir.display())))?;
        let s = new_string(dir.as_bytes());
        // SAFETY: checked above; the caller provides a writable pointer (and size_t when out_len is not NULL).
        unsafe {
            out_dir.write(s);
            if !out_len.is_null() {
                out_len.write(dir.len());
            }
        }
        Ok(())
    })
}

/// Free a model. Sessions made from it stay usable (they keep what they need alive) and must still be freed.
/// NULL is a no-op returning OK; a freed or foreign pointer gives INVALID_HANDLE and is not touched.
///
/// Thread-safe, but no other call may be using this model handle at the same time: calls already inside the
/// library are safe (they hold their own reference), calls made after this one get INVALID_HANDLE.
///
/// # Safety
/// None: `model` is only dereferenced if the registry lists it as a live model.
#[no_mangle]
pub unsafe extern "C" fn engine_model_free(model: *mut EngineModel) -> EngineStatus {
    guard(|| {
        if model.is_null() {
            return Ok(());
        }
        handles::unregister(model as usize, Kind::Model)?;
        // SAFETY: the registry listed `model` as a live model (a leaked Box<EngineModel>); removing it succeeded,
        // which happens once per registration, so this is its only release.
        drop(unsafe { Box::from_raw(model) });
        Ok(())
    })
}

/// Describe `model` into `*out_info`. Thread-safe.
///
/// # Safety
/// `out_info` is NULL or points to writable storage for an `engine_model_info`.
#[no_mangle]
pub unsafe extern "C" fn engine_model_get_info(
    model: *const EngineModel,
    out_info: *mut EngineModelInfo,
) -> EngineStatus {
    guard(|| {
        let m = model_ref(model)?;
        let e = &m.engine;
        let c = e.config();
        let backend: &'static CStr = match e.backend_name() {
            "cuda" => c"cuda",
            "cpu" => c"cpu",
            _ => c"unknown",
        };
        let info = EngineModelInfo {
            vocab_size: u32_sat(c.vocab_size),
            tokenizer_vocab_size: u32_sat(e.tokenizer().vocab_size()),
            max_context: u32_sat(e.max_context()),
            max_position_embeddings: u32_sat(c.max_position_embeddings),
            prefill_chunk: u32_sat(m.prefill_chunk),
            bos_token: c.bos_token_id,
            eos_token: c.eos_token_id,
            hidden_size: u32_sat(c.hidden_size),
            num_layers: u32_sat(c.num_hidden_layers),
            num_heads: u32_sat(c.num_attention_heads),
            num_kv_heads: u32_sat(c.num_key_value_heads),
            backend: backend.as_ptr(),
            // Owned by ModelShared, which the model handle keeps alive until engine_model_free.
            device: m.device.as_ptr(),
        };
        // SAFETY: the caller provides storage for an engine_model_info (NULL and misalignment are checked).
        unsafe { write_out(out_info, info, "out_info") }
    })
}

/// The memory plan of `model` for sessions of `max_context` positions (0 = the model's max_context) and prefill
/// chunks of `prefill_chunk` tokens (0 = the model's): what the CUDA backend allocates, region by region.
/// Computed, not measured; the CPU backend allocates differently. Thread-safe.
///
/// # Safety
/// `out_plan` is NULL or points to writable storage for an `engine_memory_plan`.
#[no_mangle]
pub unsafe extern "C" fn engine_model_memory_plan(
    model: *const EngineModel,
    max_context: u32,
    prefill_chunk: u32,
    out_plan: *mut EngineMemoryPlan,
) -> EngineStatus {
    guard(|| {
        let m = model_ref(model)?;
        check_out(out_plan, "out_plan")?;
        let limit = m.engine.config().max_position_embeddings;
        let ctx = if max_context == 0 { m.engine.max_context() } else { max_context as usize };
        if ctx > limit {
            return Err(CapiError::invalid(format!(
                "max_context must be in 1..={limit} (0 = the model's), got {max_context}"
            )));
        }
        let chunk = if prefill_chunk == 0 { m.prefill_chunk } else { prefill_chunk as usize };
        if chunk > ENGINE_MAX_PREFILL_CHUNK as usize {
            return Err(CapiError::invalid(format!(
                "prefill_chunk must be in 1..={ENGINE_MAX_PREFILL_CHUNK} (0 = the model's), got {prefill_chunk}"
            )));
        }
        let limits = PlanLimits::new(ctx, chunk);
        let p = plan(&m.engine.model().desc, limits);
        let r = |region| p.region_size(region) as u64;
        let out = EngineMemoryPlan {
            max_context: u32_sat(ctx),
            prefill_chunk: u32_sat(limits.prefill_chunk),
            weights_bytes: r(Region::Weights),
            kv_cache_bytes: r(Region::KvCache),
            activations_bytes: r(Region::Activations),
            workspace_bytes: r(Region::Workspace),
            total_bytes: p.total() as u64,
        };
        // SAFETY: checked above; the caller provides storage for an engine_memory_plan.
        unsafe { write_out(out_plan, out, "out_plan") }
    })
}

/// Tokenize the NUL-terminated UTF-8 `text`. With `add_bos`, the BOS token comes first when the tokenizer starts
/// sequences with one (always for tokenizer.model; as tokenizer_config.json says for tokenizer.json).
///
/// Writes the number of tokens to `*out_n_tokens` and, if `capacity` is large enough, the tokens to
/// `tokens[0..n]`. If `capacity` is too small, nothing is written to `tokens`, `*out_n_tokens` is the capacity
/// needed and the status is BUFFER_TOO_SMALL (pass `tokens` NULL and `capacity` 0 to ask for the size).
/// Thread-safe.
///
/// # Safety
/// `text` is NULL or NUL-terminated; `tokens` is NULL or has room for `capacity` tokens; `out_n_tokens` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_tokenize(
    model: *const EngineModel,
    text: *const c_char,
    add_bos: bool,
    tokens: *mut EngineToken,
    capacity: usize,
    out_n_tokens: *mut usize,
) -> EngineStatus {
    guard(|| {
        let m = model_ref(model)?;
        check_out(out_n_tokens, "out_n_tokens")?;
        // SAFETY: the caller passes NULL or a NUL-terminated string valid for the call.
        let text = unsafe { str_arg(text, "text") }?;
        // SAFETY: the caller guarantees `tokens` has room for `capacity` tokens (or capacity is 0).
        let buf = unsafe { slice_arg_mut(tokens, capacity, "tokens") }?;
        let ids = m.engine.tokenizer().encode(text, add_bos)?;
        // SAFETY: checked above; the caller provides a writable size_t.
        unsafe { write_out(out_n_tokens, ids.len(), "out_n_tokens") }?;
        if ids.len() > buf.len() {
            return Err(CapiError::new(
                EngineStatus::BufferTooSmall,
                format!("tokens: capacity {} is too small for {} tokens", buf.len(), ids.len()),
            ));
        }
        buf[..ids.len()].copy_from_slice(&ids);
        Ok(())
    })
}

/// Turn `tokens[0..n_tokens]` back into text. On success `*out_text` is a new NUL-terminated UTF-8 string to free
/// with `engine_string_free` (invalid byte sequences become U+FFFD), and `*out_len` (if not NULL) its length in
/// bytes without the NUL. Ids outside the tokenizer's vocabulary give INVALID_ARGUMENT. Thread-safe.
///
/// # Safety
/// `tokens` is NULL or holds `n_tokens` ids; `out_text` is NULL or writable; `out_len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn engine_detokenize(
    model: *const EngineModel,
    tokens: *const EngineToken,
    n_tokens: usize,
    out_text: *mut *mut c_char,
    out_len: *mut usize,
) -> EngineStatus {
    guard(|| {
        let m = model_ref(model)?;
        check_out(out_text, "out_text")?;
        if !out_len.is_null() {
            check_out(out_len, "out_len")?;
        }
        // SAFETY: the caller guarantees `tokens` holds `n_tokens` ids (or n_tokens is 0).
        let ids = unsafe { slice_arg(tokens, n_tokens, "tokens") }?;
        let tok = m.engine.tokenizer();
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= tok.vocab_size()) {
            return Err(CapiError::invalid(format!(
                "tokens[{i}] = {id} is outside the tokenizer's vocabulary (0..{})",
                tok.vocab_size()
            )));
        }
        let text = tok.decode(ids)?;
        let s = new_string(text.as_bytes());
        // SAFETY: checked above; the caller provides a writable pointer (and size_t when out_len is not NULL).
        unsafe {
            out_text.write(s);
            if !out_len.is_null() {
                out_len.write(text.len());
            }
        }
        Ok(())
    })
}

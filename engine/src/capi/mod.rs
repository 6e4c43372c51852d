//! The C ABI: what programs in C, Python (ctypes/cffi) or any language with an FFI call when they link the
//! `engine` cdylib or staticlib. The header `engine/include/engine.h` is generated from this module by cbindgen
//! (`engine/cbindgen.toml`); a test fails when it is stale (`ENGINE_BLESS=1` rewrites it).
//!
//! # Conventions
//!
//! * **Handles** are opaque pointers: `engine_model` (a loaded model: backend + tokenizer) and `engine_session`
//!   (one sequence with its own KV cache). Every handle the library returns is recorded in a registry and checked
//!   there before use, so a freed, foreign or wrongly typed handle gives `ENGINE_STATUS_INVALID_HANDLE` instead of
//!   undefined behaviour (an address freed and then reused by a new handle cannot be told apart).
//! * **Status codes**: every fallible call returns an `engine_status` with stable values; on failure
//!   `engine_last_error()` gives a message naming the argument, file or limit. Output parameters are written only
//!   on success unless a function says otherwise (a handle out-parameter is set to NULL on failure).
//! * **No panics cross the boundary**: each entry point runs under `catch_unwind`; a panic (a bug) returns
//!   `ENGINE_STATUS_INTERNAL` with the panic message.
//! * **Ownership**: the caller frees models with `engine_model_free`, sessions with `engine_session_free` and
//!   strings the library returns with `engine_string_free`. Strings the caller passes in are borrowed for the call
//!   only. Static strings (version, status strings, backend names) are never freed.
//! * **Threads**: a model may be used from any number of threads at once (its backend is behind a lock: forward
//!   passes of different sessions take turns, and a greedy `engine_generate` holds it for its whole loop). A
//!   session must be used by one thread at a time; concurrent or re-entrant use is detected and refused with
//!   `ENGINE_STATUS_SESSION_BUSY`. A generate callback that tries to run its own model gets
//!   `ENGINE_STATUS_MODEL_BUSY` instead of a deadlock. Sessions keep their model's
//!   resources alive, so models and sessions may be freed in any order.
//! * **Text** is NUL-terminated UTF-8 both ways; invalid UTF-8 input gives `ENGINE_STATUS_INVALID_UTF8`.

#![deny(unsafe_op_in_unsafe_fn)]

// In the order their items appear in the header.
pub mod status;

pub mod strings;

pub mod model;

pub mod session;

pub mod generate;

mod handles;
#[cfg(test)]
mod tests;

pub use generate::*;
pub use model::*;
pub use session::*;
pub use status::*;
pub use strings::*;

use status::{CResult, CapiError};

/// A token id.
pub type EngineToken = u32;

/// "No token": the token id passed to the generate callback with text that belongs to no single token (the held
/// back end of the stream), and `engine_generate_result.last_token` when nothing was generated.
pub const ENGINE_NO_TOKEN: EngineToken = u32::MAX;

/// Largest prefill chunk accepted (tokens per forward pass during prefill).
pub const ENGINE_MAX_PREFILL_CHUNK: u32 = 65536;

/// Borrow the caller's array `p[0..n]` (`what` names it in errors). `n == 0` gives an empty slice whatever `p` is.
///
/// # Safety
/// If `n > 0` and `p` is not NULL, `p` points to `n` initialized values valid and unmodified during the call.
pub(crate) unsafe fn slice_arg<'a, T>(p: *const T, n: usize, what: &str) -> CResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    check_array(p, n, what)?;
    // SAFETY: non-NULL and aligned (checked), `n` elements fit in isize (checked), and the caller guarantees `n`
    // initialized values valid for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Borrow the caller's writable array `p[0..n]`.
///
/// # Safety
/// If `n > 0` and `p` is not NULL, `p` points to `n` writable values not otherwise accessed during the call.
pub(crate) unsafe fn slice_arg_mut<'a, T>(p: *mut T, n: usize, what: &str) -> CResult<&'a mut [T]> {
    if n == 0 {
        return Ok(&mut []);
    }
    check_array(p, n, what)?;
    // SAFETY: as in `slice_arg`, and the caller guarantees exclusive access to the `n` elements for the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

fn check_array<T>(p: *const T, n: usize, what: &str) -> CResult<()> {
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    if !p.is_aligned() {
        return Err(CapiError::invalid(format!("{what} is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    if n.checked_mul(std::mem::size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(CapiError::invalid(format!("{what}: {n} elements is too large")));
    }
    Ok(())
}

/// Write `v` through the caller's out-parameter `p`.
///
/// # Safety
/// `p` is NULL or points to writable memory for one `T` (its old value is not dropped).
pub(crate) unsafe fn write_out<T>(p: *mut T, v: T, what: &str) -> CResult<()> {
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    if !p.is_aligned() {
        return Err(CapiError::invalid(format!("{what} is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    // SAFETY: non-NULL, aligned, and writable by the caller's contract; `write` does not read or drop the old
    // value, which may be uninitialized.
    unsafe { p.write(v) };
    Ok(())
}

/// Check that an out-parameter is usable before doing work whose result would be lost.
pub(crate) fn check_out<T>(p: *mut T, what: &str) -> CResult<()> {
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    if !p.is_aligned() {
        return Err(CapiError::invalid(format!("{what} is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    Ok(())
}

/// Saturating conversion for sizes reported through `uint32_t` fields.
pub(crate) fn u32_sat(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

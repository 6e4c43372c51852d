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

// cbindgen reads the modules in this order, which sets the order of the header. This file only declares and
// re-exports: the modules share each other's items, never this file's, so that none of them refers back to it.
pub mod token;

pub mod status;

pub mod strings;

pub mod model;

pub mod session;

pub mod generate;

mod args;
mod handles;
#[cfg(test)]
mod tests;

pub use generate::*;
pub use model::*;
pub use session::*;
pub use status::*;
pub use strings::*;
pub use token::*;

//! A small, fast inference engine for Baichuan-7B and LLaMA-family checkpoints: GPTQ int4 (and int8, fp16, bf16).
//!
//! The path of a token, one module per step:
//! - [`engine_format`] (no_std crate): config + safetensors headers → a validated [`ModelDesc`], and the memory
//!   [`plan`];
//! - [`model`]: memory-maps the files and hands out zero-copy typed views of the checked tensors;
//! - `backend` (crate-private): one interface, two implementations — `cpu` (the reference) and `cuda`;
//! - [`engine`]: a model loaded on a backend with its tokenizer; [`session`]: a conversation's KV state and the
//!   generation loops; [`sampling`]: picking tokens; [`chat`]: a conversation fed turn by turn on one session;
//! - `capi` and the `engine-cli` binary: the two faces over engine + session + `engine_tools`.
//!
//! [`measure`] is what benchmarks ask of a backend; [`synth`] writes random checkpoints in the exact published
//! layout, for tests and benchmarks.

// The backend's constants are not part of the C ABI; without this, cbindgen run on the whole crate (as maturin runs
// it for the Python package's cffi declarations) would put them in the header.
/// cbindgen:ignore
mod backend;
pub mod capi;
pub mod chat;
pub mod engine;
pub mod error;
pub mod measure;
pub mod model;
pub mod sampling;
pub mod session;
pub mod synth;
#[cfg(test)]
mod testing;
pub mod tiny;

pub use backend::cuda::{runs as cuda_runs, Tuning, WgmmaTile, TUNING_KEYS};
pub use backend::BackendKind;
pub use engine_format::{self as format, plan, ModelConfig, ModelDesc};
pub use error::{Error, Result};
pub use model::Model;

//! A small, fast inference engine for Baichuan-7B and LLaMA-family GPTQ int4 checkpoints.
//!
//! The path of a token, one module per step:
//! - [`engine_format`] (no_std crate): config + safetensors headers → a validated [`ModelDesc`], and the memory plan;
//! - [`model`]: memory-maps the files and hands out zero-copy typed views of the checked tensors;
//! - [`backend`]: one interface, two implementations — [`backend::cpu`] (the reference) and `backend::cuda`;
//! - [`session`]: a conversation's KV state, sampling, stop rules, the streaming loop;
//! - `capi` and the `engine-cli` binary: the two faces over session + `engine_tools`.
//!
//! [`synth`] writes random checkpoints in the exact published layout, for tests and benchmarks.

pub mod backend;
pub mod capi;
pub mod engine;
pub mod error;
pub mod model;
pub mod sampling;
pub mod session;
pub mod synth;
pub mod tiny;

pub use engine_format::{self as format, ModelConfig, ModelDesc};
pub use error::{Error, Result};
pub use model::Model;

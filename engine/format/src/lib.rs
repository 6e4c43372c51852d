//! The checkpoint format layer of the engine.
//!
//! Everything here works on bytes it is handed — `config.json`, `quantize_config.json`, the raw bytes of each
//! safetensors shard — and turns them into a validated [`ModelDesc`]: every dimension, the quantization, and for
//! every tensor the shard, byte range, dtype and shape that the rest of the engine may trust without re-checking.
//! It is `no_std` + `alloc` so that it can be fuzzed alone and so that nothing in it can touch a file or a device.
//!
//! Modules:
//! - [`config`]: `config.json` and `quantize_config.json` → [`ModelConfig`], [`QuantConfig`].
//! - [`gptq`]: the AutoGPTQ int4 layout (nibble order, zero-minus-one, group index) as plain functions.
//! - [`checkpoint`]: safetensors headers + config → [`ModelDesc`], with every tensor checked.
//! - [`write`]: safetensors header encoding, shared by the synthetic checkpoint writers.
//! - `testutil` (feature `test-util`): tiny valid checkpoints in memory, for tests and fuzz targets.
//! - [`plan`]: [`ModelDesc`] + run limits → the static device memory plan.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod checkpoint;
pub mod config;
pub mod desc;
pub mod error;
pub mod gptq;
pub mod plan;
#[cfg(feature = "test-util")]
pub mod testutil;
pub mod write;

pub use checkpoint::{check_index, describe, parse_index, read_shard, Shard, ShardIndex, ShardTensor};
pub use config::{parse_model_config, parse_quant_config, Arch, ModelConfig, QuantConfig, TorchDtype};
pub use desc::{DType, LayerDesc, Linear, ModelDesc, Projection, TensorRef};
pub use error::{FormatError, FormatErrorKind};
pub use plan::{Buf, KvLayout, MemoryPlan, PlanBuffer, PlanLimits, Region};

//! A checkpoint directory, memory-mapped and validated: the weights every backend reads.
//!
//! `Model::open` reads `config.json` and `quantize_config.json` (absent for an fp16 checkpoint), finds the
//! safetensors shards (`model_file_base_name`, a `*.safetensors.index.json`, or the single `*.safetensors`), maps
//! them, and hands the bytes to [`engine_format::describe`]. After that, every [`TensorRef`] in the description is
//! known to lie inside its mapped shard, aligned to its element size, so the typed views below cannot fail.

use std::path::{Path, PathBuf};

use engine_format::{ModelDesc, TensorRef};
use half::f16;
use memmap2::Mmap;

use crate::error::Result;

/// A validated, memory-mapped checkpoint.
pub struct Model {
    pub dir: PathBuf,
    pub desc: ModelDesc,
    maps: Vec<Mmap>,
}

impl Model {
    /// Open and validate the checkpoint in `dir`.
    pub fn open(dir: &Path) -> Result<Model> {
        let _ = dir;
        todo!("Model::open")
    }

    /// The raw bytes of a tensor of this model.
    pub fn bytes(&self, t: &TensorRef) -> &[u8] {
        &self.maps[t.shard][t.range()]
    }

    /// An F16 tensor as a slice. Panics only if `t` is not an F16 tensor of this model (a programming error).
    pub fn f16(&self, t: &TensorRef) -> &[f16] {
        assert_eq!(t.dtype, engine_format::DType::F16, "{} is not F16", t.name);
        bytemuck::cast_slice(self.bytes(t))
    }

    /// An I32 tensor as unsigned words (GPTQ packs nibbles, so the sign bit is data).
    pub fn u32(&self, t: &TensorRef) -> &[u32] {
        assert_eq!(t.dtype, engine_format::DType::I32, "{} is not I32", t.name);
        bytemuck::cast_slice(self.bytes(t))
    }
}

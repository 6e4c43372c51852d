//! A checkpoint directory, memory-mapped and validated: the weights every backend reads.
//!
//! `Model::open` reads `config.json` and `quantize_config.json` (absent for an unquantized checkpoint), finds the
//! safetensors shards (`model_file_base_name`, a `*.safetensors.index.json`, or the single `*.safetensors`), maps
//! them, and hands the bytes to [`engine_format::describe`]. After that, every [`TensorRef`] in the description is
//! known to lie inside its mapped shard, aligned to its element size, so the typed views below cannot fail.
//!
//! All parsing and checking lives in the no_std `engine_format` crate; this module only deals with the directory:
//! which files exist, reading and mapping them, and telling the user which file is missing and what was expected.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use engine_format::{
    check_index, describe, parse_index, parse_model_config, parse_quant_config, DType, FormatError, FormatErrorKind,
    ModelDesc, QuantConfig, Shard, ShardIndex, TensorRef,
};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use memmap2::Mmap;

use crate::error::{Error, Result};

/// A validated, memory-mapped checkpoint.
pub struct Model {
    pub dir: PathBuf,
    pub desc: ModelDesc,
    maps: Vec<Mmap>,
}

impl Model {
    /// Open and validate the checkpoint in `dir`.
    pub fn open(dir: &Path) -> Result<Model> {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(missing(
                    dir,
                    "not a directory: expected a model directory with config.json, quantize_config.json (GPTQ) and \
                     *.safetensors",
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(missing(
                    dir,
                    "no such directory: expected a model directory with config.json, quantize_config.json (GPTQ) \
                     and *.safetensors",
                ))
            }
            Err(e) => return Err(Error::io(dir, e)),
        }

        let config_bytes = read_required(
            &dir.join("config.json"),
            "not found: expected the model's config.json (Hugging Face format: architectures, hidden_size, ...)",
        )?;
        let config = parse_model_config("config.json", &config_bytes)?;
        let quant = read_quant_config(dir, &config_bytes)?;

        let files = find_shards(dir, quant.as_ref())?;
        let maps = files.names.iter().map(|name| map_file(&dir.join(name), name)).collect::<Result<Vec<_>>>()?;
        let shards: Vec<Shard<'_>> =
            files.names.iter().zip(&maps).map(|(name, map)| Shard { name, bytes: &map[..] }).collect();
        if let Some((index_name, index)) = &files.index {
            check_index(index_name, index, &shards)?;
        }
        let mut desc = describe(&config, quant.as_ref(), &shards)?;
        desc.warnings.extend(files.warnings);
        Ok(Model { dir: dir.to_path_buf(), desc, maps })
    }

    /// The raw bytes of a tensor of this model.
    pub fn bytes(&self, t: &TensorRef) -> &[u8] {
        &self.maps[t.shard][t.range()]
    }

    /// An F16 tensor as a slice. Panics only if `t` is not an F16 tensor of this model (a programming error).
    pub fn f16(&self, t: &TensorRef) -> &[f16] {
        assert_eq!(t.dtype, DType::F16, "{} is not F16", t.name);
        bytemuck::cast_slice(self.bytes(t))
    }

    /// A float tensor (F16 or BF16) as a view that converts to f32. Panics only if `t` is not a float tensor of this
    /// model (a programming error).
    pub fn floats(&self, t: &TensorRef) -> Floats<'_> {
        match t.dtype {
            DType::F16 => Floats::F16(bytemuck::cast_slice(self.bytes(t))),
            DType::BF16 => Floats::Bf16(bytemuck::cast_slice(self.bytes(t))),
            DType::I32 => panic!("{} is I32, not a float tensor", t.name),
        }
    }

    /// An I32 tensor as unsigned words (GPTQ packs nibbles, so the sign bit is data).
    pub fn u32(&self, t: &TensorRef) -> &[u32] {
        assert_eq!(t.dtype, DType::I32, "{} is not I32", t.name);
        bytemuck::cast_slice(self.bytes(t))
    }

    /// Bytes of all the weights the model uses (each tensor once; a tied `lm_head` is not counted twice). Extra
    /// tensors the checkpoint holds but the model ignores are not counted.
    pub fn total_weight_bytes(&self) -> usize {
        self.desc.tensors().iter().map(|t| t.len).sum()
    }

    /// The paths of the mapped shard files, in `TensorRef::shard` order.
    pub fn shard_paths(&self) -> Vec<PathBuf> {
        self.desc.shards.iter().map(|s| self.dir.join(s)).collect()
    }
}

/// A float tensor as stored: fp16 or bfloat16. Both widen to f32 exactly, which is all the CPU backend reads.
#[derive(Clone, Copy)]
pub enum Floats<'a> {
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl Floats<'_> {
    pub fn len(&self) -> usize {
        match self {
            Floats::F16(v) => v.len(),
            Floats::Bf16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements `start..start + out.len()` widened into `out`.
    pub fn to_f32(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Floats::F16(v) => v[start..end].convert_to_f32_slice(out),
            Floats::Bf16(v) => v[start..end].convert_to_f32_slice(out),
        }
    }
    /// Elements `start..start + len` as a new f32 vector.
    pub fn to_f32_vec(&self, start: usize, len: usize) -> Vec<f32> {
        let mut out = vec![0f32; len];
        self.to_f32(start, &mut out);
        out
    }
}

fn missing(path: &Path, detail: impl Into<String>) -> Error {
    FormatError::new(FormatErrorKind::MissingFile, path.display().to_string(), detail).into()
}

/// Read a file that must exist; a missing one is `MissingFile` with `what_expected` for the user.
fn read_required(path: &Path, what_expected: &str) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(missing(path, what_expected)),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `quantize_config.json` if present; else the `quantization_config` object newer `config.json` files embed; else
/// `None` (an unquantized checkpoint).
fn read_quant_config(dir: &Path, config_bytes: &[u8]) -> Result<Option<QuantConfig>> {
    let path = dir.join("quantize_config.json");
    match std::fs::read(&path) {
        Ok(b) => return Ok(Some(parse_quant_config("quantize_config.json", &b)?)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    // config.json already parsed once, so this cannot fail; a failure just means "no embedded quantization".
    let embedded = serde_json::from_slice::<serde_json::Value>(config_bytes)
        .ok()
        .and_then(|v| v.get("quantization_config").filter(|q| !q.is_null()).cloned());
    match embedded {
        Some(q) => {
            let bytes = serde_json::to_vec(&q).unwrap_or_default();
            Ok(Some(parse_quant_config("config.json: quantization_config", &bytes)?))
        }
        None => Ok(None),
    }
}

/// Which files hold the weights.
struct ShardFiles {
    /// File names relative to the model directory, in the order `TensorRef::shard` numbers them.
    names: Vec<String>,
    /// The index they came from, to be checked against the shards once they are mapped.
    index: Option<(String, ShardIndex)>,
    /// Things about the choice of files the user should know.
    warnings: Vec<String>,
}

/// Find the shards: `{model_file_base_name}.safetensors` when it exists, else a `*.safetensors.index.json`, else the
/// single `*.safetensors` file. Several candidates without a rule to choose between them are an error: guessing
/// could load the wrong weights.
fn find_shards(dir: &Path, quant: Option<&QuantConfig>) -> Result<ShardFiles> {
    let mut listing = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        // Names that are not UTF-8 cannot be any of the names we look for.
        if let Ok(name) = entry.file_name().into_string() {
            listing.push(name);
        }
    }
    listing.sort();
    let mut warnings = Vec::new();

    let expected = quant.and_then(|q| q.model_file_base_name.as_ref()).map(|b| format!("{b}.safetensors"));
    if let Some(want) = &expected {
        if listing.contains(want) {
            return Ok(ShardFiles { names: vec![want.clone()], index: None, warnings });
        }
    }

    let indexes: Vec<&String> = listing.iter().filter(|n| n.ends_with(".safetensors.index.json")).collect();
    let index_name = match indexes.as_slice() {
        [] => None,
        [one] => Some((*one).clone()),
        many => {
            // Prefer the conventional names; anything else is ambiguous.
            let preferred = expected.as_ref().map(|e| format!("{e}.index.json"));
            let pick = many
                .iter()
                .find(|n| Some(n.as_str()) == preferred.as_deref())
                .or_else(|| many.iter().find(|n| n.as_str() == "model.safetensors.index.json"));
            match pick {
                Some(p) => Some((*p).clone()),
                None => {
                    return Err(FormatError::new(
                        FormatErrorKind::Inconsistent,
                        dir.display().to_string(),
                        format!(
                            "several shard indexes ({}): expected one *.safetensors.index.json",
                            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                    .into())
                }
            }
        }
    };
    if let Some(index_name) = index_name {
        let path = dir.join(&index_name);
        let bytes = read_required(&path, "not found")?;
        let index = parse_index(&index_name, &bytes)?;
        for file in index.files() {
            if !listing.iter().any(|n| n == file) {
                let tensor = index.weight_map.iter().find(|(_, f)| f.as_str() == file).map_or("", |(t, _)| t.as_str());
                return Err(missing(
                    &dir.join(file),
                    format!("not found: {index_name} says it holds `{tensor}` and other tensors"),
                ));
            }
        }
        // `{base}.safetensors.index.json` is how a sharded checkpoint with that base name is stored: no surprise.
        if let Some(want) = expected.as_ref().filter(|w| format!("{w}.index.json") != index_name) {
            warnings.push(format!(
                "quantize_config.json names {want}, which is absent; loading the shards listed in {index_name}"
            ));
        }
        let names = index.files().into_iter().map(String::from).collect();
        return Ok(ShardFiles { names, index: Some((index_name, index)), warnings });
    }

    let singles: Vec<&String> = listing.iter().filter(|n| n.ends_with(".safetensors")).collect();
    match singles.as_slice() {
        [one] => {
            if let Some(want) = &expected {
                warnings.push(format!("quantize_config.json names {want}, which is absent; loading {one}"));
            }
            Ok(ShardFiles { names: vec![(*one).clone()], index: None, warnings })
        }
        [] => {
            let want = match &expected {
                Some(w) => format!("{w} (model_file_base_name in quantize_config.json)"),
                None => "model.safetensors".to_string(),
            };
            let mut detail =
                format!("no *.safetensors file in {}: expected {want} or a *.safetensors.index.json", dir.display());
            if listing.iter().any(|n| n.ends_with(".bin") || n.ends_with(".pt")) {
                detail.push_str(
                    " (PyTorch pickle checkpoints such as pytorch_model.bin are not supported: convert them to \
                     safetensors)",
                );
            }
            Err(missing(&dir.join(expected.as_deref().unwrap_or("model.safetensors")), detail))
        }
        many => Err(missing(
            &dir.join("model.safetensors.index.json"),
            format!(
                "several *.safetensors files ({}) and no *.safetensors.index.json to say which tensors each holds: \
                 expected one file{} or an index",
                many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                expected.as_ref().map(|e| format!(" named {e}")).unwrap_or_default()
            ),
        )),
    }
}

/// Map a shard read-only. Empty files are not mapped (a zero-length mapping fails on some systems) but reported as
/// the truncated safetensors files they are.
fn map_file(path: &Path, name: &str) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(FormatError::new(
            FormatErrorKind::Truncated,
            name,
            "the file is empty: expected a safetensors file (8-byte header length, JSON header, tensor data)",
        )
        .into());
    }
    // SAFETY: the file is opened read-only and the engine never writes to it, so no `&mut` alias exists in this
    // process. A mapping is only sound while nothing else truncates or rewrites the file; we assume, as every
    // mmap-based loader does, that model files are not modified while a model is open (doing so could fault with
    // SIGBUS or change bytes that were already validated).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(map)
}

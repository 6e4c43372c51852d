//! The built-in tiny model: what every command uses when no `--model` is given, so that the engine can be tried
//! on any machine. It is synthesized once (random weights, the real layout) into the user's cache directory.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::synth::{write_checkpoint, SynthSpec};

/// Bump when the tiny model's spec changes, so that an old cached copy is not reused.
const VERSION: u32 = 1;

/// `spec` with the repository's test tokenizer, padded to the spec's vocabulary size.
pub fn with_test_tokenizer(mut spec: SynthSpec) -> Result<SynthSpec> {
    spec.tokenizer_model = engine_tools::padded_tokenizer_model(engine_tools::test_tokenizer_model(), spec.vocab)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(spec)
}

/// `spec` with the repository's `tokenizer.json` test tokenizer (byte-level BPE), padded to the spec's vocabulary
/// size, instead of a `tokenizer.model`.
pub fn with_test_tokenizer_json(mut spec: SynthSpec) -> Result<SynthSpec> {
    spec.tokenizer_json = Some(
        engine_tools::padded_tokenizer_json(engine_tools::test_tokenizer_json(), spec.vocab)
            .map_err(|e| Error::Tokenizer(e.to_string()))?,
    );
    Ok(spec)
}

/// Where the built-in model lives: `$ENGINE_TINY_MODEL_DIR`, else `$XDG_CACHE_HOME/engine/tiny-vN`, else
/// `~/.cache/engine/tiny-vN`, else a folder under the system temp directory.
pub fn builtin_tiny_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ENGINE_TINY_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("engine").join(format!("tiny-v{VERSION}"))
}

/// The built-in tiny model's directory, written first if it is not there yet.
pub fn builtin_tiny_model() -> Result<PathBuf> {
    let dir = builtin_tiny_model_dir();
    if dir.join("config.json").is_file() && dir.join("tokenizer.model").is_file() {
        return Ok(dir);
    }
    // Write next to the final place and rename, so that an interrupted run never leaves half a model behind.
    let parent = dir.parent().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = parent.join(format!(".tiny-v{VERSION}-{}", std::process::id()));
    write_checkpoint(&tmp, &with_test_tokenizer(SynthSpec::tiny())?)?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process won the race: use its copy.
        Err(_) if dir.join("config.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(Error::io(&dir, e)),
    }
}

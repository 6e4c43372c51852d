//! The engine's error type. Every variant says what went wrong and names the file, tensor or argument concerned.

use std::path::PathBuf;

use engine_format::FormatError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint is malformed or unsupported (the message names file and tensor).
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A file could not be read or mapped.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A caller passed a value outside what is allowed; the message names the argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// More positions than the KV cache or the model allows.
    #[error("context overflow: {needed} positions needed, but the limit is {limit} ({what})")]
    ContextOverflow { needed: usize, limit: usize, what: &'static str },
    /// Tokenization or detokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The requested backend cannot run here (no GPU, no driver, ...).
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// A device call failed.
    #[error("device error: {0}")]
    Device(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

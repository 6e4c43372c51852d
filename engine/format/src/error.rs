//! One error type for everything the format layer rejects. Each error names the file, the tensor (when there is
//! one) and what was expected, so that a user reading it knows which file is broken and how.

use alloc::string::String;
use core::fmt;

/// What class of problem was found; stable, so that tests and the C ABI can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatErrorKind {
    /// A file the checkpoint needs is absent (reported by the std loader, which sees the directory).
    MissingFile,
    /// Not valid UTF-8 or not valid JSON.
    InvalidJson,
    /// A required JSON field is absent.
    MissingField,
    /// A JSON field has the wrong type, or a value that is zero, negative, or inconsistent with another.
    InvalidValue,
    /// Valid, but something this engine does not run (bits ≠ 4, another architecture, ...).
    Unsupported,
    /// A safetensors file shorter than its own header says, or empty.
    Truncated,
    /// The 8-byte header length is absurd: larger than the format allows (100 MB), as when the file is not a
    /// safetensors file at all. A length that merely runs past the end of the file is `Truncated`.
    HeaderTooLarge,
    /// The header is not a valid safetensors header (bad UTF-8/JSON, an unknown dtype, sizes that overflow).
    InvalidHeader,
    /// Tensor byte ranges overlap, leave gaps, or lie outside the file.
    InvalidOffsets,
    /// An expected tensor is absent.
    MissingTensor,
    /// A tensor has another dtype than the layout requires.
    WrongDtype,
    /// A tensor has another shape than the config implies.
    WrongShape,
    /// A tensor's data does not start at a multiple of its element size.
    Misaligned,
    /// A value inside a tensor (a `g_idx` entry) is out of range.
    ValueOutOfRange,
    /// The same tensor appears twice across shards, or the shard index disagrees with the shards.
    Inconsistent,
}

/// An error found while validating a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub kind: FormatErrorKind,
    /// The file the problem is in (`config.json`, a shard name, ...).
    pub file: String,
    /// The tensor or JSON field concerned, when there is one.
    pub subject: Option<String>,
    /// What was found and what was expected, in words.
    pub detail: String,
}

impl FormatError {
    pub fn new(kind: FormatErrorKind, file: impl Into<String>, detail: impl Into<String>) -> Self {
        FormatError { kind, file: file.into(), subject: None, detail: detail.into() }
    }
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Some(s) => write!(f, "{}: `{}`: {}", self.file, s, self.detail),
            None => write!(f, "{}: {}", self.file, self.detail),
        }
    }
}

impl core::error::Error for FormatError {}

//! [`TokenizerError`]: everything that can go wrong loading a tokenizer (of either kind) or converting text.
//! A module of its own so that both tokenizer kinds and the front that chooses between them can use it without
//! referring to each other.

use std::path::PathBuf;

/// Everything that can go wrong loading a tokenizer or converting text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The model file could not be read.
    #[error("cannot read {}: {source} (pass the checkpoint directory, or the path of its tokenizer.model or tokenizer.json)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a SentencePiece model the library accepts.
    #[error(
        "{origin} is not a SentencePiece model ({reason}); use the tokenizer.model that ships with the checkpoint"
    )]
    NotSentencePiece { origin: String, reason: String },
    /// The bytes are not a `tokenizer.json` the `tokenizers` library accepts.
    #[error(
        "{origin} is not a Hugging Face tokenizer.json ({reason}); use the tokenizer.json that ships with the checkpoint"
    )]
    NotTokenizerJson { origin: String, reason: String },
    /// `tokenizer_config.json` is malformed or names a token the vocabulary lacks.
    #[error("{origin}: {reason}")]
    BadTokenizerConfig { origin: String, reason: String },
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} pieces (ids 0..={})", vocab_size.saturating_sub(1))]
    IdOutOfRange { id: u32, vocab_size: usize },
    /// A BOS/EOS override outside the vocabulary.
    #[error("{which} id {id} is out of range for a vocabulary of {vocab_size} pieces; check {which}_token_id in config.json against the tokenizer")]
    SpecialIdOutOfRange { which: &'static str, id: u32, vocab_size: usize },
    /// The library failed to encode (it does not on valid models; kept so a
    /// library failure is an error rather than a panic).
    #[error("{library} failed to encode the text: {reason}")]
    Encode { library: &'static str, reason: String },
    /// The library failed to decode in-range ids.
    #[error("{library} failed to decode the ids: {reason}")]
    Decode { library: &'static str, reason: String },
    /// `padded_tokenizer_model` / `padded_tokenizer_json` was asked to shrink a model.
    #[error("cannot pad the tokenizer to {requested} pieces: the base model already has {base}; use a vocab size of at least {base}")]
    PadTooSmall { requested: usize, base: usize },
    /// `padded_tokenizer_model` / `padded_tokenizer_json` was asked for an unreasonable size.
    #[error("cannot pad the tokenizer to {requested} pieces: the limit is {max}")]
    PadTooLarge { requested: usize, max: usize },
}

//! Text around the engine: tokenization, streaming detokenization, prompts.
//! Knows nothing of the model, and depends on no engine crate.
//!
//! * [`tokenizer`]: [`Tokenizer`], a checkpoint's tokenizer of either kind, with range-checked ids and BOS/EOS
//!   conventions: a SentencePiece `tokenizer.model` (`spm`, Baichuan's conventions) or a Hugging Face
//!   `tokenizer.json` (`hf`, `tokenizer_config.json`'s); `error` holds the error type both share.
//! * [`stream`]: [`StreamDecoder`], text out one token at a time without
//!   splitting characters, equal to decoding the whole sequence.
//! * [`prompt`]: prompt sources (argument, file, stdin), templates (raw,
//!   few-shot completion, chat) and `unescape` for CLI arguments.
//! * [`synth`]: the committed test tokenizers and padding a tokenizer to any
//!   vocabulary size for synthetic checkpoints.

mod error;
mod hf;
pub mod prompt;
mod proto;
mod spm;
pub mod stream;
pub mod synth;
pub mod tokenizer;

pub use prompt::{unescape, PromptError, PromptSource, Template};
pub use stream::StreamDecoder;
pub use synth::{padded_tokenizer_json, padded_tokenizer_model, test_tokenizer_json, test_tokenizer_model};
pub use tokenizer::{PieceKind, Tokenizer, TokenizerError, TokenizerKind};

//! Text around the engine: tokenization, streaming detokenization, prompts.
//! Knows nothing of the model, and depends on no engine crate.
//!
//! * [`tokenizer`]: [`Tokenizer`], SentencePiece with Baichuan's BOS/EOS
//!   conventions and range-checked ids.
//! * [`stream`]: [`StreamDecoder`], text out one token at a time without
//!   splitting characters, equal to decoding the whole sequence.
//! * [`prompt`]: prompt sources (argument, file, stdin), templates (raw,
//!   few-shot completion, chat) and `unescape` for CLI arguments.
//! * [`synth`]: the committed test tokenizer and padding a tokenizer to any
//!   vocabulary size for synthetic checkpoints.

pub mod prompt;
mod proto;
pub mod stream;
pub mod synth;
pub mod tokenizer;

pub use prompt::{unescape, PromptError, PromptSource, Template};
pub use stream::StreamDecoder;
pub use synth::{padded_tokenizer_model, test_tokenizer_model};
pub use tokenizer::{PieceKind, Tokenizer, TokenizerError};

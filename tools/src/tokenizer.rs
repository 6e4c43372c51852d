//! SentencePiece tokenization with Baichuan's conventions.
//!
//! [`Tokenizer`] wraps `sentencepiece::SentencePieceProcessor` (the reference
//! C++ library, so ids match Python `sentencepiece` exactly) and adds what the
//! crate lacks: the piece table (`id_to_piece`, piece kinds), BOS/EOS handling
//! with overrides from a checkpoint's `config.json`, range-checked decoding,
//! and error messages that say which file is wrong and what to do about it.

use std::fmt;
use std::path::{Path, PathBuf};

use sentencepiece::SentencePieceProcessor;

// Re-exported here, where users meet it (`Tokenizer::piece_kind`); it is defined with the file format it decodes.
pub use crate::proto::PieceKind;
use crate::proto::{self, PieceEntry};

/// Baichuan-7B's BOS id, used when the model file does not name a BOS piece.
pub const BAICHUAN_BOS_ID: u32 = 1;
/// Baichuan-7B's EOS id, used when the model file does not name an EOS piece.
pub const BAICHUAN_EOS_ID: u32 = 2;

/// Everything that can go wrong loading a tokenizer or converting text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The model file could not be read.
    #[error("cannot read {}: {source} (pass the checkpoint directory or the path of its tokenizer.model)", path.display())]
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
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} pieces (ids 0..={})", vocab_size.saturating_sub(1))]
    IdOutOfRange { id: u32, vocab_size: usize },
    /// A BOS/EOS override outside the vocabulary.
    #[error("{which} id {id} is out of range for a vocabulary of {vocab_size} pieces; check {which}_token_id in config.json against tokenizer.model")]
    SpecialIdOutOfRange { which: &'static str, id: u32, vocab_size: usize },
    /// The library failed to encode (it does not on valid models; kept so a
    /// library failure is an error rather than a panic).
    #[error("sentencepiece failed to encode the text: {0}")]
    Encode(String),
    /// The library failed to decode in-range ids.
    #[error("sentencepiece failed to decode the ids: {0}")]
    Decode(String),
    /// `padded_tokenizer_model` was asked to shrink a model.
    #[error("cannot pad the tokenizer to {requested} pieces: the base model already has {base}; use a vocab size of at least {base}")]
    PadTooSmall { requested: usize, base: usize },
    /// `padded_tokenizer_model` was asked for an unreasonable size.
    #[error("cannot pad the tokenizer to {requested} pieces: the limit is {max}")]
    PadTooLarge { requested: usize, max: usize },
}

/// A loaded SentencePiece model plus Baichuan's BOS/EOS conventions.
///
/// Thread-safe (`Send + Sync`): the underlying processor is immutable after load.
pub struct Tokenizer {
    spp: SentencePieceProcessor,
    pieces: Vec<PieceEntry>,
    bos_id: u32,
    eos_id: u32,
    unk_id: u32,
    /// See the `stream` module: a piece whose decoded text is non-empty, used
    /// as a stand-in for the history when decoding a short window. `None` disables
    /// windowing (every push re-decodes the whole sequence).
    pub(crate) anchor: Option<Anchor>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Anchor {
    pub id: u32,
    /// Byte length of `decode([id])`.
    pub text_len: usize,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("unk_id", &self.unk_id)
            .finish_non_exhaustive()
    }
}

/// How a model file is named in error messages: "tokenizer.model in DIR" for
/// the usual layout, else the path as given.
fn describe_path(path: &Path) -> String {
    match (path.file_name(), path.parent()) {
        (Some(name), Some(dir)) if !dir.as_os_str().is_empty() => {
            format!("{} in {}", name.to_string_lossy(), dir.display())
        }
        _ => path.display().to_string(),
    }
}

/// A more useful reason than "invalid protobuf" for files that are commonly
/// mistaken for a tokenizer.model.
fn diagnose(bytes: &[u8], parse_error: &str) -> String {
    if bytes.is_empty() {
        "the file is empty".to_owned()
    } else if bytes.starts_with(b"version https://git-lfs") {
        "it is a Git LFS pointer, not the file itself; run `git lfs pull` in the checkout".to_owned()
    } else if bytes.trim_ascii_start().starts_with(b"{") {
        "it looks like JSON; SentencePiece models are binary protobuf files (tokenizer.json is a different format)"
            .to_owned()
    } else {
        parse_error.to_owned()
    }
}

impl Tokenizer {
    /// Loads `path`, or `path/tokenizer.model` when `path` is a directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let path = path.as_ref();
        let file = if path.is_dir() { path.join("tokenizer.model") } else { path.to_path_buf() };
        let bytes = std::fs::read(&file).map_err(|source| TokenizerError::Read { path: file.clone(), source })?;
        Self::load(&bytes, describe_path(&file))
    }

    /// Loads a serialized model (the contents of a `tokenizer.model`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer, TokenizerError> {
        Self::load(bytes, "the tokenizer model (in-memory bytes)".to_owned())
    }

    fn load(bytes: &[u8], origin: String) -> Result<Tokenizer, TokenizerError> {
        let not_sp = |reason: String| TokenizerError::NotSentencePiece { origin: origin.clone(), reason };
        // Parse first: it rejects what would make the library (or the crate's
        // UTF-8 `expect`s) misbehave, and gives a clearer reason than the
        // library's bare status code.
        let info = proto::parse_model(bytes).map_err(|e| not_sp(diagnose(bytes, &e)))?;
        let spp = SentencePieceProcessor::from_serialized_proto(bytes)
            .map_err(|e| not_sp(format!("the sentencepiece library rejected it: {e}")))?;
        if spp.len() != info.pieces.len() {
            return Err(not_sp(format!(
                "the library sees {} pieces but the file lists {}",
                spp.len(),
                info.pieces.len()
            )));
        }
        let vocab = info.pieces.len();
        let bos_id = spp.bos_id().unwrap_or(BAICHUAN_BOS_ID);
        let eos_id = spp.eos_id().unwrap_or(BAICHUAN_EOS_ID);
        for (which, id) in [("bos", bos_id), ("eos", eos_id)] {
            if id as usize >= vocab {
                return Err(not_sp(format!(
                    "it has no {which} piece and Baichuan's default id {id} is outside its {vocab} pieces"
                )));
            }
        }
        let mut tokenizer = Tokenizer { unk_id: spp.unk_id(), spp, pieces: info.pieces, bos_id, eos_id, anchor: None };
        if !info.has_denormalizer {
            tokenizer.anchor = tokenizer.find_anchor();
        }
        Ok(tokenizer)
    }

    /// A piece that decodes to non-empty text on its own, preferring text
    /// pieces; an ASCII byte piece works too (it is a complete character, so it
    /// cannot join a following byte sequence).
    fn find_anchor(&self) -> Option<Anchor> {
        let candidates = self
            .pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.kind, PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused));
        let bytes = self
            .pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.kind, PieceKind::Byte(b) if (0x20..0x7f).contains(&b)));
        // Bounded search: the first text piece nearly always qualifies.
        candidates.take(64).chain(bytes.take(4)).find_map(|(id, _)| {
            let id = id as u32;
            let text = self.spp.decode_piece_ids(&[id]).ok()?;
            (!text.is_empty() && !text.ends_with('\u{FFFD}')).then_some(Anchor { id, text_len: text.len() })
        })
    }

    /// Overrides the BOS id (e.g. with `bos_token_id` from `config.json`).
    pub fn with_bos_id(mut self, id: u32) -> Result<Tokenizer, TokenizerError> {
        self.bos_id = self.check_special("bos", id)?;
        Ok(self)
    }

    /// Overrides the EOS id (e.g. with `eos_token_id` from `config.json`).
    pub fn with_eos_id(mut self, id: u32) -> Result<Tokenizer, TokenizerError> {
        self.eos_id = self.check_special("eos", id)?;
        Ok(self)
    }

    fn check_special(&self, which: &'static str, id: u32) -> Result<u32, TokenizerError> {
        if (id as usize) < self.vocab_size() {
            Ok(id)
        } else {
            Err(TokenizerError::SpecialIdOutOfRange { which, id, vocab_size: self.vocab_size() })
        }
    }

    /// Tokenizes `text`, with the BOS id first when `add_bos`. The empty string
    /// gives `[]` (or `[BOS]`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::with_capacity(text.len() / 2 + 1);
        if add_bos {
            ids.push(self.bos_id);
        }
        // The crate reports an empty result as an error, so skip the call.
        if text.is_empty() {
            return Ok(ids);
        }
        let pieces = self.spp.encode(text).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        ids.extend(pieces.iter().map(|p| p.id));
        Ok(ids)
    }

    /// Turns ids back into text exactly as the reference library does
    /// (control pieces vanish, byte pieces join into characters, invalid or
    /// incomplete byte sequences become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.check_ids(ids)?;
        self.spp.decode_piece_ids(ids).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<(), TokenizerError> {
        match ids.iter().find(|&&id| id as usize >= self.pieces.len()) {
            Some(&id) => Err(self.out_of_range(id)),
            None => Ok(()),
        }
    }

    fn out_of_range(&self, id: u32) -> TokenizerError {
        TokenizerError::IdOutOfRange { id, vocab_size: self.pieces.len() }
    }

    /// Number of pieces; valid ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The id put first by `encode(_, true)`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The id that ends generation.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The `<unk>` id.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The piece text for `id` (`▁` marks a space, bytes are `<0xHH>`).
    pub fn id_to_piece(&self, id: u32) -> Result<&str, TokenizerError> {
        self.pieces.get(id as usize).map(|p| p.text.as_str()).ok_or_else(|| self.out_of_range(id))
    }

    /// The id of a piece text, if the vocabulary has it.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        // The library maps unknown pieces to <unk> and the crate reports that
        // as None, so <unk> itself needs its own check.
        if self.pieces.get(self.unk_id as usize).map(|p| p.text.as_str()) == Some(piece) {
            return Some(self.unk_id);
        }
        self.spp.piece_to_id(piece).ok().flatten()
    }

    /// What kind of piece `id` is.
    pub fn piece_kind(&self, id: u32) -> Result<PieceKind, TokenizerError> {
        self.pieces.get(id as usize).map(|p| p.kind).ok_or_else(|| self.out_of_range(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tokenizer_model;

    fn tok() -> Tokenizer {
        Tokenizer::from_bytes(test_tokenizer_model()).unwrap()
    }

    #[test]
    fn special_ids_and_size() {
        let t = tok();
        assert_eq!(t.vocab_size(), 1000);
        assert_eq!((t.unk_id(), t.bos_id(), t.eos_id()), (0, 1, 2));
        assert_eq!(t.id_to_piece(0).unwrap(), "<unk>");
        assert_eq!(t.id_to_piece(1).unwrap(), "<s>");
        assert_eq!(t.id_to_piece(2).unwrap(), "</s>");
        assert_eq!(t.piece_kind(1).unwrap(), PieceKind::Control);
        assert_eq!(t.piece_kind(0).unwrap(), PieceKind::Unknown);
        assert_eq!(t.piece_kind(3 + 0x0A).unwrap(), PieceKind::Byte(0x0A));
        assert_eq!(t.piece_to_id("<unk>"), Some(0));
        assert_eq!(t.piece_to_id("</s>"), Some(2));
        assert_eq!(t.piece_to_id("<0x0A>"), Some(13));
        assert_eq!(t.piece_to_id("no such piece"), None);
        assert_eq!(t.piece_to_id("a\0b"), None);
    }

    #[test]
    fn encode_and_round_trip() {
        let t = tok();
        assert_eq!(t.encode("", false).unwrap(), Vec::<u32>::new());
        assert_eq!(t.encode("", true).unwrap(), vec![1]);
        for text in ["Hello world", "  two  spaces\n\nand\ttabs ", "我们今天去公园", "龘😀 emoji 👩‍💻", "x = 12345;"]
        {
            let ids = t.encode(text, true).unwrap();
            assert_eq!(ids[0], 1);
            assert_eq!(t.decode(&ids).unwrap(), text);
        }
    }

    #[test]
    fn overrides_are_checked() {
        let t = tok().with_bos_id(5).unwrap().with_eos_id(7).unwrap();
        assert_eq!((t.bos_id(), t.eos_id()), (5, 7));
        assert_eq!(t.encode("", true).unwrap(), vec![5]);
        let err = tok().with_eos_id(1000).unwrap_err().to_string();
        assert!(err.contains("eos id 1000") && err.contains("config.json"), "{err}");
    }

    #[test]
    fn bad_ids_are_errors_not_panics() {
        let t = tok();
        for id in [1000, 1001, u32::MAX, i32::MAX as u32 + 1] {
            let err = t.decode(&[5, id]).unwrap_err().to_string();
            assert!(err.contains(&id.to_string()) && err.contains("1000 pieces"), "{err}");
            assert!(t.id_to_piece(id).is_err());
            assert!(t.piece_kind(id).is_err());
        }
    }

    #[test]
    fn bad_model_bytes_are_errors_not_panics() {
        let good = test_tokenizer_model();
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n".to_vec(),
            b"{\"version\": \"1.0\"}".to_vec(),
            good[..good.len() / 2].to_vec(),
            good[1..].to_vec(),
        ];
        // Deterministic byte flips spread over the file.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = good.to_vec();
            let at = (state % bytes.len() as u64) as usize;
            bytes[at] ^= (state >> 32) as u8 | 1;
            cases.push(bytes);
        }
        for bytes in cases {
            if let Ok(t) = Tokenizer::from_bytes(&bytes) {
                // Whatever loads must still behave.
                let ids = t.encode("Hello, 世界 😀\n", true).unwrap();
                t.decode(&ids).unwrap();
                let all: Vec<u32> = (0..t.vocab_size() as u32).collect();
                t.decode(&all).unwrap();
            }
        }
        let err = Tokenizer::from_bytes(b"version https://git-lfs.github.com/spec/v1\n").unwrap_err().to_string();
        assert!(err.contains("git lfs pull"), "{err}");
    }

    #[test]
    fn open_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("engine-tools-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Tokenizer::open(&dir).unwrap_err().to_string();
        assert!(err.contains("tokenizer.model") && err.contains("cannot read"), "{err}");
        std::fs::write(dir.join("tokenizer.model"), b"not a model").unwrap();
        let err = Tokenizer::open(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("tokenizer.model in {} is not a SentencePiece model (", dir.display())),
            "{err}"
        );
        std::fs::write(dir.join("tokenizer.model"), test_tokenizer_model()).unwrap();
        assert_eq!(Tokenizer::open(&dir).unwrap().vocab_size(), 1000);
        assert_eq!(Tokenizer::open(dir.join("tokenizer.model")).unwrap().vocab_size(), 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

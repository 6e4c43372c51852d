//! The SentencePiece kind of tokenizer (`tokenizer.model`, as Baichuan and LLaMA ship it).
//!
//! [`SentencePiece`] wraps `sentencepiece::SentencePieceProcessor` (the reference C++ library, so ids match Python
//! `sentencepiece` exactly) and adds what the crate lacks: the piece table (`id_to_piece`, piece kinds) read from
//! the protobuf by [`crate::proto`], and a parse before the library sees the bytes, so that a bad file is a clear
//! error rather than a crash. BOS handling lives in the front ([`crate::tokenizer::Tokenizer`]).

use sentencepiece::SentencePieceProcessor;

use crate::error::TokenizerError;
use crate::proto::{self, PieceEntry, PieceKind};

/// Baichuan-7B's BOS id, used when the model file does not name a BOS piece.
pub const BAICHUAN_BOS_ID: u32 = 1;
/// Baichuan-7B's EOS id, used when the model file does not name an EOS piece.
pub const BAICHUAN_EOS_ID: u32 = 2;

const LIBRARY: &str = "sentencepiece";

/// A loaded SentencePiece model. Immutable after load, hence `Send + Sync`.
pub(crate) struct SentencePiece {
    spp: SentencePieceProcessor,
    pieces: Vec<PieceEntry>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub unk_id: u32,
    /// A denormalizer rewrites the whole decoded text, so the stream decoder cannot decode a short window.
    pub has_denormalizer: bool,
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

impl SentencePiece {
    /// Loads a serialized model; `origin` names it in errors.
    pub fn load(bytes: &[u8], origin: &str) -> Result<SentencePiece, TokenizerError> {
        let not_sp = |reason: String| TokenizerError::NotSentencePiece { origin: origin.to_owned(), reason };
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
        Ok(SentencePiece {
            unk_id: spp.unk_id(),
            spp,
            pieces: info.pieces,
            bos_id,
            eos_id,
            has_denormalizer: info.has_denormalizer,
        })
    }

    /// A piece that decodes to non-empty text on its own, preferring text
    /// pieces; an ASCII byte piece works too (it is a complete character, so it
    /// cannot join a following byte sequence). Returns the id and the length of its text.
    pub fn find_anchor(&self) -> Option<(u32, usize)> {
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
            (!text.is_empty() && !text.ends_with('\u{FFFD}')).then_some((id, text.len()))
        })
    }

    /// The ids of `text`, without BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        // The crate reports an empty result as an error, so skip the call.
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let pieces =
            self.spp.encode(text).map_err(|e| TokenizerError::Encode { library: LIBRARY, reason: e.to_string() })?;
        Ok(pieces.iter().map(|p| p.id).collect())
    }

    /// Decodes in-range ids (the front checks the range).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.spp.decode_piece_ids(ids).map_err(|e| TokenizerError::Decode { library: LIBRARY, reason: e.to_string() })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn piece(&self, id: u32) -> Option<&PieceEntry> {
        self.pieces.get(id as usize)
    }

    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        // The library maps unknown pieces to <unk> and the crate reports that
        // as None, so <unk> itself needs its own check.
        if self.pieces.get(self.unk_id as usize).map(|p| p.text.as_str()) == Some(piece) {
            return Some(self.unk_id);
        }
        self.spp.piece_to_id(piece).ok().flatten()
    }
}

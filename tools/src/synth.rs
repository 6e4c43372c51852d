//! Tokenizers for tests and synthetic checkpoints.
//!
//! The engine's `synth` command writes checkpoints of any shape (e.g. the 7B
//! shape with 64000 ids) and needs a `tokenizer.model` or `tokenizer.json`
//! with exactly that many pieces. [`padded_tokenizer_model`] and
//! [`padded_tokenizer_json`] extend the small test tokenizers (or others) with
//! reserved pieces that the encoder can never produce, so text encodes exactly
//! as with the base tokenizer while every id decodes.

use std::collections::HashSet;

use serde_json::Value;

use crate::proto::{self, PieceEntry, PieceKind};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Largest vocabulary [`padded_tokenizer_model`] will build; real models stay
/// far below (Baichuan-7B: 64000), and ids must fit SentencePiece's `int`.
pub const MAX_PADDED_VOCAB: usize = 1 << 24;

/// Score given to padding pieces: lowest possible priority, as a second line
/// of defence should one ever be reachable by merges.
const PAD_SCORE: f32 = -1.0e9;

/// The committed test tokenizer (`tools/testdata/tokenizer.model`): BPE with
/// byte fallback, 1000 pieces, `<unk>`=0, `<s>`=1, `</s>`=2, Baichuan-7B's
/// normalizer settings. Regenerate with `tools/testdata/train_tokenizer.py`.
pub fn test_tokenizer_model() -> &'static [u8] {
    include_bytes!("../testdata/tokenizer.model")
}

/// The committed Hugging Face test tokenizer (`tools/testdata/tokenizer.json`):
/// GPT-2-style byte-level BPE of 1000 tokens trained on the same text as
/// [`test_tokenizer_model`], special tokens `<|pad|>`=0, `<s>`=1, `</s>`=2.
/// Regenerate with `tools/testdata/train_tokenizer_json.py`.
pub fn test_tokenizer_json() -> &'static [u8] {
    include_bytes!("../testdata/tokenizer.json")
}

/// Returns the `tokenizer.json` `base` extended to exactly `vocab_size` ids.
///
/// The new tokens are `<unusedN>` (N = the id; another name if the base has it) in the BPE model's vocabulary.
/// A BPE model produces a token of several characters only by a merge, and every merge's result is in the base
/// vocabulary, so the new tokens are unreachable and text encodes as before; decoding one yields its name.
/// Models that look whole words up in the vocabulary (`ignore_merges`) and other model types are refused.
pub fn padded_tokenizer_json(base: &[u8], vocab_size: usize) -> Result<Vec<u8>, TokenizerError> {
    let bad =
        |reason: String| TokenizerError::NotTokenizerJson { origin: "the base tokenizer.json".to_owned(), reason };
    let base_tok = Tokenizer::from_json(base, None)?;
    let base_size = base_tok.vocab_size();
    if vocab_size < base_size {
        return Err(TokenizerError::PadTooSmall { requested: vocab_size, base: base_size });
    }
    if vocab_size > MAX_PADDED_VOCAB {
        return Err(TokenizerError::PadTooLarge { requested: vocab_size, max: MAX_PADDED_VOCAB });
    }
    if vocab_size == base_size {
        return Ok(base.to_vec());
    }
    let mut value: Value = serde_json::from_slice(base).map_err(|e| bad(e.to_string()))?;
    let model = &mut value["model"];
    if model["type"] != "BPE" || model["ignore_merges"] == true {
        return Err(bad("padding needs a BPE model without ignore_merges".to_owned()));
    }
    let Some(vocab) = model["vocab"].as_object_mut() else {
        return Err(bad("its model has no vocab object".to_owned()));
    };
    for id in base_size..vocab_size {
        let name = (0..1000)
            .map(|attempt| match attempt {
                0 => format!("<unused{id}>"),
                n => format!("<unused{id}~{n}>"),
            })
            .find(|name| !vocab.contains_key(name) && base_tok.piece_to_id(name).is_none())
            .ok_or_else(|| bad(format!("no free name for the padding token {id}")))?;
        vocab.insert(name, Value::from(id));
    }
    let out = serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))?;

    // Cheap insurance that the library reads the padded file as intended.
    let padded = Tokenizer::from_json(&out, None)?;
    if padded.vocab_size() != vocab_size {
        return Err(bad(format!("the padded file has {} ids, expected {vocab_size}", padded.vocab_size())));
    }
    Ok(out)
}

/// Returns `base` extended to exactly `vocab_size` pieces.
///
/// The new pieces are `<unusedN>` (N = the id), type UNUSED: SentencePiece's
/// BPE encoder skips UNUSED pieces *only* by re-splitting them after merging,
/// so a reachable one could still change which merges win. Each name is
/// therefore checked to be unreachable by merges of the base vocabulary (and a
/// different name chosen if not). Decoding a padding id yields its name.
/// `trainer_spec.vocab_size` is updated to match.
pub fn padded_tokenizer_model(base: &[u8], vocab_size: usize) -> Result<Vec<u8>, TokenizerError> {
    // Validate the base fully (library included) before extending it.
    let base_tok = Tokenizer::from_bytes(base)?;
    let base_size = base_tok.vocab_size();
    if vocab_size < base_size {
        return Err(TokenizerError::PadTooSmall { requested: vocab_size, base: base_size });
    }
    if vocab_size > MAX_PADDED_VOCAB {
        return Err(TokenizerError::PadTooLarge { requested: vocab_size, max: MAX_PADDED_VOCAB });
    }
    if vocab_size == base_size {
        return Ok(base.to_vec());
    }
    let info = proto::parse_model(base)
        .map_err(|reason| TokenizerError::NotSentencePiece { origin: "the base tokenizer model".to_owned(), reason })?;
    let guard = MergeGuard::new(&info.pieces);

    let mut out = Vec::with_capacity(base.len() + (vocab_size - base_size) * 20 + 8);
    out.extend_from_slice(base);
    for id in base_size..vocab_size {
        // A vocabulary finite in size blocks finitely many names, so a few
        // attempts always suffice in practice; the bound keeps this total.
        let name = (0..1000)
            .map(|attempt| match attempt {
                0 => format!("<unused{id}>"),
                n => format!("<unused{id}~{n}>"),
            })
            .find(|name| guard.is_safe(name))
            .ok_or_else(|| TokenizerError::NotSentencePiece {
                origin: "the base tokenizer model".to_owned(),
                reason: format!("no padding piece name for id {id} is safe from its merges"),
            })?;
        proto::append_piece(&mut out, &name, PAD_SCORE, proto::TYPE_UNUSED);
    }
    proto::append_trainer_vocab_size(&mut out, vocab_size as u32);

    // Cheap insurance that the hand-written protobuf is what the library reads.
    let padded = Tokenizer::from_bytes(&out)?;
    if padded.vocab_size() != vocab_size {
        return Err(TokenizerError::NotSentencePiece {
            origin: "the padded tokenizer model".to_owned(),
            reason: format!("it has {} pieces, expected {vocab_size}", padded.vocab_size()),
        });
    }
    Ok(out)
}

/// Decides whether a new piece could ever be formed by BPE merges.
///
/// A BPE symbol is a single character or the concatenation of two symbols
/// that is itself in the merge table (NORMAL, USER_DEFINED or UNUSED pieces).
/// A new piece is safe when no split of it into two halves has both halves
/// reachable. The padding names all have the shape `<unused…>`, with one `<`
/// first and one `>` last, so one padding piece is never a proper part of
/// another; only the base vocabulary has to be considered. Treating
/// user-defined pieces as mergeable over-approximates, which is the safe side.
struct MergeGuard<'a> {
    all: HashSet<&'a str>,
    mergeable: HashSet<&'a str>,
}

impl<'a> MergeGuard<'a> {
    fn new(pieces: &'a [PieceEntry]) -> Self {
        let mergeable = pieces
            .iter()
            .filter(|p| matches!(p.kind, PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused))
            .map(|p| p.text.as_str())
            .collect();
        let all = pieces.iter().map(|p| p.text.as_str()).collect();
        MergeGuard { all, mergeable }
    }

    fn is_safe(&self, name: &str) -> bool {
        !self.all.contains(name) && !self.splits_into_reachable(name, &mut Vec::new())
    }

    /// Whether `s` = L ++ R with both L and R reachable symbols.
    fn splits_into_reachable(&self, s: &str, stack: &mut Vec<String>) -> bool {
        s.char_indices().skip(1).any(|(i, _)| self.reachable(&s[..i], stack) && self.reachable(&s[i..], stack))
    }

    fn reachable(&self, s: &str, stack: &mut Vec<String>) -> bool {
        if s.chars().nth(1).is_none() {
            return true;
        }
        // Base pieces are short (SentencePiece caps them at 16 characters by
        // default), so this recursion is small; the stack guards against
        // revisiting a string on the current path.
        if !self.mergeable.contains(s) || stack.iter().any(|x| x == s) {
            return false;
        }
        stack.push(s.to_owned());
        let found = self.splits_into_reachable(s, stack);
        stack.pop();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_requested_size_without_changing_encoding() {
        let base = Tokenizer::from_bytes(test_tokenizer_model()).unwrap();
        let padded_bytes = padded_tokenizer_model(test_tokenizer_model(), 64000).unwrap();
        let padded = Tokenizer::from_bytes(&padded_bytes).unwrap();
        assert_eq!(padded.vocab_size(), 64000);
        assert_eq!(padded.id_to_piece(1000).unwrap(), "<unused1000>");
        assert_eq!(padded.id_to_piece(63999).unwrap(), "<unused63999>");
        assert_eq!(padded.piece_kind(5000).unwrap(), PieceKind::Unused);
        for text in ["Hello world <unused1000> <unused63999>", "<unused5000><unused5001>", "中文 😀 \n\t  x"] {
            assert_eq!(padded.encode(text, true).unwrap(), base.encode(text, true).unwrap());
        }
        assert_eq!(padded.decode(&[1000, 63999]).unwrap(), "<unused1000><unused63999>");
        let all: Vec<u32> = (0..64000).collect();
        padded.decode(&all).unwrap();
    }

    #[test]
    fn same_size_is_identity_and_smaller_is_an_error() {
        let base = test_tokenizer_model();
        assert_eq!(padded_tokenizer_model(base, 1000).unwrap(), base);
        let err = padded_tokenizer_model(base, 999).unwrap_err().to_string();
        assert!(err.contains("999") && err.contains("1000"), "{err}");
        assert!(padded_tokenizer_model(base, MAX_PADDED_VOCAB + 1).is_err());
        assert!(padded_tokenizer_model(b"junk", 2000).is_err());
    }

    #[test]
    fn padding_twice_matches_padding_once() {
        let once = padded_tokenizer_model(test_tokenizer_model(), 3000).unwrap();
        let twice =
            padded_tokenizer_model(&padded_tokenizer_model(test_tokenizer_model(), 2000).unwrap(), 3000).unwrap();
        let (a, b) = (Tokenizer::from_bytes(&once).unwrap(), Tokenizer::from_bytes(&twice).unwrap());
        for id in 0..3000 {
            assert_eq!(a.id_to_piece(id).unwrap(), b.id_to_piece(id).unwrap());
        }
    }

    #[test]
    fn json_pads_to_the_requested_size_without_changing_encoding() {
        let base = Tokenizer::from_json(test_tokenizer_json(), None).unwrap();
        assert_eq!(base.vocab_size(), 1000);
        let padded_bytes = padded_tokenizer_json(test_tokenizer_json(), 64000).unwrap();
        let padded = Tokenizer::from_json(&padded_bytes, None).unwrap();
        assert_eq!(padded.vocab_size(), 64000);
        assert_eq!(padded.id_to_piece(1000).unwrap(), "<unused1000>");
        assert_eq!(padded.id_to_piece(63999).unwrap(), "<unused63999>");
        assert_eq!(padded.piece_kind(5000).unwrap(), PieceKind::Normal);
        for text in ["Hello world <unused1000> <unused63999>", "<unused5000><unused5001>", "中文 😀 \n\t  x"] {
            assert_eq!(padded.encode(text, true).unwrap(), base.encode(text, true).unwrap());
        }
        assert_eq!(padded.decode(&[1000, 63999]).unwrap(), "<unused1000><unused63999>");
        let all: Vec<u32> = (0..64000).collect();
        padded.decode(&all).unwrap();

        assert_eq!(padded_tokenizer_json(test_tokenizer_json(), 1000).unwrap(), test_tokenizer_json());
        let err = padded_tokenizer_json(test_tokenizer_json(), 999).unwrap_err().to_string();
        assert!(err.contains("999") && err.contains("1000"), "{err}");
        assert!(padded_tokenizer_json(test_tokenizer_json(), MAX_PADDED_VOCAB + 1).is_err());
        assert!(padded_tokenizer_json(b"{}", 2000).is_err());
        let whole_words = String::from_utf8(test_tokenizer_json().to_vec())
            .unwrap()
            .replace("\"ignore_merges\": false", "\"ignore_merges\": true");
        let err = padded_tokenizer_json(whole_words.as_bytes(), 2000).unwrap_err().to_string();
        assert!(err.contains("ignore_merges"), "{err}");
    }

    #[test]
    fn merge_guard_detects_reachable_names() {
        let piece = |text: &str| PieceEntry { text: text.to_owned(), kind: PieceKind::Normal };
        let pieces =
            [piece("<u"), piece("<un"), piece("used7>"), piece("sed7>"), piece("ed7>"), piece("d7>"), piece("7>")];
        let guard = MergeGuard::new(&pieces);
        // "<un" + "used7>": both halves in the merge table and buildable.
        assert!(!guard.is_safe("<unused7>"));
        assert!(guard.is_safe("<unused8>"));
        assert!(!guard.is_safe("<u"));
    }
}

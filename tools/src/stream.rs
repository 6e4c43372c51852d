//! Streaming detokenization: text out as token ids arrive, one at a time.
//!
//! The contract: the concatenation of everything [`StreamDecoder::push`] and
//! [`StreamDecoder::finish`] return equals `Tokenizer::decode` of all the ids,
//! and no character is ever split (a character spelled with several byte
//! tokens comes out whole once its last byte arrives).
//!
//! How, for SentencePiece: its decode is a concatenation of per-piece surfaces
//! with two couplings between pieces:
//!   * consecutive byte pieces are decoded together as UTF-8, and an
//!     incomplete trailing sequence decodes to one U+FFFD per byte until the
//!     rest arrives;
//!   * the first text piece may lose its leading `▁` (models with a dummy
//!     prefix or whitespace removal), but only while no text has been produced.
//!
//! So the decoder re-decodes only a short window: an *anchor* piece (any piece
//! with non-empty text, standing in for the history so the "first piece" rule
//! is off, exactly as it is after real text) followed by the ids not yet
//! settled, i.e. the at most 3 byte pieces of an incomplete UTF-8 sequence plus
//! the new id. Each push costs O(1) library work. Models with a denormalizer
//! (none of the Baichuan/LLaMA family) rewrite the whole text, so for them the
//! window is never trimmed: still exact, but quadratic.
//!
//! For `tokenizer.json` (byte-level BPE above all): the decoder joins the bytes
//! of every token and decodes them as UTF-8, replacing each invalid or
//! incomplete sequence by one U+FFFD (SentencePiece-style `ByteFallback`
//! decoders: one per byte, at most 3 for an incomplete character). Text up to
//! the last complete character never changes as tokens are appended, so the
//! decoder holds back at most 3 trailing U+FFFD and, once the text ends in a
//! complete character, replaces the settled ids by an anchor token (plain ASCII
//! letters whose text does not depend on their neighbours). The piece table does
//! not say which token holds which bytes, so while the text ends in U+FFFD the
//! window keeps growing: a run of invalid bytes costs quadratic time, normal
//! text O(1) per token. Special tokens vanish from decoding wherever they are,
//! so they are dropped on arrival. Exact for decoders whose text for a token
//! depends only on the tokens before it up to the last complete character
//! (byte-level, `Metaspace`, `ByteFallback`/`Fuse`/`Replace`, leading `Strip`);
//! not for WordPiece's clean-up, which rewrites text already produced.

use crate::proto::PieceKind;
use crate::tokenizer::{Tokenizer, TokenizerError, TokenizerKind};

/// Incremental decoder for one generated sequence; see the module docs.
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    /// Ids to decode together: `[anchor] ++ unsettled` once text has started,
    /// the raw (text-less) history before that.
    window: Vec<u32>,
    /// Bytes of `decode(window)` already returned (or covered by the anchor).
    emitted: usize,
    /// Whether the sequence has produced any text yet. Until it has, the
    /// "first piece" rule may still apply, so the window cannot be anchored.
    started: bool,
}

const REPLACEMENT: char = '\u{FFFD}';

impl<'t> StreamDecoder<'t> {
    /// A decoder for a new sequence.
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        StreamDecoder { tokenizer, window: Vec::with_capacity(8), emitted: 0, started: false }
    }

    /// Feeds one id and returns the text it completes (often empty: a control
    /// token, or a byte piece in the middle of a character). An out-of-range id
    /// is an error and leaves the decoder unchanged.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        match self.tokenizer.kind() {
            TokenizerKind::SentencePiece => self.push_sentencepiece(id),
            TokenizerKind::HuggingFace => self.push_json(id),
        }
    }

    fn push_sentencepiece(&mut self, id: u32) -> Result<String, TokenizerError> {
        let kind = self.tokenizer.piece_kind(id)?;
        // Before any text, control pieces change nothing in the library's
        // decode (they are not bytes and do not affect the first-piece rule),
        // so they are dropped rather than kept in an unbounded window.
        if !self.started && kind == PieceKind::Control {
            return Ok(String::new());
        }
        let text = self.decode_with(id)?;

        let held = self.incomplete_tail();
        let mut stable_end = text.len().saturating_sub(held * REPLACEMENT.len_utf8());
        let mut trim = self.tokenizer.anchor.is_some();
        if !text.get(stable_end..).is_some_and(|tail| tail.chars().all(|c| c == REPLACEMENT)) {
            // Not what the library's UTF-8 handling predicts (a model where
            // the piece table and the library disagree): hold back every
            // trailing U+FFFD and keep the whole window, which stays exact.
            stable_end = text.trim_end_matches(REPLACEMENT).len();
            trim = false;
        }
        let out = text.get(self.emitted..stable_end).unwrap_or_default().to_owned();
        self.emitted = self.emitted.max(stable_end);
        self.started |= !text.is_empty();

        if self.started && trim {
            if let Some(anchor) = self.tokenizer.anchor {
                // Everything but the incomplete tail is settled: replace it by
                // the anchor, whose text counts as already emitted.
                let settled = self.window.len() - held;
                self.window.splice(..settled, [anchor.id]);
                self.emitted = anchor.text_len;
            }
        } else if !self.started && self.window.len() > 1 {
            // Still no text: the window holds only text pieces that decoded to
            // nothing (leading `▁`s stripped by the first-piece rule). Only the
            // last of them can have ended that rule, since a piece after it
            // would have produced text, so the earlier ones can go. <unk>
            // breaks this argument when its surface is configured empty.
            let unknown = |id: &u32| matches!(self.tokenizer.piece_kind(*id), Ok(PieceKind::Unknown));
            if !self.window.iter().any(unknown) {
                self.window.drain(..self.window.len() - 1);
            }
        }
        Ok(out)
    }

    /// The window's text with `id` appended to it; on an error the window is left as it was.
    fn decode_with(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.window.push(id);
        self.tokenizer.decode(&self.window).inspect_err(|_| {
            self.window.pop();
        })
    }

    /// [`push`](Self::push) for `tokenizer.json`; see the module docs.
    fn push_json(&mut self, id: u32) -> Result<String, TokenizerError> {
        if self.tokenizer.piece_kind(id)? == PieceKind::Control {
            return Ok(String::new());
        }
        let text = self.decode_with(id)?;
        let trailing = text.chars().rev().take_while(|&c| c == REPLACEMENT).count();
        let stable_end = text.len() - trailing.min(3) * REPLACEMENT.len_utf8();
        let out = text.get(self.emitted..stable_end).unwrap_or_default().to_owned();
        self.emitted = self.emitted.max(stable_end);
        self.started |= !text.is_empty();
        if self.started && trailing == 0 {
            if let Some(anchor) = self.tokenizer.anchor {
                self.window.clear();
                self.window.push(anchor.id);
                self.emitted = anchor.text_len;
            }
        }
        Ok(out)
    }

    /// Ends the sequence: returns any held-back text (an incomplete byte
    /// sequence comes out as U+FFFD, as in `decode`) and resets the decoder
    /// for a new sequence.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let out = if self.window.is_empty() {
            String::new()
        } else {
            let text = self.tokenizer.decode(&self.window)?;
            text.get(self.emitted..).unwrap_or_default().to_owned()
        };
        self.reset();
        Ok(out)
    }

    /// Forgets the current sequence without returning held-back text.
    pub fn reset(&mut self) {
        self.window.clear();
        self.emitted = 0;
        self.started = false;
    }

    /// How many trailing ids of the window are byte pieces forming a UTF-8
    /// sequence that more bytes could still complete (0 to 3).
    ///
    /// Deliberately generous (any lead byte 0xC0..=0xF7 followed by fewer
    /// continuation bytes than it announces): holding back a sequence the
    /// library would reject anyway only delays its U+FFFD by one token, while
    /// releasing one it would later accept would print a wrong U+FFFD.
    fn incomplete_tail(&self) -> usize {
        let n = self.window.len();
        for k in 1..=n.min(3) {
            let Ok(PieceKind::Byte(b)) = self.tokenizer.piece_kind(self.window[n - k]) else {
                return 0;
            };
            let needed = match b {
                0x80..=0xBF => continue,
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return 0,
            };
            return if needed > k { k } else { 0 };
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tokenizer_model;

    fn tok() -> Tokenizer {
        Tokenizer::from_bytes(test_tokenizer_model()).unwrap()
    }

    /// xorshift64*: a deterministic, dependency-free generator for tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn byte_id(t: &Tokenizer, b: u8) -> u32 {
        t.piece_to_id(&format!("<0x{b:02X}>")).unwrap()
    }

    /// Streams `ids`, checks the concatenation against `decode`, that the
    /// window stays small, and returns the per-push outputs.
    fn check(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        check_window(t, ids, 5)
    }

    /// [`check`] with another bound on the window.
    fn check_window(t: &Tokenizer, ids: &[u32], max_window: usize) -> Vec<String> {
        let mut dec = StreamDecoder::new(t);
        let mut outs = Vec::new();
        for &id in ids {
            outs.push(dec.push(id).unwrap());
            assert!(dec.window.len() <= max_window, "window grew to {:?}", dec.window);
        }
        outs.push(dec.finish().unwrap());
        let expected = t.decode(ids).unwrap();
        assert_eq!(outs.concat(), expected, "ids {ids:?}, outputs {outs:?}");
        outs
    }

    #[test]
    fn chinese_bytes_come_out_whole() {
        let t = tok();
        // 龘 is not in the test vocabulary: three byte pieces.
        let ids = t.encode("a龘b", false).unwrap();
        assert_eq!(ids.len(), 5);
        let outs = check(&t, &ids);
        assert_eq!(outs, ["a", "", "", "龘", "b", ""]);
    }

    #[test]
    fn emoji_and_incomplete_tail() {
        let t = tok();
        let ids = t.encode("😀", false).unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(check(&t, &ids), ["", "", "", "😀", ""]);
        // A sequence cut short is U+FFFD per byte, released only by finish().
        let outs = check(&t, &ids[..2]);
        assert_eq!(outs, ["", "", "\u{FFFD}\u{FFFD}"]);
        // ... or by a following piece that proves it will never complete.
        let mut cut = ids[..2].to_vec();
        cut.extend(t.encode("x", false).unwrap());
        assert_eq!(check(&t, &cut), ["", "", "\u{FFFD}\u{FFFD}x", ""]);
    }

    #[test]
    fn spaces_and_control_tokens() {
        let t = tok();
        let mut ids = vec![1, 1];
        ids.extend(t.encode("  lead and trail  \n\n x", false).unwrap());
        ids.extend([2, 1]);
        ids.extend(t.encode(" again", false).unwrap());
        check(&t, &ids);
    }

    #[test]
    fn bad_id_leaves_state_alone() {
        let t = tok();
        let mut dec = StreamDecoder::new(&t);
        let ids = t.encode("中龘", false).unwrap();
        let mut out = String::new();
        for &id in &ids[..2] {
            out += &dec.push(id).unwrap();
        }
        assert!(dec.push(5000).is_err());
        for &id in &ids[2..] {
            out += &dec.push(id).unwrap();
        }
        out += &dec.finish().unwrap();
        assert_eq!(out, "中龘");
    }

    #[test]
    fn random_sequences_match_full_decode() {
        random_sequences(&tok(), 0x9e37_79b9_7f4a_7c15);
    }

    /// The same property for LLaMA-style normalizer settings, where the first
    /// text piece loses its leading `▁` (the case the anchor exists for).
    #[test]
    fn random_sequences_with_dummy_prefix_and_whitespace_removal() {
        for (dummy_prefix, remove_ws) in [(true, false), (false, true), (true, true)] {
            let mut model = test_tokenizer_model().to_vec();
            crate::proto::append_normalizer_flags(&mut model, dummy_prefix, remove_ws);
            let t = Tokenizer::from_bytes(&model).unwrap();
            // The flags took effect: a leading space piece is stripped.
            let the = t.piece_to_id("\u{2581}the").unwrap();
            assert_eq!(t.decode(&[the]).unwrap(), "the");
            let outs = check(&t, &[1, the, the]);
            assert_eq!(outs.concat(), "the the");
            // Many text-less leading pieces do not grow the window.
            let space = t.piece_to_id("\u{2581}").unwrap();
            let mut ids = vec![space; 20];
            ids.extend([1, the, space, the]);
            check(&t, &ids);
            random_sequences(&t, 0x1234_5678 + u64::from(dummy_prefix) * 2 + u64::from(remove_ws));
        }
    }

    fn random_sequences(t: &Tokenizer, seed: u64) {
        let mut rng = Rng(seed);
        let whitespace = [t.piece_to_id("\u{2581}").unwrap(), t.piece_to_id("\u{2581}\u{2581}").unwrap()];
        let texts =
            ["Hello, world!", "  spaces   and\ttabs\n\n", "中文和English混合", "龘靐齉😀👩‍💻🇨🇳", "0123456789", "é ü ß ñ"];
        for _ in 0..400 {
            let len = rng.below(40);
            let mut ids = Vec::new();
            while ids.len() < len {
                match rng.below(7) {
                    // Any id at all, including control, unk and bytes.
                    0 => ids.push(rng.below(t.vocab_size()) as u32),
                    // Random bytes: mostly invalid or truncated UTF-8.
                    1 => ids.push(byte_id(t, rng.next() as u8)),
                    // Lead bytes followed by a random number of continuations.
                    2 => {
                        ids.push(byte_id(t, 0xC0 + rng.below(0x38) as u8));
                        for _ in 0..rng.below(4) {
                            ids.push(byte_id(t, 0x80 + rng.below(0x40) as u8));
                        }
                    }
                    // Whitespace-only pieces and control pieces, which interact
                    // with the leading-space rule.
                    3 => ids.push(if rng.below(2) == 0 { whitespace[rng.below(2)] } else { 1 + rng.below(2) as u32 }),
                    // Real encodings of text, often with byte fallback.
                    _ => {
                        let text = texts[rng.below(texts.len())];
                        ids.extend(t.encode(text, rng.below(2) == 0).unwrap());
                    }
                }
            }
            check(t, &ids);
        }
    }

    #[test]
    fn decoder_is_reusable_after_finish() {
        let t = tok();
        let mut dec = StreamDecoder::new(&t);
        for text in ["first 龘", "second"] {
            let mut out = String::new();
            for id in t.encode(text, true).unwrap() {
                out += &dec.push(id).unwrap();
            }
            out += &dec.finish().unwrap();
            assert_eq!(out, text);
        }
    }

    fn json_tok() -> Tokenizer {
        Tokenizer::from_json(crate::test_tokenizer_json(), None).unwrap()
    }

    /// Ids of the byte-level tokens that stand for one byte each, indexed by the byte.
    fn json_byte_ids(t: &Tokenizer) -> Vec<u32> {
        (0..=255u8)
            .map(|b| {
                let ids = t.encode(&String::from_utf8_lossy(&[b]), false).unwrap();
                // Bytes >= 0x80 alone are not UTF-8: find the token whose piece is the byte's stand-in character.
                if b < 0x80 {
                    assert_eq!(ids.len(), 1);
                    return ids[0];
                }
                (0..t.vocab_size() as u32)
                    .find(|&id| {
                        let piece = t.id_to_piece(id).unwrap();
                        piece.chars().count() == 1 && {
                            // GPT-2's byte-to-character table: bytes 0x80..=0xA0 and 0xAD map to U+0100 + n,
                            // the others to themselves.
                            let c = piece.chars().next().unwrap() as u32;
                            let n = (0..=255u32).filter(|&x| !is_printable_byte(x)).position(|x| x == b as u32);
                            match n {
                                Some(n) => c == 256 + n as u32,
                                None => c == b as u32,
                            }
                        }
                    })
                    .unwrap()
            })
            .collect()
    }

    fn is_printable_byte(b: u32) -> bool {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    }

    #[test]
    fn json_characters_come_out_whole() {
        let t = json_tok();
        let bytes = json_byte_ids(&t);
        // 龘 as its three bytes, one token each.
        let ids = [bytes[b'a' as usize], bytes[0xE9], bytes[0xBE], bytes[0x98], bytes[b'b' as usize]];
        assert_eq!(t.decode(&ids).unwrap(), "a龘b");
        assert_eq!(check(&t, &ids), ["a", "", "", "龘", "b", ""]);
        // An emoji cut short: one U+FFFD for the incomplete sequence, released by finish() or by what follows.
        let emoji: Vec<u32> = "😀".bytes().map(|b| bytes[b as usize]).collect();
        assert_eq!(check(&t, &emoji), ["", "", "", "😀", ""]);
        assert_eq!(check(&t, &emoji[..2]), ["", "", "\u{FFFD}"]);
        assert_eq!(check(&t, &[emoji[0], emoji[1], bytes[b'x' as usize]]), ["", "", "\u{FFFD}x", ""]);
        // Special tokens vanish wherever they are, even inside a character.
        assert_eq!(check(&t, &[emoji[0], 1, emoji[1], 2, emoji[2], emoji[3]]).concat(), "😀");
    }

    #[test]
    fn json_window_stays_small_on_text() {
        let t = json_tok();
        assert!(t.anchor.is_some());
        let text = "The quick brown fox 跳过了 the lazy dog 🐕.\n\n    fn main() { println!(\"hi\"); }\n";
        let ids = t.encode(text, false).unwrap();
        assert_eq!(check(&t, &ids).concat(), text);
    }

    #[test]
    fn json_random_sequences_match_full_decode() {
        let t = json_tok();
        let bytes = json_byte_ids(&t);
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let texts = ["Hello, world!", "  spaces   and\ttabs\n\n", "中文和English混合", "龘靐齉😀👩‍💻🇨🇳", "0123456789"];
        for _ in 0..400 {
            let len = rng.below(40);
            let mut ids = Vec::new();
            while ids.len() < len {
                match rng.below(6) {
                    0 => ids.push(rng.below(t.vocab_size()) as u32),
                    1 => ids.push(bytes[rng.below(256)]),
                    2 => {
                        ids.push(bytes[0xC0 + rng.below(0x38)]);
                        for _ in 0..rng.below(4) {
                            ids.push(bytes[0x80 + rng.below(0x40)]);
                        }
                    }
                    3 => ids.push(rng.below(3) as u32),
                    _ => ids.extend(t.encode(texts[rng.below(texts.len())], rng.below(2) == 0).unwrap()),
                }
            }
            check_window(&t, &ids, usize::MAX);
        }
    }
}

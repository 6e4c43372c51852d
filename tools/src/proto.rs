//! Just enough of the protobuf wire format to read and extend SentencePiece's
//! `ModelProto` (the `tokenizer.model` file).
//!
//! The `sentencepiece` crate loads models but does not expose the piece table
//! (no `IdToPiece`, no piece types), and the synthetic-checkpoint path needs to
//! append pieces to a model. Both need only a few fields, so this module reads
//! and writes the wire format by hand instead of pulling in a protobuf crate.
//!
//! Field numbers come from `sentencepiece_model.proto` (sentencepiece 0.2.1):
//! `ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//! NormalizerSpec normalizer_spec = 3; SelfTestData self_test_data = 4;
//! NormalizerSpec denormalizer_spec = 5; }` and
//! `SentencePiece { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }`.

/// `ModelProto.pieces`.
const MODEL_PIECES: u32 = 1;
/// `ModelProto.trainer_spec`.
const MODEL_TRAINER_SPEC: u32 = 2;
/// `ModelProto.denormalizer_spec`.
const MODEL_DENORMALIZER_SPEC: u32 = 5;
/// `TrainerSpec.vocab_size`.
const TRAINER_VOCAB_SIZE: u32 = 4;
/// `TrainerSpec.unk_surface`.
const TRAINER_UNK_SURFACE: u32 = 44;
/// `NormalizerSpec.precompiled_charsmap`.
const NORMALIZER_CHARSMAP: u32 = 2;
/// `SentencePiece.piece`, `.score`, `.type`.
const PIECE_TEXT: u32 = 1;
const PIECE_SCORE: u32 = 2; // written, never read: scores do not matter here
const PIECE_TYPE: u32 = 3;

/// `SentencePiece.Type` values.
pub(crate) const TYPE_NORMAL: u64 = 1;
const TYPE_UNKNOWN: u64 = 2;
const TYPE_CONTROL: u64 = 3;
const TYPE_USER_DEFINED: u64 = 4;
pub(crate) const TYPE_UNUSED: u64 = 5;
const TYPE_BYTE: u64 = 6;

/// The type of a vocabulary entry (SentencePiece's `ModelProto.SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PieceKind {
    /// Ordinary text piece; `▁` stands for a space.
    Normal,
    /// `<unk>`; decodes to ` ⁇ `.
    Unknown,
    /// `<s>`, `</s>` and the like; decodes to nothing.
    Control,
    /// Always kept whole by the encoder.
    UserDefined,
    /// Reserved; never produced by the encoder, decodes to its text.
    Unused,
    /// One raw byte of a character outside the vocabulary (byte fallback).
    Byte(u8),
}

/// One entry of the piece table, in id order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PieceEntry {
    pub text: String,
    pub kind: PieceKind,
}

/// What the crate needs from a `ModelProto`.
#[derive(Clone, Debug)]
pub(crate) struct ModelInfo {
    pub pieces: Vec<PieceEntry>,
    /// A denormalizer rewrites the whole decoded text, so windowed decoding
    /// (the stream decoder) cannot assume decode(a ++ b) = decode(a) ++ decode(b).
    pub has_denormalizer: bool,
}

/// A wire-format value; groups (wire types 3 and 4) are rejected because
/// SentencePiece never writes them.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(format!("truncated varint at byte {}", self.pos));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.buf.len()).ok_or_else(|| {
            format!("field of {len} bytes at byte {} runs past the end ({} bytes)", self.pos, self.buf.len())
        })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// Next `(field number, value)`, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| format!("invalid field number {} at byte {at}", key >> 3))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| format!("length too large at byte {at}"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            wire => return Err(format!("unsupported wire type {wire} at byte {at}")),
        };
        Ok(Some((number, value)))
    }
}

/// Parses the piece table and the few settings the crate cares about.
///
/// Beyond structure, this insists that piece strings and the unknown-piece
/// surface are UTF-8: the `sentencepiece` crate panics when a decode produces
/// invalid UTF-8, and those strings are what decoding copies into its output.
pub(crate) fn parse_model(buf: &[u8]) -> Result<ModelInfo, String> {
    let mut pieces = Vec::new();
    let mut has_denormalizer = false;
    let mut reader = Reader::new(buf);
    while let Some((number, value)) = reader.field()? {
        match (number, value) {
            (MODEL_PIECES, Value::Bytes(bytes)) => {
                let id = pieces.len();
                pieces.push(parse_piece(bytes).map_err(|e| format!("piece {id}: {e}"))?);
            }
            (MODEL_TRAINER_SPEC, Value::Bytes(bytes)) => check_trainer_spec(bytes)?,
            (MODEL_DENORMALIZER_SPEC, Value::Bytes(bytes)) => {
                has_denormalizer |= normalizer_has_charsmap(bytes)?;
            }
            (MODEL_PIECES | MODEL_TRAINER_SPEC | MODEL_DENORMALIZER_SPEC, _) => {
                return Err(format!("field {number} has the wrong wire type"));
            }
            _ => {}
        }
    }
    if pieces.is_empty() {
        return Err("it has no pieces".to_owned());
    }
    Ok(ModelInfo { pieces, has_denormalizer })
}

fn parse_piece(buf: &[u8]) -> Result<PieceEntry, String> {
    let mut text = None;
    // proto2 default; unknown enum values also read as the default, as in C++.
    let mut kind_code = TYPE_NORMAL;
    let mut reader = Reader::new(buf);
    while let Some((number, value)) = reader.field()? {
        match (number, value) {
            (PIECE_TEXT, Value::Bytes(bytes)) => {
                let s = std::str::from_utf8(bytes).map_err(|e| format!("piece text is not UTF-8 ({e})"))?;
                text = Some(s.to_owned());
            }
            (PIECE_TYPE, Value::Varint(v)) if (1..=6).contains(&v) => kind_code = v,
            _ => {}
        }
    }
    let text = text.unwrap_or_default();
    let kind = match kind_code {
        TYPE_UNKNOWN => PieceKind::Unknown,
        TYPE_CONTROL => PieceKind::Control,
        TYPE_USER_DEFINED => PieceKind::UserDefined,
        TYPE_UNUSED => PieceKind::Unused,
        TYPE_BYTE => {
            PieceKind::Byte(byte_piece_value(&text).ok_or_else(|| format!("byte piece {text:?} is not <0xHH>"))?)
        }
        _ => PieceKind::Normal,
    };
    Ok(PieceEntry { text, kind })
}

/// `<0x41>` → 0x41, exactly as sentencepiece writes byte pieces (upper-case hex; `tokenizer.json` files converted
/// from SentencePiece models keep the same names).
pub(crate) fn byte_piece_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn check_trainer_spec(buf: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(buf);
    while let Some((number, value)) = reader.field()? {
        if let (TRAINER_UNK_SURFACE, Value::Bytes(bytes)) = (number, value) {
            std::str::from_utf8(bytes).map_err(|e| format!("trainer_spec.unk_surface is not UTF-8 ({e})"))?;
        }
    }
    Ok(())
}

fn normalizer_has_charsmap(buf: &[u8]) -> Result<bool, String> {
    let mut reader = Reader::new(buf);
    let mut has = false;
    while let Some((number, value)) = reader.field()? {
        if let (NORMALIZER_CHARSMAP, Value::Bytes(bytes)) = (number, value) {
            has = !bytes.is_empty();
        }
    }
    Ok(has)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_key(out, number, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a `pieces` entry to a serialized `ModelProto`. Protobuf parsers
/// concatenate repeated fields in the order they appear, so an entry written
/// after everything else gets the next id.
pub(crate) fn append_piece(out: &mut Vec<u8>, text: &str, score: f32, type_code: u64) {
    let mut piece = Vec::with_capacity(text.len() + 10);
    put_bytes_field(&mut piece, PIECE_TEXT, text.as_bytes());
    put_key(&mut piece, PIECE_SCORE, 5);
    piece.extend_from_slice(&score.to_le_bytes());
    put_key(&mut piece, PIECE_TYPE, 0);
    put_varint(&mut piece, type_code);
    put_bytes_field(out, MODEL_PIECES, &piece);
}

/// Appends `trainer_spec { vocab_size: N }` to a serialized `ModelProto`.
/// A repeated occurrence of a singular message field is merged into the
/// earlier one, so this only overrides `vocab_size` and keeps the rest.
pub(crate) fn append_trainer_vocab_size(out: &mut Vec<u8>, vocab_size: u32) {
    let mut spec = Vec::with_capacity(6);
    put_key(&mut spec, TRAINER_VOCAB_SIZE, 0);
    put_varint(&mut spec, u64::from(vocab_size));
    put_bytes_field(out, MODEL_TRAINER_SPEC, &spec);
}

/// Test support: appends `normalizer_spec { add_dummy_prefix, remove_extra_whitespaces }`
/// (merged into the existing spec) to get LLaMA-style variants of a model.
#[cfg(test)]
pub(crate) fn append_normalizer_flags(out: &mut Vec<u8>, dummy_prefix: bool, remove_ws: bool) {
    let mut spec = Vec::new();
    put_key(&mut spec, 3, 0);
    put_varint(&mut spec, u64::from(dummy_prefix));
    put_key(&mut spec, 4, 0);
    put_varint(&mut spec, u64::from(remove_ws));
    put_bytes_field(out, 3, &spec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(Reader::new(&buf).varint().unwrap(), v);
        }
    }

    #[test]
    fn appended_piece_parses_back() {
        let mut buf = Vec::new();
        append_piece(&mut buf, "<unused7>", -1.5, TYPE_UNUSED);
        append_piece(&mut buf, "<0x0A>", 0.0, TYPE_BYTE);
        let info = parse_model(&buf).unwrap();
        assert_eq!(info.pieces.len(), 2);
        assert_eq!(info.pieces[0].text, "<unused7>");
        assert_eq!(info.pieces[0].kind, PieceKind::Unused);
        assert_eq!(info.pieces[1].kind, PieceKind::Byte(0x0A));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"\x0a",
            b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x0b",
            b"version https://git-lfs.github.com/spec/v1\n",
            b"{\"model\": {}}",
            b"\x0a\x03\x0a\x01\xff",
        ] {
            assert!(parse_model(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byte_piece_names() {
        assert_eq!(byte_piece_value("<0x00>"), Some(0));
        assert_eq!(byte_piece_value("<0xE4>"), Some(0xE4));
        assert_eq!(byte_piece_value("<0xe4>"), None);
        assert_eq!(byte_piece_value("<0x1>"), None);
        assert_eq!(byte_piece_value("<0x+1>"), None);
    }
}

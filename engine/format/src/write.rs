//! Writing safetensors headers, for the synthetic checkpoints of the engine and the in-memory ones of tests.
//!
//! It lives next to the reader so that the two agree on the format; the tensor data itself is the writer's
//! business (the engine streams gigabytes of it, tests build kilobytes in memory).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// One tensor entry of a header.
#[derive(Debug, Clone, Copy)]
pub struct HeaderEntry<'a> {
    pub name: &'a str,
    /// The safetensors dtype name: `"F16"`, `"I32"`, ... (any string; tests write invalid ones on purpose).
    pub dtype: &'a str,
    pub shape: &'a [usize],
    /// Byte range relative to the start of the data section.
    pub data_offsets: (usize, usize),
}

/// The JSON header for `entries`, with `{"__metadata__": {"format": "pt"}}` first as PyTorch's writer does.
pub fn header_json(entries: &[HeaderEntry<'_>]) -> String {
    let mut s = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    for e in entries {
        s.push(',');
        push_json_string(&mut s, e.name);
        s.push_str(":{\"dtype\":");
        push_json_string(&mut s, e.dtype);
        s.push_str(",\"shape\":[");
        for (i, d) in e.shape.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{d}");
        }
        let _ = write!(s, "],\"data_offsets\":[{},{}]}}", e.data_offsets.0, e.data_offsets.1);
    }
    s.push('}');
    s
}

/// The bytes that precede the tensor data: the 8-byte little-endian header length, then the JSON header padded
/// with spaces to a multiple of 8 bytes (as the Python writer does, so that the data section starts 8-aligned and
/// every tensor stored back to back with a size-descending dtype order is aligned to its element size).
pub fn encode_header(entries: &[HeaderEntry<'_>]) -> Vec<u8> {
    let mut json = header_json(entries).into_bytes();
    let padded = json.len().next_multiple_of(8);
    json.resize(padded, b' ');
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Append `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_and_parses() {
        let shape = [2usize, 3];
        let e = [HeaderEntry { name: "a\"b\n", dtype: "F16", shape: &shape, data_offsets: (0, 12) }];
        let h = encode_header(&e);
        assert_eq!(h.len() % 8, 0);
        let n = u64::from_le_bytes(h[..8].try_into().unwrap()) as usize;
        assert_eq!(n + 8, h.len());
        let mut file = h.clone();
        file.extend_from_slice(&[0u8; 12]);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&file).unwrap();
        let info = meta.info("a\"b\n").unwrap();
        assert_eq!(info.shape, [2, 3]);
    }
}

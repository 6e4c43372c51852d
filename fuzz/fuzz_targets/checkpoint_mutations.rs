//! Structure-aware: start from a valid tiny checkpoint and let the input drive a list of edits to the header's
//! fields (offsets, shapes, dtypes, names, header length, padding), to the tensor data (g_idx values, stray bytes,
//! truncation) and to the shard split, then describe. Random bytes rarely get past the JSON parser; this reaches the
//! checks behind it. `describe` must never panic, and whatever it accepts must be sound.
#![no_main]

use std::sync::OnceLock;

use engine_format::write::{header_json, HeaderEntry};
use engine_format::{describe, Shard};
use libfuzzer_sys::fuzz_target;

mod common;

static VARIANTS: OnceLock<Vec<common::Tiny>> = OnceLock::new();

/// Reads the fuzz input as a stream of small decisions; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn index(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.u32() as usize % len
        }
    }
    /// A size-like number: usually small or near an existing value, sometimes huge.
    fn number(&mut self, near: usize) -> usize {
        match self.byte() % 6 {
            0 => self.byte() as usize,
            1 => near.wrapping_add(self.byte() as usize % 9),
            2 => near.wrapping_sub(self.byte() as usize % 9),
            3 => self.u32() as usize,
            4 => self.u64() as usize,
            _ => usize::MAX - self.byte() as usize,
        }
    }
}

#[derive(Clone)]
struct Entry {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

const DTYPES: [&str; 12] = ["F16", "I32", "BF16", "F32", "U32", "I8", "U8", "BOOL", "F64", "I64", "F4", "Q4"];

fuzz_target!(|data: &[u8]| {
    let variants = VARIANTS.get_or_init(common::variants);
    let mut input = Input(data);
    let v = &variants[input.byte() as usize % variants.len()];

    let mut entries = Vec::with_capacity(v.tensors.len());
    let mut bytes = Vec::new();
    for t in &v.tensors {
        let start = bytes.len();
        bytes.extend_from_slice(&t.data);
        entries.push(Entry {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            start,
            end: bytes.len(),
        });
    }
    let mut header_len: Option<u64> = None;
    let mut pad = true;
    let mut lead_spaces = 0usize;
    // Entries from this index on go to a second shard (offsets rebased), if set.
    let mut split: Option<usize> = None;
    // Entries copied into the second shard as well (duplicates across shards).
    let mut copies: Vec<usize> = Vec::new();

    let edits = input.byte() % 8 + 1;
    for _ in 0..edits {
        let n = entries.len();
        match input.byte() % 15 {
            0 => {
                let i = input.index(n);
                if let Some(e) = entries.get_mut(i) {
                    e.start = input.number(e.start);
                }
            }
            1 => {
                let i = input.index(n);
                if let Some(e) = entries.get_mut(i) {
                    e.end = input.number(e.end);
                }
            }
            2 => {
                let i = input.index(n);
                if let Some(e) = entries.get_mut(i) {
                    let d = input.index(e.shape.len());
                    if let Some(dim) = e.shape.get_mut(d) {
                        *dim = input.number(*dim);
                    }
                }
            }
            3 => {
                let i = input.index(n);
                if let Some(e) = entries.get_mut(i) {
                    if input.byte() % 2 == 0 {
                        e.shape.pop();
                    } else {
                        let d = input.number(1);
                        e.shape.push(d);
                    }
                }
            }
            4 => {
                let i = input.index(n);
                let d = DTYPES[input.index(DTYPES.len())];
                if let Some(e) = entries.get_mut(i) {
                    e.dtype = d.to_string();
                }
            }
            5 => {
                // Rename to another entry's name (a duplicate key in one header), or perturb a character.
                let (i, j) = (input.index(n), input.index(n));
                let other = entries.get(j).map(|e| e.name.clone());
                let how = input.byte();
                if let (Some(e), Some(other)) = (entries.get_mut(i), other) {
                    if how % 2 == 0 {
                        e.name = other;
                    } else if !e.name.is_empty() {
                        let mut b = e.name.clone().into_bytes();
                        let k = how as usize % b.len();
                        b[k] = b[k].wrapping_add(1);
                        e.name = String::from_utf8_lossy(&b).into_owned();
                    }
                }
            }
            6 => {
                let i = input.index(n);
                if i < entries.len() {
                    entries.remove(i);
                }
            }
            7 => {
                // An extra tensor sharing another's bytes, or at the end with new bytes.
                let i = input.index(n);
                if let Some(mut e) = entries.get(i).cloned() {
                    e.name.push_str(".extra");
                    if input.byte() % 2 == 0 {
                        let len = e.end.saturating_sub(e.start).min(1 << 16);
                        e.start = bytes.len();
                        bytes.resize(bytes.len() + len, 0);
                        e.end = bytes.len();
                    }
                    entries.push(e);
                }
            }
            8 => {
                let real = header_json(&[]).len() as u64;
                header_len = Some(match input.byte() % 3 {
                    0 => input.u64(),
                    1 => real.wrapping_add(u64::from(input.byte())),
                    _ => u64::from(input.u32() % 100_000),
                });
            }
            9 => {
                let i = input.index(bytes.len());
                let b = input.byte();
                if let Some(x) = bytes.get_mut(i) {
                    *x ^= b | 1;
                }
            }
            10 => {
                if input.byte() % 2 == 0 {
                    let keep = input.index(bytes.len() + 1);
                    bytes.truncate(keep);
                } else {
                    let extra = input.byte() as usize;
                    bytes.resize(bytes.len() + extra, 0);
                }
            }
            11 => {
                // Write a value into some g_idx tensor: out of range, negative, or another valid group.
                let g: Vec<usize> = (0..n).filter(|&i| entries[i].name.ends_with(".g_idx")).collect();
                let pick = input.index(g.len());
                let value = match input.byte() % 3 {
                    0 => -(i32::from(input.byte())) - 1,
                    1 => i32::from(input.byte() % 8),
                    _ => input.u32() as i32,
                };
                if let Some(e) = g.get(pick).and_then(|&i| entries.get(i)) {
                    let count = e.end.saturating_sub(e.start) / 4;
                    // Offsets may already be mutated to anything: every step of this arithmetic is checked (an
                    // overflow here was a crash of the harness itself, found by CI's fuzz run).
                    let at = input.index(count).checked_mul(4).and_then(|o| e.start.checked_add(o));
                    if let Some(dst) = at.and_then(|at| bytes.get_mut(at..at.checked_add(4)?)) {
                        dst.copy_from_slice(&value.to_le_bytes());
                    }
                }
            }
            12 => {
                pad = !pad;
                lead_spaces = input.byte() as usize % 8;
            }
            13 => split = Some(input.index(n + 1)),
            _ => {
                let i = input.index(n);
                copies.push(i);
            }
        }
    }

    // Shard 1: entries before the split; shard 2: the rest, rebased to start at 0, plus the copies.
    let cut = split.unwrap_or(entries.len()).min(entries.len());
    let (first, rest) = entries.split_at(cut);
    let base = rest.iter().map(|e| e.start).min().unwrap_or(bytes.len()).min(bytes.len());
    let shard1 =
        encode(first, &bytes[..if split.is_some() { base } else { bytes.len() }], header_len, pad, lead_spaces);
    let mut second: Vec<Entry> = rest
        .iter()
        .map(|e| Entry { start: e.start.wrapping_sub(base), end: e.end.wrapping_sub(base), ..e.clone() })
        .collect();
    let mut data2 = bytes[base..].to_vec();
    for &i in &copies {
        if let Some(e) = entries.get(i) {
            let src = bytes.get(e.start..e.end).unwrap_or(&[]);
            let start = data2.len();
            data2.extend_from_slice(src);
            second.push(Entry { start, end: data2.len(), ..e.clone() });
        }
    }
    let two = split.is_some() || !copies.is_empty();
    let shard2 = encode(&second, &data2, None, true, 0);
    let shards_owned: Vec<(&str, &[u8])> = if two {
        vec![("model-00001-of-00002.safetensors", &shard1[..]), ("model-00002-of-00002.safetensors", &shard2[..])]
    } else {
        vec![("model.safetensors", &shard1[..])]
    };
    let shards: Vec<Shard<'_>> = shards_owned.iter().map(|&(name, bytes)| Shard { name, bytes }).collect();
    if let Ok(desc) = describe(&v.config, v.quant.as_ref(), &shards) {
        common::check_invariants(&desc, &shards);
    }
});

/// A safetensors file from possibly inconsistent entries: header length (real or forced), JSON, optional padding.
fn encode(entries: &[Entry], data: &[u8], header_len: Option<u64>, pad: bool, lead_spaces: usize) -> Vec<u8> {
    let header: Vec<HeaderEntry<'_>> = entries
        .iter()
        .map(|e| HeaderEntry { name: &e.name, dtype: &e.dtype, shape: &e.shape, data_offsets: (e.start, e.end) })
        .collect();
    let mut json = " ".repeat(lead_spaces).into_bytes();
    json.extend_from_slice(header_json(&header).as_bytes());
    if pad {
        let padded = json.len().next_multiple_of(8);
        json.resize(padded, b' ');
    }
    let mut out = header_len.unwrap_or(json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out
}

//! The Hugging Face kind of tokenizer: `tokenizer.json` through the `tokenizers` crate (the reference
//! implementation, so ids match Python `tokenizers`), with BOS/EOS and `add_bos_token` from
//! `tokenizer_config.json` as `transformers` reads them.
//!
//! What this adds to the crate: a piece table with kinds (special added tokens are [`PieceKind::Control`], as
//! SentencePiece's control pieces: both vanish when decoding), range-checked decoding (the crate silently drops
//! unknown ids), no truncation or padding (a `tokenizer.json` may carry either; a prompt is never cut or padded),
//! and errors that name the file. Only `tokenizer_config.json`'s special tokens and `add_bos_token` are read: its
//! chat template is not (the engine's own prompt templates are used instead).

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use crate::error::TokenizerError;
use crate::proto::{byte_piece_value, PieceEntry, PieceKind};

const LIBRARY: &str = "tokenizers";

/// Largest id accepted in a `tokenizer.json` (the piece table is a dense array up to the largest id). Real
/// vocabularies stay far below (Qwen: 151 646).
pub const MAX_JSON_VOCAB: usize = 1 << 24;

/// A loaded `tokenizer.json`. The crate's tokenizer is `Send + Sync` and immutable here.
pub(crate) struct HfTokenizer {
    lib: tokenizers::Tokenizer,
    pieces: Vec<PieceEntry>,
    pub unk_id: Option<u32>,
    /// The BOS token: `tokenizer_config.json`'s `bos_token`, else the special token the file's post-processor puts
    /// first.
    pub bos_id: Option<u32>,
    /// `tokenizer_config.json`'s `eos_token`.
    pub eos_id: Option<u32>,
    /// Whether a new sequence starts with BOS: `add_bos_token`, else whether the post-processor adds one.
    pub add_bos: bool,
}

/// Runs a library call, turning a panic (a library bug on strange input) into an error message.
fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        format!("the tokenizers library panicked: {msg}")
    })
}

/// Why bytes are not JSON, in the terms a user can act on; `not_json` is said of bytes that do not even start
/// like JSON.
fn diagnose(bytes: &[u8], e: &serde_json::Error, not_json: &str) -> String {
    if bytes.is_empty() {
        "the file is empty".to_owned()
    } else if bytes.starts_with(b"version https://git-lfs") {
        "it is a Git LFS pointer, not the file itself; run `git lfs pull` in the checkout".to_owned()
    } else if !bytes.trim_ascii_start().starts_with(b"{") {
        not_json.to_owned()
    } else {
        format!("invalid JSON: {e}")
    }
}

/// What `tokenizer_config.json` says about special tokens.
#[derive(Default)]
struct TokenizerConfig {
    bos_token: Option<String>,
    eos_token: Option<String>,
    add_bos_token: Option<bool>,
}

impl TokenizerConfig {
    fn parse(bytes: &[u8], origin: &str) -> Result<TokenizerConfig, TokenizerError> {
        let bad = |reason: String| TokenizerError::BadTokenizerConfig { origin: origin.to_owned(), reason };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(diagnose(bytes, &e, "it is not JSON")))?;
        let Value::Object(map) = value else {
            return Err(bad("expected a JSON object".to_owned()));
        };
        // A token is a string, or an AddedToken object with its text in "content"; null means none.
        let token = |key: &str| -> Result<Option<String>, TokenizerError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(bad(format!("{key} is an object without a string \"content\""))),
                },
                Some(other) => Err(bad(format!("{key} must be a string or an object with \"content\", not {other}"))),
            }
        };
        let add_bos_token = match map.get("add_bos_token") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => return Err(bad(format!("add_bos_token must be true or false, not {other}"))),
        };
        Ok(TokenizerConfig { bos_token: token("bos_token")?, eos_token: token("eos_token")?, add_bos_token })
    }
}

impl HfTokenizer {
    /// Loads the contents of a `tokenizer.json` (named `origin` in errors) and, when given, of the
    /// `tokenizer_config.json` beside it (`(bytes, origin)`).
    pub fn load(json: &[u8], origin: &str, config: Option<(&[u8], &str)>) -> Result<HfTokenizer, TokenizerError> {
        let bad = |reason: String| TokenizerError::NotTokenizerJson { origin: origin.to_owned(), reason };
        // Parsed once here for a clear error and for the model's unknown token and byte fallback, which the
        // crate does not expose for every model type.
        let value: Value = serde_json::from_slice(json).map_err(|e| {
            bad(diagnose(json, &e, "it is not JSON (a SentencePiece tokenizer.model is a different format)"))
        })?;
        let mut lib = no_panic(|| tokenizers::Tokenizer::from_bytes(json))
            .map_err(&bad)?
            .map_err(|e| bad(format!("the tokenizers library rejected it: {e}")))?;
        lib.with_truncation(None).map_err(|e| bad(format!("cannot turn its truncation off: {e}")))?;
        lib.with_padding(None);

        let pieces = piece_table(&lib, &value).map_err(&bad)?;
        let model = &value["model"];
        let unk_id = match (&model["unk_token"], &model["unk_id"]) {
            (Value::String(s), _) => lib.token_to_id(s),
            (_, Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .filter(|&id| (id as usize) < pieces.len());
        let mut tok = HfTokenizer { lib, pieces, unk_id, bos_id: None, eos_id: None, add_bos: false };
        if let Some(id) = unk_id {
            if tok.pieces[id as usize].kind == PieceKind::Normal {
                tok.pieces[id as usize].kind = PieceKind::Unknown;
            }
        }

        let (config, config_origin) = match config {
            Some((bytes, config_origin)) => (TokenizerConfig::parse(bytes, config_origin)?, config_origin),
            None => (TokenizerConfig::default(), "tokenizer_config.json"),
        };
        let bad_config =
            |reason: String| TokenizerError::BadTokenizerConfig { origin: config_origin.to_owned(), reason };
        let named = |key: &str, token: &Option<String>| -> Result<Option<u32>, TokenizerError> {
            match token {
                None => Ok(None),
                Some(t) => match tok.lib.token_to_id(t) {
                    Some(id) if (id as usize) < tok.pieces.len() => Ok(Some(id)),
                    _ => Err(bad_config(format!("{key} {t:?} is not in the vocabulary of {origin}"))),
                },
            }
        };
        let bos_named = named("bos_token", &config.bos_token)?;
        let eos_named = named("eos_token", &config.eos_token)?;
        let template_bos = tok.template_bos();
        tok.bos_id = bos_named.or(template_bos);
        tok.eos_id = eos_named;
        tok.add_bos = config.add_bos_token.unwrap_or(template_bos.is_some());
        if tok.add_bos && tok.bos_id.is_none() {
            return Err(bad_config("add_bos_token is true but no bos_token is named".to_owned()));
        }
        Ok(tok)
    }

    /// The special token the file's post-processor puts before a single sequence, if any (a template such as
    /// LLaMA's `<s> $A`): found by encoding a letter with and without special tokens.
    fn template_bos(&self) -> Option<u32> {
        let with = no_panic(|| self.lib.encode_fast("a", true)).ok()?.ok()?;
        let without = no_panic(|| self.lib.encode_fast("a", false)).ok()?.ok()?;
        let (with, without) = (with.get_ids(), without.get_ids());
        let first = *with.first()?;
        let special = self.pieces.get(first as usize).is_some_and(|p| p.kind == PieceKind::Control);
        (special && with.len() > without.len() && with[1..].starts_with(without)).then_some(first)
    }

    /// A token that decodes to ASCII letters or digits, and to twice that when doubled (so its text does not
    /// depend on its neighbours): the stream decoder's stand-in for history. Returns the id and its text's length.
    pub fn find_anchor(&self) -> Option<(u32, usize)> {
        (0..self.pieces.len().min(4096) as u32)
            .filter(|&id| self.pieces[id as usize].kind == PieceKind::Normal)
            .find_map(|id| {
                let text = self.decode(&[id]).ok()?;
                let ok = !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_alphanumeric())
                    && self.decode(&[id, id]).ok()? == text.repeat(2);
                ok.then_some((id, text.len()))
            })
    }

    /// The ids of `text`, without the post-processor's special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = no_panic(|| self.lib.encode_fast(text, false))
            .map_err(|reason| TokenizerError::Encode { library: LIBRARY, reason })?
            .map_err(|e| TokenizerError::Encode { library: LIBRARY, reason: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes in-range ids (the front checks the range), leaving special tokens out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        no_panic(|| self.lib.decode(ids, true))
            .map_err(|reason| TokenizerError::Decode { library: LIBRARY, reason })?
            .map_err(|e| TokenizerError::Decode { library: LIBRARY, reason: e.to_string() })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn piece(&self, id: u32) -> Option<&PieceEntry> {
        self.pieces.get(id as usize)
    }

    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.lib.token_to_id(piece).filter(|&id| (id as usize) < self.pieces.len())
    }
}

/// Every id up to the largest one with its token (as `decode` looks it up: added tokens first) and kind. Ids
/// without a token (holes in a hand-made vocabulary) get an empty, unused entry.
fn piece_table(lib: &tokenizers::Tokenizer, value: &Value) -> Result<Vec<PieceEntry>, String> {
    let largest = lib.get_vocab(true).into_values().max().ok_or("it has no tokens")?;
    let size = largest as usize + 1;
    if size > MAX_JSON_VOCAB {
        return Err(format!("token id {largest} is larger than the limit of {}", MAX_JSON_VOCAB - 1));
    }
    let added = lib.get_added_tokens_decoder();
    let byte_fallback = value["model"]["byte_fallback"].as_bool().unwrap_or(false);
    Ok((0..size as u32)
        .map(|id| match lib.id_to_token(id) {
            None => PieceEntry { text: String::new(), kind: PieceKind::Unused },
            Some(text) => {
                let kind = match added.get(&id) {
                    Some(t) if t.special => PieceKind::Control,
                    Some(_) => PieceKind::UserDefined,
                    None => match byte_piece_value(&text) {
                        Some(b) if byte_fallback => PieceKind::Byte(b),
                        _ => PieceKind::Normal,
                    },
                };
                PieceEntry { text, kind }
            }
        })
        .collect())
}

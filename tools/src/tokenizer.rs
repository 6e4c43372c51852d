//! The tokenizer of a checkpoint, whichever kind it ships: [`Tokenizer`] over a SentencePiece `tokenizer.model`
//! ([`crate::spm`]) or a Hugging Face `tokenizer.json` ([`crate::hf`]), chosen by [`Tokenizer::open`].
//!
//! Both kinds look the same from here: ids in `0..vocab_size()`, range-checked decoding, a piece table with
//! kinds, BOS/EOS ids, and whether a new sequence starts with BOS. SentencePiece models follow Baichuan's
//! conventions (BOS first, ids overridable from `config.json`); `tokenizer.json` ones follow
//! `tokenizer_config.json` (`bos_token`, `eos_token`, `add_bos_token`) as `transformers` does.

use std::fmt;
use std::path::Path;

// Re-exported here, where users meet them; each is defined next to what it describes.
pub use crate::error::TokenizerError;
use crate::hf::HfTokenizer;
pub use crate::proto::PieceKind;
use crate::spm::SentencePiece;
pub use crate::spm::{BAICHUAN_BOS_ID, BAICHUAN_EOS_ID};

/// Which file format a [`Tokenizer`] was loaded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// `tokenizer.model`, through the `sentencepiece` library.
    SentencePiece,
    /// `tokenizer.json` (+ `tokenizer_config.json`), through the `tokenizers` library.
    HuggingFace,
}

/// A loaded tokenizer of either kind. Thread-safe (`Send + Sync`): nothing changes after load.
pub struct Tokenizer {
    inner: Inner,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    /// Whether `encode(_, true)` puts BOS first.
    add_bos: bool,
    /// How errors and messages name the file ("tokenizer.json in DIR").
    origin: String,
    /// See the `stream` module: a piece whose decoded text is non-empty, used as a stand-in for the history when
    /// decoding a short window. `None` disables windowing (every push re-decodes the whole sequence).
    pub(crate) anchor: Option<Anchor>,
}

enum Inner {
    SentencePiece(SentencePiece),
    HuggingFace(Box<HfTokenizer>),
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
            .field("kind", &self.kind())
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// How a file is named in error messages: "tokenizer.model in DIR" for the usual layout, else the path as given.
fn describe_path(path: &Path) -> String {
    match (path.file_name(), path.parent()) {
        (Some(name), Some(dir)) if !dir.as_os_str().is_empty() => {
            format!("{} in {}", name.to_string_lossy(), dir.display())
        }
        _ => path.display().to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| TokenizerError::Read { path: path.to_path_buf(), source })
}

impl Tokenizer {
    /// Loads a checkpoint's tokenizer. `path` is the checkpoint directory, or the tokenizer file itself.
    ///
    /// In a directory, `tokenizer.model` (SentencePiece) is used when present, else `tokenizer.json` (Hugging
    /// Face) with the `tokenizer_config.json` beside it, if any. A file is read as `tokenizer.json` when its name
    /// ends in `.json`, else as a SentencePiece model. A path that is not a file and does not end in `.model` or
    /// `.json` is taken as a directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let path = path.as_ref();
        // A path that names no file is taken as a directory, so that a missing checkpoint is reported with the
        // file it should hold.
        let names_file = path.is_file() || path.extension().is_some_and(|e| e == "model" || e == "json");
        let file = if !names_file {
            let (model, json) = (path.join("tokenizer.model"), path.join("tokenizer.json"));
            // Reported as the missing tokenizer.model when neither is there (the message says either will do).
            if !model.exists() && json.is_file() {
                json
            } else {
                model
            }
        } else {
            path.to_path_buf()
        };
        let origin = describe_path(&file);
        if file.extension().is_some_and(|e| e == "json") {
            let json = read(&file)?;
            let config_path = file.with_file_name("tokenizer_config.json");
            let config = if config_path.is_file() { Some(read(&config_path)?) } else { None };
            let config_origin = describe_path(&config_path);
            Self::load_json(&json, origin, config.as_deref().map(|c| (c, config_origin.as_str())))
        } else {
            Self::load_sentencepiece(&read(&file)?, origin)
        }
    }

    /// Loads a serialized SentencePiece model (the contents of a `tokenizer.model`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer, TokenizerError> {
        Self::load_sentencepiece(bytes, "the tokenizer model (in-memory bytes)".to_owned())
    }

    /// Loads the contents of a `tokenizer.json`, with those of its `tokenizer_config.json` when there is one.
    pub fn from_json(json: &[u8], config: Option<&[u8]>) -> Result<Tokenizer, TokenizerError> {
        let config = config.map(|c| (c, "tokenizer_config.json (in-memory bytes)"));
        Self::load_json(json, "tokenizer.json (in-memory bytes)".to_owned(), config)
    }

    fn load_sentencepiece(bytes: &[u8], origin: String) -> Result<Tokenizer, TokenizerError> {
        let sp = SentencePiece::load(bytes, &origin)?;
        let anchor = if sp.has_denormalizer { None } else { sp.find_anchor() };
        Ok(Tokenizer {
            bos_id: Some(sp.bos_id),
            eos_id: Some(sp.eos_id),
            add_bos: true,
            anchor: anchor.map(|(id, text_len)| Anchor { id, text_len }),
            inner: Inner::SentencePiece(sp),
            origin,
        })
    }

    fn load_json(json: &[u8], origin: String, config: Option<(&[u8], &str)>) -> Result<Tokenizer, TokenizerError> {
        let hf = HfTokenizer::load(json, &origin, config)?;
        Ok(Tokenizer {
            bos_id: hf.bos_id,
            eos_id: hf.eos_id,
            add_bos: hf.add_bos,
            anchor: hf.find_anchor().map(|(id, text_len)| Anchor { id, text_len }),
            inner: Inner::HuggingFace(Box::new(hf)),
            origin,
        })
    }

    /// Overrides the BOS id (e.g. with `bos_token_id` from `config.json`).
    pub fn with_bos_id(mut self, id: u32) -> Result<Tokenizer, TokenizerError> {
        self.bos_id = Some(self.check_special("bos", id)?);
        Ok(self)
    }

    /// Overrides the EOS id (e.g. with `eos_token_id` from `config.json`).
    pub fn with_eos_id(mut self, id: u32) -> Result<Tokenizer, TokenizerError> {
        self.eos_id = Some(self.check_special("eos", id)?);
        Ok(self)
    }

    fn check_special(&self, which: &'static str, id: u32) -> Result<u32, TokenizerError> {
        if (id as usize) < self.vocab_size() {
            Ok(id)
        } else {
            Err(TokenizerError::SpecialIdOutOfRange { which, id, vocab_size: self.vocab_size() })
        }
    }

    /// Tokenizes `text`. `add_bos` asks for the start of a sequence: the BOS id comes first when the tokenizer
    /// starts sequences with one ([`Tokenizer::adds_bos`]). The empty string gives `[]` (or `[BOS]`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let body = match &self.inner {
            Inner::SentencePiece(sp) => sp.encode(text)?,
            Inner::HuggingFace(hf) => hf.encode(text)?,
        };
        match self.bos_id.filter(|_| add_bos && self.add_bos) {
            Some(bos) => Ok(std::iter::once(bos).chain(body).collect()),
            None => Ok(body),
        }
    }

    /// Turns ids back into text exactly as the reference library does (control pieces and special tokens
    /// vanish, bytes join into characters, invalid or incomplete byte sequences become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            return Err(self.out_of_range(id));
        }
        match &self.inner {
            Inner::SentencePiece(sp) => sp.decode(ids),
            Inner::HuggingFace(hf) => hf.decode(ids),
        }
    }

    fn out_of_range(&self, id: u32) -> TokenizerError {
        TokenizerError::IdOutOfRange { id, vocab_size: self.vocab_size() }
    }

    /// Which file format this tokenizer came from.
    pub fn kind(&self) -> TokenizerKind {
        match self.inner {
            Inner::SentencePiece(_) => TokenizerKind::SentencePiece,
            Inner::HuggingFace(_) => TokenizerKind::HuggingFace,
        }
    }

    /// The file it was loaded from, as messages name it ("tokenizer.json in DIR").
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of pieces; valid ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::SentencePiece(sp) => sp.vocab_size(),
            Inner::HuggingFace(hf) => hf.vocab_size(),
        }
    }

    /// Whether `encode(_, true)` starts with BOS: always for SentencePiece models; for `tokenizer.json`,
    /// `add_bos_token` of `tokenizer_config.json`, else whether the file's post-processor adds a BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos_id.is_some()
    }

    /// The BOS id, if the tokenizer names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The EOS id, if the tokenizer names one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The unknown-piece id (`None` for byte-level vocabularies, which have none).
    pub fn unk_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::SentencePiece(sp) => Some(sp.unk_id),
            Inner::HuggingFace(hf) => hf.unk_id,
        }
    }

    /// The piece text for `id` (SentencePiece: `▁` marks a space, bytes are `<0xHH>`; byte-level BPE: `Ġ` marks a
    /// space, and other bytes have stand-in characters).
    pub fn id_to_piece(&self, id: u32) -> Result<&str, TokenizerError> {
        self.entry(id).map(|p| p.text.as_str())
    }

    /// The id of a piece text, if the vocabulary has it.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        match &self.inner {
            Inner::SentencePiece(sp) => sp.piece_to_id(piece),
            Inner::HuggingFace(hf) => hf.piece_to_id(piece),
        }
    }

    /// What kind of piece `id` is.
    pub fn piece_kind(&self, id: u32) -> Result<PieceKind, TokenizerError> {
        self.entry(id).map(|p| p.kind)
    }

    fn entry(&self, id: u32) -> Result<&crate::proto::PieceEntry, TokenizerError> {
        let entry = match &self.inner {
            Inner::SentencePiece(sp) => sp.piece(id),
            Inner::HuggingFace(hf) => hf.piece(id),
        };
        entry.ok_or_else(|| self.out_of_range(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{test_tokenizer_json, test_tokenizer_model};

    fn tok() -> Tokenizer {
        Tokenizer::from_bytes(test_tokenizer_model()).unwrap()
    }

    #[test]
    fn special_ids_and_size() {
        let t = tok();
        assert_eq!(t.vocab_size(), 1000);
        assert_eq!((t.unk_id(), t.bos_id(), t.eos_id()), (Some(0), Some(1), Some(2)));
        assert_eq!(t.kind(), TokenizerKind::SentencePiece);
        assert!(t.adds_bos());
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
        assert_eq!((t.bos_id(), t.eos_id()), (Some(5), Some(7)));
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

    fn json_tok(config: Option<&str>) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_json(test_tokenizer_json(), config.map(str::as_bytes))
    }

    /// The committed tokenizer.json with its ByteLevel post-processor replaced by a LLaMA-style template that
    /// puts `<s>` first.
    fn json_with_bos_template() -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(test_tokenizer_json()).unwrap();
        v["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        });
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn json_special_tokens_kinds_and_round_trip() {
        let config =
            r#"{"add_bos_token": true, "bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>"}"#;
        let t = json_tok(Some(config)).unwrap();
        assert_eq!(t.kind(), TokenizerKind::HuggingFace);
        assert_eq!((t.vocab_size(), t.bos_id(), t.eos_id(), t.unk_id()), (1000, Some(1), Some(2), None));
        assert!(t.adds_bos());
        assert_eq!(t.piece_kind(1).unwrap(), PieceKind::Control);
        assert_eq!(t.piece_kind(3).unwrap(), PieceKind::Normal);
        assert_eq!(t.piece_to_id("</s>"), Some(2));
        assert_eq!(t.piece_to_id("no such token"), None);
        assert_eq!(t.encode("", true).unwrap(), vec![1]);
        assert_eq!(t.encode("", false).unwrap(), Vec::<u32>::new());
        for text in ["Hello world", "  two  spaces\n\nand\ttabs ", "我们今天去公园", "龘😀 emoji 👩‍💻", "x = 12345;"]
        {
            let ids = t.encode(text, true).unwrap();
            assert_eq!(ids[0], 1);
            assert_eq!(t.decode(&ids).unwrap(), text);
        }
        // Byte-level pieces: Ġ stands for the space.
        let ids = t.encode(" world", false).unwrap();
        assert!(t.id_to_piece(ids[0]).unwrap().starts_with('\u{120}'), "{:?}", t.id_to_piece(ids[0]));
        // Special tokens vanish from decoding; out-of-range ids are errors, not silently dropped.
        assert_eq!(t.decode(&[1, ids[0], 2, 0]).unwrap(), t.decode(&ids[..1]).unwrap());
        let err = t.decode(&[5, 1000]).unwrap_err().to_string();
        assert!(err.contains("1000") && err.contains("1000 pieces"), "{err}");
        assert!(t.id_to_piece(1000).is_err() && t.piece_kind(u32::MAX).is_err());
    }

    #[test]
    fn json_bos_follows_tokenizer_config_then_the_post_processor() {
        // No tokenizer_config.json and a post-processor that adds nothing: no BOS, no EOS.
        let t = json_tok(None).unwrap();
        assert!(!t.adds_bos() && t.bos_id().is_none() && t.eos_id().is_none());
        assert_eq!(t.encode("a", true).unwrap(), t.encode("a", false).unwrap());
        // add_bos_token false: named, but not added.
        let t = json_tok(Some(r#"{"add_bos_token": false, "bos_token": "<s>", "eos_token": null}"#)).unwrap();
        assert_eq!((t.bos_id(), t.eos_id(), t.adds_bos()), (Some(1), None, false));
        assert_eq!(t.encode("a", true).unwrap(), t.encode("a", false).unwrap());
        // A template that puts <s> first: BOS found and added unless the config says otherwise.
        let templated = json_with_bos_template();
        let t = Tokenizer::from_json(&templated, None).unwrap();
        assert_eq!((t.bos_id(), t.adds_bos()), (Some(1), true));
        assert_eq!(t.encode("a", true).unwrap()[0], 1);
        assert_eq!(t.encode("a", false).unwrap(), json_tok(None).unwrap().encode("a", false).unwrap());
        let t = Tokenizer::from_json(&templated, Some(br#"{"add_bos_token": false}"#)).unwrap();
        assert_eq!((t.bos_id(), t.adds_bos()), (Some(1), false));
        // Overrides as for SentencePiece.
        let t = json_tok(None).unwrap().with_bos_id(2).unwrap();
        assert_eq!(t.bos_id(), Some(2));
        assert!(json_tok(None).unwrap().with_eos_id(1000).is_err());
    }

    #[test]
    fn json_config_errors_name_the_file_and_field() {
        for (config, want) in [
            ("not json", "it is not JSON"),
            ("{\"bos_token\": ", "invalid JSON: EOF while parsing"),
            ("[1, 2]", "expected a JSON object"),
            (r#"{"add_bos_token": "yes"}"#, "add_bos_token must be true or false"),
            (r#"{"bos_token": 5}"#, "bos_token must be a string"),
            (r#"{"eos_token": {"text": "</s>"}}"#, "eos_token is an object without"),
            (r#"{"bos_token": "<bos>"}"#, "bos_token \"<bos>\" is not in the vocabulary"),
            (r#"{"add_bos_token": true}"#, "add_bos_token is true but no bos_token"),
        ] {
            let err = json_tok(Some(config)).unwrap_err().to_string();
            assert!(err.starts_with("tokenizer_config.json") && err.contains(want), "{config}: {err}");
        }
    }

    #[test]
    fn bad_json_bytes_are_errors_not_panics() {
        let good = test_tokenizer_json();
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n".to_vec(),
            test_tokenizer_model().to_vec(),
            b"{}".to_vec(),
            b"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}".to_vec(),
            good[..good.len() / 2].to_vec(),
        ];
        // Deterministic byte flips spread over the file, and in its structural part (the first 2000 bytes).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for i in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = good.to_vec();
            let span = if i % 2 == 0 { bytes.len() } else { 2000 };
            let at = (state % span as u64) as usize;
            bytes[at] ^= (state >> 32) as u8 | 1;
            cases.push(bytes);
        }
        let mut loaded = 0;
        for bytes in cases {
            if let Ok(t) = Tokenizer::from_json(&bytes, None) {
                loaded += 1;
                // Whatever loads must still behave.
                let ids = t.encode("Hello, 世界 😀\n", true).unwrap();
                t.decode(&ids).unwrap();
                let all: Vec<u32> = (0..t.vocab_size() as u32).collect();
                t.decode(&all).unwrap();
            }
        }
        assert!(loaded > 0, "no flipped file loaded: the flips only test the JSON parser");
        let err = Tokenizer::from_json(test_tokenizer_model(), None).unwrap_err().to_string();
        assert!(err.contains("not a Hugging Face tokenizer.json") && err.contains("not JSON"), "{err}");
        let err = Tokenizer::from_json(b"", None).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn open_chooses_tokenizer_model_first_then_tokenizer_json() {
        let dir = std::env::temp_dir().join(format!("engine-tools-choose-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = Tokenizer::open(&dir).unwrap_err().to_string();
        assert!(err.contains("tokenizer.model") && err.contains("tokenizer.json"), "{err}");
        std::fs::write(dir.join("tokenizer.json"), test_tokenizer_json()).unwrap();
        let t = Tokenizer::open(&dir).unwrap();
        assert_eq!((t.kind(), t.adds_bos()), (TokenizerKind::HuggingFace, false));
        assert_eq!(t.origin(), format!("tokenizer.json in {}", dir.display()));
        // tokenizer_config.json beside it is read ...
        std::fs::write(dir.join("tokenizer_config.json"), r#"{"add_bos_token": true, "bos_token": "<s>"}"#).unwrap();
        assert!(Tokenizer::open(&dir).unwrap().adds_bos());
        assert!(Tokenizer::open(dir.join("tokenizer.json")).unwrap().adds_bos());
        // ... and its errors name it.
        std::fs::write(dir.join("tokenizer_config.json"), "{").unwrap();
        let err = Tokenizer::open(&dir).unwrap_err().to_string();
        assert!(err.starts_with(&format!("tokenizer_config.json in {}: invalid JSON", dir.display())), "{err}");
        // With both files, tokenizer.model wins.
        std::fs::write(dir.join("tokenizer.model"), test_tokenizer_model()).unwrap();
        assert_eq!(Tokenizer::open(&dir).unwrap().kind(), TokenizerKind::SentencePiece);
        std::fs::remove_file(dir.join("tokenizer.model")).unwrap();
        std::fs::write(dir.join("tokenizer.json"), b"{\"version\": ").unwrap();
        let err = Tokenizer::open(&dir).unwrap_err().to_string();
        assert!(err.starts_with(&format!("tokenizer.json in {} is not a Hugging Face", dir.display())), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Compares `tokenizer.json` tokenization with the reference Python `tokenizers` (the version pinned in
//! tools/tests/requirements.txt, the same as the Rust crate's) on a few hundred strings (English, code, Chinese,
//! emoji, runs of whitespace) and random id sequences, for two byte-level BPE tokenizers: the committed test
//! tokenizer (GPT-2 style) and one the reference script trains on the same corpus (Llama-3 style: split regex,
//! whole-word lookup, special tokens at the end, a BOS template). Streaming decoding must agree too.
//!
//! The interpreter is `$ENGINE_PYTHON` (default `python3`). A missing interpreter or `tokenizers` package fails the
//! test with setup instructions: a comparison that silently does not run proves nothing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use engine_tools::{test_tokenizer_json, PieceKind, StreamDecoder, Tokenizer};
use serde_json::{json, Value};

mod common;
use common::{more_strings, strings};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pinned_version() -> String {
    let reqs = std::fs::read_to_string(manifest_dir().join("tests/requirements.txt")).unwrap();
    reqs.lines()
        .find_map(|l| l.trim().strip_prefix("tokenizers=="))
        .expect("tools/tests/requirements.txt pins tokenizers")
        .to_owned()
}

/// Runs tests/hf_reference.py on `request`, failing with setup help if it can't.
fn reference(request: &Value) -> Value {
    let python = std::env::var("ENGINE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = manifest_dir().join("tests/hf_reference.py");
    let setup = format!(
        "set up the reference with `pip install tokenizers=={}` (see tools/tests/requirements.txt), \
         or set ENGINE_PYTHON to a Python that has it",
        pinned_version()
    );
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python:?} ({e}); {setup}"));
    let input = serde_json::to_vec(request).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Write from a thread: the reply can be larger than a pipe buffer.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{} {} failed ({}):\n{stderr}\n{setup}", python, script.display(), output.status);
    written.unwrap();
    let reply: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("bad JSON from the reference script ({e}); stderr:\n{stderr}"));
    let version = reply["version"].as_str().unwrap_or("?");
    assert_eq!(version, pinned_version(), "the reference must run the tokenizers version the crate is");
    reply
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn matches_python_tokenizers() {
    let texts: Vec<String> = strings().into_iter().chain(more_strings()).collect();
    assert!(texts.len() >= 250, "{} strings", texts.len());
    let committed = std::str::from_utf8(test_tokenizer_json()).unwrap();
    let reply = reference(&json!({
        "corpus": manifest_dir().join("testdata/corpus.txt"),
        "tokenizers": [{"name": "committed gpt2-style", "json": committed}],
        "encode": texts,
        "seed": 7,
    }));
    let theirs = reply["tokenizers"].as_array().unwrap();
    assert_eq!(theirs.len(), 2);

    for t in theirs {
        let name = t["name"].as_str().unwrap();
        let tok = Tokenizer::from_json(t["json"].as_str().unwrap().as_bytes(), None).unwrap();
        assert_eq!(tok.vocab_size() as u64, t["vocab_size"].as_u64().unwrap(), "{name}: vocab size");
        let special = ids(&t["special"]);
        for id in 0..tok.vocab_size() as u32 {
            assert_eq!(json!(tok.id_to_piece(id).unwrap()), t["pieces"][id as usize], "{name}: piece {id}");
            let control = tok.piece_kind(id).unwrap() == PieceKind::Control;
            assert_eq!(control, special.contains(&id), "{name}: is {id} special");
        }
        // Without a tokenizer_config.json, BOS is what the post-processor adds: nothing for the committed one,
        // <|begin_of_text|> for the trained one.
        for (i, text) in texts.iter().enumerate() {
            let ours = tok.encode(text, false).unwrap();
            assert_eq!(ours, ids(&t["encode"][i]), "{name}: encode({text:?})");
            assert_eq!(tok.encode(text, true).unwrap(), ids(&t["encode_special"][i]), "{name}: encode({text:?}) + BOS");
        }
        for (i, seq) in t["decode_ids"].as_array().unwrap().iter().enumerate() {
            let seq = ids(seq);
            let decoded = tok.decode(&seq).unwrap();
            assert_eq!(json!(decoded), t["decode"][i], "{name}: decode({seq:?})");
            let mut stream = StreamDecoder::new(&tok);
            let mut streamed = String::new();
            for &id in &seq {
                streamed += &stream.push(id).unwrap();
            }
            streamed += &stream.finish().unwrap();
            assert_eq!(streamed, decoded, "{name}: streamed decode({seq:?})");
        }
    }
    let trained = Tokenizer::from_json(theirs[1]["json"].as_str().unwrap().as_bytes(), None).unwrap();
    assert!(trained.adds_bos() && trained.bos_id() == trained.piece_to_id("<|begin_of_text|>"));
    assert_eq!(trained.piece_kind(trained.piece_to_id("<think>").unwrap()).unwrap(), PieceKind::UserDefined);
}

//! Compares `tokenizer.json` tokenization with the reference Python `tokenizers` (the version pinned in
//! tools/tests/requirements.txt, the same as the Rust crate's) on a few hundred strings (English, code, Chinese,
//! emoji, runs of whitespace) and random id sequences, for two byte-level BPE tokenizers: the committed test
//! tokenizer (GPT-2 style) and one the reference script trains on the same corpus (Llama-3 style: split regex,
//! whole-word lookup, special tokens at the end, a BOS template). Streaming decoding must agree too.
//!
//! The interpreter is `$ENGINE_PYTHON` (default `python3`). A missing interpreter or `tokenizers` package fails the
//! test with setup instructions: a comparison that silently does not run proves nothing.

use engine_tools::{test_tokenizer_json, PieceKind, StreamDecoder, Tokenizer};
use serde_json::{json, Value};

mod common;
use common::{more_strings, run_reference, strings};

/// Runs tests/hf_reference.py on `request`; it must run the pinned `tokenizers`, the crate's own version.
fn reference(request: &Value) -> Value {
    run_reference("hf_reference.py", "tokenizers", true, request)
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
        "corpus": std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/corpus.txt"),
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

//! Compares tokenization with the reference Python `sentencepiece` (the
//! version pinned in tools/tests/requirements.txt) on a varied set of strings
//! and id sequences, for the test model and its 64000-piece padded version.
//!
//! The interpreter is `$ENGINE_PYTHON` (default `python3`). A missing
//! interpreter or `sentencepiece` package fails the test with setup
//! instructions: a comparison that silently does not run proves nothing.

use engine_tools::{padded_tokenizer_model, test_tokenizer_model, PieceKind, StreamDecoder, Tokenizer};
use serde_json::{json, Value};

mod common;
use common::{run_reference, strings, Rng};

/// Runs tests/sp_reference.py on `request` (another `sentencepiece` than the pinned one is only warned about).
fn reference(request: &Value) -> Value {
    run_reference("sp_reference.py", "sentencepiece", false, request)
}

fn id_sequences(tok: &Tokenizer, encoded: &[Vec<u32>], seed: u64) -> Vec<Vec<u32>> {
    let vocab = tok.vocab_size();
    let mut seqs: Vec<Vec<u32>> = encoded.to_vec();
    seqs.push((0..vocab as u32).collect());
    seqs.push(vec![1, 1, 2, 0, 0]);
    let mut rng = Rng(seed);
    for _ in 0..100 {
        let len = rng.below(25);
        seqs.push(
            (0..len)
                .map(|_| match rng.below(3) {
                    0 => rng.below(vocab) as u32,
                    1 => 3 + rng.below(256) as u32, // byte pieces in the test model
                    _ => rng.below(vocab.min(1000)) as u32,
                })
                .collect(),
        );
    }
    seqs
}

fn kind_name(kind: PieceKind) -> &'static str {
    match kind {
        PieceKind::Normal | PieceKind::UserDefined => "normal",
        PieceKind::Unknown => "unknown",
        PieceKind::Control => "control",
        PieceKind::Unused => "unused",
        PieceKind::Byte(_) => "byte",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn matches_python_sentencepiece() {
    let padded = padded_tokenizer_model(test_tokenizer_model(), 64000).unwrap();
    let models: Vec<(&str, &[u8])> = vec![("test model", test_tokenizer_model()), ("padded 64000", &padded)];
    let texts = strings();

    let mut request_models = Vec::new();
    let mut ours = Vec::new();
    for (i, (_, bytes)) in models.iter().enumerate() {
        let tok = Tokenizer::from_bytes(bytes).unwrap();
        let encoded: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, false).unwrap()).collect();
        let seqs = id_sequences(&tok, &encoded, 17 + i as u64);
        request_models.push(json!({
            "proto_hex": hex(bytes),
            "encode": texts,
            "decode": seqs,
        }));
        ours.push((tok, encoded, seqs));
    }
    let reply = reference(&json!({ "models": request_models }));

    for ((name, _), ((tok, encoded, seqs), theirs)) in
        models.iter().zip(ours.iter().zip(reply["models"].as_array().unwrap()))
    {
        assert_eq!(theirs["vocab_size"], json!(tok.vocab_size()), "{name}: vocab size");
        assert_eq!(theirs["bos_id"], json!(tok.bos_id()), "{name}: bos");
        assert_eq!(theirs["eos_id"], json!(tok.eos_id()), "{name}: eos");
        assert_eq!(theirs["unk_id"], json!(tok.unk_id()), "{name}: unk");
        for id in 0..tok.vocab_size() as u32 {
            let i = id as usize;
            assert_eq!(theirs["pieces"][i], json!(tok.id_to_piece(id).unwrap()), "{name}: piece {id}");
            assert_eq!(theirs["kinds"][i], json!(kind_name(tok.piece_kind(id).unwrap())), "{name}: kind of piece {id}");
        }
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(theirs["encode"][i], json!(encoded[i]), "{name}: encode({text:?})");
        }
        for (i, ids) in seqs.iter().enumerate() {
            let decoded = tok.decode(ids).unwrap();
            assert_eq!(theirs["decode"][i], json!(decoded), "{name}: decode({ids:?})");
            // Streaming must agree with the reference too.
            let mut stream = StreamDecoder::new(tok);
            let mut streamed = String::new();
            for &id in ids {
                streamed += &stream.push(id).unwrap();
            }
            streamed += &stream.finish().unwrap();
            assert_eq!(streamed, decoded, "{name}: streamed decode({ids:?})");
        }
        // Round trips: text decodes back unchanged (identity normalization,
        // no whitespace collapsing), except that a literal `▁` in the input
        // is the library's own space marker and comes back as a space.
        for (text, ids) in texts.iter().zip(encoded).filter(|(t, _)| !t.contains('\u{2581}')) {
            assert_eq!(&tok.decode(ids).unwrap(), text, "{name}: round trip");
        }
    }
    // Padding never changes how text encodes.
    let base_encode = &reply["models"][0]["encode"];
    assert_eq!(&reply["models"][1]["encode"], base_encode, "padded model encodes differently");
}

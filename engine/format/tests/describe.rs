//! `describe` on tiny in-memory checkpoints: every layout variant that must load, and one test per class of bad
//! input, checking the error kind and that the message names the file and the tensor.

use engine_format::gptq::Bits;
use engine_format::testutil::{serialize, tiny_checkpoint, RawTensor, TinySpec};
use engine_format::{
    check_index, describe, parse_index, parse_model_config, parse_quant_config, Arch, DType, FormatError,
    FormatErrorKind, Linear, ModelDesc, Shard, TorchDtype,
};

const SHARD: &str = "gptq_model-4bit-8g.safetensors";

fn describe_bytes(spec: &TinySpec, shards: &[(&str, &[u8])]) -> Result<ModelDesc, FormatError> {
    let config = parse_model_config("config.json", spec.config_json().as_bytes()).unwrap();
    let quant = spec.quant_json().map(|q| parse_quant_config("quantize_config.json", q.as_bytes()).unwrap());
    let shards: Vec<Shard<'_>> = shards.iter().map(|&(name, bytes)| Shard { name, bytes }).collect();
    let desc = describe(&config, quant.as_ref(), &shards)?;
    check_invariants(&desc, &shards);
    Ok(desc)
}

/// Build the spec's tensors, let `edit` break them, and describe the one-shard result.
fn with_edit(spec: &TinySpec, edit: impl FnOnce(&mut Vec<RawTensor>)) -> Result<ModelDesc, FormatError> {
    let mut tensors = spec.tensors();
    edit(&mut tensors);
    describe_bytes(spec, &[(SHARD, &serialize(&tensors))])
}

fn bytes_of(spec: &TinySpec) -> Vec<u8> {
    serialize(&spec.tensors())
}

fn find<'a>(tensors: &'a mut [RawTensor], name: &str) -> &'a mut RawTensor {
    tensors.iter_mut().find(|t| t.name == name).unwrap()
}

/// What `TensorRef` promises to the rest of the engine.
fn check_invariants(desc: &ModelDesc, shards: &[Shard<'_>]) {
    let mut all = vec![&desc.embed_tokens, &desc.norm, &desc.lm_head];
    for l in &desc.layers {
        all.extend([&l.input_layernorm, &l.post_attention_layernorm]);
        for lin in l.qkv.parts.iter().chain([&l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj]) {
            match lin {
                Linear::Gptq { qweight, qzeros, scales, g_idx, .. } => all.extend([qweight, qzeros, scales, g_idx]),
                Linear::Dense { weight, .. } => all.push(weight),
            }
        }
    }
    for t in all {
        let shard = &shards[t.shard];
        assert!(t.range().end <= shard.bytes.len(), "{} outside {}", t.name, shard.name);
        assert_eq!(t.start % t.dtype.size(), 0, "{} misaligned", t.name);
        assert_eq!(t.len, t.shape.iter().product::<usize>() * t.dtype.size(), "{}", t.name);
    }
}

fn assert_err(r: Result<ModelDesc, FormatError>, kind: FormatErrorKind, file: &str, subject: Option<&str>) -> String {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.file, file, "{e}");
    assert_eq!(e.subject.as_deref(), subject, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(file), "{msg}");
    if let Some(s) = subject {
        assert!(msg.contains(s), "{msg}");
    }
    msg
}

// ---- layouts that must load ----

#[test]
fn baichuan_gptq_loads() {
    let spec = TinySpec::baichuan();
    let d = describe_bytes(&spec, &[(SHARD, &bytes_of(&spec))]).unwrap();
    assert_eq!(d.config.arch, Arch::Baichuan);
    assert_eq!(d.layers.len(), 2);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let l = &d.layers[1];
    assert_eq!(l.qkv.parts.len(), 1);
    assert_eq!((l.qkv.in_features(), l.qkv.out_features()), (16, 48));
    assert_eq!(l.qkv.parts[0].clone(), l.qkv.parts[0]);
    match &l.down_proj {
        Linear::Gptq {
            in_features, out_features, group_size, groups, g_idx_is_trivial, symmetric, qweight, ..
        } => {
            assert_eq!((*in_features, *out_features, *group_size, *groups), (24, 16, 8, 3));
            assert!(g_idx_is_trivial);
            assert!(symmetric, "every stored zero is 7");
            assert_eq!(qweight.shape, [3, 16]);
            assert_eq!(qweight.name, "model.layers.1.mlp.down_proj.qweight");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.shards, [SHARD]);
    assert_ne!(d.lm_head, d.embed_tokens);
}

#[test]
fn llama_gqa_act_order_loads() {
    let spec = TinySpec::llama();
    let (config, quant, shard) = tiny_checkpoint();
    assert_eq!(config, spec.config_json().as_bytes());
    let d = describe_bytes(&spec, &[(SHARD, &shard)]).unwrap();
    assert_eq!(d.config.arch, Arch::Llama);
    assert_eq!((d.config.num_key_value_heads, d.config.head_dim), (2, 8));
    assert!(!quant.is_empty());
    let parts = &d.layers[0].qkv.parts;
    let outs: Vec<usize> = parts.iter().map(Linear::out_features).collect();
    assert_eq!(outs, [32, 16, 16]);
    for p in parts {
        match p {
            Linear::Gptq { g_idx_is_trivial, groups, symmetric, .. } => {
                assert!(!g_idx_is_trivial && *groups == 4);
                assert!(!symmetric, "random zero points");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(d.quant.as_ref().is_some_and(|q| q.desc_act && !q.sym));
}

#[test]
fn group_sizes_and_single_group() {
    for g in [Some(8), Some(16), Some(24), None] {
        let spec = TinySpec { group_size: g, ..TinySpec::baichuan() };
        let d = describe_bytes(&spec, &[(SHARD, &bytes_of(&spec))]).unwrap();
        match &d.layers[0].down_proj {
            Linear::Gptq { group_size, groups, g_idx_is_trivial, .. } => {
                let want = g.unwrap_or(24);
                assert_eq!((*group_size, *groups), (want, 24usize.div_ceil(want)), "{g:?}");
                assert!(g_idx_is_trivial);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn eight_bit_gptq_loads_with_four_values_per_word() {
    // intermediate 20: a multiple of 4 (the 8-bit packing) but not of 8; act-order, asym, GQA.
    for spec in [
        TinySpec { bits: 8, intermediate: 20, ..TinySpec::llama() },
        TinySpec { bits: 8, group_size: None, ..TinySpec::baichuan() },
    ] {
        let d = describe_bytes(&spec, &[(SHARD, &bytes_of(&spec))]).unwrap();
        assert_eq!(d.quant.as_ref().map(|q| q.bits), Some(8));
        for l in &d.layers {
            for lin in l.linears() {
                let Linear::Gptq {
                    bits,
                    qweight,
                    qzeros,
                    scales,
                    g_idx,
                    in_features: k,
                    out_features: n,
                    groups,
                    symmetric,
                    ..
                } = lin
                else {
                    panic!("{lin:?}")
                };
                assert_eq!(*bits, Bits::Eight);
                assert_eq!(*symmetric, spec.sym, "8-bit zero points 127 in every byte, or random");
                assert_eq!(qweight.shape, [k / 4, *n], "{}", qweight.name);
                assert_eq!(qzeros.shape, [*groups, n / 4], "{}", qzeros.name);
                assert_eq!(scales.shape, [*groups, *n]);
                assert_eq!(g_idx.shape, [*k]);
            }
        }
        let down = &d.layers[0].down_proj;
        assert_eq!(down.in_features(), spec.intermediate);
    }
}

#[test]
fn eight_bit_config_over_four_bit_tensors_names_the_shape() {
    // quantize_config.json says 8 bits, the tensors are packed 8 values per word: the first qweight is half as tall.
    let four = TinySpec::baichuan();
    let eight = TinySpec { bits: 8, ..four.clone() };
    let name = "model.layers.0.self_attn.W_pack.qweight";
    let msg = assert_err(
        describe_bytes(&eight, &[(SHARD, &bytes_of(&four))]),
        FormatErrorKind::WrongShape,
        SHARD,
        Some(name),
    );
    assert!(msg.contains("expected shape [4, 48] [in_features / 4, out_features] (8-bit), found [2, 48]"), "{msg}");
    // And the other way round.
    let msg = assert_err(
        describe_bytes(&four, &[(SHARD, &bytes_of(&eight))]),
        FormatErrorKind::WrongShape,
        SHARD,
        Some(name),
    );
    assert!(msg.contains("[in_features / 8, out_features] (4-bit), found [4, 48]"), "{msg}");
    // An 8-bit qzeros packed as 4-bit: [groups, N/8] instead of [groups, N/4].
    let qz = "model.layers.1.mlp.gate_proj.qzeros";
    let r = with_edit(&eight, |t| {
        let z = find(t, qz);
        z.shape[1] /= 2;
        let len = z.data.len() / 2;
        z.data.truncate(len);
    });
    let msg = assert_err(r, FormatErrorKind::WrongShape, SHARD, Some(qz));
    assert!(msg.contains("expected shape [2, 6] [groups, out_features / 4] (8-bit), found [2, 3]"), "{msg}");
}

#[test]
fn packing_decides_which_widths_divide() {
    // 20 is a multiple of 4 but not of 8: fine at 8 bits, impossible at 4.
    let spec = TinySpec { intermediate: 20, ..TinySpec::baichuan() };
    let eight = TinySpec { bits: 8, ..spec.clone() };
    describe_bytes(&eight, &[(SHARD, &bytes_of(&eight))]).unwrap();
    let e = describe_bytes(&spec, &[(SHARD, &bytes_of(&eight))]).unwrap_err();
    assert_eq!(
        (e.kind, e.file.as_str(), e.subject.as_deref()),
        (FormatErrorKind::InvalidValue, "config.json", Some("intermediate_size"))
    );
    assert!(e.detail.contains("not a multiple of 8") && e.detail.contains("int4"), "{e}");
    // 22 is not a multiple of 4 either.
    let odd = TinySpec { intermediate: 22, ..eight.clone() };
    let e = describe_bytes(&odd, &[(SHARD, &bytes_of(&eight))]).unwrap_err();
    assert!(e.detail.contains("not a multiple of 4") && e.detail.contains("int8"), "{e}");
}

#[test]
fn bf16_tensors_load_where_the_config_says_bfloat16() {
    let floats = |d: &ModelDesc| -> Vec<(String, DType)> {
        d.tensors().iter().filter(|t| t.dtype != DType::I32).map(|t| (t.name.clone(), t.dtype)).collect()
    };
    // Unquantized bfloat16 (tied embeddings, GQA): every tensor is BF16, the linears dense.
    let spec = TinySpec { quantized: false, float_dtype: DType::BF16, tie_word_embeddings: true, ..TinySpec::llama() };
    let d = describe_bytes(&spec, &[("model.safetensors", &bytes_of(&spec))]).unwrap();
    assert_eq!(d.config.torch_dtype, TorchDtype::Bfloat16);
    assert!(floats(&d).iter().all(|(_, t)| *t == DType::BF16), "{:?}", floats(&d));
    assert!(matches!(&d.layers[1].gate_proj, Linear::Dense { weight, .. } if weight.dtype == DType::BF16));
    // GPTQ of a bfloat16 model: embeddings and norms BF16, scales F16 as AutoGPTQ writes them.
    let spec = TinySpec { float_dtype: DType::BF16, ..TinySpec::baichuan() };
    let d = describe_bytes(&spec, &[(SHARD, &bytes_of(&spec))]).unwrap();
    for (name, t) in floats(&d) {
        assert_eq!(t, if name.ends_with(".scales") { DType::F16 } else { DType::BF16 }, "{name}");
    }
    // A bfloat16 config over F16 tensors (GPTQ repositories of bfloat16 models keep the original torch_dtype).
    let f16 = TinySpec::baichuan();
    let d = describe_bytes(&spec, &[(SHARD, &bytes_of(&f16))]).unwrap();
    assert!(floats(&d).iter().all(|(_, t)| *t == DType::F16));
}

#[test]
fn bf16_where_it_does_not_belong_is_named() {
    // BF16 tensors under a float16 config.
    let f16 = TinySpec { quantized: false, ..TinySpec::baichuan() };
    let bf16 = TinySpec { float_dtype: DType::BF16, ..f16.clone() };
    let r = describe_bytes(&f16, &[("model.safetensors", &bytes_of(&bf16))]);
    let msg = assert_err(r, FormatErrorKind::WrongDtype, "model.safetensors", Some("model.embed_tokens.weight"));
    assert!(msg.contains("expected F16, found BF16: config.json says torch_dtype \"float16\""), "{msg}");
    // BF16 scales, even in a bfloat16 checkpoint.
    let spec = TinySpec { float_dtype: DType::BF16, ..TinySpec::baichuan() };
    let name = "model.layers.0.mlp.up_proj.scales";
    let r = with_edit(&spec, |t| find(t, name).dtype = "BF16".into());
    let msg = assert_err(r, FormatErrorKind::WrongDtype, SHARD, Some(name));
    assert!(msg.contains("expected F16, found BF16: GPTQ scales are float16"), "{msg}");
    // F32 is neither.
    let r = with_edit(&TinySpec { quantized: false, ..spec.clone() }, |t| {
        let w = find(t, "lm_head.weight");
        w.dtype = "F32".into();
        w.shape[0] /= 2;
    });
    let msg = assert_err(r, FormatErrorKind::WrongDtype, SHARD, Some("lm_head.weight"));
    assert!(msg.contains("expected F16 or BF16, found F32") && msg.contains("convert"), "{msg}");
}

#[test]
fn fp16_and_tied_embeddings_load() {
    let spec = TinySpec { quantized: false, tie_word_embeddings: true, ..TinySpec::llama() };
    let d = describe_bytes(&spec, &[("model.safetensors", &bytes_of(&spec))]).unwrap();
    assert!(d.quant.is_none());
    assert_eq!(d.lm_head, d.embed_tokens);
    match &d.layers[0].o_proj {
        Linear::Dense { weight, in_features, out_features } => {
            assert_eq!((weight.shape.as_slice(), *in_features, *out_features), (&[32, 32][..], 32, 32));
        }
        other => panic!("{other:?}"),
    }
    // An lm_head.weight that a tied config ignores is reported, not an error.
    let mut tensors = spec.tensors();
    tensors.push(RawTensor {
        name: "lm_head.weight".into(),
        dtype: "F16".into(),
        shape: vec![32, 32],
        data: vec![0; 2048],
    });
    let d = describe_bytes(&spec, &[("model.safetensors", &serialize(&tensors))]).unwrap();
    assert_eq!(d.warnings.len(), 1);
    assert!(d.warnings[0].contains("lm_head.weight"), "{:?}", d.warnings);
}

#[test]
fn two_shards_load_and_keep_shard_numbers() {
    let spec = TinySpec::llama();
    let tensors = spec.tensors();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let (a, b) = (serialize(a), serialize(b));
    let d =
        describe_bytes(&spec, &[("model-00001-of-00002.safetensors", &a), ("model-00002-of-00002.safetensors", &b)])
            .unwrap();
    assert_eq!(d.shards.len(), 2);
    assert_eq!(d.layers[0].qkv.parts[0].in_features(), 32);
    assert_eq!(d.lm_head.shard, 1);
}

#[test]
fn extra_tensors_are_warnings() {
    let spec = TinySpec::baichuan();
    let d = with_edit(&spec, |t| {
        for l in 0..2 {
            t.push(RawTensor {
                name: format!("model.layers.{l}.mlp.up_proj.bias"),
                dtype: "F16".into(),
                shape: vec![24],
                data: vec![0; 48],
            });
        }
        t.push(RawTensor { name: "rotary.inv_freq".into(), dtype: "F32".into(), shape: vec![4], data: vec![0; 16] });
    })
    .unwrap();
    assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    assert!(d.warnings.iter().any(|w| w.contains("model.layers.{i}.mlp.up_proj.bias") && w.contains("2 layers")));
    assert!(d.warnings.iter().any(|w| w.contains("rotary.inv_freq") && w.contains(SHARD)));
}

// ---- one test per class of bad input ----

#[test]
fn empty_file() {
    let spec = TinySpec::baichuan();
    let msg = assert_err(describe_bytes(&spec, &[(SHARD, b"")]), FormatErrorKind::Truncated, SHARD, None);
    assert!(msg.contains("empty"), "{msg}");
    assert_err(describe_bytes(&spec, &[(SHARD, b"\x10\0\0")]), FormatErrorKind::Truncated, SHARD, None);
}

#[test]
fn truncated_file() {
    let spec = TinySpec::baichuan();
    let bytes = bytes_of(&spec);
    let msg = assert_err(
        describe_bytes(&spec, &[(SHARD, &bytes[..bytes.len() - 5])]),
        FormatErrorKind::Truncated,
        SHARD,
        None,
    );
    assert!(msg.contains("truncated"), "{msg}");
    // Cut inside the header.
    assert_err(describe_bytes(&spec, &[(SHARD, &bytes[..100])]), FormatErrorKind::Truncated, SHARD, None);
}

#[test]
fn trailing_bytes() {
    let spec = TinySpec::baichuan();
    let mut bytes = bytes_of(&spec);
    bytes.extend_from_slice(&[0; 4]);
    assert_err(describe_bytes(&spec, &[(SHARD, &bytes)]), FormatErrorKind::InvalidOffsets, SHARD, None);
}

#[test]
fn header_length_past_end() {
    let spec = TinySpec::baichuan();
    let mut bytes = bytes_of(&spec);
    let past = bytes.len() as u64;
    bytes[..8].copy_from_slice(&past.to_le_bytes());
    let msg = assert_err(describe_bytes(&spec, &[(SHARD, &bytes)]), FormatErrorKind::Truncated, SHARD, None);
    assert!(msg.contains(&past.to_string()), "{msg}");
}

#[test]
fn absurd_header_length() {
    let spec = TinySpec::baichuan();
    for n in [u64::MAX, 100_000_001, 1 << 40] {
        let mut bytes = bytes_of(&spec);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        assert_err(describe_bytes(&spec, &[(SHARD, &bytes)]), FormatErrorKind::HeaderTooLarge, SHARD, None);
    }
}

#[test]
fn invalid_utf8_header() {
    let spec = TinySpec::baichuan();
    let mut bytes = bytes_of(&spec);
    bytes[10] = 0xFF;
    let msg = assert_err(describe_bytes(&spec, &[(SHARD, &bytes)]), FormatErrorKind::InvalidHeader, SHARD, None);
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[test]
fn invalid_json_header() {
    let spec = TinySpec::baichuan();
    let mut bytes = bytes_of(&spec);
    bytes[8] = b'[';
    assert_err(describe_bytes(&spec, &[(SHARD, &bytes)]), FormatErrorKind::InvalidHeader, SHARD, None);
    // Valid JSON, unknown dtype.
    let r = with_edit(&spec, |t| t[0].dtype = "Q4".into());
    assert_err(r, FormatErrorKind::InvalidHeader, SHARD, None);
}

#[test]
fn overlapping_offsets() {
    let spec = TinySpec::baichuan();
    let bytes = bytes_of(&spec);
    // Make the second tensor start 4 bytes early (padded with a space so the header length stays the same): it
    // overlaps the first.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let first_len = spec.tensors()[0].data.len();
    let needle = format!("\"data_offsets\":[{first_len},");
    let patched = header.replacen(
        &needle,
        &format!("\"data_offsets\":[{:<w$},", first_len - 4, w = first_len.to_string().len()),
        1,
    );
    assert_ne!(patched, header);
    let mut bad = bytes[..8].to_vec();
    bad.extend_from_slice(patched.as_bytes());
    bad.extend_from_slice(&bytes[8 + n..]);
    let second = spec.tensors()[1].name.clone();
    let msg =
        assert_err(describe_bytes(&spec, &[(SHARD, &bad)]), FormatErrorKind::InvalidOffsets, SHARD, Some(&second));
    assert!(msg.contains("overlap"), "{msg}");
}

#[test]
fn offsets_disagreeing_with_shape() {
    let spec = TinySpec::baichuan();
    // Header says [3, 48] but the data is the size of [2, 48]: the byte range no longer matches.
    let r = with_edit(&spec, |t| t[0].shape = vec![t[0].shape[0] + 1, t[0].shape[1]]);
    let name = spec.tensors()[0].name.clone();
    let msg = assert_err(r, FormatErrorKind::InvalidOffsets, SHARD, Some(&name));
    assert!(msg.contains("need"), "{msg}");
}

#[test]
fn wrong_dtype() {
    let spec = TinySpec::baichuan();
    let r = with_edit(&spec, |t| find(t, "model.norm.weight").dtype = "BF16".into());
    let msg = assert_err(r, FormatErrorKind::WrongDtype, SHARD, Some("model.norm.weight"));
    assert!(msg.contains("expected F16, found BF16") && msg.contains("convert"), "{msg}");
    let r = with_edit(&spec, |t| find(t, "model.layers.0.mlp.gate_proj.qweight").dtype = "U32".into());
    assert_err(r, FormatErrorKind::WrongDtype, SHARD, Some("model.layers.0.mlp.gate_proj.qweight"));
}

#[test]
fn wrong_shape() {
    let spec = TinySpec::baichuan();
    let name = "model.layers.1.self_attn.o_proj.scales";
    let r = with_edit(&spec, |t| {
        let s = find(t, name);
        s.shape = vec![s.shape[1], s.shape[0]];
    });
    let msg = assert_err(r, FormatErrorKind::WrongShape, SHARD, Some(name));
    assert!(msg.contains("expected shape [2, 16]") && msg.contains("found [16, 2]"), "{msg}");
}

#[test]
fn missing_tensor() {
    let spec = TinySpec::baichuan();
    let name = "model.layers.1.mlp.up_proj.g_idx";
    let r = with_edit(&spec, |t| t.retain(|t| t.name != name));
    assert_err(r, FormatErrorKind::MissingTensor, SHARD, Some(name));
    // Unquantized tensors under a GPTQ config: the message says so.
    let f16 = TinySpec { quantized: false, ..TinySpec::baichuan() };
    let r = describe_bytes(&spec, &[(SHARD, &bytes_of(&f16))]);
    let msg = assert_err(r, FormatErrorKind::MissingTensor, SHARD, Some("model.layers.0.self_attn.W_pack.qweight"));
    assert!(msg.contains("unquantized"), "{msg}");
    let r = with_edit(&spec, |t| t.retain(|t| t.name != "lm_head.weight"));
    let msg = assert_err(r, FormatErrorKind::MissingTensor, SHARD, Some("lm_head.weight"));
    assert!(msg.contains("tie_word_embeddings"), "{msg}");
}

#[test]
fn duplicate_tensor_across_shards() {
    let spec = TinySpec::baichuan();
    let tensors = spec.tensors();
    let a = serialize(&tensors);
    let b = serialize(&tensors[..1]);
    let r = describe_bytes(&spec, &[("a.safetensors", &a), ("b.safetensors", &b)]);
    let msg = assert_err(r, FormatErrorKind::Inconsistent, "b.safetensors", Some(&tensors[0].name));
    assert!(msg.contains("a.safetensors"), "{msg}");
}

#[test]
fn g_idx_out_of_range() {
    let spec = TinySpec::baichuan();
    let name = "model.layers.0.mlp.down_proj.g_idx";
    for bad in [3i32, -1, i32::MAX] {
        let r = with_edit(&spec, |t| find(t, name).data[20..24].copy_from_slice(&bad.to_le_bytes()));
        let msg = assert_err(r, FormatErrorKind::ValueOutOfRange, SHARD, Some(name));
        assert!(msg.contains(&format!("entry 5 is {bad}")) && msg.contains("0..3"), "{msg}");
    }
}

#[test]
fn misaligned_tensor() {
    let spec = TinySpec::baichuan();
    // A 2-byte extra tensor first shifts every I32 tensor off its 4-byte alignment.
    let r = with_edit(&spec, |t| {
        t.insert(0, RawTensor { name: "a.pad".into(), dtype: "F16".into(), shape: vec![1], data: vec![0; 2] })
    });
    let msg = assert_err(r, FormatErrorKind::Misaligned, SHARD, Some("model.layers.0.self_attn.W_pack.qweight"));
    assert!(msg.contains("multiple of 4"), "{msg}");
}

#[test]
fn gptq_needs_multiples_of_8() {
    let spec = TinySpec { hidden: 20, heads: 2, ..TinySpec::baichuan() };
    let r = describe_bytes(&spec, &[(SHARD, &bytes_of(&TinySpec::baichuan()))]);
    let e = r.unwrap_err();
    assert_eq!((e.kind, e.file.as_str()), (FormatErrorKind::InvalidValue, "config.json"), "{e}");
}

#[test]
fn naming_mismatch_is_explained() {
    let baichuan = TinySpec::baichuan();
    let llama_named = TinySpec { arch: Arch::Llama, ..TinySpec::baichuan() };
    let r = describe_bytes(&baichuan, &[(SHARD, &bytes_of(&llama_named))]);
    let msg = assert_err(r, FormatErrorKind::MissingTensor, SHARD, Some("model.layers.0.self_attn.W_pack.qweight"));
    assert!(msg.contains("LLaMA naming"), "{msg}");
}

// ---- shard index ----

#[test]
fn shard_index_checks() {
    let spec = TinySpec::baichuan();
    let tensors = spec.tensors();
    let (a, b) = tensors.split_at(5);
    let (sa, sb) = (serialize(a), serialize(b));
    let shards = [Shard { name: "m-1.safetensors", bytes: &sa }, Shard { name: "m-2.safetensors", bytes: &sb }];
    let map = |moved: Option<&str>| {
        let entries: Vec<String> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = if i < 5 { "m-1.safetensors" } else { "m-2.safetensors" };
                let f = if Some(t.name.as_str()) == moved { "m-1.safetensors" } else { f };
                format!("\"{}\": \"{f}\"", t.name)
            })
            .collect();
        format!("{{\"metadata\": {{\"total_size\": 1}}, \"weight_map\": {{{}}}}}", entries.join(", "))
    };
    let index = parse_index("model.safetensors.index.json", map(None).as_bytes()).unwrap();
    assert_eq!(index.files(), ["m-1.safetensors", "m-2.safetensors"]);
    check_index("model.safetensors.index.json", &index, &shards).unwrap();

    let wrong = parse_index("i.json", map(Some("model.norm.weight")).as_bytes()).unwrap();
    let e = check_index("i.json", &wrong, &shards).unwrap_err();
    assert_eq!((e.kind, e.subject.as_deref()), (FormatErrorKind::Inconsistent, Some("model.norm.weight")));

    let e = check_index("i.json", &index, &shards[..1]).unwrap_err();
    assert_eq!(e.kind, FormatErrorKind::Inconsistent);
    assert!(e.detail.contains("does not contain"), "{e}");

    for bad in
        [&br#"{"weight_map": {"a": "../x.safetensors"}}"#[..], br#"{"weight_map": []}"#, br#"{"weight_map": {}}"#]
    {
        assert_eq!(parse_index("i.json", bad).unwrap_err().kind, FormatErrorKind::InvalidValue);
    }
    assert_eq!(parse_index("i.json", b"{}").unwrap_err().kind, FormatErrorKind::MissingField);
    assert_eq!(parse_index("i.json", b"{").unwrap_err().kind, FormatErrorKind::InvalidJson);
}

#[test]
fn hand_built_configs_are_checked_not_trusted() {
    let spec = TinySpec::baichuan();
    let shard = bytes_of(&spec);
    let shards = [Shard { name: SHARD, bytes: &shard }];
    let good = parse_model_config("config.json", spec.config_json().as_bytes()).unwrap();
    let quant = parse_quant_config("q", spec.quant_json().unwrap().as_bytes()).unwrap();
    let mut zero_group = quant.clone();
    zero_group.group_size = Some(0);
    assert_eq!(describe(&good, Some(&zero_group), &shards).unwrap_err().kind, FormatErrorKind::InvalidValue);
    for bits in [0, 3, 5, 16] {
        let mut other = quant.clone();
        other.bits = bits;
        let e = describe(&good, Some(&other), &shards).unwrap_err();
        assert_eq!(
            (e.kind, e.file.as_str(), e.subject.as_deref()),
            (FormatErrorKind::Unsupported, "quantize_config.json", Some("bits"))
        );
        assert!(e.detail.contains("expected 4 or 8"), "{e}");
    }
    for edit in [
        |c: &mut engine_format::ModelConfig| c.num_key_value_heads = 0,
        |c: &mut engine_format::ModelConfig| c.head_dim = usize::MAX,
        |c: &mut engine_format::ModelConfig| c.num_hidden_layers = usize::MAX,
        |c: &mut engine_format::ModelConfig| c.num_key_value_heads = 3,
    ] {
        let mut c = good.clone();
        edit(&mut c);
        assert_eq!(describe(&c, Some(&quant), &shards).unwrap_err().kind, FormatErrorKind::InvalidValue);
    }
}

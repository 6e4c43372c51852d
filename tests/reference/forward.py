#!/usr/bin/env python3
"""Independent float64 reference forward pass for Baichuan-7B / LLaMA GPTQ checkpoints.

Shares no code with the Rust engine: it parses the safetensors header and the AutoGPTQ layout (4 or 8 bits, as
quantize_config.json says) itself, dequantizes every linear layer to a dense float64 matrix, and runs the textbook
computation (RMSNorm, rotary embedding in the Hugging Face rotate_half convention, causal attention with grouped KV
heads, SwiGLU) in float64 with numpy.

    forward.py MODEL_DIR IDS OUT

IDS is a comma-separated list of token ids; OUT receives little-endian float64 logits, row-major
[len(IDS), vocab_size], one row per position.
"""
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F16": np.float16, "I32": np.int32, "F32": np.float32, "BF16": np.uint16}


def bf16_to_f32(raw):
    """bfloat16 is the top 16 bits of a float32 (numpy has no bfloat16): widen the raw bits, exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def load_tensors(model_dir):
    """All tensors of every safetensors shard, as numpy arrays keyed by name."""
    index = [f for f in os.listdir(model_dir) if f.endswith(".safetensors.index.json")]
    if index:
        with open(os.path.join(model_dir, index[0])) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = [f for f in os.listdir(model_dir) if f.endswith(".safetensors")]
    tensors = {}
    for name in files:
        with open(os.path.join(model_dir, name), "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        base = 8 + n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, end = info["data_offsets"]
            arr = np.frombuffer(data[base + start : base + end], dtype=DTYPES[info["dtype"]])
            if info["dtype"] == "BF16":
                arr = bf16_to_f32(arr)
            tensors[key] = arr.reshape(info["shape"])
    return tensors


def unpack(words, axis, bits):
    """Expand int32 words into their 32 / bits fields (low bits first) along `axis`: AutoGPTQ's packing, where
    field j of word r holds entry (32 / bits) * r + j."""
    per_word = 32 // bits
    w = words.astype(np.int64) & 0xFFFFFFFF
    parts = [(w >> (bits * j)) & ((1 << bits) - 1) for j in range(per_word)]
    stacked = np.stack(parts, axis=axis + 1)  # [..., words, per_word, ...]
    shape = list(words.shape)
    shape[axis] *= per_word
    return stacked.reshape(shape)


def dense(tensors, prefix, bits):
    """The float64 matrix W [K, N] of one linear layer, so that y = x @ W."""
    if prefix + ".weight" in tensors:  # unquantized, nn.Linear layout [N, K]
        return tensors[prefix + ".weight"].astype(np.float64).T
    qweight = tensors[prefix + ".qweight"]  # [K / (32 / bits), N]
    qzeros = tensors[prefix + ".qzeros"]  # [groups, N / (32 / bits)]
    scales = tensors[prefix + ".scales"].astype(np.float64)  # [groups, N]
    g_idx = tensors[prefix + ".g_idx"].astype(np.int64)  # [K]
    q = unpack(qweight, 0, bits)  # [K, N]
    zeros = unpack(qzeros, 1, bits) + 1  # [groups, N]; stored as zero - 1
    return scales[g_idx] * (q - zeros[g_idx])


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, theta):
    """x: [T, heads, head_dim]; rotate_half convention."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = positions[:, None] * inv_freq[None, :]  # [T, d/2]
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
    rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * cos + rot * sin


def main():
    model_dir, ids_arg, out_path = sys.argv[1:4]
    ids = [int(i) for i in ids_arg.split(",")]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    t = load_tensors(model_dir)
    quant_path = os.path.join(model_dir, "quantize_config.json")
    bits = None
    if os.path.exists(quant_path):
        with open(quant_path) as f:
            bits = json.load(f)["bits"]
    arch = cfg["architectures"][0]
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    hd = hidden // heads
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    causal = np.triu(np.full((T, T), -np.inf), k=1)

    x = t["model.embed_tokens.weight"].astype(np.float64)[ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rmsnorm(x, t[p + "input_layernorm.weight"].astype(np.float64), eps)
        if arch == "LlamaForCausalLM":
            wq, wk, wv = (dense(t, p + f"self_attn.{n}_proj", bits) for n in "qkv")
        else:
            wpack = dense(t, p + "self_attn.W_pack", bits)
            wq, wk, wv = np.split(wpack, [heads * hd, heads * hd + kv_heads * hd], axis=1)
        q = rope((h @ wq).reshape(T, heads, hd), pos, theta)
        k = rope((h @ wk).reshape(T, kv_heads, hd), pos, theta)
        v = (h @ wv).reshape(T, kv_heads, hd)
        rep = heads // kv_heads
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + causal
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        att = np.einsum("hts,shd->thd", probs, v).reshape(T, heads * hd)
        x = x + att @ dense(t, p + "self_attn.o_proj", bits)
        h = rmsnorm(x, t[p + "post_attention_layernorm.weight"].astype(np.float64), eps)
        g, u = h @ dense(t, p + "mlp.gate_proj", bits), h @ dense(t, p + "mlp.up_proj", bits)
        x = x + (g / (1.0 + np.exp(-g)) * u) @ dense(t, p + "mlp.down_proj", bits)
    x = rmsnorm(x, t["model.norm.weight"].astype(np.float64), eps)
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"]).astype(np.float64)
    logits = x @ head.T
    logits.astype("<f8").tofile(out_path)


if __name__ == "__main__":
    main()

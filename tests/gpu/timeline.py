#!/usr/bin/env python3
"""Where a decode step's time goes inside the CUDA graph: every kernel of the replayed decode graphs, as CUPTI
records them (through PyTorch's profiler, in this process, around the engine's C API), charged from the previous
kernel's end to its own end — so that the charges of one step add up to the step, and a kernel that overlaps its
predecessor (programmatic dependent launch) is charged only for what it adds. A measurement tool for the GPU
machine (PyTorch there; not a dependency of the engine).

CUPTI, started by PyTorch, does record the kernels of another library's graph replays (first run: H200, 2026-12-06,
BENCHMARKS.md "Where a decode step's time goes inside the graph").

Usage: timeline.py LIBRARY MODEL_DIR [OUT_DIR]
       timeline.py --trace TRACE.json MODEL_DIR PROMPT_TOKENS   (again from a saved trace; no GPU needed)
  LIBRARY    .gpu/libengine.so
  MODEL_DIR  the 7B synth (engine-cli synth --preset 7b)
  OUT_DIR    where the chrome traces go (default /tmp/timeline)

For a short and a ~2000-token prompt it generates 48 greedy tokens with the CUDA backend and prints, per role of the
decode step (embed, q/k/v, attention, o_proj, gate/up, down, lm_head or its screen and exact pass, the token ring's
advance), the median over the steps of its charged time summed over the layers, its share of the step, its rate
against the bytes it must read (weights from the checkpoint's shapes, the KV cache at the step's context), and per
launch the median kernel duration and how long it started before its predecessor ended (the overlap programmatic
dependent launch buys).
"""

import ctypes as C
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import client  # noqa: E402  (the ctypes transcription of engine.h)

ROLES = ["q/k/v", "attention", "o_proj", "gate/up", "down"]
SCREEN_GROUP = 128  # columns per scale of the head's int8 copy: engine_format::plan::LM_HEAD_SCREEN_GROUP


def weight_bytes(model_dir):
    """Bytes each projection of one layer reads (int4 words + fp16 scales, plus the zeros of an asymmetric
    checkpoint), and the fp16 lm_head's."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    q = {}
    qpath = os.path.join(model_dir, "quantize_config.json")
    if os.path.exists(qpath):
        q = json.load(open(qpath))
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = h // heads
    g = q.get("group_size", 128)
    g = g if g > 0 else h
    per_group = 2 if q.get("sym", True) else 4  # scale, or scale and zero

    def lin(k, n):
        return k * n // 2 + (k + g - 1) // g * n * per_group

    qkv_n = (heads + 2 * kv_heads) * hd
    return {
        "q/k/v": lin(h, qkv_n), "o_proj": lin(h, h), "gate/up": lin(h, 2 * inter), "down": lin(inter, h),
        "lm_head": vocab * h * 2, "layers": cfg["num_hidden_layers"], "kv_row": 2 * kv_heads * hd * 2,
        # The greedy screen's int8 copy of the head and its fp16 scales (HeadScreenBuffers::bytes in the plan).
        "lm_head screen": vocab * h + vocab * ((h + SCREEN_GROUP - 1) // SCREEN_GROUP) * 2,
    }


def decode_steps(events):
    """The decode steps among the traced kernels: each starts at embed_tokens followed by a q/k/v GEMV and runs
    the layers' kernels (q/k/v, attention, o_proj, gate/up, down), then lm_head and what follows it up to the next
    embed."""
    ks = sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    starts = [i for i, e in enumerate(ks) if e["name"] == "embed_tokens" and i + 1 < len(ks)
              and "qkv" in ks[i + 1]["name"] and "gemm" not in ks[i + 1]["name"]]
    steps = []
    for a, b in zip(starts, starts[1:]):
        steps.append((ks[a - 1] if a > 0 else None, ks[a:b]))
    return steps


def roles(step):
    """The role of each kernel of a decode step, by name, so that the charges hold whatever kernels a layer has;
    the residual GEMVs alternate o_proj, down."""
    out, residuals = [], 0
    for e in step:
        n = e["name"]
        if n == "embed_tokens":
            out.append("embed")
        elif "qkv" in n:
            out.append("q/k/v")
        elif n.startswith("attn_decode"):
            out.append("attention")
        elif "gate_up" in n:
            out.append("gate/up")
        elif "residual" in n:
            out.append("o_proj" if residuals % 2 == 0 else "down")
            residuals += 1
        elif n == "lm_head_screen":
            out.append("lm_head screen")
        elif n == "lm_head_exact":
            out.append("lm_head exact")
        elif n.startswith("lm_head"):
            out.append("lm_head")
        else:
            out.append(n)
    return out


def charge(prev, step, step_roles):
    """Per role: the time from the previous kernel's end to this kernel's end, summed over the step."""
    out = {}
    end = prev["ts"] + prev["dur"] if prev else step[0]["ts"]
    for e, role in zip(step, step_roles):
        t_end = e["ts"] + e["dur"]
        out[role] = out.get(role, 0.0) + max(0.0, t_end - end)
        end = max(end, t_end)
    return out


def launches(prev, step, step_roles):
    """Per role: each launch's (duration, how long before its predecessor's end it started)."""
    out = {}
    before = prev
    for e, role in zip(step, step_roles):
        if before is not None:
            early = before["ts"] + before["dur"] - e["ts"]
            out.setdefault(role, []).append((e["dur"], early))
        before = e
    return out


def summarize(label, events, wb, n_prompt):
    """Print the per-role table of the decode steps in one trace."""
    steps = decode_steps(events)[4:-2]  # the run's first and last steps aside
    if not steps:
        print(f"{label}: no decode steps in the trace ({sum(e.get('cat') == 'kernel' for e in events)} kernels)")
        return
    per_role, per_launch, totals = {}, {}, []
    for prev, step in steps:
        step_roles = roles(step)
        c = charge(prev, step, step_roles)
        totals.append(sum(c.values()))
        for r, t in c.items():
            per_role.setdefault(r, []).append(t)
        for r, ls in launches(prev, step, step_roles).items():
            per_launch.setdefault(r, []).extend(ls)
    step_us = statistics.median(totals)
    ctx = n_prompt + 24
    reads = {r: wb[r] * wb["layers"] for r in ["q/k/v", "o_proj", "gate/up", "down"]}
    reads["lm_head"] = wb["lm_head"]
    reads["lm_head screen"] = wb["lm_head screen"]
    reads["attention"] = wb["kv_row"] * ctx * wb["layers"]
    print(f"\n{label} prompt ({n_prompt} tokens), {len(steps)} decode steps in the graph: median step "
          f"{step_us:.1f} µs = {1e6 / step_us:.1f} tok/s (CUPTI tracing on)")
    print(f"  {'role':<16} {'µs/step':>9} {'share':>7} {'GB/s':>7}  kernels  per launch: {'µs':>6} {'early':>6}")
    for r, ts in sorted(per_role.items(), key=lambda kv: -statistics.median(kv[1])):
        t = statistics.median(ts)
        rate = f"{reads[r] / t / 1e3:7.0f}" if r in reads and t > 0 else "       "
        n = wb["layers"] if r in ROLES else 1
        ls = per_launch.get(r, [])
        dur = statistics.median(d for d, _ in ls) if ls else float("nan")
        early = statistics.median(b for _, b in ls) if ls else float("nan")
        print(f"  {r:<16} {t:9.1f} {100 * t / step_us:6.1f}% {rate}  {n:7d}  {'':11} {dur:6.2f} {early:6.2f}")


def main(argv):
    if len(argv) == 5 and argv[1] == "--trace":
        summarize(os.path.basename(argv[2]), json.load(open(argv[2]))["traceEvents"], weight_bytes(argv[3]),
                  int(argv[4]))
        return 0
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    import torch
    from torch.profiler import ProfilerActivity, profile

    out_dir = argv[3] if len(argv) == 4 else "/tmp/timeline"
    os.makedirs(out_dir, exist_ok=True)
    lib = client.bind(argv[1])
    client.lib = lib
    model_dir = argv[2]
    wb = weight_bytes(model_dir)
    torch.cuda.init()
    mo = lib.engine_model_default_options()
    mo.backend = client.BACKEND["CUDA"]
    model = client.Model()
    client.ok(lib.engine_model_load(model_dir.encode(), C.byref(mo), C.byref(model)), "load")
    prompts = {"short": "the quick brown fox", "long": "the quick brown fox jumps over the lazy dog " * 80}
    for label, text in prompts.items():
        n_prompt = len(client.tokenize(model, text))
        session = client.Session()
        client.ok(lib.engine_session_new(model, 0, C.byref(session)), "session")
        opts = lib.engine_generate_default_options()
        opts.max_new_tokens, opts.ignore_eos = 48, True
        client.ok(client.generate(session, text, opts)[0], "generate")  # warm: graphs captured, clocks up
        client.ok(lib.engine_session_reset(session), "reset")
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            client.ok(client.generate(session, text, opts)[0], "generate")
        trace = os.path.join(out_dir, f"{label}.json")
        prof.export_chrome_trace(trace)
        client.ok(lib.engine_session_free(session), "free")
        summarize(label, json.load(open(trace))["traceEvents"], wb, n_prompt)
    client.ok(lib.engine_model_free(model), "free model")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

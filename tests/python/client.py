#!/usr/bin/env python3
"""A Python (ctypes) client of the engine's C API: generates from a model directory on the CPU and walks the
error paths. Standard library only.

Usage: client.py LIBRARY MODEL_DIR [HEADER]
  LIBRARY    path of libengine.so (the cdylib)
  MODEL_DIR  a checkpoint directory (the tests use the tiny synthetic one)
  HEADER     engine/include/engine.h: if given, the constants below are checked against it

Run by tests/capi/tests/python_client.rs (cargo test -p capi-tests --test python_client). Exit status 0 when every
check passed. Also a worked example of calling the library from Python.
"""

import ctypes as C
import math
import os
import re
import sys
import threading

# ---- the ABI, transcribed from engine.h -------------------------------------------------------------------------
STATUS = {
    "OK": 0, "NULL_POINTER": 1, "INVALID_HANDLE": 2, "INVALID_ARGUMENT": 3, "INVALID_UTF8": 4,
    "BUFFER_TOO_SMALL": 5, "NOT_FOUND": 6, "IO": 7, "FORMAT": 8, "TOKENIZER": 9, "CONTEXT_OVERFLOW": 10,
    "BACKEND_UNAVAILABLE": 11, "DEVICE": 12, "SESSION_BUSY": 13, "MODEL_BUSY": 14, "INTERNAL": 99,
}
STOP = {"NONE": 0, "EOS": 1, "STOP_STRING": 2, "MAX_TOKENS": 3, "CONTEXT_FULL": 4, "CALLBACK": 5}
BACKEND = {"AUTO": 0, "CPU": 1, "CUDA": 2}
NO_TOKEN = 0xFFFFFFFF
MAX_PREFILL_CHUNK = 65536

token_t = C.c_uint32


class ModelOptions(C.Structure):
    _fields_ = [("backend", C.c_int32), ("device", C.c_uint32), ("max_context", C.c_uint32),
                ("prefill_chunk", C.c_uint32)]


class ModelInfo(C.Structure):
    _fields_ = [("vocab_size", C.c_uint32), ("tokenizer_vocab_size", C.c_uint32), ("max_context", C.c_uint32),
                ("max_position_embeddings", C.c_uint32), ("prefill_chunk", C.c_uint32), ("bos_token", token_t),
                ("eos_token", token_t), ("hidden_size", C.c_uint32), ("num_layers", C.c_uint32),
                ("num_heads", C.c_uint32), ("num_kv_heads", C.c_uint32), ("backend", C.c_char_p),
                ("device", C.c_char_p)]


class MemoryPlan(C.Structure):
    _fields_ = [("max_context", C.c_uint32), ("prefill_chunk", C.c_uint32), ("weights_bytes", C.c_uint64),
                ("kv_cache_bytes", C.c_uint64), ("activations_bytes", C.c_uint64), ("workspace_bytes", C.c_uint64),
                ("total_bytes", C.c_uint64)]


class SamplerOptions(C.Structure):
    _fields_ = [("temperature", C.c_float), ("top_k", C.c_uint32), ("top_p", C.c_float),
                ("repetition_penalty", C.c_float), ("seed", C.c_uint64), ("min_p", C.c_float)]


class GenerateOptions(C.Structure):
    _fields_ = [("max_new_tokens", C.c_uint32), ("add_bos", C.c_bool), ("ignore_eos", C.c_bool),
                ("sampler", SamplerOptions), ("stop_strings", C.POINTER(C.c_char_p)),
                ("n_stop_strings", C.c_size_t)]


class GenerateResult(C.Structure):
    # `text` as a void pointer: it must be handed back to engine_string_free unchanged.
    _fields_ = [("stop_reason", C.c_uint), ("n_prompt_tokens", C.c_uint32), ("n_generated_tokens", C.c_uint32),
                ("last_token", token_t), ("time_to_first_token_ms", C.c_double),
                ("decode_tokens_per_second", C.c_double), ("text", C.c_void_p), ("text_len", C.c_size_t)]


# bool (*)(void *user_data, engine_token token, const char *piece, size_t piece_len)
TOKEN_CALLBACK = C.CFUNCTYPE(C.c_bool, C.c_void_p, token_t, C.c_void_p, C.c_size_t)

Model = C.c_void_p  # engine_model *
Session = C.c_void_p  # engine_session *


def bind(path):
    lib = C.CDLL(path)
    status = C.c_int  # engine_status

    def fn(name, restype, *argtypes):
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, list(argtypes)

    fn("engine_version", C.c_char_p)
    fn("engine_last_error", C.c_char_p)
    fn("engine_status_string", C.c_char_p, C.c_int32)
    fn("engine_string_free", status, C.c_void_p)
    fn("engine_model_default_options", ModelOptions)
    fn("engine_model_load", status, C.c_char_p, C.POINTER(ModelOptions), C.POINTER(Model))
    fn("engine_model_free", status, Model)
    fn("engine_model_get_info", status, Model, C.POINTER(ModelInfo))
    fn("engine_model_memory_plan", status, Model, C.c_uint32, C.c_uint32, C.POINTER(MemoryPlan))
    fn("engine_tokenize", status, Model, C.c_char_p, C.c_bool, C.POINTER(token_t), C.c_size_t,
       C.POINTER(C.c_size_t))
    fn("engine_detokenize", status, Model, C.POINTER(token_t), C.c_size_t, C.POINTER(C.c_void_p),
       C.POINTER(C.c_size_t))
    fn("engine_sampler_default_options", SamplerOptions)
    fn("engine_session_new", status, Model, C.c_uint32, C.POINTER(Session))
    fn("engine_session_free", status, Session)
    fn("engine_session_feed", status, Session, C.POINTER(token_t), C.c_size_t, C.POINTER(C.c_float), C.c_size_t)
    fn("engine_session_feed_all_logits", status, Session, C.POINTER(token_t), C.c_size_t, C.POINTER(C.c_float),
       C.c_size_t)
    fn("engine_session_sample", status, Session, C.POINTER(SamplerOptions), C.POINTER(token_t))
    fn("engine_session_feed_and_sample", status, Session, C.POINTER(token_t), C.c_size_t,
       C.POINTER(SamplerOptions), C.POINTER(token_t))
    fn("engine_session_reset", status, Session)
    fn("engine_session_truncate", status, Session, C.c_size_t)
    fn("engine_session_length", status, Session, C.POINTER(C.c_size_t), C.POINTER(C.c_size_t))
    fn("engine_session_tokens", status, Session, C.POINTER(token_t), C.c_size_t, C.POINTER(C.c_size_t))
    fn("engine_generate_default_options", GenerateOptions)
    fn("engine_generate", status, Session, C.c_char_p, C.POINTER(GenerateOptions), TOKEN_CALLBACK, C.c_void_p,
       C.POINTER(GenerateResult))
    return lib


def check_header(path):
    """The constants above are the header's."""
    text = open(path, encoding="utf-8").read()
    found = dict((k, int(v)) for k, v in re.findall(r"^\s*ENGINE_([A-Z0-9_]+) = (\d+),", text, re.M))
    for table, prefix in ((STATUS, "STATUS_"), (STOP, "STOP_REASON_"), (BACKEND, "BACKEND_")):
        for name, value in table.items():
            assert found.get(prefix + name) == value, f"ENGINE_{prefix}{name}: header {found.get(prefix + name)}"
    assert re.search(r"#define ENGINE_MAX_PREFILL_CHUNK %d\b" % MAX_PREFILL_CHUNK, text)
    assert "#define ENGINE_NO_TOKEN %d" % NO_TOKEN in text
    expected = set(f"ENGINE_{p}{n}" for t, p in ((STATUS, "STATUS_"), (STOP, "STOP_REASON_"), (BACKEND, "BACKEND_"))
                   for n in t)
    assert set("ENGINE_" + k for k in found) == expected, set("ENGINE_" + k for k in found) ^ expected


# ---- checks -----------------------------------------------------------------------------------------------------
checks = 0


def check(cond, what=""):
    global checks
    if not cond:
        raise AssertionError(f"check failed: {what} (last error: {lib.engine_last_error().decode()!r})")
    checks += 1


def expect(status, name, what=""):
    global checks
    want = STATUS[name]
    if status != want:
        raise AssertionError(f"{what}: status {status} ({lib.engine_status_string(status).decode()}), expected "
                             f"{want} ({name}); last error: {lib.engine_last_error().decode()!r}")
    checks += 1


def ok(status, what=""):
    expect(status, "OK", what)


def last_error():
    return lib.engine_last_error().decode()


def take_string(ptr, length):
    """Copy a string the library returned, then free it."""
    data = C.string_at(ptr, length).decode("utf-8")
    ok(lib.engine_string_free(ptr), "engine_string_free")
    return data


def tokenize(model, text, add_bos=True):
    n = C.c_size_t(0)
    expect(lib.engine_tokenize(model, text.encode(), add_bos, None, 0, C.byref(n)), "BUFFER_TOO_SMALL", "size")
    buf = (token_t * n.value)()
    ok(lib.engine_tokenize(model, text.encode(), add_bos, buf, n.value, C.byref(n)), "tokenize")
    return list(buf)


def tokens(ids):
    return (token_t * len(ids))(*ids)


class Collector:
    """A generate callback that collects text and tokens, stopping after `stop_after` tokens."""

    def __init__(self, stop_after=None, reenter=None, busy_model=None):
        self.text, self.tokens, self.stop_after, self.reenter, self.reenter_status = "", [], stop_after, reenter, None
        self.busy_model, self.busy_status = busy_model, None
        self.callback = TOKEN_CALLBACK(self._on_token)  # keep a reference while the library may call it

    def _on_token(self, _user, token, piece, piece_len):
        self.text += C.string_at(piece, piece_len).decode("utf-8")
        if self.reenter is not None:
            self.reenter_status = lib.engine_session_reset(self.reenter)
        if self.busy_model is not None:
            s = Session()
            self.busy_status = lib.engine_session_new(self.busy_model, 0, C.byref(s))
            lib.engine_session_free(s)
        if token == NO_TOKEN:
            return True
        self.tokens.append(token)
        return self.stop_after is None or len(self.tokens) < self.stop_after


def generate(session, prompt, opts=None, collector=None):
    c = collector or Collector()
    r = GenerateResult()
    status = lib.engine_generate(session, prompt if isinstance(prompt, bytes) else prompt.encode(),
                                 C.byref(opts) if opts is not None else None, c.callback, None, C.byref(r))
    return status, c, r


def main(argv):
    global lib
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    lib = bind(argv[1])
    model_dir = argv[2].encode()
    if len(argv) == 4:
        check_header(argv[3])
        check(True, "header constants")
    print("engine", lib.engine_version().decode())

    # ---- happy path ----
    # The GPU suite runs this client with ENGINE_CLIENT_BACKEND=CUDA; CI on the CPU.
    want = os.environ.get("ENGINE_CLIENT_BACKEND", "CPU").upper()
    mo = lib.engine_model_default_options()
    mo.backend = BACKEND[want]
    model = Model()
    ok(lib.engine_model_load(model_dir, C.byref(mo), C.byref(model)), "load")
    check(model.value is not None and last_error() == "", "loaded, no error")
    info = ModelInfo()
    ok(lib.engine_model_get_info(model, C.byref(info)), "info")
    print(f"model: backend={info.backend.decode()} device={info.device.decode()!r} vocab={info.vocab_size} "
          f"ctx={info.max_context}")
    check(info.backend == want.lower().encode(), f"{want.lower()} backend")
    plan = MemoryPlan()
    ok(lib.engine_model_memory_plan(model, 0, 0, C.byref(plan)), "plan")
    check(plan.total_bytes == plan.weights_bytes + plan.kv_cache_bytes + plan.activations_bytes +
          plan.workspace_bytes, "plan total")

    text = "Hello, world! 你好"
    ids = tokenize(model, text)
    check(ids[0] == info.bos_token, "bos first")
    out, out_len = C.c_void_p(), C.c_size_t()
    ok(lib.engine_detokenize(model, tokens(ids), len(ids), C.byref(out), C.byref(out_len)), "detokenize")
    check(take_string(out, out_len.value) == text, "round trip")

    session = Session()
    ok(lib.engine_session_new(model, 0, C.byref(session)), "session")
    logits = (C.c_float * info.vocab_size)()
    ok(lib.engine_session_feed(session, tokens(ids), len(ids), logits, info.vocab_size), "feed")
    best = max(range(info.vocab_size), key=lambda i: (logits[i], -i))
    tok = token_t()
    ok(lib.engine_session_sample(session, None, C.byref(tok)), "sample")
    check(tok.value == best, "greedy sample is the argmax")
    all_logits = (C.c_float * (info.vocab_size * len(ids)))()
    s2 = Session()
    ok(lib.engine_session_new(model, 0, C.byref(s2)), "session 2")
    ok(lib.engine_session_feed_all_logits(s2, tokens(ids), len(ids), all_logits, len(all_logits)), "all logits")
    check(list(all_logits[-info.vocab_size:]) == list(logits), "last row = last logits")
    ok(lib.engine_session_free(s2), "free session 2")

    opts = lib.engine_generate_default_options()
    opts.max_new_tokens = 12
    opts.ignore_eos = True
    ok(lib.engine_session_reset(session), "reset")
    status, col, res = generate(session, "Once upon a time", opts)
    ok(status, "generate")
    full = take_string(res.text, res.text_len)
    print("generate:", repr(full))
    check(full == col.text and len(col.tokens) == 12 == res.n_generated_tokens, "streamed = result")
    check(res.stop_reason == STOP["MAX_TOKENS"] and res.last_token == col.tokens[-1], "stop reason, last token")
    n, cap = C.c_size_t(), C.c_size_t()
    ok(lib.engine_session_length(session, C.byref(n), C.byref(cap)), "length")
    check(n.value == res.n_prompt_tokens + 11 and cap.value == info.max_context, "session holds all but the last")
    held = (token_t * n.value)()
    ok(lib.engine_session_tokens(session, held, n.value, C.byref(n)), "tokens")
    check(list(held)[res.n_prompt_tokens:] == col.tokens[:-1], "held tokens")

    # Sampled generation is reproducible by seed.
    opts.sampler.temperature, opts.sampler.top_k, opts.sampler.top_p, opts.sampler.seed = 0.9, 50, 0.95, 7
    runs = []
    for _ in range(2):
        ok(lib.engine_session_reset(session), "reset")
        status, col, res = generate(session, "Once upon a time", opts)
        ok(status, "sampled generate")
        take_string(res.text, res.text_len)
        runs.append(col.tokens)
    check(runs[0] == runs[1], "same seed, same tokens")
    opts.sampler = lib.engine_sampler_default_options()

    # Callback stop, stop strings.
    ok(lib.engine_session_reset(session), "reset")
    status, col, res = generate(session, "Once upon a time", opts, Collector(stop_after=2))
    ok(status, "generate with callback stop")
    check(res.stop_reason == STOP["CALLBACK"] and len(col.tokens) == 2, "callback stop")
    take_string(res.text, res.text_len)
    stop = full[len(full) // 2:]
    stops = (C.c_char_p * 1)(stop.encode())
    opts.stop_strings, opts.n_stop_strings = stops, 1
    ok(lib.engine_session_reset(session), "reset")
    status, col, res = generate(session, "Once upon a time", opts)
    ok(status, "generate with stop string")
    check(res.stop_reason == STOP["STOP_STRING"], "stop string reason")
    check(take_string(res.text, res.text_len) == full[:full.index(stop)], "text before the stop string")
    opts.stop_strings, opts.n_stop_strings = None, 0

    # Threads: sessions of one model generate at once (ctypes releases the GIL during calls).
    ok(lib.engine_session_reset(session), "reset")
    short = lib.engine_generate_default_options()
    short.max_new_tokens, short.ignore_eos = 6, True
    alone = generate(session, "In parallel", short)[1].tokens
    results = [None] * 3

    def worker(i):
        s = Session()
        lib.engine_session_new(model, 0, C.byref(s))
        st, c, _r = generate(s, "In parallel", short)
        lib.engine_string_free(_r.text)
        lib.engine_session_free(s)
        results[i] = (st, c.tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(all(r == (0, alone) for r in results), f"threads agree: {results} vs {alone}")

    # ---- error paths ----
    m2 = Model(12345)
    expect(lib.engine_model_load(None, C.byref(mo), C.byref(m2)), "NULL_POINTER", "NULL dir")
    check(m2.value is None and "dir is NULL" in last_error(), "out cleared, message")
    expect(lib.engine_model_load(model_dir, C.byref(mo), None), "NULL_POINTER", "NULL out_model")
    expect(lib.engine_model_get_info(None, C.byref(info)), "NULL_POINTER", "NULL model")
    expect(lib.engine_generate(session, None, None, TOKEN_CALLBACK(), None, None), "NULL_POINTER", "NULL prompt")
    expect(lib.engine_tokenize(model, b"abc", True, None, 3, C.byref(n)), "NULL_POINTER", "NULL tokens, capacity 3")
    ok(lib.engine_model_free(None), "free(NULL)")

    expect(lib.engine_tokenize(model, b"ab\xff", True, None, 0, C.byref(n)), "INVALID_UTF8", "bad UTF-8 text")
    check("offset 2" in last_error(), "offset in message")
    expect(generate(session, b"\xe4\xbd")[0], "INVALID_UTF8", "bad UTF-8 prompt")
    expect(lib.engine_model_load(b"/tmp/\xff", C.byref(mo), C.byref(m2)), "INVALID_UTF8", "bad UTF-8 dir")

    bad = ModelOptions(7, 0, 0, 0)
    expect(lib.engine_model_load(model_dir, C.byref(bad), C.byref(m2)), "INVALID_ARGUMENT", "backend 7")
    bad = ModelOptions(BACKEND["CPU"], 0, info.max_position_embeddings + 1, 0)
    expect(lib.engine_model_load(model_dir, C.byref(bad), C.byref(m2)), "INVALID_ARGUMENT", "max_context")
    bad = ModelOptions(BACKEND["CPU"], 0, 0, MAX_PREFILL_CHUNK + 1)
    expect(lib.engine_model_load(model_dir, C.byref(bad), C.byref(m2)), "INVALID_ARGUMENT", "prefill_chunk")
    for field, value in (("temperature", -0.5), ("top_p", 1.5), ("repetition_penalty", math.inf), ("min_p", 2.0)):
        o = lib.engine_generate_default_options()
        setattr(o.sampler, field, value)
        expect(generate(session, "hi", o)[0], "INVALID_ARGUMENT", field)
        check(field in last_error(), f"{field} named")
    expect(lib.engine_session_feed(session, tokens([info.vocab_size]), 1, None, 0), "INVALID_ARGUMENT", "token id")
    expect(lib.engine_session_feed(session, tokens(ids), len(ids), logits, info.vocab_size - 1), "BUFFER_TOO_SMALL",
           "logits buffer")

    expect(lib.engine_model_load(b"/nonexistent/engine/model", C.byref(mo), C.byref(m2)), "NOT_FOUND", "missing")
    check("/nonexistent/engine/model" in last_error(), "path in message")

    small = Session()
    ok(lib.engine_session_new(model, 16, C.byref(small)), "small session")
    expect(lib.engine_session_feed(small, tokens(list(range(10, 30))), 20, None, 0), "CONTEXT_OVERFLOW", "feed 20/16")
    expect(generate(small, "the cat sat on the mat " * 4)[0], "CONTEXT_OVERFLOW", "long prompt")
    ok(lib.engine_session_length(small, C.byref(n), None), "length")
    check(n.value == 0, "nothing fed")
    ok(lib.engine_session_free(small), "free small")

    col = Collector(stop_after=2, reenter=session, busy_model=model)
    ok(lib.engine_session_reset(session), "reset")
    status, _, res = generate(session, "Hi", opts, col)
    ok(status, "re-entrant callback")
    take_string(res.text, res.text_len)
    check(col.reenter_status == STATUS["SESSION_BUSY"], "re-entrant use refused")
    check(col.busy_status == STATUS["MODEL_BUSY"], "running the generating model from its callback refused")

    foreign = C.create_string_buffer(64)
    expect(lib.engine_model_get_info(C.cast(foreign, C.c_void_p), C.byref(info)), "INVALID_HANDLE", "foreign")
    expect(lib.engine_session_reset(model), "INVALID_HANDLE", "model as session")
    expect(lib.engine_string_free(C.cast(foreign, C.c_void_p)), "INVALID_HANDLE", "foreign string")
    ok(lib.engine_model_free(model), "free model")
    expect(lib.engine_model_get_info(model, C.byref(info)), "INVALID_HANDLE", "freed model")
    check("freed" in last_error(), "freed in message")
    expect(lib.engine_model_free(model), "INVALID_HANDLE", "double free")
    ok(lib.engine_session_reset(session), "session outlives its model")
    status, _, res = generate(session, "Still here", opts)
    ok(status, "generate after model free")
    take_string(res.text, res.text_len)
    ok(lib.engine_session_free(session), "free session")
    expect(lib.engine_session_free(session), "INVALID_HANDLE", "freed session")

    print(f"python client: all {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

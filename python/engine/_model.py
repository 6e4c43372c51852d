"""The package's API over the C ABI: `Model` (a loaded checkpoint), `Session` (one sequence's KV cache, for
multi-turn use), `Stream` (a generation yielding text pieces) and `Completion` (what a generation did).

Every handle is freed deterministically by `close()` or a `with` block (garbage collection is only the fallback).
Text and stop strings are the engine's business: a generation is one `engine_generate` call, whose pieces never
split a character and never show a stop string, so Python sees exactly what the C ABI and `engine-cli` give."""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Literal, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

from ._ffi import NO_TOKEN, UINT32_MAX, c_path, c_text, check, check_int, fill_sampler, take_string, token_array
from ._native import ffi, lib

Backend = Literal["auto", "cpu", "cuda"]
StopReason = Literal["eos", "stop_string", "max_tokens", "context_full", "cancelled"]
Logits = npt.NDArray[np.float32]

_BACKENDS = {"auto": lib.ENGINE_BACKEND_AUTO, "cpu": lib.ENGINE_BACKEND_CPU, "cuda": lib.ENGINE_BACKEND_CUDA}
_STOP_REASONS: dict[int, StopReason] = {
    lib.ENGINE_STOP_REASON_EOS: "eos",
    lib.ENGINE_STOP_REASON_STOP_STRING: "stop_string",
    lib.ENGINE_STOP_REASON_MAX_TOKENS: "max_tokens",
    lib.ENGINE_STOP_REASON_CONTEXT_FULL: "context_full",
    lib.ENGINE_STOP_REASON_CALLBACK: "cancelled",
}


def version() -> str:
    """The engine library's version."""
    return str(ffi.string(lib.engine_version()).decode())


def tiny_model_path() -> str:
    """The built-in tiny model's directory (random weights, for trying things anywhere), written on first use:
    `$ENGINE_TINY_MODEL_DIR`, else `~/.cache/engine/tiny-v1`. `Model()` without a path loads it."""
    out, n = ffi.new("char **"), ffi.new("size_t *")
    check(lib.engine_tiny_model_dir(out, n))
    return take_string(out[0], n[0])


@dataclass(frozen=True)
class ModelInfo:
    """What a model is (`engine_model_info`)."""

    vocab_size: int
    tokenizer_vocab_size: int
    max_context: int
    max_position_embeddings: int
    prefill_chunk: int
    bos_token: int
    eos_token: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    backend: str
    device: str


@dataclass(frozen=True)
class Completion:
    """What a generation did. `str(completion)` is its text."""

    #: The generated text, stop string excluded.
    text: str
    #: Every token sampled, an end-of-sequence token included.
    tokens: List[int]
    stop_reason: StopReason
    prompt_tokens: int
    time_to_first_token_ms: float
    decode_tokens_per_second: float

    def __str__(self) -> str:
        return self.text


class Model:
    """A checkpoint loaded on a backend, with its tokenizer.

    `path` is the checkpoint directory (config.json, *.safetensors, tokenizer.model or tokenizer.json); `None`
    loads the built-in tiny model. `backend` is "auto" (CUDA when a usable GPU is there, else the CPU), "cpu" or
    "cuda"; `ctx` the KV-cache positions of each session (default: the model's max_position_embeddings).
    Use it in a `with` block, or call `close()`.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]", None] = None,
        backend: Backend = "auto",
        ctx: Optional[int] = None,
        prefill_chunk: Optional[int] = None,
    ) -> None:
        self._ptr: Any = ffi.NULL
        self._default: Optional[Session] = None
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
        options = ffi.new("engine_model_options *")
        options[0] = lib.engine_model_default_options()
        options.backend = _BACKENDS[backend]
        options.max_context = 0 if ctx is None else check_int(ctx, "ctx", 1, UINT32_MAX)
        options.prefill_chunk = 0 if prefill_chunk is None else check_int(prefill_chunk, "prefill_chunk", 1, UINT32_MAX)
        self.path = os.fspath(path) if path is not None else tiny_model_path()
        out = ffi.new("engine_model **")
        check(lib.engine_model_load(c_path(self.path, "path"), options, out))
        self._ptr = out[0]
        info = ffi.new("engine_model_info *")
        check(lib.engine_model_get_info(self._ptr, info))
        self.info = ModelInfo(
            vocab_size=info.vocab_size,
            tokenizer_vocab_size=info.tokenizer_vocab_size,
            max_context=info.max_context,
            max_position_embeddings=info.max_position_embeddings,
            prefill_chunk=info.prefill_chunk,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
            hidden_size=info.hidden_size,
            num_layers=info.num_layers,
            num_heads=info.num_heads,
            num_kv_heads=info.num_kv_heads,
            backend=ffi.string(info.backend).decode(),
            device=ffi.string(info.device).decode(),
        )

    # ---- lifetime ----
    def close(self) -> None:
        """Free the model and its default session (sessions made with `session()` stay usable until closed)."""
        if self._default is not None:
            self._default.close()
            self._default = None
        if self._ptr != ffi.NULL:
            ptr, self._ptr = self._ptr, ffi.NULL
            check(lib.engine_model_free(ptr))

    @property
    def closed(self) -> bool:
        return bool(self._ptr == ffi.NULL)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, or a failure nobody can see
            pass

    def _handle(self) -> Any:
        if self._ptr == ffi.NULL:
            raise ValueError("the model is closed")
        return self._ptr

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.info.backend}, {self.info.device}"
        return f"Model({self.path!r}, {state})"

    # ---- text ----
    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        """The token ids of `text`; with `add_bos`, the BOS token first when the tokenizer starts sequences with
        one (always for tokenizer.model, as tokenizer_config.json says for tokenizer.json)."""
        data = c_text(text, "text")
        n = ffi.new("size_t *")
        status = lib.engine_tokenize(self._handle(), data, bool(add_bos), ffi.NULL, 0, n)
        if status != lib.ENGINE_STATUS_BUFFER_TOO_SMALL:
            check(status)
        ids = ffi.new("engine_token[]", max(n[0], 1))
        check(lib.engine_tokenize(self._handle(), data, bool(add_bos), ids, n[0], n))
        return list(ids[0 : n[0]])

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of `ids` (invalid byte sequences become U+FFFD; special tokens vanish)."""
        arr = token_array(ids)
        out, n = ffi.new("char **"), ffi.new("size_t *")
        check(lib.engine_detokenize(self._handle(), arr, len(arr), out, n))
        return take_string(out[0], n[0])

    # ---- running ----
    def session(self, ctx: Optional[int] = None) -> "Session":
        """A new session (its own KV cache of `ctx` positions, default the model's) for multi-turn use."""
        return Session(self, ctx)

    def _session(self) -> "Session":
        if self._default is None or self._default.closed:
            self._default = Session(self)
        return self._default

    def logits(self, ids: Sequence[int]) -> Logits:
        """The logits after each of `ids` (a fresh sequence), as a float32 array of shape (len(ids), vocab_size):
        row i is the prediction of the token after ids[i]."""
        s = self._session()
        s.reset()
        try:
            return s.logits(ids)
        finally:
            s.reset()

    @overload
    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = ...,
        temperature: float = ...,
        top_p: float = ...,
        top_k: int = ...,
        min_p: float = ...,
        repetition_penalty: float = ...,
        seed: int = ...,
        stop: Union[str, Sequence[str], None] = ...,
        ignore_eos: bool = ...,
        add_bos: bool = ...,
        stream: Literal[False] = ...,
    ) -> Completion: ...

    @overload
    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = ...,
        temperature: float = ...,
        top_p: float = ...,
        top_k: int = ...,
        min_p: float = ...,
        repetition_penalty: float = ...,
        seed: int = ...,
        stop: Union[str, Sequence[str], None] = ...,
        ignore_eos: bool = ...,
        add_bos: bool = ...,
        stream: Literal[True],
    ) -> "Stream": ...

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        ignore_eos: bool = False,
        add_bos: bool = True,
        stream: bool = False,
    ) -> Union[Completion, "Stream"]:
        """Generate after `prompt`, as a fresh sequence (on the model's default session; a stream still running
        there is cancelled first). Sampling follows Hugging Face `generate`: repetition penalty, then temperature
        (0 = greedy), top-k (0 = off), top-p (1 = off), min-p (0 = off); the same seed gives the same text (the
        number drawn for a token depends only on the seed and the token's position). Generation ends at the
        end-of-sequence token (unless `ignore_eos`), after `max_tokens`, or at the first of the `stop` strings
        (not included in the text).

        Returns a `Completion`, or with `stream=True` a `Stream` that yields the text piece by piece as it is
        generated (never splitting a character) and has the `Completion` as `.result` once it ends.
        """
        s = self._session()
        s.reset()
        sampler = (temperature, top_k, top_p, min_p, repetition_penalty, seed)
        return s._start(prompt, max_tokens, sampler, stop, ignore_eos, add_bos, stream)


class Session:
    """One sequence with its own KV cache: the tokens fed so far, for multi-turn use. Each `generate` continues
    after what the session holds (BOS only when it is empty), so a follow-up feeds only its new tokens.

    After a generation the session holds the prompt and the generated tokens, except an end-of-sequence token, the
    token that completed a stop string, and a token the full context had no room for. Use it in a `with` block, or
    call `close()`; one thread at a time.
    """

    def __init__(self, model: Model, ctx: Optional[int] = None) -> None:
        self._ptr: Any = ffi.NULL
        self._stream: Optional[Stream] = None
        self.model = model
        out = ffi.new("engine_session **")
        n = 0 if ctx is None else check_int(ctx, "ctx", 1, UINT32_MAX)
        check(lib.engine_session_new(model._handle(), n, out))
        self._ptr = out[0]

    # ---- lifetime ----
    def close(self) -> None:
        """Cancel a running stream and free the session's KV cache."""
        self._cancel_stream()
        if self._ptr != ffi.NULL:
            ptr, self._ptr = self._ptr, ffi.NULL
            check(lib.engine_session_free(ptr))

    @property
    def closed(self) -> bool:
        return bool(self._ptr == ffi.NULL)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _handle(self) -> Any:
        if self._ptr == ffi.NULL:
            raise ValueError("the session is closed")
        return self._ptr

    def _cancel_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # ---- state ----
    def __len__(self) -> int:
        n = ffi.new("size_t *")
        check(lib.engine_session_length(self._handle(), n, ffi.NULL))
        return int(n[0])

    @property
    def capacity(self) -> int:
        """Positions the KV cache holds."""
        cap = ffi.new("size_t *")
        check(lib.engine_session_length(self._handle(), ffi.NULL, cap))
        return int(cap[0])

    @property
    def tokens(self) -> List[int]:
        """The tokens in the KV cache."""
        n = len(self)
        buf = ffi.new("engine_token[]", max(n, 1))
        out = ffi.new("size_t *")
        check(lib.engine_session_tokens(self._handle(), buf, n, out))
        return list(buf[0 : out[0]])

    def reset(self) -> None:
        """Forget every token (the cache's memory is kept)."""
        self._cancel_stream()
        check(lib.engine_session_reset(self._handle()))

    def truncate(self, n_tokens: int) -> None:
        """Keep only the first `n_tokens` tokens (to rewind a conversation)."""
        self._cancel_stream()
        check(lib.engine_session_truncate(self._handle(), check_int(n_tokens, "n_tokens", 0, 2**63 - 1)))

    # ---- running ----
    def feed(self, ids: Sequence[int]) -> Logits:
        """Append `ids` and return the logits of the next token (shape (vocab_size,))."""
        arr = token_array(ids)
        logits = np.empty(self.model.vocab_size, dtype=np.float32)
        buf = ffi.from_buffer("float[]", logits)
        check(lib.engine_session_feed(self._handle(), arr, len(arr), buf, len(logits)))
        return logits

    def logits(self, ids: Sequence[int]) -> Logits:
        """Append `ids` and return the logits after each of them (shape (len(ids), vocab_size))."""
        arr = token_array(ids)
        logits = np.empty((len(arr), self.model.vocab_size), dtype=np.float32)
        buf = ffi.from_buffer("float[]", logits)
        check(lib.engine_session_feed_all_logits(self._handle(), arr, len(arr), buf, logits.size))
        return logits

    def sample(
        self,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
    ) -> int:
        """A token picked from the logits of the last `feed` / `logits` (not appended: feed it to go on)."""
        options = ffi.new("engine_sampler_options *")
        fill_sampler(options[0], temperature, top_k, top_p, min_p, repetition_penalty, seed)
        out = ffi.new("engine_token *")
        check(lib.engine_session_sample(self._handle(), options, out))
        return int(out[0])

    @overload
    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = ...,
        temperature: float = ...,
        top_p: float = ...,
        top_k: int = ...,
        min_p: float = ...,
        repetition_penalty: float = ...,
        seed: int = ...,
        stop: Union[str, Sequence[str], None] = ...,
        ignore_eos: bool = ...,
        add_bos: bool = ...,
        stream: Literal[False] = ...,
    ) -> Completion: ...

    @overload
    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = ...,
        temperature: float = ...,
        top_p: float = ...,
        top_k: int = ...,
        min_p: float = ...,
        repetition_penalty: float = ...,
        seed: int = ...,
        stop: Union[str, Sequence[str], None] = ...,
        ignore_eos: bool = ...,
        add_bos: bool = ...,
        stream: Literal[True],
    ) -> "Stream": ...

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        ignore_eos: bool = False,
        add_bos: bool = True,
        stream: bool = False,
    ) -> Union[Completion, "Stream"]:
        """Generate after what the session holds and `prompt` (see `Model.generate` for the options; BOS is added
        only when the session is empty and `add_bos`). A stream still running on this session is cancelled first.
        """
        sampler = (temperature, top_k, top_p, min_p, repetition_penalty, seed)
        return self._start(prompt, max_tokens, sampler, stop, ignore_eos, add_bos, stream)

    def _start(
        self,
        prompt: str,
        max_tokens: int,
        sampler: "tuple[float, int, float, float, float, int]",
        stop: Union[str, Sequence[str], None],
        ignore_eos: bool,
        add_bos: bool,
        stream: bool,
    ) -> Union[Completion, "Stream"]:
        self._cancel_stream()
        handle = self._handle()
        call = _GenerateCall(
            handle,
            c_text(prompt, "prompt"),
            max_tokens=max_tokens,
            add_bos=bool(add_bos) and len(self) == 0,
            ignore_eos=ignore_eos,
            sampler=sampler,
            stop=stop,
        )
        if not stream:
            return call.run(None)
        self._stream = Stream(call.run)
        return self._stream


class _GenerateCall:
    """One `engine_generate` call with its options built (and checked) up front, so that a stream reports bad
    arguments when it is made rather than on first use."""

    def __init__(
        self,
        session: Any,
        prompt: bytes,
        *,
        max_tokens: int,
        add_bos: bool,
        ignore_eos: bool,
        sampler: "tuple[float, int, float, float, float, int]",
        stop: Union[str, Sequence[str], None],
    ) -> None:
        self.session = session
        self.prompt = prompt
        self.options = ffi.new("engine_generate_options *")
        self.options[0] = lib.engine_generate_default_options()
        self.options.max_new_tokens = check_int(max_tokens, "max_tokens", 0, UINT32_MAX)
        self.options.add_bos = add_bos
        self.options.ignore_eos = bool(ignore_eos)
        fill_sampler(self.options.sampler, *sampler)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        # The strings and the array stay alive with this object, for as long as the library may read them.
        self._stops = [ffi.new("char[]", c_text(s, f"stop[{i}]")) for i, s in enumerate(stops)]
        self._stop_array = ffi.new("char *[]", self._stops) if self._stops else ffi.NULL
        self.options.stop_strings = self._stop_array
        self.options.n_stop_strings = len(self._stops)

    def run(self, on_piece: Optional[Callable[[str], bool]]) -> Completion:
        tokens: List[int] = []
        failure: List[BaseException] = []

        def callback(_user: Any, token: int, piece: Any, length: int) -> bool:
            try:
                text = bytes(ffi.unpack(piece, length)).decode("utf-8")
                if token != NO_TOKEN:
                    tokens.append(int(token))
                return True if on_piece is None else bool(on_piece(text))
            except BaseException as e:  # never unwind into the library: stop, and re-raise after the call
                failure.append(e)
                return False

        c_callback = ffi.callback("engine_token_callback", callback)
        result = ffi.new("engine_generate_result *")
        status = lib.engine_generate(self.session, self.prompt, self.options, c_callback, ffi.NULL, result)
        check(status)
        text = take_string(result.text, result.text_len)
        if failure:
            raise failure[0]
        reason = _STOP_REASONS.get(result.stop_reason, "cancelled")
        if reason == "eos":
            tokens.append(int(result.last_token))
        elif reason in ("max_tokens", "cancelled") and result.last_token != NO_TOKEN:
            # The last token was sampled but not run through the model: feed it, so that the session holds the
            # whole text for the next turn.
            n, cap = ffi.new("size_t *"), ffi.new("size_t *")
            check(lib.engine_session_length(self.session, n, cap))
            if n[0] < cap[0]:
                check(lib.engine_session_feed(self.session, ffi.new("engine_token[]", [result.last_token]), 1,
                                              ffi.NULL, 0))
        return Completion(
            text=text,
            tokens=tokens,
            stop_reason=reason,
            prompt_tokens=int(result.n_prompt_tokens),
            time_to_first_token_ms=float(result.time_to_first_token_ms),
            decode_tokens_per_second=float(result.decode_tokens_per_second),
        )


_DONE = object()


class Stream(Iterator[str]):
    """A generation running on a worker thread, yielding its text pieces as they come. `result` is the
    `Completion` once the stream is exhausted. `close()` (or leaving a `with` block) cancels the generation at the
    next token and waits for it, and so does anything else done to its session: a new `generate`, `reset`,
    `truncate`, or closing the session or its model. Errors are raised from the iteration."""

    def __init__(self, run: Callable[[Callable[[str], bool]], Completion]) -> None:
        self.result: Optional[Completion] = None
        self._queue: "queue.SimpleQueue[object]" = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._error: Optional[BaseException] = None
        self._finished = False
        self._thread = threading.Thread(target=self._work, args=(run,), name="engine-generate", daemon=True)
        self._thread.start()

    def _work(self, run: Callable[[Callable[[str], bool]], Completion]) -> None:
        try:
            self.result = run(self._on_piece)
        except BaseException as e:
            self._error = e
        finally:
            self._queue.put(_DONE)

    def _on_piece(self, piece: str) -> bool:
        if self._cancel.is_set():
            return False
        if piece:
            self._queue.put(piece)
        return True

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._finish()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration
        assert isinstance(item, str)
        return item

    def _finish(self) -> None:
        self._finished = True
        self._thread.join()

    def close(self) -> None:
        """Cancel the generation (if it still runs) and wait for the worker to end."""
        if self._finished:
            return
        self._cancel.set()
        while self._queue.get() is not _DONE:
            pass
        self._finish()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

"""The C ABI as the rest of the package calls it: the cffi `lib` and `ffi` that maturin generates from engine.h,
status checking, and the conversions every call needs (text in, strings out, argument checks with Python's
exception types)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from ._errors import error_for
from ._native import ffi, lib

UINT32_MAX = 0xFFFF_FFFF
UINT64_MAX = 0xFFFF_FFFF_FFFF_FFFF
NO_TOKEN = UINT32_MAX


def check(status: int) -> None:
    """Raise the exception for a failed call, with the engine's message for this thread's last call."""
    if status != 0:
        raise error_for(status, ffi.string(lib.engine_last_error()).decode("utf-8", "replace"))


def c_text(text: str, what: str) -> bytes:
    """`text` as the NUL-terminated UTF-8 the C ABI reads."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if "\0" in text:
        raise ValueError(f"{what} contains a NUL character, which C strings cannot hold")
    return text.encode("utf-8", "surrogatepass")


def c_path(path: "str | os.PathLike[str]", what: str) -> bytes:
    return c_text(os.fspath(path), what)


def take_string(ptr: Any, length: int) -> str:
    """Copy a string the library returned, then free it."""
    try:
        return bytes(ffi.unpack(ptr, length)).decode("utf-8")
    finally:
        check(lib.engine_string_free(ptr))


def check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in {low}..={high}, got {value}")
    return value


def check_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    return float(value)


def token_array(ids: Sequence[int], what: str = "ids") -> Any:
    """`ids` as an `engine_token[]` (ids are checked against the vocabulary by the engine)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of token ids, not {type(ids).__name__}")
    return ffi.new("engine_token[]", [check_int(i, f"{what}[{n}]", 0, UINT32_MAX) for n, i in enumerate(ids)])


def fill_sampler(
    o: Any, temperature: float, top_k: int, top_p: float, min_p: float, repetition_penalty: float, seed: int
) -> None:
    """Set the fields of the `engine_sampler_options` `o` (the ranges are the engine's to check: it names the
    field)."""
    o.temperature = check_float(temperature, "temperature")
    o.top_k = check_int(top_k, "top_k", 0, UINT32_MAX)
    o.top_p = check_float(top_p, "top_p")
    o.min_p = check_float(min_p, "min_p")
    o.repetition_penalty = check_float(repetition_penalty, "repetition_penalty")
    o.seed = check_int(seed, "seed", 0, UINT64_MAX)

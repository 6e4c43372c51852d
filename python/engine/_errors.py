"""The engine's status codes as Python exceptions carrying the engine's own message (`engine_last_error`)."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """`engine_status` of engine.h (the values are stable)."""

    OK = 0
    NULL_POINTER = 1
    INVALID_HANDLE = 2
    INVALID_ARGUMENT = 3
    INVALID_UTF8 = 4
    BUFFER_TOO_SMALL = 5
    NOT_FOUND = 6
    IO = 7
    FORMAT = 8
    TOKENIZER = 9
    CONTEXT_OVERFLOW = 10
    BACKEND_UNAVAILABLE = 11
    DEVICE = 12
    SESSION_BUSY = 13
    MODEL_BUSY = 14
    INTERNAL = 99


class EngineError(Exception):
    """A call into the engine failed. `status` says what kind of failure, the message is the engine's."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidArgumentError(EngineError, ValueError):
    """An argument or option outside its allowed range (the message names it)."""


class NotFoundError(EngineError, FileNotFoundError):
    """The model directory, or a file the checkpoint needs, does not exist."""


class FormatError(EngineError):
    """The checkpoint is malformed or unsupported (the message names the file and tensor)."""


class TokenizerError(EngineError):
    """The tokenizer could not be loaded, or could not convert text or ids."""


class ContextOverflowError(EngineError):
    """More tokens than the session's context holds."""


class BackendUnavailableError(EngineError):
    """The requested backend cannot run here (no GPU, no driver, ...)."""


class BusyError(EngineError):
    """The session or model is in use by another call (another thread, or a generation still streaming)."""


_CLASSES: dict[Status, type[EngineError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.INVALID_UTF8: InvalidArgumentError,
    Status.NOT_FOUND: NotFoundError,
    Status.FORMAT: FormatError,
    Status.TOKENIZER: TokenizerError,
    Status.CONTEXT_OVERFLOW: ContextOverflowError,
    Status.BACKEND_UNAVAILABLE: BackendUnavailableError,
    Status.SESSION_BUSY: BusyError,
    Status.MODEL_BUSY: BusyError,
}


def error_for(status: int, message: str) -> EngineError:
    """The exception for a failed call's status and message."""
    try:
        known = Status(status)
    except ValueError:
        return EngineError(Status.INTERNAL, f"unknown status {status}: {message}")
    return _CLASSES.get(known, EngineError)(known, message)

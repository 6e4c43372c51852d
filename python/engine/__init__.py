"""Baichuan-7B / LLaMA inference (GPTQ int4 / int8, fp16, bf16) from Python, over the engine's C ABI
(engine/include/engine.h).

    import engine
    with engine.Model() as model:                       # no path: the built-in tiny model (random weights)
        for piece in model.generate("Hamlet->Shakespeare\\nOne Hundred Years of Solitude->", stream=True):
            print(piece, end="", flush=True)

`Model` loads a checkpoint (tokenize, detokenize, logits as NumPy arrays, generate), `Session` keeps one
sequence's KV cache for multi-turn use, `Stream` yields a generation's text as it comes, `Completion` says what a
generation did. Failures raise `EngineError` (or a subclass per kind) with the engine's message.
"""

from ._errors import (
    BackendUnavailableError,
    BusyError,
    ContextOverflowError,
    EngineError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
    Status,
    TokenizerError,
)
from ._model import Completion, Model, ModelInfo, Session, StopReason, Stream, tiny_model_path, version

__version__ = version()

__all__ = [
    "BackendUnavailableError",
    "BusyError",
    "Completion",
    "ContextOverflowError",
    "EngineError",
    "FormatError",
    "InvalidArgumentError",
    "Model",
    "ModelInfo",
    "NotFoundError",
    "Session",
    "Status",
    "StopReason",
    "Stream",
    "TokenizerError",
    "tiny_model_path",
    "version",
]

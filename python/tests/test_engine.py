"""The Python package on the built-in tiny model (random weights) on the CPU: every call of the API, what the
results must agree with (streamed text = the completion, logits = the greedy token, a session's follow-up feeds
only its new tokens), and the error paths (each a Python exception carrying the engine's message)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest

import engine
from engine._native import lib

PROMPT = "Hamlet->Shakespeare\nOne Hundred Years of Solitude->"


@pytest.fixture(scope="module")
def model() -> Iterator[engine.Model]:
    with engine.Model(backend="cpu") as m:
        yield m


def test_version_and_status_values_are_the_librarys() -> None:
    assert engine.__version__ == engine.version() != ""
    for status in engine.Status:
        assert getattr(lib, f"ENGINE_STATUS_{status.name}") == status.value


def test_builtin_tiny_model_is_where_engine_tiny_model_dir_says() -> None:
    path = engine.tiny_model_path()
    if "ENGINE_TINY_MODEL_DIR" in os.environ:
        assert path == os.environ["ENGINE_TINY_MODEL_DIR"]
    assert (Path(path) / "config.json").is_file()


def test_model_info(model: engine.Model) -> None:
    info = model.info
    assert (info.backend, info.vocab_size, info.bos_token, info.eos_token) == ("cpu", 1024, 1, 2)
    assert info.max_context == info.max_position_embeddings == 512
    assert info.device.startswith("CPU")
    assert model.vocab_size == 1024 and not model.closed
    assert "cpu" in repr(model)


def test_tokenize_and_detokenize(model: engine.Model) -> None:
    for text in ["Hello, world!", "我们今天去公园", "emoji 😀👩‍💻", "  spaces\n\ttabs "]:
        ids = model.tokenize(text)
        assert ids[0] == model.info.bos_token
        assert model.tokenize(text, add_bos=False) == ids[1:]
        assert model.detokenize(ids) == text
    assert model.tokenize("") == [model.info.bos_token]
    assert model.tokenize("", add_bos=False) == []
    assert model.detokenize([]) == ""


def test_logits_agree_with_greedy_generation_and_sessions(model: engine.Model) -> None:
    ids = model.tokenize(PROMPT)
    logits = model.logits(ids)
    assert logits.shape == (len(ids), model.vocab_size) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    first = model.generate(PROMPT, max_tokens=1, ignore_eos=True)
    assert first.tokens == [int(logits[-1].argmax())]
    with model.session() as s:
        last = s.feed(ids)
        np.testing.assert_array_equal(last, logits[-1])
        assert s.sample() == first.tokens[0]
        assert len(s) == len(ids) and s.tokens == ids


def test_generate_is_deterministic_and_streams_the_same_text(model: engine.Model) -> None:
    done = model.generate(PROMPT, max_tokens=24, ignore_eos=True)
    assert isinstance(done, engine.Completion)
    assert done.stop_reason == "max_tokens" and len(done.tokens) == 24
    assert done.prompt_tokens == len(model.tokenize(PROMPT))
    assert done.text == model.detokenize(done.tokens) == str(done)
    assert done.time_to_first_token_ms > 0
    assert model.generate(PROMPT, max_tokens=24, ignore_eos=True).tokens == done.tokens

    stream = model.generate(PROMPT, max_tokens=24, ignore_eos=True, stream=True)
    assert isinstance(stream, engine.Stream)
    pieces: List[str] = list(stream)
    assert "".join(pieces) == done.text and all(pieces)
    assert stream.result is not None and stream.result.tokens == done.tokens
    assert list(stream) == []


def test_sampling_is_reproducible_by_seed(model: engine.Model) -> None:
    def run(seed: int) -> List[int]:
        sampled = model.generate(
            PROMPT, max_tokens=16, ignore_eos=True, seed=seed, temperature=0.9, top_k=50, top_p=0.95, min_p=0.01,
            repetition_penalty=1.1,
        )
        return sampled.tokens

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_stop_strings_end_the_text_before_them(model: engine.Model) -> None:
    full = model.generate(PROMPT, max_tokens=32, ignore_eos=True).text
    chars = [c for c in full if c != "\ufffd"]
    stop = "".join(chars[len(chars) // 2 : len(chars) // 2 + 2])
    cut = model.generate(PROMPT, max_tokens=32, ignore_eos=True, stop=[stop, "never appears \u2603"])
    assert cut.stop_reason == "stop_string" and cut.text == full[: full.index(stop)]
    streamed = "".join(model.generate(PROMPT, max_tokens=32, ignore_eos=True, stop=stop, stream=True))
    assert streamed == cut.text


def test_closing_a_stream_cancels_it_and_the_session_goes_on(model: engine.Model) -> None:
    with model.session() as s:
        with s.generate(PROMPT, max_tokens=400, ignore_eos=True, stream=True) as stream:
            first = next(stream)
            assert isinstance(first, str)
        assert stream.result is not None and stream.result.stop_reason == "cancelled"
        assert len(stream.result.tokens) < 400
        # The cancelled generation's tokens are in the session; a new generation continues after them.
        held = len(s)
        assert held == stream.result.prompt_tokens + len(stream.result.tokens)
        again = s.generate(" more", max_tokens=2, ignore_eos=True)
        assert again.prompt_tokens == len(model.tokenize(" more", add_bos=False))
        # A stream left unread is cancelled by the session's next generation.
        unread = s.generate(PROMPT, max_tokens=400, ignore_eos=True, stream=True)
        assert s.generate("x", max_tokens=1).stop_reason in ("max_tokens", "eos")
        assert unread.result is not None and unread.result.stop_reason == "cancelled"


def test_a_session_feeds_only_the_new_tokens_of_each_turn(model: engine.Model) -> None:
    with model.session(ctx=256) as s:
        assert s.capacity == 256 and len(s) == 0
        one = s.generate("USER:Hello\nASSISTANT:", max_tokens=6, ignore_eos=True)
        assert len(s) == one.prompt_tokens + 6
        two = s.generate("\nUSER:And then?\nASSISTANT:", max_tokens=6, ignore_eos=True)
        assert two.prompt_tokens == len(model.tokenize("\nUSER:And then?\nASSISTANT:", add_bos=False))
        assert len(s) == one.prompt_tokens + 6 + two.prompt_tokens + 6
        # Rewinding to the first turn and asking again gives the same reply, as does a session that only ever
        # had the first turn.
        tokens, first_turn = s.tokens, one.prompt_tokens + 6
        s.truncate(first_turn)
        assert s.tokens == tokens[:first_turn]
        assert s.generate("\nUSER:And then?\nASSISTANT:", max_tokens=6, ignore_eos=True).tokens == two.tokens
        with model.session() as fresh:
            fresh.feed(tokens[:first_turn])
            assert fresh.generate("\nUSER:And then?\nASSISTANT:", max_tokens=6, ignore_eos=True).tokens == two.tokens
        s.reset()
        assert len(s) == 0 and s.tokens == []


def test_sessions_generate_from_several_threads(model: engine.Model) -> None:
    alone = model.generate("In parallel", max_tokens=6, ignore_eos=True).tokens
    results: List[List[int]] = []

    def work() -> None:
        with model.session() as s:
            results.append(s.generate("In parallel", max_tokens=6, ignore_eos=True).tokens)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [alone] * 3


def test_errors_carry_the_engines_message(model: engine.Model, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(engine.NotFoundError) as e:
        engine.Model(missing)
    assert str(missing) in str(e.value) and e.value.status == engine.Status.NOT_FOUND
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(engine.InvalidArgumentError, match="temperature"):
        model.generate("hi", temperature=-1.0)
    with pytest.raises(engine.InvalidArgumentError, match="top_p"):
        model.generate("hi", top_p=1.5)
    with pytest.raises(ValueError, match="top_p"):  # InvalidArgumentError is a ValueError
        model.generate("hi", top_p=0.0)
    with pytest.raises(engine.InvalidArgumentError, match="min_p"):
        model.generate("hi", min_p=1.5)
    with pytest.raises(engine.InvalidArgumentError, match="1024"):
        model.detokenize([5, 1024])
    with pytest.raises(engine.InvalidArgumentError, match="max context must be in 1..=512"):
        engine.Model(backend="cpu", ctx=100_000)
    with pytest.raises(ValueError, match="backend"):
        engine.Model(backend="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NUL"):
        model.tokenize("a\0b")
    with pytest.raises(TypeError, match="prompt"):
        model.generate(b"bytes")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="ids"):
        model.logits([1, -1])
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate("hi", max_tokens=-1)
    with model.session(ctx=8) as small:
        with pytest.raises(engine.ContextOverflowError, match="context"):
            small.generate("the cat sat on the mat " * 4)
        assert len(small) == 0
        # In a stream, the error comes out of the iteration.
        stream = small.generate("the cat sat on the mat " * 4, stream=True)
        with pytest.raises(engine.ContextOverflowError):
            list(stream)
    with pytest.raises(engine.InvalidArgumentError, match="no logits"):
        with model.session() as s:
            s.sample()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(engine.EngineError, match="config.json"):
        engine.Model(bad)


def test_resources_are_freed_deterministically() -> None:
    with engine.Model(backend="cpu") as m:
        s = m.session()
        with s:
            s.feed(m.tokenize("hi"))
        assert s.closed
        with pytest.raises(ValueError, match="session is closed"):
            len(s)
        kept = m.session()
    assert m.closed
    with pytest.raises(ValueError, match="model is closed"):
        m.tokenize("x")
    with pytest.raises(ValueError, match="model is closed"):
        m.session()
    # A session outlives its model (it keeps what it needs), until it is closed itself.
    assert kept.generate("still here", max_tokens=2, ignore_eos=True).stop_reason == "max_tokens"
    kept.close()
    kept.close()
    m.close()

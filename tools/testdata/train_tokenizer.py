#!/usr/bin/env python3
"""Regenerate tools/testdata/tokenizer.model, the small test tokenizer.

The model mimics Baichuan-7B's tokenizer settings on a tiny vocabulary so tests
exercise the same code paths as the real checkpoint: BPE, byte fallback for
characters outside the vocabulary, split digits, <unk>=0 / <s>=1 / </s>=2, no
pad piece, identity normalization, and (like Baichuan) no dummy prefix and no
whitespace collapsing, so runs of spaces and newlines survive a round trip.

Usage (from the repository root, with the pinned sentencepiece installed,
see tools/tests/requirements.txt):

    python3 tools/testdata/train_tokenizer.py

Training is deterministic: one thread, a fixed seed, and no sentence sampling
(input_sentence_size=0 reads the whole corpus in order).
"""

import io
import os
import sys

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus.txt")
OUTPUT = os.path.join(HERE, "tokenizer.model")
VOCAB_SIZE = 1000


def main() -> int:
    spm.set_random_generator_seed(1234)
    # The trainer records its input path and model prefix in the model; run from
    # this directory with a relative path and an in-memory writer so the bytes
    # do not depend on where the repository is checked out.
    os.chdir(HERE)
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input="corpus.txt",
        model_writer=writer,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=0.9995,
        byte_fallback=True,
        split_digits=True,
        # Code indentation is made of space runs; let them become pieces.
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    model = writer.getvalue()

    check = spm.SentencePieceProcessor(model_proto=model)
    assert check.get_piece_size() == VOCAB_SIZE, check.get_piece_size()
    with open(OUTPUT, "wb") as f:
        f.write(model)
    print(f"wrote {OUTPUT}: {len(model)} bytes, {VOCAB_SIZE} pieces")
    return 0


if __name__ == "__main__":
    sys.exit(main())

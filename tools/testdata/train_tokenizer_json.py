#!/usr/bin/env python3
"""Regenerate tools/testdata/tokenizer.json, the small Hugging Face test tokenizer.

A GPT-2-style byte-level BPE (the ByteLevel pre-tokenizer with its split regex, the ByteLevel decoder, no unknown
token: every byte has a token) of 1000 tokens trained on corpus.txt, the same text as the SentencePiece test model.
The special tokens come first, so that their ids match the synthetic checkpoints' config.json: <|pad|>=0, <s>=1
(BOS), </s>=2 (EOS).

Usage (from the repository root, with the pinned tokenizers installed, see tests/requirements.txt):

    python3 tools/testdata/train_tokenizer_json.py

Training is deterministic (checked: the script trains twice and compares).
"""

import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus.txt")
OUTPUT = os.path.join(HERE, "tokenizer.json")
VOCAB_SIZE = 1000
SPECIAL = ["<|pad|>", "<s>", "</s>"]


def train() -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([CORPUS], trainer)
    return tok.to_str(pretty=True)


def main() -> int:
    text = train()
    assert train() == text, "training is not deterministic"
    check = Tokenizer.from_str(text)
    assert check.get_vocab_size() == VOCAB_SIZE, check.get_vocab_size()
    assert [check.token_to_id(t) for t in SPECIAL] == [0, 1, 2]
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {OUTPUT}: {len(text)} bytes, {VOCAB_SIZE} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Reference side of tools/tests/hf_reference.rs: runs Python `tokenizers`.

Reads JSON from stdin:
    {"corpus": "path/of/corpus.txt", "tokenizers": [{"name": "...", "json": "<tokenizer.json text>"}],
     "encode": ["text", ...], "seed": n}
Trains one more tokenizer on the corpus (a Llama-3-style byte-level BPE: its split regex before a ByteLevel
pre-tokenizer without regex, whole-word lookup with ignore_merges, special tokens at the end of the vocabulary,
a non-special added token, and a template post-processor that puts <|begin_of_text|> first), then for every
tokenizer writes to stdout:
    {"version": "0.22.2", "tokenizers": [{"name": ..., "json": ..., "vocab_size": n, "pieces": [...],
      "special": [ids], "encode": [[ids], ...], "encode_special": [[ids], ...], "decode_ids": [[ids], ...],
      "decode": ["text", ...]}]}
`encode` is without special tokens, `encode_special` with them (the post-processor's template); `decode` skips
special tokens.

Exits with status 3 and a setup hint when tokenizers is not importable, so the Rust test fails loudly instead of
skipping the comparison.
"""

import json
import random
import sys

try:
    import tokenizers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
except ImportError as e:
    sys.stderr.write(
        f"cannot import tokenizers with {sys.executable} ({e}).\n"
        "Set it up with: pip install -r tools/tests/requirements.txt, "
        "or point ENGINE_PYTHON at an interpreter that has it.\n"
    )
    sys.exit(3)

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_llama3_style(corpus):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([corpus], trainer)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    tok.add_tokens(["<think>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    return tok.to_str()


def run(name, text, encode, rng):
    tok = Tokenizer.from_str(text)
    n = tok.get_vocab_size(with_added_tokens=True)
    special = sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special)
    encoded = [tok.encode(s, add_special_tokens=False).ids for s in encode]
    seqs = list(encoded)
    seqs.append(list(range(n)))
    for _ in range(150):
        ids = []
        for _ in range(rng.randrange(30)):
            r = rng.randrange(4)
            if r == 0:
                ids.append(rng.randrange(n))
            elif r == 1:
                ids.append(rng.choice(special))
            else:
                # Tokens that stand for a single byte (the first 256 of the alphabet), often invalid UTF-8 alone.
                ids.append(rng.randrange(min(n, 260)))
        seqs.append(ids)
    return {
        "name": name,
        "json": text,
        "vocab_size": n,
        "pieces": [tok.id_to_token(i) for i in range(n)],
        "special": special,
        "encode": encoded,
        "encode_special": [tok.encode(s, add_special_tokens=True).ids for s in encode],
        "decode_ids": seqs,
        "decode": [tok.decode(ids, skip_special_tokens=True) for ids in seqs],
    }


def main():
    request = json.load(sys.stdin)
    rng = random.Random(request["seed"])
    given = [(t["name"], t["json"]) for t in request["tokenizers"]]
    given.append(("trained llama3-style", train_llama3_style(request["corpus"])))
    reply = {
        "version": tokenizers.__version__,
        "tokenizers": [run(name, text, request["encode"], rng) for name, text in given],
    }
    json.dump(reply, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

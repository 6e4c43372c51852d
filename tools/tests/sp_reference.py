#!/usr/bin/env python3
"""Reference side of tools/tests/reference.rs: runs Python sentencepiece.

Reads JSON from stdin:
    {"models": [{"proto_hex": "...", "encode": ["text", ...], "decode": [[ids], ...]}]}
Writes JSON to stdout:
    {"version": "0.2.1", "models": [{"vocab_size": n, "bos_id": i, "eos_id": i,
      "unk_id": i, "pieces": [...], "kinds": [...], "encode": [[ids], ...],
      "decode": ["text", ...]}]}

Exits with status 3 and a setup hint when sentencepiece is not importable, so
the Rust test fails loudly instead of skipping the comparison.
"""

import json
import sys

try:
    import sentencepiece as spm
except ImportError as e:
    sys.stderr.write(
        f"cannot import sentencepiece with {sys.executable} ({e}).\n"
        "Set it up with: pip install -r tools/tests/requirements.txt "
        "(sentencepiece==0.2.1), or point ENGINE_PYTHON at an interpreter that has it.\n"
    )
    sys.exit(3)


def kind(sp, i):
    if sp.is_unknown(i):
        return "unknown"
    if sp.is_control(i):
        return "control"
    if sp.is_byte(i):
        return "byte"
    if sp.is_unused(i):
        return "unused"
    return "normal"


def run(model):
    sp = spm.SentencePieceProcessor(model_proto=bytes.fromhex(model["proto_hex"]))
    n = sp.get_piece_size()
    return {
        "vocab_size": n,
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "pieces": [sp.id_to_piece(i) for i in range(n)],
        "kinds": [kind(sp, i) for i in range(n)],
        "encode": [sp.encode(text) for text in model["encode"]],
        "decode": [sp.decode(ids) for ids in model["decode"]],
    }


def main():
    request = json.load(sys.stdin)
    reply = {
        "version": spm.__version__,
        "models": [run(m) for m in request["models"]],
    }
    json.dump(reply, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

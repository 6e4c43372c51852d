#!/usr/bin/env bash
# The sampling table of BENCHMARKS.md, on the GPU machine from the binaries in .gpu/: `engine-cli generate` on the
# 7B-shaped model with the model card's 1-shot prompt, 256 tokens, --ignore-eos, under each sampler setting, twice
# (each a fresh process, as a user runs it); the decode speed and the time to first token the CLI reports; then
# `engine-cli bench`'s time to first token for a prompt of the same length, for comparison.
#
#   OUT=/tmp/sampling bash tests/gpu/sampling.sh      # CLI=path/to/another/engine-cli to measure another build
set -uo pipefail
BIN=${BIN:-.gpu}
OUT=${OUT:-/tmp/gpu-sampling}
MODEL=${MODEL:-/tmp/engine-7b}
CLI=${CLI:-$BIN/engine-cli}
mkdir -p "$OUT"
[ -f "$MODEL/config.json" ] || "$BIN/engine-cli" synth --preset 7b --out "$MODEL" >/dev/null
settings=(
    ""
    "--repetition-penalty 1.1"
    "--temperature 0.7 --top-p 0.9"
    "--temperature 0.7 --top-p 0.9 --repetition-penalty 1.1"
    "--temperature 0.8 --top-k 40"
    "--temperature 0.7 --min-p 0.05"
)
prompt_tokens=0
for s in "${settings[@]}"; do
    for run in 1 2; do
        # shellcheck disable=SC2086
        "$CLI" generate -m "$MODEL" --backend cuda -e -p 'Hamlet->Shakespeare\nOne Hundred Years of Solitude->' \
            -n 256 --ignore-eos --json $s >"$OUT/generate.json" 2>"$OUT/generate.err" || { cat "$OUT/generate.err"; continue; }
        prompt_tokens=$(python3 - "$OUT/generate.json" "${s:-greedy}" "$run" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<58} run {sys.argv[3]}: {j['decode_tokens_per_second']:7.1f} tok/s, "
      f"TTFT {j['time_to_first_token_ms']:5.2f} ms ({j['prompt_tokens']}-token prompt, {j['generated_tokens']} tokens)",
      file=sys.stderr)
print(j["prompt_tokens"])
PY
        )
    done
done 2>&1
"$CLI" bench -m "$MODEL" --backend cuda --prompts "$prompt_tokens" --reps 5 --decode-tokens 128 2>&1 | grep -E '^(decode|ttft):'

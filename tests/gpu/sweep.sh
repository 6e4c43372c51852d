#!/usr/bin/env bash
# Decode/prefill speed under each tuning knob setting, on the GPU machine, from the binaries in .gpu/:
#
#   OUT=/tmp/sweep bash tests/gpu/sweep.sh 'ENGINE_L2_PREFETCH_MB=0' 'ENGINE_L2_PREFETCH_MB=8 ENGINE_GEMV_MAX_SPLITS=1'
#
# Each argument is one configuration (environment assignments, '' for the defaults); each runs `engine-cli bench`
# on the 7B-shaped synthetic model and prints its decode and time-to-first-token lines. The knobs are documented
# in engine/src/backend/cuda/driver.rs (`Tuning`).
set -uo pipefail
BIN=${BIN:-.gpu}
OUT=${OUT:-/tmp/gpu-sweep}
MODEL=${MODEL:-/tmp/engine-7b}
ARGS=${ARGS:---prompts 16,512 --reps 3}
mkdir -p "$OUT"
[ -f "$MODEL/config.json" ] || "$BIN/engine-cli" synth --preset 7b --out "$MODEL" >/dev/null
i=0
for cfg in "$@"; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    env $cfg "$BIN/engine-cli" bench -m "$MODEL" --backend cuda $ARGS >"$OUT/sweep-$i.log" 2>&1
    echo "== [$i] ${cfg:-defaults}"
    grep -E '^(decode|ttft):' "$OUT/sweep-$i.log" | sed 's/^/   /'
done

#!/usr/bin/env bash
# Decode/prefill speed under each tuning setting, on the GPU machine, from the binaries in .gpu/:
#
#   OUT=/tmp/sweep bash tests/gpu/sweep.sh '' 'pdl=off' 'gemv_blocks_per_sm=8,gemv_wide=off'
#
# Each argument is one configuration (`engine-cli bench --tune` assignments, '' for the defaults); each runs
# `engine-cli bench` on the 7B-shaped synthetic model and prints its decode and time-to-first-token lines. The keys
# are listed by `engine-cli bench --help` and documented in engine/src/backend/cuda/tuning.rs.
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
    "$BIN/engine-cli" bench -m "$MODEL" --backend cuda $ARGS --tune "$cfg" >"$OUT/sweep-$i.log" 2>&1
    echo "== [$i] ${cfg:-defaults}"
    grep -E '^(decode|ttft):' "$OUT/sweep-$i.log" | sed 's/^/   /'
done

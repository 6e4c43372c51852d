#!/usr/bin/env bash
# Where the GPU time goes: a timeline of every kernel of a prefill and of decode steps (graph nodes included), on the
# GPU machine from the binaries tests/gpu/stage.sh put in .gpu/.
#
#   OUT=/tmp/prof bash tests/gpu/profile.sh     # nsys if present (real in-graph durations and gaps), else ncu
#
# Writes OUT/trace.csv (one line per kernel: start, duration, name) and OUT/summary.txt (per-kernel totals per phase).
set -uo pipefail
BIN=${BIN:-.gpu}
OUT=${OUT:-/tmp/gpu-profile}
MODEL=${MODEL:-/tmp/engine-7b}
ARGS=${ARGS:---prompts 16,512 --reps 1 --decode-tokens 32}
mkdir -p "$OUT"
[ -f "$MODEL/config.json" ] || "$BIN/engine-cli" synth --preset 7b --out "$MODEL" >/dev/null
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
if [ -n "$NSYS" ]; then
    # shellcheck disable=SC2086
    "$NSYS" profile -o "$OUT/run" --force-overwrite true -t cuda --cuda-graph-trace=node \
        "$BIN/engine-cli" bench -m "$MODEL" --backend cuda $ARGS >"$OUT/run.log" 2>&1
    "$NSYS" stats --report cuda_gpu_trace --format csv --output "$OUT/trace" "$OUT/run.nsys-rep" >/dev/null 2>&1
    mv "$OUT/trace_cuda_gpu_trace.csv" "$OUT/trace.csv" 2>/dev/null
    rm -f "$OUT/run.nsys-rep" "$OUT/run.sqlite"
else
    # shellcheck disable=SC2086
    ncu --metrics gpu__time_duration.sum --csv --cache-control none --clock-control none --graph-profiling node \
        "$BIN/engine-cli" bench -m "$MODEL" --backend cuda $ARGS >"$OUT/trace.csv" 2>"$OUT/run.log"
fi
ls -la "$OUT"

#!/usr/bin/env bash
# The GPU check suite. Runs on a machine with an NVIDIA GPU from prebuilt binaries (no Rust needed there):
#
#   tests/gpu/stage.sh          # here: build and copy the binaries into .gpu/, packed into target/gpu-pack
#   tar xJf target/gpu-pack/gpu.tar.xz   # there, first
#   tests/gpu/suite.sh          # there: BIN=.gpu, logs in OUT (default /tmp/gpu-suite); with REPORT=FILE, every
#                               # log is also gathered into that one file
#
# The 7B comparison's CPU reference took 6.5 minutes on the H200 machine's 16 cores before the CPU matmul was
# vectorized (5562f3f: ~4x faster on 2 cores since, not yet timed there); SKIP_7B=1 runs the small checks only
# (~3.5 minutes), SKIP_SMALL=1 the 7B part only, so that each fits one 10-minute device call; of the small checks,
# SANITIZE=0 runs all but the compute-sanitizer ones, SANITIZE=only those alone.
#
# It prints one table: every kernel against its float64 CPU counterpart; the CUDA backend against the CPU
# backend on synthetic checkpoints of awkward sizes (both namings, group sizes 32/64/128/-1, act-order, asym, 8-bit,
# fp16, bf16), and sessions of one model created, run and dropped on several threads against one alone;
# the same greedy text from engine-cli on both backends; compute-sanitizer memcheck, racecheck and synccheck on the
# tiny model (a short and a >128-token prompt) and on one whose short prompts take the 16-row GEMV-shaped tile; and
# on the 7B-shaped model: CUDA against the CPU backend (a 128-row prefill and 64 decode steps), generating and
# benchmarking.
set -uo pipefail
BIN=${BIN:-.gpu}
OUT=${OUT:-/tmp/gpu-suite}
SKIP_7B=${SKIP_7B:-0}
SKIP_SMALL=${SKIP_SMALL:-0}
SANITIZE=${SANITIZE:-1}
mkdir -p "$OUT"
declare -a rows

row() { rows+=("$(printf '%-6s %-34s %s' "$1" "$2" "$3")"); }

check() { # name, command...: PASS if it exits 0
    local name=$1; shift
    local t0=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then row PASS "$name" "$((SECONDS - t0)) s"; else row FAIL "$name" "exit $? after $((SECONDS - t0)) s, see $name.log"; fi
}
sanitize() { # a compute-sanitizer check: skipped with SANITIZE=0
    [ "$SANITIZE" = 0 ] || check "$@"
}
tested() { # a small check that is not a sanitizer's: skipped with SANITIZE=only
    [ "$SANITIZE" = only ] || check "$@"
}

echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
# The small checks (not indented: the heredoc below must start its lines).
if [ "$SKIP_SMALL" != 1 ]; then
tested kernels "$BIN/engine-unit" --ignored --test-threads 1 backend::cuda --skip time_per_launch --skip repack_time \
    --skip gemm_wgmma_ws
# The warp-specialized wgmma tile synchronizes its warps through mbarriers: a protocol error would hang, so it runs
# on its own with a time limit.
tested kernel-wgmma-ws timeout 180 "$BIN/engine-unit" --ignored --exact \
    backend::cuda::tests::gemm_wgmma_ws_int4_matches_f64_on_long_chunks
tested cuda-vs-cpu timeout 900 "$BIN/gpu_vs_cpu" --ignored --test-threads 1 --nocapture --skip the_7b_shape
grep -E '^(baichuan|llama)' "$OUT/cuda-vs-cpu.log" | sed 's/^/       /' >"$OUT/cuda-vs-cpu.summary" || true

# The same greedy text on both backends through the CLI.
TINY=/tmp/engine-gpu-suite-tiny
"$BIN/engine-cli" synth --out "$TINY" >/dev/null 2>&1
for b in cpu cuda; do
    "$BIN/engine-cli" generate -m "$TINY" --backend "$b" -e -p 'Hamlet->Shakespeare\nOne Hundred Years of Solitude->' \
        -n 64 --ignore-eos --json >"$OUT/cli-$b.json" 2>"$OUT/cli-$b.err"
done
if python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
a, b = (json.load(open(f"{out}/cli-{x}.json")) for x in ("cpu", "cuda"))
assert a["tokens"] == b["tokens"] and a["text"] == b["text"], (a["tokens"], b["tokens"])
print(len(a["tokens"]), "tokens identical")
PY
then row PASS cli-greedy-text-cpu-eq-cuda "$(wc -c <"$OUT/cli-cuda.json") bytes of JSON"; else row FAIL cli-greedy-text-cpu-eq-cuda "see cli-*.json"; fi

# The C ABI on the GPU, through the Python ctypes client (the same client runs on the CPU in CI).
ENGINE_CLIENT_BACKEND=CUDA tested c-abi-python-cuda python3 tests/python/client.py "$BIN/libengine.so" "$TINY" engine/include/engine.h

gen_tiny=("$BIN/engine-cli" generate -m "$TINY" --backend cuda -p 'The quick brown fox jumps over the lazy dog and' -n 24 --ignore-eos)
sanitize memcheck compute-sanitizer --tool memcheck --error-exitcode 99 "${gen_tiny[@]}"
sanitize racecheck compute-sanitizer --tool racecheck --error-exitcode 99 "${gen_tiny[@]}"
sanitize synccheck compute-sanitizer --tool synccheck --error-exitcode 99 "${gen_tiny[@]}"
# A prompt of more than 128 tokens takes the 128-row prefill tiles (on sm_90 the weights-in-registers wgmma tile and
# the K rearrangement in front of it), which the short prompt above never reaches.
long_prompt=$(for _ in $(seq 1 15); do printf 'the quick brown fox jumps over the lazy dog '; done)
gen_long=("$BIN/engine-cli" generate -m "$TINY" --backend cuda -p "$long_prompt" -n 4 --ignore-eos)
sanitize memcheck-long-prompt compute-sanitizer --tool memcheck --error-exitcode 99 "${gen_long[@]}"
sanitize racecheck-long-prompt compute-sanitizer --tool racecheck --error-exitcode 99 "${gen_long[@]}"
sanitize synccheck-long-prompt compute-sanitizer --tool synccheck --error-exitcode 99 "${gen_long[@]}"
# The register K loop on (scale, zero) words (the default before the lean scales-only GEMVs): off by default, so
# checked here too.
sanitize memcheck-tiny-registers timeout 600 compute-sanitizer --tool memcheck --error-exitcode 99 "${gen_tiny[@]}" \
    --tune gemv_lean=off,gemv_sym=off
# The decode attention's cluster merge (sm_90, attn_decode_cluster) takes heads of at most 16 splits, which the tiny
# model's 4 heads (64 splits each) never are: its kernel test, and the tiny model at 4 splits per head (contexts past
# 32 positions merge two splits).
sanitize racecheck-attn-kernel compute-sanitizer --tool racecheck --error-exitcode 99 "$BIN/engine-unit" --ignored \
    --exact backend::cuda::tests::attention_decode_and_prefill_match_f64
sanitize memcheck-attn-cluster compute-sanitizer --tool memcheck --error-exitcode 99 "${gen_tiny[@]}" --tune attn_splits=4
sanitize racecheck-attn-cluster compute-sanitizer --tool racecheck --error-exitcode 99 "${gen_tiny[@]}" --tune attn_splits=4
sanitize synccheck-attn-cluster compute-sanitizer --tool synccheck --error-exitcode 99 "${gen_tiny[@]}" --tune attn_splits=4
# The tiny model's K (64, 176) is not whole 128-column spans, so its prompts never take the GEMV-shaped 16-row tile
# (gemv_rows.cu); a model of hidden 128 and intermediate 384 does, for prompts of at most 64 tokens (12 here: one row
# block of 16; head_dim 64: the attention writes that tile's fragments itself).
R16=/tmp/engine-gpu-suite-rows16
"$BIN/engine-cli" synth --out "$R16" --hidden 128 --intermediate 384 --heads 2 >/dev/null 2>&1
gen_r16=("$BIN/engine-cli" generate -m "$R16" --backend cuda -p 'The quick brown fox' -n 8 --ignore-eos)
sanitize memcheck-rows16 compute-sanitizer --tool memcheck --error-exitcode 99 "${gen_r16[@]}"
sanitize racecheck-rows16 compute-sanitizer --tool racecheck --error-exitcode 99 "${gen_r16[@]}"
sanitize synccheck-rows16 compute-sanitizer --tool synccheck --error-exitcode 99 "${gen_r16[@]}"
# ... and a prompt of 17-64 tokens (the same tile with several row blocks of A).
gen_r48=("$BIN/engine-cli" generate -m "$R16" --backend cuda -p "$(printf 'the quick brown fox %.0s' 1 2 3)" -n 4 --ignore-eos)
sanitize memcheck-rows48 compute-sanitizer --tool memcheck --error-exitcode 99 "${gen_r48[@]}"
sanitize racecheck-rows48 compute-sanitizer --tool racecheck --error-exitcode 99 "${gen_r48[@]}"
sanitize synccheck-rows48 compute-sanitizer --tool synccheck --error-exitcode 99 "${gen_r48[@]}"
fi

if [ "$SKIP_7B" != 1 ]; then
    check synth-7b "$BIN/engine-cli" synth --preset 7b --out /tmp/engine-7b
    ENGINE_7B_MODEL=/tmp/engine-7b check cuda-vs-cpu-7b timeout 900 "$BIN/gpu_vs_cpu" --ignored --exact cuda_matches_cpu_on_the_7b_shape --nocapture
    grep -E '^7b-shape' "$OUT/cuda-vs-cpu-7b.log" | sed 's/^/       /' >>"$OUT/cuda-vs-cpu.summary" || true
    check generate-7b "$BIN/engine-cli" generate -m /tmp/engine-7b --backend cuda -p 'Hamlet->Shakespeare' -n 64 --ignore-eos
    check bench-7b "$BIN/engine-cli" bench -m /tmp/engine-7b --backend cuda --breakdown --json
    check bench-7b-no-pdl "$BIN/engine-cli" bench -m /tmp/engine-7b --backend cuda --prompts 16,512 --reps 3 --tune pdl=off
    check bench-7b-gemv-registers timeout 300 "$BIN/engine-cli" bench -m /tmp/engine-7b --backend cuda --prompts 16,2048 \
        --reps 3 --tune gemv_lean=off,gemv_sym=off
    MODEL=/tmp/engine-7b check sampling-7b bash tests/gpu/sampling.sh
    for i in $(seq 1 12); do cat tools/testdata/corpus.txt; done >"$OUT/corpus.txt"
    check perplexity-7b "$BIN/engine-cli" perplexity -m /tmp/engine-7b --backend cuda --file "$OUT/corpus.txt" --stride 512
fi

if [ -n "${REPORT:-}" ]; then
    for f in "$OUT"/*.log "$OUT"/*.json; do echo "===== $(basename "$f")"; cat "$f"; done >"$REPORT" 2>/dev/null
fi
echo
printf '%s\n' "${rows[@]}"
[ -s "$OUT/cuda-vs-cpu.summary" ] && cat "$OUT/cuda-vs-cpu.summary"
grep -E '^(load|copy|read|step|memory|decode|ttft):' "$OUT/bench-7b.log" 2>/dev/null | sed 's/^/       /'
grep -E '^(decode|ttft):' "$OUT/bench-7b-no-pdl.log" 2>/dev/null | sed 's/^/  nopdl/'
grep -E 'tok/s|ttft' "$OUT/sampling-7b.log" 2>/dev/null | sed 's/^/       /'
grep -E '^perplexity' "$OUT/perplexity-7b.log" 2>/dev/null | sed 's/^/       /'

grep -E 'tok/s' "$OUT/generate-7b.log" 2>/dev/null | sed 's/^/       /'
! printf '%s\n' "${rows[@]}" | grep -q '^FAIL'

#!/usr/bin/env bash
# Decode and time to first token on the 7B shape for each checkpoint format the CUDA backend runs, measured in one
# run beside the 4-bit baseline (BENCHMARKS.md, issue "every checkpoint the CPU runs, the GPU runs"):
#
#   tests/gpu/formats.sh [FORMAT ...]     # on the GPU machine, after unpacking the staged binaries (stage.sh)
#
# FORMAT (default: all): int4 (TheBloke's layout, the baseline), int4-actorder (AutoGPTQ act-order: W_pack, gate,
# up, o and down each with their own permutation), int4-actorder-llama (the same in LLaMA naming: q, k, v each
# their own too), int8 (8-bit GPTQ g128, TheBloke's gptq-8bit-128g layout), int8-actorder (8-bit with a
# permutation per linear), f16 and bf16 (unquantized; bf16 is rounded to fp16 at load). Each checkpoint is synthesized once into /tmp/engine-7b-FORMAT. BIN=.gpu (engine-cli there);
# EXTRA_BIN=path benches a second engine-cli (an older commit's) on every format too, alternating with BIN, for
# a side-by-side; BENCH_ARGS are passed to `bench`; logs and JSON in OUT (default /tmp/gpu-formats).
set -uo pipefail
BIN=${BIN:-.gpu}
OUT=${OUT:-/tmp/gpu-formats}
mkdir -p "$OUT"
synth_args() {
    case $1 in
        int4) ;;
        int4-actorder) echo --desc-act-per-linear ;;
        int4-actorder-llama) echo --arch llama --desc-act-per-linear ;;
        int8) echo --bits 8 ;;
        int8-actorder) echo --bits 8 --desc-act-per-linear ;;
        f16) echo --f16 ;;
        bf16) echo --bf16 ;;
        *) echo "unknown format $1" >&2; return 1 ;;
    esac
}
formats=("$@")
[ ${#formats[@]} -eq 0 ] && formats=(int4 int4-actorder int4-actorder-llama int8 int8-actorder f16 bf16)
bins=("$BIN/engine-cli")
[ -n "${EXTRA_BIN:-}" ] && bins+=("$EXTRA_BIN")
status=0
for f in "${formats[@]}"; do
    dir=/tmp/engine-7b-$f
    args=$(synth_args "$f") || exit 2
    if [ ! -d "$dir" ]; then
        # shellcheck disable=SC2086
        "$BIN/engine-cli" synth --preset 7b --out "$dir" $args >"$OUT/synth-$f.log" 2>&1 || { echo "$f: synth failed"; status=1; continue; }
    fi
    for b in "${bins[@]}"; do
        tag=$f-$(basename "$(dirname "$b")")
        # shellcheck disable=SC2086
        if "$b" bench -m "$dir" --backend cuda --breakdown --json ${BENCH_ARGS:-} >"$OUT/bench-$tag.json" 2>"$OUT/bench-$tag.log"; then
            grep -E '^(copy|read|step|decode|ttft):' "$OUT/bench-$tag.log" | sed "s|^|$tag  |"
        else
            echo "$tag: bench failed"; tail -3 "$OUT/bench-$tag.log"; status=1
        fi
    done
done
exit $status

#!/usr/bin/env bash
# A/B of `engine-cli bench` on the 7B synth: the staged build (.gpu, "new") against older packs
# (target/gpu-pack/NAME.tar.xz for each NAME in OLD, default "old"), alternating ROUNDS times (default 3).
# What runs and what is kept: MODE=ttft (default: PROMPTS tokens, default 16, the time-to-first-token lines) or
# MODE=decode (128 tokens after 16- and 2048-token prompts, the decode lines); BENCH="..." adds arguments (e.g.
# "--tune gemv_blocks_per_sm=4"). Logs on stdout.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PROMPTS=${PROMPTS:-16}
OLD=${OLD:-old}
MODE=${MODE:-ttft}
BENCH=${BENCH:-}
case $MODE in
    ttft) args="--prompts $PROMPTS --reps 9 --decode-tokens 8"; keep="ttft" ;;
    decode) args="--prompts 16,2048 --reps 5 --decode-tokens 128"; keep="decode" ;;
    *) echo "MODE must be ttft or decode" >&2; exit 2 ;;
esac
for name in $OLD; do
    mkdir -p "/tmp/$name" && tar xJf "target/gpu-pack/$name.tar.xz" -C "/tmp/$name"
done
[ -d /tmp/engine-7b ] || .gpu/engine-cli synth --preset 7b --out /tmp/engine-7b > /dev/null
for r in $(seq "$ROUNDS"); do
    for b in $OLD new; do
        bin=.gpu/engine-cli; [ "$b" != new ] && bin=/tmp/$b/.gpu/engine-cli
        # shellcheck disable=SC2086
        echo "== $b round $r: $($bin bench -m /tmp/engine-7b --backend cuda $args $BENCH 2>&1 | grep -i "$keep" | tr '\n' ' ')"
    done
done

#!/usr/bin/env bash
# A/B of the time to first token on the 7B synth: the staged build (.gpu, "new") against older packs
# (target/gpu-pack/NAME.tar.xz for each NAME in OLD, default "old"), alternating ROUNDS times, PROMPTS tokens
# (default 16). Logs on stdout.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PROMPTS=${PROMPTS:-16}
OLD=${OLD:-old}
for name in $OLD; do
    mkdir -p "/tmp/$name" && tar xJf "target/gpu-pack/$name.tar.xz" -C "/tmp/$name"
done
[ -d /tmp/engine-7b ] || .gpu/engine-cli synth --preset 7b --out /tmp/engine-7b > /dev/null
for r in $(seq "$ROUNDS"); do
    for b in $OLD new; do
        bin=.gpu/engine-cli; [ $b != new ] && bin=/tmp/$b/.gpu/engine-cli
        echo "== $b round $r: $($bin bench -m /tmp/engine-7b --backend cuda --prompts "$PROMPTS" --reps 9 \
            --decode-tokens 8 2>&1 | grep -i "ttft" | tr '\n' ' ')"
    done
done

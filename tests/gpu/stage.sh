#!/usr/bin/env bash
# Build the binaries the GPU suite needs and copy them into .gpu/ (git-ignored), and pack them into
# target/gpu-pack/gpu.tar.xz (6-9 MB; the binaries themselves are ~200 MB, more than a device run may carry):
# carry `target/gpu-pack` and run `tar xJf target/gpu-pack/gpu.tar.xz` first on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin engine-cli
cargo build --release -p engine --lib
mkdir -p .gpu
cp target/release/engine-cli target/release/libengine.so .gpu/
# Test binaries, optimized: they run the CPU backend as the reference, and the 7B-shaped comparison spent most of its
# time there (a debug-profile build did not finish 64 decode steps in 330 s on the H200 host). Their names carry a
# hash, so ask cargo for them.
for spec in "-p engine --lib:engine-unit" "-p e2e-tests --test gpu_vs_cpu:gpu_vs_cpu"; do
    args=${spec%%:*}; name=${spec##*:}
    exe=$(cargo test --release $args --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"]:
        print(m["executable"])' | tail -1)
    cp "$exe" ".gpu/$name"
done
strip .gpu/* 2>/dev/null || true
mkdir -p target/gpu-pack
# xz -9: its 64 MB window spans the binaries, which all embed the same kernel modules (6.0 MB against 17.5 at the
# default level, whose 8 MB window does not; ~1.5 minutes on 2 cores, one thread so that the window is not split).
XZ_OPT=-9 tar cJf target/gpu-pack/gpu.tar.xz .gpu
ls -la .gpu target/gpu-pack

#!/usr/bin/env bash
# Build and run every fuzz target of the format layer for a bounded time; exit non-zero if any target crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]   (default 60)
#
# cargo-fuzz builds with -Zsanitizer=address, a flag only nightly rustc accepts; RUSTC_BOOTSTRAP=1 (exported below)
# lets the stable toolchain accept it, for this build only. Seeds are read from fuzz/corpus-seeds/TARGET (committed,
# never written); inputs libFuzzer finds go to fuzz/corpus/TARGET and crashes to fuzz/artifacts/TARGET (both
# git-ignored). Turn every crash into a regression test in engine/format/tests before fixing it; a crash of a harness
# itself (not of the loader) goes into fuzz/corpus-seeds/TARGET as `regression-*`, which every run replays first.
set -euo pipefail

secs="${1:-60}"
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }

# -O -a: optimized (more executions per second) but with overflow checks and debug assertions kept on.
cargo fuzz build --fuzz-dir fuzz -O -a
status=0
for target in $(cargo fuzz list --fuzz-dir fuzz); do
    mkdir -p "fuzz/corpus/$target"
    echo "=== $target: ${secs}s"
    if ! cargo fuzz run --fuzz-dir fuzz -O -a "$target" "fuzz/corpus/$target" "fuzz/corpus-seeds/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
        echo "=== $target: CRASH (see fuzz/artifacts/$target/)" >&2
        status=1
    fi
done
exit "$status"

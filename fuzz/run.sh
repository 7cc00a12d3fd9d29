#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: ./run.sh [SECONDS] (default 60 per target).
#
# cargo-fuzz passes nightly-only flags to rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 lets
# them through. FUZZ_SANITIZER=none skips AddressSanitizer (faster, finds fewer bugs); the
# default is address. New inputs go to target/corpus-work/<target>; the committed seeds in
# corpus/<target> are only read. Crashes land in artifacts/<target>/ and fail the script.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-${FUZZ_SECONDS:-60}}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
targets=(${FUZZ_TARGETS:-credential verify jwks discovery gateway_config canonical_path})

cargo fuzz build --sanitizer "$sanitizer"
for target in "${targets[@]}"; do
  mkdir -p "target/corpus-work/$target"
  echo "==> fuzz $target for ${secs}s (sanitizer: $sanitizer)"
  cargo fuzz run --sanitizer "$sanitizer" "$target" "target/corpus-work/$target" "corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"target/fuzz-$target.log" 2>&1 || { tail -40 "target/fuzz-$target.log"; exit 1; }
  grep -E "stat::number_of_executed_units|stat::new_units_added" "target/fuzz-$target.log" || true
done

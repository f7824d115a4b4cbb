#!/usr/bin/env bash
# Runs one fuzz target for a bounded time, seeded from the LINE fixtures (read-only: new inputs go
# to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>). Not part of .ci/run.
#
#   fuzz/run.sh ingress 60
#   fuzz/run.sh verifiers 60
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them.
# Install it once with `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh <ingress|verifiers> [seconds]}
seconds=${2:-60}
mkdir -p "fuzz/corpus/$target"
# -len_control=0: inputs may grow past the ingress harness's 4 KiB body limit from the start.
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" tests/fixtures/line -- \
  -max_total_time="$seconds" -max_len=8192 -len_control=0

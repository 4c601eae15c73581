#!/usr/bin/env bash
# Builds the ingress's fuzz targets with coverage instrumentation and replays the seed
# corpus through them (part of `make test`). Fuzzing itself runs on demand:
#   cd ingress && RUSTC_BOOTSTRAP=1 cargo fuzz run webhook_request
# cargo-fuzz wants nightly features; RUSTC_BOOTSTRAP=1 lets the machine's one (stable)
# toolchain provide them, so the targets build with the same compiler as the rest.
set -euo pipefail
cd "$(dirname "$0")/../ingress"
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz@0.13.2
export RUSTC_BOOTSTRAP=1
cargo fuzz build --dev --sanitizer none
targets=$(cargo fuzz list)
for target in $targets; do
  out=$(fuzz/target/*/debug/"$target" -runs=0 "fuzz/corpus/$target" 2>&1) ||
    { echo "$out"; echo "fuzz: $target failed on its seed corpus"; exit 1; }
done
echo "fuzz: built" $targets "and replayed their seed corpora"

#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ with coverage instrumentation and replays each seed
# corpus (fuzz/corpus/<target>) through its target (part of `make test`). Fuzzing
# itself runs on demand:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target>
# cargo-fuzz wants nightly features; RUSTC_BOOTSTRAP=1 lets the machine's one (stable)
# toolchain provide them, so the targets build with the same compiler as the rest.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz@0.13.2
export RUSTC_BOOTSTRAP=1
cargo fuzz build --dev --sanitizer none
targets=$(cargo fuzz list)
for target in $targets; do
  [ -n "$(ls -A "corpus/$target" 2>/dev/null)" ] ||
    { echo "fuzz: $target has no seed corpus in fuzz/corpus/$target"; exit 1; }
  out=$(target/*/debug/"$target" -runs=0 "corpus/$target" 2>&1) ||
    { echo "$out"; echo "fuzz: $target failed on its seed corpus"; exit 1; }
done
echo "fuzz: built" $targets "and replayed their seed corpora"

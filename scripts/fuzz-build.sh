#!/usr/bin/env bash
# Builds the fuzz targets on demand (`make fuzz-build`; they run with `cargo +nightly fuzz run webhook_request`
# from ingress/). A separate build of the whole dependency tree under nightly, so not
# part of `make test`. cargo-fuzz needs a nightly toolchain; without one this says so and
# stops, since no toolchain can be fetched here.
set -euo pipefail
cd "$(dirname "$0")/../ingress"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain on this machine; fuzz targets not built"
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
cargo +nightly fuzz build --dev --sanitizer none
echo "fuzz: targets built ($(cargo +nightly fuzz list | tr '\n' ' '))"

#!/usr/bin/env bash
# `eventpipe demo` for the examples served by the example shop (examples/shop): a moto
# server and the shop's services beside it, for each manifest given; both are stopped
# at the end. `make demo-shop` runs it after building.
set -euo pipefail
moto_server="${EVENTPIPE_MOTO_SERVER:?the moto server to run (make sets it)}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# Waits (at most 10 s) until something listens on 127.0.0.1:$1.
wait_for() {
  for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

"$moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
pids+=($!)
wait_for "$port"
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
./target/debug/shop --listen 127.0.0.1:8090 >/dev/null &
pids+=($!)
wait_for 8090
for manifest in "$@"; do
  ./target/debug/eventpipe demo -f "$manifest"
  echo
done

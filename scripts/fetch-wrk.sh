#!/usr/bin/env bash
# wrk, the HTTP load generator, from Debian's packages, unpacked into the tools
# folder (no root needed): `apt-get download` then `dpkg-deb -x`.
set -euo pipefail
tools="$1"
if command -v wrk >/dev/null 2>&1 && [ "$(command -v wrk)" != "$tools/wrk" ]; then
  ln -sf "$(command -v wrk)" "$tools/wrk"
  exit 0
fi
mkdir -p "$tools/wrk-root"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt hands the download to its own user
(cd "$work" && apt-get download wrk libluajit-5.1-2 >/dev/null)
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$tools/wrk-root"; done
root="$(cd "$tools/wrk-root" && pwd)"
libs="$(dirname "$(find "$root" -name 'libluajit-5.1.so.2*' | head -n1)")"
cat > "$tools/wrk" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/bin/wrk" "\$@"
WRAP
chmod +x "$tools/wrk"

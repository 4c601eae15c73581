#!/usr/bin/env bash
# Checks what scripts/image-archive.py makes, as a container runtime would use it: the
# index leads to a manifest whose blobs match their digests, the config's diff id is
# the unpacked layer's, and the unpacked root filesystem runs the binary as uid 65532
# with nothing from the host (chroot; needs root, else it says so and skips that part).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/eventpipe-operator}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 scripts/image-archive.py "$binary" eventpipe/check:test "$work/image.tar" --port 9090 >/dev/null
mkdir "$work/archive" "$work/rootfs"
tar -xf "$work/image.tar" -C "$work/archive"
python3 - "$work/archive" "$work/rootfs" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
archive, rootfs = sys.argv[1:]
blob = lambda d: open(os.path.join(archive, "blobs", *d.split(":")), "rb").read()
def checked(descriptor):
    data = blob(descriptor["digest"])
    assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"], descriptor
    assert len(data) == descriptor["size"], descriptor
    return data
index = json.load(open(os.path.join(archive, "index.json")))
entry = index["manifests"][0]
assert entry["annotations"]["io.containerd.image.name"] == "docker.io/eventpipe/check:test", entry
manifest = json.loads(checked(entry))
config = json.loads(checked(manifest["config"]))
layer = gzip.decompress(checked(manifest["layers"][0]))
assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
assert config["config"]["User"] == "65532:65532", config
docker = json.load(open(os.path.join(archive, "manifest.json")))
assert docker[0]["RepoTags"] == ["eventpipe/check:test"], docker
tarfile.open(fileobj=io.BytesIO(layer)).extractall(rootfs, filter="tar")
print("image archive: index, manifest, config and layer agree")
PY
entry=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["Entrypoint"][0])' \
  "$(ls "$work"/archive/blobs/sha256/* | xargs grep -l '"Entrypoint"' | head -1)")
if [ "$(id -u)" = 0 ]; then
  chroot --userspec=65532:65532 "$work/rootfs" "$entry" --version
  echo "image archive: the binary runs from the image's own root filesystem as uid 65532"
else
  echo "image archive: not root, so the run from the image's root filesystem is skipped"
fi

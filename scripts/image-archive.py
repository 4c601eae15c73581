#!/usr/bin/env python3
"""Builds a container image of one release binary as an archive, with no container
engine and no registry: the binary, the shared libraries it loads (as distroless/cc
has them), CA certificates and a non-root user, in one layer.

The archive is both an OCI image layout and a `docker save` archive, so each of these
loads it: `ctr -n k8s.io images import`, `kind load image-archive`, `k3d image import`,
`podman load`, `docker load`.

    scripts/image-archive.py BINARY NAME:TAG OUT.tar [--port N]...
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

UID = 65532
# Fixed times and owners: the same binary gives the same image digest.
MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def shared_libraries(binary):
    """Absolute paths of the libraries `binary` loads, its loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in out.stdout + out.stderr:
            return []
        sys.exit(f"ldd {binary}: {out.stderr.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target == "not":
                sys.exit(f"{binary}: library not found: {line.strip()}")
            libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


class Layer:
    """A tar layer built in memory, entries in the order added."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, path, kind, mode, size=0, owner=0):
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.mode, info.size, info.mtime = kind, mode, size, MTIME
        info.uid = info.gid = owner
        return info

    def directory(self, path, mode=0o755, owner=0):
        parent = os.path.dirname(path.rstrip("/"))
        if parent not in ("", "/") and parent not in self.dirs:
            self.directory(parent)
        if path not in self.dirs:
            self.dirs.add(path)
            self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode, owner=owner))

    def file(self, path, data, mode=0o644):
        self.directory(os.path.dirname(path))
        self.tar.addfile(self._info(path, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def link(self, path, target):
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def copy(self, path, mode=None):
        """A host file at the same path; a symlink is kept as one, with its target."""
        if os.path.islink(path):
            target = os.readlink(path)
            self.link(path, target)
            self.copy(os.path.normpath(os.path.join(os.path.dirname(path), target)))
            return
        with open(path, "rb") as f:
            self.file(path, f.read(), mode if mode is not None else os.stat(path).st_mode & 0o777)

    def close(self):
        self.tar.close()
        return self.buffer.getvalue()


def root_filesystem(binary, entry):
    layer = Layer()
    layer.directory("/etc")
    layer.file("/etc/passwd", f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{UID}:{UID}:nonroot:/home/nonroot:/sbin/nologin\n".encode())
    layer.file("/etc/group", f"root:x:0:\nnonroot:x:{UID}:\n".encode())
    layer.directory("/home/nonroot", 0o700, owner=UID)
    layer.directory("/tmp", 0o1777)
    if os.path.exists(CA_BUNDLE):
        with open(CA_BUNDLE, "rb") as f:
            layer.file(CA_BUNDLE, f.read())
    seen = set()
    for lib in shared_libraries(binary):
        if lib not in seen:
            seen.add(lib)
            layer.copy(lib)
    with open(binary, "rb") as f:
        layer.file(entry, f.read(), 0o755)
    return layer.close()


def blob(out, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1])
    info.size, info.mtime, info.mode = len(data), MTIME, 0o644
    out.addfile(info, io.BytesIO(data))
    return digest


def qualified(name):
    """The name as containerd stores it (what the kubelet asks for)."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + (name if rest else "library/" + name)


def json_bytes(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("binary")
    args.add_argument("name", help="e.g. eventpipe/eventpipe-worker:0.1.0")
    args.add_argument("out")
    args.add_argument("--port", type=int, action="append", default=[])
    a = args.parse_args()
    if ":" not in a.name.rsplit("/", 1)[-1]:
        sys.exit(f"{a.name}: name the tag, e.g. {a.name}:0.1.0")
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"{a.binary}: not an executable file (build it first)")
    entry = "/usr/local/bin/" + os.path.basename(a.binary)
    tar_layer = root_filesystem(a.binary, entry)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as z:
        z.write(tar_layer)
    layer_gz = gz.getvalue()

    config = {
        "architecture": ARCH.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {
            "User": f"{UID}:{UID}",
            "Entrypoint": [entry],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", f"SSL_CERT_FILE={CA_BUNDLE}"],
            "ExposedPorts": {f"{p}/tcp": {} for p in a.port},
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_layer).hexdigest()]},
        "history": [{"created_by": f"scripts/image-archive.py {os.path.basename(a.binary)}"}],
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with tarfile.open(a.out, "w") as out:
        config_bytes = json_bytes(config)
        config_digest = blob(out, config_bytes)
        layer_digest = blob(out, layer_gz)
        manifest = json_bytes({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(layer_gz)}],
        })
        manifest_digest = blob(out, manifest)
        full_name = qualified(a.name)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": len(manifest),
                "annotations": {"io.containerd.image.name": full_name,
                                "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[1]},
            }],
        }
        docker = [{"Config": "blobs/sha256/" + config_digest.split(":")[1], "RepoTags": [a.name],
                   "Layers": ["blobs/sha256/" + layer_digest.split(":")[1]]}]
        for name, data in [("oci-layout", json_bytes({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", json_bytes(index)), ("manifest.json", json_bytes(docker))]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            out.addfile(info, io.BytesIO(data))
    print(f"{a.out}: {a.name} ({len(layer_gz) // 1024} KiB, {manifest_digest})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Packs a root filesystem into an OCI image archive, reproducibly.

    oci-image.py ROOT OUT.oci.tar --tag NAME:TAG [--label KEY=VALUE ...]

One layer: ROOT's files sorted by path, owned by root, with their modes, every time set to
SOURCE_DATE_EPOCH; gzip without a name or time. The config runs /usr/local/bin/iothub-dynreg
as 65532:65532 (`run` by default) and exposes the metrics (8080) and probes (8081) ports. Only
the standard library: the same input gives the same bytes, hence the same digests.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import time


def layer_tar(root, epoch):
    """The layer as an uncompressed tar, deterministic."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for directory, subdirectories, files in os.walk(root):
            subdirectories.sort()
            for name in sorted(subdirectories + files):
                paths.append(os.path.join(directory, name))
        for path in sorted(paths, key=lambda p: os.path.relpath(p, root)):
            info = tar.gettarinfo(path, arcname=os.path.relpath(path, root))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = epoch
            info.pax_headers = {}
            if stat.S_ISDIR(os.lstat(path).st_mode):
                info.mode = 0o755
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def gzipped(data):
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buffer.getvalue()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--label", action="append", default=[])
    options = parser.parse_args()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

    diff = layer_tar(options.root, epoch)
    layer = gzipped(diff)
    labels = dict(label.split("=", 1) for label in options.label)
    labels["org.opencontainers.image.created"] = created
    config = canonical({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": "65532:65532",
            "Entrypoint": ["/usr/local/bin/iothub-dynreg"],
            "Cmd": ["run"],
            "ExposedPorts": {"8080/tcp": {}, "8081/tcp": {}},
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(diff)]},
        "history": [{"created": created, "created_by": "scripts/build-image.sh"}],
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config),
            "size": len(config),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest(layer),
            "size": len(layer),
        }],
        "annotations": {"org.opencontainers.image.created": created},
    })
    index = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(manifest),
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": options.tag},
        }],
    })
    files = [
        ("oci-layout", canonical({"imageLayoutVersion": "1.0.0"})),
        ("index.json", index),
        *[(f"blobs/sha256/{digest(blob)[7:]}", blob) for blob in (config, layer, manifest)],
    ]
    with tarfile.open(options.out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, epoch
            archive.addfile(info)
        for name, blob in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(blob), 0o644, epoch
            archive.addfile(info, io.BytesIO(blob))
    print(f"image {options.tag}: {options.out}")
    print(f"  layer  {digest(layer)} ({len(layer) / 1024 / 1024:.1f} MiB compressed, "
          f"{len(diff) / 1024 / 1024:.1f} MiB)")
    print(f"  config {digest(config)}")
    print(f"  image  {digest(manifest)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the Portcullis filter module as an OCI artifact, in an OCI image layout directory.

    python3 deploy/wasm-oci.py [--wasm FILE] [--out DIR] [--tag TAG] [--arch ARCH]

The artifact is an ordinary single-layer OCI image whose one file is /plugin.wasm: what Istio's
Wasm fetcher accepts (its "compat" image format) and what a Kubernetes image volume mounts (the
chart's filter.module.source: ociArtifact). Everything is deterministic (no timestamps), so the
same module always gives the same digests. Standard library only; no container tool needed.

It prints two lines for the chart:
    filter.sha256=<sha256 of the .wasm>          (what the init container checks)
    manifest=sha256:<digest>                     (pin filter.module.artifact to repo@sha256:...)
Push the layout with any OCI tool, e.g. `skopeo copy oci:DIR:TAG docker://REGISTRY/REPO:TAG`
or `oras cp --from-oci-layout DIR:TAG REGISTRY/REPO:TAG`; the digests do not change.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import pathlib
import shutil
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILE_IN_IMAGE = "plugin.wasm"


def blob(out: pathlib.Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = out / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return "sha256:" + digest


def layer_tar(module: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(FILE_IN_IMAGE)
        info.size, info.mode, info.mtime, info.uid, info.gid = len(module), 0o444, 0, 0, 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def write_layout(module: bytes, out: pathlib.Path, tag: str, arch: str) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tar = layer_tar(module)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as f:
        f.write(tar)
    layer = gz.getvalue()
    wasm_sha = hashlib.sha256(module).hexdigest()
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Labels": {"dev.portcullis.filter.sha256": wasm_sha}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(out, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(out, layer), "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": FILE_IN_IMAGE}}],
        "annotations": {"org.opencontainers.image.title": "portcullis-filter", "dev.portcullis.filter.sha256": wasm_sha},
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = blob(out, manifest)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (out / "index.json").write_text(json.dumps(index, sort_keys=True, indent=2) + "\n")
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    return {"wasm_sha256": wasm_sha, "manifest": manifest_digest}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wasm", type=pathlib.Path, default=ROOT / "target/wasm32-wasip1/wasm/portcullis_filter.wasm")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "target/oci/portcullis-filter")
    p.add_argument("--tag", default="0.1.0")
    p.add_argument("--arch", default="amd64", help="platform the image claims (the module itself runs anywhere)")
    a = p.parse_args()
    if not a.wasm.is_file():
        print(f"wasm-oci: {a.wasm} not found; build it with `make wasm`", file=sys.stderr)
        return 1
    result = write_layout(a.wasm.read_bytes(), a.out, a.tag, a.arch)
    print(f"wasm-oci: wrote {a.out} (tag {a.tag})", file=sys.stderr)
    print(f"filter.sha256={result['wasm_sha256']}")
    print(f"manifest={result['manifest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# `make images`: the filter as an OCI artifact (always: an OCI image layout under target/oci/,
# written by deploy/wasm-oci.py with no container tool), then the runner image from
# deploy/Dockerfile with docker (a reachable daemon) or buildah, whichever works here. Without
# either, the runner image is not built and this says so (the artifact is still written).
#
# Environment: RUNNER_IMAGE (default portcullis/runner:<workspace version>).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
RUNNER_IMAGE="${RUNNER_IMAGE:-portcullis/runner:$VERSION}"
PYTHON=.venv/bin/python
[[ -x "$PYTHON" ]] || PYTHON=python3

say() { printf '==> %s\n' "$*"; }

say "filter OCI artifact (target/oci/portcullis-filter)"
mkdir -p target/oci
"$PYTHON" deploy/wasm-oci.py --tag "$VERSION" | tee target/oci/portcullis-filter.digests

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    say "runner image $RUNNER_IMAGE (docker)"
    DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t "$RUNNER_IMAGE" .
elif command -v buildah >/dev/null; then
    say "runner image $RUNNER_IMAGE (buildah)"
    buildah build --ignorefile deploy/Dockerfile.dockerignore -f deploy/Dockerfile -t "$RUNNER_IMAGE" .
else
    say "runner image NOT built: no reachable docker daemon and no buildah here"
    say "  (build it elsewhere with: docker build -f deploy/Dockerfile -t $RUNNER_IMAGE .)"
fi
say "chart values: filter.sha256 and filter.module.artifact=<registry>/<repo>@<manifest> from target/oci/portcullis-filter.digests"

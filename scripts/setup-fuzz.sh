#!/usr/bin/env bash
# Installs cargo-fuzz (pinned) into <repo>/.cargo-tools, for `make fuzz` and `make fuzz-smoke`.
# Idempotent; scripts/setup.sh calls it. Needs a C++ compiler (libfuzzer-sys builds libFuzzer).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.cargo-tools"
CARGO_FUZZ_VERSION=0.13.2

say() { printf '==> %s\n' "$*"; }

have="$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | awk '{print $2}' || true)"
if [[ "$have" == "$CARGO_FUZZ_VERSION" ]]; then
    say "cargo-fuzz: $CARGO_FUZZ_VERSION in .cargo-tools"
else
    say "cargo-fuzz: installing $CARGO_FUZZ_VERSION into .cargo-tools (cargo install --locked)"
    cargo install --quiet --locked --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

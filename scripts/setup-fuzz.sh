#!/usr/bin/env bash
# Installs cargo-fuzz (pinned) into <repo>/.cargo-tools, for `make fuzz` and `make fuzz-smoke`.
# Idempotent; scripts/setup.sh calls it. Needs a C++ compiler (libfuzzer-sys builds libFuzzer).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.cargo-tools"
CARGO_FUZZ_VERSION=0.13.2

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup-fuzz.sh: %s\n' "$*" >&2; exit 1; }

# libfuzzer-sys compiles libFuzzer, which is C++: a machine with gcc alone lacks g++.
if ! command -v c++ >/dev/null; then
    command -v apt-get >/dev/null && [[ $EUID -eq 0 ]] \
        || die "no C++ compiler (c++): install g++ (Debian: apt-get install g++)"
    say "g++: installing with apt-get (libFuzzer is C++)"
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends g++ >&2 \
        || { apt-get -o DPkg::Lock::Timeout=600 update >&2 \
             && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends g++ >&2; } \
        || die "apt-get install g++ failed"
fi

have="$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | awk '{print $2}' || true)"
if [[ "$have" == "$CARGO_FUZZ_VERSION" ]]; then
    say "cargo-fuzz: $CARGO_FUZZ_VERSION in .cargo-tools"
else
    say "cargo-fuzz: installing $CARGO_FUZZ_VERSION into .cargo-tools (cargo install --locked)"
    cargo install --quiet --locked --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

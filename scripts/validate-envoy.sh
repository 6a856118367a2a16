#!/usr/bin/env bash
# Validate every Envoy config in envoy/ with `envoy --mode validate`, from the repository root
# (the configs use paths relative to it). Exits non-zero if Envoy is missing or any file fails.
#
# What validate mode needs on disk (checked with Envoy 1.40.0): it builds the whole server
# config, so every file a config references must exist and be valid:
#   - the certificates, keys and CA under .portcullis/certs/ are read and parsed; a missing or
#     garbage file fails validation. Missing ones are created here with
#     `cargo run -q --release -p portcullis-runner -- certs --dir .portcullis/certs`.
#   - the access log file (.portcullis/access.log) is opened, and so created if missing (with
#     Envoy's default mode; `portcullis up` creates its own one 0600 in its state dir first).
#   - the wasm module is loaded into V8, and the plugin's on_vm_start and on_configure run with
#     the plugin configuration written in the file. The checked-in configuration is a
#     placeholder (the real one carries the ticket signing key, so it only exists rendered, at
#     `portcullis up`), and the real filter rightly refuses to start with it. So each config is
#     validated as a temporary copy whose filter module is a stub that accepts any
#     configuration (below); everything else is validated exactly as checked in. The real
#     filter with a real configuration is exercised by `portcullis up` and the e2e tests.
#
# `portcullis up` does not run the template as is: it moves the portcullis filter's config into
# a file that Envoy reads by ECDS (runner/src/devstack/envoy_config.rs split_for_ecds), so that policy
# changes reach a running Envoy. Each config is therefore validated twice: as checked in, and in
# that ECDS form (the filter a config_discovery on a file holding a DiscoveryResponse with the
# filter's TypedExtensionConfig). Validate mode checks that form's bootstrap and that the ECDS
# file exists, but not the file's contents (checked with Envoy 1.40.0: a bogus resource in it
# still validates); the filter config inside is the one validated inline in the first form.
# Nothing listens and no port is bound.
#
# Environment: PORTCULLIS_ENVOY (Envoy binary; default .venv/bin/envoy, then envoy on PATH).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CERT_DIR=.portcullis/certs
FILTER_WASM=target/wasm32-wasip1/wasm/portcullis_filter.wasm

say() { printf '==> %s\n' "$*"; }
die() { printf 'validate-envoy.sh: error: %s\n' "$*" >&2; exit 1; }

# Same order as runner/src/devstack/envoy_config.rs find_envoy.
if [[ -n "${PORTCULLIS_ENVOY:-}" ]]; then
    ENVOY="$(command -v -- "$PORTCULLIS_ENVOY" || true)"
    [[ -n "$ENVOY" && -x "$ENVOY" ]] || die "PORTCULLIS_ENVOY=$PORTCULLIS_ENVOY is not an executable"
elif [[ -x .venv/bin/envoy ]]; then
    ENVOY="$ROOT/.venv/bin/envoy"
elif command -v envoy >/dev/null; then
    ENVOY="$(command -v envoy)"
else
    die "Envoy not found (no PORTCULLIS_ENVOY, no .venv/bin/envoy, no envoy on PATH); run scripts/setup.sh"
fi
say "Envoy: $ENVOY ($("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: //p'))"

missing_certs=()
for f in ca.pem ca-key.pem gateway.pem gateway-key.pem runner.pem runner-key.pem \
         ticket-signing-key.pem ticket-signing-pub.pem; do
    [[ -f "$CERT_DIR/$f" ]] || missing_certs+=("$f")
done
if ((${#missing_certs[@]})); then
    say "dev certificates missing in $CERT_DIR (${missing_certs[*]}); creating them"
    cargo run -q --release -p portcullis-runner -- certs --dir "$CERT_DIR" \
        || die "could not create dev certificates with 'portcullis certs --dir $CERT_DIR'"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-validate.XXXXXX")"
trap 'rm -rf -- "$WORK"' EXIT

# The stub proxy-wasm module (249 bytes), assembled from this WAT; runner/tests/envoy_config.rs
# checks that the hex below still is exactly that module.
#   (module
#     (memory (export "memory") 1)
#     (func (export "proxy_abi_version_0_2_1"))
#     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
#     (func (export "proxy_on_context_create") (param i32 i32))
#     (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
#     (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
#     (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
#     (func (export "proxy_on_delete") (param i32)))
STUB_HEX="
# BEGIN stub-filter hex
0061736d0100000001180560000060017f017f60027f7f0060027f7f017f6001
7f0003080700010203030104050301000107a40108066d656d6f727902001770
726f78795f6162695f76657273696f6e5f305f325f3100001870726f78795f6f
6e5f6d656d6f72795f616c6c6f6361746500011770726f78795f6f6e5f636f6e
746578745f63726561746500021170726f78795f6f6e5f766d5f737461727400
031270726f78795f6f6e5f636f6e66696775726500040d70726f78795f6f6e5f
646f6e6500050f70726f78795f6f6e5f64656c65746500060a1f0702000b0500
4180080b02000b040041010b040041010b040041010b02000b
# END stub-filter hex
"
STUB="$WORK/stub-filter.wasm"
stub_hex="$(grep -v '^#' <<<"$STUB_HEX" | tr -d ' \n')"
printf '%b' "$(sed 's/../\\x&/g' <<<"$stub_hex")" > "$STUB"

PYTHON=.venv/bin/python
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3 || true)"
[[ -n "$PYTHON" ]] && "$PYTHON" -c 'import yaml' 2>/dev/null \
    || die "Python with PyYAML not found (needed for the ECDS form); run scripts/setup.sh"

# The ECDS form of bootstrap $1, written to $2, its filter config to the ECDS file $3; the same
# transformation as split_for_ecds + ecds_response in runner/src/devstack/envoy_config.rs.
ecds_form() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import json, sys, yaml
src, dst, ecds = sys.argv[1:]
boot = yaml.safe_load(open(src))
done = 0
for listener in boot["static_resources"]["listeners"]:
    for chain in listener.get("filter_chains", []):
        for f in chain.get("filters", []):
            for h in f.get("typed_config", {}).get("http_filters", []):
                if h.get("name") != "portcullis":
                    continue
                typed = h.pop("typed_config")
                h["config_discovery"] = {
                    "config_source": {"path_config_source": {"path": ecds}, "resource_api_version": "V3"},
                    "type_urls": [typed["@type"]],
                }
                json.dump({"version_info": "validate", "resources": [{
                    "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                    "name": "portcullis", "typed_config": typed}]}, open(ecds, "w"))
                done += 1
if done != 1:
    sys.exit(f"{src}: expected exactly one http filter named portcullis, found {done}")
yaml.safe_dump(boot, open(dst, "w"))
PY
}

shopt -s nullglob
configs=(envoy/*.yaml)
((${#configs[@]})) || die "no envoy/*.yaml files to validate"

failed=()
for config in "${configs[@]}"; do
    copy="$WORK/$(basename -- "$config")"
    # Only the filter module path changes; the copy is read from the repo root like the original.
    sed "s|$FILTER_WASM|$STUB|g" -- "$config" > "$copy"
    ecds_copy="${copy%.yaml}.ecds-form.yaml"
    ecds_form "$copy" "$ecds_copy" "$WORK/$(basename -- "$config" .yaml).filter.ecds.json" \
        || die "cannot derive the ECDS form of $config"
    for form in "$copy" "$ecds_copy"; do
        label="$config"
        [[ "$form" == "$ecds_copy" ]] && label="$config (ECDS form, as portcullis up runs it)"
        if log="$("$ENVOY" --mode validate --log-level warn -c "$form" 2>&1)"; then
            say "OK     $label"
        else
            printf '%s\n' "$log" >&2
            say "FAILED $label"
            failed+=("$label")
        fi
    done
done

if ((${#failed[@]})); then
    die "${#failed[@]} of ${#configs[@]} Envoy config(s) failed validation: ${failed[*]}"
fi
say "all ${#configs[@]} Envoy config(s) valid (filter module stubbed; see the top of this script)"

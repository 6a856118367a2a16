#!/bin/sh
# Builds what Envoy loads the Portcullis filter from, in the pod's init container, from the
# mounted policy bundle, catalog, users' issuers and ticket signing key:
#
#   $OUT_DIR/portcullis_filter.wasm    the filter module, only if its SHA-256 is $MODULE_SHA256
#   $OUT_DIR/portcullis.ecds.yaml      an xDS DiscoveryResponse with one TypedExtensionConfig
#                                      (the Wasm filter config of $WASM_TEMPLATE, carrying the
#                                      plugin configuration that `portcullis plugin-config`
#                                      builds and checks exactly as the filter will)
#
# Envoy reads the second file by ECDS from a path (as `portcullis up` does), never from an
# Istio or Kubernetes object: the plugin configuration holds the ticket signing key. Envoy
# refuses a listener whose ECDS file does not exist yet, so the proxy must start after this
# script (the plain Envoy is a regular container; the chart turns Istio's native sidecar off for
# this pod). Both files are moved into place whole, the module first.
#
# Environment (all required): PORTCULLIS (the runner binary), POLICY_DIR, CATALOG, USERS,
# TICKET_KEY, WASM_TEMPLATE, MODULE, MODULE_SHA256, OUT_DIR. chart tests run this same script.
set -eu
umask 077

for var in PORTCULLIS POLICY_DIR CATALOG USERS TICKET_KEY WASM_TEMPLATE MODULE MODULE_SHA256 OUT_DIR; do
    eval "value=\${$var:-}"
    if [ -z "$value" ]; then
        echo "render-filter-config: $var is not set" >&2
        exit 1
    fi
done

# The template's last line must be the key the plugin configuration goes under, so that the
# configuration can follow as a YAML block scalar indented one level deeper.
last="$(tail -n 1 "$WASM_TEMPLATE")"
case "$last" in
    "    value: |-") ;;
    *) echo "render-filter-config: $WASM_TEMPLATE must end with '    value: |-', not '$last'" >&2; exit 1 ;;
esac

work="$(mktemp -d "$OUT_DIR/.render.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# 1. The module, checked after the copy: what Envoy loads is exactly what was pinned.
cp "$MODULE" "$work/portcullis_filter.wasm"
if ! printf '%s  %s\n' "$MODULE_SHA256" "$work/portcullis_filter.wasm" | sha256sum -c - >/dev/null 2>&1; then
    echo "render-filter-config: refusing the filter module $MODULE: its SHA-256 is" \
         "$(sha256sum "$work/portcullis_filter.wasm" | cut -c1-64), the chart pins $MODULE_SHA256" >&2
    exit 1
fi

# 2. The plugin configuration; plugin-config refuses a bundle, catalog, key or issuer list that
#    would not build a gateway, so a bad one stops the pod here instead of inside Envoy.
"$PORTCULLIS" plugin-config --policies "$POLICY_DIR" --catalog "$CATALOG" \
    --signing-key "$TICKET_KEY" --users "$USERS" --output "$work/plugin-config.json"

# 3. The DiscoveryResponse. The configuration is one line of JSON, put in a block scalar.
version="$(sha256sum "$work/plugin-config.json" | cut -c1-64)"
{
    printf 'version_info: "%s"\n' "$version"
    printf 'resources:\n'
    printf -- '- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n'
    printf '  name: portcullis\n'
    printf '  typed_config:\n'
    sed 's/^/    /' "$WASM_TEMPLATE"
    sed 's/^/          /' "$work/plugin-config.json"
} > "$work/portcullis.ecds.yaml"

mv -f "$work/portcullis_filter.wasm" "$OUT_DIR/portcullis_filter.wasm"
mv -f "$work/portcullis.ecds.yaml" "$OUT_DIR/portcullis.ecds.yaml"
echo "render-filter-config: filter configuration $version written (module $MODULE_SHA256)" >&2

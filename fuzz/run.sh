#!/usr/bin/env bash
# Runs every fuzz target (or those named after the seconds) for SECONDS each: first it replays
# the target's committed crash inputs (fuzz/regressions/<target>/), then fuzzes from the
# committed seeds (fuzz/seeds/<target>/) and its working corpus (fuzz/corpus/<target>/, not
# committed). Stops at the first failure; libFuzzer saves the input in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh SECONDS [TARGET...]        (make fuzz, make fuzz-smoke)
#
# cargo-fuzz comes from .cargo-tools (scripts/setup-fuzz.sh). It builds with AddressSanitizer,
# which needs rustc's unstable -Zsanitizer: RUSTC_BOOTSTRAP=1 lets the stable toolchain take it.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${1:?usage: fuzz/run.sh SECONDS [TARGET...]}"
shift
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(decide plan_hash ticket user_jwt listing config audit_verify)
CARGO_FUZZ="$ROOT/.cargo-tools/bin/cargo-fuzz"
[[ -x "$CARGO_FUZZ" ]] || { echo "fuzz/run.sh: $CARGO_FUZZ is missing: run scripts/setup-fuzz.sh (make fuzz does)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

# Runs cargo fuzz with its output in $LOG; on failure shows its end and stops.
fuzz() {
    if ! "$CARGO_FUZZ" "$@" >"$LOG" 2>&1; then
        tail -n 60 "$LOG" >&2
        echo "fuzz/run.sh: cargo fuzz $* failed (a crashing input is saved in fuzz/artifacts/)" >&2
        exit 1
    fi
}

echo "==> building the fuzz targets (cargo fuzz build)"
fuzz build
for target in "${TARGETS[@]}"; do
    mapfile -t regressions < <(find "fuzz/regressions/$target" -type f 2>/dev/null | sort)
    if [[ ${#regressions[@]} -gt 0 ]]; then
        echo "==> $target: replaying ${#regressions[@]} regression inputs"
        fuzz run "$target" "${regressions[@]}" -- -runs=1
    fi
    mkdir -p "fuzz/corpus/$target"
    echo "==> $target: fuzzing for $SECONDS_EACH s"
    # -timeout: one input taking this long is a hang; generous, as other builds share the CPU.
    fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=30 -print_final_stats=1
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$LOG" | sed 's/^/    /'
done
echo "==> fuzzing: ${#TARGETS[@]} targets, $SECONDS_EACH s each, no failure"

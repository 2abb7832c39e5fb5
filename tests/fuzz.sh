#!/usr/bin/env bash
# Bounded smoke run of every cargo-fuzz target in fuzz/ (sans-I/O protocol core).
#
#   tests/fuzz.sh                    # every target, 20 s each
#   FUZZ_TIME=60 tests/fuzz.sh frame_reader
#
# Works on the stable toolchain: cargo-fuzz's AddressSanitizer flag (-Zsanitizer)
# is nightly-only, so RUSTC_BOOTSTRAP=1 is set for the fuzz build. Set
# FUZZ_SANITIZER=none to build without ASan (no unstable flags at all; faster).
# Installs cargo-fuzz if missing. Exits non-zero if any target crashes,
# leaks, times out or fails to build; crash inputs stay in fuzz/artifacts/<target>/
# (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>).
# Cold build of the targets takes ~3 min on 2 cores; fuzzing ~6 x FUZZ_TIME.
set -euo pipefail

cd "$(dirname "$0")/.."

FUZZ_TIME=${FUZZ_TIME:-20}              # seconds per target
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
ALL_TARGETS=(frame_reader utf8_validator handshake_request handshake_response extension_header inflate)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

if [ "$FUZZ_SANITIZER" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
echo "== $(cargo fuzz --version), $(rustc --version), sanitizer: $FUZZ_SANITIZER"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== building fuzz targets"
if ! cargo fuzz build -s "$FUZZ_SANITIZER" >"$scratch/build.log" 2>&1; then
    tail -n 60 "$scratch/build.log"
    echo "FAIL: cargo fuzz build"
    exit 1
fi

failed=()
printf '\n%-20s %12s %8s %10s %6s %6s %s\n' target runs time_s exec/s cov ft crashes
for t in "${TARGETS[@]}"; do
    corpus="$scratch/corpus/$t"
    mkdir -p "$corpus"
    if [ -d "fuzz/seeds/$t" ]; then cp fuzz/seeds/"$t"/* "$corpus"/; fi
    extra=()
    case "$t" in
        handshake_*) extra+=("-dict=fuzz/dicts/http.dict") ;;
        extension_header) extra+=("-dict=fuzz/dicts/extensions.dict") ;;
    esac
    log="$scratch/$t.log"
    touch "$scratch/stamp"
    rc=0
    cargo fuzz run -s "$FUZZ_SANITIZER" "$t" "$corpus" -- \
        -max_total_time="$FUZZ_TIME" -timeout=10 -print_final_stats=1 \
        ${extra[@]+"${extra[@]}"} >"$log" 2>&1 || rc=$?

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || true)
    # libFuzzer stops at the first crash/leak/timeout and saves it here.
    crashes=0
    if [ -d "fuzz/artifacts/$t" ]; then
        crashes=$(find "fuzz/artifacts/$t" -type f -newer "$scratch/stamp" | wc -l)
    fi
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
    fi
    printf '%-20s %12s %8s %10s %6s %6s %s\n' "$t" "${runs:-?}" "${secs:-?}" "${eps:-?}" \
        "$(echo "${cov:-? ? ? ?}" | awk '{print $2}')" "$(echo "${cov:-? ? ? ?}" | awk '{print $4}')" \
        "$crashes"
    if [ "$rc" -ne 0 ]; then
        mkdir -p fuzz/artifacts
        cp "$log" "fuzz/artifacts/$t.log"
        echo "---- $t failed (exit $rc); full log: fuzz/artifacts/$t.log"
        grep -A4 'panicked at' "$log" | head -n 6 || true
        grep -E 'ERROR: |SUMMARY: |Test unit written|^error' "$log" | head -n 10 || true
        grep -A2 '^Reproduce with' "$log" | grep -v '^$' || true
        [ "$crashes" -gt 0 ] || tail -n 20 "$log"
        echo "----"
    fi
done

total=${#TARGETS[@]}
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAIL: ${failed[*]} (inputs saved under fuzz/artifacts/)"
    echo "fuzz: $((total - ${#failed[@]})) passed, ${#failed[@]} failed"
    exit 1
fi
echo "OK: no crashes"
echo "fuzz: $total passed, 0 failed"

#!/usr/bin/env bash
# Builds ctrain and runs every test: scripts/test.sh [CTEST ARGS...]
#
# Installs what is missing (python3-torch included, so the PyTorch parity test runs; if it
# cannot be installed the test reports itself as skipped), builds with scripts/build.sh, then
# runs `ctest --test-dir build --output-on-failure -j2 --timeout 900` plus any arguments given
# (e.g. `-L unit`, `-R parity`). Exits with ctest's status. Runs from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== test: build"
if ! scripts/build.sh --with-torch; then
    echo "test.sh: FAIL (the build failed; no tests ran)"
    exit 1
fi

echo "== test: ctest"
log=$(mktemp "${TMPDIR:-/tmp}/ctrain-ctest.XXXXXX")
trap 'rm -f "$log"' EXIT
start=$(date +%s)
set +e
ctest --test-dir build --output-on-failure -j2 --timeout 900 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
secs=$(( $(date +%s) - start ))

echo
echo "== test: summary"
grep -E '^[0-9]+% tests passed' "$log" || true
# ctest lists skipped tests as "  N - name (Skipped)" and failed ones as "  N - name (Failed)".
grep -E '^[[:space:]]+[0-9]+ - .*\((Skipped|Disabled)\)' "$log" \
    | sed -E 's/^[[:space:]]+/skipped: /' || true
if [[ $status -eq 0 ]]; then
    echo "test.sh: PASS (ctest exit 0, ${secs}s)"
else
    echo "test.sh: FAIL (ctest exit $status, ${secs}s)"
    grep -E '^[[:space:]]+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Exception|Not Run|ILLEGAL|BAD_COMMAND|OTHER_FAULT|INTERRUPT|NUMERICAL)' \
        "$log" | sed -E 's/^[[:space:]]+/failed: /' || true
fi
exit "$status"

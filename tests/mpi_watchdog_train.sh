#!/usr/bin/env bash
# The watchdog through the trainer: 3 ranks of a small job with comm.timeout_s = 3 and the
# test-only fault CTRAIN_FAULT=stall:rank=1:step=3 (rank 1 sleeps at its first collective of
# step 3). Every rank must report the stalled collective and that rank 1 is behind, and the
# job must exit non-zero within the timeout + 10 s (plus start-up).
# usage: mpi_watchdog_train.sh BIN_DIR
set -u
bin=$1
command -v mpirun >/dev/null || { echo "mpirun not found: skipped"; exit 77; }
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tiny_job "$work/job.toml" "[comm]
timeout_s = 3
[device]
threads_per_rank = 1"
sed -i 's/^steps = 2$/steps = 20/' "$work/job.toml"
start=$(date +%s.%N)
CTRAIN_FAULT=stall:rank=1:step=3 timeout 120 "$bin/ctrain-launch" --nproc 3 "$work/job.toml" \
  >"$work/out" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
check() {
  checks=$((checks + 1))
  if ! eval "$1"; then
    echo "FAIL: $2"
    failures=$((failures + 1))
  fi
}
# shellcheck disable=SC2016  # evaluated by check
check '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]' "the job exited $rc (want non-zero, not a hang)"
# 3 s timeout + 10 s, plus up to 10 s of MPI start-up on a loaded 2-core machine
check "awk -v e=$elapsed 'BEGIN { exit !(e < 23) }'" "the job took $elapsed s"
for r in 0 1 2; do
  check "grep -Eq '^\[rank $r\] watchdog: collective #[0-9]+ [a-z_]+ .*step 3.*rank 1 is behind' '$work/out'" \
    "rank $r did not name the stalled collective and rank 1"
done
echo "exit $rc after $elapsed s"
[ $failures -eq 0 ] || sed 's/^/    /' "$work/out" | tail -30
summary

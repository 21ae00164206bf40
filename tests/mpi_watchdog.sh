#!/usr/bin/env bash
# The hang watchdog end to end (issue 3): 3 ranks, timeout 2 s. Clean, the loop finishes and
# exits 0 with no watchdog report (and the collective shutdown of the heartbeat does not hang).
# With CTRAIN_FAULT=stall:rank=1:step=3, rank 1 stalls before its 4th collective: the job must
# exit non-zero within timeout + 10 s, and every rank must print the stuck collective
# (#4 allreduce, 4004 bytes), that rank 1 is behind (last started #3), and its ring.
# Usage: mpi_watchdog.sh MPIEXEC PROGRAM
set -u
mpiexec=$1
program=$2
timeout_s=2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail() { echo "FAIL: $*"; echo "---- output"; cat "$out"; exit 1; }

timeout 60 "$mpiexec" --oversubscribe -np 3 "$program" "$timeout_s" >"$out" 2>&1 ||
  fail "the clean run exited $?"
grep -q "finished 8 steps" "$out" || fail "the clean run did not finish"
grep -q "watchdog" "$out" && fail "the watchdog fired on a clean run"
echo "clean run: finished, exit 0, no report"

start=$(date +%s.%N)
CTRAIN_FAULT=stall:rank=1:step=3 timeout 60 "$mpiexec" --oversubscribe -np 3 "$program" \
  "$timeout_s" >"$out" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
[ "$rc" -ne 0 ] || fail "the stalled job exited 0"
[ "$rc" -ne 124 ] || fail "the stalled job hung until timeout(1) killed it"
limit=$((timeout_s + 10))
awk -v e="$elapsed" -v l="$limit" 'BEGIN { exit !(e < l) }' || fail "the job took ${elapsed} s (limit ${limit} s)"
for r in 0 1 2; do
  grep -Eq "^\[rank $r\] watchdog: collective #4 allreduce \(4004 bytes\) pending for [0-9.]+ s .*rank 1 is behind \(last started #3\)" "$out" ||
    fail "rank $r did not report the stuck collective and the rank behind"
  grep -Eq "^\[rank $r\] +#3 +allreduce +4004 bytes +group of 3 +done" "$out" ||
    fail "rank $r did not print its ring"
done
echo "stalled run: exit $rc after ${elapsed} s; every rank named #4 allreduce and rank 1"

#!/usr/bin/env bash
# The watchdog sees a frozen rank (issue 8): 3 ranks of a small job with comm.timeout_s = 3 that
# would train for about 30 s; once training has started, rank 1 gets SIGSTOP. Its watchdog
# thread is frozen with it, so the heartbeat must not need its answer: ranks 0 and 2 must each
# print a line naming rank 1 and the job must exit non-zero within the timeout + 10 s (plus a
# few seconds of slack on a loaded 2-core machine) of the SIGSTOP. Every process the job
# started is SIGKILLed on the way out if it is still there (a stopped rank ignores SIGTERM).
# usage: mpi_watchdog_frozen.sh BIN_DIR
set -u
bin=$1
command -v mpirun >/dev/null || { echo "mpirun not found: skipped"; exit 77; }
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
timeout_s=3
# timeout + 10 s, plus 5 s for a loaded machine
limit=$((timeout_s + 15))

check() {
  checks=$((checks + 1))
  if ! eval "$1"; then
    echo "FAIL: $2"
    failures=$((failures + 1))
  fi
}

launch_pid=""
ranks=()
# Leftovers: the ranks found below, and whatever still runs this job's file (mpirun).
cleanup() {
  local p
  for p in "${ranks[@]}" $launch_pid $(pgrep -f -- "$work/job.toml"); do
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

# ~4 ms a step on 3 ranks sharing 2 cores: 8000 steps are about 30 s
tiny_job "$work/job.toml" "[comm]
timeout_s = $timeout_s
[device]
threads_per_rank = 1"
sed -i -e 's/^steps = 2$/steps = 8000/' -e 's/^n_embd = 16$/n_embd = 64/' \
  -e 's/^seq_len = 8$/seq_len = 32/' -e 's/^batch_size = 2$/batch_size = 4/' \
  -e 's/^\[log\]$/[log]\nevery = 100/' "$work/job.toml"
timeout 120 "$bin/ctrain-launch" --nproc 3 "$work/job.toml" >"$work/out" 2>&1 &
launch_pid=$!

# Training is under way once rank 0 has printed step 100 (so the last heartbeats carry a step).
for _ in $(seq 300); do
  grep -q '^step  *100/' "$work/out" && break
  kill -0 $launch_pid 2>/dev/null || break
  sleep 0.1
done
# The ranks: `ctrain worker JOB` processes of this job, told apart by Open MPI's environment.
rank_pid() {
  local p
  for p in $(pgrep -f "ctrain worker $work/job.toml"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then
      echo "$p"
      return
    fi
  done
}
for r in 0 1 2; do
  p=$(rank_pid $r)
  [ -n "$p" ] && ranks+=("$p")
done
victim=$(rank_pid 1)
# shellcheck disable=SC2016  # evaluated by check
check '[ -n "$victim" ] && grep -q "^step  *100/" "$work/out"' \
  "training did not reach step 100 or rank 1 was not found"
if [ -z "$victim" ]; then
  sed 's/^/    /' "$work/out" | tail -30
  summary
  exit
fi

kill -STOP "$victim"
start=$(date +%s.%N)
hung=0
while kill -0 $launch_pid 2>/dev/null; do
  if awk -v a="$start" -v b="$(date +%s.%N)" -v l="$limit" 'BEGIN { exit !(b - a > l + 2) }'; then
    hung=1
    break
  fi
  sleep 0.2
done
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ $hung -eq 1 ]; then
  kill -KILL "${ranks[@]}" 2>/dev/null
  kill -TERM $launch_pid 2>/dev/null
fi
wait $launch_pid
rc=$?

# shellcheck disable=SC2016  # evaluated by check
check '[ $hung -eq 0 ]' "the job was still running $elapsed s after the SIGSTOP (a hang)"
# shellcheck disable=SC2016  # evaluated by check
check '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ]' \
  "the job exited $rc (want non-zero, not a timeout)"
check "awk -v e=$elapsed -v l=$limit 'BEGIN { exit !(e < l) }'" \
  "the job ended $elapsed s after the SIGSTOP (limit $limit s)"
for r in 0 2; do
  pattern="^\[rank $r\] watchdog: rank 1 has sent no heartbeat for [0-9.]+ s .*step [0-9]+"
  check "grep -Eq '$pattern' '$work/out'" "rank $r did not name rank 1 and its last heartbeat"
done
echo "exit $rc $elapsed s after the SIGSTOP of rank 1 (pid $victim)"
[ "$failures" -eq 0 ] || sed 's/^/    /' "$work/out" | tail -30
summary

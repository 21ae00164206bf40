#!/usr/bin/env bash
# The watchdog through the trainer: 3 ranks of a small job with comm.timeout_s = 3 and the
# test-only fault CTRAIN_FAULT=stall:rank=1:step=3 (rank 1 sleeps at its first collective of
# step 3). Every rank must report the stalled collective and that rank 1 is behind, and the
# job must exit non-zero within the timeout + 10 s (plus start-up).
# usage: mpi_watchdog_train.sh BIN_DIR
set -u
bin=$1
command -v mpirun >/dev/null || { echo "mpirun not found: skipped"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$bin/ctrain" data synth --out "$work/data" --tokens 20000 --vocab 64 --seed 3 >/dev/null
cat >"$work/job.toml" <<TOML
[model]
n_layer = 1
n_head = 2
n_embd = 16
vocab_size = 64
seq_len = 8
[data]
train = "$work/data/train_*.bin"
[train]
batch_size = 2
steps = 20
[comm]
timeout_s = 3
[log]
dir = "$work/run"
every = 1
[device]
threads_per_rank = 1
TOML
start=$(date +%s.%N)
CTRAIN_FAULT=stall:rank=1:step=3 timeout 120 "$bin/ctrain-launch" --nproc 3 "$work/job.toml" \
  >"$work/out" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
failures=0
check() {
  if ! eval "$1"; then
    echo "FAIL: $2"
    failures=$((failures + 1))
  fi
}
check '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]' "the job exited $rc (want non-zero, not a hang)"
# 3 s timeout + 10 s, plus up to 10 s of MPI start-up on a loaded 2-core machine
check "awk -v e=$elapsed 'BEGIN { exit !(e < 23) }'" "the job took $elapsed s"
for r in 0 1 2; do
  check "grep -Eq '^\[rank $r\] watchdog: collective #[0-9]+ [a-z_]+ .*step 3.*rank 1 is behind' '$work/out'" \
    "rank $r did not name the stalled collective and rank 1"
done
echo "exit $rc after $elapsed s"
[ $failures -eq 0 ] || sed 's/^/    /' "$work/out" | tail -30
echo "$((4 - failures)) passed, $failures failed"
[ $failures -eq 0 ]

#!/usr/bin/env bash
# ctrain-launch and ctrain worker: the mpirun command --dry-run prints (ranks, hostfile,
# threads, the absolute ctrain path, the job and its overrides, extra mpirun words with their
# quotes), usage errors (exit 2, prefixed "ctrain-launch:"), flags after the job file, the
# oversubscription warning, job, hostfile and data errors and a missing mpirun (exit 2, named),
# the direct worker inside an MPI or Slurm job, the restart rule (a stand-in mpirun), and real
# runs: --nproc 1 in this process, and --nproc 2 through mpirun when mpirun is installed
# (skipped with a message otherwise). Signals and SIGKILL: tests/launch_signals.py.
# usage: cli_launch.sh BIN_DIR SOURCE_DIR
set -u
bin=$1
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"
# The tests decide whether they run inside an MPI or Slurm job, not the caller's environment.
unset OMPI_COMM_WORLD_SIZE PMIX_RANK SLURM_PROCID

tiny_job "$work/job.toml"
printf 'nodea slots=2\nnodeb slots=2   # a comment\n' >"$work/hosts"
ctrain=$(cd "$bin" && pwd -P)/ctrain
job=$(cd "$work" && pwd -P)/job.toml

# --dry-run: the mpirun command on one line, then the resolved job (overrides applied)
launch=("$bin/ctrain-launch" --nproc 3 --hostfile "$work/hosts" --dry-run "$job" train.lr=1e-3
        train.steps=3)
expect 0 "=mpirun -np 3 " -- "${launch[@]}"
expect 0 "=--hostfile $work/hosts " -- "${launch[@]}"
expect 0 "-x OMP_NUM_THREADS=[0-9]+ -x OPENBLAS_NUM_THREADS=[0-9]+" -- "${launch[@]}"
expect 0 "=--bind-to none" -- "${launch[@]}"
expect 0 "= $ctrain worker $job train.lr=1e-3 train.steps=3" -- "${launch[@]}"
expect 0 "^lr = 0.001" -- "${launch[@]}"
expect 0 "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun" -- "${launch[@]}"
# threads: the job's key wins; else cores / ranks on the busiest host (2 slots each here)
expect 0 "=OMP_NUM_THREADS=5 " -- "${launch[@]}" device.threads_per_rank=5
cores=$(nproc)
expect 0 "=OMP_NUM_THREADS=$(( cores / 2 > 0 ? cores / 2 : 1 )) " -- "${launch[@]}"
printf 'nodea slots=1\nnodeb slots=1\n' >"$work/hosts1"
expect 0 "=OMP_NUM_THREADS=$cores " -- \
  "$bin/ctrain-launch" --nproc 2 --hostfile "$work/hosts1" --dry-run "$job"
# no hostfile: all ranks here, oversubscribed past the cores
expect 0 "=mpirun -np $((cores + 1)) --oversubscribe " -- \
  "$bin/ctrain-launch" --nproc $((cores + 1)) --dry-run "$job"
expect 0 "=-x CTRAIN_LOG " -- env CTRAIN_LOG=debug "${launch[@]}"
# extra mpirun words, split like a shell, printed quoted where a shell needs it
expect 0 "=--mca btl tcp,self -x 'A B' $ctrain worker" -- \
  "$bin/ctrain-launch" --nproc 2 --mpirun-args "--mca btl 'tcp,self' -x \"A B\"" --dry-run "$job"
# --nproc 1: no mpirun, the same worker in this process
expect 0 "would train in this process" -- "$bin/ctrain-launch" --dry-run "$job"
expect 0 "=$ctrain worker $job" -- "$bin/ctrain-launch" --nproc 1 --dry-run "$job"

# inside an MPI or Slurm job the worker runs directly
expect 0 "SLURM_PROCID is set\): running the worker directly" -- \
  env SLURM_PROCID=0 "$bin/ctrain-launch" --dry-run "$job"
expect 0 "would run the worker directly" -- \
  env OMPI_COMM_WORLD_SIZE=4 "$bin/ctrain-launch" --nproc 4 --dry-run "$job"
expect 0 "--nproc, --hostfile and --mpirun-args are ignored" -- \
  env PMIX_RANK=0 "$bin/ctrain-launch" --nproc 4 --dry-run "$job"
expect 0 "--max-restarts is ignored" -- \
  env PMIX_RANK=0 "$bin/ctrain-launch" --max-restarts 2 --dry-run "$job"

# usage errors exit 2, prefixed with the program's name; job errors exit 2 too and name the file
expect 2 "^ctrain-launch: unknown option '--bogus'" -- "$bin/ctrain-launch" --bogus "$job"
expect 2 "^ctrain-launch: expected a job file" -- "$bin/ctrain-launch"
# flags go before the job file: the message shows the command with them moved there
before="after the job file: flags go before the job file:"
expect 2 "^ctrain-launch: '--nproc' $before ctrain-launch --nproc 2 $job\$" -- \
  "$bin/ctrain-launch" "$job" --nproc 2
expect 2 "=$before ctrain-launch --dry-run --nproc 2 $job train.lr=1e-3 train.steps=3" -- \
  "$bin/ctrain-launch" --dry-run "$job" train.lr=1e-3 --nproc 2 train.steps=3
expect 2 "^ctrain worker: '--x' $before ctrain worker --x $job" -- "$bin/ctrain" worker "$job" --x
# more ranks than cores: one warning line, and the job still runs (here: its dry run)
expect 0 "^ctrain-launch: warning: --nproc 64 on this machine's [0-9]+ cores?: the ranks will \
time-share them \(oversubscribed x[0-9.]+\)$" -- "$bin/ctrain-launch" --nproc 64 --dry-run "$job"
expect 0 "=mpirun -np 64 --oversubscribe" -- "$bin/ctrain-launch" --nproc 64 --dry-run "$job"
out=$("$bin/ctrain-launch" --nproc 64 --hostfile "$work/hosts" --dry-run "$job" 2>&1)
checks=$((checks + 1))
if grep -q "oversubscribed" <<<"$out"; then
  failures=$((failures + 1))
  echo "FAIL: --hostfile: the oversubscription warning is only for ranks on this machine"
fi
# --max-restarts K: K is a non-negative integer; --dry-run says what a failure would do
expect 2 "--max-restarts needs a non-negative integer, got '-1'" -- \
  "$bin/ctrain-launch" --max-restarts -1 "$job"
expect 2 "--max-restarts needs a non-negative integer, got '2x'" -- \
  "$bin/ctrain-launch" --max-restarts 2x "$job"
expect 2 "--max-restarts needs a non-negative integer, got nothing" -- \
  "$bin/ctrain-launch" --max-restarts
expect 0 "# on failure: up to 2 restarts" -- "$bin/ctrain-launch" --nproc 3 --max-restarts 2 --dry-run "$job"
expect 0 "would train in a child process" -- "$bin/ctrain-launch" --max-restarts 1 --dry-run "$job"
expect 2 "--nproc needs a positive integer" -- "$bin/ctrain-launch" --nproc 0 "$job"
expect 2 "--nproc needs a positive integer" -- "$bin/ctrain-launch" --dry-run --nproc
expect 2 "--hostfile needs a file" -- "$bin/ctrain-launch" --hostfile
expect 2 "--mpirun-args needs a value" -- "$bin/ctrain-launch" --mpirun-args
expect 2 "unterminated ' quote" -- "$bin/ctrain-launch" --nproc 2 --mpirun-args "'x" "$job"
expect 2 "expected a job file" -- "$bin/ctrain-launch" --nproc 2
expect 2 "^ctrain-launch: .*no-such-job.toml" -- \
  "$bin/ctrain-launch" --nproc 2 --dry-run "$work/no-such-job.toml"
printf '[train]\nlrr = 1\n' >"$work/bad-job.toml"
expect 2 "bad-job.toml:2.*train.lrr" -- "$bin/ctrain-launch" --nproc 2 "$work/bad-job.toml"
expect 2 "cannot read hostfile.*no-hosts" -- \
  "$bin/ctrain-launch" --nproc 2 --hostfile "$work/no-hosts" --dry-run "$job"
printf 'nodea slots=two\n' >"$work/bad-hosts"
expect 2 "bad-hosts:1: bad 'slots=two'" -- \
  "$bin/ctrain-launch" --nproc 2 --hostfile "$work/bad-hosts" --dry-run "$job"
expect 2 "train.lrr" -- "$bin/ctrain-launch" --nproc 2 --dry-run "$job" train.lrr=1
expect 2 "expected a job file" -- "$bin/ctrain" worker
expect 2 "unknown option '--x'" -- "$bin/ctrain" worker --x
expect 2 "^ctrain worker: .*no-such-job.toml" -- "$bin/ctrain" worker "$work/no-such-job.toml"
expect 0 "usage: ctrain worker" -- "$bin/ctrain" worker --help
expect 0 "worker JOB.toml" -- "$bin/ctrain" --help

# real runs: in this process, then (when Open MPI is here) two ranks through mpirun
expect 0 "final weights" -- "$bin/ctrain-launch" --nproc 1 "$job"
expect 0 "final weights" -- "$bin/ctrain" train "$job" train.steps=1
# --max-restarts at 1 rank: the worker is a child; killed (test-only fault), it is restarted once
# with the fault disarmed (CTRAIN_RESTART=1), and the job ends 0
expect 0 "job failed \(the worker killed by signal 9 \(Killed\)\); restart 1 of 1" -- \
  env CTRAIN_FAULT=kill:rank=0:step=1 "$bin/ctrain-launch" --max-restarts 1 "$job"
expect 0 "job finished after 1 restart" -- \
  env CTRAIN_FAULT=kill:rank=0:step=1 "$bin/ctrain-launch" --max-restarts 1 "$job"
# failures found before the start are not restarted: bad data, a malformed CTRAIN_FAULT
expect 2 "no files match" -- \
  "$bin/ctrain-launch" --max-restarts 3 "$job" "data.train=$work/none_*.bin"
expect 2 "CTRAIN_FAULT=kill:rank=0: bad fault" -- \
  env CTRAIN_FAULT=kill:rank=0 "$bin/ctrain-launch" --max-restarts 3 "$job"
if command -v mpirun >/dev/null; then
  expect 0 "world size 2" -- timeout 120 "$bin/ctrain-launch" --nproc 2 "$job"
  # a failure on the ranks ends the job non-zero with the rank's message
  expect nonzero "\[rank [01]\] error: .*>= vocab_size 16" -- \
    timeout 120 "$bin/ctrain-launch" --nproc 2 "$job" model.vocab_size=16
else
  echo "skipped the mpirun runs: mpirun is not installed"
fi
# a missing mpirun fails every attempt the same way: exit 2, never restarted
expect 2 "mpirun not found on PATH" -- env PATH=/nonexistent "$bin/ctrain-launch" --nproc 2 "$job"
expect 2 "mpirun not found on PATH" -- \
  env PATH=/nonexistent "$bin/ctrain-launch" --nproc 2 --max-restarts 3 "$job"

# The restart rule, with a stand-in mpirun that prints its arguments and CTRAIN_RESTART. One that
# reports a rank's MPI_Abort (code 3) and leaves a checkpoint is restarted with the resume
# override and CTRAIN_RESTART=k, until no restarts are left. Not restarted: an exit code of 2 (a
# usage, configuration or data error) or 4 (stopped on request after a checkpoint), or a rank's
# code of 2 or 4 in mpirun's report whatever mpirun's own exit code.
mkdir -p "$work/fake"
cat >"$work/fake/mpirun" <<'SH'
#!/bin/sh
echo "fake mpirun: $* CTRAIN_RESTART=${CTRAIN_RESTART:-unset}" >&2
rm -rf "$FAKE_CKPT" && mkdir -p "$FAKE_CKPT/step_00000004" && touch "$FAKE_CKPT/step_00000004/manifest.json"
printf 'MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD\nwith errorcode %s.\n' \
  "${FAKE_CODE:-$FAKE_EXIT}" >&2
exit "$FAKE_EXIT"
SH
chmod +x "$work/fake/mpirun"
fake=(env PATH="$work/fake:$PATH" FAKE_CKPT="$work/fake-run/ckpt" "$bin/ctrain-launch" --nproc 2
      --max-restarts 2 "$job" "log.dir=$work/fake-run")
expect 3 "job failed \(rank 1 called MPI_Abort with error code 3; mpirun exit code 3\); restart 1 of 2, resuming from the newest checkpoint in $work/fake-run/ckpt \(step 4\)" -- \
  env FAKE_EXIT=3 "${fake[@]}"
expect 3 "fake mpirun: .*-x CTRAIN_RESTART .*log.dir=$work/fake-run checkpoint.resume=auto CTRAIN_RESTART=2" -- \
  env FAKE_EXIT=3 "${fake[@]}"
expect 3 "not restarted: no restarts left \(--max-restarts\)" -- env FAKE_EXIT=3 "${fake[@]}"
expect 2 "not restarted: exit code 2 is a usage, configuration or data error" -- \
  env FAKE_EXIT=2 "${fake[@]}"
expect 1 "error code 2; mpirun exit code 1\); not restarted: exit code 2" -- \
  env FAKE_EXIT=1 FAKE_CODE=2 "${fake[@]}"
expect 4 "job stopped \(rank 1 called MPI_Abort with error code 4; mpirun exit code 4\); \
not restarted: exit code 4" -- env FAKE_EXIT=4 "${fake[@]}"
expect 1 "job stopped .*; not restarted: exit code 4" -- env FAKE_EXIT=1 FAKE_CODE=4 "${fake[@]}"
# without --max-restarts the launcher still runs mpirun as its child and says how it ended
expect 3 "^ctrain-launch: job failed \(rank 1 called MPI_Abort with error code 3; mpirun \
exit code 3\)$" -- env FAKE_EXIT=3 PATH="$work/fake:$PATH" FAKE_CKPT="$work/fake-run/ckpt" \
  "$bin/ctrain-launch" --nproc 2 "$job" "log.dir=$work/fake-run"

summary

#!/usr/bin/env python3
"""Signals to ctrain-launch, and its death (docs/launching.md, "Signals").

usage: launch_signals.py BIN_DIR SOURCE_DIR

A tiny job that would train for a million steps (0.1 ms each), each case in its own directory,
so that its job file's path is in the command line of exactly its own processes (ctrain-launch,
mpirun, `ctrain worker`): those are found by scanning /proc for it. Every case first waits
until rank 0 has logged a step (the trainer has installed its signal handlers), then:
  - SIGKILL to ctrain-launch --nproc 2, with and without --max-restarts 2, and --max-restarts 1
    at one rank (a child worker): no process of the job is left 10 s later. (mpirun gets
    SIGTERM when the launcher dies and ends its ranks; a lone worker stops itself.)
  - SIGINT to ctrain-launch --nproc 2 --max-restarts 2: the job ends (within 30 s), non-zero,
    with the launcher's "SIGINT: asking the ranks to save a checkpoint and stop" line and a
    "not restarted" line, no "restart 1 of", and no process left. Where the trainer stops
    on signals (train/run.c returns CT_EXIT_STOPPED), the exit code is 4 and the newest
    checkpoint is at the last step logged.
  - SIGTERM to ctrain-launch --max-restarts 1 at one rank: the same, for the lone worker.
  - SIGTERM twice at --nproc 2 --max-restarts 2: a hard stop, not restarted, nothing left.
  - SIGUSR1 to the mpirun under ctrain-launch --nproc 2 --max-restarts 2 (a stop that bypasses
    the launcher): mpirun forwards it to the ranks, which save and exit 4 (where the trainer
    stops on signals), and the launcher does not restart a job that exited 4.

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402

STEPS = 1000000
LEFT_AFTER_S = 10.0  # how long the job's processes may outlive a SIGKILLed launcher
STOP_WITHIN_S = 30.0  # how long a stopped job may take to save and end


def job_text(data, run_dir):
    return f"""[model]
n_layer = 1
n_head = 2
n_embd = 16
vocab_size = 64
seq_len = 8
[data]
train = "{data}/train_*.bin"
[train]
batch_size = 2
steps = {STEPS}
[log]
dir = "{run_dir}"
every = 200
[checkpoint]
every = 0
async = false
[device]
threads_per_rank = 1
"""


def job_processes(job):
    """pid -> command line of every live process whose command line names `job`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            continue
        if job.encode() in words:
            found[int(entry)] = b" ".join(words).decode(errors="replace")[:120]
    return found


def logged_steps(run_dir):
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return [json.loads(line)["step"] for line in f if line.strip()]
    except (OSError, ValueError):
        return []


class Case:
    """One launch of the job in work/name, its output in work/name/out.txt."""

    def __init__(self, bin_dir, env, work, data, name, flags):
        self.name = name
        root = os.path.join(work, name)
        os.makedirs(root)
        self.run_dir = os.path.join(root, "run")
        self.job = os.path.join(root, "job.toml")
        with open(self.job, "w") as f:
            f.write(job_text(data, self.run_dir))
        self.out_path = os.path.join(root, "out.txt")
        self.cmd = [os.path.join(bin_dir, "ctrain-launch")] + flags + [self.job]
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env=env)

    def wait_training(self, failures):
        """True once rank 0 has logged a step; else a failure (and the job is killed)."""
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            if logged_steps(self.run_dir):
                return True
            time.sleep(0.05)
        failures.append(f"{self.name}: the job did not start training: exit "
                        f"{self.proc.poll()}\n{self.output()[1]}")
        self.cleanup()
        return False

    def output(self):
        with open(self.out_path, errors="replace") as f:
            text = f.read()
        lines = [l for l in text.splitlines() if not l.startswith(("step ", "checkpoint: "))]
        return text, "\n".join(lines[-30:])

    def left_after(self, seconds):
        deadline = time.time() + seconds
        while True:
            left = job_processes(self.job)
            if not left or time.time() >= deadline:
                return left
            time.sleep(0.1)

    def cleanup(self):
        for pid in job_processes(self.job):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __str__(self):
        return " ".join(self.cmd)


def check_sigkill(bin_dir, env, work, data, name, flags):
    failures = []
    case = Case(bin_dir, env, work, data, name, flags)
    if not case.wait_training(failures):
        return failures
    before = job_processes(case.job)
    case.proc.send_signal(signal.SIGKILL)
    case.proc.wait()
    left = case.left_after(LEFT_AFTER_S)
    if left:
        failures.append(f"{name}: {LEFT_AFTER_S:.0f} s after SIGKILL to ctrain-launch ({case}) "
                        f"these processes of the job are still there: {left} (before: {before})")
    case.cleanup()
    print(f"{name:24s} {'ok' if not failures else 'FAIL'}")
    return failures


def check_stop(bin_dir, env, work, data, name, flags, signals, trainer_stops, who):
    """Sends `signals` (0.3 s apart) to the launcher; the job must end, not restarted."""
    failures = []
    case = Case(bin_dir, env, work, data, name, flags)
    if not case.wait_training(failures):
        return failures
    for i, sig in enumerate(signals):
        if i:
            time.sleep(0.3)
        if case.proc.poll() is None:
            case.proc.send_signal(sig)
    try:
        code = case.proc.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        code = None
    text, tail = case.output()
    left = case.left_after(LEFT_AFTER_S if code is not None else 0)
    case.cleanup()
    what = f"{name} ({case}, then {', '.join(signal.Signals(s).name for s in signals)})"
    first = signal.Signals(signals[0]).name
    if code is None:
        return [f"{what}: still running {STOP_WITHIN_S:.0f} s after the signal:\n{tail}"]
    if code == 0:
        failures.append(f"{what}: exit 0, expected a stop")
    asked = f"ctrain-launch: {first}: asking {who} to save a checkpoint and stop"
    for wanted in (asked, "not restarted: ctrain-launch was asked to stop"):
        if wanted not in text:
            failures.append(f"{what}: no '{wanted}' in the output")
    if "restart 1 of" in text:
        failures.append(f"{what}: the job was restarted after a stop signal")
    if left:
        failures.append(f"{what}: processes of the job left after it ended: {left}")
    if trainer_stops and len(signals) == 1:
        logged = logged_steps(case.run_dir)
        saved = sorted(glob.glob(os.path.join(case.run_dir, "ckpt", "step_*")))
        last = logged[-1] if logged else -1
        if code != 4:
            failures.append(f"{what}: exit {code}, expected 4 (stopped after a checkpoint)")
        if not saved or not saved[-1].endswith(f"step_{last:08d}"):
            failures.append(f"{what}: expected the newest checkpoint at the last step logged "
                            f"({last}), found {[os.path.basename(s) for s in saved]}")
    if failures:
        failures.append(f"{name}: exit {code}, output:\n{tail}")
    print(f"{name:24s} {'ok' if not failures else 'FAIL'} (exit {code})")
    return failures


def check_usr1_to_mpirun(bin_dir, env, work, data, trainer_stops):
    name = "sigusr1_to_mpirun"
    failures = []
    case = Case(bin_dir, env, work, data, name, ["--nproc", "2", "--max-restarts", "2"])
    if not case.wait_training(failures):
        return failures
    mpirun = [pid for pid, cmd in job_processes(case.job).items() if cmd.startswith("mpirun ")]
    if len(mpirun) != 1:
        case.cleanup()
        return [f"{name}: expected one mpirun among {job_processes(case.job)}"]
    os.kill(mpirun[0], signal.SIGUSR1)
    try:
        code = case.proc.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        code = None
    text, tail = case.output()
    case.cleanup()
    if code is None:
        failures.append(f"{name}: still running {STOP_WITHIN_S:.0f} s after SIGUSR1 to mpirun")
    elif "restart 1 of" in text:
        failures.append(f"{name}: the job was restarted after its ranks stopped")
    elif trainer_stops and (code != 4 or "not restarted: exit code 4" not in text):
        failures.append(f"{name}: expected exit 4 and 'not restarted: exit code 4', got {code}")
    if failures:
        failures.append(f"{name}: exit {code}, output:\n{tail}")
    print(f"{name:24s} {'ok' if not failures else 'FAIL'} (exit {code})")
    return failures


def main():
    bin_dir = sys.argv[1]  # argv[2], the source directory, is not needed
    setup = mpi_equivalence.mpi_setup(bin_dir)
    if not setup:
        return 77
    env, ctrain = setup
    env = dict(env)
    for var in ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_PROCID", "CTRAIN_FAULT"):
        env.pop(var, None)
    # The trainer's half: each rank saves and returns CT_EXIT_STOPPED on SIGTERM/SIGINT/SIGUSR1.
    trainer_stops = True
    work = tempfile.mkdtemp(prefix="ctrain_signals_")
    try:
        data = mpi_equivalence.synth_data(ctrain, work)
        failures = []
        failures += check_sigkill(bin_dir, env, work, data, "sigkill_nproc2", ["--nproc", "2"])
        failures += check_sigkill(bin_dir, env, work, data, "sigkill_nproc2_restarts",
                                  ["--nproc", "2", "--max-restarts", "2"])
        failures += check_sigkill(bin_dir, env, work, data, "sigkill_lone_restarts",
                                  ["--max-restarts", "1"])
        failures += check_stop(bin_dir, env, work, data, "sigint_nproc2_restarts",
                               ["--nproc", "2", "--max-restarts", "2"], [signal.SIGINT],
                               trainer_stops, "the ranks")
        failures += check_stop(bin_dir, env, work, data, "sigterm_lone_restarts",
                               ["--max-restarts", "1"], [signal.SIGTERM], trainer_stops,
                               "the worker")
        failures += check_stop(bin_dir, env, work, data, "sigterm_twice_nproc2",
                               ["--nproc", "2", "--max-restarts", "2"],
                               [signal.SIGTERM, signal.SIGTERM], trainer_stops, "the ranks")
        failures += check_usr1_to_mpirun(bin_dir, env, work, data, trainer_stops)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print(f"{'PASS' if not failures else 'FAIL'}: signals to ctrain-launch and its death")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

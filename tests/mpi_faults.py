#!/usr/bin/env python3
"""Faults injected with CTRAIN_FAULT (common/fault.h) and `ctrain-launch --max-restarts`.

usage: mpi_faults.py BIN_DIR

A small GPT, fsdp at world size 3, 12 steps, a checkpoint every 4 steps, started through
`ctrain-launch --nproc 3`. The reference is the same job run without a fault. Asserts:
  - kill: CTRAIN_FAULT=kill:rank=1:step=6 (rank 1 SIGKILLs itself before step 6, after the
    step-4 checkpoint). Without --max-restarts the job fails with a non-zero exit. With
    --max-restarts 2 it exits 0, ctrain-launch prints the restart and its cause (rank 1
    killed by signal 9) and resumes from the step-4 checkpoint, and final.bin is byte for byte
    the reference's (filecmp, shallow=False: the resumed run must compute the same floats).
    Saved with checkpoint.async = false, so that the step-4 checkpoint is surely committed when
    rank 1 dies.
  - kill_in_save, for checkpoint.async = true and false: CTRAIN_FAULT=kill_in_save:rank=0:step=8
    kills rank 0 after it wrote its file of the step-8 checkpoint, before the commit. The job
    fails; the checkpoint directory holds step_00000004 (complete: it has manifest.json) and
    step_00000008.tmp, and no step_00000008; a rerun with checkpoint.resume = "auto" prints
    "resumed from .../step_00000004", so the .tmp is ignored, and its final.bin is the
    reference's byte for byte.
  - a configuration error found on the ranks (model.vocab_size=16 below the data's tokens) under
    --max-restarts 2: every rank fails with exit code 2 (MPI_Abort error code 2), ctrain-launch
    exits 2 and says why it does not restart ("not restarted: exit code 2"), and no restart is
    made: the same error would end every attempt.

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import filecmp
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402
import mpi_resume  # noqa: E402

WORLD = 3
STRATEGY = "fsdp"
STEPS = 12
EVERY = 4
KILL = "kill:rank=1:step=6"
KILL_IN_SAVE = "kill_in_save:rank=0:step=8"


def write_job(work, name, data, async_save=True):
    run_dir = os.path.join(work, name)
    text = mpi_resume.job_text(data, run_dir, STRATEGY, os.path.join(work, name + ".jsonl"),
                               "auto", EVERY, async_save, STEPS)
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(text)
    return path, run_dir


def launch(bin_dir, job, env, restarts=None, fault=None, overrides=()):
    cmd = [os.path.join(bin_dir, "ctrain-launch"), "--nproc", str(WORLD)]
    if restarts is not None:
        cmd += ["--max-restarts", str(restarts)]
    env = dict(env)
    if fault:
        env["CTRAIN_FAULT"] = fault
    cmd += [job] + list(overrides)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    return out, " ".join(cmd) + (f" (CTRAIN_FAULT={fault})" if fault else "")


def same_final(name, run_dir, ref_dir):
    a, b = os.path.join(run_dir, "final.bin"), os.path.join(ref_dir, "final.bin")
    if not os.path.exists(a):
        return [f"{name}: no final.bin"]
    if not filecmp.cmp(a, b, shallow=False):
        return [f"{name}: final.bin differs from the uninterrupted run's"]
    return []


def show(out, what):
    return f"{what} exited {out.returncode}:\n{out.stdout[-2500:]}\n{out.stderr[-2500:]}"


def check_kill(bin_dir, work, data, env, ref_dir):
    failures = []
    # Saved synchronously: the step-4 checkpoint is committed before step 5 starts, so the
    # restart resumes from it (a background save could still be in flight when rank 1 dies).
    job, _ = write_job(work, "kill-norestart", data, async_save=False)
    out, what = launch(bin_dir, job, env, fault=KILL)
    if out.returncode == 0:
        failures.append("kill without --max-restarts: " + show(out, what))
    elif "restart" in out.stderr:
        failures.append("kill without --max-restarts restarted: " + show(out, what))

    job, run_dir = write_job(work, "kill-restart", data, async_save=False)
    out, what = launch(bin_dir, job, env, restarts=2, fault=KILL)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        failures.append("kill with --max-restarts 2: " + show(out, what))
    ckpt = os.path.join(run_dir, "ckpt")
    expected = [
        ("the fault fired", "[rank 1] CTRAIN_FAULT: kill at step 6"),
        ("the restart and its cause",
         re.compile(r"ctrain-launch: job failed \(rank 1 killed by signal 9 \([^)]*\); mpirun "
                    r"exit code \d+\); restart 1 of 2, resuming from the newest checkpoint in "
                    + re.escape(ckpt) + r" \(step 4\)")),
        ("the resume", f"resumed from {ckpt}/step_{EVERY:08d} at step {EVERY}"),
        ("the end", "ctrain-launch: job finished after 1 restart"),
    ]
    for name, pattern in expected:
        found = pattern.search(text) if hasattr(pattern, "search") else pattern in text
        if not found:
            failures.append(f"kill with --max-restarts 2: no {name} ({pattern}) in:\n"
                            + show(out, what))
    if "restart 2 of 2" in text:
        failures.append("kill with --max-restarts 2: restarted twice (the fault fired again?)")
    if out.returncode == 0:
        failures += same_final("kill with --max-restarts 2", run_dir, ref_dir)
    print(f"kill                 {'ok' if not failures else 'FAIL'}")
    return failures


def check_kill_in_save(bin_dir, work, data, env, ref_dir, async_save):
    name = f"kill_in_save async={'true' if async_save else 'false'}"
    failures = []
    job, run_dir = write_job(work, "save-" + ("async" if async_save else "sync"), data,
                             async_save)
    out, what = launch(bin_dir, job, env, fault=KILL_IN_SAVE)
    if out.returncode == 0:
        return [f"{name}: the job survived the fault: " + show(out, what)]
    if "[rank 0] CTRAIN_FAULT: kill_in_save at step 8" not in out.stderr:
        failures.append(f"{name}: the fault did not fire: " + show(out, what))
    ckpt = os.path.join(run_dir, "ckpt")
    entries = sorted(os.listdir(ckpt)) if os.path.isdir(ckpt) else []
    if not os.path.isfile(os.path.join(ckpt, f"step_{EVERY:08d}", "manifest.json")):
        failures.append(f"{name}: no complete step_{EVERY:08d} in {entries}")
    if f"step_{8:08d}.tmp" not in entries or f"step_{8:08d}" in entries:
        failures.append(f"{name}: expected step_{8:08d}.tmp and no step_{8:08d}, found {entries}")

    out, what = launch(bin_dir, job, env)
    if out.returncode != 0:
        return failures + [f"{name}: the rerun failed: " + show(out, what)]
    if f"resumed from {ckpt}/step_{EVERY:08d} at step {EVERY}" not in out.stdout:
        failures.append(f"{name}: the rerun did not resume from step_{EVERY:08d}: "
                        + show(out, what))
    failures += same_final(name, run_dir, ref_dir)
    print(f"{name:20s} {'ok' if not failures else 'FAIL'}")
    return failures


def check_config_error(bin_dir, work, data, env):
    job, _ = write_job(work, "config-error", data)
    out, what = launch(bin_dir, job, env, restarts=2, overrides=["model.vocab_size=16"])
    failures = []
    if out.returncode != 2:
        failures.append("a configuration error on the ranks: want exit 2: " + show(out, what))
    if "not restarted: exit code 2" not in out.stderr or "restart 1 of" in out.stderr:
        failures.append("a configuration error on the ranks was restarted: " + show(out, what))
    print(f"config error         {'ok' if not failures else 'FAIL'}")
    return failures


def checks(ctrain, env, work, data):
    bin_dir = os.path.dirname(ctrain)
    job, ref_dir = write_job(work, "reference", data)
    out, what = launch(bin_dir, job, env)
    if out.returncode != 0:
        return ["the reference run: " + show(out, what)]
    failures = check_kill(bin_dir, work, data, env, ref_dir)
    for async_save in (True, False):
        failures += check_kill_in_save(bin_dir, work, data, env, ref_dir, async_save)
    return failures + check_config_error(bin_dir, work, data, env)


def main():
    return mpi_equivalence.run_suite(
        "ctrain_faults_", checks, "kill under --max-restarts, kill during a save (async and not)")


if __name__ == "__main__":
    sys.exit(main())

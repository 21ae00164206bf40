#!/usr/bin/env python3
"""Resharding: a checkpoint saved at one world size and strategy resumes at others.

usage: mpi_reshard.py BIN_DIR

Global batch 12 sequences throughout (world size x batch_size x grad_accum). Saves a checkpoint
after 4 of 8 steps (CTRAIN_STOP_AFTER=4, see mpi_resume.py) at world size 2 with fsdp (batch 3,
accum 2) and at world size 3 with zero2 (batch 2, accum 2), then resumes each at world size 1 with
ddp (`ctrain train`; batch 6, accum 2), 2 with zero1 (batch 3, accum 2), 3 with fsdp (batch 2,
accum 2) and 4 with ddp (batch 3, accum 1), and continues to step 8. Each resumed run is compared
with an uninterrupted 8-step run at its own (new) layout:
  - steps 5..8 are logged, with batch_hash equal and loss within 1e-5 relative;
  - final parameters within 1e-5 (relative L2 norm of the difference, per unit).
Bitwise equality is not expected: the first 4 steps ran at another layout, whose fp32 sums are
ordered differently. Also checks that resuming with another global batch (world size 2, batch 2,
accum 2 = 8) fails with a non-zero exit and a message naming both global batches.

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import math
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402
import mpi_resume  # noqa: E402

STEPS, STOP, TOL = mpi_resume.STEPS, mpi_resume.STOP, 1e-5
GLOBAL = 12
# (strategy, world, batch_size, grad_accum)
SAVES = [("fsdp", 2, 3, 2), ("zero2", 3, 2, 2)]
RESUMES = [("ddp", 1, 6, 2), ("zero1", 2, 3, 2), ("fsdp", 3, 2, 2), ("ddp", 4, 3, 1)]
MISMATCH = ("ddp", 2, 2, 2)


def write_job(work, name, data, run_dir, layout, metrics, resume):
    """mpi_resume's job (same model, data, schedule) with this layout's batch and accumulation."""
    strategy, _, batch, accum = layout
    text = mpi_resume.job_text(data, run_dir, strategy, metrics, resume, 0)
    old = "batch_size = 2\ngrad_accum = 2\n"
    assert old in text
    text = text.replace(old, f"batch_size = {batch}\ngrad_accum = {accum}\n")
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def name_of(layout):
    return f"{layout[0]}-w{layout[1]}"


def uninterrupted(ctrain, work, data, layout, env):
    name = name_of(layout) + "-full"
    run_dir = os.path.join(work, name)
    metrics = os.path.join(work, name + ".jsonl")
    job = write_job(work, name, data, run_dir, layout, metrics, "never")
    mpi_resume.launch(ctrain, job, layout[1], env)
    return run_dir, metrics


def save(ctrain, work, data, layout, env):
    """The step-4 checkpoint of `layout`: its directory."""
    name = name_of(layout) + "-save"
    run_dir = os.path.join(work, name)
    job = write_job(work, name, data, run_dir, layout, os.path.join(work, name + ".jsonl"), "auto")
    mpi_resume.launch(ctrain, job, layout[1], dict(env, CTRAIN_STOP_AFTER=str(STOP)))
    ckpt = os.path.join(run_dir, "ckpt", f"step_{STOP:08d}")
    if not os.path.exists(os.path.join(ckpt, "manifest.json")):
        print(f"FAILED: {name}: no checkpoint at {ckpt}")
        raise SystemExit(1)
    return ckpt


def final_params_diff(ref_path, path):
    a, b = mpi_equivalence.read_units(ref_path), mpi_equivalence.read_units(path)
    worst = 0.0
    for unit in a:
        diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a[unit], b[unit])))
        worst = max(worst, diff / math.sqrt(sum(x * x for x in a[unit])))
    return worst


def check_resume(ctrain, work, data, ckpt, saved, layout, full, env):
    name = f"{name_of(saved)}->{name_of(layout)}"
    tag = f"{name_of(saved)}-to-{name_of(layout)}"
    run_dir = os.path.join(work, tag)
    metrics = os.path.join(work, tag + ".jsonl")
    job = write_job(work, tag, data, run_dir, layout, metrics, ckpt)
    out = mpi_resume.launch(ctrain, job, layout[1], env)
    failures = []
    if f"at step {STOP}" not in out.stdout:
        failures.append(f"{name}: no 'resumed from ... at step {STOP}' line:\n{out.stdout}")
    full_dir, full_metrics = full
    ref = mpi_resume.read_metrics(full_metrics)
    resumed = mpi_resume.read_metrics(metrics)
    if [r["step"] for r in resumed] != list(range(STOP + 1, STEPS + 1)):
        return failures + [f"{name}: resumed run logged steps {[r['step'] for r in resumed]}"]
    worst_loss = 0.0
    for r in resumed:
        f = ref[r["step"] - 1]
        worst_loss = max(worst_loss, mpi_equivalence.rel(f["loss"], r["loss"]))
        if f["batch_hash"] != r["batch_hash"]:
            failures.append(f"{name}: step {r['step']} batch_hash {r['batch_hash']}, "
                            f"uninterrupted {f['batch_hash']}")
    worst_param = final_params_diff(os.path.join(full_dir, "final.bin"),
                                    os.path.join(run_dir, "final.bin"))
    if worst_loss > TOL or worst_param > TOL:
        failures.append(f"{name}: beyond {TOL} (loss {worst_loss:.2e}, params {worst_param:.2e})")
    print(f"{name:16s} loss {worst_loss:.1e}  params {worst_param:.1e}  "
          f"{'ok' if not failures else 'FAIL'}")
    return failures


def check_mismatch(ctrain, work, data, ckpt, saved, env):
    layout = MISMATCH
    tag = f"{name_of(saved)}-to-mismatch"
    run_dir = os.path.join(work, tag)
    job = write_job(work, tag, data, run_dir, layout, os.path.join(work, tag + ".jsonl"), ckpt)
    out = mpi_resume.launch(ctrain, job, layout[1], env, check=False)
    text = out.stdout + out.stderr
    ours = layout[1] * layout[2] * layout[3]
    if out.returncode == 0:
        return ["mismatch: resuming with another global batch succeeded"]
    for needed in (f"global batch of {GLOBAL}", f"is {ours}", "batch_size", "grad_accum"):
        if needed not in text:
            return [f"mismatch: the error lacks '{needed}':\n{text[-2000:]}"]
    print(f"mismatch         ok (exit {out.returncode})")
    return []


def main():
    bin_dir = sys.argv[1]
    setup = mpi_equivalence.mpi_setup(bin_dir)
    if not setup:
        return 77
    env, ctrain = setup
    for layout in SAVES + RESUMES:
        assert layout[1] * layout[2] * layout[3] == GLOBAL, layout
    work = tempfile.mkdtemp(prefix="ctrain_reshard_")
    failures = []
    try:
        data = os.path.join(work, "data")
        subprocess.run([ctrain, "data", "synth", "--out", data, "--tokens", "20000", "--vocab",
                        "64", "--seed", "3"], check=True, capture_output=True)
        fulls = {layout: uninterrupted(ctrain, work, data, layout, env) for layout in RESUMES}
        for saved in SAVES:
            ckpt = save(ctrain, work, data, saved, env)
            for layout in RESUMES:
                failures += check_resume(ctrain, work, data, ckpt, saved, layout, fulls[layout],
                                         env)
            if saved == SAVES[0]:
                failures += check_mismatch(ctrain, work, data, ckpt, saved, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print(f"{'PASS' if not failures else 'FAIL'}: {len(SAVES) * len(RESUMES)} reshards and a "
          f"global-batch mismatch")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Round trips at every layout, and the reshard matrix: checkpoints load at any world size and
strategy.

usage: mpi_reshard.py BIN_DIR

A layout is (strategy, world size); the global batch is 12 sequences at every world size
(world size x batch_size x grad_accum), so every layout trains on the same batches. Layouts:
ddp at world size 1 (`ctrain train`), and ddp, zero1, zero2, fsdp and hsdp at world sizes 2,
3 and 4 (`mpirun -np W ctrain worker`; hsdp with shard groups of 1, 1 and 2 ranks, so that
only the first group writes files).

1. Every layout trains 20 steps with a checkpoint every 10 (saved in the background). A run
   resumed from its step-10 checkpoint at the same layout (saving synchronously) must equal it
   byte for byte: final.bin and the rank files of the step-20 checkpoint (params, Adam m and
   v), and the loss and batch_hash of steps 11..20. That is the round trip of each strategy at
   world sizes 1-4: what is saved is what is loaded.
2. The step-10 checkpoints saved at (fsdp, 4), (zero2, 3) and (ddp, 2) are resumed at every
   other layout and continue 10 steps; each must log steps 11..20 with the batch_hash of the
   run that never stopped at the new layout (no sample lost or repeated) and a loss within
   1e-5 relative of it, and end with final parameters within 1e-5 (relative L2 per unit).
   Bitwise equality is not expected: the first 10 steps ran at another layout, whose fp32
   sums are ordered differently.
3. Resuming with another global batch (world size 2, batch 2, accum 2 = 8) fails with a
   non-zero exit and a message naming both global batches.

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import filecmp
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402
import mpi_resume  # noqa: E402

STEPS, SAVE, TOL = 20, 10, 1e-5
GLOBAL = 12
# world size -> (batch_size, grad_accum) with world x batch x accum = GLOBAL
BATCH = {1: (6, 2), 2: (3, 2), 3: (2, 2), 4: (3, 1)}
HSDP_GROUP = {1: 1, 2: 1, 3: 1, 4: 2}
STRATEGIES = ["ddp", "zero1", "zero2", "fsdp", "hsdp"]
LAYOUTS = [("ddp", 1)] + [(s, w) for w in (2, 3, 4) for s in STRATEGIES]
SAVED = [("fsdp", 4), ("zero2", 3), ("ddp", 2)]
MISMATCH = ("ddp", 2, 2, 2)  # strategy, world, batch, accum: a global batch of 8

assert mpi_resume.STEPS == STEPS and mpi_resume.STOP == SAVE


def name_of(layout):
    return f"{layout[0]}-w{layout[1]}"


def write_job(work, name, data, run_dir, layout, resume, async_save, batch=None):
    """mpi_resume's job (same model, data, schedule) with this layout's batch split."""
    strategy, world = layout
    b, accum = batch or BATCH[world]
    text = mpi_resume.job_text(data, run_dir, strategy, os.path.join(work, name + ".jsonl"),
                               resume, SAVE, async_save)
    for old, new in (
            ("batch_size = 2\ngrad_accum = 2\n", f"batch_size = {b}\ngrad_accum = {accum}\n"),
            ("shard_group_size = 1\n", f"shard_group_size = {HSDP_GROUP[world]}\n")):
        if old in text:
            text = text.replace(old, new)
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(text)
    return path, os.path.join(work, name + ".jsonl")


class Run:
    """A finished run: its directory and its metrics per step."""

    def __init__(self, run_dir, metrics_path):
        self.dir = run_dir
        self.metrics = {r["step"]: r for r in mpi_resume.read_metrics(metrics_path)}

    def checkpoint(self, step):
        return os.path.join(self.dir, "ckpt", f"step_{step:08d}")


def train(ctrain, work, data, name, layout, resume, async_save, env, check=True, batch=None):
    run_dir = os.path.join(work, name)
    job, metrics = write_job(work, name, data, run_dir, layout, resume, async_save, batch)
    out = mpi_resume.launch(ctrain, job, layout[1], env, check=check)
    return out, (Run(run_dir, metrics) if out.returncode == 0 else None)


def check_steps(name, full, resumed):
    """Steps 11..20 logged, with equal batch hashes; returns (failures, worst loss diff)."""
    steps = sorted(resumed.metrics)
    if steps != list(range(SAVE + 1, STEPS + 1)):
        return [f"{name}: resumed run logged steps {steps}"], math.inf
    failures, worst = [], 0.0
    for step in steps:
        f, r = full.metrics[step], resumed.metrics[step]
        worst = max(worst, mpi_equivalence.rel(f["loss"], r["loss"]))
        if f["batch_hash"] != r["batch_hash"]:
            failures.append(f"{name}: step {step} batch_hash {r['batch_hash']}, never stopped "
                            f"{f['batch_hash']}")
    return failures, worst


def round_trip(ctrain, work, data, layout, full, env):
    name = name_of(layout) + "-again"
    out, resumed = train(ctrain, work, data, name, layout, full.checkpoint(SAVE), False, env)
    failures, worst = check_steps(name, full, resumed)
    if worst != 0.0:
        failures.append(f"{name}: losses differ from the uninterrupted run's (worst {worst:.1e})")
    if f"at step {SAVE}" not in out.stdout:
        failures.append(f"{name}: no 'resumed from ... at step {SAVE}' line:\n{out.stdout}")
    files = ["final.bin"] + [os.path.join("ckpt", f"step_{STEPS:08d}", f"rank_{r:05d}.ctk")
                             for r in range(layout[1])]
    for f in files:
        if not filecmp.cmp(os.path.join(full.dir, f), os.path.join(resumed.dir, f), shallow=False):
            failures.append(f"{name}: {f} differs from the uninterrupted run's")
    print(f"round trip {name_of(layout):9s} {'ok' if not failures else 'FAIL'}")
    return failures


def final_params_diff(ref_path, path):
    a, b = mpi_equivalence.read_units(ref_path), mpi_equivalence.read_units(path)
    worst = 0.0
    for unit in a:
        diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a[unit], b[unit])))
        worst = max(worst, diff / math.sqrt(sum(x * x for x in a[unit])))
    return worst


def reshard(ctrain, work, data, saved, layout, runs, env):
    name = f"{name_of(saved)}-to-{name_of(layout)}"
    out, resumed = train(ctrain, work, data, name, layout, runs[saved].checkpoint(SAVE), True, env)
    full = runs[layout]
    failures, worst_loss = check_steps(name, full, resumed)
    if f"at step {SAVE}" not in out.stdout:
        failures.append(f"{name}: no 'resumed from ... at step {SAVE}' line:\n{out.stdout}")
    worst_param = final_params_diff(os.path.join(full.dir, "final.bin"),
                                    os.path.join(resumed.dir, "final.bin"))
    if worst_loss > TOL or worst_param > TOL:
        failures.append(f"{name}: beyond {TOL} (loss {worst_loss:.2e}, params {worst_param:.2e})")
    print(f"reshard {name:20s} loss {worst_loss:.1e}  params {worst_param:.1e}  "
          f"{'ok' if not failures else 'FAIL'}")
    return failures


def mismatch(ctrain, work, data, runs, env):
    strategy, world, batch, accum = MISMATCH
    out, _ = train(ctrain, work, data, "mismatch", (strategy, world),
                   runs[SAVED[0]].checkpoint(SAVE), True, env, check=False, batch=(batch, accum))
    text = out.stdout + out.stderr
    if out.returncode != 2:  # a configuration error, not restarted
        return [f"mismatch: resuming with another global batch exited {out.returncode}, not 2"]
    for needed in (f"global batch: saved {GLOBAL} sequences", f"now {world * batch * accum} ",
                   "batch_size", "grad_accum", "checkpoint.resume=replace"):
        if needed not in text:
            return [f"mismatch: the error lacks '{needed}':\n{text[-2000:]}"]
    print(f"mismatch ok (exit {out.returncode})")
    return []


def checks(ctrain, env, work, data):
    failures, runs = [], {}
    for layout in LAYOUTS:
        _, runs[layout] = train(ctrain, work, data, name_of(layout), layout, "never", True, env)
        failures += round_trip(ctrain, work, data, layout, runs[layout], env)
    for saved in SAVED:
        for layout in LAYOUTS:
            if layout != saved:
                failures += reshard(ctrain, work, data, saved, layout, runs, env)
    return failures + mismatch(ctrain, work, data, runs, env)


def main():
    return mpi_equivalence.run_suite(
        "ctrain_reshard_", checks, f"{len(LAYOUTS)} round trips, {len(SAVED)} x "
        f"{len(LAYOUTS) - 1} reshards, and a global batch mismatch")


if __name__ == "__main__":
    sys.exit(main())

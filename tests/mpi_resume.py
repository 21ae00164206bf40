#!/usr/bin/env python3
"""Exact resume: a run interrupted by a checkpoint and resumed equals the uninterrupted run.

usage: mpi_resume.py BIN_DIR

For ddp at world size 1 (`ctrain train`, no MPI) and for ddp, zero1, zero2, fsdp and hsdp
(shard groups of 1 rank: the first group writes the files) at world size 3 (`mpirun -np 3
ctrain worker`), trains a small GPT for 20 steps without checkpoints (checkpoint.resume =
"never", checkpoint.every = 0), and again with CTRAIN_STOP_AFTER=10 (a test-only variable: save
a checkpoint after step 10 and exit 0; saved in the background, checkpoint.async = true), then a
second launch of the same job (train.steps = 20 both times, so the learning-rate schedule is the
same) that resumes from the step-10 checkpoint and saves synchronously. Asserts:
  - final.bin is byte for byte that of the uninterrupted run (filecmp, shallow=False), and so
    are both step-20 checkpoints' exports (`ctrain ckpt export`, llm.c and safetensors; the
    llm.c one is final.bin itself) and the rank files of both runs' step-20 checkpoints
    (params, Adam m and v; one saved in the background, one not);
  - the resumed run's metrics (its own log.metrics file: steps 11..20) have exactly the loss and
    batch_hash of the uninterrupted run's steps 11..20 (equality, no tolerance: the resumed run
    must compute the same floats in the same order);
  - a fresh run (resume = "never") into a checkpoint.dir holding another run's checkpoints,
    and a run resumed from an older checkpoint of a dir holding later ones, refuse to start
    (naming the first such checkpoint and checkpoint.overwrite) and leave them in place; with
    checkpoint.overwrite = true the fresh run starts and replaces them (world size 1);
  - resuming from a checkpoint with one byte of rank_00001.ctk flipped fails with a non-zero
    exit and a message naming that file (world size 3, ddp, which reads every rank file).

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import filecmp
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402

STEPS = 20
STOP = 10
CASES = [("ddp", 1), ("ddp", 3), ("zero1", 3), ("zero2", 3), ("fsdp", 3), ("hsdp", 3)]


def job_text(data_dir, run_dir, strategy, metrics, resume, every, async_save=True, steps=STEPS):
    # hsdp: shard groups of one rank, so that the files come from the first group only
    group = 1 if strategy == "hsdp" else 0
    return f"""
[model]
n_layer = 2
n_head = 2
n_embd = 32
vocab_size = 64
seq_len = 16
[data]
train = "{data_dir}/train_*.bin"
shuffle = true
[train]
batch_size = 2
grad_accum = 2
steps = {steps}
lr = 3e-3
min_lr = 3e-4
warmup_steps = 2
grad_clip = 0.5
seed = 7
[parallel]
strategy = "{strategy}"
bucket_mb = 0.02
shard_group_size = {group}
[checkpoint]
every = {every}
resume = "{resume}"
keep = 2
async = {"true" if async_save else "false"}
[log]
dir = "{run_dir}"
every = 1
metrics = "{metrics}"
[device]
threads_per_rank = 1
"""


def launch(ctrain, job, world, env, check=True):
    if world == 1:
        cmd = [ctrain, "train", job]
    else:
        cmd = ["mpirun", "--oversubscribe", "-np", str(world), ctrain, "worker", job]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check and out.returncode != 0:
        print("FAILED:", " ".join(cmd))
        print(out.stdout[-3000:], out.stderr[-3000:])
        raise SystemExit(1)
    return out


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def write_job(work, name, *args):
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(job_text(*args))
    return path


def tensor_bytes(path):
    """The weights of a model file: an llm.c file whole, a safetensors file's data after its
    JSON header (which names the source checkpoint, a path that differs between runs)."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".safetensors"):
        return data[8 + int.from_bytes(data[:8], "little"):]
    return data


def check_case(ctrain, work, data, strategy, world, env):
    name = f"{strategy}{world}"
    failures = []
    full_dir = os.path.join(work, name + "-full")
    full_metrics = os.path.join(work, name + "-full.jsonl")
    job = write_job(work, name + "-full", data, full_dir, strategy, full_metrics, "never", 0)
    launch(ctrain, job, world, env)

    part_dir = os.path.join(work, name + "-part")
    first_metrics = os.path.join(work, name + "-first.jsonl")
    job = write_job(work, name + "-first", data, part_dir, strategy, first_metrics, "auto", 0)
    launch(ctrain, job, world, dict(env, CTRAIN_STOP_AFTER=str(STOP)))
    if os.path.exists(os.path.join(part_dir, "final.bin")):
        failures.append(f"{name}: the stopped run wrote final.bin")
    second_metrics = os.path.join(work, name + "-second.jsonl")
    job = write_job(work, name + "-second", data, part_dir, strategy, second_metrics, "auto", 0,
                    False)
    out = launch(ctrain, job, world, env)
    if f"at step {STOP}" not in out.stdout:
        failures.append(f"{name}: no 'resumed from ... at step {STOP}' line:\n{out.stdout}")

    if not filecmp.cmp(os.path.join(full_dir, "final.bin"), os.path.join(part_dir, "final.bin"),
                       shallow=False):
        failures.append(f"{name}: final.bin differs from the uninterrupted run's")
    last = f"step_{STEPS:08d}"
    for ext in ("bin", "safetensors"):  # the exported weights of both step-20 checkpoints
        exported = []
        for run_dir in (full_dir, part_dir):
            out_file = os.path.join(run_dir, "exported." + ext)
            subprocess.run([ctrain, "ckpt", "export", os.path.join(run_dir, "ckpt", last), "--out",
                            out_file], check=True, capture_output=True)
            exported.append(out_file)
        if tensor_bytes(exported[0]) != tensor_bytes(exported[1]):
            failures.append(f"{name}: exported {ext} differs from the uninterrupted run's")
    if not filecmp.cmp(os.path.join(full_dir, "exported.bin"), os.path.join(full_dir, "final.bin"),
                       shallow=False):
        failures.append(f"{name}: the llm.c export of {last} differs from final.bin")
    for r in range(world):
        rank_file = f"rank_{r:05d}.ctk"
        if not filecmp.cmp(os.path.join(full_dir, "ckpt", last, rank_file),
                           os.path.join(part_dir, "ckpt", last, rank_file), shallow=False):
            failures.append(f"{name}: {last}/{rank_file} differs from the uninterrupted run's")
    full = read_metrics(full_metrics)
    resumed = read_metrics(second_metrics)
    if [r["step"] for r in resumed] != list(range(STOP + 1, STEPS + 1)):
        failures.append(f"{name}: resumed run logged steps {[r['step'] for r in resumed]}")
    for r in resumed:
        f = full[r["step"] - 1]
        if (f["loss"], f["batch_hash"]) != (r["loss"], r["batch_hash"]):
            failures.append(f"{name}: step {r['step']} loss {r['loss']} batch_hash "
                            f"{r['batch_hash']}, uninterrupted {f['loss']} {f['batch_hash']}")
    print(f"{name:8s} {'ok' if not failures else 'FAIL'}")
    return failures, part_dir


def check_corrupt(ctrain, work, data, env):
    """One flipped byte in rank_00001.ctk: the resume fails naming the file."""
    run_dir = os.path.join(work, "corrupt")
    metrics = os.path.join(work, "corrupt.jsonl")
    job = write_job(work, "corrupt", data, run_dir, "ddp", metrics, "auto", 0)
    launch(ctrain, job, 3, dict(env, CTRAIN_STOP_AFTER=str(STOP)))
    step_dir = os.path.join(run_dir, "ckpt", f"step_{STOP:08d}")
    shard = os.path.join(step_dir, "rank_00001.ctk")
    with open(shard, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    out = launch(ctrain, job, 3, env, check=False)
    text = out.stdout + out.stderr
    if out.returncode == 0:
        return ["corrupt: the resume from a flipped byte succeeded"]
    if "rank_00001.ctk" not in text:
        return [f"corrupt: the error does not name rank_00001.ctk:\n{text[-2000:]}"]
    print("corrupt  ok (exit %d)" % out.returncode)
    return []


def check_overwrite(ctrain, work, data, env):
    """Another timeline's checkpoints are kept unless checkpoint.overwrite = true."""
    run_dir = os.path.join(work, "overwrite")
    ckpt = os.path.join(run_dir, "ckpt")
    metrics = os.path.join(work, "overwrite.jsonl")
    job = write_job(work, "overwrite", data, run_dir, "ddp", metrics, "never", STOP)
    launch(ctrain, job, 1, env)
    steps = [f"step_{STOP:08d}", f"step_{STEPS:08d}"]
    failures = []
    rewind = write_job(work, "rewind", data, run_dir, "ddp", metrics,
                       os.path.join(ckpt, steps[0]), STOP)
    for name, path, first in (("fresh", job, steps[0]), ("rewind", rewind, steps[1])):
        out = launch(ctrain, path, 1, env, check=False)
        text = out.stdout + out.stderr
        if out.returncode == 0 or first not in text or "checkpoint.overwrite" not in text:
            failures.append(f"overwrite: a {name} run did not refuse naming {first} and "
                            f"checkpoint.overwrite (exit {out.returncode}):\n{text[-2000:]}")
    if sorted(os.listdir(ckpt)) != steps:
        failures.append(f"overwrite: {ckpt} holds {sorted(os.listdir(ckpt))} after refusals")
    with open(job) as f:
        text = f.read().replace("keep = 2\n", "keep = 2\noverwrite = true\n")
    with open(job, "w") as f:
        f.write(text)
    out = launch(ctrain, job, 1, env, check=False)
    if out.returncode != 0 or "replaced" not in out.stdout + out.stderr:
        failures.append(f"overwrite: with checkpoint.overwrite = true: exit {out.returncode}, "
                        f"no warning:\n{(out.stdout + out.stderr)[-2000:]}")
    if not failures:
        print("overwrite ok")
    return failures


def checks(ctrain, env, work, data):
    failures = []
    for strategy, world in CASES:
        failures += check_case(ctrain, work, data, strategy, world, env)[0]
    failures += check_corrupt(ctrain, work, data, env)
    return failures + check_overwrite(ctrain, work, data, env)


def main():
    return mpi_equivalence.run_suite("ctrain_resume_", checks, f"{len(CASES)} resumes, a "
                                     "corrupted shard and checkpoint.overwrite")


if __name__ == "__main__":
    sys.exit(main())

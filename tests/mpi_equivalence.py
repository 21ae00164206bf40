#!/usr/bin/env python3
"""Every sharding strategy equals single-process training on the same global batch.

usage: mpi_equivalence.py BIN_DIR [WORLD_SIZE ...]

For each world size W (default 1 2 3 4) and strategy (ddp, zero1, zero2, fsdp, hsdp), trains a
small GPT for 10 steps under `mpirun -np W ctrain worker` with batch_size 2 and grad_accum 2 per
rank, and a single process (`ctrain train`, no MPI) on the same global batch: batch_size 2 and
grad_accum 2W, which reads the same sequences in the same order (data.h's sampler). Gradient
clipping is active (the test checks the norm exceeds the clip). Asserts, per step, the loss and
gradient norm within 1e-5 relative, equal batch hashes, and final parameters within 1e-5
(relative L2 norm of the difference, per unit: the embedding unit and each block). Also checks
that every step's comm_bytes equals the strategy's theoretical volume exactly (DESIGN.md's
table, padding included, plus the scalars: 16 bytes for the step's loss and the stop flag, 8 for
the norm).

Tolerance: only the order of fp32 sums differs between the runs (reductions across ranks,
micro-batch splits); measured differences are around 1e-7.

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

STRATEGIES = ["ddp", "zero1", "zero2", "fsdp", "hsdp"]
EVERY_MICRO = ["zero2", "fsdp"]  # also run with parallel.reduce_every_microbatch = true
TOL = 1e-5
ACCUM = 2  # micro-batches per step on each rank
MODEL = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, seq_len=16)


def model_section(model):
    """The [model] table of a job.toml for a dict of its keys (in the dict's order)."""
    return "[model]\n" + "".join(f"{key} = {value}\n" for key, value in model.items())


def job_text(data_dir, run_dir, batch, accum, strategy, group, every_micro=False):
    return f"""
{model_section(MODEL)}[data]
train = "{data_dir}/train_*.bin"
[train]
batch_size = {batch}
grad_accum = {accum}
steps = 10
lr = 3e-3
min_lr = 3e-4
warmup_steps = 2
grad_clip = 0.5
seed = 7
[parallel]
strategy = "{strategy}"
bucket_mb = 0.02
shard_group_size = {group}
reduce_every_microbatch = {"true" if every_micro else "false"}
[log]
dir = "{run_dir}"
every = 1
[device]
threads_per_rank = 1
"""


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if out.returncode != 0:
        print("FAILED:", " ".join(cmd))
        print(out.stdout[-3000:], out.stderr[-3000:])
        raise SystemExit(1)
    return out


def synth_data(ctrain, work, vocab=64, seed=3):
    """work/data: 20000 synthetic tokens below `vocab` (`ctrain data synth`); its path."""
    data = os.path.join(work, "data")
    run([ctrain, "data", "synth", "--out", data, "--tokens", "20000", "--vocab", str(vocab),
         "--seed", str(seed)])
    return data


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_units(path):
    """Final parameters of an llm.c model file, grouped per ctrain unit."""
    with open(path, "rb") as f:
        header = struct.unpack("256i", f.read(1024))
        data = f.read()
    maxT, V, L, NH, C, Vp = header[2:8]
    floats = struct.unpack(f"{len(data) // 4}f", data)
    sizes = [("wte", Vp * C, False), ("wpe", maxT * C, False), ("ln1w", C, True),
             ("ln1b", C, True), ("qkvw", 3 * C * C, True), ("qkvb", 3 * C, True),
             ("attprojw", C * C, True), ("attprojb", C, True), ("ln2w", C, True),
             ("ln2b", C, True), ("fcw", 4 * C * C, True), ("fcb", 4 * C, True),
             ("fcprojw", 4 * C * C, True), ("fcprojb", C, True), ("lnfw", C, False),
             ("lnfb", C, False)]
    units = {"embed": []}
    at = 0
    for name, size, per_layer in sizes:
        for layer in range(L if per_layer else 1):
            unit = f"block.{layer}" if per_layer else "embed"
            units.setdefault(unit, []).extend(floats[at:at + size])
            at += size
    return units


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def compare(name, ref_dir, dist_dir):
    failures = []
    ref, dist = read_metrics(ref_dir), read_metrics(dist_dir)
    if len(ref) != len(dist):
        return [f"{name}: {len(dist)} logged steps, reference has {len(ref)}"]
    worst_loss = worst_norm = 0.0
    for r, d in zip(ref, dist):
        worst_loss = max(worst_loss, rel(r["loss"], d["loss"]))
        worst_norm = max(worst_norm, rel(r["grad_norm"], d["grad_norm"]))
        if r["batch_hash"] != d["batch_hash"]:
            failures.append(f"{name}: step {d['step']} batch_hash {d['batch_hash']} != "
                            f"{r['batch_hash']}")
    if ref[0]["grad_norm"] <= 0.5:
        failures.append(f"{name}: clipping not active (norm {ref[0]['grad_norm']})")
    a, b = read_units(os.path.join(ref_dir, "final.bin")), read_units(
        os.path.join(dist_dir, "final.bin"))
    worst_param = 0.0
    for unit in a:
        diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a[unit], b[unit])))
        norm = math.sqrt(sum(x * x for x in a[unit]))
        worst_param = max(worst_param, diff / norm)
    print(f"{name:14s} loss {worst_loss:.1e}  grad_norm {worst_norm:.1e}  params {worst_param:.1e}")
    if worst_loss > TOL or worst_norm > TOL or worst_param > TOL:
        failures.append(f"{name}: beyond {TOL} (loss {worst_loss:.2e}, norm {worst_norm:.2e}, "
                        f"params {worst_param:.2e})")
    return failures


def expected_traffic(strategy, world, group, every_micro=False):
    """Bytes per step on one rank, per collective kind (nccl-tests convention, comm.h)."""
    C, V, T = MODEL["n_embd"], MODEL["vocab_size"], MODEL["seq_len"]
    units = [V * C + T * C + 2 * C] + [12 * C * C + 13 * C] * MODEL["n_layer"]
    if world == 1:
        return dict(allreduce=0, reduce_scatter=0, allgather=0, broadcast=0)
    if strategy == "ddp":
        return dict(allreduce=4 * sum(units) + 16, reduce_scatter=0, allgather=0, broadcast=0)
    g = world if strategy != "hsdp" else group
    shard = [(n + g - 1) // g for n in units]
    padded = [s * g for s in shard]
    # the step's mean loss with the stop flag (world), and the norm (shard group)
    scalars = 24 if g > 1 else 16
    replicas = 4 * sum(shard) if strategy == "hsdp" and group < world else 0
    # fsdp gathers each unit for forward and again for backward, in each of the 2 micro-batches
    gathers = 2 * ACCUM if strategy in ("fsdp", "hsdp") else 1
    reductions = ACCUM if every_micro else 1
    return dict(allreduce=scalars + replicas, reduce_scatter=reductions * 4 * sum(padded),
                allgather=gathers * 4 * sum(padded), broadcast=0)


def check_traffic(name, dist_dir, expected):
    """comm_bytes of every step equals the strategy's volume exactly."""
    for record in read_metrics(dist_dir):
        if record["comm_bytes"] != expected:
            return [f"{name}: step {record['step']} comm_bytes {record['comm_bytes']} != "
                    f"expected {expected}"]
    return []


def mpi_env():
    """The environment every MPI test run needs: root allowed, one thread per rank."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    for test_only in ("CTRAIN_STOP_AFTER", "CTRAIN_FAULT", "CTRAIN_RESTART"):
        env.pop(test_only, None)
    return env


def mpi_setup(bin_dir):
    """(environment, path of ctrain) for an MPI test, or None (printed) without mpirun."""
    if not shutil.which("mpirun"):
        print("mpirun not found: skipped")
        return None
    return mpi_env(), os.path.join(bin_dir, "ctrain")


def run_suite(prefix, checks, what):
    """The main() of a checkpoint test: mpirun or exit 77, a temporary work directory with
    synth_data's tokens, checks(ctrain, env, work, data) -> failure messages, the failures and
    a PASS/FAIL line naming `what`; the exit code."""
    setup = mpi_setup(sys.argv[1])
    if not setup:
        return 77
    env, ctrain = setup
    work = tempfile.mkdtemp(prefix=prefix)
    try:
        failures = checks(ctrain, env, work, synth_data(ctrain, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print(f"{'PASS' if not failures else 'FAIL'}: {what}")
    return 1 if failures else 0


def main():
    bin_dir = sys.argv[1]
    worlds = [int(w) for w in sys.argv[2:]] or [1, 2, 3, 4]
    setup = mpi_setup(bin_dir)
    if not setup:
        return 77
    env, ctrain = setup
    work = tempfile.mkdtemp(prefix="ctrain_equiv_")
    failures = []
    try:
        data = synth_data(ctrain, work)
        for world in worlds:
            ref_dir = os.path.join(work, f"ref{world}")
            job = os.path.join(work, f"ref{world}.toml")
            with open(job, "w") as f:
                f.write(job_text(data, ref_dir, 2, ACCUM * world, "ddp", 1))
            run([ctrain, "train", job], env)
            for strategy in STRATEGIES:
                group = 2 if world % 2 == 0 else world  # hsdp: 2 groups of 2 at world 4
                dist_dir = os.path.join(work, f"{strategy}{world}")
                job = os.path.join(work, f"{strategy}{world}.toml")
                with open(job, "w") as f:
                    f.write(job_text(data, dist_dir, 2, ACCUM, strategy, group))
                run(["mpirun", "--oversubscribe", "-np", str(world), ctrain, "worker", job], env)
                failures += compare(f"{strategy} world {world}", ref_dir, dist_dir)
                failures += check_traffic(f"{strategy} world {world}", dist_dir,
                                          expected_traffic(strategy, world, group))
            for strategy in EVERY_MICRO:
                name = f"{strategy}+every world {world}"
                dist_dir = os.path.join(work, f"{strategy}-every{world}")
                job = os.path.join(work, f"{strategy}-every{world}.toml")
                with open(job, "w") as f:
                    f.write(job_text(data, dist_dir, 2, ACCUM, strategy, world, True))
                run(["mpirun", "--oversubscribe", "-np", str(world), ctrain, "worker", job], env)
                failures += compare(name, ref_dir, dist_dir)
                failures += check_traffic(name, dist_dir,
                                          expected_traffic(strategy, world, world, True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    runs = len(worlds) * (len(STRATEGIES) + len(EVERY_MICRO))
    print(f"{'PASS' if not failures else 'FAIL'}: {runs} runs compared")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

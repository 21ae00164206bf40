#!/usr/bin/env python3
"""Mixed precision ([precision] compute = bf16 | fp16) through the trainer and the shard layer.

usage: mpi_precision.py BIN_DIR

1. Tracking: a small GPT trains 200 steps in fp32, bf16, fp16 and bf16 with reduce = bf16,
   with ddp and fsdp at world sizes 1, 2 and 3, zero2 at world 3 reducing after every
   micro-batch, and hsdp at world 4 in groups of 2 (world 1:
   `ctrain train`; else `mpirun -np W ctrain worker`). The mean loss of the last 10 steps of
   every run is within 2% of the fp32 run's at the same layout, and the fp32 run learned (that
   mean is at least 0.5 below the first step's loss), so the comparison means something.
2. Traffic: every step's comm_bytes is the strategy's volume exactly (mpi_equivalence's
   formula) with parameters gathered in 2 bytes when compute is bf16/fp16 (fsdp's and
   zero1/zero2's all-gathers: half the fp32 bytes) and gradients summed in 2 bytes when reduce
   is bf16 (reduce-scatter, ddp's all-reduce: half), the scalars unchanged (world 3).
3. Checkpoints: a bf16 run interrupted at step 10 and resumed (fsdp and zero2 at world 3, ddp
   at world 1) equals the uninterrupted run byte for byte (mpi_resume's check_case: final.bin,
   exports, rank files, losses). The bf16 fsdp world-3 checkpoint loaded at other layouts (zero2
   at world 2 in bf16, ddp at world 1 in fp32) with nothing left to train writes a final.bin
   byte for byte the checkpoint's export: the fp32 masters are what a checkpoint holds, whatever
   the layout or precision that reads it.
4. fp16 loss scaling: the scale starts at 65536; CTRAIN_FAULT=overflow:rank=1:step=4 (an
   infinite loss scale on rank 1's first micro-batch of step 5) makes step 5 skipped on every
   rank (metrics: skipped, the scale 65536), the scale 32768 from step 6, the parameters after
   step 5 those after step 4 (a run of 4 steps at a constant rate ends where the run with the
   skip is after 5: final.bin equals the step-5 checkpoint's export), and the run, stopped
   after step 5 and resumed, continues with the halved scale and finishes.

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import filecmp
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402
import mpi_resume  # noqa: E402

TRACK_STEPS = 200
TRACK_TOL = 0.02
ACCUM = mpi_equivalence.ACCUM


def precision_section(compute, reduce="fp32"):
    return f'[precision]\ncompute = "{compute}"\nreduce = "{reduce}"\n'


def launch(ctrain, job, world, env, check=True):
    return mpi_resume.launch(ctrain, job, world, env, check=check)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def tracking_job(data, run_dir, strategy, world, compute, steps=TRACK_STEPS, reduce="fp32",
                 group=None):
    text = mpi_equivalence.job_text(data, run_dir, 2, ACCUM, strategy, group or world)
    text = text.replace("steps = 10\n", f"steps = {steps}\n")
    return text + precision_section(compute, reduce)


# (strategy, world, hsdp group, reduce_every_microbatch): every layout trains in fp32, bf16,
# fp16 and bf16 with bf16 reductions
TRACK_LAYOUTS = [("ddp", 1, 1, False), ("ddp", 2, 2, False), ("ddp", 3, 3, False),
                 ("fsdp", 1, 1, False), ("fsdp", 2, 2, False), ("fsdp", 3, 3, False),
                 ("zero2", 3, 3, True), ("hsdp", 4, 2, False)]
TRACK_RUNS = [("fp32", "fp32"), ("bf16", "fp32"), ("fp16", "fp32"), ("bf16", "bf16")]


def tracking(ctrain, env, work, data):
    failures = []
    for strategy, world, group, every in TRACK_LAYOUTS:
        means = {}
        for compute, reduce in TRACK_RUNS:
            label = compute if reduce == "fp32" else f"{compute}+reduce {reduce}"
            name = f"track-{strategy}{world}-{compute}-{reduce}"
            run_dir = os.path.join(work, name)
            text = tracking_job(data, run_dir, strategy, world, compute, reduce=reduce,
                                group=group)
            if every:  # bf16 sums added into the fp32 shard after every micro-batch
                text = text.replace("reduce_every_microbatch = false",
                                    "reduce_every_microbatch = true")
            job = write(os.path.join(work, name + ".toml"), text)
            launch(ctrain, job, world, env)
            rows = mpi_equivalence.read_metrics(run_dir)
            means[label] = statistics.mean(r["loss"] for r in rows[-10:])
            if label == "fp32" and means[label] > rows[0]["loss"] - 0.5:
                failures.append(f"{name}: did not learn (first loss {rows[0]['loss']:.3f}, "
                                f"last 10 {means[label]:.3f})")
        for label, mean in means.items():
            diff = mpi_equivalence.rel(means["fp32"], mean)
            print(f"tracking {strategy} world {world} {label:18s} last-10 mean {mean:.4f} "
                  f"({100 * diff:.2f}% from fp32)")
            if diff > TRACK_TOL:
                failures.append(f"tracking {strategy} world {world} {label}: {100 * diff:.2f}% "
                                f"from fp32, over {100 * TRACK_TOL:.0f}%")
    return failures


# (strategy, compute, reduce) at world 3
TRAFFIC_CASES = [("ddp", "bf16", "bf16"), ("zero1", "bf16", "fp32"), ("zero2", "bf16", "bf16"),
                 ("fsdp", "bf16", "fp32"), ("fsdp", "fp32", "bf16"), ("fsdp", "fp16", "bf16")]


def traffic(ctrain, env, work, data):
    failures = []
    world = 3
    for strategy, compute, reduce in TRAFFIC_CASES:
        name = f"traffic-{strategy}{world}-{compute}-{reduce}"
        run_dir = os.path.join(work, name)
        job = write(os.path.join(work, name + ".toml"),
                    tracking_job(data, run_dir, strategy, world, compute, steps=4, reduce=reduce))
        launch(ctrain, job, world, env)
        expected = mpi_equivalence.expected_traffic(strategy, world, world)
        if compute != "fp32":  # parameters gathered in 2 bytes an element, not 4
            expected["allgather"] //= 2
        if reduce == "bf16":  # gradients summed in 2 bytes; the scalars stay fp64
            expected["reduce_scatter"] //= 2
            if strategy == "ddp":
                expected["allreduce"] = (expected["allreduce"] - 16) // 2 + 16
        case = mpi_equivalence.check_traffic(name, run_dir, expected)
        print(f"traffic {strategy} world {world} compute {compute} reduce {reduce}: "
              f"{expected} {'ok' if not case else 'FAIL'}")
        failures += case
    return failures


def with_precision(compute, job_text):
    """mpi_resume.job_text with a [precision] section."""
    def text(*args, **kwargs):
        return job_text(*args, **kwargs) + precision_section(compute)
    return text


def checkpoints(ctrain, env, work, data):
    failures = []
    plain = mpi_resume.job_text
    mpi_resume.job_text = with_precision("bf16", plain)
    try:
        saved_dir = None
        for strategy, world in (("ddp", 1), ("zero2", 3), ("fsdp", 3)):
            case, part_dir = mpi_resume.check_case(ctrain, work, data, strategy, world, env)
            failures += case
            if strategy == "fsdp":
                saved_dir = part_dir
    finally:
        mpi_resume.job_text = plain
    step = os.path.join(saved_dir, "ckpt", f"step_{mpi_resume.STOP:08d}")
    exported = os.path.join(work, "bf16-fsdp3-step10.bin")
    subprocess.run([ctrain, "ckpt", "export", step, "--out", exported], check=True,
                   capture_output=True)
    for strategy, world, compute, batch in (("zero2", 2, "bf16", 3), ("ddp", 1, "fp32", 6)):
        name = f"reshard-to-{strategy}{world}-{compute}"
        run_dir = os.path.join(work, name)
        text = mpi_resume.job_text(data, run_dir, strategy, os.path.join(work, name + ".jsonl"),
                                   step, 0, False, steps=mpi_resume.STOP)
        text = text.replace("batch_size = 2\n", f"batch_size = {batch}\n")
        job = write(os.path.join(work, name + ".toml"), text + precision_section(compute))
        launch(ctrain, job, world, env)
        same = filecmp.cmp(exported, os.path.join(run_dir, "final.bin"), shallow=False)
        print(f"{name}: final.bin {'equals' if same else 'DIFFERS from'} the checkpoint's export")
        if not same:
            failures.append(f"{name}: final.bin differs from the bf16 checkpoint's export")
    return failures


def loss_scaling(ctrain, env, work, data):
    failures = []
    world = 2
    runs = {}
    for name, steps, fault in (("fp16-skip", 8, "overflow:rank=1:step=4"),
                               ("fp16-four", 4, None)):
        run_dir = os.path.join(work, name)
        text = tracking_job(data, run_dir, "ddp", world, "fp16", steps=steps)
        # a constant rate: the 4-step run's updates are the 8-step run's first four
        text = text.replace("warmup_steps = 2\n", 'warmup_steps = 2\nschedule = "constant"\n')
        job = write(os.path.join(work, name + ".toml"), text)
        run_env = dict(env, CTRAIN_FAULT=fault) if fault else env
        if fault:  # the parameters after step 5 are to be compared: save them there
            run_env["CTRAIN_STOP_AFTER"] = "5"
        launch(ctrain, job, world, run_env)
        runs[name] = run_dir
        if fault:
            rows = {r["step"]: r for r in mpi_equivalence.read_metrics(run_dir)}
            first = rows[1]
            if first.get("loss_scale") != 65536:
                failures.append(f"{name}: step 1 loss_scale {first.get('loss_scale')}, not 65536")
            skipped = [s for s, r in rows.items() if r.get("skipped")]
            if skipped != [5] or rows[5].get("loss_scale") != 65536:
                failures.append(f"{name}: skipped steps {skipped} (scale "
                                f"{rows.get(5, {}).get('loss_scale')}), expected [5] at 65536")
    # the stopped run's step-5 checkpoint holds the params after step 5 (= after step 4)
    stopped = os.path.join(runs["fp16-skip"], "ckpt", "step_00000005")
    exported = os.path.join(work, "fp16-step5.bin")
    subprocess.run([ctrain, "ckpt", "export", stopped, "--out", exported], check=True,
                   capture_output=True)
    if not filecmp.cmp(exported, os.path.join(runs["fp16-four"], "final.bin"), shallow=False):
        failures.append("fp16: the parameters after the skipped step 5 differ from those after "
                        "step 4")
    # resuming the stopped run continues with the halved scale, and finishes
    job = os.path.join(work, "fp16-skip.toml")
    launch(ctrain, job, world, env)
    rows = {r["step"]: r for r in mpi_equivalence.read_metrics(runs["fp16-skip"])}
    if rows.get(6, {}).get("loss_scale") != 32768 or 8 not in rows:
        failures.append(f"fp16: after the skip and a resume, step 6 scale "
                        f"{rows.get(6, {}).get('loss_scale')} (expected 32768), steps "
                        f"{sorted(rows)}")
    print(f"fp16 loss scaling {'ok' if not failures else 'FAIL'}")
    return failures


def checks(ctrain, env, work, data):
    return (loss_scaling(ctrain, env, work, data) + traffic(ctrain, env, work, data) +
            checkpoints(ctrain, env, work, data) + tracking(ctrain, env, work, data))


def main():
    return mpi_equivalence.run_suite("ctrain_precision_", checks, "mixed precision")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Nothing lost, nothing silently wrong (docs/reliability.md): resume identity, metrics that
read as one run, checks before the first step, saves that find another place, val_loss at any
world size.

usage: mpi_reliability.py BIN_DIR

A tiny GPT on synthetic tokens, one rank (`ctrain train`) unless said otherwise. Asserts:
  - two job files both named job.toml in two folders, log.dir unset: each trains into its own
    run directory (beside its job file), neither resumes the other; and with one log.dir shared
    on purpose, the second job (other data, another n_layer) refuses before touching anything,
    naming model.n_layer, data.train and the data's contents, and the first run's files are
    byte for byte as they were;
  - a checkpoint with n_head 2 does not resume a job with n_head 4 (the same unit sizes):
    exit 2 naming model.n_head; the way out named in the message (checkpoint.resume=replace)
    starts fresh; changed hyper-parameters (train.lr) are printed and accepted;
  - rerunning a finished job says it is complete, exits 0 and leaves metrics.jsonl unchanged;
  - a val shard with a token >= vocab_size, one shorter than seq_len + 1, and train.eval_steps
    past the end of data.val fail before step 1 (exit 2, no step line, the file named);
  - log.metrics = "/dev/full": exit 2 naming /dev/full, and final.bin is still written;
  - checkpoint.dir a regular file (cannot be a directory): the last checkpoint goes to the
    directory above it and final.bin is written; exit 2 saying where; resuming that rescued
    checkpoint (checkpoint.resume=PATH) continues the run; final.bin where a directory is:
    written to a rescue place;
  - CTRAIN_FAULT=kill:rank=1:step=25 at world size 2 under --max-restarts 2 with a checkpoint
    every 10 steps: metrics.jsonl holds steps 1..40, each exactly once;
  - val_loss after 2 steps at world sizes 1, 2 and 4 with the same global batch (batch_size 4,
    2, 1) agrees within 1e-5 relative (only fp32 sum order differs; the old world-1-only val
    sampler gave 2.5e-3 apart);
  - SIGTERM to ctrain-launch --nproc 2 mid-run: exit 4 and a checkpoint at the step it
    stopped; running it again resumes and ends with final.bin byte for byte the uninterrupted
    run's.

Only the Python standard library is used. Exit 0 = pass, 1 = fail, 77 = skipped (no mpirun).
"""
import filecmp
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402


def job_text(data, steps=6, n_layer=1, n_head=2, extra=""):
    return f"""[model]
n_layer = {n_layer}
n_head = {n_head}
n_embd = 16
vocab_size = 64
seq_len = 8
[data]
train = "{data}/train_*.bin"
val = "{data}/val_*.bin"
[train]
batch_size = 2
steps = {steps}
eval_steps = 2
[log]
every = 1
[checkpoint]
every = 2
async = false
[device]
threads_per_rank = 1
{extra}"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def train(bin_dir, job, env, *overrides, world=1, restarts=None, extra_env=None, timeout=180):
    cmd = [os.path.join(bin_dir, "ctrain-launch"), "--nproc", str(world)]
    if restarts is not None:
        cmd += ["--max-restarts", str(restarts)]
    out = subprocess.run(cmd + [job, *overrides], capture_output=True, text=True,
                         env=dict(env, **(extra_env or {})), timeout=timeout)
    out.text = out.stdout + out.stderr
    out.what = " ".join(cmd + [job, *overrides])
    return out


def expect(failures, cond, what, out=None):
    if not cond:
        failures.append(what + (f"\n  {out.what} -> exit {out.returncode}:\n{out.text[-2000:]}"
                                if out is not None else ""))


def snapshot(root):
    """Every file under root with its bytes."""
    files = {}
    for path in glob.glob(os.path.join(root, "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                files[path] = f.read()
    return files


def steps_of(metrics):
    with open(metrics) as f:
        return [json.loads(line)["step"] for line in f]


def check_two_jobs(bin_dir, env, work, data, other_data):
    failures = []
    a = write(os.path.join(work, "two", "a", "job.toml"), job_text(data))
    b = write(os.path.join(work, "two", "b", "job.toml"), job_text(other_data, n_layer=2))
    for job in (a, b):
        out = train(bin_dir, job, env)
        run_dir = os.path.join(os.path.dirname(job), "runs", "job")
        expect(failures, out.returncode == 0 and "resumed" not in out.text and
               os.path.exists(os.path.join(run_dir, "final.bin")),
               f"two jobs: {job} did not train fresh into {run_dir}", out)
    shared = os.path.join(work, "two", "shared")
    train(bin_dir, a, env, f"log.dir={shared}")
    before = snapshot(shared)
    out = train(bin_dir, b, env, f"log.dir={shared}")
    expect(failures, out.returncode == 2, "two jobs, one log.dir: not refused with exit 2", out)
    for needed in ("model.n_layer: saved 1, now 2", "data.train: saved", "contents of data.train",
                   "checkpoint.resume=replace", "Nothing was changed"):
        expect(failures, needed in out.text, f"two jobs: the refusal lacks '{needed}'", out)
    expect(failures, snapshot(shared) == before, "two jobs: the refused run changed files")
    print("two jobs ok" if not failures else "two jobs FAIL")
    return failures


def check_identity(bin_dir, env, work, data):
    failures = []
    job = write(os.path.join(work, "heads", "job.toml"), job_text(data, n_head=2))
    train(bin_dir, job, env)
    out = train(bin_dir, job, env, "model.n_head=4", "train.steps=8")
    expect(failures, out.returncode == 2 and "model.n_head: saved 2, now 4" in out.text,
           "n_head 2 -> 4 not refused naming model.n_head", out)
    out = train(bin_dir, job, env, "train.steps=8", "train.lr=1e-3")
    expect(failures, out.returncode == 0 and "train.lr: 0.0006 -> 0.001" in out.text and
           "resumed from" in out.text, "a changed train.lr was not printed and accepted", out)
    metrics = os.path.join(work, "heads", "runs", "job", "metrics.jsonl")
    with open(metrics, "rb") as f:
        rows = f.read()
    out = train(bin_dir, job, env, "train.steps=8")
    expect(failures, out.returncode == 0 and "this run is complete" in out.text and
           not any(line.startswith("step ") for line in out.stdout.splitlines()),
           "rerunning a finished job did not say it is complete", out)
    with open(metrics, "rb") as f:
        expect(failures, f.read() == rows, "the complete rerun changed metrics.jsonl")
    expect(failures, steps_of(metrics) == list(range(1, 9)),
           f"metrics after a resume: steps {steps_of(metrics)}, want 1..8")
    out = train(bin_dir, job, env, "model.n_head=4", "checkpoint.resume=replace")
    expect(failures, out.returncode == 0 and "resumed" not in out.text and
           steps_of(metrics) == list(range(1, 7)),
           "checkpoint.resume=replace did not start fresh", out)
    print("identity ok" if not failures else "identity FAIL")
    return failures


def bad_val(path, tokens):
    """An llm.c shard of the given tokens (any values, no checks)."""
    header = [20240520, 1, len(tokens)] + [0] * 253
    with open(path, "wb") as f:
        f.write(b"".join(x.to_bytes(4, "little", signed=True) for x in header))
        f.write(b"".join(t.to_bytes(2, "little") for t in tokens))


def check_data_first(bin_dir, env, work, data):
    failures = []
    root = os.path.join(work, "val")
    os.makedirs(root)
    cases = [("big_token", [1] * 200 + [64] + [1] * 100, "64"),
             ("short", [1] * 5, "seq_len + 1"),
             ("few", [1] * 30, "train.eval_steps")]  # 3 sequences; an evaluation reads 2 x 2
    for name, tokens, needed in cases:
        shard = os.path.join(root, name + ".bin")
        bad_val(shard, tokens)
        job = write(os.path.join(root, name + ".toml"),
                    job_text(data, steps=3).replace(f'"{data}/val_*.bin"', f'"{shard}"'))
        out = train(bin_dir, job, env)
        expect(failures, out.returncode == 2 and not any(
               line.startswith("step ") for line in out.stdout.splitlines()) and
               needed in out.text and (name == "few" or shard in out.text),
               f"val shard '{name}': not refused before step 1 naming it", out)
    print("data first ok" if not failures else "data first FAIL")
    return failures


def check_saves(bin_dir, env, work, data):
    failures = []
    root = os.path.join(work, "saves")
    job = write(os.path.join(root, "job.toml"), job_text(data, steps=4))
    out = train(bin_dir, job, env, "log.metrics=/dev/full", f"log.dir={root}/full")
    expect(failures, out.returncode == 2 and "/dev/full" in out.text and
           os.path.exists(os.path.join(root, "full", "final.bin")),
           "log.metrics=/dev/full: not exit 2 naming it with final.bin written", out)

    run_dir = os.path.join(root, "notdir")
    write(os.path.join(run_dir, "ckptfile"), "a file where checkpoint.dir should be\n")
    out = train(bin_dir, job, env, f"log.dir={run_dir}", f"checkpoint.dir={run_dir}/ckptfile")
    expect(failures, out.returncode == 2 and "ckptfile" in out.text and
           not os.path.exists(os.path.join(run_dir, "metrics.jsonl")),
           "checkpoint.dir that is a file: not refused before step 1", out)

    # The step-2 checkpoint cannot be committed (a file holds its name): it goes to the
    # directory above checkpoint.dir, and resuming it from there continues the run.
    run_dir = os.path.join(root, "blocked")
    write(os.path.join(run_dir, "ckpt", "step_00000002"), "in the way\n")
    out = train(bin_dir, job, env, f"log.dir={run_dir}")
    rescued = os.path.join(run_dir, "step_00000002")
    expect(failures, out.returncode == 2 and f"saved to {rescued}" in out.text and
           os.path.exists(os.path.join(rescued, "manifest.json")),
           "a checkpoint that cannot be committed was not rescued to the directory above", out)
    out = train(bin_dir, job, env, f"log.dir={run_dir}", f"checkpoint.dir={root}/new",
                f"checkpoint.resume={rescued}")
    expect(failures, out.returncode == 0 and "at step 2" in out.text and
           os.path.exists(os.path.join(run_dir, "final.bin")),
           "the rescued checkpoint did not resume", out)

    # A full file system (a 256 KiB tmpfs, where mounting is allowed): both places on it fail,
    # and the checkpoint goes to $TMPDIR/ctrain-rescue-<run name>.
    full = os.path.join(root, "tmpfs")
    os.makedirs(full)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", full],
                      capture_output=True).returncode == 0:
        try:
            tmp = os.path.join(root, "tmp")
            os.makedirs(tmp)
            out = train(bin_dir, job, env, "model.n_embd=64", f"log.dir={full}/run",
                        extra_env={"TMPDIR": tmp})
            rescued = os.path.join(tmp, "ctrain-rescue-run", "step_00000002")
            expect(failures, out.returncode == 2 and "No space left" in out.text and
                   os.path.exists(os.path.join(rescued, "manifest.json")),
                   "a full checkpoint file system: the checkpoint was not rescued to TMPDIR", out)
        finally:
            subprocess.run(["umount", full], capture_output=True)
    else:
        print("saves: no tmpfs mount allowed here; the full-disk case is skipped")

    run_dir = os.path.join(root, "nofinal")
    os.makedirs(os.path.join(run_dir, "final.bin"))  # a directory where the file goes
    out = train(bin_dir, job, env, f"log.dir={run_dir}", extra_env={"TMPDIR": root})
    rescued = os.path.join(root, "final.bin")  # the directory above the run directory
    expect(failures, out.returncode == 2 and f"written to {rescued}" in out.text and
           os.path.isfile(rescued), "final.bin that cannot be written was not rescued", out)
    print("saves ok" if not failures else "saves FAIL")
    return failures


def check_restart_metrics(bin_dir, env, work, data):
    failures = []
    job = write(os.path.join(work, "restart", "job.toml"),
                job_text(data, steps=40).replace("every = 2\n", "every = 10\n"))
    out = train(bin_dir, job, env, world=2, restarts=2,
                extra_env={"CTRAIN_FAULT": "kill:rank=1:step=25"})
    metrics = os.path.join(work, "restart", "runs", "job", "metrics.jsonl")
    expect(failures, out.returncode == 0 and "restart 1 of 2" in out.text,
           "the killed job was not restarted to the end", out)
    expect(failures, os.path.exists(metrics) and steps_of(metrics) == list(range(1, 41)),
           f"metrics after a restart: steps {steps_of(metrics) if os.path.exists(metrics) else None}")
    print("restart metrics ok" if not failures else "restart metrics FAIL")
    return failures


def check_val_loss(bin_dir, env, work, data):
    failures = []
    losses = {}
    for world, batch in ((1, 4), (2, 2), (4, 1)):
        job = write(os.path.join(work, f"val{world}", "job.toml"), job_text(data, steps=2))
        out = train(bin_dir, job, env, f"train.batch_size={batch}", world=world)
        rows = [json.loads(line) for line in open(os.path.join(
            work, f"val{world}", "runs", "job", "metrics.jsonl"))]
        expect(failures, out.returncode == 0 and "val_loss" in rows[-1],
               f"world {world}: no val_loss", out)
        losses[world] = rows[-1].get("val_loss", float("nan"))
    for world in (2, 4):
        rel = abs(losses[world] - losses[1]) / abs(losses[1])
        expect(failures, rel < 1e-5, f"val_loss at world {world} is {losses[world]}, "
               f"{losses[1]} at world 1 ({rel:.2e} relative, tolerance 1e-5)")
    print(f"val_loss {losses} {'ok' if not failures else 'FAIL'}")
    return failures


def check_sigterm(bin_dir, env, work, data):
    failures = []
    root = os.path.join(work, "term")
    steps = 3000
    text = job_text(data, steps=steps, n_layer=2).replace("every = 2\n", "every = 0\n")
    text = text.replace("n_embd = 16", "n_embd = 64")
    full = write(os.path.join(root, "full", "job.toml"), text)
    out = train(bin_dir, full, env, world=2)
    expect(failures, out.returncode == 0, "the uninterrupted run failed", out)
    job = write(os.path.join(root, "part", "job.toml"), text)
    cmd = [os.path.join(bin_dir, "ctrain-launch"), "--nproc", "2", job]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    metrics = os.path.join(root, "part", "runs", "job", "metrics.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(metrics) and len(steps_of(metrics)) > 50):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    text_out, _ = proc.communicate(timeout=60)
    saved = sorted(glob.glob(os.path.join(root, "part", "runs", "job", "ckpt", "step_*")))
    last = steps_of(metrics)[-1] if os.path.exists(metrics) else -1
    expect(failures, proc.returncode == 4 and saved and
           saved[-1].endswith(f"step_{last:08d}") and last < steps,
           f"SIGTERM: exit {proc.returncode} (want 4), checkpoints {saved}, last step {last}:\n"
           f"{text_out[-2000:]}")
    out = train(bin_dir, job, env, world=2)
    expect(failures, out.returncode == 0 and f"at step {last}" in out.text,
           "the stopped run did not resume where it stopped", out)
    expect(failures, filecmp.cmp(os.path.join(root, "full", "runs", "job", "final.bin"),
                                 os.path.join(root, "part", "runs", "job", "final.bin"),
                                 shallow=False),
           "SIGTERM + resume: final.bin differs from the uninterrupted run's")
    print(f"SIGTERM after step {last} {'ok' if not failures else 'FAIL'}")
    return failures


def checks(ctrain, env, work, data):
    bin_dir = os.path.dirname(ctrain)
    other = os.path.join(work, "other")
    subprocess.run([ctrain, "data", "synth", "--out", other, "--tokens", "20000", "--vocab",
                    "64", "--seed", "9"], check=True, capture_output=True)
    failures = check_two_jobs(bin_dir, env, work, data, other)
    failures += check_identity(bin_dir, env, work, data)
    failures += check_data_first(bin_dir, env, work, data)
    failures += check_saves(bin_dir, env, work, data)
    failures += check_restart_metrics(bin_dir, env, work, data)
    failures += check_val_loss(bin_dir, env, work, data)
    return failures + check_sigterm(bin_dir, env, work, data)


def main():
    return mpi_equivalence.run_suite("ctrain_reliability_", checks, "resume identity, metrics, "
                                     "checks first, rescued saves, restarts, val_loss, SIGTERM")


if __name__ == "__main__":
    sys.exit(main())

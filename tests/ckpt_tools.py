#!/usr/bin/env python3
"""`ctrain ckpt info|verify|export` on a tiny run's checkpoints, and corrupted checkpoints.

usage: ckpt_tools.py BIN_DIR

Trains a 2-layer GPT for 4 steps with a checkpoint every 2 (ddp, one process) and asserts:
  - `ckpt info` of the checkpoint directory shows the newest checkpoint (step 4, world size 1,
    strategy ddp, the saved model's shape, every unit); of step_00000002, step 2;
  - `ckpt verify` passes on both and prints OK;
  - `ckpt export --format llmc` of the last checkpoint equals final.bin byte for byte (and the
    export of step 2 differs from it, so the comparison can fail);
  - model.init_from of the safetensors export and of the llm.c export give exactly the same
    first-step loss (the same floats must load), unlike a random initialisation; init_from of
    it into another model shape, or of a truncated copy, fails naming the file (and tensor);
  - corruptions fail both `ckpt verify` and a resume (`ctrain train ... checkpoint.resume=DIR`)
    with a non-zero exit and a message naming the file, and the unit where one is involved: a
    flipped byte inside the frame of unit 2 (block.1)'s params, a flipped byte of
    manifest.json, a truncated rank file, the rank file header's format version set to 3 (one past
    this build's), and a manifest rewritten with format_version 3 and a valid checksum;
  - bad command lines exit 2 with a message;
  - a format version 1 checkpoint (tests/data/ckpt_v1, written by commit 63fd431) still loads
    and verifies: info, verify, its export equals that run's final.bin, and a resume.
With mpirun (as root: mpi_equivalence's mpi_setup) it also saves at world size 3 with fsdp and
checks info (world size 3, fsdp), verify, and that the llmc export equals final.bin.

Only the Python standard library is used. Exit 0 = pass, 1 = fail.
"""
import filecmp
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_equivalence  # noqa: E402

M64 = (1 << 64) - 1
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def job_text(data, run_dir, strategy="ddp", every=2):
    return f"""
[model]
n_layer = 2
n_head = 2
n_embd = 16
vocab_size = 64
seq_len = 8
[data]
train = "{data}/train_*.bin"
[train]
batch_size = 2
grad_accum = 1
steps = 4
lr = 3e-3
seed = 5
[parallel]
strategy = "{strategy}"
[checkpoint]
every = {every}
keep = 5
resume = "never"
[log]
dir = "{run_dir}"
every = 1
[device]
threads_per_rank = 1
"""


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return out.returncode, out.stdout + out.stderr


def must(cmd, env=None):
    """Runs cmd; on failure prints it and exits 1 (mpi_equivalence.run); returns the output."""
    out = mpi_equivalence.run(cmd, env)
    return out.stdout + out.stderr


def mix64(x):
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def hash64(data):
    """ct_hash64(data, seed 0), docs/checkpoints.md."""
    h = 0xCBF29CE484222325 ^ mix64(0)
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return mix64(h)


def index_entries(path):
    """The rank file's index: (unit, kind, lo, hi, offset, frame_bytes) per frame."""
    with open(path, "rb") as f:
        blob = f.read()
    index_offset, n = struct.unpack_from("<QQ", blob, len(blob) - 32)
    return [struct.unpack_from("<IIQQQQ", blob, index_offset + 64 * i) for i in range(n)]


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def flip_frame(step_dir):
    """A byte in the middle of the zstd data of unit 2's params frame in rank_00000.ctk."""
    path = os.path.join(step_dir, "rank_00000.ctk")
    for unit, kind, lo, hi, offset, frame_bytes in index_entries(path):
        if unit == 2 and kind == 0:
            flip(path, offset + 40 + (frame_bytes - 40) // 2)
            return
    raise AssertionError("no frame of unit 2 params")


def flip_manifest(step_dir):
    path = os.path.join(step_dir, "manifest.json")
    with open(path, "rb") as f:
        text = f.read()
    at = text.index(b"n_layer")  # inside the saved job text: the JSON stays valid
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"N")


def truncate_rank(step_dir):
    path = os.path.join(step_dir, "rank_00000.ctk")
    os.truncate(path, os.path.getsize(path) - 100)


def rank_version(step_dir):
    with open(os.path.join(step_dir, "rank_00000.ctk"), "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 3))


def manifest_version(step_dir):
    """format_version 3 with a valid own checksum: only the version check can refuse it."""
    path = os.path.join(step_dir, "manifest.json")
    with open(path, "rb") as f:
        text = f.read()
    text = text.replace(b'"format_version": 2', b'"format_version": 3', 1)
    m = list(re.finditer(rb'"checksum": "([0-9a-f]{16})"', text))[-1]  # the last: the file's
    zeroed = text[:m.start(1)] + b"0" * 16 + text[m.end(1):]
    text = zeroed[:m.start(1)] + b"%016x" % hash64(zeroed) + zeroed[m.end(1):]
    with open(path, "wb") as f:
        f.write(text)


# (name, damage, what every message must contain)
CORRUPTIONS = [
    ("frame byte", flip_frame, ["rank_00000.ctk", "unit 2 (block.1)"]),
    ("manifest byte", flip_manifest, ["manifest.json"]),
    ("truncated rank file", truncate_rank, ["rank_00000.ctk"]),
    ("rank file version", rank_version, ["rank_00000.ctk", "format version 3"]),
    ("manifest version", manifest_version, ["manifest.json", "format version 3"]),
]


def test_corruptions(ctrain, work, job, step_dir):
    for i, (name, damage, needles) in enumerate(CORRUPTIONS):
        bad = os.path.join(work, f"bad{i}", os.path.basename(step_dir))
        shutil.copytree(step_dir, bad)
        damage(bad)
        for what, cmd in [("verify", [ctrain, "ckpt", "verify", bad]),
                          ("resume", [ctrain, "train", job, f"checkpoint.resume={bad}",
                                      f"log.dir={work}/resume{i}"])]:
            code, out = run(cmd)
            check(0 < code < 128, f"{name}: {what} exit {code}, expected a failure")
            for needle in needles:
                check(needle in out, f"{name}: {what} message lacks '{needle}':\n{out[-600:]}")


def test_init_from_errors(ctrain, work, job, safetensors):
    """model.init_from of a safetensors file of another shape, or a damaged one, fails naming
    the file (and the tensor and both shapes)."""
    cut = os.path.join(work, "cut.safetensors")
    with open(safetensors, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(100))
    cases = [(safetensors, ["model.n_embd=32"],
              "tensor transformer.wte.weight has shape [64, 16], the job's model needs [64, 32]"),
             (cut, [], "header length")]
    for path, overrides, needle in cases:
        code, out = run([ctrain, "train", job, f"model.init_from={path}", "train.steps=1",
                         f"log.dir={work}/init_error"] + overrides)
        check(0 < code < 128 and path in out and needle in out,
              f"init_from {path} {overrides}: exit {code}, {out[-400:]}")


def test_cli_errors(ctrain, step_dir):
    cases = [(["ckpt"], "usage: ctrain ckpt"), (["ckpt", "frob", step_dir], "unknown subcommand"),
             (["ckpt", "verify"], "verify needs PATH"),
             (["ckpt", "info", step_dir, "x"], "takes one PATH"),
             (["ckpt", "info", "--all"], "unknown option '--all'"),
             (["ckpt", "export", step_dir], "needs PATH and --out FILE"),
             (["ckpt", "export", step_dir, "--out"], "--out needs a value"),
             (["ckpt", "export", step_dir, "--out", "x", "--format", "onnx"],
              "--format must be safetensors or llmc, got 'onnx'")]
    for args, needle in cases:
        code, out = run([ctrain] + args)
        check(code == 2 and needle in out, f"ctrain {' '.join(args)}: exit {code}, {out[:300]}")
    code, out = run([ctrain, "ckpt", "info", "/nonexistent/ckpt"])
    check(code == 1 and "/nonexistent/ckpt" in out, f"info of a missing path: {code} {out}")


def test_world3_fsdp(bin_dir, work, data):
    setup = mpi_equivalence.mpi_setup(bin_dir)
    if not setup:
        return
    env, ctrain = setup
    run_dir = os.path.join(work, "fsdp3")
    job = os.path.join(work, "fsdp3.toml")
    with open(job, "w") as f:
        f.write(job_text(data, run_dir, "fsdp", every=0))
    must(["mpirun", "--oversubscribe", "-np", "3", ctrain, "worker", job], env)
    ckpt = os.path.join(run_dir, "ckpt")
    out = must([ctrain, "ckpt", "info", ckpt])
    check(re.search(r"^world size:\s+3$", out, re.M) and re.search(r"^strategy:\s+fsdp$", out, re.M)
          and "rank_00002.ctk" in out, f"world 3 info:\n{out}")
    check("OK" in must([ctrain, "ckpt", "verify", ckpt]), "world 3 verify")
    export = os.path.join(work, "fsdp3.bin")
    must([ctrain, "ckpt", "export", ckpt, "--out", export])
    check(filecmp.cmp(export, os.path.join(run_dir, "final.bin"), shallow=False),
          "world 3 fsdp: llmc export differs from final.bin")
    print("world size 3, fsdp: info, verify, export == final.bin checked")


def test_version1_fixture(ctrain, work):
    """A format version 1 checkpoint (FNV-1a frame checksums) written by commit 63fd431
    (tests/data/ckpt_v1, fsdp at world size 2) still loads and verifies: info says version 1,
    verify decodes its 12 frames, its llmc export equals that run's final.bin byte for byte,
    and a run resumes from it (at world size 1 with ddp: a reshard) and trains a step."""
    fixture = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ckpt_v1")
    step_dir = os.path.join(fixture, "step_00000002")
    out = must([ctrain, "ckpt", "info", step_dir])
    check(re.search(r"^format version:\s+1$", out, re.M), f"v1 info:\n{out}")
    out = must([ctrain, "ckpt", "verify", step_dir])
    check(out.startswith("OK: ") and "2 rank files, 12 frames, 2 units" in out, f"v1 verify: {out}")
    export = os.path.join(work, "v1.bin")
    must([ctrain, "ckpt", "export", step_dir, "--out", export])
    check(filecmp.cmp(export, os.path.join(fixture, "final.bin"), shallow=False),
          "v1 checkpoint: llmc export differs from the final.bin of the run that saved it")
    data = mpi_equivalence.synth_data(ctrain, os.path.join(work, "v1"), vocab=32)
    job = os.path.join(work, "v1.toml")
    with open(os.path.join(fixture, "job.toml")) as f, open(job, "w") as g:
        g.write(f.read().replace('"data/train_*.bin"', f'"{data}/train_*.bin"')
                .replace('strategy = "fsdp"', 'strategy = "ddp"')
                .replace("batch_size = 1", "batch_size = 2").replace("steps = 2", "steps = 3"))
    out = must([ctrain, "train", job, f"checkpoint.resume={step_dir}",
                f"log.dir={work}/v1run", "checkpoint.every=0"])
    check("resumed from" in out and "at step 2" in out, f"v1 resume:\n{out[-600:]}")
    print("format version 1 checkpoint: info, verify, export == final.bin, resume checked")


def main():
    bin_dir = sys.argv[1]
    ctrain = os.path.join(bin_dir, "ctrain")
    work = tempfile.mkdtemp(prefix="ctrain_ckpt_tools_")
    try:
        data = mpi_equivalence.synth_data(ctrain, work)
        run_dir = os.path.join(work, "run")
        job = os.path.join(work, "job.toml")
        with open(job, "w") as f:
            f.write(job_text(data, run_dir))
        must([ctrain, "train", job])
        ckpt = os.path.join(run_dir, "ckpt")
        step2, step4 = os.path.join(ckpt, "step_00000002"), os.path.join(ckpt, "step_00000004")

        out = must([ctrain, "ckpt", "info", ckpt])
        for pattern in [r"^step:\s+4$", r"^world size:\s+1$", r"^strategy:\s+ddp$",
                        r"^format version:\s+2$", r"^data position:\s+step 4$",
                        r"n_layer 2, n_head 2, n_embd 16, vocab_size 64, seq_len 8",
                        r"^\s+2\s+block\.1\s+3280 elements$", r"^\s+rank_00000\.ctk\s+\d+ bytes",
                        r"^\s+params\s+raw\s+30976 bytes"]:
            check(re.search(pattern, out, re.M), f"info lacks /{pattern}/:\n{out}")
        check(re.search(r"^step:\s+2$", must([ctrain, "ckpt", "info", step2]), re.M),
              "info of step_00000002 does not say step 2")
        for path in (ckpt, step2):
            out = must([ctrain, "ckpt", "verify", path])
            check(out.startswith("OK: ") and "1 rank files, 9 frames, 3 units" in out,
                  f"verify {path}: {out}")

        final = os.path.join(run_dir, "final.bin")
        exports = {name: os.path.join(work, name)
                   for name in ["last.bin", "step2.bin", "last.safetensors"]}
        must([ctrain, "ckpt", "export", ckpt, "--out", exports["last.bin"], "--format", "llmc"])
        must([ctrain, "ckpt", "export", step2, "--out", exports["step2.bin"]])
        must([ctrain, "ckpt", "export", ckpt, "--out", exports["last.safetensors"]])
        check(filecmp.cmp(exports["last.bin"], final, shallow=False),
              "llmc export of the last checkpoint differs from final.bin")
        check(not filecmp.cmp(exports["step2.bin"], final, shallow=False),
              "the export of step 2 equals final.bin: the comparison proves nothing")

        losses = {}
        for name in ["last.bin", "last.safetensors", None]:
            init_dir = os.path.join(work, f"init_{name}")
            must([ctrain, "train", job, "train.steps=1", "checkpoint.every=0",
                  f"log.dir={init_dir}", f"model.init_from={exports[name] if name else ''}"])
            losses[name] = mpi_equivalence.read_metrics(init_dir)[0]["loss"]
        check(losses["last.bin"] == losses["last.safetensors"],
              f"first losses differ: llmc {losses['last.bin']}, "
              f"safetensors {losses['last.safetensors']}")
        check(losses["last.bin"] != losses[None], "init_from did not change the first loss")
        test_init_from_errors(ctrain, work, job, exports["last.safetensors"])

        test_corruptions(ctrain, work, job, step4)
        test_cli_errors(ctrain, step4)
        test_version1_fixture(ctrain, work)
        test_world3_fsdp(bin_dir, work, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Memory tables for docs/memory.md: what a rank holds, measured by ctrain's allocator.

usage: scripts/bench_memory.py [--bin build/bin] [--out FILE] [--state] [--activations]
                               [--big] [--compute bf16]

--state        model_state_bytes per rank (metrics.jsonl `memory`) for ddp, zero1, zero2, fsdp
               at world sizes 1, 2, 4 in the chosen precision (default bf16), beside the
               strategy's formula (docs/memory.md), on byte-lm (bench/byte-lm.toml), 2 steps.
--activations  activations_peak_bytes and the median ms/step of steps 3-8 for
               activation_checkpointing none, selective and block on byte-lm (1 rank x 2
               threads, fp32); with --big also GPT-2 124M at seq 1024, batch 1 (3 steps each:
               several minutes on 2 cores).
Neither flag: both. Synthetic data is written under build/bench-memory/. Only the Python
standard library is used.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024.0 * 1024.0


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"bench_memory: {' '.join(cmd)} failed ({out.returncode}):\n"
                 f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out


def synth(binary, work, vocab):
    data = os.path.join(work, f"synth-{vocab}")
    if not os.path.exists(os.path.join(data, "train_000000.bin")):
        run([os.path.join(binary, "ctrain"), "data", "synth", "--out", data, "--tokens",
             "300000", "--vocab", str(vocab), "--seed", "1"])
    return os.path.join(data, "train_*.bin")


def train(binary, config, work, name, world, overrides):
    """Runs bench/CONFIG.toml at `world` ranks with overrides; returns metrics rows."""
    run_dir = os.path.join(work, "runs", name)
    subprocess.run(["rm", "-rf", run_dir], check=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [os.path.join(binary, "ctrain-launch"), "--nproc", str(world),
           os.path.join(ROOT, "bench", config + ".toml"), f"log.dir={run_dir}",
           "checkpoint.every=0", "log.every=1"] + overrides
    run(cmd, env)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def state_table(binary, work, compute):
    data = synth(binary, work, 256)
    lines = [f"model_state_bytes per rank, byte-lm (10.84M params), compute {compute}, reduce "
             f"fp32 (`scripts/bench_memory.py --state --compute {compute}`):", "",
             "| strategy | world | measured MiB | formula | formula MiB | measured / formula |",
             "|---|---|---|---|---|---|"]
    for strategy in ("ddp", "zero1", "zero2", "fsdp"):
        for world in (1, 2, 4):
            rows = train(binary, "byte-lm", work, f"state-{strategy}-{world}", world,
                         [f"data.train={data}", "train.steps=2", "train.warmup_steps=1",
                          f"parallel.strategy={strategy}", f"precision.compute={compute}",
                          "device.threads_per_rank=1", "train.batch_size=2"])
            mem = rows[-1]["memory"]
            measured = rows[-1]["model_state_bytes"]
            formula = mem["model_state_formula_bytes"]
            lines.append(f"| {strategy} | {world} | {measured / MIB:.2f} | "
                         f"{mem['model_state_formula']} | {formula / MIB:.2f} | "
                         f"{measured / formula:.4f} |")
    return lines


def activation_table(binary, work, big):
    cases = [("byte-lm", 256, 8, 10, [f"data.train={synth(binary, work, 256)}"])]
    if big:
        cases.append(("gpt2-124m", 1024, 1, 3,
                      [f"data.train={synth(binary, work, 50257)}"]))
    lines = ["Activation checkpointing, 1 rank x 2 threads, fp32 (`scripts/bench_memory.py "
             "--activations" + (" --big" if big else "") + "`):", "",
             "| model | seq x batch | mode | activations peak MiB | vs none | ms/step (median) "
             "| vs none |", "|---|---|---|---|---|---|---|"]
    for config, seq, batch, steps, extra in cases:
        base = None
        for mode in ("none", "selective", "block"):
            rows = train(binary, config, work, f"act-{config}-{mode}", 1,
                         extra + [f"train.steps={steps}", "train.warmup_steps=1",
                                  f"model.seq_len={seq}", f"train.batch_size={batch}",
                                  f"memory.activation_checkpointing={mode}",
                                  "device.threads_per_rank=2"])
            peak = max(r["memory"]["activations_peak_bytes"] for r in rows)
            timed = [r["ms"] for r in rows[2:]] or [rows[-1]["ms"]]
            ms = statistics.median(timed)
            if base is None:
                base = (peak, ms)
            lines.append(f"| {config} | {seq} x {batch} | {mode} | {peak / MIB:.1f} | "
                         f"{base[0] / peak:.2f}x less | {ms:.0f} | {ms / base[1] - 1:+.0%} |"
                         .replace("| 1.00x less |", "| - |"))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--out")
    ap.add_argument("--state", action="store_true")
    ap.add_argument("--activations", action="store_true")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--compute", default="bf16", choices=("fp32", "bf16", "fp16"))
    args = ap.parse_args()
    both = not args.state and not args.activations
    work = os.path.join(ROOT, "build", "bench-memory")
    os.makedirs(work, exist_ok=True)
    lines = []
    if args.state or both:
        lines += state_table(args.bin, work, args.compute) + [""]
    if args.activations or both:
        lines += activation_table(args.bin, work, args.big) + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

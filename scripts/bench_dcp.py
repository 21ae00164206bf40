"""PyTorch 2's distributed checkpoint (torch.distributed.checkpoint) on the state that
`ctrain bench ckpt` saves: gpt2-124m's 124,439,808 fp32 parameters (wte unpadded and tied,
as ctrain holds them) with Adam m and v, 1.493 GB raw, as one state dict of 3 x 148 tensors.

    python bench_dcp.py --dir D [--runs R] [--threads T]

Each run: dcp.save into a fresh D/dcp (FileSystemWriter, one process: uncompressed, each file
fsynced), then dcp.load into the preallocated tensors twice: cold (the page cache dropped
with /proc/sys/vm/drop_caches when writable, and every file evicted with posix_fadvise
DONTNEED, as the ctrain bench does) and warm (straight after, the files still cached). The
loaded tensors are compared with the saved ones (torch.equal). Prints one line per run and
the medians (min-max) as `# dcp` lines, GB/s = raw bytes / wall time (1 GB = 10^9 bytes).
Needs PyTorch 2 (e.g. a venv: python3 -m venv DIR && DIR/bin/pip install torch numpy).
"""
import argparse
import os
import shutil
import statistics
import sys
import time
import warnings

import torch
import torch.distributed.checkpoint as dcp


def gpt2_124m_shapes():
    """ctrain's gpt2-124m parameters: (name, shape), wte tied to the head, V = 50257."""
    V, T, C, L = 50257, 1024, 768, 12
    shapes = [("wte", (V, C)), ("wpe", (T, C))]
    for i in range(L):
        shapes += [(f"h.{i}.ln_1.weight", (C,)), (f"h.{i}.ln_1.bias", (C,)),
                   (f"h.{i}.attn.c_attn.weight", (3 * C, C)), (f"h.{i}.attn.c_attn.bias", (3 * C,)),
                   (f"h.{i}.attn.c_proj.weight", (C, C)), (f"h.{i}.attn.c_proj.bias", (C,)),
                   (f"h.{i}.ln_2.weight", (C,)), (f"h.{i}.ln_2.bias", (C,)),
                   (f"h.{i}.mlp.c_fc.weight", (4 * C, C)), (f"h.{i}.mlp.c_fc.bias", (4 * C,)),
                   (f"h.{i}.mlp.c_proj.weight", (C, 4 * C)), (f"h.{i}.mlp.c_proj.bias", (C,))]
    return shapes + [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]


def make_state():
    """Trained-like values (DCP stores them raw, so only the sizes matter for its speed)."""
    g = torch.Generator().manual_seed(1337)
    state = {}
    for name, shape in gpt2_124m_shapes():
        w = torch.randn(shape, generator=g) * 0.02
        state[f"params.{name}"] = w
        state[f"adam_m.{name}"] = w * 1e-3
        state[f"adam_v.{name}"] = w * w * 1e-6
    return state


def evict(path):
    """Drops the page cache where allowed and evicts every file under path; which worked."""
    how = set()
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            how.add("fadvise")
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        how.add("drop_caches")
    except OSError:
        pass
    return how


def load_checked(state, target, path):
    for t in target.values():
        t.zero_()
    t0 = time.perf_counter()
    dcp.load(target, checkpoint_id=path)
    seconds = time.perf_counter() - t0
    if not all(torch.equal(target[k], state[k]) for k in state):
        sys.exit("bench_dcp: the loaded state differs from the saved one")
    return seconds


def summary(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="a directory on the disk to measure")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # one process without a process group: DCP says so
    state = make_state()
    target = {k: torch.empty_like(v) for k, v in state.items()}
    raw = sum(v.numel() * v.element_size() for v in state.values())
    path = os.path.join(args.dir, "dcp")
    print(f"# dcp: torch {torch.__version__}, {len(state)} tensors, {raw / 1e9:.3f} GB raw fp32, "
          f"{args.runs} runs, {args.threads} threads, {path}")
    save, cold, warm, how = [], [], [], set()
    for r in range(args.runs):
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        t0 = time.perf_counter()
        dcp.save(state, checkpoint_id=path)
        save.append(raw / (time.perf_counter() - t0) / 1e9)
        file_bytes = sum(os.path.getsize(os.path.join(root, f))
                         for root, _, files in os.walk(path) for f in files)
        how = evict(path)
        cold.append(raw / load_checked(state, target, path) / 1e9)
        warm.append(raw / load_checked(state, target, path) / 1e9)
        print(f"  run {r}: save {save[-1]:.3f} GB/s, load cold {cold[-1]:.3f}, warm {warm[-1]:.3f}"
              f" GB/s, files {file_bytes / raw:.4f} of raw", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    print(f"# dcp ratio {file_bytes / raw:.4f}")
    print(f"# dcp save {summary(save)}")
    print(f"# dcp load cold {summary(cold)}")
    print(f"# dcp load warm {summary(warm)}")
    print(f"# dcp page cache before the cold load: {' and '.join(sorted(how)) or 'NOT evicted'}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch multi-process reference throughput for a GPT-2 configuration (gloo, CPU).

    python3 scripts/torch_bench_dist.py --layers 4 --heads 4 --embd 256 --vocab 50257 \
        --seq 128 --batch 8 --nproc 2 --threads 1 [--layouts ddp,zero,fsdp]

BENCH.md's side-by-side figure for several ranks on one machine. For each layout it starts
--nproc worker processes itself (subprocess; MASTER_ADDR=127.0.0.1, a free MASTER_PORT, RANK,
WORLD_SIZE, and OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = --threads set before each process
starts, torch.set_num_threads(--threads) inside), which train the hand-written GPT-2 of
scripts/torch_gpt.py in float32 on random tokens (--batch sequences per rank, a different
stream per rank) with AdamW (lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on 2-D
weights) and gradient clipping at 1.0, as torch_bench.py and the bench/*.toml jobs do:

  ddp   DistributedDataParallel over gloo (default 25 MiB buckets), torch.optim.AdamW
  zero  DistributedDataParallel + torch.distributed.optim.ZeroRedundancyOptimizer(AdamW)
        (ZeRO-1: optimizer state sharded, parameters broadcast after the step)
  fsdp  FullyShardedDataParallel, one unit per transformer block plus the root (FSDP2
        fully_shard where the torch version has it, else FSDP1; --precision bf16: FSDP2's
        MixedPrecisionPolicy, bf16 parameters and fp32 reduction); only tried on torch >= 2.1,
        whose FSDP runs on CPU with gloo. Debian's 1.13 reports "not available (torch 1.13)".

Every step (zero_grad, forward, backward, clip, optimizer step) is timed on every rank; the
step time is the slowest rank's, tokens/s = nproc x batch x seq / step time (the whole job).
The first --warmup steps are left out. Prints one JSON line:
{"torch", "nproc", "threads", "layouts": {NAME: {"tokens_per_s_median", "min", "max",
"ms_median", "ms_min", "ms_max", ...} or {"available": false, "reason": ...}}}.
A layout that fails is reported with "available": false and its error; the exit status is 0
when at least one layout ran. Exits 77 when no python (python3, /usr/bin/python3) can
import torch.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_gpt as tg  # noqa: E402  (re-executes with a python that has torch, or exits 77)
import torch  # noqa: E402
import torch_bench_common as tbc  # noqa: E402

LAYOUTS = ("ddp", "zero", "fsdp")


def torch_version():
    """(major, minor) of torch.__version__ ("1.13.0a0" -> (1, 13))."""
    parts = torch.__version__.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return 0, 0


def fsdp_unavailable():
    """None when this torch's FSDP is expected to run on CPU with gloo, else the reason."""
    major, minor = torch_version()
    if (major, minor) < (2, 1):
        return "not available (torch %d.%d)" % (major, minor)
    try:
        import torch.distributed.fsdp  # noqa: F401
    except ImportError as e:
        return "not available (torch %s: %s)" % (torch.__version__, e)
    return None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- worker -------------------------------------------------------------------------------
def make_optimizer(model, layout, params_model):
    groups = tbc.decay_groups([(p, p.dim() >= 2) for p in params_model.parameters()])
    kw = dict(tbc.ADAMW_KW)
    if torch_version() >= (2, 0):
        kw["fused"] = False
    if layout == "zero":
        from torch.distributed.optim import ZeroRedundancyOptimizer
        zero = ZeroRedundancyOptimizer(groups[0]["params"], optimizer_class=torch.optim.AdamW,
                                       weight_decay=0.1, **kw)
        zero.add_param_group(groups[1])
        return zero
    return torch.optim.AdamW(groups, **kw)


def wrap(model, layout, precision="fp32"):
    """-> (module to call, module whose parameters the optimizer steps). precision bf16 (fsdp
    with FSDP2 only): MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    if layout in ("ddp", "zero"):
        ddp = DDP(model)
        return ddp, ddp
    # fsdp: one unit per block plus the root (embedding, final LayerNorm, tied head)
    try:
        try:
            from torch.distributed.fsdp import fully_shard  # torch >= 2.6
        except ImportError:
            from torch.distributed._composable.fsdp import fully_shard  # torch 2.4-2.5
        kw = {}
        if precision == "bf16":
            try:
                from torch.distributed.fsdp import MixedPrecisionPolicy
            except ImportError:
                from torch.distributed._composable.fsdp import MixedPrecisionPolicy
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                   reduce_dtype=torch.float32)
        for blk in model.blocks:
            fully_shard(blk, **kw)
        fully_shard(model, **kw)
        return model, model
    except ImportError:
        pass
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    fsdp = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({tg.Block}), use_orig_params=True,
                device_id=None)
    return fsdp, fsdp


def worker(args):
    import torch.distributed as dist
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(args.seed)
    model = tg.GPT(args.layers, args.heads, args.embd, args.vocab, args.seq, use_sdpa=True)
    model.init_random(torch.Generator().manual_seed(args.seed))  # same weights on every rank
    if args.precision != "fp32" and args.layout != "fsdp":
        raise SystemExit("torch_bench_dist: --precision bf16 is for the fsdp layout (FSDP2)")
    net, owner = wrap(model, args.layout, args.precision)
    opt = make_optimizer(model, args.layout, owner)
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank)  # each rank its own data
    ms = []
    for _ in range(args.steps):
        data = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=gen)
        x, y = data[:, :-1], data[:, 1:]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = net(x, y)
        loss.backward()
        if args.layout == "fsdp" and hasattr(owner, "clip_grad_norm_"):
            owner.clip_grad_norm_(1.0)  # FSDP1: the global norm over the shards
        else:  # ddp/zero: gradients are already averaged; FSDP2: DTensor grads, global norm
            torch.nn.utils.clip_grad_norm_(owner.parameters(), 1.0)
        opt.step()
        ms.append((time.perf_counter() - t0) * 1e3)
        if rank == 0:
            print("torch_bench_dist: %s step %d loss %.4f %.1f ms (rank 0)"
                  % (args.layout, len(ms), loss.item(), ms[-1]), file=sys.stderr)
    # slowest rank per step, gathered once at the end (no extra sync inside the timed steps)
    t = torch.tensor(ms, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if rank == 0:
        slow = t.tolist()[args.warmup:]
        tokens = world * args.batch * args.seq
        with open(args.result, "w") as f:
            json.dump({
                **tbc.timed_figures(tokens, slow),
                "nproc": world, "threads": args.threads,
                "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                "optimizer": type(opt).__name__, "wrapper": type(net).__name__,
            }, f)
    dist.barrier()
    dist.destroy_process_group()
    return 0


# ---- launcher -----------------------------------------------------------------------------
def run_layout(args, layout, tmpdir):
    result = os.path.join(tmpdir, layout + ".json")
    port = free_port()
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--layout", layout,
           "--result", result]
    for k in ("layers", "heads", "embd", "vocab", "seq", "batch", "steps", "warmup",
              "threads", "seed", "precision"):
        cmd += ["--" + k, str(getattr(args, k))]
    procs = []
    for rank in range(args.nproc):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(args.nproc),
                   OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
                   MKL_NUM_THREADS=str(args.threads))
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    print("torch_bench_dist: %s: %d processes x %d threads, MASTER_PORT=%d"
          % (layout, args.nproc, args.threads, port), file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    failed = None
    while any(p.poll() is None for p in procs):
        bad = [p for p in procs if p.poll() not in (None, 0)]
        if bad and failed is None:
            failed = "rank %d exited %d" % (procs.index(bad[0]), bad[0].returncode)
        if failed or time.monotonic() > deadline:
            failed = failed or "timed out after %d s" % args.timeout
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            break
        time.sleep(0.2)
    if failed is None:
        bad = [p for p in procs if p.returncode != 0]
        if bad:
            failed = "rank %d exited %d" % (procs.index(bad[0]), bad[0].returncode)
    if failed is None and not os.path.exists(result):
        failed = "rank 0 wrote no result"
    if failed:
        return {"available": False, "reason": "failed: " + failed}
    with open(result) as f:
        out = json.load(f)
    out["available"] = True
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tbc.add_shape_args(ap, batch_help="sequences per rank")
    ap.add_argument("--nproc", type=int, default=2, help="processes (ranks)")
    ap.add_argument("--threads", type=int, default=1, help="threads per process")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: FSDP2 MixedPrecisionPolicy (bf16 params, fp32 reduce); fsdp only")
    ap.add_argument("--layouts", default=",".join(LAYOUTS),
                    help="comma-separated subset of %s" % ",".join(LAYOUTS))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per layout")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    tbc.check_steps(ap, args)
    if args.worker:
        return worker(args)
    layouts = [x for x in args.layouts.split(",") if x]
    for x in layouts:
        if x not in LAYOUTS:
            ap.error("unknown layout '%s' (choose from %s)" % (x, ",".join(LAYOUTS)))

    res = {}
    with tempfile.TemporaryDirectory(prefix="torch-bench-dist.") as tmpdir:
        for layout in layouts:
            why = fsdp_unavailable() if layout == "fsdp" else None
            if why:
                print("torch_bench_dist: fsdp: %s" % why, file=sys.stderr)
                res[layout] = {"available": False, "reason": why}
                continue
            res[layout] = run_layout(args, layout, tmpdir)
    print(json.dumps({
        "torch": torch.__version__, "python": sys.executable, "nproc": args.nproc,
        "threads": args.threads, "batch_per_rank": args.batch, "seq": args.seq,
        "params": tg.num_params(args.layers, args.embd, args.vocab, args.seq),
        "flops_per_token": tg.flops_per_token(args.layers, args.embd, args.vocab, args.seq),
        "layouts": res,
    }))
    return 0 if any(r.get("available") for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

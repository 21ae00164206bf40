#!/usr/bin/env python3
"""PyTorch reference throughput for a GPT-2 configuration (BENCH.md's side-by-side figure).

    OPENBLAS_NUM_THREADS=2 python3 scripts/torch_bench.py --layers 4 --heads 4 --embd 256 \
        --vocab 50257 --seq 128 --batch 8 --threads 2

Trains the hand-written GPT-2 of scripts/torch_gpt.py in float32 on random tokens with
AdamW (lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on 2-D weights, not fused) and
gradient clipping at 1.0, as the bench/*.toml jobs do. PyTorch 2's best recipe on top:
--compile (torch.compile of the model), --amp bf16 (bf16 autocast of forward and loss),
--sdpa / --no-sdpa (scaled_dot_product_attention, on by default, or the explicit softmax),
--fused (fused AdamW). Times every step (zero_grad, forward,
backward, clip, optimizer step), drops the first --warmup, and prints one JSON line:
{"tokens_per_s_median", "min", "max", "ms_median", "ms_min", "ms_max", ...}.

Threads: torch.set_num_threads(--threads) sets PyTorch's own pool, but Debian's torch runs
its GEMMs in OpenBLAS, which only OPENBLAS_NUM_THREADS reaches, and only when set before
the process starts: the caller must set it (scripts/bench.sh does). Exits 77 when no python
(python3, /usr/bin/python3) can import torch.
"""
import argparse
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_gpt as tg  # noqa: E402  (re-executes with a python that has torch, or exits 77)
import torch  # noqa: E402
import torch_bench_common as tbc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tbc.add_shape_args(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none",
                    help="bf16: autocast forward and loss to bfloat16 (CPU autocast)")
    ap.add_argument("--sdpa", dest="sdpa", action="store_true", default=True,
                    help="attention through scaled_dot_product_attention (default)")
    ap.add_argument("--no-sdpa", dest="sdpa", action="store_false")
    ap.add_argument("--fused", action="store_true", help="fused AdamW")
    args = ap.parse_args()
    tbc.check_steps(ap, args)

    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    if blas != str(args.threads):
        print("torch_bench: warning: OPENBLAS_NUM_THREADS=%s but --threads %d; set it before "
              "starting python or the GEMMs use another thread count" % (blas, args.threads),
              file=sys.stderr)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = tg.GPT(args.layers, args.heads, args.embd, args.vocab, args.seq,
                   use_sdpa=args.sdpa)
    model.init_random(torch.Generator().manual_seed(args.seed))
    groups = tbc.decay_groups(model.decay_flags())
    try:
        opt = torch.optim.AdamW(groups, fused=args.fused, **tbc.ADAMW_KW)  # torch >= 2.0
    except (TypeError, RuntimeError) as e:
        if args.fused:
            print("torch_bench: fused AdamW unavailable (%s): unfused" % e, file=sys.stderr)
        opt = torch.optim.AdamW(groups, **tbc.ADAMW_KW)
    forward = torch.compile(model) if args.compile else model
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.amp == "bf16" \
        else contextlib.nullcontext

    tokens = args.batch * args.seq
    ms = []
    for _ in range(args.steps):
        data = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
        x, y = data[:, :-1], data[:, 1:]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast():
            _, loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ms.append((time.perf_counter() - t0) * 1e3)
        print("torch_bench: step %d loss %.4f %.1f ms" % (len(ms), loss.item(), ms[-1]),
              file=sys.stderr)
    print(json.dumps({
        **tbc.timed_figures(tokens, ms[args.warmup:]),
        "threads": args.threads, "openblas_num_threads": blas,
        "params": tg.num_params(args.layers, args.embd, args.vocab, args.seq),
        "flops_per_token": tg.flops_per_token(args.layers, args.embd, args.vocab, args.seq),
        "torch": torch.__version__, "python": sys.executable, "sdpa": model.use_sdpa,
        "compile": args.compile, "amp": args.amp, "fused": args.fused,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

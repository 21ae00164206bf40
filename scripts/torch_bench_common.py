"""What scripts/torch_bench.py and scripts/torch_bench_dist.py share.

The model-shape arguments both take (so bench.sh and bench_dist.sh pass one list to either),
the AdamW settings of the bench/*.toml jobs (lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay
0.1 on the 2-D weights only), and the JSON figures of a run's timed steps.

Import after torch_gpt (which makes sure this python has torch).
"""
import statistics

ADAMW_KW = dict(lr=6e-4, betas=(0.9, 0.95), eps=1e-8)  # as the bench/*.toml jobs


def add_shape_args(ap, batch_help=None):
    """The model, batch and step arguments, in the order --help lists them."""
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--embd", type=int, required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True, help=batch_help)
    ap.add_argument("--steps", type=int, default=13, help="steps in all, warm-up included")
    ap.add_argument("--warmup", type=int, default=3, help="first steps left out of the figures")


def check_steps(ap, args):
    """Exits with a usage error unless some steps are left after the warm-up."""
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")


def decay_groups(flags):
    """AdamW parameter groups from (parameter, decayed) pairs: weight decay 0.1 or 0."""
    return [{"params": [p for p, d in flags if d], "weight_decay": 0.1},
            {"params": [p for p, d in flags if not d], "weight_decay": 0.0}]


def timed_figures(tokens, timed_ms):
    """tokens/s and ms per step (median, min, max) of the timed steps; tokens per step."""
    tps = [tokens / (m / 1e3) for m in timed_ms]
    return {
        "tokens_per_s_median": round(statistics.median(tps), 2),
        "min": round(min(tps), 2), "max": round(max(tps), 2),
        "ms_median": round(statistics.median(timed_ms), 3),
        "ms_min": round(min(timed_ms), 3), "ms_max": round(max(timed_ms), 3),
        "steps_timed": len(timed_ms),
    }

#!/usr/bin/env bash
# Checkpoints inside training (issue 4): what a save costs the training loop, and what a
# reshard costs a load, for the gpt2-124m reference model (bench/gpt2-124m.toml).
#
#   scripts/bench_ckpt_train.sh [--runs N] [--seq N] [--out FILE] [--no-build]
#
# 1. Blocking time: 2 ranks x 1 thread with fsdp (each rank saves half of params, Adam m and
#    v: ~746 MB), batch 1 at seq_len --seq (default 64), a checkpoint after every step, 5 steps,
#    once with checkpoint.async = false and once with true. Each save prints its blocking time
#    (what the training loop waited for) and the time to commit; the first save of a run is
#    left out (it allocates and faults in the host copy), and the figures are medians over
#    runs x saves. Also the median step time of each run: background saves share the 2 cores.
# 2. Reshard load: a step-1 checkpoint saved by 4 fsdp ranks (global batch 12), loaded by 4
#    fsdp ranks and by 3 fsdp ranks (`loaded in` of the resume line: manifest, every rank
#    reading its ranges across the 4 files, decoding and checksumming), N times each with the
#    files in the page cache.
# Markdown on stdout (and to --out FILE); progress on stderr. CTRAIN_BIN=DIR measures the
# binaries in DIR instead of build/bin.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench_ckpt_train
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

SEQ=64
RUNS=3
usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=${2:-}; shift 2 ;;
        --seq) SEQ=${2:-}; shift 2 ;;
        --out) OUT=${2:-}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_ckpt_train: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
bench_check_positive "$RUNS" "$SEQ"
bench_build "$BUILD"
command -v mpirun >/dev/null || { log "mpirun is not on PATH (apt-get install openmpi-bin)"; exit 1; }
bench_synth_data gpt2-124m 50257

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctrain-bench-ckpt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# launch NPROC NAME OVERRIDE...: one ctrain-launch of bench/gpt2-124m.toml into $tmp/NAME,
# its output in $tmp/NAME.log.
launch() {
    local nproc=$1 name=$2
    shift 2
    log "$name: ctrain-launch --nproc $nproc bench/gpt2-124m.toml $*"
    "$BIN/ctrain-launch" --nproc "$nproc" bench/gpt2-124m.toml model.seq_len="$SEQ" \
        log.dir="$tmp/$name" device.threads_per_rank=1 "$@" >"$tmp/$name.log" 2>&1 ||
        { log "$name failed:"; tail -n 20 "$tmp/$name.log" >&2; exit 1; }
}

for run in $(seq "$RUNS"); do
    for async in false true; do
        launch 2 "save-$async-$run" parallel.strategy=fsdp train.batch_size=1 train.steps=5 \
            train.warmup_steps=1 checkpoint.every=1 checkpoint.keep=1 checkpoint.async="$async"
    done
done
for run in $(seq "$RUNS"); do
    launch 4 "saved-$run" parallel.strategy=fsdp train.batch_size=3 train.steps=1 \
        train.warmup_steps=0
    for nproc in 4 3; do
        launch "$nproc" "load-$nproc-$run" parallel.strategy=fsdp train.batch_size=$((12 / nproc)) \
            train.steps=1 train.warmup_steps=0 checkpoint.resume="$tmp/saved-$run/ckpt/step_00000001" \
            checkpoint.dir="$tmp/load-$nproc-$run/ckpt"
    done
done

report=$(python3 - "$tmp" "$RUNS" "$SEQ" "$(bench_cpu)" <<'EOF'
import re, statistics, sys

tmp, runs, seq, cpu = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def lines(name):
    return open(f"{tmp}/{name}.log").read().splitlines()


def saves(name):
    """(blocking s, saved-in s) of each save but the first."""
    got = [tuple(map(float, m.groups())) for l in lines(name)
           if (m := re.search(r"blocking ([\d.]+) s \| saved in ([\d.]+) s", l))]
    return got[1:]


def step_ms(name):
    return [float(m.group(1)) for l in lines(name) if (m := re.search(r"\| +([\d.]+) ms \|", l))]


def loaded(name):
    return [float(m.group(1)) for l in lines(name) if (m := re.search(r"loaded in ([\d.]+) s", l))]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


rows = {}
for mode in ("false", "true"):
    s = [x for r in range(1, runs + 1) for x in saves(f"save-{mode}-{r}")]
    ms = [x for r in range(1, runs + 1) for x in step_ms(f"save-{mode}-{r}")[1:]]
    rows[mode] = (med([b for b, _ in s]), med([t for _, t in s]), med(ms), len(s))
sync_block = rows["false"][0]
out = [f"Checkpoints in training, gpt2-124m (seq_len {seq}, batch 1), 2 fsdp ranks x 1 thread, "
       f"median of {runs} runs ({cpu}):", "",
       "| save | blocking (s) | saved in (s) | step (ms) | blocking / sync |", "|---|---|---|---|---|"]
for mode, label in (("false", "synchronous"), ("true", "async")):
    b, t, ms, n = rows[mode]
    out.append(f"| {label} ({n} saves) | {b:.3f} | {t:.3f} | {ms:.0f} | {100 * b / sync_block:.1f}% |")
out += ["", "| load of a 4-rank fsdp checkpoint | loaded in (s) |", "|---|---|"]
for nproc in (4, 3):
    xs = [x for r in range(1, runs + 1) for x in loaded(f"load-{nproc}-{r}")]
    out.append(f"| by {nproc} fsdp ranks{' (reshard)' if nproc == 3 else ''} | {med(xs):.3f} |")
print("\n".join(out))
EOF
)
bench_emit "$report" "$OUT"

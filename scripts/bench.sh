#!/usr/bin/env bash
# Throughput benchmark of BENCH.md's reference configurations, side by side with PyTorch.
#
#   scripts/bench.sh [--runs N] [--threads N] [--steps N] [--out FILE] [--no-torch]
#                    [--no-build] [CONFIG...]
#
# CONFIG names a bench/CONFIG.toml (default: gpt-mini byte-lm). For each one it makes the
# synthetic data when missing (ctrain data synth --tokens 2000000 --seed 1), then, N times
# (--runs, default 1; BENCH.md's figures are medians of 3), trains --steps steps (default 13)
# with log.every=1 on one rank of --threads threads (default 2) and, when a python with torch
# is found (python3, /usr/bin/python3), runs scripts/torch_bench.py on the same configuration
# with the same threads (OPENBLAS_NUM_THREADS set). The first 3 steps of every run are warm-up
# and left out. The sgemm ceiling for MFU is the best of 3 `ctrain bench sgemm --threads N`.
#
# Prints a Markdown table on stdout (and to --out FILE); progress goes to stderr.
# CTRAIN_BIN=DIR measures the binaries in DIR instead of build/bin (use with --no-build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=1
THREADS=2
STEPS=13
WARMUP=3
OUT=""
TORCH=1
BUILD=1
CONFIGS=()
usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-torch) TORCH=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "bench: unknown option '$1'" >&2; usage >&2; exit 2 ;;
        *) CONFIGS+=("$1"); shift ;;
    esac
done
[[ ${#CONFIGS[@]} -gt 0 ]] || CONFIGS=(gpt-mini byte-lm)
for n in "$RUNS" "$THREADS" "$STEPS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench: '$n' is not a positive integer" >&2; exit 2; }
done
if [[ $STEPS -le $WARMUP ]]; then
    echo "bench: --steps must exceed the $WARMUP warm-up steps" >&2
    exit 2
fi
for c in "${CONFIGS[@]}"; do
    [[ -f "bench/$c.toml" ]] || { echo "bench: no bench/$c.toml" >&2; exit 2; }
done

log() { echo "bench: $*" >&2; }
BIN=${CTRAIN_BIN:-build/bin}  # another build to measure: CTRAIN_BIN=build-x/bin

if [[ $BUILD -eq 1 ]]; then
    scripts/build.sh >&2
fi
for b in ctrain ctrain-launch; do
    [[ -x "$BIN/$b" ]] || { log "$BIN/$b is missing: run scripts/build.sh"; exit 1; }
done

# The first python that can import torch, or nothing.
torch_python() {
    local p
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then
            command -v "$p"
            return 0
        fi
    done
    return 1
}
TORCH_PY=""
if [[ $TORCH -eq 1 ]]; then
    if TORCH_PY=$(torch_python); then
        log "PyTorch reference: $TORCH_PY ($("$TORCH_PY" -c 'import torch; print(torch.__version__)'))"
    else
        log "no python with torch (scripts/install-deps.sh --with-torch): no PyTorch column"
        TORCH_PY=""
    fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctrain-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Model keys of a job file as shell assignments: L= H= C= V= T= B=
model_keys() {
    python3 - "$1" <<'EOF'
import re, sys
try:
    import tomllib
    with open(sys.argv[1], "rb") as f:
        job = tomllib.load(f)
except ImportError:  # python < 3.11: the bench files are flat enough for a regex
    job, table = {}, None
    for line in open(sys.argv[1]):
        line = line.split("#")[0].strip()
        m = re.match(r"\[(\w+)\]$", line)
        if m:
            table = job.setdefault(m.group(1), {})
        elif "=" in line and table is not None:
            k, v = (s.strip() for s in line.split("=", 1))
            table[k] = v.strip('"')
m, t = job["model"], job["train"]
print("L=%s H=%s C=%s V=%s T=%s B=%s" % (m["n_layer"], m["n_head"], m["n_embd"],
      m["vocab_size"], m["seq_len"], t["batch_size"]))
EOF
}

# The ceiling is the best of 3 measurements: on a shared host a single one can land low.
log "sgemm ceiling: best of 3 x $BIN/ctrain bench sgemm --threads $THREADS"
GFLOPS=$(for _ in 1 2 3; do "$BIN/ctrain" bench sgemm --threads "$THREADS" || true; done |
         grep '^{' | python3 -c '
import json, sys
rates = [json.loads(l)["gflops"] for l in sys.stdin]
print(max(rates) if rates else "")')
log "sgemm ceiling: ${GFLOPS:-unknown} GFLOP/s"

rows=()
for c in "${CONFIGS[@]}"; do
    eval "$(model_keys "bench/$c.toml")"
    data="data/bench/$c"
    if ! compgen -G "$data/train_*.bin" >/dev/null; then
        log "making $data: $BIN/ctrain data synth --out $data --tokens 2000000 --vocab $V --seed 1"
        "$BIN/ctrain" data synth --out "$data" --tokens 2000000 --vocab "$V" --seed 1 >&2
    fi
    overrides=("train.steps=$STEPS" "log.every=1" "device.threads_per_rank=$THREADS")
    [[ $STEPS -lt 10 ]] && overrides+=("train.warmup_steps=$STEPS")
    metrics=() torchs=()
    for r in $(seq 1 "$RUNS"); do
        m="$tmp/$c.$r.jsonl"
        log "$c run $r/$RUNS: $BIN/ctrain-launch --nproc 1 bench/$c.toml ${overrides[*]}"
        "$BIN/ctrain-launch" --nproc 1 "bench/$c.toml" "${overrides[@]}" \
            "log.dir=\"$tmp/$c.$r\"" "log.metrics=\"$m\"" >&2
        metrics+=("$m")
        if [[ -n "$TORCH_PY" ]]; then
            j="$tmp/$c.$r.torch.json"
            log "$c run $r/$RUNS: OPENBLAS_NUM_THREADS=$THREADS torch_bench.py (L$L H$H C$C V$V T$T B$B)"
            if OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS "$TORCH_PY" \
                scripts/torch_bench.py --layers "$L" --heads "$H" --embd "$C" --vocab "$V" \
                --seq "$T" --batch "$B" --steps "$STEPS" --warmup "$WARMUP" \
                --threads "$THREADS" >"$j"; then
                torchs+=("$j")
            else
                log "torch_bench.py failed for $c (run $r)"
            fi
        fi
    done
    rows+=("$c|$L|$H|$C|$V|$T|$B|$(IFS=,; echo "${metrics[*]}")|$(IFS=,; echo "${torchs[*]:-}")")
done

table=$(python3 - "$GFLOPS" "$THREADS" "$RUNS" "$STEPS" "$WARMUP" "${rows[@]}" <<'EOF'
import json, statistics, sys

gflops, threads, runs, steps, warmup = sys.argv[1:6]
threads, runs, warmup = int(threads), int(runs), int(warmup)
gflops = float(gflops) if gflops else None


def timed_records(path):
    recs = sorted((json.loads(l) for l in open(path) if l.strip()), key=lambda r: r["step"])
    recs = [r for r in recs if "tokens_per_s" in r]
    return recs[warmup:]


def summary(per_run):
    """Median of the runs' medians; min-max over every timed step of every run."""
    meds = [statistics.median(v) for v in per_run if v]
    flat = [x for v in per_run for x in v]
    if not flat:
        return None
    return statistics.median(meds), min(flat), max(flat)


def fmt(s, digits=0):
    if s is None:
        return "n/a"
    return "%.*f (%.*f-%.*f)" % (digits, s[0], digits, s[1], digits, s[2])


print("| config | params | ctrain tokens/s | ms/step | MFU (ctrain) | MFU vs sgemm "
      "| peak RSS MiB | PyTorch tokens/s | ctrain / PyTorch |")
print("|---|---|---|---|---|---|---|---|---|")
for row in sys.argv[6:]:
    name, L, H, C, V, T, B, mfiles, tfiles = row.split("|")
    L, H, C, V, T, B = (int(x) for x in (L, H, C, V, T, B))
    params = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    fpt = 6 * (V * C + 12 * L * C * C) + 12 * L * T * C
    recs = [timed_records(p) for p in mfiles.split(",") if p]
    tps = summary([[r["tokens_per_s"] for r in rr] for rr in recs])
    ms = summary([[r["ms"] for r in rr] for rr in recs])
    mfu_c = summary([[r["mfu"] for r in rr if "mfu" in r] for rr in recs])
    rss = max((r.get("mem_peak_bytes", 0) for rr in recs for r in rr), default=0)
    mfu_s = "n/a"
    if tps and gflops:
        mfu_s = "%.1f%%" % (100.0 * tps[0] * fpt / (gflops * 1e9))
    torch = [json.load(open(p)) for p in tfiles.split(",") if p]
    t = None
    if torch:
        t = (statistics.median(j["tokens_per_s_median"] for j in torch),
             min(j["min"] for j in torch), max(j["max"] for j in torch))
    ratio = "%.2fx" % (tps[0] / t[0]) if (t and tps) else "n/a"
    print("| %s (L%d H%d C%d V%d T%d B%d) | %.1fM | %s | %s | %s | %s | %s | %s | %s |" % (
        name, L, H, C, V, T, B, params / 1e6, fmt(tps), fmt(ms, 1),
        "%.1f%%" % (100 * mfu_c[0]) if mfu_c else "n/a", mfu_s,
        "%.0f" % (rss / 2**20) if rss else "n/a", fmt(t) if t else "n/a", ratio))
print()
print("Medians of %d run%s of %s steps each, the first %d left out as warm-up; (min-max) over "
      "every timed step of every run. One rank, %d threads; PyTorch: scripts/torch_bench.py, "
      "1 process, %d threads (OPENBLAS_NUM_THREADS=%d). MFU vs sgemm = tokens/s x FLOPs/token "
      "(6 x matmul weights incl. the tied head + 12 x L x T x C) / the sgemm ceiling; "
      "peak RSS = max mem_peak_bytes." % (runs, "" if runs == 1 else "s", steps, warmup,
                                         threads, threads, threads))
EOF
)

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
report=$(cat <<EOF
## ctrain benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))

Command: \`scripts/bench.sh --runs $RUNS --threads $THREADS --steps $STEPS ${CONFIGS[*]}\`
Machine: $(nproc) cores, ${cpu:-unknown CPU}; commit $commit (plus uncommitted changes, if any).
sgemm ceiling (1024^3, $THREADS threads, best of 3 \`ctrain bench sgemm\`): ${GFLOPS:-unknown} GFLOP/s.

$table
EOF
)
echo "$report"
if [[ -n "$OUT" ]]; then
    echo "$report" >"$OUT"
    log "wrote $OUT"
fi

#!/usr/bin/env bash
# Throughput benchmark of BENCH.md's reference configurations, side by side with PyTorch.
#
#   scripts/bench.sh [--runs N] [--threads N] [--steps N] [--out FILE] [--no-torch]
#                    [--no-build] [--before DIR] [CONFIG...]
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
# CTRAIN_TORCH_PYTHON=PY makes PY the PyTorch reference (e.g. a venv with PyTorch 2 from PyPI:
# `python3 -m venv V && V/bin/pip install torch numpy`); else python3, then Debian's 1.13.
# --before DIR also measures the binaries in DIR (an older build), each run right after the
# new one on the same data, and adds a table of new / old medians: a before/after in one run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

THREADS=2
BEFORE=
usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-torch) TORCH=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --before) BEFORE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "bench: unknown option '$1'" >&2; usage >&2; exit 2 ;;
        *) CONFIGS+=("$1"); shift ;;
    esac
done
[[ ${#CONFIGS[@]} -gt 0 ]] || CONFIGS=(gpt-mini byte-lm)
if [[ -n "$BEFORE" && ! -x "$BEFORE/ctrain-launch" ]]; then
    echo "bench: --before $BEFORE: no ctrain-launch there" >&2
    exit 2
fi
bench_check_positive "$RUNS" "$THREADS" "$STEPS"
bench_check_steps "$STEPS" "$WARMUP"
bench_check_configs "${CONFIGS[@]}"

bench_build "$BUILD"
bench_find_torch "$TORCH" column

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctrain-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

GFLOPS=$(bench_sgemm_ceiling "$THREADS")

rows=()
for c in "${CONFIGS[@]}"; do
    eval "$(model_keys "bench/$c.toml")"
    bench_synth_data "$c" "$V"
    overrides=("train.steps=$STEPS" "log.every=1" "device.threads_per_rank=$THREADS")
    [[ $STEPS -lt 10 ]] && overrides+=("train.warmup_steps=$STEPS")
    metrics=() torchs=() befores=()
    for r in $(seq 1 "$RUNS"); do
        m="$tmp/$c.$r.jsonl"
        log "$c run $r/$RUNS: $BIN/ctrain-launch --nproc 1 bench/$c.toml ${overrides[*]}"
        "$BIN/ctrain-launch" --nproc 1 "bench/$c.toml" "${overrides[@]}" \
            "log.dir=\"$tmp/$c.$r\"" "log.metrics=\"$m\"" >&2
        metrics+=("$m")
        if [[ -n "$BEFORE" ]]; then
            mb="$tmp/$c.$r.before.jsonl"
            log "$c run $r/$RUNS: $BEFORE/ctrain-launch --nproc 1 bench/$c.toml ${overrides[*]}"
            "$BEFORE/ctrain-launch" --nproc 1 "bench/$c.toml" "${overrides[@]}" \
                "log.dir=\"$tmp/$c.$r.before\"" "log.metrics=\"$mb\"" >&2
            befores+=("$mb")
        fi
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
    rows+=("$c|$L|$H|$C|$V|$T|$B|$(IFS=,; echo "${metrics[*]}")|$(IFS=,; echo "${torchs[*]:-}")|$(IFS=,; echo "${befores[*]:-}")")
done

table=$(bench_py "$GFLOPS" "$THREADS" "$RUNS" "$STEPS" "$WARMUP" "${rows[@]}" <<'EOF'
gflops, threads, runs, steps, warmup = sys.argv[1:6]
threads, runs, warmup = int(threads), int(runs), int(warmup)
gflops = float(gflops) if gflops else None

print("| config | params | ctrain tokens/s | ms/step | MFU (ctrain) | MFU vs sgemm "
      "| peak RSS MiB | PyTorch tokens/s | ctrain / PyTorch |")
print("|---|---|---|---|---|---|---|---|---|")
for row in sys.argv[6:]:
    name, L, H, C, V, T, B, mfiles, tfiles, bfiles = row.split("|")
    L, H, C, V, T, B = (int(x) for x in (L, H, C, V, T, B))
    params = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    fpt = 6 * (V * C + 12 * L * C * C) + 12 * L * T * C
    recs = [timed_records(p, warmup) for p in mfiles.split(",") if p]
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
before_rows = []
for row in sys.argv[6:]:
    name, L, H, C, V, T, B, mfiles, tfiles, bfiles = row.split("|")
    if not bfiles:
        continue
    new = summary([[r["tokens_per_s"] for r in timed_records(p, warmup)]
                   for p in mfiles.split(",") if p])
    old = summary([[r["tokens_per_s"] for r in timed_records(p, warmup)]
                   for p in bfiles.split(",") if p])
    before_rows.append("| %s | %s | %s | %.3f |" % (name, fmt(old), fmt(new), new[0] / old[0]))
if before_rows:
    print()
    print("| config | before tokens/s | after tokens/s | after / before (medians) |")
    print("|---|---|---|---|")
    print("\n".join(before_rows))
EOF
)

cpu=$(bench_cpu)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
report=$(cat <<EOF
## ctrain benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))

Command: \`scripts/bench.sh --runs $RUNS --threads $THREADS --steps $STEPS${BEFORE:+ --before $BEFORE} ${CONFIGS[*]}\`
Machine: $(nproc) cores, ${cpu:-unknown CPU}; commit $commit (plus uncommitted changes, if any).
sgemm ceiling (1024^3, $THREADS threads, best of 3 \`ctrain bench sgemm\`): ${GFLOPS:-unknown} GFLOP/s.

$table
EOF
)
bench_emit "$report" "$OUT"

#!/usr/bin/env bash
# Checkpoint save/load throughput (docs/performance.md, "Checkpoints"), BENCH.md's protocol:
# medians of --runs runs (default 3) with min-max, the command and the machine printed with
# the table.
#
#   scripts/bench_ckpt.sh [--runs N] [--levels 1,3,9] [--shuffle off,on,auto] [--threads T]
#                         [--params N] [--steps K] [--dir D] [--out FILE] [--no-build]
#                         [--before DIR] [--dcp PYTHON]
#
# Builds (scripts/build.sh) unless --no-build, then runs `ctrain bench ckpt`: the gpt2-124m
# state (GPT-2 init + K real AdamW steps, default 3; or --params N synthetic params) written
# as one rank file per zstd level and shuffle mode (writer + fsync, as the trainer saves) and
# read back (ct_ckpt_read_range, as resume reads) after evicting the page cache. Needs about
# 6 GB of memory and 1.5 GB free in D (default runs/bench/ckpt). Prints a Markdown table on
# stdout (and to --out FILE); progress goes to stderr. CTRAIN_BIN=DIR measures the binaries
# in DIR instead of build/bin (use with --no-build).
#
# Before and after in one run: --before DIR also measures DIR/ctrain (e.g. a build of an
# older commit) with the same flags, and --dcp PYTHON (a python with PyTorch 2) measures
# PyTorch's distributed checkpoint on the same 1.49 GB state (scripts/bench_dcp.py: dcp.save,
# uncompressed, and dcp.load cold, after the same eviction, and warm). Then the N runs are N
# rounds, each running every binary (and DCP) once in turn, so that a machine whose speed
# drifts affects all alike; each figure is the median (min-max) over the rounds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${CTRAIN_BIN:-build/bin}
RUNS=3
BUILD=1
OUT=""
BEFORE=""
DCP=""
ARGS=()
usage() { sed -n '2,23s/^# \{0,1\}//p' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --levels|--shuffle|--threads|--params|--steps|--dir) ARGS+=("$1" "$2"); shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --before) BEFORE=$2; shift 2 ;;
        --dcp) DCP=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_ckpt: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "bench_ckpt: --runs '$RUNS' is not a positive integer" >&2; exit 2; }
[[ $BUILD -eq 0 ]] || scripts/build.sh >&2
[[ -x "$BIN/ctrain" ]] || { echo "bench_ckpt: $BIN/ctrain is missing: run scripts/build.sh" >&2; exit 1; }
[[ -z "$BEFORE" || -x "$BEFORE/ctrain" ]] || { echo "bench_ckpt: $BEFORE/ctrain is missing" >&2; exit 2; }
[[ -z "$DCP" ]] || "$DCP" -c 'import torch.distributed.checkpoint' 2>/dev/null ||
    { echo "bench_ckpt: $DCP has no torch.distributed.checkpoint (PyTorch 2)" >&2; exit 2; }

machine() {
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

if [[ -z "$BEFORE" && -z "$DCP" ]]; then
    CMD=("$BIN/ctrain" bench ckpt --runs "$RUNS" "${ARGS[@]}")
    echo "bench_ckpt: ${CMD[*]}" >&2
    RAW=$("${CMD[@]}")
    echo "$RAW" >&2
    {
        echo "Command: \`${CMD[*]}\`"
        machine
        echo "$RAW" | sed -n 's/^# \(ctrain bench ckpt: .*\)/\1/p; s/^# \(state: .*\)/\1/p; s/^# \(page cache .*\)/\1/p'
        echo
        echo "| zstd level | shuffle | ratio (compressed / raw) | shuffled frames | save s | save GB/s, median (min-max) | load s | load GB/s, median (min-max) |"
        echo "|---|---|---|---|---|---|---|---|"
        echo "$RAW" | awk '!/^#/ && NF >= 9 {
            printf "| %s | %s | %s | %s | %s | %s %s | %s | %s %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }'
    } | if [[ -n "$OUT" ]]; then tee "$OUT"; else cat; fi
    exit 0
fi

# Rounds: each binary (and DCP) once per round; every result row goes to $ROWS as
# "label level shuffle ratio save_GB/s load_GB/s warm_GB/s|-".
ROWS=$(mktemp)
HEAD=$(mktemp)
trap 'rm -f "$ROWS" "$HEAD"' EXIT
DIR=runs/bench/ckpt
for ((i = 0; i < ${#ARGS[@]}; i += 2)); do [[ "${ARGS[i]}" == --dir ]] && DIR=${ARGS[i + 1]}; done
LABELS=()
[[ -z "$BEFORE" ]] || LABELS+=("before:$BEFORE")
LABELS+=("after:$BIN")
echo "Command: \`scripts/bench_ckpt.sh --runs $RUNS ${ARGS[*]} --before ${BEFORE:-(none)} --dcp ${DCP:-(none)}\` (after = $BIN)" > "$HEAD"
machine >> "$HEAD"
# Runs "$@" for round $round and prints its output (also to stderr); on the first round notes
# the command, and the lines of its output that the sed script $2 prints, in $HEAD.
run_one() {
    local label=$1 keep=$2 raw
    shift 2
    echo "bench_ckpt: round $round/$RUNS, $label: $*" >&2
    raw=$("$@")
    echo "$raw" >&2
    if [[ $round -eq 1 ]]; then
        echo "$label: \`$*\` per round" >> "$HEAD"
        echo "$raw" | sed -n "$keep" >> "$HEAD"
    fi
    printf '%s\n' "$raw"
}
DCP_CMD=("$DCP" scripts/bench_dcp.py --dir "$DIR" --runs 1)
for ((i = 0; i < ${#ARGS[@]}; i += 2)); do
    [[ "${ARGS[i]}" == --threads ]] && DCP_CMD+=(--threads "${ARGS[i + 1]}")
done
for ((round = 1; round <= RUNS; round++)); do
    for entry in "${LABELS[@]}"; do
        label=${entry%%:*} dir=${entry#*:}
        run_one "$label" "s/^# \(ctrain bench ckpt: .*\)/$label: \1/p; s/^# \(page cache .*\)/$label: \1/p" \
            "$dir/ctrain" bench ckpt --runs 1 "${ARGS[@]}" |
            awk -v l="$label" '!/^#/ && NF >= 9 { print l, $1, $2, $3, $6, $9, "-" }' >> "$ROWS"
    done
    [[ -n "$DCP" ]] || continue
    run_one dcp 's/^# \(dcp: .*\)/\1/p; s/^# \(dcp page cache .*\)/\1/p' "${DCP_CMD[@]}" |
        awk '/^# dcp ratio/ { r = $4 } /^# dcp save/ { s = $4 }
             /^# dcp load cold/ { c = $5 } /^# dcp load warm/ { w = $5 }
             END { print "dcp", "-", "-", r, s, c, w }' >> "$ROWS"
done

{
    cat "$HEAD"
    echo
    echo "| what | zstd level | shuffle | ratio (file / raw) | save GB/s, median (min-max) | load GB/s cold, median (min-max) | load GB/s warm, median (min-max) |"
    echo "|---|---|---|---|---|---|---|"
    python3 - "$ROWS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, level, shuffle, ratio, save, cold, warm = line.split()
    r = rows.setdefault((label, level, shuffle), {"ratio": ratio, "save": [], "cold": [], "warm": []})
    r["save"].append(float(save)), r["cold"].append(float(cold))
    if warm != "-":
        r["warm"].append(float(warm))
names = {"before": "ctrain before", "after": "ctrain after", "dcp": "PyTorch DCP (uncompressed)"}
def fig(v):
    return f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" if v else "-"
for (label, level, shuffle), r in rows.items():
    print(f"| {names[label]} | {level} | {shuffle} | {r['ratio']} | {fig(r['save'])} | "
          f"{fig(r['cold'])} | {fig(r['warm'])} |")
PY
} | if [[ -n "$OUT" ]]; then tee "$OUT"; else cat; fi

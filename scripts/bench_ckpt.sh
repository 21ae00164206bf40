#!/usr/bin/env bash
# Checkpoint save/load throughput (docs/performance.md, "Checkpoints"), BENCH.md's protocol:
# medians of --runs runs (default 3) with min-max, the command and the machine printed with
# the table.
#
#   scripts/bench_ckpt.sh [--runs N] [--levels 1,3,9] [--shuffle off,on,auto] [--threads T]
#                         [--params N] [--steps K] [--dir D] [--out FILE] [--no-build]
#
# Builds (scripts/build.sh) unless --no-build, then runs `ctrain bench ckpt`: the gpt2-124m
# state (GPT-2 init + K real AdamW steps, default 3; or --params N synthetic params) written
# as one rank file per zstd level and shuffle mode (writer + fsync, as the trainer saves) and
# read back (ct_ckpt_read_range, as resume reads) after evicting the page cache. Needs about
# 6 GB of memory and 1.5 GB free in D (default runs/bench/ckpt). Prints a Markdown table on
# stdout (and to --out FILE); progress goes to stderr. CTRAIN_BIN=DIR measures the binaries
# in DIR instead of build/bin (use with --no-build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${CTRAIN_BIN:-build/bin}
RUNS=3
BUILD=1
OUT=""
ARGS=()
usage() { sed -n '2,15s/^# \{0,1\}//p' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --levels|--shuffle|--threads|--params|--steps|--dir) ARGS+=("$1" "$2"); shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_ckpt: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "bench_ckpt: --runs '$RUNS' is not a positive integer" >&2; exit 2; }
[[ $BUILD -eq 0 ]] || scripts/build.sh >&2
[[ -x "$BIN/ctrain" ]] || { echo "bench_ckpt: $BIN/ctrain is missing: run scripts/build.sh" >&2; exit 1; }

CMD=("$BIN/ctrain" bench ckpt --runs "$RUNS" "${ARGS[@]}")
echo "bench_ckpt: ${CMD[*]}" >&2
RAW=$("${CMD[@]}")
echo "$RAW" >&2

{
    echo "Command: \`${CMD[*]}\`"
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$RAW" | sed -n 's/^# \(ctrain bench ckpt: .*\)/\1/p; s/^# \(state: .*\)/\1/p; s/^# \(page cache .*\)/\1/p'
    echo
    echo "| zstd level | shuffle | ratio (compressed / raw) | shuffled frames | save s | save GB/s, median (min-max) | load s | load GB/s, median (min-max) |"
    echo "|---|---|---|---|---|---|---|---|"
    echo "$RAW" | awk '!/^#/ && NF >= 9 {
        printf "| %s | %s | %s | %s | %s | %s %s | %s | %s %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }'
} | if [[ -n "$OUT" ]]; then tee "$OUT"; else cat; fi

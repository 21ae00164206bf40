#!/usr/bin/env bash
# ctrain in fp32 and bf16 against PyTorch 2's recipes on the same model, batch and threads,
# in one run (docs/performance.md, "Mixed precision"):
#
#   CTRAIN_TORCH_PYTHON=/path/venv/bin/python scripts/bench_precision.sh [--no-build]
#       [--steps N] [--out FILE] [CONFIG...]          (CONFIG: gpt-mini byte-lm by default)
#
# Rows per configuration, 1 process x 2 threads each: ctrain fp32 (OpenBLAS), ctrain bf16
# (precision.compute=bf16: native bf16 GEMMs on oneDNN where the CPU has AMX, else portable),
# ctrain bf16 with activation_checkpointing=selective, and PyTorch eager fp32, torch.compile
# fp32, torch.compile + bf16 autocast + SDPA + fused AdamW (scripts/torch_bench.py). tokens/s
# are medians over the steps after the first 3 (BENCH.md). The PyTorch rows need a PyTorch 2:
# $CTRAIN_TORCH_PYTHON, else python3 (`python3 -m venv V && V/bin/pip install torch numpy`
# where PyPI is reachable); without one they are left out and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=bench_precision
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
STEPS=13
while [[ $# -gt 0 ]]; do
    case "$1" in
    --no-build) BUILD=0 ;;
    --steps) STEPS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "$BENCH_NAME: unknown option $1" >&2; exit 2 ;;
    *) CONFIGS+=("$1") ;;
    esac
    shift
done
[[ ${#CONFIGS[@]} -gt 0 ]] || CONFIGS=(gpt-mini byte-lm)
bench_check_positive "$STEPS"
bench_check_steps "$STEPS" "$WARMUP"
bench_check_configs "${CONFIGS[@]}"
bench_build "$BUILD"
bench_find_torch 1 "rows"
WORK=build/bench-precision
mkdir -p "$WORK/runs"

# ctrain_row CONFIG NAME OVERRIDE...: median tokens/s of a 1 x 2 run, printed.
ctrain_row() {
    local config=$1 name=$2 dir="$WORK/runs/$1-$2"
    shift 2
    rm -rf "$dir"
    "$BIN/ctrain-launch" --nproc 1 "bench/$config.toml" "log.dir=$dir" "train.steps=$STEPS" \
        train.warmup_steps=1 log.every=1 checkpoint.every=0 device.threads_per_rank=2 "$@" \
        > "$dir.log" 2>&1 || { log "$config $name failed: see $dir.log"; echo "failed"; return; }
    bench_py "$dir/metrics.jsonl" "$WARMUP" <<'EOF'
recs = timed_records(sys.argv[1], int(sys.argv[2]))
print("%.0f" % statistics.median(r["tokens_per_s"] for r in recs))
EOF
}

# torch_row CONFIG FLAG...: median tokens/s of scripts/torch_bench.py with FLAGs, printed.
torch_row() {
    local config=$1 out
    shift
    eval "$(model_keys "bench/$config.toml")"
    out=$(OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 "$TORCH_PY" scripts/torch_bench.py \
        --layers "$L" --heads "$H" --embd "$C" --vocab "$V" --seq "$T" --batch "$B" \
        --threads 2 --steps "$STEPS" --warmup "$WARMUP" "$@" 2>"$WORK/torch-$config.log" |
        tail -n 1) || { log "torch $config $* failed: see $WORK/torch-$config.log"; echo "failed"; return; }
    python3 -c 'import json,sys; print("%.0f" % json.loads(sys.argv[1])["tokens_per_s_median"])' "$out"
}

HEADER=$(IFS='|'; echo "${CONFIGS[*]}")
REPORT="| tokens/s, 1 process x 2 threads | ${HEADER//|/ | } |
|---|$(for _ in "${CONFIGS[@]}"; do printf -- '---|'; done)"
declare -A CELL
ROWS=("ctrain fp32 (OpenBLAS)" "ctrain bf16" "ctrain bf16, selective recompute")
[[ -n "$TORCH_PY" ]] && ROWS+=("PyTorch $TORCH_VER eager fp32" "PyTorch torch.compile fp32"
    "PyTorch torch.compile + bf16 autocast + SDPA + fused AdamW")
for config in "${CONFIGS[@]}"; do
    eval "$(model_keys "bench/$config.toml")"
    bench_synth_data "$config" "$V"
    log "$config: ctrain fp32, bf16, bf16 + selective"
    CELL["$config|0"]=$(ctrain_row "$config" fp32)
    CELL["$config|1"]=$(ctrain_row "$config" bf16 precision.compute=bf16)
    CELL["$config|2"]=$(ctrain_row "$config" bf16-selective precision.compute=bf16 \
        memory.activation_checkpointing=selective)
    if [[ -n "$TORCH_PY" ]]; then
        log "$config: PyTorch eager fp32, compile fp32, compile + bf16 + sdpa + fused"
        CELL["$config|3"]=$(torch_row "$config")
        CELL["$config|4"]=$(torch_row "$config" --compile)
        CELL["$config|5"]=$(torch_row "$config" --compile --amp bf16 --sdpa --fused)
    fi
done
for i in "${!ROWS[@]}"; do
    line="| ${ROWS[$i]} |"
    for config in "${CONFIGS[@]}"; do line+=" ${CELL["$config|$i"]} |"; done
    REPORT+=$'\n'"$line"
done
REPORT+=$'\n\n'"CPU: $(bench_cpu); $STEPS steps, the first $WARMUP left out; scripts/bench_precision.sh"
bench_emit "$REPORT" "$OUT"

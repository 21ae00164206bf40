#!/usr/bin/env bash
# The numbers a refactoring must not change: scripts/run_digest.sh [BIN_DIR] > digest.txt
#
# Runs, on this machine, bench/gpt-mini.toml for 5 steps at 1 rank, a tiny GPT with every
# strategy at world size 3, that tiny GPT stopped after 4 steps and resumed (fsdp, world 3),
# and its step-4 checkpoint resharded to zero2 at world size 2; then prints, per run, the
# sha256 of final.bin and every metrics row's step, loss, grad_norm, batch_hash and comm_bytes.
# Timings, memory and checkpoint files are left out (they may change; the numbers may not).
# Compare two digests with diff: equal text means bitwise the same weights and rows.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$root/build/bin}
work=$(mktemp -d "${TMPDIR:-/tmp}/ctrain-digest.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

"$bin/ctrain" data synth --out "$work/mini" --tokens 200000 --vocab 50257 --seed 1 >/dev/null
"$bin/ctrain" data synth --out "$work/tiny" --tokens 20000 --vocab 64 --seed 3 >/dev/null

tiny_job() { # FILE STRATEGY RUN_DIR
    cat >"$1" <<TOML
[model]
n_layer = 2
n_head = 2
n_embd = 32
vocab_size = 64
seq_len = 16
[data]
train = "$work/tiny/train_*.bin"
shuffle = true
[train]
batch_size = 2
grad_accum = 2
steps = 8
lr = 3e-3
warmup_steps = 2
grad_clip = 0.5
seed = 7
[parallel]
strategy = "$2"
bucket_mb = 0.02
[log]
dir = "$3"
every = 1
[checkpoint]
every = 4
resume = "auto"
[device]
threads_per_rank = 1
TOML
}

digest() { # NAME RUN_DIR
    echo "== $1"
    sha256sum <"$2/final.bin" | cut -d' ' -f1
    python3 - "$2/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["step"], repr(r["loss"]), repr(r["grad_norm"]), r["batch_hash"],
          json.dumps(r["comm_bytes"], sort_keys=True))
PY
}

quiet() { "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; exit 1; }; }

quiet "$bin/ctrain-launch" --nproc 1 "$root/bench/gpt-mini.toml" "data.train=$work/mini/train_*.bin" \
    train.steps=5 train.warmup_steps=2 "log.dir=$work/gpt-mini" device.threads_per_rank=2
digest "gpt-mini 5 steps, 1 rank x 2 threads" "$work/gpt-mini"

for strategy in ddp zero1 zero2 fsdp hsdp; do
    tiny_job "$work/$strategy.toml" "$strategy" "$work/$strategy"
    quiet mpirun --oversubscribe -np 3 "$bin/ctrain" worker "$work/$strategy.toml"
    digest "tiny $strategy, world 3" "$work/$strategy"
done

tiny_job "$work/resume.toml" fsdp "$work/resume"
CTRAIN_STOP_AFTER=4 quiet mpirun --oversubscribe -np 3 -x CTRAIN_STOP_AFTER \
    "$bin/ctrain" worker "$work/resume.toml"
quiet mpirun --oversubscribe -np 3 "$bin/ctrain" worker "$work/resume.toml"
digest "tiny fsdp, world 3, stopped after 4 and resumed" "$work/resume"

# world 3 x batch 2 x accum 2 = 12 sequences = world 2 x batch 3 x accum 2
tiny_job "$work/reshard.toml" zero2 "$work/reshard"
quiet mpirun --oversubscribe -np 2 "$bin/ctrain" worker "$work/reshard.toml" train.batch_size=3 \
    "checkpoint.resume=$work/resume/ckpt/step_00000004" "checkpoint.dir=$work/reshard/ckpt"
digest "tiny: the fsdp world-3 step-4 checkpoint resharded to zero2, world 2" "$work/reshard"

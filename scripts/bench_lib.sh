# Shell helpers shared by scripts/bench.sh and scripts/bench_dist.sh, sourced by both:
# the defaults of the options both take, argument checks, the build and binary check, the python that has torch, a job file's model
# keys, the sgemm ceiling, the synthetic data, the Python statistics the summaries share
# (BENCH_PY_STATS, run through bench_py) and the report's output.
#
# Set BENCH_NAME (the prefix of every message) before sourcing; the functions read BIN
# (the directory of ctrain and ctrain-launch) where they say so. Run from the repository root.
# shellcheck shell=bash

# The options both scripts take, with their defaults (each script parses its own command line),
# and the binaries to measure.
# shellcheck disable=SC2034
{
    RUNS=1
    STEPS=13
    WARMUP=3  # first steps of every run left out of the figures
    OUT=""
    TORCH=1
    BUILD=1
    CONFIGS=()
}
BIN=${CTRAIN_BIN:-build/bin}  # another build to measure: CTRAIN_BIN=build-x/bin

log() { echo "$BENCH_NAME: $*" >&2; }

# Exits 2 unless every argument is a positive integer.
bench_check_positive() {
    local n
    for n in "$@"; do
        [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: '$n' is not a positive integer" >&2; exit 2; }
    done
}

# bench_check_steps STEPS WARMUP: exits 2 unless there are steps left after the warm-up.
bench_check_steps() {
    if [[ $1 -le $2 ]]; then
        echo "$BENCH_NAME: --steps must exceed the $2 warm-up steps" >&2
        exit 2
    fi
}

# Exits 2 unless each argument names a bench/CONFIG.toml.
bench_check_configs() {
    local c
    for c in "$@"; do
        [[ -f "bench/$c.toml" ]] || { echo "$BENCH_NAME: no bench/$c.toml" >&2; exit 2; }
    done
}

# bench_build BUILD: runs scripts/build.sh when BUILD is 1, then exits 1 unless $BIN holds
# ctrain and ctrain-launch.
bench_build() {
    local b
    if [[ $1 -eq 1 ]]; then
        scripts/build.sh >&2
    fi
    for b in ctrain ctrain-launch; do
        [[ -x "$BIN/$b" ]] || { log "$BIN/$b is missing: run scripts/build.sh"; exit 1; }
    done
}

# The first python that can import torch, or nothing (as torch_gpt.py looks for it):
# $CTRAIN_TORCH_PYTHON when set (e.g. a venv with PyTorch 2 from PyPI, the reference BENCH.md
# asks for), then python3, then /usr/bin/python3 (Debian's python3-torch, PyTorch 1.13).
torch_python() {
    local p
    for p in ${CTRAIN_TORCH_PYTHON:+"$CTRAIN_TORCH_PYTHON"} python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then
            command -v "$p"
            return 0
        fi
    done
    return 1
}

# bench_find_torch TORCH WHAT: when TORCH is 1, sets TORCH_PY and TORCH_VER to the python
# with torch and its version and logs them, or logs that there will be no PyTorch WHAT;
# both stay empty otherwise.
bench_find_torch() {
    TORCH_PY=""
    TORCH_VER=""
    if [[ $1 -eq 1 ]]; then
        if TORCH_PY=$(torch_python); then
            TORCH_VER=$("$TORCH_PY" -c 'import torch; print(torch.__version__)')
            log "PyTorch reference: $TORCH_PY ($TORCH_VER)"
        else
            log "no python with torch (scripts/install-deps.sh --with-torch): no PyTorch $2"
            TORCH_PY=""
        fi
    fi
}

# Model keys of a job file as shell assignments: L= H= C= V= T= B= A= (A = grad_accum)
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
print("L=%s H=%s C=%s V=%s T=%s B=%s A=%s" % (m["n_layer"], m["n_head"], m["n_embd"],
      m["vocab_size"], m["seq_len"], t["batch_size"], t.get("grad_accum", 1)))
EOF
}

# bench_sgemm_ceiling THREADS: prints the best of 3 `$BIN/ctrain bench sgemm` GFLOP/s (nothing
# when none ran); on a shared host a single measurement can land low.
bench_sgemm_ceiling() {
    local gflops
    log "sgemm ceiling: best of 3 x $BIN/ctrain bench sgemm --threads $1"
    gflops=$(for _ in 1 2 3; do "$BIN/ctrain" bench sgemm --threads "$1" || true; done |
             grep '^{' | python3 -c '
import json, sys
rates = [json.loads(l)["gflops"] for l in sys.stdin]
print(max(rates) if rates else "")')
    log "sgemm ceiling: ${gflops:-unknown} GFLOP/s"
    echo "$gflops"
}

# bench_synth_data CONFIG VOCAB: makes data/bench/CONFIG with $BIN/ctrain data synth when it
# has no train shards.
bench_synth_data() {
    local data="data/bench/$1"
    if ! compgen -G "$data/train_*.bin" >/dev/null; then
        log "making $data: $BIN/ctrain data synth --out $data --tokens 2000000 --vocab $2 --seed 1"
        "$BIN/ctrain" data synth --out "$data" --tokens 2000000 --vocab "$2" --seed 1 >&2
    fi
}

# Python both summaries start with: a metrics file's timed records and the median (min-max)
# of per-step figures over runs.
BENCH_PY_STATS=$(cat <<'EOF'
import json, statistics, sys


def timed_records(path, warmup):
    """The records of a metrics file that carry timings, by step, the first warmup left out."""
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


EOF
)

# bench_py ARG...: runs the Python program on stdin after BENCH_PY_STATS, with sys.argv[1:]
# the arguments.
bench_py() {
    python3 -c "$BENCH_PY_STATS
$(cat)" "$@"
}

# The machine's CPU model name, or nothing.
bench_cpu() {
    sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1
}

# bench_emit REPORT OUT: prints the report, and writes it to OUT when OUT is not empty.
bench_emit() {
    echo "$1"
    if [[ -n "$2" ]]; then
        echo "$1" >"$2"
        log "wrote $2"
    fi
}

#!/usr/bin/env bash
# Multi-rank benchmark (issue 3): ctrain's parallel strategies side by side with PyTorch.
#
#   scripts/bench_dist.sh [--runs N] [--steps N] [--out FILE] [--no-torch] [--no-build]
#                         [CONFIG...]
#
# CONFIG names a bench/CONFIG.toml (default: gpt-mini). For each one it makes the synthetic
# data when missing, then, N times (--runs, default 1; BENCH.md's figures are medians of 3),
# trains --steps steps (default 13) with log.every=1 in these layouts, one at a time:
#   1 rank x 2 threads (the single-rank baseline), 1 rank x 1 thread,
#   2 ranks x 1 thread for each of ddp, zero1, zero2, fsdp, hsdp (shard_group_size 2).
# When a python with torch is found (python3, /usr/bin/python3) the same run also measures
# PyTorch on the same model and per-rank batch: 1 process x 1 and x 2 threads
# (scripts/torch_bench.py), and DDP, DDP + ZeroRedundancyOptimizer and FSDP (where the
# torch version runs it on CPU) over gloo with 2 processes x 1 thread
# (scripts/torch_bench_dist.py). The first 3 steps of every run are warm-up and left out.
#
# Reports tokens/s (whole job) and ms/step (median, min-max), MFU against the all-core sgemm
# ceiling, weak-scaling efficiency tokens/s(2x1) / (2 x tokens/s(1x1)), rank 0's peak RSS,
# model_state_bytes against each strategy's formula, per-step comm_bytes against the
# theoretical traffic, and ctrain / PyTorch ratios. Markdown on stdout (and to --out FILE);
# progress on stderr. CTRAIN_BIN=DIR measures the binaries in DIR instead of build/bin.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench_dist
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

ARGS=("$@")
usage() { sed -n '2,23s/^# \{0,1\}//p' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=${2:-}; shift 2 ;;
        --steps) STEPS=${2:-}; shift 2 ;;
        --out) OUT=${2:-}; shift 2 ;;
        --no-torch) TORCH=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "bench_dist: unknown option '$1'" >&2; usage >&2; exit 2 ;;
        *) CONFIGS+=("$1"); shift ;;
    esac
done
[[ ${#CONFIGS[@]} -gt 0 ]] || CONFIGS=(gpt-mini)
bench_check_positive "$RUNS" "$STEPS"
bench_check_steps "$STEPS" "$WARMUP"
bench_check_configs "${CONFIGS[@]}"

bench_build "$BUILD"
command -v mpirun >/dev/null || { log "mpirun is not on PATH (apt-get install openmpi-bin)"; exit 1; }
bench_find_torch "$TORCH" rows

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctrain-bench-dist.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

CORES=$(nproc)
GFLOPS=$(bench_sgemm_ceiling "$CORES")

# Layouts: name nproc threads strategy [extra override]
LAYOUTS=(
    "1x2|1|2|ddp|"
    "1x1|1|1|ddp|"
    "2x1 ddp|2|1|ddp|"
    "2x1 zero1|2|1|zero1|"
    "2x1 zero2|2|1|zero2|"
    "2x1 fsdp|2|1|fsdp|"
    "2x1 hsdp|2|1|hsdp|parallel.shard_group_size=2"
)

# Every measurement as one line of a manifest the summary reads:
#   config|kind|layout|nproc|threads|strategy|file     (kind: ctrain, torch1, torchdist)
manifest="$tmp/manifest"
: >"$manifest"
failures=0
for c in "${CONFIGS[@]}"; do
    eval "$(model_keys "bench/$c.toml")"
    bench_synth_data "$c" "$V"
    echo "config|$c|$L|$H|$C|$V|$T|$B|$A" >>"$manifest"
    base=("train.steps=$STEPS" "log.every=1")
    [[ $STEPS -lt 10 ]] && base+=("train.warmup_steps=$STEPS")
    for r in $(seq 1 "$RUNS"); do
        i=0
        for spec in "${LAYOUTS[@]}"; do
            IFS='|' read -r name np th strat extra <<<"$spec"
            i=$((i + 1))
            m="$tmp/$c.$r.$i.jsonl"
            ov=("${base[@]}" "device.threads_per_rank=$th" "parallel.strategy=$strat")
            [[ -n "$extra" ]] && ov+=("$extra")
            log "$c run $r/$RUNS [$name]: $BIN/ctrain-launch --nproc $np bench/$c.toml ${ov[*]}"
            if "$BIN/ctrain-launch" --nproc "$np" "bench/$c.toml" "${ov[@]}" \
                "log.dir=\"$tmp/$c.$r.$i\"" "log.metrics=\"$m\"" >&2 && [[ -s "$m" ]]; then
                echo "ctrain|$c|$name|$np|$th|$strat|$m" >>"$manifest"
            else
                log "$c run $r [$name] failed"
                failures=$((failures + 1))
            fi
        done
        if [[ -n "$TORCH_PY" ]]; then
            shape=(--layers "$L" --heads "$H" --embd "$C" --vocab "$V" --seq "$T" --batch "$B"
                   --steps "$STEPS" --warmup "$WARMUP")
            for th in 1 2; do
                j="$tmp/$c.$r.torch1x$th.json"
                log "$c run $r/$RUNS [PyTorch 1x$th]: OPENBLAS_NUM_THREADS=$th torch_bench.py"
                if OPENBLAS_NUM_THREADS=$th OMP_NUM_THREADS=$th "$TORCH_PY" \
                    scripts/torch_bench.py "${shape[@]}" --threads "$th" >"$j"; then
                    echo "torch1|$c|1x$th|1|$th|-|$j" >>"$manifest"
                else
                    log "torch_bench.py failed for $c 1x$th (run $r)"
                fi
            done
            j="$tmp/$c.$r.torchdist.json"
            log "$c run $r/$RUNS [PyTorch 2x1 ddp, zero, fsdp]: torch_bench_dist.py"
            if "$TORCH_PY" scripts/torch_bench_dist.py "${shape[@]}" --nproc 2 --threads 1 \
                >"$j"; then
                echo "torchdist|$c|2x1|2|1|-|$j" >>"$manifest"
            else
                log "torch_bench_dist.py failed for $c (run $r)"
            fi
        fi
    done
done

table=$(bench_py "$manifest" "$GFLOPS" "$RUNS" "$STEPS" "$WARMUP" "$TORCH_VER" <<'EOF'
from collections import defaultdict

manifest, gflops, runs, steps, warmup, torch_ver = sys.argv[1:7]
runs, warmup = int(runs), int(warmup)
gflops = float(gflops) if gflops else None
MiB = 2.0 ** 20
STRATS = ["ddp", "zero1", "zero2", "fsdp", "hsdp"]
TARGET = {"gpt-mini": 1.5, "byte-lm": 1.0}


def mib(x):
    return "%.1f" % (x / MiB)


def pct(x):
    return "%.1f%%" % (100.0 * x)


configs, ctrain, torch1, torchdist = [], defaultdict(list), defaultdict(list), defaultdict(list)
for line in open(manifest):
    f = line.rstrip("\n").split("|")
    if f[0] == "config":
        configs.append((f[1],) + tuple(int(x) for x in f[2:]))
    elif f[0] == "ctrain":
        ctrain[(f[1], f[2])].append((int(f[3]), int(f[4]), f[5], timed_records(f[6], warmup)))
    elif f[0] == "torch1":
        torch1[(f[1], f[2])].append(json.load(open(f[6])))
    elif f[0] == "torchdist":
        torchdist[f[1]].append(json.load(open(f[6])))

for name, L, H, C, V, T, B, A in configs:
    units = [V * C + T * C + 2 * C] + [12 * C * C + 13 * C] * L  # embedding unit, blocks
    psi = sum(units)
    fpt = 6 * (V * C + 12 * L * C * C) + 12 * L * T * C

    def padded(n):  # each unit padded to a multiple of n
        return sum(-(-u // n) * n for u in units)

    def mem_formula(strat, n):
        if n == 1:
            return 16 * psi
        g = n  # hsdp: shard_group_size 2 = the whole world here
        return {"ddp": 16 * psi, "zero1": 8 * psi + 8 * padded(n) // n,
                "zero2": 4 * psi + 12 * padded(n) // n, "fsdp": 16 * padded(n) // n,
                "hsdp": 16 * padded(g) // g}[strat]

    def traffic(strat, n):
        """Theoretical bytes per step on one rank, scalars left out."""
        t = {"allreduce": 0, "reduce_scatter": 0, "allgather": 0, "broadcast": 0}
        if n == 1:
            return t
        if strat == "ddp":
            t["allreduce"] = 4 * psi
        elif strat in ("zero1", "zero2"):
            t["reduce_scatter"] = t["allgather"] = 4 * padded(n)
        else:  # fsdp, hsdp with one group of n: 2 gathers per micro-batch, 1 reduce-scatter
            g = n
            t["allgather"] = 8 * padded(g) * A
            t["reduce_scatter"] = 4 * padded(g)
            if n // g > 1:
                t["allreduce"] = 4 * padded(g) // g
        return t

    print("### %s (L%d H%d C%d V%d T%d, batch %d x %d per rank, grad_accum %d): Psi = %d "
          "params, %.2f MFLOP/token" % (name, L, H, C, V, T, B, T, A, psi, fpt / 1e6))
    print()
    print("| system | layout (ranks x threads) | strategy | tokens/s, median (min-max) "
          "| ms/step | MFU vs sgemm | weak scaling vs 1x1 | vs 1x2 | peak RSS rank 0 MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    tps = {}

    def ctrain_row(layout):
        runs_ = ctrain.get((name, layout))
        if not runs_:
            return None
        n, th, strat, _ = runs_[0]
        recs = [rr for _, _, _, rr in runs_]
        s = summary([[r["tokens_per_s"] for r in rr] for rr in recs])
        ms = summary([[r["ms"] for r in rr] for rr in recs])
        rss = max((r.get("mem_peak_bytes", 0) for rr in recs for r in rr), default=0)
        return n, th, strat, recs, s, ms, rss

    rows = {}
    for layout in ["1x2", "1x1"] + ["2x1 " + s for s in STRATS]:
        rows[layout] = ctrain_row(layout)
        if rows[layout] and rows[layout][4]:
            tps[("ctrain", layout)] = rows[layout][4][0]
    one1 = tps.get(("ctrain", "1x1"))
    one2 = tps.get(("ctrain", "1x2"))
    for layout, row in rows.items():
        if row is None:
            print("| ctrain | %s | | failed or not run | | | | | |" % layout.split()[0])
            continue
        n, th, strat, recs, s, ms, rss = row
        eff = "%s" % pct(s[0] / (n * one1)) if (s and one1 and n > 1) else "-"
        vs12 = "%.2fx" % (s[0] / one2) if (s and one2 and layout != "1x2") else "-"
        mfu = pct(s[0] * fpt / (gflops * 1e9)) if (s and gflops) else "n/a"
        print("| ctrain | %dx%d | %s | %s | %s | %s | %s | %s | %s |" % (
            n, th, strat if n > 1 else "(1 rank)", fmt(s), fmt(ms, 1), mfu, eff, vs12,
            "%.0f" % (rss / MiB) if rss else "n/a"))

    tone1 = {}
    for th in (1, 2):
        js = torch1.get((name, "1x%d" % th))
        if not js:
            continue
        s = (statistics.median(j["tokens_per_s_median"] for j in js),
             min(j["min"] for j in js), max(j["max"] for j in js))
        ms = (statistics.median(j["ms_median"] for j in js),
              min(j["ms_min"] for j in js), max(j["ms_max"] for j in js))
        tone1[th] = s[0]
        tps[("PyTorch", "1x%d" % th)] = s[0]
        mfu = pct(s[0] * fpt / (gflops * 1e9)) if gflops else "n/a"
        vs12 = "-"
        print("| PyTorch %s | 1x%d | (1 process) | %s | %s | %s | - | %s | |" % (
            torch_ver, th, fmt(s), fmt(ms, 1), mfu, vs12))
    tnames = {"ddp": "DDP", "zero": "DDP + ZeroRedundancyOptimizer", "fsdp": "FSDP"}
    for lay in ("ddp", "zero", "fsdp"):
        js = [j["layouts"].get(lay, {}) for j in torchdist.get(name, [])]
        ok = [j for j in js if j.get("available")]
        if not js:
            continue
        if not ok:
            print("| PyTorch %s | 2x1 | %s | %s | | | | | |" % (
                torch_ver, tnames[lay], js[0].get("reason", "not available")))
            continue
        s = (statistics.median(j["tokens_per_s_median"] for j in ok),
             min(j["min"] for j in ok), max(j["max"] for j in ok))
        ms = (statistics.median(j["ms_median"] for j in ok),
              min(j["ms_min"] for j in ok), max(j["ms_max"] for j in ok))
        tps[("PyTorch", "2x1 " + lay)] = s[0]
        mfu = pct(s[0] * fpt / (gflops * 1e9)) if gflops else "n/a"
        eff = pct(s[0] / (2 * tone1[1])) if tone1.get(1) else "-"
        vs12 = "%.2fx" % (s[0] / tone1[2]) if tone1.get(2) else "-"
        print("| PyTorch %s | 2x1 | %s (gloo) | %s | %s | %s | %s | %s | |" % (
            torch_ver, tnames[lay], fmt(s), fmt(ms, 1), mfu, eff, vs12))
    print()

    # memory and traffic
    print("| ctrain layout | model_state_bytes rank 0 (MiB) | formula (MiB) | measured / formula "
          "| gathered_bytes (MiB) | all-reduce B/step | reduce-scatter B/step "
          "| all-gather B/step | broadcast B/step | measured - theory (B/step) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layout, row in rows.items():
        if row is None:
            continue
        n, th, strat, recs, s, ms, rss = row
        flat = [r for rr in recs for r in rr]
        if not flat:
            continue
        msb = statistics.median(r.get("model_state_bytes", 0) for r in flat)
        gath = max(r.get("gathered_bytes", 0) for r in flat)
        form = mem_formula(strat, n)
        ratio = msb / form
        mark = "ok" if abs(ratio - 1) <= 0.02 else "OFF"
        theory = traffic(strat, n)
        kinds = ["allreduce", "reduce_scatter", "allgather", "broadcast"]
        cells, diffs = [], []
        for k in kinds:
            vals = sorted({r.get("comm_bytes", {}).get(k, 0) for r in flat})
            meas = "%d" % vals[0] if len(vals) == 1 else "%d-%d" % (vals[0], vals[-1])
            cells.append("%s (theory %d)" % (meas, theory[k]) if theory[k] or vals[-1] else "0")
            d = vals[-1] - theory[k]
            if d:
                diffs.append("%s %+d" % (k.replace("_", "-"), d))
        print("| %s %s | %s | %s | %.4f %s | %s | %s | %s | %s | %s | %s |" % (
            layout.split()[0], strat if n > 1 else "(1 rank)", mib(msb), mib(form), ratio, mark,
            mib(gath), cells[0], cells[1], cells[2], cells[3],
            ", ".join(diffs) if diffs else "0 (exact)"))
    print()
    pads = {n: padded(n) - psi for n in (2,)}
    print("Formulas (fp32 + Adam, Psi = %d, N = 2): ddp 16 Psi, zero1 8 Psi + 8 Psi/N, zero2 "
          "4 Psi + 12 Psi/N, fsdp and hsdp (shard group 2) 16 Psi/N, each unit padded to a "
          "multiple of N (%d padding elements here); 1 rank: 16 Psi. Target: within 2%%. "
          "Theoretical traffic per step on one rank: ddp all-reduce 4 Psi; zero1/zero2 "
          "reduce-scatter 4 Psi + all-gather 4 Psi; fsdp/hsdp 2 all-gathers of 4 Psi per "
          "micro-batch + 1 reduce-scatter of 4 Psi (hsdp with one shard group adds no "
          "all-reduce); nccl-tests byte convention. The 8-byte scalar all-reduces (loss, "
          "squared gradient norm) are the expected difference." % (psi, pads[2]))
    print()

    # ratios
    cbest = max(((v, k[1]) for k, v in tps.items() if k[0] == "ctrain"), default=None)
    tbest = max(((v, k[1]) for k, v in tps.items() if k[0] == "PyTorch"), default=None)
    c2 = max(((v, k[1]) for k, v in tps.items() if k[0] == "ctrain" and k[1][:3] == "2x1"),
             default=None)
    t2 = max(((v, k[1]) for k, v in tps.items() if k[0] == "PyTorch" and k[1][:3] == "2x1"),
             default=None)
    lines = []
    if cbest and tbest:
        tgt = TARGET.get(name)
        lines.append("- best ctrain layout (%s, %.0f tokens/s) / best PyTorch layout (%s, %.0f): "
                     "**%.2fx**%s" % (cbest[1], cbest[0], tbest[1], tbest[0], cbest[0] / tbest[0],
                                      " (target >= %.1fx)" % tgt if tgt else ""))
    if c2 and t2:
        lines.append("- best ctrain 2-rank layout (%s) / best PyTorch 2-process layout (%s): "
                     "%.2fx" % (c2[1], t2[1], c2[0] / t2[0]))
    for cl, tl, label in (("2x1 ddp", "2x1 ddp", "ddp / DDP"),
                          ("2x1 zero1", "2x1 zero", "zero1 / DDP + ZeroRedundancyOptimizer"),
                          ("2x1 fsdp", "2x1 fsdp", "fsdp / FSDP")):
        a, b = tps.get(("ctrain", cl)), tps.get(("PyTorch", tl))
        lines.append("- %s: %s" % (label, "%.2fx" % (a / b) if (a and b) else "n/a"))
    effs = ["%s %s" % (s, pct(tps[("ctrain", "2x1 " + s)] / (2 * one1)))
            for s in STRATS if one1 and ("ctrain", "2x1 " + s) in tps]
    if effs:
        lines.append("- ctrain weak-scaling efficiency 1 -> 2 ranks (target >= 95%%): %s"
                     % ", ".join(effs))
    if lines:
        print("Ratios (medians, this run):")
        print()
        print("\n".join(lines))
        print()

print("Medians of %d run%s of %s steps each, the first %d left out as warm-up; (min-max) over "
      "every timed step of every run. tokens/s counts the whole job (all ranks); ctrain's ms is "
      "rank 0's step, PyTorch's the slowest rank's. Layouts ran one at a time in the order "
      "listed. Weak scaling = tokens/s(2x1) / (2 x tokens/s(1x1)); vs 1x2 = tokens/s / "
      "tokens/s(1 rank x 2 threads), i.e. the same 2 cores used another way. MFU vs sgemm = "
      "tokens/s x FLOPs/token / the all-core sgemm ceiling. Peak RSS is rank 0's "
      "mem_peak_bytes. PyTorch: scripts/torch_bench.py (1 process) and "
      "scripts/torch_bench_dist.py (gloo, processes started by hand, OPENBLAS_NUM_THREADS set "
      "per process), the same model and per-rank batch on random tokens."
      % (runs, "" if runs == 1 else "s", steps, warmup))
EOF
)

cpu=$(bench_cpu)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
[[ -n "$(git status --porcelain 2>/dev/null)" ]] && dirty=" (plus uncommitted changes)"
report=$(cat <<EOF
## ctrain distributed benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))

Command: \`scripts/bench_dist.sh ${ARGS[*]}\`${CTRAIN_BIN:+ with CTRAIN_BIN=$CTRAIN_BIN}
Machine: $CORES cores, ${cpu:-unknown CPU}, load average at the end $(cut -d' ' -f1-3 /proc/loadavg); commit $commit$dirty.
sgemm ceiling (1024^3, $CORES threads, best of 3 \`ctrain bench sgemm\`): ${GFLOPS:-unknown} GFLOP/s.
PyTorch: ${TORCH_VER:-not measured}${TORCH_PY:+ ($TORCH_PY)}.

$table
EOF
)
bench_emit "$report" "$OUT"
if [[ $failures -gt 0 ]]; then
    log "$failures ctrain run(s) failed"
    exit 1
fi

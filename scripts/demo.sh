#!/usr/bin/env bash
# The first thing to run: builds ctrain, turns the King James Bible into byte-level token
# shards (data/kjv/), trains a small GPT-2 on it (examples/demo.toml, a few minutes on two
# cores) and samples from it.
#
#   scripts/demo.sh                       # as shipped
#   scripts/demo.sh train.steps=200       # extra arguments are job.toml overrides
#
# Runs from any directory; steps already done (packages, build, data) are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOB=examples/demo.toml
DATA=data/kjv
PROMPT="And God said"
BIN=build/bin

header() { printf '\n== demo: %s\n' "$*"; }

# Writes the KJV text as UTF-8 to $1. Debian's bible-kjv-text stores it in a compressed
# format of its own (/usr/lib/bible.data) that bible-kjv's `bible` program reads; should a
# release ship it as plain or gzipped text instead, that file is used.
kjv_text() {
    local out=$1 f
    while IFS= read -r f; do
        [[ -f "$f" && "$f" != /usr/share/doc/* ]] || continue
        case "$f" in
            *.gz) gzip -cd "$f" 2>/dev/null | grep -q "In the beginning God created" || continue
                  gzip -cd "$f" >"$out" ;;
            *) grep -q "In the beginning God created" "$f" 2>/dev/null || continue
               cp "$f" "$out" ;;
        esac
        echo "demo: text from $f"
        return 0
    done < <(dpkg -L bible-kjv-text 2>/dev/null)
    if ! command -v bible >/dev/null; then
        echo "demo: no KJV text found: install bible-kjv-text and bible-kjv" >&2
        return 1
    fi
    # -f turns bible's pretty-printing off: one verse a line, "Ge1:1 In the beginning ...";
    # drop the reference so the model sees only the text.
    bible -f Gen1:1-Rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' >"$out"
    if ! head -n 1 "$out" | grep -q "^In the beginning God created" \
        || [[ $(wc -c <"$out") -lt 1000000 ]]; then
        echo "demo: \`bible -f Gen1:1-Rev22:21\` did not print the whole text" >&2
        return 1
    fi
    echo "demo: text from \`bible -f Gen1:1-Rev22:21\` (bible-kjv), references removed"
}

# The run directory: log.dir from the overrides if one is given, else the job's.
run_dir() {
    local dir="" arg
    for arg in "$@"; do
        [[ "$arg" == log.dir=* ]] && dir=${arg#log.dir=}
    done
    if [[ -z "$dir" ]]; then
        dir=$(sed -n 's/^[[:space:]]*dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$JOB" \
              | head -n 1)
    fi
    dir=${dir#[\"\']}
    dir=${dir%[\"\']}
    echo "${dir:-runs/demo}"
}

header "1/4 build (scripts/build.sh)"
scripts/build.sh

header "2/4 data: the King James Bible as byte-level shards in $DATA/"
if compgen -G "$DATA/train_*.bin" >/dev/null && compgen -G "$DATA/val_*.bin" >/dev/null; then
    echo "demo: $DATA already prepared (delete it to prepare again)"
else
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctrain-kjv.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    kjv_text "$tmp/kjv.txt"
    echo "demo: $(wc -c <"$tmp/kjv.txt") bytes, $(wc -l <"$tmp/kjv.txt") verses"
    echo "\$ $BIN/ctrain data prepare $tmp/kjv.txt --out $DATA --val 0.05"
    "$BIN/ctrain" data prepare "$tmp/kjv.txt" --out "$DATA" --val 0.05
fi
ls -l "$DATA"

header "3/4 train $JOB (a few minutes on 2 cores)"
# Each demo run trains from the start and replaces the checkpoints of the run before (without
# these two keys a second run would resume from the first's final checkpoint and have nothing
# left to train); later arguments may override them.
echo "\$ $BIN/ctrain-launch --nproc 1 $JOB checkpoint.resume=never checkpoint.overwrite=true${*:+ $*}"
"$BIN/ctrain-launch" --nproc 1 "$JOB" checkpoint.resume=never checkpoint.overwrite=true "$@"

dir=$(run_dir "$@")
header "4/4 sample from $dir/final.bin"
echo "\$ $BIN/ctrain sample --init $dir/final.bin --prompt \"$PROMPT\" --tokens 300"
"$BIN/ctrain" sample --init "$dir/final.bin" --prompt "$PROMPT" --tokens 300
echo
echo "demo: done. Metrics: $dir/metrics.jsonl; weights: $dir/final.bin (llm.c format)"

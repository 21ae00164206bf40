#!/usr/bin/env bash
# Bad input at the command line, in job files and in data gets a clear message and a non-zero
# exit, never a crash (exit >= 128) or silence. Also checks --help and that
# docs/config.md is exactly what `ctrain config docs` prints.
# usage: cli_errors.sh BIN_DIR SOURCE_DIR
set -u
bin=$1
src=$2
# shellcheck source=tests/cli_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh"

tiny_job "$work/job.toml"

# --help and usage
expect 0 "usage: ctrain-launch" -- "$bin/ctrain-launch" --help
expect 0 "usage: ctrain COMMAND" -- "$bin/ctrain" --help
expect 2 "unknown command 'dta'; did you mean 'data'" -- "$bin/ctrain" dta
expect 2 "unknown option '--bogus'" -- "$bin/ctrain-launch" --bogus "$work/job.toml"
expect 2 "expected a job file" -- "$bin/ctrain-launch"
expect 2 "--nproc needs a positive integer" -- "$bin/ctrain-launch" --nproc zero "$work/job.toml"
expect 2 "--max-restarts needs a non-negative integer, got 'many'" -- \
  "$bin/ctrain-launch" --max-restarts many "$work/job.toml"
expect 2 "bad value 'x' for --tokens" -- "$bin/ctrain" sample --init "$work/m.bin" --tokens x
expect 2 "--init is required" -- "$bin/ctrain" sample
expect 2 "--val must be a fraction" -- "$bin/ctrain" data prepare "$work/job.toml" --out "$work/p" --val 2
expect 2 "synth needs --out DIR and --tokens N" -- "$bin/ctrain" data synth --out "$work/x"

# -h and --help on every command and subcommand: its usage on stdout, exit 0, nothing run
# (`config show --help` opens no file named --help; `ckpt info PATH --help` reads no PATH).
for cmd in "" data "data prepare" "data synth" sample worker train config "config docs" \
  "config show" "config show $work/job.toml" bench "bench sgemm" "bench gemm" "bench comm" "bench ckpt" \
  ckpt "ckpt info" "ckpt info $work/none" "ckpt verify" "ckpt export" info; do
  for flag in -h --help; do
    name=${cmd%% *}
    [ "$name" = train ] && name=worker # the same command
    # shellcheck disable=SC2086  # $cmd is words
    expect_stdout 0 "^usage: ctrain $name" -- "$bin/ctrain" $cmd $flag
  done
done
expect_stdout 0 "^usage: ctrain data synth" -- "$bin/ctrain" data synth --help
expect_stdout 0 "^usage: ctrain data prepare" -- "$bin/ctrain" data prepare --help
expect_stdout 0 "ctrain config show JOB.toml" -- "$bin/ctrain" config show --help
expect_stdout 0 "^usage: ctrain ckpt info" -- "$bin/ctrain" ckpt info --help

# usage errors start with "ctrain" and the whole subcommand
expect 2 "^ctrain data synth: unknown option '--bogus'" -- "$bin/ctrain" data synth --bogus
expect 2 "^ctrain data prepare: prepare needs --out DIR" -- "$bin/ctrain" data prepare x.txt
expect 2 "^ctrain ckpt export: export needs PATH" -- "$bin/ctrain" ckpt export
expect 2 "^ctrain ckpt verify: verify needs PATH" -- "$bin/ctrain" ckpt verify
expect 2 "^ctrain bench comm: unknown option '--bogus'" -- "$bin/ctrain" bench comm --bogus
expect 2 "^ctrain bench ckpt: unknown option '--bogus'" -- "$bin/ctrain" bench ckpt --bogus
expect 2 "^ctrain bench sgemm: bad value for --size" -- "$bin/ctrain" bench sgemm --size 1
expect 2 "^ctrain bench gemm: bad value for --dtype" -- "$bin/ctrain" bench gemm --dtype fp16
expect 2 "^ctrain bench sgemm: unknown" -- "$bin/ctrain" bench sgemm --dtype bf16
expect 2 "^ctrain config show: expected a job file" -- "$bin/ctrain" config show
expect 2 "^ctrain sample: --init is required" -- "$bin/ctrain" sample
expect 2 "^ctrain info: takes no arguments" -- "$bin/ctrain" info extra

# config show: the run directory, metrics path and checkpoint directory a job leaves unset are
# printed resolved (whatever ct_job_run_dir decides), marked as defaults; the output loads as a
# job file and resolves to the same paths.
mkdir -p "$work/cfg"
printf '[data]\ntrain = "x_*.bin"\n' >"$work/cfg/plain.toml"
"$bin/ctrain" config show "$work/cfg/plain.toml" >"$work/cfg/shown.toml"
expect 0 '^dir = ".+"  # default' -- sed -n '/^\[log\]/,/^\[/p' "$work/cfg/shown.toml"
expect 0 '^metrics = ".+/metrics.jsonl"  # default' -- cat "$work/cfg/shown.toml"
expect 0 '^dir = ".+/ckpt"  # default' -- sed -n '/^\[checkpoint\]/,/^\[/p' "$work/cfg/shown.toml"
paths() { grep -E '^(dir|metrics) =' | sed 's/  #.*//'; }
checks=$((checks + 1))
if grep -qE '^(dir|metrics) = ""' "$work/cfg/shown.toml" ||
  ! diff <(paths <"$work/cfg/shown.toml") \
    <("$bin/ctrain" config show "$work/cfg/shown.toml" | paths) >/dev/null; then
  failures=$((failures + 1))
  echo "FAIL: config show's output does not reload to the same resolved paths"
fi

# job files
expect nonzero "no-such.toml" -- "$bin/ctrain-launch" "$work/no-such.toml"
printf '[train]\nlrr = 1e-3\n' >"$work/bad1.toml"
expect nonzero "bad1.toml:2.*train.lrr.*did you mean 'train.lr'" -- "$bin/ctrain-launch" "$work/bad1.toml"
printf '[model]\nn_layer = "four"\n' >"$work/bad2.toml"
expect nonzero "bad2.toml:2.*model.n_layer" -- "$bin/ctrain-launch" "$work/bad2.toml"
expect nonzero "train.lrr" -- "$bin/ctrain-launch" "$work/job.toml" train.lrr=1
expect nonzero "device.type" -- "$bin/ctrain-launch" "$work/job.toml" device.type=tpu

# data
printf 'not a shard at all, just some bytes that are long enough to be read as a header....' >"$work/bad.bin"
head -c 2000 /dev/urandom >>"$work/bad.bin"
expect nonzero "bad.bin.*magic" -- "$bin/ctrain-launch" "$work/job.toml" "data.train=$work/bad.bin"
expect nonzero "no files match" -- "$bin/ctrain-launch" "$work/job.toml" "data.train=$work/none_*.bin"
expect nonzero ">= vocab_size 16" -- "$bin/ctrain-launch" "$work/job.toml" model.vocab_size=16
mkfifo "$work/fifo.bin"
expect nonzero "fifo.bin: a FIFO, not a regular file" -- \
  timeout 60 "$bin/ctrain-launch" "$work/job.toml" "data.val=$work/fifo.bin"
expect 1 "the shards take 220001126399998 bytes, the file system has [0-9]+ bytes free" -- \
  "$bin/ctrain" data synth --out "$work/huge" --tokens 99999999999999
expect 2 "bad value '99999999999999999999' for --tokens" -- \
  "$bin/ctrain" data synth --out "$work/huge" --tokens 99999999999999999999
# Re-preparing with --val 0 removes the earlier prepare's val shard (nothing else).
printf 'some text to prepare, twice over\n' >"$work/text.txt"
"$bin/ctrain" data prepare "$work/text.txt" --out "$work/prep" --val 0.5 >/dev/null
touch "$work/prep/README"
expect 0 "removed .*/prep/val_000000.bin" -- \
  "$bin/ctrain" data prepare "$work/text.txt" --out "$work/prep" --val 0
expect 0 "^README train_000000.bin$" -- bash -c "cd '$work/prep' && echo *"
expect nonzero "init_from.bin|cannot open" -- "$bin/ctrain-launch" "$work/job.toml" "model.init_from=$work/init_from.bin"

# a good run, then a sample from its weights, then a corrupted model file
expect 0 "final weights" -- "$bin/ctrain-launch" "$work/job.toml"
expect 0 "." -- "$bin/ctrain" sample --init "$work/run/final.bin" --prompt-ids 1,2,3 --tokens 5
head -c 3000 "$work/run/final.bin" >"$work/trunc.bin"
expect nonzero "trunc.bin: header promises" -- "$bin/ctrain" sample --init "$work/trunc.bin"
expect nonzero "needs a byte-level model" -- "$bin/ctrain" sample --init "$work/run/final.bin" --prompt hi

# poke BYTES FILE OFFSET: overwrite bytes of FILE at OFFSET (printf escapes such as \x7f)
poke() { printf '%b' "$1" | dd of="$2" bs=1 seek="$3" conv=notrunc 2>/dev/null; }
# A NaN weight is named (wte element 20: llm.c's header is 1024 bytes), and weights so large
# that the logits overflow (ln_f's weight, the file's last 2 x 16 floats, at FLT_MAX) stop the
# sampler: exit 1 with a message, never NUL bytes as text.
cp "$work/run/final.bin" "$work/nan.bin"
poke '\x00\x00\xc0\x7f' "$work/nan.bin" $((1024 + 4 * 20))
expect 1 "nan.bin: parameter embed.wte element 20 is nan" -- \
  "$bin/ctrain" sample --init "$work/nan.bin" --prompt-ids 1,2 --tokens 5
cp "$work/run/final.bin" "$work/huge.bin"
size=$(stat -c %s "$work/huge.bin")
for j in $(seq 0 15); do poke '\xff\xff\x7f\x7f' "$work/huge.bin" $((size - 128 + 4 * j)); done
expect 1 "huge.bin: the logits for token 1 are not finite" -- \
  "$bin/ctrain" sample --init "$work/huge.bin" --prompt-ids 5 --tokens 5

# docs/config.md is generated from the key table and must not drift from it
if [ -f "$src/docs/config.md" ]; then
  checks=$((checks + 1))
  if ! diff -q <("$bin/ctrain" config docs) "$src/docs/config.md" >/dev/null; then
    failures=$((failures + 1))
    echo "FAIL: docs/config.md differs from 'ctrain config docs' (regenerate it)"
  fi
fi

summary

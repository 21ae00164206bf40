# shellcheck shell=bash disable=SC2154  # bin is set by the sourcing script
# Shared by the shell tests of tests/ (sourced, not run): a scratch directory removed on exit,
# `expect` to check a command's exit status and output, and a tiny job on synthetic data.
# Callers set `bin` (the build's bin/ directory) before sourcing.

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
checks=0

# expect CODE PATTERN -- command...: exit status CODE (or "nonzero": 1..127, never a crash),
# output matches PATTERN (an extended regex; a literal string when PATTERN starts with '=').
expect() {
  local want=$1 pattern=$2
  shift 3
  local out status
  out=$("$@" 2>&1)
  status=$?
  checks=$((checks + 1))
  local ok=1
  if [ "$want" = nonzero ]; then
    { [ "$status" -ne 0 ] && [ "$status" -lt 128 ]; } || ok=0
  else
    [ "$status" -eq "$want" ] || ok=0
  fi
  if [ "${pattern:0:1}" = "=" ]; then
    grep -qF -- "${pattern:1}" <<<"$out" || ok=0
  else
    grep -qE -- "$pattern" <<<"$out" || ok=0
  fi
  if [ $ok -eq 0 ]; then
    failures=$((failures + 1))
    echo "FAIL: $* -> exit $status (want $want), output:"
    sed 's/^/    /' <<<"$out" | head -12
    echo "    (expected /$pattern/)"
  fi
}

# expect_stdout CODE PATTERN -- command...: like expect, but the pattern must match the
# command's standard output alone (what --help prints goes there, not to stderr).
expect_stdout() {
  local want=$1 pattern=$2
  shift 3
  local out status
  out=$("$@" 2>/dev/null)
  status=$?
  checks=$((checks + 1))
  if [ "$status" -ne "$want" ] || ! grep -qE -- "$pattern" <<<"$out"; then
    failures=$((failures + 1))
    echo "FAIL: $* -> exit $status (want $want), stdout:"
    sed 's/^/    /' <<<"$out" | head -12
    echo "    (expected /$pattern/ on stdout)"
  fi
}

# tiny_job FILE [EXTRA_TOML]: synthetic data in $work/data (vocabulary 64) and a job of one
# small layer training 2 steps into $work/run, never resuming (the tests reuse $work/run with
# other world sizes and steps); EXTRA_TOML is appended (more tables).
tiny_job() {
  [ -d "$work/data" ] ||
    "$bin/ctrain" data synth --out "$work/data" --tokens 20000 --vocab 64 --seed 3 >/dev/null
  cat >"$1" <<TOML
[model]
n_layer = 1
n_head = 2
n_embd = 16
vocab_size = 64
seq_len = 8
[data]
train = "$work/data/train_*.bin"
[train]
batch_size = 2
steps = 2
[log]
dir = "$work/run"
[checkpoint]
resume = "never"
overwrite = true
${2:-}
TOML
}

# The closing line every shell test prints.
summary() {
  echo "$((checks - failures)) passed, $failures failed"
  [ "$failures" -eq 0 ]
}

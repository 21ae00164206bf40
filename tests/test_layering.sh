#!/usr/bin/env bash
# Checks every #include "dir/..." in the C and CUDA sources against the module DAG of
# DESIGN.md / STYLE.md rule 1: a module may include only itself and the modules below it.
set -u
root=${1:-.}
cd "$root" || exit 2
declare -A allowed=(
  [common]="common"
  [kernels]="kernels common"
  [model]="model kernels common"
  [comm]="comm kernels common"
  [data]="data common"
  [shard]="shard model comm kernels common"
  [checkpoint]="checkpoint shard model comm kernels data common"
  [job]="job common"
  [train]="train job checkpoint shard model comm kernels data common"
  [launcher]="launcher train job checkpoint shard model comm kernels data common"
)
failures=0
checked=0
for module in "${!allowed[@]}"; do
  [ -d "$module" ] || continue
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$line")
    checked=$((checked + 1))
    if ! grep -qw "$target" <<<"${allowed[$module]}"; then
      echo "layering violation: $file includes $target/ (module $module may use: ${allowed[$module]})"
      failures=$((failures + 1))
    fi
  done < <(grep -rn --include='*.c' --include='*.h' --include='*.cu' -E '#include "[a-z_]+/' "$module")
done
echo "checked $checked includes: $failures violations"
[ "$checked" -gt 0 ] && [ "$failures" -eq 0 ]

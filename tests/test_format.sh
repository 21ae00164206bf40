#!/usr/bin/env bash
# STYLE.md rule 10: every C and CUDA file is formatted by the committed .clang-format.
# Skipped (77) where clang-format is not installed.
set -u
cd "${1:-.}" || exit 2
command -v clang-format >/dev/null || { echo "clang-format not installed: skipped"; exit 77; }
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' 2>/dev/null || find . -name '*.[ch]')
if clang-format --dry-run --Werror "${files[@]}"; then
  echo "${#files[@]} files formatted"
else
  echo "run: git ls-files '*.c' '*.h' '*.cu' | xargs clang-format -i"
  exit 1
fi

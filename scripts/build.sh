#!/usr/bin/env bash
# Builds ctrain into build/ (binaries in build/bin/): installs missing Debian packages
# (scripts/install-deps.sh, given this script's arguments, e.g. --with-torch), configures a
# Release build (-DCT_WERROR=ON when CI=true) and compiles with all cores. Idempotent, and
# runs from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh "$@"

werror=OFF
[[ "${CI:-}" == true ]] && werror=ON
echo "build: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCT_WERROR=$werror"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCT_WERROR="$werror"
echo "build: cmake --build build -j$(nproc)"
cmake --build build -j"$(nproc)"
echo "build: done; binaries in $(pwd)/build/bin"

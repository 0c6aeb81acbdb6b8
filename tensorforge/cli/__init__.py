"""The `tensorforge` command line (also `python -m tensorforge`): ONNX models in, compiled models out.

    tensorforge compile model.onnx --target armv8 [--int8 --calibration samples.npy] -o out/ [--export]
    tensorforge run out/model.tfm --input x.npy --output y.npy
    tensorforge check model.onnx --target armv8
    tensorforge viz model.onnx -o pictures/
    tensorforge profile model.onnx
    tensorforge bench model.onnx --against onnxruntime
    tensorforge SUBCOMMAND --help

Exit status: 0 on success, 1 on an error (one line `tensorforge: error: ...` on stderr; the
traceback too with --debug) or a failed check, 2 on a malformed command line. Progress goes to
stderr (--quiet turns it off), results to stdout. `main(argv)` runs it in process and returns the
exit status.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings

from .arrays import RANDOM_HELP, CliError
from .commands import (
    SAVED_MODEL_NAME,
    bench_command,
    check_command,
    compile_command,
    profile_command,
    run_command,
    viz_command,
)

__all__ = ["CliError", "main"]

TARGETS_HELP = "host (this machine, the default), x86-64, x86-64-v3, x86-64-v4, armv8 (run under qemu-aarch64 " \
               "here), armv8.2-a+dotprod"


def version() -> str:
    from importlib import metadata

    import llvmlite

    try:
        ours = metadata.version("tensorforge")
    except metadata.PackageNotFoundError:
        ours = "(not installed)"
    ours = getattr(sys.modules.get("tensorforge"), "__version__", None) or ours
    return f"tensorforge {ours} (llvmlite {llvmlite.__version__}, Python {sys.version.split()[0]})"


def _common(suppress: bool) -> argparse.ArgumentParser:
    """--quiet and --debug, taken before or after the subcommand."""
    parser = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress on stderr")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an error, print the Python traceback too")
    return parser


def _inputs() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("inputs")
    group.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE",
                       help="an input's values: a .npy file by input name (NAME=FILE.npy) or in the model's input "
                            "order, or one .npz of arrays named by input; repeat per input")
    group.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,..",
                       help="a random input's shape (x=1,3,224,224), or a symbolic axis' size (batch=1)")
    group.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    return parser


def _build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("build")
    group.add_argument("--opt-level", type=int, choices=(0, 1, 2), default=2,
                       help="0: no passes, 1: clean-ups and folding, 2: fusion too (default)")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="threads a kernel may use (default: every core for the host, 1 for another target)")
    group.add_argument("--disable", action="append", default=[], metavar="PASS", help="skip a pass (repeatable)")
    group.add_argument("--int8", action="store_true",
                       help="quantize linear and conv layers to int8 (with --calibration, or --dynamic)")
    group.add_argument("--calibration", action="append", default=[], metavar="[NAME=]FILE",
                       help="int8 calibration samples, along the first axis, batched like the input: a .npy per "
                            "input (by name or in order) or one .npz")
    group.add_argument("--dynamic", action="store_true",
                       help="with --int8: scales computed at run time (linear layers only; no calibration)")
    return parser


def _target(default: str | None = "host") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--target", default=default, metavar="NAME", help=f"what to compile for: {TARGETS_HELP}")
    return parser


def parser() -> argparse.ArgumentParser:
    """The argument parser of the whole command line."""
    main_parser = argparse.ArgumentParser(
        prog="tensorforge", parents=[_common(False)], description="A small neural-network compiler: ONNX models "
        "compiled to native code for x86-64 and ARMv8.", epilog="exit status: 0 ok, 1 error or failed check, "
        "2 bad command line. `tensorforge SUBCOMMAND --help` for each.")
    main_parser.add_argument("--version", action="version", version=version())
    commands = main_parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    common, inputs, build = _common(True), _inputs(), _build()
    formatter = argparse.RawDescriptionHelpFormatter

    def add(name, help, epilog, parents, function):
        paragraphs = epilog.split("\n")
        text = "\n".join(line if line.startswith("  ") else textwrap.fill(line, 79) for line in paragraphs)
        sub = commands.add_parser(name, help=help, description=help, epilog=text, formatter_class=formatter,
                                  parents=[common, *parents])
        sub.set_defaults(function=function)
        return sub

    random_note = "example inputs: " + RANDOM_HELP + "."
    sub = add("compile", "compile an ONNX model and save it (and, with --export, the C package)",
              f"writes DIR/{SAVED_MODEL_NAME} (run it with `tensorforge run`) and, with --export, the C "
              "package into DIR; nothing without -o. The compiled model takes exactly the example inputs' "
              f"shapes.\n{random_note}\n\n  tensorforge compile model.onnx --target armv8 -o out/\n"
              "  tensorforge compile model.onnx --int8 --calibration samples.npy --input-shape batch=1 -o out/",
              [inputs, build, _target()], compile_command)
    sub.add_argument("model", help="the .onnx file")
    sub.add_argument("-o", "--output", metavar="DIR", help="where the saved model (and the C package) go")
    sub.add_argument("--export", action="store_true",
                     help="also write the C package: model.h, libmodel.a, libmodel.so, main.c, Makefile, README.md")
    sub.add_argument("--weights", choices=("linked", "file"), default="linked",
                     help="with --export: the weights linked into the libraries (default) or in DIR/model.weights")
    sub.add_argument("-v", "--verbose", action="store_true", help="print the pass report")

    sub = add("run", "run a saved model (or an .onnx file, compiled first) on inputs from files",
              "every input is a file (the shapes the model was compiled for); --output: one .npy file per "
              "output in order, or one directory that receives <output name>.npy; without --output the "
              "outputs are printed.\n\n  tensorforge run out/model.tfm --input x.npy --output y.npy\n"
              "  tensorforge run out/model.tfm --input ids=ids.npy --input mask=mask.npy --output outputs/",
              [inputs, build, _target(None)], run_command)
    sub.add_argument("model", help=f"a saved model ({SAVED_MODEL_NAME}) or an .onnx file")
    sub.add_argument("-o", "--output", action="append", metavar="FILE.npy|DIR",
                     help="where the outputs go: a .npy file per output (repeat), or a directory")

    sub = add("check", "differential check: every pass and the compiled code against the reference interpreter",
              "names the first pass (or the code generation) whose outputs diverge, and the node; exit 1 if one "
              f"does.\n{random_note}\n\n  tensorforge check model.onnx --target armv8",
              [inputs, build, _target()], check_command)
    sub.add_argument("model", help="the .onnx file")
    sub.add_argument("--rtol", type=float, default=None, help="relative tolerance for floats (default 1e-4)")
    sub.add_argument("--atol", type=float, default=None, help="absolute tolerance for floats (default 1e-5)")
    sub.add_argument("--repro", metavar="DIR", help="on a divergence, shrink the graph to a small one that still "
                     "diverges and write a standalone repro (graph, inputs, repro.py) into DIR")

    sub = add("viz", "draw the graph after every pass, with an index.html (needs graphviz's dot)",
              f"{random_note}\n\n  tensorforge viz model.onnx -o pictures/", [inputs, build, _target()], viz_command)
    sub.add_argument("model", help="the .onnx file")
    sub.add_argument("-o", "--output", metavar="DIR", required=True, help="where the pictures and index.html go")
    sub.add_argument("--format", choices=("svg", "png"), default="svg", help="picture format (default svg)")

    sub = add("profile", "time every kernel on this machine: the per-kernel roofline table",
              f"host only (code under qemu says nothing about an ARM board's speed).\n{random_note}\n\n"
              "  tensorforge profile model.onnx --plot roofline.png\n  tensorforge profile out/model.tfm --input "
              "x.npy", [inputs, build], profile_command)
    sub.add_argument("model", help=f"an .onnx file, or a saved host model ({SAVED_MODEL_NAME}; inputs from files)")
    sub.add_argument("--repeat", type=int, default=30, metavar="N", help="timed runs (default 30)")
    sub.add_argument("--plot", metavar="FILE", help="also draw the roofline into FILE (.png, .svg; needs matplotlib)")

    sub = add("bench", "median latency of a call on this machine, against ONNX Runtime if asked",
              "ours and ONNX Runtime (intra-op threads 1 and max(2, ours'); the faster is kept) are timed in "
              "interleaved rounds in this process; the ratio is the median over rounds of ONNX Runtime's time "
              "over ours (above 1: ours is faster). For published figures use benchmarks/bench_onnx.py (each "
              f"engine in its own process).\n{random_note}\n\n"
              "  tensorforge bench model.onnx --against onnxruntime --repeat 15",
              [inputs, build], bench_command)
    sub.add_argument("model", help=f"an .onnx file, or a saved host model ({SAVED_MODEL_NAME}; inputs from files; "
                     "not with --against)")
    sub.add_argument("--against", choices=("onnxruntime",), default=None, help="also time ONNX Runtime")
    sub.add_argument("--repeat", type=int, default=15, metavar="N", help="interleaved rounds (default 15)")
    return main_parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    expected = (CliError, ValueError, TypeError, OSError, ImportError, RuntimeError, NotImplementedError)
    if isinstance(error, expected) and not isinstance(error, (KeyError, IndexError)):
        return text
    return f"{type(error).__name__}: {text} (an internal error: --debug shows where)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (default sys.argv[1:]); returns the exit status."""
    args = parser().parse_args(argv)
    for option in ("repeat", "threads"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            print(f"tensorforge: error: --{option} must be at least 1, got {value}", file=sys.stderr)
            return 1
    shown = warnings.showwarning
    warnings.showwarning = _warning
    try:
        return args.function(args)
    except KeyboardInterrupt:
        print("tensorforge: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the command line's one-line report
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"tensorforge: error: {_one_line(error)}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown


def _warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, without the source line it came from."""
    print(f"tensorforge: warning: {' '.join(str(message).split())}", file=sys.stderr)

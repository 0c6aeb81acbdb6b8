"""What each `tensorforge` subcommand does, given its parsed arguments (see cli/__init__.py for the options).

    tensorforge compile model.onnx --target armv8 -o out/      -> out/model.tfm (and the C package with --export)
    tensorforge run out/model.tfm --input x.npy --output y.npy
    tensorforge check model.onnx --target armv8
    tensorforge viz model.onnx -o pictures/
    tensorforge profile model.onnx
    tensorforge bench model.onnx --against onnxruntime

Each returns the exit status. Messages for the user go to stdout (results) and stderr (progress).
Nothing is written but the files and directories the options name.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import (
    CliError,
    describe,
    example_inputs,
    onnx_io,
    output_paths,
    parse_named,
    parse_shapes,
    read_arrays,
    write_array,
)
from .progress import step

SAVED_MODEL_NAME = "model.tfm"


def note(args, text: str) -> None:
    """A progress message on stderr (silent with --quiet)."""
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


# --- the model and its inputs -----------------------------------------------------------------------------

@dataclass
class OnnxModel:
    """An ONNX file, its example inputs by name (in the model's order), its output names, its imported graph."""

    path: Path
    inputs: dict[str, np.ndarray]
    output_names: list[str]
    graph: object

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(self.inputs.values())


def onnx_path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if not path.is_file():
        raise CliError(f"{path}: not a file")
    if path.suffix.lower() == ".tfm":
        raise CliError(f"{path}: a saved model; this command takes the .onnx file (run a saved model with "
                       "`tensorforge run`)")
    if path.suffix.lower() != ".onnx":
        raise CliError(f"{path}: not an .onnx file (tensorforge reads ONNX models: export yours with "
                       "torch.onnx.export or similar)")
    return path


def read_onnx(args, need_all_inputs: bool = False) -> OnnxModel:
    """The model named by `args.model`, its example inputs (files given, else random), imported."""
    import tensorforge as tfg

    path = onnx_path(args.model)
    with step(f"reading {path.name}", not args.quiet):
        declared, outputs = onnx_io(path)
    names = [item.name for item in declared]
    given = read_arrays(parse_named(args.input, "--input"), names, "--input")
    if need_all_inputs:
        missing = [item.text() for item in declared if item.name not in given]
        if missing:
            raise CliError(f"give every input as a file (--input NAME=FILE.npy); missing: {'; '.join(missing)}")
    inputs = example_inputs(declared, given, parse_shapes(getattr(args, "input_shape", [])), args.seed)
    random = [name for name in inputs if name not in given]
    note(args, f"inputs: {describe(inputs)}" + (f" (random: {', '.join(random)})" if random else ""))
    with step(f"importing {path.name}", not args.quiet):
        graph = tfg.trace(str(path), inputs)
    return OnnxModel(path, inputs, outputs, graph)


def build_options(args, model: OnnxModel, target: str) -> dict:
    """tfg.compile's keyword arguments from the options: target, opt level, threads, passes, int8."""
    options = {"target": target, "opt_level": args.opt_level, "threads": args.threads,
               "disabled": tuple(args.disable or ())}
    if getattr(args, "int8", False):
        import tensorforge as tfg

        options["quantize"] = tfg.QuantConfig(dynamic=args.dynamic, verbose=not args.quiet)
        if args.calibration:
            names = list(model.inputs)
            samples = read_arrays(parse_named(args.calibration, "--calibration"), names, "--calibration")
            missing = [name for name in names if name not in samples]
            if missing:
                raise CliError(f"--calibration: no samples for input(s) {', '.join(missing)} (one array per input, "
                               "samples along the first axis)")
            options["calibration"] = tuple(samples[name] for name in names)
        elif not args.dynamic:
            raise CliError("--int8 needs --calibration SAMPLES.npy (samples along the first axis, batched like the "
                           "input) to choose the scales, or --dynamic (scales at run time, linear layers only)")
    elif getattr(args, "calibration", None) or getattr(args, "dynamic", False):
        raise CliError("--calibration and --dynamic go with --int8")
    return options


def compile_model(args, model: OnnxModel, target: str):
    import tensorforge as tfg

    options = build_options(args, model, target)
    with step(f"compiling for {target}", not args.quiet):
        return tfg.compile(model.graph, **options)


def summary(cm) -> str:
    inputs = ", ".join(f"{name} {t}" for name, t in zip(cm.input_names, cm.input_types))
    outputs = ", ".join(str(t) for t in cm.output_types)
    seconds = getattr(cm, "compile_seconds", {})
    timing = f" in {seconds['total']:.2f} s" if "total" in seconds else ""
    return f"compiled for {cm.target.name}{timing}: ({inputs}) -> ({outputs})"


# --- compile ----------------------------------------------------------------------------------------------

def compile_command(args) -> int:
    out = Path(args.output) if args.output else None
    if args.export and out is None:
        raise CliError("--export writes the C package into the -o directory: give -o DIR")
    if args.weights != "linked" and not args.export:
        raise CliError("--weights goes with --export (where the C package keeps the weights)")
    if out is not None and out.exists() and not out.is_dir():
        raise CliError(f"-o {out}: exists and is not a directory")
    model = read_onnx(args)
    with compile_model(args, model, args.target) as cm:
        print(summary(cm))
        if args.verbose:
            print(cm.report())
        if getattr(cm, "quantization", None) is not None:
            print(cm.quant_report())
        if out is None:
            print("nothing written (no -o DIR)")
            return 0
        out.mkdir(parents=True, exist_ok=True)
        saved = out / SAVED_MODEL_NAME
        with step(f"saving {saved}", not args.quiet):
            cm.save(saved)
        print(f"wrote {saved}")
        if args.export:
            cm.export(out, weights=args.weights, verbose=not args.quiet)
            print(f"wrote the C package into {out} (see {out / 'README.md'})")
    return 0


# --- run ----------------------------------------------------------------------------------------------------

def output_names(cm) -> list[str]:
    """The model's output names: the traced graph's (an ONNX model's own), else output0, output1, ..."""
    for graph in (getattr(cm, "source_graph", None), getattr(cm, "graph", None)):
        outputs = getattr(graph, "outputs", None)
        if outputs and len(outputs) == len(cm.output_types):
            return [node.name for node in outputs]
    return [f"output{index}" for index in range(len(cm.output_types))]


@dataclass
class Opened:
    """A model ready to call: compiled from an .onnx file (then `onnx` is set) or loaded from a saved file."""

    cm: object
    arrays: tuple[np.ndarray, ...]
    output_names: list[str]
    onnx: OnnxModel | None


def open_model(args, target: str | None, *, random_inputs: bool) -> Opened:
    """`args.model` compiled for `target` (an .onnx file) or loaded (a saved model, checked against
    `target` if one is given), with its inputs: files, or random for an .onnx file if `random_inputs`."""
    import tensorforge as tfg

    path = Path(args.model)
    if not path.is_file():
        raise CliError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.suffix.lower() == ".onnx":
        model = read_onnx(args, need_all_inputs=not random_inputs)
        cm = compile_model(args, model, target or "host")
        return Opened(cm, model.arrays, model.output_names, model)
    if args.input_shape or args.int8:
        raise CliError(f"--input-shape and --int8 are for an .onnx model; {path.name} was compiled with its own")
    with step(f"loading {path.name}", not args.quiet):
        cm = tfg.load(path, target=target)
    try:
        given = read_arrays(parse_named(args.input, "--input"), list(cm.input_names), "--input")
        missing = [f"{name}: {t}" for name, t in zip(cm.input_names, cm.input_types) if name not in given]
        if missing:
            raise CliError(f"give every input of a saved model as a file (--input NAME=FILE.npy); missing: "
                           f"{'; '.join(missing)}")
        return Opened(cm, tuple(given[name] for name in cm.input_names), output_names(cm), None)
    except BaseException:
        cm.close()
        raise


def run_command(args) -> int:
    destinations = list(args.output or [])
    opened = open_model(args, args.target, random_inputs=False)
    with opened.cm as cm:
        names = opened.output_names
        paths = output_paths(names, destinations) if destinations else None
        outputs = cm(*opened.arrays)
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
    if paths is None:
        for name, array in zip(names, outputs):
            print(f"{name}: {array.dtype}{list(array.shape)}")
            print(np.array2string(array, threshold=20, edgeitems=3, precision=5))
        return 0
    for target, array in zip(paths, outputs):
        write_array(target, array)
        print(f"wrote {target} ({array.dtype}{list(array.shape)})")
    return 0


# --- check, viz, profile, bench ---------------------------------------------------------------------------

def check_command(args) -> int:
    import tensorforge as tfg

    if args.repro and Path(args.repro).exists() and not Path(args.repro).is_dir():
        raise CliError(f"--repro {args.repro}: exists and is not a directory")
    model = read_onnx(args)
    options = build_options(args, model, args.target)
    with step(f"checking every pass and the {args.target} code against the reference interpreter", not args.quiet):
        try:
            repro = {"minimize": True, "repro_dir": args.repro, "verbose": not args.quiet} if args.repro else {}
            result = tfg.check(model.graph, model.arrays, rtol=args.rtol, atol=args.atol, **repro, **options)
        except tfg.CheckError as error:
            print(f"tensorforge: check failed: {error}", file=sys.stderr)
            return 1
    print(result)
    return 0


def viz_command(args) -> int:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CliError(f"-o {out}: exists and is not a directory")
    model = read_onnx(args)
    with compile_model(args, model, args.target) as cm:
        with step(f"drawing {len(cm.snapshots)} graphs", not args.quiet):
            cm.save_pictures(out, args.format)
    print(f"wrote {len(cm.snapshots)} pictures and {out / 'index.html'}")
    return 0


def profile_command(args) -> int:
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise CliError(f"--plot {args.plot}: name a .png, .svg or .pdf file")
    opened = open_model(args, None, random_inputs=True)
    with opened.cm as cm:
        print(summary(cm))
        profile = cm.profile(*opened.arrays, repeat=args.repeat, verbose=not args.quiet)
    print(profile)
    if args.plot:
        print(f"wrote {profile.plot(args.plot, title=f'roofline: {Path(args.model).name}')}")
    return 0


def bench_command(args) -> int:
    from .bench import format_time, interleaved, onnxruntime_session, paired_ratio

    if args.against and Path(args.model).suffix.lower() != ".onnx":
        raise CliError(f"--against {args.against} runs the .onnx file: give the model as .onnx, not {args.model}")
    opened = open_model(args, None, random_inputs=True)
    with opened.cm as cm:
        if not cm.target.runs_in_process:
            raise CliError(f"bench times code on this machine; {args.model} holds {cm.target.name} code")
        print(summary(cm) + f", {cm.artifact.threads} thread(s)")
        engines = {"tensorforge": lambda: cm(*opened.arrays)}
        ort_engines = []
        if args.against == "onnxruntime":
            feeds = opened.onnx.inputs
            ours = cm(*opened.arrays)
            ours = list(ours) if isinstance(ours, tuple) else [ours]
            for count in sorted({1, max(2, cm.artifact.threads)}):
                with step(f"onnxruntime session, {count} thread(s)", not args.quiet):
                    session = onnxruntime_session(args.model, count)
                name = f"onnxruntime {count} thread" + ("s" if count > 1 else "")
                engines[name] = (lambda s=session: s.run(None, feeds))
                ort_engines.append(name)
            expected = session.run(None, feeds)
            errors = [float(np.abs(np.asarray(e, np.float64) - o).max()) if o.size else 0.0
                      for e, o in zip(expected, ours, strict=True)]
            print(f"max abs difference from onnxruntime's outputs: {max(errors):.3g}")
        samples = interleaved(engines, args.repeat, verbose=not args.quiet)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"median time of a call over {args.repeat} interleaved rounds:")
    for name, seconds in medians.items():
        print(f"  {name:<24} {format_time(seconds)}")
    if ort_engines:
        best = min(ort_engines, key=medians.get)
        ratio = paired_ratio(samples, best, "tensorforge")
        print(f"tensorforge is {ratio:.2f}x {best} ({'faster' if ratio >= 1 else 'slower'}; ratio of times "
              f"in the same round, median)")
    return 0

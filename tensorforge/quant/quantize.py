"""Post-training INT8: calibration, the SQNR guard, and the QDQ (or dynamic_qlinear) graph with its report.

    cm = tf.compile(model, x, quantize="int8", calibration=X_cal)
    cm = tf.compile(model, x, quantize=tf.QuantConfig(method="entropy", per_channel=False), calibration=X_cal)
    graph, report = tf.quantize(graph, X_cal)          # the pass alone: a QDQ graph (interpretable)
    print(cm.quant_report())                            # layer, scheme, SQNR, int8 or kept in fp32

1. Calibration: the reference interpreter runs the f32 graph on the calibration set and records
   the input of every linear and conv2d layer (groups 1) with a constant weight (quant/calibration.py turns the values
   into a scale and zero point: min-max, percentile (99.99 by default) or entropy).
2. Weights: symmetric int8, per output channel (per tensor with per_channel=False).
3. The guard: each layer alone is run in int8 (its input and weight quantized) on the calibration
   set, and its output compared with f32: SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) in dB, over
   the whole output and over each output channel (`worst_channel_sqnr_db`). A layer stays in f32
   when the whole is below `sqnr_budget` (30 dB: error energy under 0.1% of the signal's) or its
   worst channel below `channel_budget` (20 dB: 1% of that channel's). On the digits models every
   layer measures 37-45 dB with the defaults, so all of them are quantized, while a layer fed by a
   heavy-tailed input (or a weight with one huge outlier column, per tensor) falls to 15-25 dB and
   is kept. The whole output's SQNR alone could be fooled: with one dominant channel (a weight of
   1000 among weights of ~0.1, per-tensor scales) the other 31 channels round to exact zeros while
   the layer measures 40.7 dB; its worst channel measures 0 dB. (Every channel at 30 dB would be
   stricter than needed: on the digits MLP the worst of 128 channels sits 5-10 dB below the
   whole's, and two of its three layers would fall back.) A channel without error is not judged.
4. insert-quant (quant/insert_quant.py) writes the QDQ graph; in tf.compile, lower-quant
   (passes/lower_quant.py) then makes int8 qlinear / qconv2d layers of it.

The "tinytorch" method reproduces TinyTorch's quantize_int8 exactly (asymmetric per-tensor
min-max, for the weights too): its weights have a zero point, which the int8 kernel does not take,
so those layers run in f32 on dequantized weights, as TinyTorch does (the report says so).
Dynamic quantization (QuantConfig(dynamic=True)) covers linear layers only.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from ..ir import DType, Graph, run_graph
from ..ir.arrays import derived
from ..passes.fuse_bias import fuse_bias
from ..passes.rewrite import derived_name, replace_node, suffixed_name
from .calibration import QuantParams, activation_params, tinytorch_params, weight_params
from .config import QuantConfig
from .insert_quant import LayerQuant, insert_quant, quantized_weight
from .report import QuantReport


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when they are equal)."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((reference - approximation) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-300) / noise)


def worst_channel_sqnr_db(reference: np.ndarray, approximation: np.ndarray, axis: int) -> float:
    """The lowest SQNR in dB over the output channels (index along `axis`): each channel's error energy
    against its own signal's. Channels without error are inf; a channel of zeros with an error, -inf."""
    reference = np.moveaxis(np.asarray(reference, np.float64), axis, 0).reshape(reference.shape[axis], -1)
    approximation = np.moveaxis(np.asarray(approximation, np.float64), axis, 0).reshape(reference.shape[0], -1)
    noise = np.sum((reference - approximation) ** 2, axis=1)
    signal = np.sum(reference ** 2, axis=1)
    judged = noise > 0
    if not np.any(judged):
        return float("inf")
    with np.errstate(divide="ignore"):
        return float(np.min(10.0 * np.log10(signal[judged] / noise[judged])))


def _channel_axis(node) -> int:
    """The output-channel axis of a linear's ([..., out]) or conv2d's ([N, out, H, W]) result."""
    return -1 if node.op == "linear" else 1


def _batches(graph: Graph, calibration) -> list[tuple]:
    """The calibration set cut into the batch size the graph was traced with (the last padded by repetition)."""
    arrays = calibration if isinstance(calibration, (tuple, list)) else (calibration,)
    arrays = [np.asarray(a) for a in arrays]
    if len(arrays) != len(graph.inputs):
        raise ValueError(f"calibration has {len(arrays)} array(s); the model takes {len(graph.inputs)} input(s)")
    batch = graph.inputs[0].shape[0] if graph.inputs[0].shape else 1
    total = arrays[0].shape[0] if arrays[0].ndim else 0
    if total == 0:
        raise ValueError("calibration needs at least one sample (arrays with a leading sample axis)")
    for node, array in zip(graph.inputs, arrays):
        if array.shape[1:] != node.shape[1:]:
            raise ValueError(f"calibration input for '{node.name}' has samples of shape {list(array.shape[1:])}, "
                             f"the model takes {list(node.shape[1:])}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise ValueError(f"calibration input for '{node.name}' holds {bad} NaN or infinite value(s): every "
                             "SQNR would be NaN and the guard could not judge a layer; clean the samples first")
        if array.dtype.kind == "f" and not np.any(array):
            raise ValueError(f"calibration input for '{node.name}' is all zeros: it gives no range to choose "
                             "int8 scales from; calibrate on real samples")
    chunks = []
    for start in range(0, total, batch):
        chunk = []
        for array in arrays:
            part = array[start:start + batch]
            if part.shape[0] < batch:
                part = np.concatenate([part, array[np.arange(batch - part.shape[0]) % total]])
            chunk.append(part)
        chunks.append(tuple(chunk))
    return chunks


def _candidates(graph: Graph, ops: tuple[str, ...] = ("linear", "conv2d")):
    """The layers int8 can take: linear, and conv2d with groups 1, with a constant weight and no residual."""
    return [node for node in graph.nodes if node.op in ops and node.dtype is DType.f32
            and node.inputs[1].op == "constant" and not node.attrs.get("residual")
            and node.attrs.get("groups", 1) == 1]


def _layer_output(node, x: np.ndarray, weight: np.ndarray, rest: list[np.ndarray]) -> np.ndarray:
    """The layer's result before its activation, by the reference."""
    from ..ir import evaluate

    attrs = {key: value for key, value in node.attrs.items() if key not in ("activation", "residual")}
    return evaluate(node.op, [x, weight, *rest], attrs)


def quantize(graph: Graph, calibration=None, config: QuantConfig | str = "int8", *,
             decided: QuantReport | None = None) -> tuple[Graph, QuantReport]:
    """A QDQ copy of `graph` (its linear layers quantized, as `config` says) and the report.

    With `config.dynamic`, the linear layers become dynamic_qlinear instead (calibration, if
    given, only measures their SQNR for the guard). `decided`: a dynamic report whose decisions to
    follow, by layer name, instead of measuring (a generator's decode graph follows its prefill's)."""
    config = QuantConfig.of(config)
    # the layers as the pipeline would see them: constant weights, and a bias added after a bias-less
    # linear (ONNX's MatMul + Add) taken as the layer's bias, so the int8 layer adds it in its epilogue
    graph = fuse_bias(fold_transposed_weights(graph))
    if decided is not None:
        if not config.dynamic:
            raise ValueError("quantize(decided=...) follows a dynamic report's decisions: pass a dynamic config")
        return _dynamic(graph, config, None, decided=decided)
    if calibration is None:
        if not config.dynamic:
            raise TypeError("static int8 quantization needs calibration=<samples> to choose the scales "
                            "(or QuantConfig(dynamic=True))")
        return _dynamic(graph, config, None)
    candidates = _candidates(graph)
    wanted = {node.inputs[0] for node in candidates}
    samples: dict = {node: [] for node in wanted}

    def record(node, value):
        if node in samples:
            samples[node].append(value)

    batches = _batches(graph, calibration)
    progress = batches
    if config.verbose:
        from tqdm import tqdm
        progress = tqdm(batches, desc="calibration", unit="batch")
    for batch in progress:
        run_graph(graph, batch, record)
    values = {node.name: np.concatenate(parts) for node, parts in samples.items()}
    if config.dynamic:
        return _dynamic(graph, config, values, len(batches) * int(np.asarray(batches[0][0]).shape[0]))

    report = QuantReport(config, calibration_samples=int(np.asarray(batches[0][0]).shape[0] * len(batches)))
    plan: dict[str, LayerQuant] = {}
    dtype = DType[config.activation_dtype]
    f32_bytes = int8_bytes = 0
    for node in candidates:
        x, weight = values[node.inputs[0].name], node.inputs[1].value
        rest = [n.value for n in node.inputs[2:]] if all(n.op == "constant" for n in node.inputs[2:]) else []
        if config.method == "tinytorch":
            activation, weight_q = tinytorch_params(x), tinytorch_params(weight)
        else:
            activation = activation_params(x, config.method, config.percentile, dtype)
            channel_axis = 1 if node.op == "linear" else 0
            weight_q = weight_params(weight, axis=channel_axis if config.per_channel else None)
        reference = _layer_output(node, x, weight, rest)
        approximation = _layer_output(node, _fake(x, activation), _fake(weight, weight_q), rest)
        sqnr, worst = sqnr_db(reference, approximation), worst_channel_sqnr_db(reference, approximation,
                                                                                 _channel_axis(node))
        reason = config.keeps_fp32(sqnr, worst)
        keep = reason is not None
        decision = reason or ("int8 weights, f32 compute" if config.method == "tinytorch" else "int8")
        report.rows.append((layer_name(node), config.scheme, sqnr, decision, worst))
        f32_bytes += weight.nbytes
        int8_bytes += weight.nbytes if keep or config.method == "tinytorch" else weight.size
        if not keep:
            plan[node.name] = LayerQuant(activation, weight_q)
    report.weight_bytes = (f32_bytes, int8_bytes)
    quantized = insert_quant(graph.copy(), plan)
    return quantized, report


def _dynamic(graph: Graph, config: QuantConfig, values: dict | None, samples: int = 0,
             decided: QuantReport | None = None) -> tuple[Graph, QuantReport]:
    """Every linear with a constant weight becomes dynamic_qlinear (kept in f32 below the SQNR budget,
    when calibration values are there to measure it, or as `decided` decided for the same layer)."""
    earlier = {row[0]: row for row in decided.rows} if decided is not None else {}
    from ..ir import evaluate

    graph = graph.copy()
    report = QuantReport(config, calibration_samples=samples if decided is None else decided.calibration_samples)
    f32_bytes = int8_bytes = 0
    for node in _candidates(graph, ("linear",)):
        x, weight_node, *rest = node.inputs
        if any(n.op != "constant" for n in rest):
            continue
        weight = weight_node.value
        params = weight_params(weight, axis=1 if config.per_channel else None)
        # the same codes for the same weight in the graphs compiled together (ir/arrays.py: derived)
        codes = derived(("int8 codes", params.dtype, params.scale.tobytes(), params.zero_point.tobytes()), [weight],
                        functools.partial(quantized_weight, weight, params))
        scale = np.broadcast_to(params.scale.reshape(-1), (weight.shape[1],)).astype(np.float32)
        bias = rest[0].value if rest else np.zeros(weight.shape[1], np.float32)
        sqnr = worst = float("nan")
        reason = None
        if layer_name(node) in earlier:
            _, _, sqnr, decision, worst = earlier[layer_name(node)]
            reason = None if decision == "int8" else decision
        elif values is not None:
            inputs = values[x.name]
            approximation = evaluate("dynamic_qlinear", [inputs, codes, scale, bias], {})
            reference = _layer_output(node, inputs, weight, [bias])
            sqnr, worst = sqnr_db(reference, approximation), worst_channel_sqnr_db(reference, approximation, -1)
            reason = config.keeps_fp32(sqnr, worst)
        keep = reason is not None
        report.rows.append((layer_name(node), config.scheme, sqnr, reason or "int8", worst))
        f32_bytes += weight.nbytes
        int8_bytes += weight.nbytes if keep else weight.size
        if keep:
            continue
        with graph.inserting_before(node):
            operands = [x, graph.constant(codes, derived_name(weight_node, "int8")), graph.constant(scale),
                        graph.constant(bias.astype(np.float32))]
            replacement = graph.call("dynamic_qlinear", operands, {"activation": node.attrs.get("activation")},
                                     name=suffixed_name(layer_name(node).replace(".", "_"), "dynamic"))
        replace_node(node, replacement, [weight_node, *rest])
    report.weight_bytes = (f32_bytes, int8_bytes)
    return graph, report


def fold_transposed_weights(graph: Graph) -> Graph:
    """A copy of `graph` where a linear whose weight is a transpose of a constant (every PyTorch nn.Linear as
    torch.export gives it, `x @ w.t()`, ONNX's Gemm with transB, Hugging Face GPT-2's lm_head tied to the
    token embedding) reads the transposed constant itself, so that int8 quantization, which takes
    constant weights, takes it too (without it a torch Sequential of Linears quantized no layer). The new
    constant is named `<layer>.weight` when that name is free (the old one is no longer read), else
    `<layer>_t.weight`."""
    graph = graph.copy()
    for node in list(graph.nodes):
        if node.op != "linear" or len(node.inputs) < 2:
            continue
        transpose = node.inputs[1]
        if transpose.op != "transpose" or transpose.inputs[0].op != "constant" or transpose.type.rank != 2:
            continue
        table = transpose.inputs[0]
        value = np.ascontiguousarray(np.transpose(table.value, transpose.attrs["perm"]))
        alone = set(transpose.users) == {node} and set(table.users) == {transpose}
        name = table.name if alone and table.name.endswith(".weight") else \
            f"{table.name.removesuffix('.weight')}_t.weight"
        for _ in range(2 if alone else 1):  # alone: once more, when the old constant has freed its name
            with graph.inserting_before(node):
                weight = graph.constant(value, name)
            replaced = node.inputs[1]
            node.inputs = [node.inputs[0], weight, *node.inputs[2:]]
            for old in (replaced, *replaced.inputs):
                if not old.users and old not in graph.outputs:
                    graph.erase(old)
    return graph


def layer_name(node) -> str:
    """A layer's name for people: its weight's ("fc1" for the weight "fc1.weight", also for "fc1.weight_3", a
    transposed copy the importer numbered beside the original), else the node's."""
    match = re.fullmatch(r"(.+)\.weight(_\d+)?", node.inputs[1].name)
    return match.group(1) if match else node.name


def _fake(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """x quantized and dequantized (the QDQ pair's value)."""
    codes = quantized_weight(x, params)
    return ((codes.astype(np.int32) - params.zero_point).astype(np.float32) * params.scale).astype(np.float32)

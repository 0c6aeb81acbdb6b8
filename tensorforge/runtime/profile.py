"""The profiler: time every fused kernel of a compiled model and place it on this machine's roofline.

    profile = cm.profile(x)           # an instrumented build of the same graph, run `repeat` times
    print(profile)                    # the table, slowest kernel first
    profile.rows                      # the data: KernelTime per kernel
    profile.plot("roofline.svg")      # the picture (matplotlib, the `viz` extra)

Per kernel (one node of the optimized graph: a fused linear + bias + relu is one), the median of
its wall times over the runs, its FLOPs and the bytes it must move at least (every operand read
once, the result written once), hence its GFLOP/s, GB/s and arithmetic intensity. Against the
measured peaks (machine.py) a kernel whose intensity is below the ridge point is memory-bound,
above it compute-bound; `of_roof` is its speed as a fraction of the roof at its intensity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ir import Node, get_op
from ..ir.ops_nn import fused_pool_window, unpooled_conv2d_type
from .machine import MachinePeaks


def _activation_flops(node: Node) -> int:
    """FLOPs per element of a contraction's fused activation: none, relu, relu6 (the clip op's), or a
    gelu ("gelu_tanh"...)."""
    activation = node.attrs.get("activation")
    if activation is None:
        return 0
    op = "gelu" if activation.startswith("gelu") else "clip" if activation == "relu6" else activation
    return get_op(op).element_flops({})


def kernel_flops(node: Node) -> int:
    """Floating-point operations of one node (multiply-add = 2); for the int8 layers, integer
    operations (an int8 multiply-add = 2), so their GFLOP/s column reads as GOP/s."""
    op, size = node.op, node.type.size
    epilogue = size * (len(node.inputs) - 2 + _activation_flops(node))  # bias, residual, activation
    if op == "linear":
        return 2 * size * node.inputs[0].shape[-1] + epilogue
    if op == "sparse_linear":  # only the stored entries: x, values, columns, row_starts, then bias, residual
        rows = size // node.shape[-1] if size else 0
        return 2 * rows * node.inputs[1].shape[0] + epilogue - 2 * size
    if op == "matmul":
        return 2 * size * node.inputs[0].shape[-2 if node.attrs["transpose_a"] else -1] + epilogue
    if op == "conv2d":  # a fused pool: the convolution's elements, then a window's compares per pooled element
        out_channels, group_channels, kh, kw = node.inputs[1].shape
        pooled = node.attrs.get("pool") is not None
        convolved = unpooled_conv2d_type(node).size if pooled else size
        epilogue = convolved * (len(node.inputs) - 2 + _activation_flops(node))
        compares = int(np.prod(fused_pool_window(node.attrs["pool"])[0])) - 1 if pooled else 0
        return 2 * convolved * group_channels * kh * kw + epilogue + compares * size
    if op in ("qlinear", "dynamic_qlinear"):
        return 2 * size * node.inputs[0].shape[-1] + 4 * size  # requantization: convert, scale, round, clip
    if op == "qconv2d":
        return 2 * size * int(np.prod(node.inputs[1].shape[1:])) + 4 * size
    if op in ("max_pool2d", "avg_pool2d"):
        kh, kw = node.attrs["kernel"]
        return size * kh * kw
    if op in ("reduce_sum", "reduce_mean", "reduce_max"):
        return node.inputs[0].type.size
    if op == "softmax":
        return 14 * node.inputs[0].type.size
    if op == "batch_norm":
        return 2 * size
    if op == "layer_norm":  # sum, center, square and sum, then center, divide, scale, shift
        return 8 * size
    if op == "argmax":
        return node.inputs[0].type.size
    if op == "cached_attention":  # q . key, softmax, weight * value for every cache row (the most: the last position)
        rows, features = node.inputs[1].shape[-2:]
        return size * rows * 4 + 14 * rows * (size // features if features else 0)
    return size * get_op(op).element_flops(node.attrs)  # elementwise ops (fused ones too): the registry's


def kernel_bytes(node: Node) -> int:
    """The bytes a node must move at least: each distinct operand read once, its result written once."""
    return sum(operand.type.nbytes for operand in dict.fromkeys(node.inputs)) + node.type.nbytes


@dataclass(frozen=True)
class KernelTime:
    """One kernel's median time and where it sits on the roofline."""

    name: str
    op: str
    shape: tuple[int, ...]
    seconds: float
    flops: int
    nbytes: int
    parts: int
    peaks: MachinePeaks

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def gbytes_per_second(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.nbytes if self.nbytes else 0.0

    @property
    def bound(self) -> str:
        """"compute" or "memory": which roof is lower at this kernel's intensity ("memory" with no FLOPs)."""
        return "compute" if self.intensity >= self.peaks.ridge else "memory"

    @property
    def roof_gflops(self) -> float:
        """The attainable GFLOP/s at this intensity: min(peak, intensity x bandwidth)."""
        return min(self.peaks.gflops, self.intensity * self.peaks.gbytes_per_second)

    @property
    def of_roof(self) -> float:
        """Achieved speed as a fraction of the roof: FLOP/s for compute-bound kernels, bytes/s otherwise."""
        if self.bound == "compute":
            return self.gflops / self.peaks.gflops
        return self.gbytes_per_second / self.peaks.gbytes_per_second


@dataclass
class Profile:
    """Kernel times of one compiled model on one input, with the machine's peaks and the whole call's time."""

    rows: list[KernelTime]
    peaks: MachinePeaks
    call_seconds: float  # median of whole calls from Python (argument checks, native call, result arrays)
    repeat: int

    @property
    def kernel_seconds(self) -> float:
        return sum(row.seconds for row in self.rows)

    def __str__(self) -> str:
        header = (f"{'kernel':<28} {'op':<18} {'time us':>9} {'share':>6} {'MFLOP':>9} {'MB':>8} {'GFLOP/s':>8} "
                  f"{'GB/s':>7} {'FLOP/B':>7} {'bound':>8} {'of roof':>8} {'parts':>5}")
        lines = [f"profile: median of {self.repeat} runs; peaks {self.peaks}", header, "-" * len(header)]
        total = self.kernel_seconds or 1.0
        for row in sorted(self.rows, key=lambda row: -row.seconds):
            lines.append(f"{'%' + row.name:<28} {row.op:<18} {row.seconds * 1e6:>9.1f} {row.seconds / total:>6.1%} "
                         f"{row.flops / 1e6:>9.2f} {row.nbytes / 1e6:>8.2f} {row.gflops:>8.1f} "
                         f"{row.gbytes_per_second:>7.1f} {row.intensity:>7.2f} {row.bound:>8} {row.of_roof:>8.0%} "
                         f"{row.parts:>5}")
        lines.append(f"kernels {self.kernel_seconds * 1e6:.1f} us of a {self.call_seconds * 1e6:.1f} us call "
                     f"(the rest: Python, argument checks, output arrays, copies)")
        return "\n".join(lines)

    def as_dicts(self) -> list[dict]:
        """The table as plain data (JSON-ready)."""
        return [{"kernel": row.name, "op": row.op, "shape": list(row.shape), "seconds": row.seconds,
                 "flops": row.flops, "bytes": row.nbytes, "gflops": row.gflops, "gbytes_per_second":
                 row.gbytes_per_second, "intensity": row.intensity, "bound": row.bound, "of_roof": row.of_roof,
                 "parts": row.parts} for row in self.rows]

    def plot(self, path: str | Path, title: str = "roofline") -> Path:
        """Draw the roofline with one point per kernel (size: its share of the time) into `path` (svg, png...)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError("Profile.plot needs matplotlib: pip install 'tensorforge[viz]'") from error
        path = Path(path)
        peaks = self.peaks
        intensities = [row.intensity for row in self.rows if row.flops] or [peaks.ridge]
        low, high = min(min(intensities) / 2, peaks.ridge / 10), max(max(intensities) * 2, peaks.ridge * 10)
        x = np.geomspace(low, high, 200)
        figure, axes = plt.subplots(figsize=(8, 5))
        axes.loglog(x, np.minimum(peaks.gflops, x * peaks.gbytes_per_second), color="black",
                    label=f"roof: {peaks.gbytes_per_second:.0f} GB/s, {peaks.gflops:.0f} GFLOP/s ({peaks.threads} thr)")
        total = self.kernel_seconds or 1.0
        for row in self.rows:
            if not row.flops:
                continue
            axes.scatter(row.intensity, row.gflops, s=30 + 600 * row.seconds / total, alpha=0.6)
            axes.annotate(f"{row.op} %{row.name}", (row.intensity, row.gflops), fontsize=7,
                          xytext=(4, 4), textcoords="offset points")
        axes.set_xlabel("arithmetic intensity (FLOP / byte)")
        axes.set_ylabel("GFLOP/s")
        axes.set_title(title)
        axes.legend(loc="lower right", fontsize=8)
        axes.grid(True, which="both", alpha=0.3)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
        plt.close(figure)
        return path


def profile_rows(graph_nodes: dict[str, Node], names: list[str], nanoseconds: np.ndarray, parts: dict[str, int],
                 peaks: MachinePeaks) -> list[KernelTime]:
    """KernelTime rows from the runs' times (runs x kernels, ns) of the kernels `names`."""
    medians = np.median(nanoseconds, axis=0) / 1e9
    rows = []
    for name, seconds in zip(names, medians):
        node = graph_nodes[name]
        rows.append(KernelTime(name, node.op, node.shape, float(seconds), kernel_flops(node), kernel_bytes(node),
                               parts.get(name, 1), peaks))
    return rows

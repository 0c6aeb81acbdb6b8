"""conv2d's flat columns (codegen/ops/conv/conv_gemm.py): when an output row fills the GEMM's column panels
poorly (7 x 7 outputs on 32-lane panels), the panels run over the plane's pixels in order and may span
output rows. Checked against the reference interpreter on host (1 and 2 threads) and armv8."""

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import nn
from tensorforge.codegen.gemm.tiling import gemm_tiling
from tensorforge.codegen.ops.conv.conv_gemm import ConvGeometry, flat_columns

# (channels, outputs, size, kernel, stride, padding)
CASES = [
    (32, 64, 7, 3, 1, 1),   # ResNet's layer4: 49 pixels span two panels
    (64, 48, 7, 1, 1, 0),   # pointwise, read in place
    (16, 40, 14, 3, 2, 1),  # strided: lanes gather across output rows
    (32, 32, 9, 1, 2, 0),   # strided pointwise: not in place
    (8, 20, 5, 3, 1, 0),    # unpadded, 3 x 3 outputs
]


class ConvRelu(nn.Module):
    def __init__(self, conv: nn.Conv2d, residual: bool):
        super().__init__()
        self.conv, self.residual = conv, residual

    def forward(self, x):
        y = self.conv(x)
        return nn.ReLU()(y + x if self.residual else y)


def _model(case, rng):
    channels, outputs, _, kernel, stride, padding = case
    conv = nn.Conv2d(channels, outputs, kernel, stride=stride, padding=padding, rng=rng)
    return ConvRelu(conv, residual=channels == outputs and stride == 1 and 2 * padding == kernel - 1)


def _uses_flat_columns(model, x, target) -> bool:
    graph = tfg.compile(model, x, target=target).graph
    convs = [node for node in graph.nodes if node.op == "conv2d"]
    return bool(convs) and all(flat_columns(ConvGeometry.of(node), gemm_tiling(tfg.Target.parse(target)))
                               for node in convs)


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case)))
@pytest.mark.parametrize("batch", [1, 3])
def test_flat_columns_match_the_interpreter_on_host(case, batch):
    rng = np.random.default_rng(sum(case) + batch)
    model = _model(case, rng)
    x = rng.standard_normal((batch, case[0], case[2], case[2])).astype(np.float32)
    for threads in (1, 2):
        tfg.check(model, x, target="host", threads=threads)


@pytest.mark.parametrize("case", CASES[:3], ids=lambda case: "x".join(map(str, case)))
def test_flat_columns_match_the_interpreter_on_armv8(case):
    rng = np.random.default_rng(sum(case))
    model = _model(case, rng)
    x = rng.standard_normal((1, case[0], case[2], case[2])).astype(np.float32)
    tfg.check(model, x, target="armv8")


def test_the_cases_take_flat_columns_and_wide_rows_do_not():
    rng = np.random.default_rng(0)
    for case in CASES:
        x = rng.standard_normal((1, case[0], case[2], case[2])).astype(np.float32)
        assert _uses_flat_columns(_model(case, rng), x, "x86-64-v4"), case
    wide = nn.Conv2d(8, 8, 3, padding=1, rng=rng)  # 32-pixel rows fill the panels: rows stay
    assert not _uses_flat_columns(nn.Sequential(wide), rng.standard_normal((1, 8, 32, 32)).astype(np.float32),
                                  "x86-64-v4")


# Stride-2 convolutions that keep output rows (rows of whole panels: the plane fills them no better):
# each vector of a sliver row is two masked loads of the input and a shuffle of their even elements.
# Unpadded, the last vector of the last channel ends at the input buffer's last element.
ROW_STRIDED = [
    (3, 20, 65, 3, 2, 0),   # 32-pixel rows: one panel each
    (4, 9, 64, 3, 2, 1),    # padded: read from the padded copy
    (2, 7, 129, 3, 2, 0),   # 64-pixel rows: two panels
    (5, 6, 64, 1, 2, 0),    # strided pointwise with 32-pixel rows
]


@pytest.mark.parametrize("case", ROW_STRIDED, ids=lambda case: "x".join(map(str, case)))
@pytest.mark.parametrize("batch", [1, 2])
def test_strided_rows_match_the_interpreter_on_host(case, batch):
    rng = np.random.default_rng(sum(case) + batch)
    model = _model(case, rng)
    x = rng.standard_normal((batch, case[0], case[2], case[2])).astype(np.float32)
    assert not _uses_flat_columns(model, x, "x86-64-v4")
    for threads in (1, 2):
        tfg.check(model, x, target="host", threads=threads)


@pytest.mark.parametrize("case", ROW_STRIDED[::2], ids=lambda case: "x".join(map(str, case)))
def test_strided_rows_match_the_interpreter_on_armv8(case):
    rng = np.random.default_rng(sum(case))
    model = _model(case, rng)
    tfg.check(model, rng.standard_normal((1, case[0], case[2], case[2])).astype(np.float32), target="armv8")


# Blocks of column panels (conv_gemm._block_panels): every row panel runs over a block's slivers in turn.
# (channels, outputs, height, width, kernel, stride, padding): taps and panels such that a plane or a row
# spans several blocks (COLUMN_BLOCK_BYTES of slivers), the last with the plane's or the row's tail panel.
BLOCKED = [
    (24, 30, 15, 15, 3, 1, 1),   # flat: 225 pixels, 8 panels (the last of 1) in blocks of 4 (216 taps)
    (64, 20, 3, 224, 3, 1, 1),   # rows: 224 pixels, 7 panels in blocks of 3 (288 taps per depth block)
    (40, 17, 24, 24, 1, 1, 0),   # pointwise in place: 576 pixels, 18 panels in one block (40 taps)
]


@pytest.mark.parametrize("case", BLOCKED, ids=lambda case: "x".join(map(str, case)))
@pytest.mark.parametrize("residual", [False, True])
def test_blocks_of_column_panels_match_the_interpreter(case, residual):
    from codegen_harness import compile_and_run, conv_graph

    from tensorforge import ir
    from tensorforge.codegen.ops.conv import conv_gemm

    channels, outputs, height, width, kernel, stride, padding = case
    graph, inputs = conv_graph(np.random.default_rng(sum(case)), channels, outputs, height, width, kernel, stride,
                               padding, residual=residual)
    shape, tiling = ConvGeometry.of(graph.outputs[0]), gemm_tiling(tfg.Target.parse("x86-64-v4"))
    kc = tiling.depth_blocks(shape.taps, shape.window)[1]
    panels = (-(-height * width // tiling.columns) if flat_columns(shape, tiling)
              else -(-width // tiling.columns))
    assert panels > conv_gemm._block_panels(tiling, kc) or case == BLOCKED[2]
    expected = ir.interpret(graph, *inputs)
    for threads in (1, 2, 3):
        (actual,) = compile_and_run(graph, *inputs, threads=threads)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    (actual,) = compile_and_run(graph, *inputs, target="armv8")
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)

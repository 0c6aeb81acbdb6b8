"""Memory planning by liveness (codegen/memory.py): values whose lives overlap never share bytes,
the others do, and compiled code stays right when buffers are reused."""

from __future__ import annotations

import re

import numpy as np
from codegen_harness import compile_and_run
from hypothesis import given
from hypothesis import strategies as st
from test_codegen_random import random_graphs

from tensorforge import ir
from tensorforge.codegen.build import live_nodes
from tensorforge.codegen.lowering import lowering_for, writes_images_apart
from tensorforge.codegen.memory import plan_workspace
from tensorforge.codegen.target import Target
from tensorforge.ir import DType, TensorType


def chain(length: int, shape=(64, 64)) -> ir.Graph:
    graph = ir.Graph()
    value = graph.add_input("x", TensorType(shape, DType.f32))
    for index in range(length):
        value = graph.call("tanh" if index % 2 else "relu", [value], name=f"v{index}")
    graph.outputs = [value]
    return graph


def plan_for(graph: ir.Graph):
    nodes = live_nodes(graph)
    host = Target.parse("host")
    computed = [node for node in nodes if node.op not in ("input", "constant") and not lowering_for(node, host).is_view]
    return computed, plan_workspace(computed, {}, image_strided=lambda node: writes_images_apart(node, host))


def test_an_elementwise_chain_runs_in_one_buffer_whatever_its_length():
    """Each op overwrites its operand, which dies there (in-place reuse)."""
    computed, plan = plan_for(chain(10))
    value_bytes = 64 * 64 * 4
    assert plan.unshared_bytes == 10 * value_bytes
    assert plan.size == value_bytes
    assert {plan.values[node] for node in computed} == {0}
    assert plan.in_place == dict(zip(computed[1:], computed[:-1]))
    value = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    (actual,) = compile_and_run(chain(10), value)
    np.testing.assert_allclose(actual, ir.interpret(chain(10), value), rtol=1e-5, atol=1e-6)


def test_no_in_place_over_a_broadcast_or_a_value_still_needed():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((4, 8), DType.f32))
    row = graph.call("exp", [graph.add_input("r", TensorType((8,), DType.f32))], name="row")
    a = graph.call("tanh", [x], name="a")
    b = graph.call("add", [a, row], name="b")  # row is broadcast: b may take a's bytes, not row's
    c = graph.call("relu", [b], name="c")
    graph.outputs = [graph.call("mul", [c, b], name="d")]  # b is read after c: c must not overwrite it
    _, plan = plan_for(graph)
    assert plan.in_place.get(b) is a and c not in plan.in_place
    assert plan.in_place.get(graph.node("d")) in (b, c)


def test_a_value_read_later_keeps_its_bytes():
    """%a is read by the last step, so nothing computed between may take its bytes."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((16,), DType.f32))
    a = graph.call("exp", [x], name="a")
    b = graph.call("relu", [a], name="b")
    c = graph.call("tanh", [b], name="c")
    d = graph.call("neg", [c], name="d")
    graph.outputs = [graph.call("add", [a, d], name="e")]
    _, plan = plan_for(graph)
    for other in ("b", "c", "d"):
        assert plan.values[graph.node(other)] != plan.values[a]
    value = np.linspace(-2, 2, 16, dtype=np.float32)
    (actual,) = compile_and_run(graph, value)
    np.testing.assert_allclose(actual, ir.interpret(graph, value), rtol=1e-5, atol=1e-6)


def test_a_view_keeps_its_base_alive():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((4, 4), DType.f32))
    a = graph.call("exp", [x], name="a")
    flat = graph.call("reshape", [a], {"shape": (16,)}, name="flat")
    b = graph.call("tanh", [graph.call("relu", [x])], name="b")
    graph.outputs = [graph.call("add", [flat, graph.call("reshape", [b], {"shape": (16,)})])]
    _, plan = plan_for(graph)
    assert plan.values[a] != plan.values[b]


def _life(node: ir.Node, step: dict[ir.Node, int], end: int) -> tuple[int, int]:
    """From the step computing `node` to the last step reading it, directly or through views."""
    last, pending, outputs = step[node], list(node.users), set(node.graph.outputs)
    if node in outputs:
        last = end
    while pending:
        user = pending.pop()
        if user in step:
            last = max(last, step[user])
        elif user.users or user in outputs:  # a view: its readers read `node`'s bytes
            last = end if user in outputs else last
            pending.extend(user.users)
    return step[node], last


def in_place_is_legal(operand: ir.Node, value: ir.Node, lives) -> bool:
    """`value` may share `operand`'s bytes: an elementwise op reading it, of the same shape and bytes,
    computed at the step where `operand` is read for the last time."""
    return ("elementwise" in ir.OPS[value.op].traits and operand in value.inputs
            and operand.type.shape == value.type.shape and operand.type.nbytes == value.type.nbytes
            and lives[operand][1] == lives[value][0])


@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_values_alive_at_the_same_step_never_overlap(graph, seed):
    computed, plan = plan_for(graph)
    step = {node: index for index, node in enumerate(computed)}
    lives = {node: _life(node, step, len(computed)) for node in computed}
    for first in computed:
        for second in computed:
            (a0, a1), (b0, b1) = lives[first], lives[second]
            if in_place_is_legal(first, second, lives) or in_place_is_legal(second, first, lives):
                continue
            if first is not second and a0 <= b1 and b0 <= a1:
                start_a, start_b = plan.values[first], plan.values[second]
                assert start_a + first.type.nbytes <= start_b or start_b + second.type.nbytes <= start_a
    x = np.random.default_rng(seed).standard_normal(graph.inputs[0].shape).astype(np.float32)
    for actual, expected in zip(compile_and_run(graph, x), ir.interpret(graph, x), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_without_sharing_every_buffer_has_bytes_of_its_own():
    """share_memory=False (the ablation's "no memory planning"): the arena is the sum of all buffers."""
    import tensorforge as tf
    from tensorforge.codegen import build
    from tensorforge.models import small_cnn

    x = np.zeros((2, 3, 12, 12), np.float32)
    graph = tf.compile(small_cnn(), x).graph
    shared, unshared = build(graph, "host"), build(graph, "host", share_memory=False)
    assert unshared.memory.size == unshared.memory.unshared_bytes > shared.memory.size
    spans = sorted((offset, offset + node.type.nbytes) for node, offset in unshared.memory.values.items())
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


def test_an_in_place_kernel_has_no_scalar_fallback_loop():
    """gelu writing over its operand's bytes reads it through the output pointer, so LLVM vectorizes
    its loop with no scalar fallback for overlapping pointers, which equal pointers would always
    take (a GPT's GELUs, one function shared by its layers, ran 14x slower so). Three exp -> gelu
    pairs: the gelus share one function, called three times; LLVM may still inline it (its
    polynomials are fmuladd calls, which its inliner counts as cheap), so the check covers the
    whole module, where no kernel of this graph needs a scalar loop."""
    from tensorforge.codegen import build

    graph = ir.Graph()
    value = graph.add_input("x", TensorType((32, 1024), DType.f32))
    for index in range(3):
        exp = graph.call("exp", [value], name=f"e{index}")
        value = graph.call("gelu", [exp], {"approximation": "tanh"}, name=f"g{index}")
    graph.outputs = [value]
    artifact = build(graph, "host")
    assert artifact.memory.in_place[graph.node("g1")] is graph.node("e1")
    function = re.search(r'define internal [^@]*@"?gelu\.g0"?\(.*?\n}\n', artifact.llvm_ir, re.S)
    body = function.group(0) if function else artifact.llvm_ir
    assert re.search(r"<\d+ x float>", body)  # the vector loop
    assert not re.search(r"= f(?:mul|add|sub|div) (?:\w+ )*float ", body)  # and no scalar one
    assert not re.search(r"call (?:\w+ )*float @llvm\.", body)  # nor a scalar fmuladd
    data = np.random.default_rng(0).standard_normal((32, 1024)).astype(np.float32)
    (actual,) = compile_and_run(graph, data)
    np.testing.assert_allclose(actual, ir.interpret(graph, data), rtol=1e-4, atol=1e-5)


def fire(batch: int = 1, squeeze_user: bool = False, expand_output: bool = False, width: int = 8,
         twice: bool = False, left_outputs: int = 16, right=None) -> ir.Graph:
    """SqueezeNet's Fire module: a 1 x 1 squeeze, then 1 x 1 and 3 x 3 expands concatenated along the
    channels, then a relu; variants give an operand a second user or make it a graph output, or make
    the right operand `right(graph, squeeze)` instead of the 3 x 3 expand."""
    rng = np.random.default_rng(3)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((batch, 8, width, width), DType.f32))

    def conv(value, outputs, kernel, name):
        weight = graph.constant((rng.standard_normal((outputs, value.shape[1], kernel, kernel)) / 4).astype(np.float32),
                                f"{name}.w")
        return graph.call("conv2d", [value, weight], {"padding": kernel // 2, "activation": "relu"}, name=name)

    squeeze = conv(x, 4, 1, "squeeze")
    left = conv(squeeze, left_outputs, 1, "left")
    right = conv(squeeze, 16, 3, "right") if right is None else right(graph, squeeze)
    joined = graph.call("concat", [left, left] if twice else [left, right], {"axis": 1}, name="joined")
    graph.outputs = [graph.call("tanh", [joined], name="out")]
    if squeeze_user:
        graph.outputs.append(graph.call("neg", [left], name="other"))
    if expand_output:
        graph.outputs.append(right)
    return graph


def test_a_concat_gathers_its_operands_in_place_at_batch_one():
    """At batch 1 each expand's result is one contiguous block of the concat's: its kernel writes there
    (16 x 8 x 8 floats = 4096 bytes on), the concat is no kernel, and the results stay right."""
    graph = fire()
    computed, plan = plan_for(graph)
    joined, left, right = graph.node("joined"), graph.node("left"), graph.node("right")
    assert plan.gathered == frozenset({joined})
    assert plan.values[left] == plan.values[joined] and plan.values[right] == plan.values[joined] + 4096
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)
    for target, threads in (("host", 1), ("host", 2), ("armv8", 2)):
        (actual,) = compile_and_run(graph, x, target=target, threads=threads)
        np.testing.assert_allclose(actual, ir.interpret(graph, x), rtol=1e-5, atol=1e-6)


def test_a_concat_of_several_images_gathers_convolutions_with_their_images_apart():
    """At batch 3 each operand is three blocks of the concat's result, one per image: its convolution
    writes its images there, the concat's image apart (output_image_stride). The Fire module's expands
    (32 x 8 x 8 floats an image) by the direct GEMM (1 x 1) and by Winograd (3 x 3); a deep pair at
    7 x 7 (576 -> 96 by the pixel form, 576 -> 16 by the direct GEMM of 3 x 3 taps); a conv with a
    fused 2 x 2 max pool (direct, then by Winograd) beside a stride-2 one; at 1 and 2 threads and on
    armv8."""
    from tensorforge.codegen.memory import output_image_stride
    from tensorforge.codegen.ops.conv.pixel_rows import prefers_pixel_rows

    rng = np.random.default_rng(5)

    def winograd(graph, squeeze):
        weight = graph.constant((rng.standard_normal((16, 4, 3, 3)) / 4).astype(np.float32), "right.w")
        bias = graph.constant(rng.standard_normal(16).astype(np.float32), "right.b")
        return graph.call("conv2d", [squeeze, weight, bias], {"padding": 1, "activation": "relu", "winograd": True},
                          name="right")

    def deep() -> ir.Graph:
        graph = ir.Graph()
        x = graph.add_input("x", TensorType((3, 576, 7, 7), DType.f32))
        convs = []
        for name, outputs, kernel in (("left", 96, 1), ("right", 16, 3)):
            weight = graph.constant((rng.standard_normal((outputs, 576, kernel, kernel)) / 24).astype(np.float32),
                                    f"{name}.w")
            convs.append(graph.call("conv2d", [x, weight], {"padding": kernel // 2}, name=name))
        graph.outputs = [graph.call("concat", convs, {"axis": 1}, name="joined")]
        graph.outputs = [graph.call("tanh", graph.outputs, name="out")]
        return graph

    def pooled(winograd: bool = False) -> ir.Graph:
        graph = ir.Graph()
        x = graph.add_input("x", TensorType((3, 8, 16, 16), DType.f32))
        convs = []
        for name, kernel, attrs in (("left", 3, {"padding": 1, "pool": "max_2x2", "winograd": winograd}),
                                    ("right", 1, {"stride": 2})):
            weight = graph.constant((rng.standard_normal((16, 8, kernel, kernel)) / 4).astype(np.float32), f"{name}.w")
            convs.append(graph.call("conv2d", [x, weight], attrs, name=name))
        graph.outputs = [graph.call("tanh", [graph.call("concat", convs, {"axis": 1}, name="joined")], name="out")]
        return graph

    host = Target.parse("host")
    for graph, left_floats in ((fire(batch=3, right=winograd), 16 * 64), (deep(), 96 * 49), (pooled(), 16 * 64),
                               (pooled(winograd=True), 16 * 64)):
        joined, left, right = graph.node("joined"), graph.node("left"), graph.node("right")
        _, plan = plan_for(graph)
        assert plan.gathered == frozenset({joined})
        assert plan.values[left] == plan.values[joined] and plan.values[right] == plan.values[joined] + 4 * left_floats
        image = joined.type.size // 3
        assert output_image_stride(left, plan.gathered) == output_image_stride(right, plan.gathered) == image
        assert output_image_stride(graph.node("out"), plan.gathered) == 0
        if graph.inputs[0].shape[1] == 576:
            assert prefers_pixel_rows(left, host) and not prefers_pixel_rows(right, host)
        x = rng.standard_normal(graph.inputs[0].shape).astype(np.float32)
        for target, threads in (("host", 1), ("host", 2), ("armv8", 2)):
            (actual,) = compile_and_run(graph, x, target=target, threads=threads)
            np.testing.assert_allclose(actual, ir.interpret(graph, x), rtol=1e-5, atol=1e-5)


def test_a_concat_copies_where_its_operands_cannot_be_written_in_place():
    """At batch two, an operand whose kernel writes its images only contiguously (a depthwise conv,
    a relu), a graph input, or blocks at unaligned offsets (12 x 5 x 5 floats: 1,200 bytes); at batch
    one, an operand with another user, one that is a graph output, the same operand twice, or a
    second block at an unaligned offset."""
    def depthwise(graph, squeeze):
        weight = graph.constant(np.full((4, 1, 3, 3), 0.1, np.float32), "dw.w")
        return graph.call("conv2d", [squeeze, weight], {"padding": 1, "groups": 4}, name="right")

    def relu(graph, squeeze):
        return graph.call("relu", [squeeze], name="right")

    def graph_input(graph, squeeze):
        return graph.inputs[0]

    for graph in (fire(batch=2, right=depthwise), fire(batch=2, right=relu), fire(batch=2, right=graph_input),
                  fire(batch=2, width=5, left_outputs=12),
                  fire(squeeze_user=True), fire(expand_output=True), fire(twice=True),
                  fire(width=5, left_outputs=12)):
        _, plan = plan_for(graph)
        assert plan.gathered == frozenset(), graph
        inputs = [np.random.default_rng(1).standard_normal(graph.inputs[0].shape).astype(np.float32)]
        expected = ir.interpret(graph, *inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = compile_and_run(graph, *inputs)
        assert len(actual) == len(expected)
        for got, want in zip(actual, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

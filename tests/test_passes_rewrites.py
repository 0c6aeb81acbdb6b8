"""Each pass on small graphs written as text, compared as text after the pass, including cases
where the pass must not fire. Every rewrite is also checked to verify and to keep the outputs."""

from __future__ import annotations

import textwrap
import tracemalloc

import numpy as np
import pytest

from tensorforge import ir
from tensorforge.passes import (
    PassContext,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_batch_norm,
    fold_constants,
    fuse_activation,
    simplify,
)
from tensorforge.passes.rewrite import Pattern, match, rebuilt, rewrite_to_fixpoint, single_use


def random_inputs(graph: ir.Graph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(node.shape) * 3).astype(node.dtype.numpy) for node in graph.inputs]


def run_pass(function, text: str, constants: dict | None = None, ctx: PassContext | None = None) -> ir.Graph:
    """Parse `text`, run the pass; check the result verifies and computes what the input did."""
    graph = ir.parse(textwrap.dedent(text).strip(), constants)
    original, inputs = graph.copy(), random_inputs(graph)
    result = function(graph, ctx or PassContext())
    ir.verify(result)
    expected, actual = ir.run_graph(original, inputs), ir.run_graph(result, inputs)
    for before, after in zip(original.outputs, result.outputs, strict=True):
        assert before.type == after.type
        np.testing.assert_allclose(actual[after], expected[before], rtol=1e-5, atol=1e-6)
    return result


def assert_rewrites(function, before: str, after: str, constants: dict | None = None) -> ir.Graph:
    result = run_pass(function, before, constants)
    assert str(result) == textwrap.dedent(after).strip()
    return result


def assert_unchanged(function, text: str, constants: dict | None = None, ctx: PassContext | None = None) -> None:
    assert str(run_pass(function, text, constants, ctx)) == textwrap.dedent(text).strip()


# --- the pattern matcher and the rewrite driver ---------------------------------------------------

X, Y = Pattern(name="x"), Pattern(name="y")
# neg(sub(x, y)) -> sub(y, x), when nothing else reads the difference
SWAPPED = [(Pattern("neg", [Pattern("sub", [X, Y], single_use=True)]),
            lambda m: m["x"].graph.call("sub", [m["y"], m["x"]]))]


def swap(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, SWAPPED)


def test_a_pattern_captures_nested_producers_by_name():
    graph = ir.parse(textwrap.dedent("""
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0], [2.0], [3.0]]} : f32[3,1]
          %lin = linear(%x, %w) : f32[2,1]
          %e = exp(%lin) : f32[2,1]
          %r = relu(%e) : f32[2,1]
          return %r
        }""").strip())
    pattern = Pattern("relu", [Pattern(("exp", "neg"), [Pattern("linear", name="lin")], name="act")], name="root")
    captures = match(pattern, graph.node("r"))
    assert {name: node.name for name, node in captures.items()} == {"root": "r", "act": "e", "lin": "lin"}
    assert match(Pattern("linear", [X]), graph.node("lin")) is None  # two operands, one pattern
    assert match(Pattern("linear", [X, Pattern("constant", name="w")]), graph.node("lin"))["w"].name == "w"
    assert match(Pattern("linear", where=lambda node: node.shape == (2, 3)), graph.node("lin")) is None
    assert match(Pattern(None, name="any"), graph.node("x")) == {"any": graph.node("x")}


def test_a_name_used_twice_binds_one_node():
    graph = ir.parse(textwrap.dedent("""
        graph(%x: f32[3], %y: f32[3]) {
          %a = mul(%x, %x) : f32[3]
          %b = mul(%x, %y) : f32[3]
          %c = add(%a, %b) : f32[3]
          return %c
        }""").strip())
    square = Pattern("mul", [X, X])
    assert match(square, graph.node("a")) == {"x": graph.node("x")}
    assert match(square, graph.node("b")) is None


def test_single_use_means_one_reader_and_not_an_output():
    graph = ir.parse(textwrap.dedent("""
        graph(%x: f32[3]) {
          %a = exp(%x) : f32[3]
          %b = mul(%a, %a) : f32[3]
          %c = neg(%b) : f32[3]
          %d = relu(%b) : f32[3]
          %e = add(%c, %d) : f32[3]
          return %e, %d
        }""").strip())
    assert [single_use(graph.node(name)) for name in "abcde"] == [True, False, True, False, False]


def test_a_rule_replaces_the_root_and_erases_the_producer_it_absorbed():
    assert_rewrites(swap, """
        graph(%x: f32[3], %y: f32[3]) {
          %d = sub(%x, %y) : f32[3]
          %n = neg(%d) : f32[3]
          %r = relu(%n) : f32[3]
          return %r
        }""", """
        graph(%x: f32[3], %y: f32[3]) {
          %0 = sub(%y, %x) : f32[3]
          %r = relu(%0) : f32[3]
          return %r
        }""")


@pytest.mark.parametrize("text", ["""
    graph(%x: f32[3], %y: f32[3]) {
      %d = sub(%x, %y) : f32[3]
      %n = neg(%d) : f32[3]
      %e = exp(%d) : f32[3]
      %s = add(%n, %e) : f32[3]
      return %s
    }""", """
    graph(%x: f32[3], %y: f32[3]) {
      %d = sub(%x, %y) : f32[3]
      %n = neg(%d) : f32[3]
      return %n, %d
    }""", """
    graph(%x: f32[3], %y: f32[3]) {
      %d = sub(%x, %y) : f32[3]
      %n = neg(%d) : f32[3]
      %r = relu(%x) : f32[3]
      return %r
    }"""], ids=["second-user", "graph-output", "dead"])
def test_a_rule_does_not_fire_on_a_producer_still_needed_or_on_dead_nodes(text):
    assert_unchanged(swap, text)


def test_a_rule_that_declines_lets_the_next_one_try():
    rules = [(Pattern("neg", [X], name="neg"), lambda m: None),  # matches, but declines
             (Pattern("neg", [Pattern("neg", [X])]), lambda m: m["x"])]
    assert_rewrites(lambda graph, ctx: rewrite_to_fixpoint(graph, rules), """
        graph(%x: f32[3]) {
          %a = neg(%x) : f32[3]
          %b = neg(%a) : f32[3]
          %c = exp(%b) : f32[3]
          return %c
        }""", """
        graph(%x: f32[3]) {
          %c = exp(%x) : f32[3]
          return %c
        }""")


def test_rebuilt_keeps_the_op_and_updates_operands_and_attributes():
    graph = ir.parse(textwrap.dedent("""
        graph(%x: f32[2,3], %r: f32[2,2]) {
          %w = constant() {value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]} : f32[3,2]
          %lin = linear(%x, %w) : f32[2,2]
          return %lin
        }""").strip())
    lin = graph.node("lin")
    fused = rebuilt(lin, [*lin.inputs, graph.node("r")], residual=True, activation="relu")
    assert fused.format() == '%0 = linear(%x, %w, %r) {activation="relu", residual=true} : f32[2,2]'
    assert rebuilt(lin).format() == "%1 = linear(%x, %w) : f32[2,2]"


# --- simplify ------------------------------------------------------------------------------------

def test_simplify_removes_arithmetic_identities():
    assert_rewrites(simplify, """
        graph(%x: f32[4,8]) {
          %one = constant() {value=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]} : f32[8]
          %zero = constant() {value=0.0} : f32[]
          %1 = mul(%x, %one) : f32[4,8]
          %2 = add(%zero, %1) : f32[4,8]
          %3 = neg(%2) : f32[4,8]
          %4 = neg(%3) : f32[4,8]
          %r1 = relu(%4) : f32[4,8]
          %r2 = relu(%r1) : f32[4,8]
          %5 = sub(%r2, %zero) : f32[4,8]
          %6 = div(%5, %one) : f32[4,8]
          %7 = mul(%one, %6) : f32[4,8]
          %8 = cast(%7) {dtype=f32} : f32[4,8]
          return %8
        }""", """
        graph(%x: f32[4,8]) {
          %r1 = relu(%x) : f32[4,8]
          return %r1
        }""")


def test_simplify_drops_a_clip_that_contains_the_clip_inside_it():
    assert_rewrites(simplify, """
        graph(%x: f32[4]) {
          %1 = clip(%x) {min=0.0, max=6.0} : f32[4]
          %2 = clip(%1) {min=-1.0} : f32[4]
          return %2
        }""", """
        graph(%x: f32[4]) {
          %1 = clip(%x) {min=0.0, max=6.0} : f32[4]
          return %1
        }""")
    assert_unchanged(simplify, """
        graph(%x: f32[4]) {
          %1 = clip(%x) {min=0.0, max=6.0} : f32[4]
          %2 = clip(%1) {min=1.0} : f32[4]
          return %2
        }""")


def test_simplify_on_integers():
    assert_rewrites(simplify, """
        graph(%x: i32[3]) {
          %one = constant() {value=[1, 1, 1]} : i32[3]
          %1 = mul(%x, %one) : i32[3]
          %2 = neg(%1) : i32[3]
          return %2
        }""", """
        graph(%x: i32[3]) {
          %2 = neg(%x) : i32[3]
          return %2
        }""")


def graph_of_x2(*lines: str) -> str:
    """A graph of one input %x: f32[2] with `lines` as its body; the last line's value is the output."""
    body = "\n".join(f"  {line}" for line in lines)
    return f"graph(%x: f32[2]) {{\n{body}\n  return {lines[-1].split(' = ')[0]}\n}}"


@pytest.mark.parametrize("text", [
    graph_of_x2("%c = constant() {value=[[1.0, 1.0]]} : f32[1,2]", "%y = mul(%x, %c) : f32[1,2]"),  # broadcasts x
    graph_of_x2("%c = constant() {value=[1.0, 2.0]} : f32[2]", "%y = mul(%x, %c) : f32[2]"),  # not all ones
    graph_of_x2("%c = constant() {value=[0.0, 0.0]} : f32[2]", "%y = sub(%c, %x) : f32[2]"),  # 0 - x is -x
    graph_of_x2("%c = constant() {value=1.0} : f32[]", "%y = div(%c, %x) : f32[2]"),  # 1 / x
    graph_of_x2("%r = relu(%x) : f32[2]", "%y = neg(%r) : f32[2]"),
    graph_of_x2("%y = cast(%x) {dtype=i32} : i32[2]"),
    graph_of_x2("%t = transpose(%x) {perm=[0]} : f32[2]", "%y = reshape(%x) {shape=[1, 2]} : f32[1,2]"),  # t dead
], ids=["broadcast", "not-ones", "zero-minus", "one-over", "relu-neg", "cast", "dead"])
def test_simplify_does_not_fire(text):
    assert_unchanged(simplify, text)


def test_simplify_merges_reshape_and_flatten_chains():
    assert_rewrites(simplify, """
        graph(%x: f32[2,3,4]) {
          %1 = reshape(%x) {shape=[24]} : f32[24]
          %a = reshape(%1) {shape=[6, 4]} : f32[6,4]
          %2 = reshape(%x) {shape=[2, 12]} : f32[2,12]
          %b = flatten(%2) {start_axis=0} : f32[24]
          %3 = flatten(%x) {start_axis=1} : f32[2,12]
          %c = reshape(%3) {shape=[2, 3, 4]} : f32[2,3,4]
          %d = flatten(%a) {start_axis=1} : f32[6,4]
          return %a, %b, %c, %d
        }""", """
        graph(%x: f32[2,3,4]) {
          %0 = reshape(%x) {shape=[6, 4]} : f32[6,4]
          %1 = reshape(%x) {shape=[24]} : f32[24]
          return %0, %1, %x, %0
        }""")


def test_simplify_composes_transposes():
    assert_rewrites(simplify, """
        graph(%x: f32[2,3,4]) {
          %1 = transpose(%x) {perm=[1, 0, 2]} : f32[3,2,4]
          %a = transpose(%1) {perm=[2, 1, 0]} : f32[4,2,3]
          %2 = transpose(%x) {perm=[2, 0, 1]} : f32[4,2,3]
          %b = transpose(%2) {perm=[1, 2, 0]} : f32[2,3,4]
          %c = transpose(%x) {perm=[0, 1, 2]} : f32[2,3,4]
          return %a, %b, %c
        }""", """
        graph(%x: f32[2,3,4]) {
          %0 = transpose(%x) {perm=[2, 0, 1]} : f32[4,2,3]
          return %0, %x, %x
        }""")


def test_simplify_leaves_dead_nodes_to_dead_code_elimination():
    assert_unchanged(simplify, """
        graph(%x: f32[3]) {
          %1 = neg(%x) : f32[3]
          %2 = neg(%1) : f32[3]
          %y = relu(%x) : f32[3]
          return %y
        }""")


# --- fold-constants ------------------------------------------------------------------------------

def test_fold_constants_evaluates_weight_only_chains():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = assert_rewrites(fold_constants, """
        graph(%x: f32[4,3]) {
          %w = constant() {value=[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]} : f32[2,3]
          %two = constant() {value=2.0} : f32[]
          %wt = transpose(%w) {perm=[1, 0]} : f32[3,2]
          %7 = mul(%wt, %two) : f32[3,2]
          %y = matmul(%x, %7) : f32[4,2]
          return %y, %wt
        }""", """
        graph(%x: f32[4,3]) {
          %wt_folded = constant() {value=[[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]} : f32[3,2]
          %folded_7 = constant() {value=[[0.0, 6.0], [2.0, 8.0], [4.0, 10.0]]} : f32[3,2]
          %y = matmul(%x, %folded_7) : f32[4,2]
          return %y, %wt_folded
        }""")
    folded = result.node("wt_folded").value
    np.testing.assert_array_equal(folded, w.T)
    assert folded.flags.c_contiguous


@pytest.mark.parametrize("text", ["""
    graph(%x: f32[3]) {
      %c = constant() {value=[1.0, 2.0, 3.0]} : f32[3]
      %y = add(%x, %c) : f32[3]
      return %y
    }""", """
    graph(%x: f32[3]) {
      %c = constant() {value=[1.0, 2.0, 3.0]} : f32[3]
      %dead = exp(%c) : f32[3]
      %y = neg(%x) : f32[3]
      return %y
    }"""], ids=["reads-an-input", "dead"])
def test_fold_constants_does_not_fire(text):
    assert_unchanged(fold_constants, text)


def test_fold_constants_does_not_blow_up_a_broadcast():
    text = """
        graph(%x: f32[1]) {
          %col = constant() : f32[512,1]
          %row = constant() : f32[1024]
          %big = add(%col, %row) : f32[512,1024]
          %s = reduce_sum(%big) {axes=[0, 1]} : f32[]
          %y = mul(%x, %s) : f32[1]
          return %y
        }"""
    constants = {"col": np.full((512, 1), 1e-3, np.float32), "row": np.full(1024, 1e-3, np.float32)}
    assert_unchanged(fold_constants, text, constants, PassContext(config={"fold_max_elements": 1000}))
    assert "%s_folded = constant() {value=" in str(run_pass(fold_constants, text, constants))  # under 1M: folds


# --- eliminate-common-subexpressions -------------------------------------------------------------

def test_cse_merges_equal_nodes_commuted_operands_and_equal_constants():
    assert_rewrites(eliminate_common_subexpressions, """
        graph(%x: f32[3]) {
          %a = exp(%x) : f32[3]
          %b = exp(%x) : f32[3]
          %c1 = constant() {value=[1.0, 1.0, 1.0]} : f32[3]
          %c2 = constant() {value=[1.0, 1.0, 1.0]} : f32[3]
          %s1 = add(%a, %c1) : f32[3]
          %s2 = add(%c2, %b) : f32[3]
          %y = mul(%s1, %s2) : f32[3]
          return %y, %s2
        }""", """
        graph(%x: f32[3]) {
          %a = exp(%x) : f32[3]
          %c1 = constant() {value=[1.0, 1.0, 1.0]} : f32[3]
          %s1 = add(%a, %c1) : f32[3]
          %y = mul(%s1, %s1) : f32[3]
          return %y, %s1
        }""")


def test_cse_keeps_nodes_that_differ():
    assert_unchanged(eliminate_common_subexpressions, """
        graph(%x: f32[2,2]) {
          %r0 = reduce_sum(%x) {axes=[0]} : f32[2]
          %r1 = reduce_sum(%x) {axes=[1]} : f32[2]
          %n = neg(%x) : f32[2,2]
          %d1 = sub(%x, %n) : f32[2,2]
          %d2 = sub(%n, %x) : f32[2,2]
          %zf = constant() {value=[0.0, 0.0]} : f32[2]
          %zi = constant() {value=[0, 0]} : i32[2]
          %zm = constant() {value=[[0.0], [0.0]]} : f32[2,1]
          %neg0 = constant() {value=[-0.0, 0.0]} : f32[2]
          return %r0, %r1, %d1, %d2, %zf, %zi, %zm, %neg0
        }""")


def test_cse_merges_large_constants_by_their_bytes_without_copying_them():
    """Large constants are keyed by a fingerprint, then compared a chunk at a time: equal ones merge,
    ones that differ only where the fingerprint does not look stay apart, and no copy of the
    constants' bytes is made (it used to be tobytes() of each: 0.5 GB for a GPT-2)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((256, 256)).astype(np.float32)
    almost = weight.copy()
    almost[0, 1] += 1  # element 1: between the fingerprint's samples
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 256), ir.DType.f32))
    values = [weight, weight.copy(), almost, np.zeros((256, 256), np.float32), np.zeros((256, 256), np.float32)]
    constants = [graph.constant(value, f"w{index}") for index, value in enumerate(values)]
    graph.outputs = [graph.call("linear", [x, constant]) for constant in constants]
    tracemalloc.start()
    try:
        result = eliminate_common_subexpressions(graph, PassContext())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < weight.nbytes / 2, peak
    ir.verify(result)
    weights = [output.inputs[1].name for output in result.outputs]
    assert weights == ["w0", "w0", "w2", "w3", "w3"]
    assert len(result.outputs[0].inputs[0].users) == 3  # linear(x, w0) and linear(x, w1) are one node now


# --- fold-batch-norm -----------------------------------------------------------------------------

CONV_BN = """
    graph(%x: f32[2,3,6,6]{extra_input}) {{
      %w = constant() : f32[4,3,3,3]
      %b = constant() {{value=[0.125, -0.25, 0.375, 0.0]}} : f32[4]
      %gamma = constant() {{value=[0.5, 1.5, 1.0, 0.75]}} : f32[4]
      %beta = constant() {{value=[0.125, 0.0, -0.125, 0.25]}} : f32[4]
      %mean = constant() {{value=[0.0625, -0.125, 0.0, 0.125]}} : f32[4]
      %var = constant() {{value=[0.5, 2.0, 1.0, 1.5]}} : f32[4]
      %conv = conv2d(%x, {weight}{bias}) {{{conv_attrs}{activation}}} : f32[2,4,6,6]
      %bn = batch_norm(%conv, {gamma}, %beta, %mean, %var) {{eps=1e-05}} : f32[2,4,6,6]
      return %bn{extra_output}
    }}"""
CONV_ATTRS = "stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1"
WEIGHTS = {"w": (np.random.default_rng(0).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)}


def conv_bn(weight="%w", bias=", %b", activation="", gamma="%gamma", extra_input="", extra_output="") -> str:
    text = CONV_BN.format(weight=weight, bias=bias, conv_attrs=CONV_ATTRS, activation=activation, gamma=gamma,
                          extra_input=extra_input, extra_output=extra_output)
    return text if bias else "\n".join(line for line in text.splitlines() if "%b = " not in line)


def folded(text: str) -> tuple[list[str], list[str]]:
    """The constants' names and the op lines (without the value names) after fold-batch-norm."""
    graph = run_pass(fold_batch_norm, text, WEIGHTS)
    return ([node.name for node in graph.nodes if node.op == "constant"],
            [node.format().split(" = ", 1)[1] for node in graph.op_nodes()])


def test_fold_batch_norm_into_conv():
    assert folded(conv_bn()) == (["w_bn", "b_bn"], [
        f"conv2d(%x, %w_bn, %b_bn) {{{CONV_ATTRS}}} : f32[2,4,6,6]"])


def test_fold_batch_norm_into_conv_without_bias_names_the_bias_after_beta():
    assert folded(conv_bn(bias="")) == (["w_bn", "beta_bn"], [
        f"conv2d(%x, %w_bn, %beta_bn) {{{CONV_ATTRS}}} : f32[2,4,6,6]"])


def test_fold_batch_norm_into_linear_scales_the_columns():
    # scale = g / sqrt(v) = [0.5, 1];  b_bn = (0 - m) * scale + beta = [0, 1.25]
    assert_rewrites(fold_batch_norm, """
        graph(%x: f32[5,3]) {
          %w = constant() {value=[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]} : f32[3,2]
          %g = constant() {value=[0.5, 2.0]} : f32[2]
          %beta = constant() {value=[0.5, 0.25]} : f32[2]
          %m = constant() {value=[1.0, -1.0]} : f32[2]
          %v = constant() {value=[1.0, 4.0]} : f32[2]
          %lin = linear(%x, %w) : f32[5,2]
          %y = batch_norm(%lin, %g, %beta, %m, %v) {eps=0.0} : f32[5,2]
          return %y
        }""", """
        graph(%x: f32[5,3]) {
          %w_bn = constant() {value=[[0.5, 2.0], [1.5, 4.0], [2.5, 6.0]]} : f32[3,2]
          %beta_bn = constant() {value=[0.0, 1.25]} : f32[2]
          %0 = linear(%x, %w_bn, %beta_bn) : f32[5,2]
          return %0
        }""")


@pytest.mark.parametrize("text", [
    conv_bn(extra_output=", %conv"),                               # the conv's own value is still needed
    conv_bn(gamma="%x_gamma", extra_input=", %x_gamma: f32[4]"),   # a statistic is not a constant
    conv_bn(weight="%x_w", extra_input=", %x_w: f32[4,3,3,3]"),    # the weight is not a constant
    conv_bn(activation=', activation="relu"'),                     # bn(relu(conv)) is not a conv
    """
    graph(%x: f32[2,3,1]) {
      %w = constant() {value=[[1.0, 2.0, 3.0, 4.0]]} : f32[1,4]
      %c = constant() {value=[1.0, 1.0, 1.0]} : f32[3]
      %lin = linear(%x, %w) : f32[2,3,4]
      %y = batch_norm(%lin, %c, %c, %c, %c) {eps=1e-05} : f32[2,3,4]
      return %y
    }""",                                                          # a rank-3 linear: axis 1 is not the features
], ids=["conv-used-twice", "statistic", "weight", "activation", "linear-rank-3"])
def test_fold_batch_norm_does_not_fire(text):
    assert_unchanged(fold_batch_norm, text, WEIGHTS)


# --- eliminate-dead-code -------------------------------------------------------------------------

def test_dead_code_erases_unused_nodes_and_constants_but_not_inputs():
    assert_rewrites(eliminate_dead_code, """
        graph(%x: f32[3], %unused: f32[2]) {
          %c = constant() {value=[1.0, 1.0, 1.0]} : f32[3]
          %1 = add(%x, %c) : f32[3]
          %2 = exp(%1) : f32[3]
          %y = relu(%x) : f32[3]
          return %y
        }""", """
        graph(%x: f32[3], %unused: f32[2]) {
          %y = relu(%x) : f32[3]
          return %y
        }""")


def test_dead_code_keeps_a_graph_without_dead_nodes():
    assert_unchanged(eliminate_dead_code, """
        graph(%x: f32[3]) {
          %c = constant() {value=[1.0, 1.0, 1.0]} : f32[3]
          %1 = add(%x, %c) : f32[3]
          %y = relu(%1) : f32[3]
          return %y, %1, %x
        }""")


# --- fuse-activation -----------------------------------------------------------------------------

def test_fuse_activation_into_linear():
    assert_rewrites(fuse_activation, """
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]} : f32[3,2]
          %lin = linear(%x, %w) : f32[2,2]
          %r = relu(%lin) : f32[2,2]
          return %r
        }""", """
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]} : f32[3,2]
          %0 = linear(%x, %w) {activation="relu"} : f32[2,2]
          return %0
        }""")


def test_fuse_activation_takes_a_gelu_into_an_f32_linear_only():
    assert_rewrites(fuse_activation, """
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]} : f32[3,2]
          %lin = linear(%x, %w) : f32[2,2]
          %g = gelu(%lin) {approximation="exact"} : f32[2,2]
          return %g
        }""", """
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]} : f32[3,2]
          %0 = linear(%x, %w) {activation="gelu_exact"} : f32[2,2]
          return %0
        }""")
    assert_unchanged(fuse_activation, """
        graph(%x: f32[1,1,4,4]) {
          %w = constant() {value=[[[[1.0]]]]} : f32[1,1,1,1]
          %c = conv2d(%x, %w) {stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1} : f32[1,1,4,4]
          %g = gelu(%c) {approximation="tanh"} : f32[1,1,4,4]
          return %g
        }""")


def test_fuse_activation_into_a_conv_with_a_folded_batch_norm():
    graph = run_pass(fold_batch_norm, conv_bn(), WEIGHTS)
    graph.outputs = [graph.call("relu", [graph.outputs[0]], name="r")]
    fuse_activation(graph)
    assert [node.format().split(" = ", 1)[1] for node in graph.op_nodes()] == [
        "conv2d(%x, %w_bn, %b_bn) {stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1, "
        'activation="relu"} : f32[2,4,6,6]']


def test_fuse_activation_takes_relu6_into_a_conv_and_a_linear():
    """clip{min=0.0, max=6.0} (PyTorch's ReLU6 through ONNX) becomes activation="relu6"."""
    graph = run_pass(fuse_activation, """
        graph(%x: f32[1,2,4,4]) {
          %w = constant() {value=[[[[1.0, -1.0], [0.5, 2.0]]], [[[-2.0, 1.0], [3.0, 0.25]]]]} : f32[2,1,2,2]
          %c = conv2d(%x, %w) {stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=2} : f32[1,2,5,5]
          %r = clip(%c) {min=0.0, max=6.0} : f32[1,2,5,5]
          return %r
        }""")
    assert [node.format().split(" = ", 1)[1] for node in graph.op_nodes()] == [
        'conv2d(%x, %w) {stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=2, activation="relu6"} : f32[1,2,5,5]']
    assert_rewrites(fuse_activation, """
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]} : f32[3,2]
          %lin = linear(%x, %w) : f32[2,2]
          %r = clip(%lin) {min=0, max=6} : f32[2,2]
          return %r
        }""", """
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]} : f32[3,2]
          %0 = linear(%x, %w) {activation="relu6"} : f32[2,2]
          return %0
        }""")


LINEAR_THEN = """
    graph(%x: f32[2,3]) {{
      %w = constant() {{value=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]}} : f32[3,2]
      %lin = linear(%x, %w){attrs} : f32[2,2]
      {lines}
    }}"""


@pytest.mark.parametrize("text", [
    LINEAR_THEN.format(attrs="", lines="%r = clip(%lin) {min=0.0, max=5.0} : f32[2,2]\n      return %r"),
    LINEAR_THEN.format(attrs="", lines="%r = clip(%lin) {min=-1.0, max=6.0} : f32[2,2]\n      return %r"),
    LINEAR_THEN.format(attrs="", lines="%r = clip(%lin) {min=0.0} : f32[2,2]\n      return %r"),
    LINEAR_THEN.format(attrs="", lines="%r = clip(%lin) {min=-0.0, max=6.0} : f32[2,2]\n      return %r"),
    LINEAR_THEN.format(attrs=' {activation="relu"}',
                       lines="%r = clip(%lin) {min=0.0, max=6.0} : f32[2,2]\n      return %r"),
    LINEAR_THEN.format(attrs="", lines="%r = clip(%lin) {min=0.0, max=6.0} : f32[2,2]\n"
                       "      %y = add(%r, %lin) : f32[2,2]\n      return %y"),
    LINEAR_THEN.format(attrs="", lines="%r = clip(%lin) {min=0.0, max=6.0} : f32[2,2]\n      return %r, %lin"),
], ids=["max5", "min-1", "no-max", "min-0", "has-relu", "second-user", "output"])
def test_fuse_activation_takes_only_a_relu6_clip_of_a_single_use_contraction(text):
    """Other bounds (min=-0.0 too: it gives -0.0 for negative x), a contraction with an activation
    already, or one whose value is still read: unchanged."""
    assert_unchanged(fuse_activation, text)


def test_fuse_activation_keeps_a_contraction_whose_value_is_still_used():
    assert_unchanged(fuse_activation, """
        graph(%x: f32[2,3]) {
          %w = constant() {value=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]} : f32[3,3]
          %lin = linear(%x, %w) : f32[2,3]
          %r = relu(%lin) : f32[2,3]
          %y = add(%r, %lin) : f32[2,3]
          return %y
        }""")

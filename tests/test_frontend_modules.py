"""tensorforge.nn: each module traces to what it computes eagerly, TinyTorch's layouts and inits,
Sequential as a list, parameters by path, and state dicts through save/load."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge import ir, nn
from tensorforge.frontend import trace

RNG = np.random.default_rng(2)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def batch_norm_with_statistics(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-3)
    bn.gamma, bn.beta = RNG.uniform(0.5, 1.5, channels).astype(np.float32), randn(channels)
    bn.running_mean, bn.running_var = randn(channels), RNG.uniform(0.5, 2, channels).astype(np.float32)
    return bn


# (make the module, input shape, the ops its graph holds)
MODULES = [
    (lambda: nn.Linear(5, 3, rng=RNG), (4, 5), ["linear"]),
    (lambda: nn.Linear(5, 3, bias=False, rng=RNG), (2, 7, 5), ["linear"]),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=RNG), (2, 3, 7, 7), ["conv2d"]),
    (lambda: nn.Conv2d(4, 6, (3, 2), bias=False, dilation=2, groups=2, rng=RNG), (1, 4, 9, 9), ["conv2d"]),
    (lambda: nn.MaxPool2d(2), (1, 2, 6, 6), ["max_pool2d"]),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 7), ["max_pool2d"]),
    (lambda: nn.AvgPool2d(3, stride=1, padding=1), (1, 2, 5, 5), ["avg_pool2d"]),
    (lambda: batch_norm_with_statistics(3), (2, 3, 4, 4), ["batch_norm"]),
    (nn.ReLU, (3, 4), ["relu"]),
    (nn.Sigmoid, (3, 4), ["sigmoid"]),
    (nn.Tanh, (3, 4), ["tanh"]),
    (nn.GELU, (3, 4), ["gelu"]),
    (lambda: nn.GELU("sigmoid"), (3, 4), ["gelu"]),
    (lambda: nn.Softmax(dim=0), (3, 4), ["softmax"]),
    (nn.Softmax, (2, 3, 4), ["softmax"]),
    (nn.Dropout, (3, 4), []),
    (nn.Flatten, (2, 3, 4, 5), ["flatten"]),
    (lambda: nn.Flatten(start_dim=2), (2, 3, 4, 5), ["flatten"]),
]


@pytest.mark.parametrize("make, shape, ops", MODULES, ids=[f"{i}-{'-'.join(m[2])}" for i, m in enumerate(MODULES)])
def test_each_module_traces_to_what_it_computes(make, shape, ops):
    model, x = make(), randn(*shape)
    graph = trace(model, x)
    eager = model(x)
    assert isinstance(eager, np.ndarray) and eager.dtype == np.float32
    np.testing.assert_array_equal(ir.interpret(graph, x), eager)
    assert [node.op for node in graph.op_nodes()] == ops
    assert [node.name for node in graph.inputs] == ["x"]


def test_gelu_modes_are_the_ir_approximations():
    x = randn(4)
    sigmoid = nn.GELU("sigmoid")(x)
    np.testing.assert_allclose(sigmoid, x / (1 + np.exp(-1.702 * x)), rtol=1e-5)
    assert graph_attr(trace(nn.GELU("exact"), x), "gelu", "approximation") == "exact"
    assert graph_attr(trace(nn.GELU(), x), "gelu", "approximation") == "tanh"
    with pytest.raises(ValueError, match="approximate must be one of"):
        nn.GELU("erf")


def graph_attr(graph: ir.Graph, op: str, attr: str):
    return next(node.attrs[attr] for node in graph.op_nodes() if node.op == op)


# --- layouts and initialization ------------------------------------------------------------------

def test_linear_and_conv_follow_tinytorch_layouts_and_inits():
    linear = nn.Linear(400, 300, rng=np.random.default_rng(0))
    assert linear.weight.shape == (400, 300) and linear.weight.dtype == np.float32
    assert linear.bias.shape == (300,) and not linear.bias.any()
    assert linear.weight.std() == pytest.approx(np.sqrt(1 / 400), rel=0.02)
    conv = nn.Conv2d(8, 64, 3, groups=2, rng=np.random.default_rng(0))
    assert conv.weight.shape == (64, 4, 3, 3) and conv.weight.dtype == np.float32
    assert conv.weight.std() == pytest.approx(np.sqrt(2 / (4 * 9)), rel=0.05)
    assert conv.kernel_size == (3, 3) and conv.bias.shape == (64,)
    assert nn.Linear(3, 2, bias=False).bias is None


def test_a_seeded_rng_gives_the_same_weights():
    first = nn.Linear(4, 3, rng=np.random.default_rng(7))
    second = nn.Linear(4, 3, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first.weight, second.weight)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "groups=2 must divide in_channels=3"),
    (lambda: nn.Dropout(1.0), r"p must be in \[0, 1\)"),
    (lambda: nn.Sequential(nn.ReLU(), 3), r"layer 1 \(int\) is not callable"),
])
def test_bad_module_arguments_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# --- Sequential and parameters -------------------------------------------------------------------

def test_sequential_is_a_list_of_layers():
    layers = [nn.Linear(4, 3, rng=RNG), nn.ReLU(), nn.Linear(3, 2, rng=RNG)]
    model = nn.Sequential(*layers)
    assert len(model) == 3 and list(model) == layers and model[-1] is layers[2]
    assert isinstance(model[:2], nn.Sequential) and list(model[:2]) == layers[:2]
    assert nn.Sequential(layers).layers == layers, "a list is accepted as TinyTorch does"
    x = randn(5, 4)
    np.testing.assert_array_equal(model(x), model[2](model[1](model[0](x))))


class Block(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(3, 3, rng=RNG)
        self.bn = nn.BatchNorm2d(3)
        self.scale = np.ones(3, np.float32)
        self.heads = (nn.Linear(3, 1, rng=RNG), nn.Linear(3, 1, bias=False, rng=RNG))
        self.tied = self.fc.weight  # the same array twice: listed once


def test_parameters_are_listed_by_path_in_attribute_order():
    names = [name for name, _ in Block().named_parameters()]
    assert names == ["fc.weight", "fc.bias", "bn.gamma", "bn.beta", "scale", "heads.0.weight", "heads.0.bias",
                     "heads.1.weight"]
    block = Block()
    assert [name for name, _ in block.named_buffers()] == ["bn.running_mean", "bn.running_var"]
    assert all(a is b for a, b in zip(block.parameters(), (array for _, array in block.named_parameters())))
    assert list(block.state_dict()) == names[:4] + ["bn.running_mean", "bn.running_var"] + names[4:]


class StudentLinear:
    """A layer written in TinyTorch's style without subclassing nn.Module."""

    def __init__(self):
        self.weight = randn(4, 2)

    def forward(self, x):
        return x @ self.weight

    __call__ = forward


def test_objects_in_module_style_are_walked_and_traced():
    model = nn.Sequential(StudentLinear(), nn.Tanh())
    assert [name for name, _ in model.named_parameters()] == ["layers.0.weight"]
    x = randn(3, 4)
    graph = trace(model, x)
    assert "layers.0.weight" in graph.constants()
    np.testing.assert_array_equal(ir.interpret(graph, x), model(x))
    layer = StudentLinear()
    assert list(trace(layer, x).constants()) == ["weight"]


# --- state dicts ---------------------------------------------------------------------------------

def make_cnn(seed: int) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), batch_norm_with_statistics(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8, 3, rng=rng))


def test_state_dict_round_trip_through_save_and_load(tmp_path):
    model, other = make_cnn(0), make_cnn(1)
    path = tmp_path / "weights.bin"
    model.save(path)
    assert path.exists(), "save writes exactly the path it is given"
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(model.state_dict())
    other.load(path)
    x = randn(2, 1, 4, 4)
    np.testing.assert_array_equal(other(x), model(x))
    assert len(model.parameters()) == 6, "conv w, b; gamma, beta; linear w, b (running stats are buffers)"
    assert {"layers.1.running_mean", "layers.1.running_var"} <= set(model.state_dict())


def test_load_state_dict_copies_into_the_same_arrays():
    model = nn.Linear(2, 2)
    weight = model.weight
    model.load_state_dict({"weight": np.eye(2), "bias": [1, 2]})  # float64 and int convert to float32
    assert model.weight is weight and weight.dtype == np.float32
    np.testing.assert_array_equal(model(np.ones((1, 2), np.float32)), [[2.0, 3.0]])


@pytest.mark.parametrize("state, message", [
    ({"layers.0.weight": np.zeros((3, 4)), "layers.0.bias": np.zeros(3)},
     r"parameter layers.0.weight: expected shape \(4, 3\), got \(3, 4\)"),
    ({"layers.0.weight": np.zeros((4, 3))}, r"missing \['layers.0.bias'\], unexpected \[\]"),
    ({"layers.0.weight": np.zeros((4, 3)), "layers.0.bias": np.zeros(3), "extra": np.zeros(1)},
     r"missing \[\], unexpected \['extra'\]"),
    ({"layers.0.weight": np.zeros((4, 3)), "layers.0.bias": np.zeros(3, np.complex64)},
     "parameter layers.0.bias: a complex64 array does not convert to float32"),
])
def test_load_state_dict_names_what_does_not_fit(state, message):
    model = nn.Sequential(nn.Linear(4, 3, rng=RNG))
    before = {name: array.copy() for name, array in model.state_dict().items()}
    with pytest.raises(nn.StateDictError, match=message):
        model.load_state_dict(state)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name], err_msg="nothing is written when the state does not fit")


def test_state_dict_errors_are_key_and_value_errors():
    with pytest.raises(KeyError):
        nn.Linear(2, 2).load_state_dict({})
    with pytest.raises(ValueError):
        nn.Linear(2, 2).load_state_dict({"weight": np.zeros(2), "bias": np.zeros(2)})

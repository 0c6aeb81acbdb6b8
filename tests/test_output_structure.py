"""Output structures (ir/structure.py): a compiled model returns what the model returned.

A torch module returning a dict, a nested tuple or a Hugging Face ModelOutput compiles to a
CompiledModel whose call gives a dict / tuple / list of arrays, compared here with eager PyTorch;
`flat=True`, `out=` and `bind` keep the flat outputs. The structure itself is plain Python: the
first tests need no torch.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.ir.structure import check_structure, leaves, unflatten

# --- the structure alone -----------------------------------------------------------------------------


def test_unflatten_nests_positions():
    a, b, c = (np.full(2, v, np.float32) for v in (1, 2, 3))
    nested = unflatten({"x": 2, "pair": (0, [1, None])}, [a, b, c])
    assert list(nested) == ["x", "pair"] and nested["x"] is c
    assert isinstance(nested["pair"], tuple) and nested["pair"][0] is a
    assert isinstance(nested["pair"][1], list) and nested["pair"][1][0] is b and nested["pair"][1][1] is None
    assert unflatten(0, [a]) is a


def test_check_structure_refuses_a_structure_that_does_not_place_every_output_once():
    check_structure({"a": 1, "b": (0,)}, 2)
    with pytest.raises(ValueError, match=r"places outputs \[0, 0\]; the graph has 2"):
        check_structure((0, 0), 2)
    with pytest.raises(ValueError, match="the graph has 3"):
        check_structure((0, 1), 3)
    with pytest.raises(TypeError, match="ints, None, tuples, lists and dicts"):
        leaves((0, "1"))
    with pytest.raises(TypeError, match="dict keys are strings"):
        leaves({1: 0})


def _two_outputs() -> tfg.ir.Graph:
    graph = tfg.ir.Graph()
    x = graph.add_input("x", tfg.ir.TensorType((2, 3), tfg.ir.DType.f32))
    graph.outputs = [graph.call("relu", [x]), graph.call("neg", [x])]
    return graph


def test_compiled_graph_with_a_structure_without_torch():
    graph = _two_outputs()
    graph.output_structure = {"negative": 1, "positive": [0]}
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    with tfg.compile(graph) as cm:
        nested = cm(x)
        assert list(nested) == ["negative", "positive"]
        np.testing.assert_array_equal(nested["negative"], -x)
        np.testing.assert_array_equal(nested["positive"][0], np.maximum(x, 0))
        flat = cm(x, flat=True)
        assert isinstance(flat, tuple) and len(flat) == 2
        np.testing.assert_array_equal(flat[1], -x)
        out = [np.empty((2, 3), np.float32), np.empty((2, 3), np.float32)]
        assert cm(x, out=out)[1] is out[1]  # out=: the given arrays, flat
        call = cm.bind(x)
        again = cm.unflatten(call())
        np.testing.assert_array_equal(again["negative"], -x)
    with pytest.raises(ValueError, match="each position"):
        tfg.runtime.CompiledModel(tfg.codegen.build(graph, "host"), output_structure=(0,))


def test_structure_is_dropped_by_graph_copy():
    """A rewrite works on a copy and may change what the outputs mean (the KV-cache prefill adds some)."""
    graph = _two_outputs()
    graph.output_structure = (0, 1)
    assert graph.copy().output_structure is None


# --- torch modules -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's and transformers' deprecation notices
        yield


def _plain(value):
    """A structure of torch tensors (or arrays) as numpy arrays, ModelOutputs as dicts; for comparing."""
    if hasattr(value, "detach"):
        return value.detach().numpy()
    if isinstance(value, dict):  # dict, OrderedDict, a ModelOutput (its fields that are not None)
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(item) for item in value)
    return value


def _assert_same(got, want, atol=1e-5, where="output"):
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            _assert_same(got[key], want[key], atol, f"{where}[{key!r}]")
    elif isinstance(want, (tuple, list)):
        assert type(got) is type(want) and len(got) == len(want), f"{where}: {type(got)} != {type(want)}"
        for index, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, atol, f"{where}[{index}]")
    elif want is None:
        assert got is None, where
    else:
        assert isinstance(got, np.ndarray), f"{where}: {type(got)}"
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=where)


def _module(torch, function):
    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x, y):
            return function(self, x, y)

    torch.manual_seed(0)
    return Module().eval()


STRUCTURES = {
    "dict": lambda m, x, y: {"sum": x + y, "nothing": None, "projected": m.fc(x), "inner": {"product": x * y}},
    "nested_tuple": lambda m, x, y: (m.fc(x), (x - y, [x.relu(), (y,)])),
    "list": lambda m, x, y: [x, m.fc(y)],
    "one_tensor": lambda m, x, y: m.fc(x + y),
    "one_tuple": lambda m, x, y: (m.fc(x + y),),
}


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_module_output_structure_against_eager(torch, name):
    model = _module(torch, STRUCTURES[name])
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        want = _plain(model(x, y))
    with tfg.compile(model, (x, y)) as cm:
        _assert_same(cm(x.numpy(), y.numpy()), want)
        _assert_same(cm(x, y), want)  # torch tensors in
        flat = cm(x.numpy(), y.numpy(), flat=True)
        assert (isinstance(flat, tuple) and len(flat) == len(cm.output_types)) or \
            (len(cm.output_types) == 1 and isinstance(flat, np.ndarray))
    tfg.check(model, (x, y))  # the flat outputs, stage by stage


def test_structure_is_plain_python(torch):
    model = _module(torch, STRUCTURES["dict"])
    graph = tfg.trace(model, (torch.randn(2, 4), torch.randn(2, 4)))
    assert graph.output_structure == {"sum": 0, "nothing": None, "projected": 1, "inner": {"product": 2}}

    def types(value):
        if isinstance(value, dict):
            return {type(value)} | {t for key, item in value.items() for t in types(key) | types(item)}
        if isinstance(value, (tuple, list)):
            return {type(value)}.union(*(types(item) for item in value))
        return {type(value)}

    assert types(graph.output_structure) <= {dict, tuple, list, int, str, type(None)}
    with tfg.compile(graph) as cm:  # a traced graph keeps it
        assert cm.output_structure == graph.output_structure


def test_structure_survives_quantization(torch):
    """compile() records the structure before rewrites (quantize, prune) copy the graph."""
    model = _module(torch, lambda m, x, y: {"a": m.fc(x), "b": m.fc(y)})
    x, y = torch.randn(8, 4), torch.randn(8, 4)
    with tfg.compile(model, (x, y), quantize=tfg.QuantConfig(dynamic=True)) as cm:
        result = cm(x.numpy(), y.numpy())
        assert sorted(result) == ["a", "b"]
        with torch.no_grad():
            np.testing.assert_allclose(result["a"], model.fc(x).numpy(), atol=0.05)


def test_hf_bert_model_output_is_a_dict(torch):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    bert = transformers.BertModel(config).eval()
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 9, dtype=torch.int64)
    mask[1, 6:] = 0
    with torch.no_grad():
        eager = bert(input_ids=ids, attention_mask=mask)
    assert type(eager).__name__ == "BaseModelOutputWithPoolingAndCrossAttentions"
    want = _plain(eager)
    assert list(want) == ["last_hidden_state", "pooler_output"]  # the fields that are not None
    with tfg.compile(bert, {"input_ids": ids, "attention_mask": mask}) as cm:
        got = cm(ids.numpy(), mask.numpy())
        _assert_same(got, want, atol=1e-4)
        assert cm.output_structure == {"last_hidden_state": 0, "pooler_output": 1}


def test_calling_a_structured_model_needs_no_torch(tmp_path):
    """A compiled model's structure is applied without importing torch (a graph read from text here)."""
    code = (
        "import sys, numpy as np, tensorforge as tfg\n"
        "g = tfg.ir.Graph()\n"
        "x = g.add_input('x', tfg.ir.TensorType((2,), tfg.ir.DType.f32))\n"
        "g.outputs = [g.call('neg', [x]), g.call('relu', [x])]\n"
        "g.output_structure = {'n': 0, 'rest': (1, None)}\n"
        "out = tfg.compile(g)(np.array([1, -1], np.float32))\n"
        "assert out['n'].tolist() == [-1, 1] and out['rest'][0].tolist() == [1, 0] and out['rest'][1] is None\n"
        "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)

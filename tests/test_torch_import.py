"""The PyTorch importer (tensorforge/frontend/torch): modules through torch.export, against eager PyTorch.

The CNN blocks of tests/onnx_architectures.py and Hugging Face's BERT (with an attention mask) and
GPT-2 (logits, with a left-padded attention mask) from small configs are imported, run by the
reference interpreter and compiled for the host (two small CNN blocks also for armv8). fp32: rtol
1e-4 / atol 1e-5 for the CNNs; the transformers atol 1e-4: two layers of GEMMs, softmax, GELU and
layer norm summed in other orders than PyTorch's (and the compiled GELU's tanh and erf are
polynomial approximations), on values of size ~3, leave differences of a few 1e-6 to 1e-5.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnx_architectures as architectures  # noqa: E402

import tensorforge as tfg  # noqa: E402
from tensorforge.frontend.torch import (  # noqa: E402
    TorchImportError,
    UnsupportedTorchOp,
    load_torch,
    supported_ops,
)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's and transformers' deprecation notices
        yield


def _eager(model, inputs) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = model(*inputs)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [output.numpy() for output in outputs]


def _check(model, inputs, targets=("host",), atol=1e-5):
    """Eager PyTorch against the interpreter on the imported graph and the compiled code for `targets`."""
    expected = _eager(model, inputs)
    graph = tfg.trace(model, inputs)
    arrays = [x.numpy() for x in inputs]
    interpreted = tfg.interpret(graph, *arrays)
    results = {"interpreter": list(interpreted) if isinstance(interpreted, tuple) else [interpreted]}
    for target in targets:
        with tfg.compile(model, inputs, target=target) as compiled:
            outputs = compiled(*arrays)
        results[target] = list(outputs) if isinstance(outputs, tuple) else [outputs]
    for label, actual in results.items():
        assert len(actual) == len(expected), label
        for want, got in zip(expected, actual, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=label)
    return graph


ARMV8 = ("resnet_basic_block", "mobilenet_v2_block")


@pytest.mark.parametrize("name", list(architectures.CNNS))
def test_cnn_blocks(name):
    model, x = architectures.cnn(name)
    targets = ("host", "armv8") if name in ARMV8 else ("host",)
    graph = _check(model, (x,), targets)
    assert [node.name for node in graph.inputs] == ["x"]  # the forward's parameter name


def test_constants_are_named_by_module_path():
    model, x = architectures.cnn("resnet_basic_block")
    graph = load_torch(model, (x,))
    names = {node.name for node in graph.nodes if node.op == "constant"}
    assert {"conv1.0.weight", "conv1.1.running_mean", "conv1.1.running_var", "downsample.0.weight"} <= names
    ops = {node.op for node in graph.nodes}
    assert {"conv2d", "batch_norm", "relu", "add"} <= ops


def test_mobilenet_relu6_is_clip():
    model, x = architectures.cnn("mobilenet_v2_block")
    graph = load_torch(model, (x,))
    clips = [node for node in graph.nodes if node.op == "clip"]
    assert len(clips) == 2 and all((n.attrs["min"], n.attrs["max"]) == (0.0, 6.0) for n in clips)


def test_resnet_tail_adaptive_pool_flatten_linear():
    """A ResNet-style tail: adaptive average pool to 1, flatten, linear (addmm -> linear)."""
    class Tail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = architectures.BasicBlock(8, 16)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.block(x)), 1))

    torch.manual_seed(0)
    model = architectures._randomize(Tail())
    graph = _check(model, (torch.randn(2, 8, 10, 10),))
    assert "fc.weight" in {node.name for node in graph.nodes}
    assert "linear" in {node.op for node in graph.nodes}


def test_numpy_example_inputs_and_exported_program_with_dynamic_batch():
    model, x = architectures.cnn("vgg_stack")
    with tfg.compile(model, x.numpy()) as compiled:  # numpy example inputs export as torch tensors
        np.testing.assert_allclose(compiled(x.numpy()), _eager(model, (x,))[0], rtol=1e-4, atol=1e-5)
    batch = torch.export.Dim("batch", min=1, max=16)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    x3 = torch.randn(3, 3, 16, 16)
    graph = tfg.trace(program, (x3,))  # the symbolic batch (sym_size, view sizes) sized by the example
    assert graph.inputs[0].type.shape == (3, 3, 16, 16)
    with tfg.compile(program, x3) as compiled:
        np.testing.assert_allclose(compiled(x3), _eager(model, (x3,))[0], rtol=1e-4, atol=1e-5)


def test_check_takes_a_torch_module():
    model, x = architectures.cnn("densenet_layer")
    tfg.check(model, x)  # raises CheckError naming a stage that diverges


class _Function(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, *args):
        return self.function(*args)


F = torch.nn.functional
SMALL = {  # name -> (module or function, example inputs): ATen ops beyond the architectures above
    "activations": (lambda x: F.leaky_relu(x, 0.1) + F.silu(x) + F.elu(x) + F.gelu(x, approximate="tanh")
                    + F.hardsigmoid(x) + F.softplus(x), lambda: (torch.randn(2, 8),)),
    "log_softmax": (lambda x: F.log_softmax(x, -1), lambda: (torch.randn(2, 8),)),
    "layer_norm_two_axes": (lambda: torch.nn.LayerNorm([4, 8]), lambda: (torch.randn(2, 4, 8),)),
    "conv1d": (lambda: torch.nn.Conv1d(4, 6, 3, padding=1), lambda: (torch.randn(2, 4, 10),)),
    "pad_split_select": (lambda x: torch.cat(list(F.pad(x, (1, 2)).chunk(2, -1))[::-1], -1)[:, -1] + x[:, 0, :1],
                         lambda: (torch.randn(2, 5, 7),)),
    "reductions": (lambda x: x.sum(1) + x.max(1).values + x.min(1).values + x.mean() + x.amax((1, 2))[:, None],
                   lambda: (torch.randn(2, 8, 3),)),
    "argmax": (lambda x: x.argmax(-1), lambda: (torch.randn(2, 8),)),
    "masked_fill": (lambda x, m: x.masked_fill(m, -1.0), lambda: (torch.randn(2, 8), torch.rand(2, 8) > 0.5)),
    "matmul_transposed": (lambda a, b: a @ b.transpose(-1, -2), lambda: (torch.randn(2, 3, 4), torch.randn(2, 5, 4))),
    "pools": (lambda x: F.max_pool2d(x, 3, 2, 1) + F.avg_pool2d(x, 3, 2, 0, ceil_mode=True)
              + F.adaptive_avg_pool2d(x, 4), lambda: (torch.randn(1, 2, 8, 8),)),
    "integer_arithmetic": (lambda x: (x * 2 + 1) > 7, lambda: (torch.randint(0, 10, (2, 4)),)),
    "sdpa_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                    lambda: tuple(torch.randn(1, 2, 6, 8) for _ in range(3))),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_ops(name):
    make, inputs = SMALL[name]
    torch.manual_seed(0)
    model = make() if make.__code__.co_argcount == 0 else _Function(make)
    _check(model.eval(), inputs())


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def test_bert_with_attention_mask(transformers):
    torch.manual_seed(0)
    encoder = architectures.BertEncoder(transformers).eval()

    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 7:] = 0
    graph = _check(encoder, (ids, mask), atol=1e-4)
    assert [node.name for node in graph.inputs] == ["input_ids", "attention_mask"]
    names = {node.name for node in graph.nodes}
    assert {"bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight"} <= names
    assert {"gather", "layer_norm", "softmax", "gelu", "where", "linear"} <= {node.op for node in graph.nodes}


def test_gpt2_logits_with_left_padding(transformers):
    """Batch 2, the first row left-padded: its padded queries attend to nothing (zeros, as PyTorch's SDPA)."""
    torch.manual_seed(0)
    logits = architectures.Gpt2Logits(transformers).eval()

    ids = torch.randint(0, 500, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 10, dtype=torch.int64)
    mask[0, :3] = 0
    graph = _check(logits, (ids, mask), atol=1e-4)
    names = {node.name for node in graph.nodes}
    assert "gpt.transformer.h.0.attn.c_attn.weight" in names
    assert "gpt.lm_head.weight" in names  # tied to wte: the graph reads it once, by the name export gives it


def test_gpt2_causal_mask_known_at_import(transformers):
    """Without an attention mask GPT-2's SDPA mask is the causal one, folded at import: every query sees a
    key, so the importer emits no guard for fully masked rows (the graph is matmul, softmax, matmul)."""
    torch.manual_seed(0)
    logits = architectures.Gpt2Logits(transformers, layers=1).eval()

    ids = torch.randint(0, 500, (1, 16), generator=torch.Generator().manual_seed(1))
    graph = load_torch(logits, (ids,))
    ops = [node.op for node in graph.nodes]
    assert "reduce_max" not in ops and "equal" not in ops and ops.count("softmax") == 1
    np.testing.assert_allclose(tfg.interpret(graph, ids.numpy()), _eager(logits, (ids,))[0],
                               rtol=1e-4, atol=1e-4)


def test_training_mode_is_refused():
    model, x = architectures.cnn("resnet_basic_block")
    model.train()
    with pytest.raises(TorchImportError, match=r"BasicBlock is in training mode.*call model\.eval\(\) first"):
        tfg.compile(model, x)
    model.eval()
    model.conv1[1].train()  # one submodule left in training mode
    with pytest.raises(TorchImportError, match=r"its submodule 'conv1\.1' \(BatchNorm2d\).*model\.eval\(\)"):
        load_torch(model, (x,))


class _Determinant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.linalg.det(self.proj(x).reshape(2, 2, 2))  # the line the error names


class _Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = _Determinant()

    def forward(self, x):
        return self.head(x) + 1.0


def test_unsupported_op_names_op_module_and_line():
    with pytest.raises(UnsupportedTorchOp) as error:
        tfg.compile(_Outer().eval(), torch.randn(2, 4))
    message = str(error.value)
    assert "aten._linalg_det.default" in message
    assert "module 'head' (_Determinant)" in message
    assert "test_torch_import.py:" in message and "torch.linalg.det(self.proj(x)" in message


def test_op_of_known_operands_folds():
    """An op without a converter whose operands are all weights is run by PyTorch at import."""
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = torch.nn.Parameter(torch.eye(3) * 2)

        def forward(self, x):
            return x * torch.linalg.det(self.m)

    x = torch.randn(2, 3)
    _check(Scaled().eval(), (x,))


def test_supported_ops_lists_converters():
    ops = supported_ops()
    assert {"aten.convolution.default", "aten.addmm.default", "aten.hardtanh.default",
            "aten._native_batch_norm_legit_no_training.default",
            "aten.scaled_dot_product_attention.default"} <= set(ops)


def test_import_tensorforge_does_not_import_torch():
    code = "import sys, tensorforge, tensorforge.frontend.torch; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


REFERENCE_MODELS = {"mlp": (2, 784), "cifar_cnn": (2, 3, 32, 32), "small_cnn": (2, 3, 12, 12),
                    "digits_mlp": (2, 64), "digits_cnn": (2, 1, 8, 8)}


def _layers(graph) -> list[tuple]:
    """The optimized graph's nodes: op and attributes (what fusion decided); a flatten is a reshape."""
    from tensorforge.passes import PassContext, run_pipeline

    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    return [("reshape", node.shape) if node.op in ("flatten", "reshape") else (node.op, sorted(node.attrs.items()))
            for node in optimized.op_nodes()]


@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_reference_models_through_to_torch_are_the_same_function(name):
    """A tensorforge.nn reference model traced directly, and its PyTorch twin (to_torch) through
    torch.export: the same values (the interpreter, bit for bit) and the same layers once optimized."""
    from tensorforge import models
    from tensorforge.frontend.torch_bridge import to_torch

    model = getattr(models, name)()
    direct = tfg.trace(model, np.zeros(REFERENCE_MODELS[name], np.float32))
    imported = tfg.trace(to_torch(model), torch.zeros(REFERENCE_MODELS[name]))
    assert [n.type for n in imported.inputs] == [n.type for n in direct.inputs]
    assert [n.type for n in imported.outputs] == [n.type for n in direct.outputs]
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal(REFERENCE_MODELS[name], dtype=np.float32)
        np.testing.assert_array_equal(tfg.interpret(imported, x), tfg.interpret(direct, x))
    assert _layers(imported) == _layers(direct)


# --- bad input: clear exceptions naming the module, the line or the input -------------------------------

class _Branches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # the line the error names
            return self.fc(x)
        return -x


def test_data_dependent_control_flow_names_the_line():
    with pytest.raises(TorchImportError) as error:
        tfg.compile(_Branches().eval(), torch.randn(2, 4))
    message = str(error.value)
    assert "torch.export could not export _Branches" in message
    assert "test_torch_import.py:" in message and "if x.sum() > 0:" in message
    assert "data-dependent control flow" in message and "torch.where" in message


class _Add(torch.nn.Module):
    def forward(self, x, y):
        return x + y


def test_example_inputs_that_do_not_fit_the_forward():
    with pytest.raises(TorchImportError, match=r"\(1 positional\) do not fit _Add\.forward\(x, y\): .*'y'"):
        tfg.compile(_Add().eval(), (torch.randn(2, 4),))
    with pytest.raises(TorchImportError, match=r"by name \['x', 'z'\].*_Add\.forward\(x, y\)"):
        tfg.trace(_Add().eval(), {"x": torch.randn(2, 4), "z": torch.randn(2, 4)})
    with pytest.raises(UnsupportedTorchOp, match="'x' has dtype float16, which the IR does not have"):
        tfg.trace(_Add().eval(), (torch.randn(2, 4).half(), torch.randn(2, 4).half()))


def test_exported_program_refuses_other_inputs():
    program = torch.export.export(_Add().eval(), (torch.randn(2, 4), torch.randn(2, 4)))
    with pytest.raises(TorchImportError, match=r"takes 2 tensor inputs \(x, y\); got 1"):
        tfg.trace(program, (torch.randn(2, 4),))
    with pytest.raises(TorchImportError, match=r"input 'x' has shape \[3, 4\]; the program was exported for \[2, 4\]"):
        tfg.trace(program, (torch.randn(3, 4), torch.randn(3, 4)))
    with pytest.raises(TorchImportError, match=r"input 'y' is i64; the program was exported for torch.float32"):
        tfg.trace(program, (torch.randn(2, 4), torch.ones(2, 4, dtype=torch.int64)))


def test_compiled_torch_model_checks_its_arguments():
    """Calls with the wrong count, shape or dtype raise InputError naming the forward's parameter."""
    x = torch.randn(2, 4)
    with tfg.compile(_Add().eval(), (x, x)) as compiled:
        np.testing.assert_allclose(compiled(x, x), (x + x).numpy())  # torch tensors in
        with pytest.raises(tfg.ir.InputError, match=r"takes 2 input\(s\) \(x, y\), got 1"):
            compiled(x.numpy())
        with pytest.raises(tfg.ir.InputError, match=r"input 'y' has shape \(2, 5\), expected \(2, 4\)"):
            compiled(x.numpy(), np.zeros((2, 5), np.float32))
        with pytest.raises(tfg.ir.InputError, match=r"input 'x' has dtype int64, expected float32"):
            compiled(np.zeros((2, 4), np.int64), x.numpy())


def test_hf_model_returning_a_cache_names_the_fix(transformers):
    """GPT2LMHeadModel returns its DynamicCache by default, which torch.export cannot flatten: the error
    says to turn use_cache off; then the compiled model returns {"logits": ...} as eager does."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    gpt = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(1))
    with pytest.raises(TorchImportError, match=r"GPT2LMHeadModel: it returns a transformers Cache.*use_cache = False"):
        tfg.trace(gpt, (ids,))
    gpt.config.use_cache = False
    with tfg.compile(gpt, (ids,)) as compiled, torch.no_grad():
        result = compiled(ids.numpy())
        assert list(result) == ["logits"]
        np.testing.assert_allclose(result["logits"], gpt(ids).logits.numpy(), rtol=1e-4, atol=1e-4)

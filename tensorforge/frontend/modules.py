"""TinyTorch's module API on numpy arrays: Module, Linear, Conv2d, pooling, BatchNorm2d, activations, Sequential.

    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax())
    y = model(x)                         # numpy in, numpy out (the ops' numpy references)
    graph = tf.trace(model, x)           # the same forward, recorded on Proxy values

As in TinyTorch there is no registration: a `Module` keeps its float32 arrays (`.weight`, `.bias`,
`.gamma`...) and sub-modules as plain attributes, found by walking `__dict__` (sub-modules, lists
and tuples of them, arrays). Objects written in the same style without subclassing `Module` (any
object with a `forward` method) are walked too. `Linear.weight` is (in_features, out_features),
TinyTorch's layout. `state_dict()` / `load_state_dict()` / `save()` / `load()` move the arrays by
path name (`layers.0.weight`); files are .npz archives read with `allow_pickle=False`.
"""

from __future__ import annotations

import inspect
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .. import ir
from . import functional as F


def _npy_header(stream, label: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy member's header, refusing object dtypes and Fortran order."""
    try:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"format version {version} is not one save() writes")
        shape, fortran, dtype = readers[version](stream)
    except ValueError as error:
        raise StateDictError(f"{label} is not a .npy array: {error}") from None
    if fortran or dtype.hasobject:
        raise StateDictError(f"{label} holds {'a Fortran-ordered' if fortran else 'an object'} array; save() writes "
                             "plain C-ordered numeric arrays")
    return tuple(shape), dtype


class StateDictError(KeyError, ValueError):
    """A state dict does not fit a module: a name is missing or unexpected, or a shape or dtype differs."""

    def __str__(self) -> str:
        return str(self.args[0])


def is_module(value) -> bool:
    """A Module, or an object in its style that does not subclass it: attributes and a `forward` method."""
    if isinstance(value, Module):
        return True
    return (hasattr(value, "__dict__") and not isinstance(value, type) and not inspect.ismodule(value)
            and callable(getattr(value, "forward", None)))


def named_arrays(owner, prefix: str = "") -> Iterator[tuple[str, np.ndarray, bool]]:
    """(path, array, is_buffer) for every array reachable from `owner`'s attributes, in attribute order.

    Recurses into sub-modules and lists/tuples (`layers.0.weight`); an array or module reached
    twice (shared weights) is listed once, under its first path."""
    yield from _walk_attributes(owner, prefix, set())


def _walk_attributes(owner, prefix: str, seen: set[int]) -> Iterator[tuple[str, np.ndarray, bool]]:
    buffers = owner.buffers if isinstance(owner, Module) else ()
    for name, value in list(getattr(owner, "__dict__", {}).items()):
        yield from _walk_value(prefix + name, value, name in buffers, seen)


def _walk_value(path: str, value, is_buffer: bool, seen: set[int]) -> Iterator[tuple[str, np.ndarray, bool]]:
    if isinstance(value, np.ndarray):
        if id(value) not in seen:
            seen.add(id(value))
            yield path, value, is_buffer
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk_value(f"{path}.{index}", item, is_buffer, seen)
    elif is_module(value) and id(value) not in seen:
        seen.add(id(value))
        yield from _walk_attributes(value, path + ".", seen)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


class Module:
    """Base class: subclasses set arrays and sub-modules as attributes and define `forward`."""

    buffers: tuple[str, ...] = ()  # array attributes that are state, not parameters (running statistics)

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """(path, array) of every parameter (not buffer), in a stable order: attribute order, depth first."""
        return [(path, array) for path, array, is_buffer in named_arrays(self) if not is_buffer]

    def parameters(self) -> list[np.ndarray]:
        return [array for _, array in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        """(path, array) of the state that is not a parameter, such as BatchNorm2d's running statistics."""
        return [(path, array) for path, array, is_buffer in named_arrays(self) if is_buffer]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every array (parameters and buffers) by path; the arrays themselves, not copies."""
        return {path: array for path, array, _ in named_arrays(self)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into this module's arrays by path. Names and shapes must match exactly, and each
        dtype must convert without losing its kind (float64 -> float32 is fine, float -> int is not);
        nothing is written unless everything fits."""
        own = self.state_dict()
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        if missing or unexpected:
            raise StateDictError(f"state dict does not match {type(self).__name__}: missing {missing}, "
                                 f"unexpected {unexpected}")
        arrays = {}
        for name, array in own.items():
            new = np.asarray(state[name])
            if new.shape != array.shape:
                raise StateDictError(f"parameter {name}: expected shape {array.shape}, got {new.shape}")
            if not np.can_cast(new.dtype, array.dtype, "same_kind"):
                raise StateDictError(f"parameter {name}: a {new.dtype} array does not convert to {array.dtype} "
                                     "without losing values")
            arrays[name] = new
        for name, array in own.items():
            array[...] = arrays[name]

    def save(self, path: str | Path) -> None:
        """Write state_dict() to exactly `path` as an .npz archive (np.savez)."""
        with open(path, "wb") as file:
            np.savez(file, **self.state_dict())

    def load(self, path: str | Path) -> None:
        """Read arrays written by save() into this module. Before any array is read, the archive's
        member names must be this module's, each member's .npy header must give the shape and a dtype
        that converts, and its declared size must be what that header needs (a crafted archive cannot
        make it decompress more); never a pickle."""
        own = self.state_dict()
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise StateDictError(f"{path} is not an .npz archive written by save(): {error}") from None
        with archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            missing = [name for name in own if name not in members]
            unexpected = [name for name in members if name not in own]
            if missing or unexpected:
                raise StateDictError(f"{path} does not match {type(self).__name__}: missing {missing}, "
                                     f"unexpected {unexpected}")
            state = {}
            for name, array in own.items():
                info = members[name]
                with archive.open(info) as member:
                    shape, dtype = _npy_header(member, f"{path}:{info.filename}")
                    if shape != array.shape or not np.can_cast(dtype, array.dtype, "same_kind"):
                        raise StateDictError(f"parameter {name}: {path} holds {dtype}{list(shape)}, the module "
                                             f"has {array.dtype}{list(array.shape)}")
                    header_bytes = member.tell()
                    if info.file_size != header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                        raise StateDictError(f"parameter {name}: {path}:{info.filename} declares {info.file_size} "
                                             f"bytes, its header needs {header_bytes} + {dtype}{list(shape)}")
                    state[name] = np.frombuffer(member.read(), dtype=dtype).reshape(shape)
        self.load_state_dict(state)


class Linear(Module):
    """y = x @ weight + bias, weight (in_features, out_features) initialized randn * sqrt(1 / in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Linear: {name} must be an int >= 1, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        scale = math.sqrt(1.0 / in_features)
        self.weight = (_rng(rng).standard_normal((in_features, out_features)) * scale).astype(np.float32)
        self.bias = np.zeros(out_features, np.float32) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Conv2d(Module):
    """NCHW convolution, weight (out_channels, in_channels / groups, kh, kw) with He init randn * sqrt(2 / fan_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True, *,
                 dilation=1, groups: int = 1, rng: np.random.Generator | None = None):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups
        fan_in = in_channels // groups * kh * kw
        shape = (out_channels, in_channels // groups, kh, kw)
        self.weight = (_rng(rng).standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        self.bias = np.zeros(out_channels, np.float32) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Pool2d(Module):
    """What the pooling modules share: kernel_size, stride (default: the kernel size) and padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding


class MaxPool2d(Pool2d):
    """NCHW max pooling; padding never wins the max."""

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(Pool2d):
    """NCHW average pooling; padding counts as zeros in the average."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class BatchNorm2d(Module):
    """Batch norm in eval mode: (x - running_mean) / sqrt(running_var + eps) * gamma + beta, per channel."""

    buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, eps: float = 1e-5):
        self.num_features, self.eps = num_features, eps
        self.gamma = np.ones(num_features, np.float32)
        self.beta = np.zeros(num_features, np.float32)
        self.running_mean = np.zeros(num_features, np.float32)
        self.running_var = np.ones(num_features, np.float32)

    def forward(self, x):
        return F.batch_norm(x, self.gamma, self.beta, self.running_mean, self.running_var, self.eps)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class GELU(Module):
    """approximate: "tanh" (the default), "sigmoid" (TinyTorch's x * sigmoid(1.702 x)) or "exact" (erf)."""

    def __init__(self, approximate: str = "tanh"):
        if approximate not in ir.ops_math.GELU_APPROXIMATIONS:
            raise ValueError(f"GELU: approximate must be one of {ir.ops_math.GELU_APPROXIMATIONS}, "
                             f"got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class Softmax(Module):
    def __init__(self, dim: int = -1):
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)


class Dropout(Module):
    """The identity: tensorforge compiles for inference, where dropout does nothing."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return x


class Flatten(Module):
    """Merge the axes from start_dim on: (N, C, H, W) -> (N, C * H * W)."""

    def __init__(self, start_dim: int = 1):
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Sequential(Module):
    """Layers applied in order, kept in `.layers`; indexable, sliceable and iterable like a list."""

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for index, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layer {index} ({type(layer).__name__}) is not callable")
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(self.layers[index])
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

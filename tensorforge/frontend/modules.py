"""tensorforge.nn: TinyTorch's module API, running eagerly on numpy arrays and traceable as it is.

    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax())
    y = model(x)                         # numpy in, numpy out (the ops' numpy references)
    graph = tf.trace(model, x)           # the same forward, recorded on Proxy values

A `Module` has `forward`, `__call__` and `parameters()`; its arrays are plain float32 ndarrays held
as attributes (`.weight`, `.bias`, `.gamma`...), found by walking `__dict__` (sub-modules, lists of
modules, arrays). `Linear.weight` is (in_features, out_features), TinyTorch's layout.
`state_dict()` / `load_state_dict()` / `save()` / `load()` move the arrays by path name
(`layers.0.weight`); files are .npz read with `allow_pickle=False`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import functional as F


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


class Module:
    """Base class: subclasses set arrays and sub-modules as attributes and define `forward`."""

    buffers: tuple[str, ...] = ()  # array attributes that are state, not parameters (running statistics)

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{index}", item

    def named_arrays(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Every array of this module and its sub-modules (parameters and buffers), by path."""
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_arrays(f"{prefix}{name}.")

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        for name, array in self.named_arrays():
            if name.rsplit(".", 1)[-1] not in self._all_buffers():
                yield name, array

    def _all_buffers(self) -> set[str]:
        names = set(self.buffers)
        for _, child in self.named_children():
            names |= child._all_buffers()
        return names

    def parameters(self) -> list[np.ndarray]:
        return [array for _, array in self.named_parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self.named_arrays())

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays in by path; names and shapes must match exactly."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state dict does not match {type(self).__name__}: "
                           f"missing {missing}, unexpected {unexpected}")
        for name, array in own.items():
            new = np.asarray(state[name])
            if new.shape != array.shape:
                raise ValueError(f"parameter {name}: expected shape {array.shape}, got {new.shape}")
            array[...] = new.astype(array.dtype)

    def save(self, path: str | Path) -> None:
        np.savez(path, **self.state_dict())

    def load(self, path: str | Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            self.load_state_dict({name: data[name] for name in data.files})


class Linear(Module):
    """y = x @ weight + bias, weight (in_features, out_features), init randn * sqrt(1 / in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None):
        rng = _rng(rng)
        self.in_features, self.out_features = in_features, out_features
        scale = math.sqrt(1.0 / in_features)
        self.weight = (rng.standard_normal((in_features, out_features)) * scale).astype(np.float32)
        self.bias = np.zeros(out_features, np.float32) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Conv2d(Module):
    """NCHW convolution, weight (out, in / groups, kh, kw), He init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True, *,
                 dilation=1, groups: int = 1, rng: np.random.Generator | None = None):
        rng = _rng(rng)
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups
        fan_in = in_channels // groups * kh * kw
        shape = (out_channels, in_channels // groups, kh, kw)
        self.weight = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        self.bias = np.zeros(out_channels, np.float32) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class BatchNorm2d(Module):
    """Batch norm in eval mode: (x - running_mean) / sqrt(running_var + eps) * gamma + beta, over channels."""

    buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, eps: float = 1e-5):
        self.eps = eps
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
    """approximate: "tanh" (default), "sigmoid" (TinyTorch's x * sigmoid(1.702 x)) or "exact" (erf)."""

    def __init__(self, approximate: str = "tanh"):
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class Softmax(Module):
    def __init__(self, dim: int = -1):
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)


class Dropout(Module):
    """Identity: tensorforge compiles for inference."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return x


class Flatten(Module):
    def __init__(self, start_dim: int = 1):
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Sequential(Module):
    """Layers applied in order; indexable and iterable like a list."""

    def __init__(self, *layers: Module):
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
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

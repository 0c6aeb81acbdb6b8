"""PyTorch as an optional extra: the same Sequential model in torch, and its weights copied back.

    net = to_torch(model)            # torch.nn.Sequential computing model's function (its own copy)
    ... train net with torch ...
    copy_from_torch(model, net)      # the trained weights into the tensorforge model (TinyTorch layout)

Linear weights are (in, out) here and (out, in) in torch; everything else has the same layout.
Only the layers of the reference models (tensorforge/models.py) and a few more are mapped (Linear,
Conv2d, BatchNorm2d, MaxPool2d, AvgPool2d, ReLU, Sigmoid, Tanh, GELU, Softmax, Dropout, Flatten);
another layer raises NotImplementedError naming it.
"""

from __future__ import annotations

import numpy as np


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError("this needs PyTorch: pip install 'tensorforge[torch]' (torch==2.13.0)") from error
    return torch


def to_torch(model):
    """A torch.nn.Sequential computing the same function as a tensorforge.nn.Sequential (eval mode)."""
    torch = _torch()
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Linear":
            linear = torch.nn.Linear(*layer.weight.shape, bias=layer.bias is not None)
            linear.weight.data = torch.from_numpy(layer.weight.T.copy())
            if layer.bias is not None:
                linear.bias.data = torch.from_numpy(layer.bias.copy())
            layers.append(linear)
        elif kind == "Conv2d":
            out_ch, in_ch, kh, kw = layer.weight.shape
            conv = torch.nn.Conv2d(in_ch * layer.groups, out_ch, (kh, kw), stride=layer.stride,
                                   padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                   bias=layer.bias is not None)
            conv.weight.data = torch.from_numpy(layer.weight.copy())
            if layer.bias is not None:
                conv.bias.data = torch.from_numpy(layer.bias.copy())
            layers.append(conv)
        elif kind == "BatchNorm2d":
            norm = torch.nn.BatchNorm2d(layer.num_features, eps=layer.eps)
            for target, source in (("weight", layer.gamma), ("bias", layer.beta), ("running_mean", layer.running_mean),
                                   ("running_var", layer.running_var)):
                getattr(norm, target).data = torch.from_numpy(np.array(source, np.float32))
            layers.append(norm)
        elif kind in ("MaxPool2d", "AvgPool2d"):
            pool = torch.nn.MaxPool2d if kind == "MaxPool2d" else torch.nn.AvgPool2d  # padding counted, as ours
            layers.append(pool(layer.kernel_size, layer.stride, layer.padding))
        elif kind in SIMPLE:
            layers.append(SIMPLE[kind](torch, layer))
        else:
            raise NotImplementedError(f"no torch equivalent written for {kind}")
    return torch.nn.Sequential(*layers).eval()


SIMPLE = {  # layers without weights: the torch module of the same function
    "ReLU": lambda torch, layer: torch.nn.ReLU(),
    "Sigmoid": lambda torch, layer: torch.nn.Sigmoid(),
    "Tanh": lambda torch, layer: torch.nn.Tanh(),
    "Flatten": lambda torch, layer: torch.nn.Flatten(),
    "Dropout": lambda torch, layer: torch.nn.Dropout(layer.p),  # the identity in eval mode, as ours
    "Softmax": lambda torch, layer: torch.nn.Softmax(layer.dim),
    "GELU": lambda torch, layer: _gelu(torch, layer.approximate),
}


def _gelu(torch, approximate: str):
    if approximate not in ("tanh", "exact"):
        raise NotImplementedError(f"no torch equivalent written for GELU(approximate={approximate!r})")
    return torch.nn.GELU(approximate="tanh" if approximate == "tanh" else "none")


def copy_from_torch(model, net) -> None:
    """Copy the weights of `net` (made by to_torch(model), then trained) back into `model`."""
    torch_layers = list(net)
    if len(torch_layers) != len(model.layers):
        raise ValueError(f"the torch model has {len(torch_layers)} layers, the tensorforge model {len(model.layers)}")
    for layer, source in zip(model.layers, torch_layers, strict=True):
        kind = type(layer).__name__
        if kind == "BatchNorm2d":
            for target, name in (("gamma", "weight"), ("beta", "bias"), ("running_mean", "running_mean"),
                                 ("running_var", "running_var")):
                getattr(layer, target)[...] = getattr(source, name).detach().cpu().numpy()
            continue
        if kind not in ("Linear", "Conv2d"):
            continue
        weight = source.weight.detach().cpu().numpy()
        layer.weight[...] = weight.T if kind == "Linear" else weight
        if layer.bias is not None:
            layer.bias[...] = source.bias.detach().cpu().numpy().astype(np.float32)

"""The benchmark models in PyTorch, built from the weights of the same tensorforge.nn models."""

from __future__ import annotations


def to_torch(model):
    """A torch.nn.Sequential computing the same function as a tensorforge.nn.Sequential (eval mode)."""
    import torch

    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Linear":
            linear = torch.nn.Linear(*layer.weight.shape)
            linear.weight.data = torch.from_numpy(layer.weight.T.copy())
            linear.bias.data = torch.from_numpy(layer.bias.copy())
            layers.append(linear)
        elif kind == "Conv2d":
            out_ch, in_ch, kh, kw = layer.weight.shape
            conv = torch.nn.Conv2d(in_ch, out_ch, (kh, kw), stride=layer.stride, padding=layer.padding)
            conv.weight.data = torch.from_numpy(layer.weight.copy())
            conv.bias.data = torch.from_numpy(layer.bias.copy())
            layers.append(conv)
        elif kind == "ReLU":
            layers.append(torch.nn.ReLU())
        elif kind == "MaxPool2d":
            layers.append(torch.nn.MaxPool2d(layer.kernel_size))
        elif kind == "Flatten":
            layers.append(torch.nn.Flatten())
        else:
            raise NotImplementedError(f"no torch equivalent written for {kind}")
    return torch.nn.Sequential(*layers).eval()

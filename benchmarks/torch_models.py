"""The benchmark models in PyTorch, built from the weights of the same tensorforge.nn models."""

from __future__ import annotations

from tensorforge.frontend.torch_bridge import to_torch

__all__ = ["to_torch"]

"""tensorforge.nn: the module API of the seed course (TinyTorch), see tensorforge/frontend/modules.py."""

from .frontend import functional
from .frontend.modules import (
    GELU,
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)

__all__ = ["GELU", "AvgPool2d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten", "Linear", "MaxPool2d", "Module",
           "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "functional"]

"""tensorforge.nn: the module API of the seed course (TinyTorch); the classes live in frontend/modules.py.

    from tensorforge import nn
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax())
"""

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
    Pool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    StateDictError,
    Tanh,
    is_module,
    named_arrays,
)

__all__ = ["GELU", "AvgPool2d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten", "Linear", "MaxPool2d", "Module",
           "Pool2d", "ReLU", "Sequential", "Sigmoid", "Softmax", "StateDictError", "Tanh", "functional", "is_module",
           "named_arrays"]

"""tensorforge.nn: the module API of the seed course (TinyTorch); the classes live in frontend/modules.py
and, for transformers, frontend/transformer.py.

    from tensorforge import nn
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax())
    gpt = nn.GPT(vocab_size=65, embed_dim=128, num_layers=4, num_heads=4, max_seq_len=128)
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
from .frontend.transformer import (
    CAUSAL,
    GPT,
    MLP,
    Embedding,
    LayerNorm,
    MultiHeadAttention,
    PositionalEncoding,
    TransformerBlock,
    generate,
    sample,
)

__all__ = ["CAUSAL", "GELU", "GPT", "MLP", "AvgPool2d", "BatchNorm2d", "Conv2d", "Dropout", "Embedding", "Flatten",
           "LayerNorm", "Linear", "MaxPool2d", "Module", "MultiHeadAttention", "Pool2d", "PositionalEncoding", "ReLU",
           "Sequential", "Sigmoid", "Softmax", "StateDictError", "Tanh", "TransformerBlock", "functional", "generate",
           "is_module", "named_arrays", "sample"]

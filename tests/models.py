"""Small PyTorch models shared by the frontend tests (and usable as `slimgraph dump` specs).

Each factory returns ``(module, example_inputs)``: the module in eval mode with a
seeded random init (batch-norm running statistics randomized too, so that
inference-mode batch norm is not the identity), and a tuple of example inputs.
Inputs are small so that every model imports and runs in well under a second.

Example::

    >>> module, (x,) = mlp()
    >>> tuple(module(x).shape)
    (2, 10)
"""

from __future__ import annotations

import torch
from torch import nn


def _seeded_init(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights, and non-trivial batch-norm statistics and affine terms."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            scale = 1.0 / fan_in**0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.75)
    return module.eval()


def _input(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------
# ResNet (torchvision layout: conv1/bn1/layer1..4/fc, BasicBlock and Bottleneck)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet layout with a width multiplier (``width=64`` is the original)."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 10, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """ResNet-18 layout (BasicBlock, [2, 2, 2, 2]) at width 16 on 64x64 images."""
    return _seeded_init(ResNet(BasicBlock, [2, 2, 2, 2], width=16), 18), (_input(1, batch, 3, 64, 64),)


def resnet50(batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """ResNet-50 layout (Bottleneck, [3, 4, 6, 3]) at width 8 on 64x64 images."""
    return _seeded_init(ResNet(Bottleneck, [3, 4, 6, 3], width=8), 50), (_input(2, batch, 3, 64, 64),)


def resnet50_imagenet(batch: int = 1) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Full-size ResNet-50 (torchvision's layout: width 64, 1000 classes, 224x224), for benchmarks."""
    return _seeded_init(ResNet(Bottleneck, [3, 4, 6, 3], num_classes=1000, width=64), 50), (_input(2, batch, 3, 224, 224),)


# ---------------------------------------------------------------------------
# MobileNetV2 style: inverted residuals with depthwise convolutions and ReLU6


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """A narrow MobileNetV2: stem, inverted residual stages, 1x1 head, pooling, classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        # (expand ratio, channels, repeats, stride), a shortened version of the paper's table
        setting = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 3, 2), (6, 24, 2, 1)]
        layers: list[nn.Module] = [_conv_bn(3, 16, 3, 2)]
        cin = 16
        for t, c, n, s in setting:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 64, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """MobileNetV2-style net on 32x32 images."""
    return _seeded_init(MobileNetV2(), 2), (_input(3, batch, 3, 32, 32),)


# ---------------------------------------------------------------------------
# Transformer encoder block (pre-norm), with nn.MultiheadAttention


class EncoderBlock(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def transformer_block(batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """One encoder block over [batch, 8 tokens, 32 features]."""
    module = _seeded_init(EncoderBlock(), 7)
    with torch.no_grad():  # LayerNorm affine terms away from (1, 0) so that they matter
        for norm in (module.norm1, module.norm2):
            norm.weight.add_(1.0)
    return module, (_input(4, batch, 8, 32),)


# ---------------------------------------------------------------------------
# MLP


class MLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...] = (20, 64, 32, 10)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return torch.softmax(self.layers[-1](x), dim=-1)


def mlp(batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A three-layer perceptron with ReLU and a softmax head, on [batch, 20]."""
    return _seeded_init(MLP(), 5), (_input(5, batch, 20),)


#: Every factory, by the name the tests use.
MODELS = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "transformer_block": transformer_block,
    "mlp": mlp,
}

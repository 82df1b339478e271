"""A small CNN trained on scikit-learn's digits (8x8 images, 10 classes), for accuracy figures.

The compression tests (pruning, weight sharing, quantization, the guard, the
ledger) hold their passes to real accuracy on this model. Training is seeded
and takes a few seconds on two cores; the result is cached per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from slimgraph.metrics import top1_accuracy


@dataclass(frozen=True)
class DigitsData:
    x_train: np.ndarray  # f32 [n, 1, 8, 8], scaled to 0..1
    y_train: np.ndarray  # i64 [n]
    x_test: np.ndarray
    y_test: np.ndarray


@functools.lru_cache(maxsize=1)
def digits_data(seed: int = 0) -> DigitsData:
    """The digits set split 80/20 with a fixed permutation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return DigitsData(x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]])


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, max-pool, conv-bn-relu, linear head; ``width`` scales every layer."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        )
        self.classifier = nn.Linear(2 * w * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the identity, then relu: a block a depth variant may skip."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class DigitsResNet(nn.Module):
    """A ResNet-style digits model: a stem, ``blocks`` residual blocks at 8x8 and 4x4 (identity
    shortcuts), global average pooling and a linear head."""

    def __init__(self, width: int = 16, blocks: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        half = blocks // 2
        self.stage1 = nn.Sequential(*(ResidualBlock(width) for _ in range(half)))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), *(ResidualBlock(width) for _ in range(blocks - half)))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(self.stem(x))).mean(dim=(2, 3)))


@functools.lru_cache(maxsize=2)
def trained_digits_resnet(width: int = 16, blocks: int = 4, seed: int = 0) -> DigitsResNet:
    """The trained residual model (cached: callers must not modify it)."""
    torch.manual_seed(seed)
    return train(DigitsResNet(width, blocks), digits_data(), seed=seed)


def train(model: nn.Module, data: DigitsData, epochs: int = 6, seed: int = 0, lr: float = 3e-3) -> nn.Module:
    """Adam on the training split, seeded; returns the model in eval mode."""
    torch.manual_seed(seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=generator).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@functools.lru_cache(maxsize=4)
def trained_digits_cnn(width: int = 16, seed: int = 0) -> DigitsCNN:
    """The trained CNN (cached: callers must not modify it; deep-copy first)."""
    torch.manual_seed(seed)
    return train(DigitsCNN(width), digits_data(), seed=seed)


def accuracy(predict, data: DigitsData | None = None) -> float:
    """Top-1 accuracy in percent of ``predict(x: np.ndarray) -> logits`` on the test split."""
    data = data or digits_data()
    return top1_accuracy(np.asarray(predict(data.x_test)), data.y_test)


def torch_predict(model: nn.Module):
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return predict

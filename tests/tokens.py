"""A small transformer classifier trained on sequences the module makes, for accuracy figures.

The task: random sequences of 12 tokens from a vocabulary of 16, labelled
(count of token 0 + 2 * count of token 1) modulo 4: counting is attention's
job, the modulo the MLPs'. A two-block
pre-norm encoder (attention and an MLP, each a residual branch) with a mean-pooled
MLP head learns it in a few seconds; channel pruning narrows the hidden layers
of the MLPs (linears over the tokens' last axis). Seeded; the
trained model is cached per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tests import digits

VOCAB, SEQ, CLASSES = 16, 12, 4


@dataclass(frozen=True)
class TokenData:
    x_train: np.ndarray  # i64 [n, SEQ]
    y_train: np.ndarray  # i64 [n]
    x_test: np.ndarray
    y_test: np.ndarray


@functools.lru_cache(maxsize=1)
def token_data(n_train: int = 3000, n_test: int = 500, seed: int = 0) -> TokenData:
    """Random sequences labelled (count of token 0 + 2 * count of token 1) modulo CLASSES."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (n_train + n_test, SEQ))
    y = ((x == 0).sum(axis=1) + 2 * (x == 1).sum(axis=1)) % CLASSES
    return TokenData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


class MLP(nn.Module):
    """The position-wise MLP, Linear-GELU-Linear over [N, T, D]: channel pruning narrows its
    hidden width (the last axis between the two linears)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm encoder block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TokenClassifier(nn.Module):
    """Embedding + positions, ``depth`` encoder blocks, mean over tokens, MLP head."""

    def __init__(self, dim: int = 16, heads: int = 4, hidden: int = 16, depth: int = 2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.zeros(SEQ, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(x) + self.pos)
        return self.head(self.norm(h).mean(1))


@functools.lru_cache(maxsize=2)
def trained_token_classifier(depth: int = 2, seed: int = 0) -> TokenClassifier:
    """The trained classifier (cached: callers must not modify it)."""
    torch.manual_seed(seed)
    return digits.train(TokenClassifier(depth=depth), token_data(), epochs=16, seed=seed, batch=128)


def accuracy(predict, data: TokenData | None = None) -> float:
    """Top-1 accuracy in percent of ``predict(x: np.ndarray) -> logits`` on the test split."""
    data = data or token_data()
    return float((np.asarray(predict(data.x_test)).argmax(axis=1) == data.y_test).mean() * 100.0)

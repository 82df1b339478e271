"""Shared fixtures of the compression tests: the digits CNN as a Graph, and evaluation helpers."""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from slimgraph.frontends import from_onnx, from_torch
from slimgraph.ir.graph import Graph
from tests.digits import accuracy, digits_data, train, trained_digits_cnn

LIGHT_RESNET50 = os.path.join(
    os.path.dirname(__import__("onnx").__file__), "backend", "test", "data", "light", "light_resnet50.onnx"
)


@functools.lru_cache(maxsize=1)
def digits_graph() -> Graph:
    """The trained digits CNN imported with a symbolic batch (callers clone before editing)."""
    example = torch.from_numpy(digits_data().x_test[:4])
    return from_torch(trained_digits_cnn(), (example,), dynamic_batch=True)


def graph_accuracy(graph: Graph) -> float:
    """Top-1 test accuracy (percent) of a digits graph under the reference interpreter."""
    return accuracy(lambda x: graph.run(x)[0])


@functools.lru_cache(maxsize=1)
def float_accuracy() -> float:
    return graph_accuracy(digits_graph())


def fine_tune(graph: Graph, epochs: int, lr: float, keep_zeros: bool = False) -> torch.nn.Module:
    """Train the graph's weights through the torch round trip (seeded Adam on the digits train split)."""
    from slimgraph.backends.torch import to_torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return train(to_torch(graph, keep_zeros=keep_zeros), digits_data(), epochs=epochs, lr=lr)


@functools.lru_cache(maxsize=1)
def light_resnet50() -> Graph:
    return from_onnx(LIGHT_RESNET50)


def random_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

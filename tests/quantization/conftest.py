"""Shared fixtures: the digits CNN imported and folded, its calibration batches, and the quantize passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slimgraph.passes.lower_quantized  # noqa: F401  (registers lower-quantized)
import slimgraph.passes.quantize  # noqa: F401  (registers quantize)
from slimgraph.frontends import from_torch
from slimgraph.passes import run_pipeline
from tests.digits import digits_data, trained_digits_cnn


@pytest.fixture(scope="session")
def digits_graph():
    data = digits_data()
    graph = from_torch(trained_digits_cnn(), (torch.from_numpy(data.x_test[:2]),), dynamic_batch=True)
    folded, _ = run_pipeline(graph, "fold-constants,dce")
    return folded


@pytest.fixture(scope="session")
def calibration_batches():
    data = digits_data()
    return [data.x_train[i : i + 32] for i in range(0, 256, 32)]


def predictor(graph):
    return lambda x: graph.run(np.ascontiguousarray(x))[0]

"""Frontends: turn PyTorch modules and ONNX models into slimgraph Graphs.

One folder per frontend, one converter function per source op. Nothing in the
core imports a frontend; these imports are lazy so that ``import slimgraph``
does not pull in torch.

Example::

    >>> from slimgraph.frontends import from_onnx   # doctest: +SKIP
    >>> graph = from_onnx("model.onnx")               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any


def from_onnx(model_or_path: Any, dynamic_batch: bool = False, **kwargs: Any):
    """Import an ONNX ModelProto or file; see :mod:`slimgraph.frontends.onnx`."""
    from slimgraph.frontends.onnx import from_onnx as _from_onnx

    return _from_onnx(model_or_path, dynamic_batch=dynamic_batch, **kwargs)


def from_torch(module: Any, example_inputs: Any, dynamic_batch: bool = False, **kwargs: Any):
    """Import a torch.nn.Module; see :mod:`slimgraph.frontends.torch`."""
    from slimgraph.frontends.torch import from_torch as _from_torch

    return _from_torch(module, example_inputs, dynamic_batch=dynamic_batch, **kwargs)


__all__ = ["from_onnx", "from_torch"]

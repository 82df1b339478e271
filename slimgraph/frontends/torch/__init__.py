"""The PyTorch frontend: ``from_torch(module, example_inputs)`` gives a slimgraph Graph.

Two paths, one result:

- ``"export"``: ``torch.export`` in eval mode, decomposed to core ATen, each
  aten op converted (:mod:`.exporter`, :mod:`.aten`);
- ``"fx"``: ``torch.fx`` symbolic tracing, with nn modules, torch functions and
  Tensor methods converted (:mod:`.fx`, :mod:`.modules`, :mod:`.functions`).

``method="auto"`` tries export and falls back to fx when export cannot trace
the module (data-dependent control flow on a buffer, say); the path taken is
logged on the ``slimgraph.frontends.torch`` logger and returned in an
:class:`ImportInfo` with ``return_info=True``.

Semantics are inference: batch norm uses its running statistics, dropout is
the identity. Weights are constants named by their torch names
(``layer1.0.conv1.weight``). The user's module is left as it was: training
flags are restored and nothing is written to it.

Example::

    >>> import torch
    >>> from slimgraph.frontends.torch import from_torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> g, info = from_torch(net, (torch.zeros(2, 4),), dynamic_batch=True, return_info=True)
    >>> info.path, str(g.outputs[0].type), g.value("0.weight").type.shape
    ('export', 'f32[N,3]', (3, 4))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from slimgraph.dynamic import DynamicAxes
from slimgraph.errors import FrontendError, SlimgraphWarning
from slimgraph.ir import Graph

logger = logging.getLogger("slimgraph.frontends.torch")

METHODS = ("auto", "export", "fx")


@dataclass(frozen=True)
class ImportInfo:
    """How a module was imported: ``path`` is "export" or "fx"; ``reason`` says why
    export was not used (None when it was, or when fx was asked for)."""

    path: str
    reason: str | None = None


def from_torch(
    module: torch.nn.Module,
    example_inputs: Any,
    dynamic_batch: bool = False,
    method: str = "auto",
    return_info: bool = False,
    dynamic: DynamicAxes | None = None,
) -> Graph | tuple[Graph, ImportInfo]:
    """Import a torch module as a Graph.

    ``example_inputs`` is a tensor or a tuple of inputs to ``forward``. With
    ``dynamic_batch`` axis 0 of every input is the symbol ``N`` through the
    whole graph. ``method`` is "auto" (export, else fx), "export" or "fx".
    Unsupported ops raise one FrontendError listing each with its count and
    first source line. With ``return_info`` the result is ``(graph, ImportInfo)``.
    ``dynamic`` (see :func:`slimgraph.dynamic.parse_dynamic`) exports those axes as
    ``torch.export.Dim``s, each the IR symbol of its name; it needs torch.export.
    """
    if not isinstance(module, torch.nn.Module):
        raise FrontendError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    if method not in METHODS:
        raise FrontendError(f"method={method!r} is not valid; valid: {', '.join(METHODS)}")
    inputs = _as_inputs(example_inputs)
    if dynamic and method == "fx":
        raise FrontendError("dynamic= needs torch.export; method='fx' traces one fixed shape")
    graph, info = _import(module, inputs, dynamic_batch, method, dynamic)
    message = f"imported {type(module).__name__} through {'torch.export' if info.path == 'export' else 'torch.fx'}"
    logger.info(message + (f" (torch.export failed: {info.reason})" if info.reason else ""))
    graph.verify()
    return (graph, info) if return_info else graph


def _import(module: torch.nn.Module, inputs: tuple, dynamic_batch: bool, method: str,
            dynamic: DynamicAxes | None = None) -> tuple[Graph, ImportInfo]:
    from slimgraph.frontends.torch import exporter

    if method == "fx":
        return _trace(module, inputs, dynamic_batch, None), ImportInfo("fx")
    try:
        program = exporter.export(module, inputs, dynamic_batch, dynamic)
    except Exception as exc:  # torch raises many types here; any of them means export cannot trace it
        reason = _summary(exc)
        if dynamic:
            # torch's constraint errors say which guard fixed a size on the lines after the first
            detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:4])[:800]
            raise FrontendError(f"torch.export could not trace {type(module).__name__} with dynamic={_axes(dynamic)}: "
                                f"{type(exc).__name__}: {detail}") from exc
        if method == "export":
            raise FrontendError(f"torch.export could not trace {type(module).__name__}: {reason}") from exc
        return _trace(module, inputs, dynamic_batch, reason), ImportInfo("fx", reason)
    return exporter.convert_program(program, type(module).__name__, dynamic), ImportInfo("export")


def _axes(dynamic: DynamicAxes) -> str:
    return str({i: {a: f"{d.name}[{d.min}..{d.max}]" for a, d in axes.items()} for i, axes in dynamic.items()})


def _trace(module: torch.nn.Module, inputs: tuple, dynamic_batch: bool, export_failure: str | None) -> Graph:
    from slimgraph.frontends.torch import fx

    try:
        graph, tensors = fx.trace(module, inputs)
    except (FrontendError, SlimgraphWarning):  # a warning the user's filters made an error stays itself
        raise
    except Exception as exc:  # symbolic tracing fails with TraceError, TypeError, ...
        before = f"torch.export failed ({export_failure}); " if export_failure else ""
        raise FrontendError(
            f"cannot import {type(module).__name__}: {before}torch.fx.symbolic_trace failed ({_summary(exc)})"
        ) from exc
    return fx.convert_traced(module, inputs, graph, tensors, dynamic_batch)


def _as_inputs(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise FrontendError(
        f"example_inputs must be a tensor or a tuple of inputs, got {type(example_inputs).__name__}"
    )


def _summary(exc: BaseException) -> str:
    """The first line of an exception, short enough for a log line."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}"


__all__ = ["ImportInfo", "from_torch"]

"""The torch.fx path: symbolic_trace (in eval mode), keeping convertible nn modules as leaves.

Used when torch.export cannot trace a module. Modules with a converter
(Conv2d, BatchNorm2d, MultiheadAttention, ...) stay whole as ``call_module``
nodes; any other module is traced through, down to functions and Tensor
methods. Shapes come from the IR's own type inference, so a symbolic batch
``N`` flows through ``x.size(0)`` and ``x.view(x.size(0), -1)``.

Example::

    >>> import torch
    >>> g = trace_graph(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), (torch.zeros(2, 4),))
    >>> [n.op for n in g.nodes]
    ['const', 'const', 'linear', 'relu']
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.fx

from slimgraph.errors import FrontendError
from slimgraph.frontends.torch import walker
from slimgraph.frontends.torch.context import Context, evaluating, warn_frozen_buffers
from slimgraph.frontends.torch.registry import MODULES, load_converters
from slimgraph.ir import Graph


class _Tracer(torch.fx.Tracer):
    """Leaves are exactly the module types slimgraph converts; stack traces are kept for locations."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return type(m) in MODULES


def trace(module: torch.nn.Module, inputs: tuple) -> tuple[torch.fx.Graph, dict[str, torch.Tensor]]:
    """symbolic_trace in eval mode; returns the graph and the tensors its get_attr nodes read.

    The tracer stores tensors created in ``forward`` as new attributes of the
    traced module; they are read out and removed so the user's module is left
    as it was. Buffers are real tensors while tracing, so an in-place update in
    ``forward`` runs on them: the graph keeps the updated value (as one call of
    ``forward`` sees it), the module gets its own back, and a warning names them.
    """
    load_converters()
    concrete = {k: v for k, v in _by_parameter(module, inputs).items() if not isinstance(v, (torch.Tensor, tuple))}
    before = set(vars(module))
    buffers = dict(module.named_buffers())
    saved = {name: b.detach().clone() for name, b in buffers.items()}
    with evaluating(module):
        try:
            graph = _Tracer().trace(module, concrete_args=concrete or None)
        finally:
            added = set(vars(module)) - before
            attrs = {name: vars(module)[name] for name in added}
            for name in added:
                delattr(module, name)
            # the graph keeps what one call gave each buffer, as torch.export does
            updated = {name: b.detach().clone() for name, b in buffers.items() if not torch.equal(b, saved[name])}
            with torch.no_grad():
                for name in updated:
                    buffers[name].copy_(saved[name])
    warn_frozen_buffers(type(module).__name__, list(updated))
    tensors = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            if node.target in attrs:
                tensors[node.target] = attrs[node.target]
            elif node.target in updated:
                tensors[node.target] = updated[node.target]
            else:
                tensors[node.target] = _fetch(module, node.target)
    return graph, tensors


def trace_graph(module: torch.nn.Module, inputs: tuple, dynamic_batch: bool = False) -> Graph:
    """Trace ``module`` with torch.fx and convert the graph."""
    return convert_traced(module, inputs, *trace(module, inputs), dynamic_batch)


def convert_traced(module: torch.nn.Module, inputs: tuple, graph: torch.fx.Graph,
                   tensors: dict[str, torch.Tensor], dynamic_batch: bool = False) -> Graph:
    """Convert a graph from :func:`trace`; inputs are named after forward's parameters."""
    name = type(module).__name__
    walker.check_supported(graph, module, f"module {name}")
    ctx = Context(name)
    _create_weights(ctx, module, tensors)
    examples = _by_parameter(module, inputs)

    def resolve(node: torch.fx.Node) -> Any:
        if node.op == "get_attr":
            return ctx.param(node.target, tensors[node.target])
        if node.target in examples:
            example = examples[node.target]
            if isinstance(example, tuple):  # *args: one graph input per element
                return tuple(ctx.graph.add_input(f"{node.target[1:]}_{i}", ctx.tensor_type(x, dynamic_batch))
                             for i, x in enumerate(example))
            if not isinstance(example, torch.Tensor):
                return example
            return ctx.graph.add_input(node.name, ctx.tensor_type(example, dynamic_batch))
        if node.args:
            return node.args[0]  # a parameter left at its default
        raise FrontendError(f"module {name}: no example input for forward parameter {node.target!r}")

    outputs = walker.convert(ctx, graph, module, resolve)
    return ctx.finish(walker.tensor_outputs(outputs))


def _create_weights(ctx: Context, module: torch.nn.Module, traced: dict[str, torch.Tensor]) -> None:
    # Created up front so that each weight gets exactly its state_dict name;
    # the ones the graph does not read are dropped when the graph is finished.
    # A buffer that forward updated takes the value tracing gave it (see trace).
    for name, tensor in module.named_parameters(remove_duplicate=False):
        ctx.param(name, tensor)
    for name, tensor in module.named_buffers(remove_duplicate=False):
        ctx.param(name, traced.get(name, tensor))


def _by_parameter(module: torch.nn.Module, inputs: tuple) -> dict[str, Any]:
    """Example inputs by the forward parameter they fill; ``*args`` gets a tuple, keyed as FX names it."""
    params = list(inspect.signature(module.forward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = next((p for p in params if p.kind == p.VAR_POSITIONAL), None)
    if len(inputs) > len(positional) and varargs is None:
        raise FrontendError(f"{type(module).__name__}.forward takes {len(positional)} inputs, got {len(inputs)}")
    named: dict[str, Any] = {p.name: x for p, x in zip(positional, inputs)}
    if varargs is not None:
        named[f"*{varargs.name}"] = tuple(inputs[len(positional):])
    return named


def _fetch(module: torch.nn.Module, target: str) -> torch.Tensor:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, torch.Tensor):
        raise FrontendError(f"attribute {target} read by forward is a {type(obj).__name__}, not a tensor")
    return obj

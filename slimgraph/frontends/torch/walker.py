"""Walk an FX graph (from torch.export or torch.fx) and convert every node.

The walk is in two steps: first every node's converter is looked up, and if
any are missing ONE FrontendError lists each unsupported target with its count
and the first place it occurs in the user's source; then the nodes are
converted in order. Both import paths share this walk; they differ only in how
placeholders become inputs and constants.

Example::

    >>> source_line('File "/home/me/net.py", line 12, in forward\\n    return torch.cumsum(x, 1)')
    ('/home/me/net.py', 12, 'return torch.cumsum(x, 1)')
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Callable

import torch
import torch.fx

from slimgraph.errors import FrontendError, SlimgraphError
from slimgraph.frontends.torch.context import Context
from slimgraph.frontends.torch.registry import lookup
from slimgraph.ir import Value

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in [^\n]*(?:\n(?P<code>[^\n]*))?')
_TORCH_DIR = os.path.dirname(torch.__file__)

#: What a placeholder or get_attr node becomes: (fx node) -> env value.
Resolver = Callable[[torch.fx.Node], Any]


def source_line(stack_trace: str | None) -> tuple[str, int, str] | None:
    """(file, line, code) of the innermost frame of a stack trace outside torch itself."""
    frames = [m for m in _FRAME.finditer(stack_trace or "") if not m["file"].startswith(_TORCH_DIR)]
    if not frames:
        return None
    last = frames[-1]
    return last["file"], int(last["line"]), (last["code"] or "").strip()


def _display_path(path: str) -> str:
    """The path relative to the working directory when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def module_path(node: torch.fx.Node) -> str | None:
    """The qualified name of the innermost module the node came from (``layer1.0.conv1``)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path or None


def location(node: torch.fx.Node) -> str | None:
    """A node's ``loc``: ``"net.py:12 (layer1.0.conv1)"``, or what part of it is known."""
    src = source_line(node.stack_trace)
    mod = module_path(node)
    where = f"{os.path.basename(src[0])}:{src[1]}" if src else None
    if where and mod:
        return f"{where} ({mod})"
    return where or mod


def check_supported(graph: torch.fx.Graph, root: torch.nn.Module | None, what: str) -> None:
    """Raise one FrontendError naming every unsupported target, with count and first place."""
    counts: Counter[str] = Counter()
    first: dict[str, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op not in ("call_function", "call_method", "call_module"):
            continue
        name, converter = lookup(node, root)
        if converter is None:
            counts[name] += 1
            first.setdefault(name, node)
    if not counts:
        return
    lines = []
    for name, count in counts.items():
        node = first[name]
        src = source_line(node.stack_trace)
        place = f"{_display_path(src[0])}:{src[1]}" + (f": {src[2]}" if src[2] else "") if src else "unknown source"
        mod = module_path(node)
        lines.append(f"  {name} (x{count}), first at {place}" + (f" [in {mod}]" if mod else ""))
    raise FrontendError(
        f"{what} uses {len(counts)} op{'s' if len(counts) > 1 else ''} slimgraph cannot import:\n" + "\n".join(lines)
    )


def convert(ctx: Context, graph: torch.fx.Graph, root: torch.nn.Module | None, resolve: Resolver,
            check: Callable[[torch.fx.Node, Any], None] | None = None) -> list[Any]:
    """Convert every node of ``graph``; returns what its outputs converted to, flattened.

    ``resolve`` turns placeholders and get_attr nodes into values; ``check``,
    when given, is called with each node and its result (to compare with
    torch's own shape metadata)."""
    env: dict[torch.fx.Node, Any] = {}
    outputs: list[Any] = []
    for node in graph.nodes:
        ctx.loc, ctx.base = location(node), node.name
        if node.op in ("placeholder", "get_attr"):
            env[node] = resolve(node)
            continue
        if node.op == "output":
            outputs = list(torch.utils._pytree.tree_leaves(_map(env, node.args[0])))
            continue
        _require_inputs(ctx, node, env)
        name, converter = lookup(node, root)
        args, kwargs = _map(env, node.args), _map(env, node.kwargs)
        first_new = len(ctx.graph.nodes)
        try:
            if node.op == "call_module":
                result = converter(ctx, root.get_submodule(node.target), node.target, *args, **kwargs)
            else:
                result = converter(ctx, *args, **kwargs)
        except FrontendError:
            raise
        except SlimgraphError as exc:
            raise FrontendError(f"{ctx.where()}converting {name}: {exc}") from exc
        except (TypeError, ValueError, IndexError, KeyError) as exc:  # arguments the converter cannot take
            raise FrontendError(
                f"{ctx.where()}converting {name}: unsupported arguments ({type(exc).__name__}: {exc})"
            ) from exc
        if check is not None:
            check(node, result)
        _adopt_name(ctx, result, ctx.graph.nodes[first_new:])
        env[node] = result
    return outputs


def tensor_outputs(outputs: list[Any]) -> list[Value]:
    """Check that every selected output converted to a tensor value."""
    for i, value in enumerate(outputs):
        if not isinstance(value, Value):
            raise FrontendError(f"output {i} of the module is a {type(value).__name__}, not a tensor")
    return outputs


def _require_inputs(ctx: Context, node: torch.fx.Node, env: dict) -> None:
    for arg in node.all_input_nodes:
        if env.get(arg, ...) is None and arg.op != "placeholder":
            raise FrontendError(
                f"{ctx.where()}{node.name} reads an output of {arg.name} that slimgraph does not compute "
                "(e.g. the indices of max pooling or the statistics of batch norm)"
            )


def _map(env: dict, arg: Any) -> Any:
    return torch.fx.node.map_arg(arg, lambda n: env[n])


def _adopt_name(ctx: Context, result: Any, new_nodes: list) -> None:
    """Give a node's result (the first one, for several) the FX node's name when it is new and the name free."""
    first = result[0] if isinstance(result, tuple) and result else result
    if isinstance(first, Value) and any(first.producer is n for n in new_nodes):
        if not ctx.graph.has_value(ctx.base):
            ctx.graph.rename(first, ctx.base)

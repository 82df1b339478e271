"""The IR's text form: one equation per line, typed, sorted attributes, and it parses back.

::

    graph @tiny(%x: f32[N,3,32,32]) -> (f32[N,16,32,32]) {
      %conv.weight = const @conv.weight : f32[16,3,3,3]
      %0 = conv(%x, %conv.weight) {pads=[1, 1, 1, 1]} : f32[N,16,32,32] loc("Conv_0")
      %1 = relu(%0) : f32[N,16,32,32]
      return %1
    }

Attributes equal to their default are left out. Constants with at most
``inline_limit`` elements print inline (``const [1.0, 2.0] : f32[2]``); larger
ones print as ``@ref`` and their arrays are the graph's payloads
(:func:`collect_payloads`), which :func:`slimgraph.ir.serialize.save` writes to
a sidecar. A graph-valued attribute (a fused region's body) prints nested.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType, print_graph
    >>> g = Graph("g")
    >>> x = g.add_input("x", TensorType("f32", (2,)))
    >>> g.set_outputs([g.call("leaky_relu", x, alpha=0.2)])
    >>> print(print_graph(g))
    graph @g(%x: f32[2]) -> (f32[2]) {
      %0 = leaky_relu(%x) {alpha=0.2} : f32[2]
      return %0
    }
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from slimgraph.ir.types import DType, TensorType

#: Constants with more elements than this print as references to a payload.
DEFAULT_INLINE_LIMIT = 16

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.$/]+$")


def format_name(name: str) -> str:
    """A value or graph name as it appears after ``%`` or ``@`` (quoted when needed)."""
    return name if _PLAIN_NAME.match(name) else json.dumps(name)


def format_float(x: float) -> str:
    """Shortest text that reads back to the same float (``nan``, ``inf`` and ``-inf`` spelled out)."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = repr(x)
    return text if any(c in text for c in ".en") else text + ".0"


def format_scalar(x: Any, dtype: DType) -> str:
    if dtype is DType.bool:
        return "true" if x else "false"
    if dtype.is_float:
        return format_float(x)
    return str(int(x))


def _format_narrow_float(x: np.floating) -> str:
    """Fewest digits that read back to the same f32/f16 value (``1.0562413``, not
    ``1.0562412738800049``)."""
    if not np.isfinite(x):
        return format_float(float(x))
    if x != 0 and not 1e-4 <= abs(float(x)) < 1e16:
        return np.format_float_scientific(x, unique=True, trim="0").replace("+", "")
    return np.format_float_positional(x, unique=True, trim="0")


def format_tensor_values(array: np.ndarray) -> str:
    """A flat, row-major list literal of an array's elements."""
    dtype = DType.of(array.dtype)
    flat = array.reshape(-1)
    if dtype.is_float:
        narrow = flat if dtype is not DType.bfloat16 else flat.astype(np.float32)  # numpy cannot format bf16
        return "[" + ", ".join(_format_narrow_float(x) for x in narrow) + "]"
    return "[" + ", ".join(format_scalar(x, dtype) for x in flat.tolist()) + "]"


def print_graph(graph, inline_limit: int | None = DEFAULT_INLINE_LIMIT) -> str:
    """Text of ``graph``. ``inline_limit=None`` prints every constant inline."""
    from slimgraph.ir.graph import check_region_depth

    check_region_depth(graph)
    lines: list[str] = []
    _emit_graph(graph, lines, "", "", inline_limit)
    return "\n".join(lines) + "\n"


def collect_payloads(graph, inline_limit: int | None = DEFAULT_INLINE_LIMIT) -> dict[str, np.ndarray]:
    """The arrays that :func:`print_graph` prints as ``@ref``, keyed by reference."""
    from slimgraph.ir.graph import check_region_depth

    check_region_depth(graph)
    payloads: dict[str, np.ndarray] = {}
    _walk_payloads(graph, "", inline_limit, payloads)
    return payloads


def _walk_payloads(graph, prefix: str, inline_limit: int | None, out: dict) -> None:
    for node in graph.nodes:
        for key, attr in node.attrs.items():
            if isinstance(attr, np.ndarray) and _is_ref(attr, inline_limit):
                out[_ref_key(prefix, node, key)] = attr
            elif hasattr(attr, "nodes"):
                _walk_payloads(attr, prefix + node.outputs[0].name + "::", inline_limit, out)


def _is_ref(array: np.ndarray, inline_limit: int | None) -> bool:
    return inline_limit is not None and array.size > inline_limit


def _ref_key(prefix: str, node, attr: str) -> str:
    base = prefix + node.outputs[0].name
    return base if node.op == "const" else f"{base}.{attr}"


def _emit_graph(graph, lines: list[str], indent: str, prefix: str, inline_limit: int | None, head: str = "") -> None:
    params = ", ".join(f"%{format_name(v.name)}: {v.type}" for v in graph.inputs)
    results = ", ".join(str(v.type) for v in graph.outputs)
    lines.append(f"{indent}{head}graph @{format_name(graph.name)}({params}) -> ({results}) {{")
    inner = indent + "  "
    for node in graph.nodes:
        _emit_node(node, lines, inner, prefix, inline_limit)
    rets = ", ".join(f"%{format_name(v.name)}" for v in graph.outputs)
    lines.append(f"{inner}return {rets}".rstrip())
    lines.append(f"{indent}}}")


def _emit_node(node, lines: list[str], indent: str, prefix: str, inline_limit: int | None) -> None:
    outs = ", ".join(f"%{format_name(v.name)}" for v in node.outputs)
    types = ", ".join(str(v.type) for v in node.outputs)
    loc = f" loc({json.dumps(node.loc)})" if node.loc is not None else ""
    if node.op == "const":
        value = node.attrs["value"]
        payload = f"@{format_name(_ref_key(prefix, node, 'value'))}" if _is_ref(value, inline_limit) else format_tensor_values(value)
        lines.append(f"{indent}{outs} = const {payload} : {types}{loc}")
        return
    args = ", ".join(f"%{format_name(v.name)}" for v in node.inputs)
    opdef = node.opdef
    plain: list[str] = []
    nested: list[tuple[str, Any]] = []
    for spec in sorted(opdef.attrs, key=lambda a: a.name):
        value = node.attrs[spec.name]
        if not spec.required and _same(value, spec.default):
            continue
        if spec.kind == "graph":
            nested.append((spec.name, value))
        else:
            plain.append(f"{spec.name}={_format_attr(spec.kind, value, prefix, node, spec.name, inline_limit)}")
    if not nested:
        attrs = f" {{{', '.join(plain)}}}" if plain else ""
        lines.append(f"{indent}{outs} = {node.op}({args}){attrs} : {types}{loc}")
        return
    # Graph-valued attributes come last in the dict and span lines.
    opening = f"{indent}{outs} = {node.op}({args}) {{" + "".join(p + ", " for p in plain)
    for i, (name, body) in enumerate(nested):
        sub: list[str] = []
        _emit_graph(body, sub, indent + "  ", prefix + node.outputs[0].name + "::", inline_limit, head="")
        first = sub[0].lstrip()
        if i == 0:
            lines.append(f"{opening}{name}={first}")
        else:
            lines[-1] += ","
            lines.append(f"{indent}  {name}={first}")
        lines.extend(sub[1:])
    lines[-1] += f"}} : {types}{loc}"


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, float) and isinstance(default, float) and math.isnan(value) and math.isnan(default):
        return True
    return type(value) is type(default) and value == default


def _format_attr(kind: str, value: Any, prefix: str, node, name: str, inline_limit: int | None) -> str:
    if value is None:
        return "none"
    if kind == "int":
        return str(value)
    if kind == "float":
        return format_float(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "str":
        return json.dumps(value)
    if kind == "ints":
        return "[" + ", ".join(str(v) for v in value) + "]"
    if kind == "floats":
        return "[" + ", ".join(format_float(v) for v in value) + "]"
    if kind == "dtype":
        return value.value
    if kind == "tensor":
        ttype = TensorType.of_array(value)
        if _is_ref(value, inline_limit):
            return f"dense<{ttype}> @{format_name(_ref_key(prefix, node, name))}"
        return f"dense<{ttype}> {format_tensor_values(value)}"
    raise ValueError(f"attribute kind {kind!r} has no text form")

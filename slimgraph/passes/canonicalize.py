"""``canonicalize``: exact algebraic simplifications and shape-op cleanup.

Every rule here keeps results bit-for-bit (no reassociation of floats):

- identities: ``x*1``, ``x+0``, ``x-0``, ``x/1``, ``x**1``, ``relu(relu(x))``,
  ``neg(neg(x))``, ``identity(x)``, a ``cast`` to the dtype ``x`` has;
- ``x - c`` becomes ``x + (-c)`` and ``x / c`` becomes ``x * (1/c)`` when ``c``
  is a power of two, so later rules and fusion see fewer op kinds;
- ``x * sigmoid(x)`` becomes ``silu(x)``;
- an ``expand`` feeding an op that broadcasts anyway (elementwise ops with
  several inputs, ``matmul``) is dropped when the result keeps its type;
- :data:`SHAPE_RULES`: shape ops that leave their input as it is vanish
  (reshape/expand to the same shape, identity transpose, full slice, zero
  pad, tile by ones, single-input concat or split); chains of reshape-like
  ops (reshape, flatten, squeeze, unsqueeze) become one reshape; two
  transposes become one (or none); a reshape that regroups a matmul's rows
  sinks below the elementwise ops after it (``f(reshape(y))`` becomes
  ``reshape(f(y))``), so they become the matmul's epilogue; a zero pad of the
  spatial axes feeding a ``conv`` becomes the conv's own padding.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (2, 3)))
    >>> t = g.call("transpose", g.call("transpose", x, perm=(1, 0)), perm=(1, 0))
    >>> g.set_outputs([g.call("sub", g.call("mul", t, g.const(np.float32(1))), g.const(np.float32(2)))])
    >>> [n.op for n in Canonicalize()(g).nodes]
    ['const', 'add']
"""

from __future__ import annotations

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.graph import Graph, Value
from slimgraph.ir.registry import get_op
from slimgraph.ir.types import TensorType
from slimgraph.passes.pattern import Any, Const, Match, Pat, RewriteRule, apply_rewrites, rewrite
from slimgraph.passes.registry import Pass, option, register_pass


FLOATS = ("f32", "f64", "f16", "bf16")


def _same_type(m: Match, name: str = "x") -> Value | None:
    """The captured value when it can stand for the root's result (same dtype and shape)."""
    return m[name] if m[name].type == m.root.output.type else None


# Only mul and add are commutative, so div, pow and sub match x first.
@rewrite(Pat(("mul", "div", "pow"), Any("x"), Const(value=1)))
def drop_times_one(m: Match) -> Value | None:
    return _same_type(m)


@rewrite(Pat(("add", "sub"), Any("x"), Const(value=0)))
def drop_plus_zero(m: Match) -> Value | None:
    return _same_type(m)


@rewrite(Pat("neg", Pat("neg", Any("x"))))
def drop_double_neg(m: Match) -> Value:
    return m["x"]


@rewrite(Pat("relu", Pat("relu", name="inner")))
def drop_double_relu(m: Match) -> Value:
    return m["inner"]


@rewrite(Pat("sub", Any("x"), Const("c", dtype=FLOATS)))
def sub_const_as_add(m: Match) -> Value:
    return m.graph.call("add", m["x"], m.graph.const(np.negative(m.array("c")), dtype=m["c"].type.dtype))


def _is_power_of_two(a: np.ndarray) -> bool:
    # Exponents stay far from the float16 range ends, so 1/c is exact in every float dtype.
    mantissa, exponent = np.frexp(a.astype(np.float64))
    return bool(np.all(np.abs(mantissa) == 0.5) and np.all(np.abs(exponent) < 12))


@rewrite(Pat("div", Any("x"), Const("c", dtype=FLOATS, where=_is_power_of_two)))
def div_power_of_two_as_mul(m: Match) -> Value:
    c = m.array("c")
    return m.graph.call("mul", m["x"], m.graph.const(1 / c.astype(np.float64), dtype=m["c"].type.dtype))


@rewrite(Pat(("identity", "cast"), Any("x")))
def drop_identity(m: Match) -> Value | None:
    return _same_type(m)


def _expanded(value: Value) -> bool:
    return value.producer is not None and value.producer.op == "expand"


def _broadcasts_an_expand(node) -> bool:
    broadcasts = node.op == "matmul" or (node.opdef.category == "elementwise" and len(node.inputs) > 1)
    return broadcasts and any(_expanded(v) for v in node.inputs)


@rewrite(Pat("*", where=_broadcasts_an_expand))
def drop_expand_before_broadcast(m: Match) -> tuple[Value, ...] | None:
    node = m.root
    inputs = [v.producer.inputs[0] if _expanded(v) else v for v in node.inputs]
    try:
        types = node.opdef.infer_types([v.type for v in inputs], node.attrs)
    except GraphError:
        return None
    if types != [v.type for v in node.outputs]:
        return None  # the expand did more than broadcasting would
    return m.graph.add_node(node.op, inputs, node.attrs, loc=node.loc).outputs


@rewrite(Pat("mul", Any("x"), Pat("sigmoid", Any("x"))))
def mul_by_own_sigmoid_as_silu(m: Match) -> Value | None:
    """``x * sigmoid(x)`` (SiLU as exported) is ``silu(x)``, the same formula: one epilogue op instead of
    a value with two readers, which a conv's register tile can take in."""
    return m.graph.call("silu", m["x"]) if m["x"].type == m.root.output.type else None


ALGEBRA_RULES: list[RewriteRule] = [
    drop_times_one,
    drop_plus_zero,
    drop_double_neg,
    drop_double_relu,
    sub_const_as_add,
    div_power_of_two_as_mul,
    drop_identity,
    drop_expand_before_broadcast,
    mul_by_own_sigmoid_as_silu,
]

# -- shape ops ------------------------------------------------------------------

_RESHAPE_LIKE = ("reshape", "flatten", "squeeze", "unsqueeze")


def _is_noop(node) -> bool:
    a = node.attrs
    if node.op == "transpose":
        return list(a["perm"]) == list(range(node.inputs[0].type.rank)) or (not a["perm"] and node.inputs[0].type.rank <= 1)
    if node.op == "slice":
        return all(s > 0 for s in a["steps"])
    if node.op == "pad":
        return all(p == 0 for p in a["pads"])
    return node.op in _RESHAPE_LIKE + ("expand", "tile", "concat")


@rewrite(Pat(_RESHAPE_LIKE + ("expand", "tile", "pad", "slice", "transpose", "concat"), where=_is_noop))
def drop_noop_shape_op(m: Match) -> Value | None:
    x = m.root.inputs[0]
    return x if len(m.root.inputs) == 1 and x.type == m.root.output.type else None


@rewrite(Pat("split", Any("x"), where=lambda n: len(n.outputs) == 1))
def drop_single_split(m: Match) -> Value | None:
    return _same_type(m)


def reshape_attr(source: TensorType, target: TensorType) -> tuple[int, ...] | None:
    """A ``reshape`` shape attribute taking ``source`` to ``target``, or None.

    Static dims are written out; a symbolic dim is copied (0) when ``source``
    has it at the same position, else inferred (-1) once.
    """
    shape: list[int] = []
    for i, dim in enumerate(target.shape):
        if isinstance(dim, int):
            shape.append(dim)
        elif i < source.rank and source.shape[i] == dim:
            shape.append(0)
        elif -1 not in shape:
            shape.append(-1)
        else:
            return None
    attrs = get_op("reshape").normalize_attrs({"shape": tuple(shape)})
    try:
        inferred = get_op("reshape").infer_types([source], attrs)[0]
    except GraphError:
        return None
    return tuple(shape) if inferred == target else None


@rewrite(Pat(_RESHAPE_LIKE, Pat(_RESHAPE_LIKE, Any("x"))))
def merge_reshapes(m: Match) -> Value | None:
    shape = reshape_attr(m["x"].type, m.root.output.type)
    return None if shape is None else m.graph.call("reshape", m["x"], shape=shape)


def _perm(node) -> tuple[int, ...]:
    rank = node.inputs[0].type.rank
    return tuple(p % rank for p in node.attrs["perm"]) if node.attrs["perm"] else tuple(reversed(range(rank)))


@rewrite(Pat("transpose", Pat("transpose", Any("x"), name="inner")))
def merge_transposes(m: Match) -> Value:
    inner, outer = _perm(m.node("inner")), _perm(m.root)
    perm = tuple(inner[p] for p in outer)
    if perm == tuple(range(len(perm))):
        return m["x"]
    return m.graph.call("transpose", m["x"], perm=perm)


def _zero_pad_of_spatial_axes(node) -> bool:
    """A constant-zero pad growing only the spatial axes (2, 3, ...) of an N-d feature map."""
    a = node.attrs
    pads, rank = a["pads"], node.inputs[0].type.rank
    return (a["mode"] == "constant" and a["value"] == 0.0 and rank >= 3 and all(p >= 0 for p in pads)
            and not any(pads[i] or pads[rank + i] for i in (0, 1)))


def _reads_a_zero_pad(node) -> bool:
    x = node.inputs[0].producer
    return x is not None and x.op == "pad" and _zero_pad_of_spatial_axes(x)


@rewrite(Pat("conv", where=_reads_a_zero_pad))
def pad_into_conv(m: Match) -> Value:
    """A conv reading a zero-padded map pads it itself (TF-style "same" padding exports a separate
    pad): the conv's kernel then pads in its own schedule instead of testing bounds in its inner loop."""
    node = m.root
    pad = node.inputs[0].producer
    rank = pad.inputs[0].type.rank
    own = node.attrs["pads"] or (0,) * (2 * rank - 4)  # ONNX order: all begins, then all ends
    extra = pad.attrs["pads"][2:rank] + pad.attrs["pads"][rank + 2:]
    grown = tuple(a + b for a, b in zip(own, extra))
    return m.graph.call("conv", pad.inputs[0], *node.inputs[1:], **{**node.attrs, "pads": grown})


#: Producers a reshape is sunk away from: a matmul on a [rows, K] view (torch's linear on a
#: [1, H, W, C] map) then reaches the elementwise ops after the reshape as its epilogue.
_SINK_FROM = ("linear", "matmul")


def _row_reshape(value: Value) -> bool:
    """Whether ``value`` is a reshape, read only once, that regroups the leading dims of a
    matmul's (or its epilogue's) result and keeps the last dim. Reshapes that only add or drop
    unit dims are left alone: ``fuse`` takes an epilogue through those already."""
    node = value.producer
    if node is None or node.op not in _RESHAPE_LIKE or len(value.users) != 1:
        return False
    source = node.inputs[0]
    before, after = source.type.shape, value.type.shape
    if not before or not after or before[-1] != after[-1] or not isinstance(after[-1], int):
        return False
    if [d for d in before if d != 1] == [d for d in after if d != 1]:
        return False
    producer = source.producer
    return producer is not None and (producer.op in _SINK_FROM or producer.opdef.category == "elementwise")


def _along_last(operand: Value, rank: int) -> bool:
    """Whether ``operand`` broadcasts along the last dim only (a per-channel scale, a scalar),
    so it reads the same under any regrouping of the leading dims of a ``rank``-d result."""
    shape = operand.type.shape
    return len(shape) <= rank and all(d == 1 for d in shape[:-1])


@rewrite(Pat("*", where=lambda n: n.opdef.category == "elementwise" and len(n.outputs) == 1
             and sum(_row_reshape(v) for v in n.inputs) == 1))
def sink_reshape(m: Match) -> Value | None:
    """``f(reshape(y), c)`` becomes ``reshape(f(y, c))`` (see ``_row_reshape``); the reshape is a view."""
    node = m.root
    view = next(v for v in node.inputs if _row_reshape(v))
    source = view.producer.inputs[0]
    if not all(v is view or _along_last(v, source.type.rank) for v in node.inputs):
        return None
    shape = reshape_attr(TensorType(node.output.type.dtype, source.type.shape), node.output.type)
    if shape is None:
        return None
    out = m.graph.add_node(node.op, [source if v is view else v for v in node.inputs], node.attrs, loc=node.loc)
    return m.graph.call("reshape", out.outputs[0], shape=shape, loc=view.producer.loc)


SHAPE_RULES: list[RewriteRule] = [drop_noop_shape_op, drop_single_split, merge_reshapes, merge_transposes, sink_reshape,
                               pad_into_conv]


@register_pass("canonicalize")
class Canonicalize(Pass):
    """Exact simplifications: x*1, x+0, x-c as x+(-c), double transposes and reshapes, no-op shape ops,
    zero pads into convs."""

    max_iterations: int = option(32, "sweeps before giving up on reaching a fixed point", minimum=1)

    def apply(self, graph: Graph) -> None:
        apply_rewrites(graph, ALGEBRA_RULES + SHAPE_RULES, max_iterations=self.max_iterations)

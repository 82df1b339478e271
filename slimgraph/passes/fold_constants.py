"""``fold-constants``: evaluate constant subgraphs, fold batch norms, fold shape arithmetic.

- A node whose inputs are all constants is replaced by a constant holding
  its result, computed by the op's own numpy reference (so folding can never
  disagree with the interpreter). A result larger than the node's inputs
  folds only up to ``max-elements`` elements, so that folding does not
  inflate the weights (a large ``expand`` of a scalar stays an expand).
  ``dequantize`` and ``codebook_decode`` of a constant stay too, as in ONNX
  Runtime's QDQ handling: folding them would turn encoded weights back into
  float ones.
- ``batch_norm(conv(x, w, b))`` becomes ``conv(x, w*s, (b-mean)*s+beta)``
  with ``s = gamma/sqrt(var+eps)``, computed in float64; the same for
  ``linear`` with a 2-d output. A batch norm that cannot fold into its
  producer becomes ``x*s + t`` (a multiply and an add with per-channel
  constants), which fusion then folds into the surrounding region.
- Shape arithmetic: shape ops that leave their input as it is vanish and
  chains of reshapes or transposes collapse (the shape rules of
  ``canonicalize``).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 2, 3, 3)))
    >>> w = g.const(np.ones((2, 2, 1, 1), np.float32))
    >>> c = [g.const(np.full(2, v, np.float32)) for v in (1.0, 0.5, 0.1, 4.0)]
    >>> g.set_outputs([g.call("batch_norm", g.call("conv", x, w), *c)])
    >>> folded = FoldConstants()(g)
    >>> [n.op for n in folded.nodes if n.op != "const"]
    ['conv']
    >>> a = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    >>> bool(np.allclose(folded.run(a)[0], g.run(a)[0], rtol=1e-6, atol=1e-6))
    True
"""

from __future__ import annotations

import numpy as np

from slimgraph.ir.graph import Graph, Value
from slimgraph.passes.canonicalize import SHAPE_RULES
from slimgraph.passes.errors import RewriteError
from slimgraph.passes.pattern import Any, Const, Match, Pat, RewriteRule, apply_rewrites, rewrite
from slimgraph.passes.registry import Pass, option, register_pass


def fold_node(m: Match, max_elements: int) -> list[Value] | None:
    """Replace ``m.root`` (all inputs constant) by constants of its result."""
    node = m.root
    arrays = [v.const_value for v in node.inputs]
    produced = sum(v.type.numel() for v in node.outputs)
    if produced > max_elements and produced > sum(a.size for a in arrays):
        return None
    try:
        with np.errstate(all="ignore"):
            result = node.opdef.impl(*arrays, **node.attrs)
    except Exception:  # noqa: BLE001 - the op rejects these constants: the interpreter will say so at run time
        return None
    results = result if isinstance(result, tuple) else (result,)
    values = []
    for out, array in zip(node.outputs, results):
        array = np.asarray(array)
        if array.dtype != out.type.dtype.numpy or array.shape != out.type.shape:
            raise RewriteError(
                f"folding {node.describe()}: the {node.op} reference returned "
                f"{array.dtype}{list(array.shape)}, but the node declares {out.type}"
            )
        values.append(m.graph.const(array, name=out.name, dtype=out.type.dtype))
    return values


#: Ops that decode stored weights; their constant inputs are the point, not waste.
DECODERS = frozenset({"dequantize", "codebook_decode"})


def _all_const_inputs(node) -> bool:
    return bool(node.inputs) and all(v.is_const for v in node.inputs)


def _foldable(node) -> bool:
    return node.op not in DECODERS and _all_const_inputs(node)


_BN_PARAMS = (Const("gamma"), Const("beta"), Const("mean"), Const("var"))


def _bn_scale(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (s, t) with batch_norm(y) == y*s + t, in float64."""
    eps = m.root.attrs["epsilon"]
    gamma, beta, mean, var = (m.array(k).astype(np.float64) for k in ("gamma", "beta", "mean", "var"))
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


@rewrite(Pat("batch_norm", Pat(("conv", "linear"), name="prod", one_use=True), *_BN_PARAMS))
def fold_batch_norm_into_producer(m: Match) -> Value | None:
    prod = m.node("prod")
    w = prod.inputs[1].const_value
    b = prod.inputs[2].const_value if len(prod.inputs) > 2 else None
    if w is None or (len(prod.inputs) > 2 and b is None) or not prod.inputs[1].type.dtype.is_float:
        return None
    s, t = _bn_scale(m)
    attrs = dict(prod.attrs)
    if prod.op == "conv":
        out_axis, bias = 0, np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    else:
        if prod.output.type.rank != 2:
            return None  # batch norm's channel axis 1 is linear's feature axis only for 2-d outputs
        out_axis = 0 if attrs["trans_b"] else 1
        channels = w.shape[out_axis]
        if b is not None and (b.size not in (1, channels) or b.ndim > 2 or (b.ndim == 2 and b.shape[0] != 1)):
            return None  # a bias that varies along the batch cannot take the shift
        bias = attrs["beta"] * np.broadcast_to(np.zeros(1) if b is None else b.astype(np.float64).reshape(-1), channels)
        attrs["beta"] = 1.0
    shape = [1] * w.ndim
    shape[out_axis] = -1
    g = m.graph
    dtype = prod.inputs[1].type.dtype
    new_w = g.const(w.astype(np.float64) * s.reshape(shape), name=prod.inputs[1].name, dtype=dtype)
    # The new bias is mostly the batch norm's shift: it is named after the bias it replaces, or the shift.
    new_b = g.const(bias * s + t, name=(prod.inputs[2] if b is not None else m["beta"]).name, dtype=dtype)
    return g.call(prod.op, prod.inputs[0], new_w, new_b, loc=prod.loc, **attrs)


@rewrite(Pat("batch_norm", Any("x"), *_BN_PARAMS))
def batch_norm_as_scale_shift(m: Match) -> Value | None:
    x = m["x"]
    if x.type.rank < 2 or not x.type.dtype.is_float:
        return None
    s, t = _bn_scale(m)
    shape = (-1,) + (1,) * (x.type.rank - 2)
    g = m.graph
    scale = g.const(s.reshape(shape), dtype=x.type.dtype)
    shift = g.const(t.reshape(shape), dtype=x.type.dtype)
    return g.call("add", g.call("mul", x, scale, loc=m.root.loc), shift, loc=m.root.loc)


@register_pass("fold-constants")
class FoldConstants(Pass):
    """Evaluate constant subgraphs, fold batch_norm into conv/linear, fold shape arithmetic."""

    max_elements: int = option(4096, "a folded result larger than its inputs may have at most this many elements",
                               minimum=0)
    batch_norm: bool = option(True, "fold batch_norm into the preceding conv/linear, else into a scale and shift")
    shapes: bool = option(True, "drop no-op shape ops and collapse reshape and transpose chains")
    dequantize: bool = option(False, "also fold dequantize and codebook_decode of constants (encoded weights become floats)")

    def apply(self, graph: Graph) -> None:
        @rewrite(Pat("*", where=_all_const_inputs if self.dequantize else _foldable))
        def fold_constant_node(m: Match) -> list[Value] | None:
            return fold_node(m, self.max_elements)

        rules: list[RewriteRule] = [fold_constant_node]
        if self.batch_norm:
            rules += [fold_batch_norm_into_producer, batch_norm_as_scale_shift]
        if self.shapes:
            rules += SHAPE_RULES
        apply_rewrites(graph, rules)

"""``lower-quantized``: turn QDQ patterns around conv/linear/matmul into integer ops.

The pattern (as ``quantize`` or ONNX Runtime's QDQ export write it)::

    dequantize(q_x) ─┐
    dequantize(w_q) ─┼─ conv | linear | matmul ─ [relu | clip]* ─ quantize
    dequantize(b_q) ─┘   (bias optional; a float bias is quantized here)

becomes ``qconv``/``qlinear`` (int8 x int8 -> int32 accumulate, int32 bias)
followed by ``requantize`` (fixed-point multiplier ``s_x * s_w / s_y`` per
output channel) whose clamp carries the relu/clip. Without the trailing
``quantize`` the accumulator is dequantized (scale ``s_x * s_w``) and the
float epilogue stays. Requirements: linear per-tensor activations (i8/u8),
constant symmetric weights (i8 or i4; per-tensor or per output channel), or
log2 weights whose exponents span at most 6, which become exact int8 integers
``+-2^k`` (the TVM backend stores those as 4-bit exponents). Anything else is
left in QDQ form, which runs as is.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> from slimgraph.passes.quantize import quantize_graph
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> w = g.const(np.eye(4, dtype=np.float32), name="fc.weight")
    >>> y = g.call("relu", g.call("linear", x, w))
    >>> g.set_outputs([g.call("linear", y, w)])
    >>> data = [np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)]
    >>> lowered = LowerQuantized()(quantize_graph(g, data, progress=False))
    >>> [n.op for n in lowered.nodes if n.op != "const"]
    ['quantize', 'qlinear', 'requantize', 'qlinear', 'dequantize']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.ir.ops.qlinear import ACT_DTYPES, WEIGHT_DTYPES, quantize_multiplier
from slimgraph.ir.ops.quant import quant_range
from slimgraph.ir.types import DType
from slimgraph.passes.dce import DeadCodeElimination
from slimgraph.passes.registry import Pass, register_pass

#: Ops a float epilogue may hold between the compute op and its quantize (folded into the clamp).
CLAMP_OPS = ("relu", "clip")
#: The widest exponent range of a log2 weight lowered to int8 (its integers reach +-2^6).
LOG2_SPAN = 6


@dataclass(frozen=True)
class _Operand:
    codes: Value  # the integer tensor
    scales: np.ndarray  # float64, one per output channel (or one)
    zero_point: int = 0


def _dequantized(value: Value) -> Node | None:
    """The linear dequantize producing ``value``, or None."""
    node = value.producer
    if node is None or node.op != "dequantize" or node.attrs["scheme"] != "linear":
        return None
    return node


def _activation(value: Value) -> _Operand | None:
    node = _dequantized(value)
    if node is None or len(node.attrs["scale"]) != 1 or node.inputs[0].type.dtype not in ACT_DTYPES:
        return None
    return _Operand(node.inputs[0], np.float64(np.float32(node.attrs["scale"])), node.attrs["zero_point"][0])


def _weight_codes(value: Value, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The integer weight behind ``value`` and its scales, when symmetric and per ``axis`` or per tensor.

    A log2 weight is one too: ``sign * s * 2^e`` with ``e`` in ``min_exp..max_exp`` is the
    integer ``sign * 2^(e - min_exp)`` times ``s * 2^min_exp``, exactly, and fits int8 when
    the exponents span at most 6 (``+-64``)."""
    node = value.producer
    if node is None or node.op != "dequantize" or not node.inputs[0].is_const:
        return None
    if node.inputs[0].type.dtype not in WEIGHT_DTYPES or any(node.attrs["zero_point"]):
        return None
    scales = np.float32(node.attrs["scale"]).astype(np.float64)
    if len(scales) > 1 and node.attrs["axis"] % value.type.rank != axis % value.type.rank:
        return None
    codes = node.inputs[0].const_value
    if node.attrs["scheme"] == "linear":
        return codes, scales
    span = node.attrs["max_exp"] - node.attrs["min_exp"]
    if span > LOG2_SPAN:
        return None
    c = codes.astype(np.int64)
    magnitude = np.where(c != 0, np.left_shift(1, np.maximum(np.abs(c) - 1, 0)), 0)
    return (np.sign(c) * magnitude).astype(np.int8), scales * 2.0 ** node.attrs["min_exp"]


@register_pass("lower-quantized")
class LowerQuantized(Pass):
    """Lower dequantize -> conv/linear/matmul -> quantize patterns to integer ops (qconv, qlinear, requantize)."""

    def apply(self, graph: Graph) -> Graph:
        renames = []
        for node in list(graph.nodes):
            if node.op in ("conv", "linear", "matmul"):
                renames.append(_lower(graph, node))
        DeadCodeElimination().apply(graph)
        # the integer result takes the name of the value it replaces, so the two forms compare by name
        for value, name in filter(None, renames):
            if not graph.has_value(name):
                graph.rename(value, name)
        return graph


def _lower(graph: Graph, node: Node) -> tuple[Value, str] | None:
    """Lower one compute node; returns (the new value, the name of the value it replaced), or None."""
    x = _activation(node.inputs[0])
    weight = _integer_weight(node)
    if x is None or weight is None:
        return None
    w_codes, w_scales = weight
    acc_scales = x.scales * w_scales  # the accumulator's real value per unit
    bias = _integer_bias(node, acc_scales, w_codes.shape[0])
    if bias is False:
        return None
    channel_axis = 1 if node.op == "conv" else node.output.type.rank - 1
    with graph.inserting_before(node):
        w_const = graph.const(w_codes, name=f"{node.output.name}.wq")
        operands = [x.codes, w_const] + ([graph.const(bias, name=f"{node.output.name}.bq")] if bias is not None else [])
        if node.op == "conv":
            geometry = {k: node.attrs[k] for k in ("strides", "pads", "dilations", "groups")}
            acc = graph.call("qconv", *operands, x_zero_point=x.zero_point, loc=node.loc, **geometry)
        else:
            acc = graph.call("qlinear", *operands, x_zero_point=x.zero_point, loc=node.loc)
        quantize, low, high = _epilogue(graph, node)
        if quantize is not None:
            out = _requantize(graph, acc, acc_scales, quantize, low, high, channel_axis)
            graph.replace_all_uses(quantize.output, out)
            return out, quantize.output.name
        else:
            scales = np.float32(acc_scales)
            out = graph.call(
                "dequantize",
                acc,
                scale=tuple(map(float, scales)),
                zero_point=(0,) * len(scales),
                axis=channel_axis,
                to=node.output.type.dtype,
            )
            graph.replace_all_uses(node.output, out)
            return out, node.output.name


def _integer_weight(node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """The weight as [C_out, ...] integer codes (qconv/qlinear layout) with its scales, or None."""
    w = node.inputs[1]
    if node.op == "conv":
        return _weight_codes(w, 0)
    if node.op == "linear":
        if node.attrs["trans_a"] or node.attrs["alpha"] != 1.0 or node.attrs["beta"] != 1.0:
            return None
        found = _weight_codes(w, 0 if node.attrs["trans_b"] else 1)
        if found is None:
            return None
        codes, scales = found
        return (codes if node.attrs["trans_b"] else np.ascontiguousarray(codes.T)), scales
    if w.type.rank != 2 or node.inputs[0].type.rank < 2:  # matmul: qlinear covers [..., K] @ [K, N]
        return None
    found = _weight_codes(w, 1)
    return None if found is None else (np.ascontiguousarray(found[0].T), found[1])


def _integer_bias(node: Node, acc_scales: np.ndarray, channels: int):
    """The bias as int32 in accumulator units; None without a bias, False when it cannot be lowered."""
    if node.op == "matmul" or len(node.inputs) < 3:
        return None
    b = node.inputs[2]
    if b.type.shape != (channels,):
        return False
    dq = _dequantized(b)
    if dq is not None and dq.inputs[0].is_const and dq.inputs[0].type.dtype is DType.int32 and not any(dq.attrs["zero_point"]):
        b_scales = np.float32(dq.attrs["scale"]).astype(np.float64)
        if np.allclose(b_scales, np.float32(acc_scales), rtol=1e-6, atol=0):
            return dq.inputs[0].const_value  # already in accumulator units (ONNX Runtime writes it so)
        real = dq.inputs[0].const_value.astype(np.float64) * b_scales
    elif b.is_const:
        real = b.const_value.astype(np.float64)
    else:
        return False
    return np.clip(np.rint(real / acc_scales), -(2**31), 2**31 - 1).astype(np.int32)


def _epilogue(graph: Graph, node: Node) -> tuple[Node | None, float, float]:
    """The quantize ending ``node``'s relu/clip chain (None if there is none) and the chain's clamp."""
    low, high = -np.inf, np.inf
    value = node.output
    outputs = {id(v) for v in graph.outputs}
    while len(value.users) == 1 and id(value) not in outputs:
        user = value.users[0]
        if user.op in CLAMP_OPS:
            low = max(low, 0.0 if user.op == "relu" else user.attrs["min"])
            high = high if user.op == "relu" else min(high, user.attrs["max"])
            value = user.output
            continue
        attrs = user.attrs
        if (
            user.op == "quantize"
            and attrs["scheme"] == "linear"
            and len(attrs["scale"]) == 1
            and attrs["dtype"] in ACT_DTYPES
        ):
            return user, low, high
        break
    return None, low, high


def _requantize(graph: Graph, acc: Value, acc_scales: np.ndarray, quantize: Node, low: float, high: float, axis: int):
    scale = np.float64(np.float32(quantize.attrs["scale"][0]))
    zero, dtype = quantize.attrs["zero_point"][0], quantize.attrs["dtype"]
    pairs = [quantize_multiplier(float(s / scale)) for s in np.atleast_1d(acc_scales)]
    lo, hi = quant_range(dtype)

    def to_codes(bound: float, default: int) -> int:
        # quantize is monotone and saturating: Q(clip(v, a, b)) == clip(Q(v), Q(a), Q(b))
        if not np.isfinite(bound):
            return default
        return int(np.clip(np.rint(np.float32(bound) / np.float32(scale)) + zero, lo, hi))

    clip = (to_codes(low, lo), to_codes(high, hi))
    return graph.call(
        "requantize",
        acc,
        multiplier=tuple(m for m, _ in pairs),
        shift=tuple(s for _, s in pairs),
        axis=axis,
        zero_point=zero,
        dtype=dtype,
        clip=clip if clip != (lo, hi) else (),
    )

"""Elementwise ops: arithmetic, math functions, activations, comparisons, selection.

Most ops are rows of a table declared by one of three helpers: ``_unary`` (one
input, optional float attributes), ``_binary`` (two inputs broadcast
numpy-style, equal dtypes) and ``_compare`` (like ``_binary`` with a bool
output). Half-precision inputs are computed in float32 and rounded once at the
end, as PyTorch does, and every result is cast back to the declared dtype so
numpy's promotion rules never leak into the IR. ``int4`` is a storage type:
only ``where`` (and the quantization ops) accept it.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", ("N", 3)))
    >>> g.set_outputs([g.call("clip", g.call("neg", x), min=0.0)])
    >>> g.run(np.array([[-1.5, 0.0, 2.0]], np.float32))[0]
    array([[1.5, 0. , 0. ]], dtype=float32)
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.registry import Attr, In, define_op, elementwise_flops, infer_broadcast, require_float
from slimgraph.ir.types import DType, TensorType, broadcast_shapes

# Which dtypes an op accepts; "numeric" is floats and ints, "any" adds bool.
Kinds = Literal["float", "numeric", "any", "bool"]
_HALF = (DType.float16.numpy, DType.bfloat16.numpy)


def _require(t: TensorType, kinds: Kinds, what: str) -> None:
    if kinds == "bool":
        if t.dtype is not DType.bool:
            raise GraphError(f"{what} must be a bool tensor, got {t}")
        return
    if t.dtype is DType.int4:
        raise GraphError(f"{what} is {t}: int4 is a storage type; dequantize or cast it before computing with it")
    if kinds == "float":
        require_float(t, what)
    elif kinds == "numeric" and t.dtype is DType.bool:
        raise GraphError(f"{what} must be a numeric tensor, got {t}")


def _upcast(x: np.ndarray) -> np.ndarray:
    # Half types are computed in float32: one rounding at the end, and no
    # surprises from how ml_dtypes' bfloat16 promotes against Python floats.
    return x.astype(np.float32) if x.dtype in _HALF else x


def _is_int(x: np.ndarray) -> bool:
    return x.dtype.kind in "iu"


def _finish(result, dtype: np.dtype) -> np.ndarray:
    return np.asarray(result).astype(dtype, copy=False)


# ---------------------------------------------------------------------------
# Declaration helpers


def _unary(name: str, fn: Callable[..., np.ndarray], doc: str, kinds: Kinds = "float", attrs: Sequence[Attr] = (),
           check: Callable[[dict], None] | None = None) -> None:
    def infer(types, attr_values):
        _require(types[0], kinds, "x")
        if check is not None:
            check(attr_values)
        return [types[0]]

    define_op(
        name,
        inputs=[In("x")],
        attrs=attrs,
        infer=infer,
        impl=lambda x, **a: _finish(fn(_upcast(x), **a), x.dtype),
        flops=elementwise_flops,
        category="elementwise",
        doc=doc,
    )


def _infer_binary(kinds: Kinds) -> Callable:
    def infer(types, attrs):
        for i, t in enumerate(types):
            _require(t, kinds, f"input {i}")
        return infer_broadcast(types, attrs)

    return infer


def _binary(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], doc: str, commutative: bool = False) -> None:
    define_op(
        name,
        inputs=[In("a"), In("b")],
        infer=_infer_binary("numeric"),
        impl=lambda a, b: _finish(fn(_upcast(a), _upcast(b)), a.dtype),
        flops=elementwise_flops,
        category="elementwise",
        doc=doc,
        commutative=commutative,
    )


def _compare(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], doc: str, kinds: Kinds = "numeric",
             commutative: bool = False) -> None:
    base = _infer_binary(kinds)
    define_op(
        name,
        inputs=[In("a"), In("b")],
        infer=lambda types, attrs: [t.with_dtype(DType.bool) for t in base(types, attrs)],
        impl=lambda a, b: _finish(fn(a, b), np.bool_),
        flops=elementwise_flops,
        category="elementwise",
        doc=doc,
        commutative=commutative,
    )


# ---------------------------------------------------------------------------
# Numeric kernels that are more than one numpy call


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not _is_int(a):
        return a / b
    q = np.floor_divide(a, b)
    # Floor and truncation differ exactly when the division is inexact and the signs differ.
    return q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0)))


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not _is_int(a):
        return np.power(a, b)
    # numpy refuses negative integer exponents; truncating a**b toward zero (as
    # PyTorch does) leaves 0 unless |a| == 1.
    negative = b < 0
    result = np.power(a, np.where(negative, 0, b))
    unit = np.where(b % 2 == 0, 1, a)
    return np.where(negative, np.where((a == 1) | (a == -1), unit, 0), result)


_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_ERF(x), dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number never overflows; pick the form that uses it.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _clamp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if _is_int(x):
        lo, hi = _int_bound(lo, x.dtype, math.ceil), _int_bound(hi, x.dtype, math.floor)
    # In this order NaN propagates and lo > hi gives hi, as in ONNX Clip and torch.clamp.
    return np.minimum(np.maximum(x, lo), hi)


def _int_bound(bound: float, dtype: np.dtype, to_int: Callable[[float], int]) -> int:
    info = np.iinfo(dtype)
    if math.isinf(bound):
        return info.max if bound > 0 else info.min
    return min(max(to_int(bound), info.min), info.max)


def _check_clip(attrs: dict) -> None:
    for key in ("min", "max"):
        if math.isnan(attrs[key]):
            raise GraphError(f"clip bound {key} is NaN")


def _minmax(fn: Callable) -> Callable:
    def impl(*xs: np.ndarray) -> np.ndarray:
        out = _upcast(xs[0])
        for x in xs[1:]:
            out = fn(out, _upcast(x))
        return _finish(out, xs[0].dtype)

    return impl


# ---------------------------------------------------------------------------
# The tables

for _name, _fn, _commutative, _doc in [
    ("add", np.add, True, "a + b, broadcast."),
    ("sub", np.subtract, False, "a - b, broadcast."),
    ("mul", np.multiply, True, "a * b, broadcast."),
    ("div", _div, False, "a / b, broadcast; integer division truncates toward zero (ONNX)."),
    ("pow", _pow, False, "a ** b, broadcast; negative integer exponents truncate toward zero."),
]:
    _binary(_name, _fn, _doc, _commutative)

for _name, _fn in [("min", np.minimum), ("max", np.maximum)]:
    define_op(
        _name,
        inputs=[In("a"), In("b", variadic=True, min=0)],
        infer=_infer_binary("numeric"),
        impl=_minmax(_fn),
        flops=lambda ins, outs, attrs: max(len(ins) - 1, 1) * elementwise_flops(ins, outs, attrs),
        category="elementwise",
        doc=f"Elementwise {_name} of all inputs, broadcast; NaN propagates.",
        commutative=True,
    )

for _name, _fn, _kinds, _doc in [
    ("neg", np.negative, "numeric", "-x."),
    ("abs", np.abs, "numeric", "|x|."),
    ("sign", np.sign, "numeric", "-1, 0 or 1 by the sign of x; NaN stays NaN (ONNX; torch.sign gives 0)."),
    ("relu", lambda x: np.maximum(x, 0), "numeric", "max(x, 0); NaN propagates."),
    ("sqrt", np.sqrt, "float", "Square root; NaN for negative x."),
    ("exp", np.exp, "float", "e ** x."),
    ("log", np.log, "float", "Natural logarithm; -inf at 0, NaN for negative x."),
    ("erf", _erf, "float", "The error function."),
    ("reciprocal", lambda x: 1 / x, "float", "1 / x."),
    ("floor", np.floor, "float", "Largest integer <= x."),
    ("ceil", np.ceil, "float", "Smallest integer >= x."),
    ("round", np.rint, "float", "Nearest integer, halves to even."),
    ("sin", np.sin, "float", "sin(x)."),
    ("cos", np.cos, "float", "cos(x)."),
    ("sigmoid", _sigmoid, "float", "1 / (1 + exp(-x))."),
    ("tanh", np.tanh, "float", "tanh(x)."),
    ("silu", lambda x: x * _sigmoid(x), "float", "x * sigmoid(x) (swish)."),
    ("softplus", _softplus, "float", "log(1 + exp(x)), without overflow."),
    ("mish", lambda x: x * np.tanh(_softplus(x)), "float", "x * tanh(softplus(x))."),
    ("hardswish", lambda x: x * _clamp(x + 3, 0.0, 6.0) / 6, "float", "x * relu6(x + 3) / 6."),
]:
    _unary(_name, _fn, _doc, _kinds)

_unary(
    "leaky_relu",
    lambda x, alpha: np.where(x > 0, x, alpha * x),
    "x if x > 0 else alpha * x.",
    attrs=[Attr("alpha", "float", 0.01, doc="slope for negative x")],
)
_unary(
    "elu",
    lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(x)),
    "x if x > 0 else alpha * (exp(x) - 1).",
    attrs=[Attr("alpha", "float", 1.0)],
)
_unary(
    "selu",
    lambda x, alpha, gamma: gamma * np.where(x > 0, x, alpha * np.expm1(x)),
    "gamma * (x if x > 0 else alpha * (exp(x) - 1)).",
    attrs=[Attr("alpha", "float", 1.6732632423543772), Attr("gamma", "float", 1.0507009873554805)],
)
_unary(
    "gelu",
    _gelu,
    "x * Phi(x) (exact, with erf) or its tanh approximation.",
    attrs=[Attr("approximate", "str", "none", choices=("none", "tanh"))],
)
_unary(
    "hardsigmoid",
    lambda x, alpha, beta: _clamp(alpha * x + beta, 0.0, 1.0),
    "max(0, min(1, alpha * x + beta)); the defaults are torch's, ONNX's alpha is 0.2.",
    attrs=[Attr("alpha", "float", 1 / 6), Attr("beta", "float", 0.5)],
)
_unary(
    "clip",
    lambda x, min, max: _clamp(x, min, max),
    "Clamps x to [min, max]; relu6 is clip{min=0,max=6}. NaN propagates; min > max gives max.",
    kinds="numeric",
    attrs=[Attr("min", "float", -math.inf), Attr("max", "float", math.inf)],
    check=_check_clip,
)

for _name, _fn, _symbol, _kinds, _commutative in [
    ("equal", np.equal, "==", "any", True),
    ("less", np.less, "<", "numeric", False),
    ("less_equal", np.less_equal, "<=", "numeric", False),
    ("greater", np.greater, ">", "numeric", False),
    ("greater_equal", np.greater_equal, ">=", "numeric", False),
]:
    _compare(_name, _fn, f"a {_symbol} b, broadcast, as bool; false wherever a NaN takes part.", _kinds, _commutative)

_unary("logical_not", np.logical_not, "Boolean not.", kinds="bool")

for _name, _fn, _symbol in [
    ("logical_and", np.logical_and, "and"),
    ("logical_or", np.logical_or, "or"),
    ("logical_xor", np.logical_xor, "xor"),
]:
    _compare(_name, _fn, f"a {_symbol} b on bool tensors, broadcast.", "bool", commutative=True)


def _infer_prelu(types, attrs):
    x, slope = types
    _require(x, "numeric", "x")
    if slope.dtype != x.dtype:
        raise GraphError(f"slope is {slope} but x is {x}: they must share a dtype")
    if broadcast_shapes(x.shape, slope.shape) != x.shape:
        raise GraphError(f"slope {slope} does not broadcast to x {x} (per-channel slopes have shape [C,1,1])")
    return [x]


define_op(
    "prelu",
    inputs=[In("x"), In("slope")],
    infer=_infer_prelu,
    impl=lambda x, slope: _finish(np.where(x > 0, x, _upcast(slope) * _upcast(x)), x.dtype),
    flops=elementwise_flops,
    category="elementwise",
    doc="x if x > 0 else slope * x; slope broadcasts against x.",
)


def _infer_where(types, attrs):
    cond, a, b = types
    _require(cond, "bool", "cond")
    if a.dtype != b.dtype:
        raise GraphError(f"a is {a} but b is {b}: they must share a dtype")
    return [TensorType(a.dtype, broadcast_shapes(cond.shape, a.shape, b.shape))]


define_op(
    "where",
    inputs=[In("cond"), In("a"), In("b")],
    infer=_infer_where,
    impl=lambda cond, a, b: _finish(np.where(cond, a, b), a.dtype),
    flops=elementwise_flops,
    category="elementwise",
    doc="a where cond is true, else b; all three broadcast.",
)

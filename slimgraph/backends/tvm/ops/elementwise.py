"""TE lowerings of the elementwise ops: arithmetic, math, activations, comparisons, casts.

Each op is one scalar formula applied through :func:`_map`, which broadcasts
the inputs, computes half types in float32 and casts the result to the
declared dtype. Formulas follow the reference implementations (NaN flows
through relu and clip, round is half-to-even, integer division truncates).

Example::

    >>> sorted(UNARY)[:3]
    ['abs', 'ceil', 'clip']
"""

from __future__ import annotations

import math

from tvm import tirx

from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops.common import (
    const, down, dtype_of, is_float, operand, spatial_compute, up, vector_erf, vector_exp, vector_tanh,
)


def _map(call, fn, dtype: str | None = None):
    """Apply ``fn(*scalars, **attrs)`` elementwise over the broadcast inputs."""
    shape = call.shape()
    reads = [operand(call, i, shape) for i in range(len(call.args))]
    out_dtype = dtype or call.dtype()

    def body(*idx):
        return down(fn(*(up(r(*idx)) for r in reads), **call.attrs), out_dtype)

    return spatial_compute(shape, body, name=call.op, rule="elementwise")


def _c(x, value):
    """A constant of ``x``'s dtype."""
    return const(value, dtype_of(x))


def _sigmoid(x):
    # 1 / (1 + exp(-x)) through the vectorizable exp: tirx.sigmoid is one libm expf call per lane
    # (SiLU and squeeze-excite gates in EfficientNet). Denormal exps are flushed: 1 + them is 1.
    if dtype_of(x) != "float32":
        return tirx.sigmoid(x)
    return _c(x, 1) / (_c(x, 1) + vector_exp(-x, flush=True))


def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)) never overflows
    return tirx.max(x, _c(x, 0)) + tirx.log1p(tirx.exp(-tirx.abs(x)))


def _clamp(x, lo, hi):
    # selects rather than min/max so that NaN passes through, and lo > hi gives hi (as numpy does)
    t = tirx.Select(x < lo, lo, x)
    return tirx.Select(t > hi, hi, t)


def _clip(x, **bounds):
    lo, hi, dtype = bounds["min"], bounds["max"], dtype_of(x)
    if is_float(dtype):
        return _clamp(x, _c(x, lo), _c(x, hi))
    # integer bounds: round inwards and stay inside the dtype, as the reference does
    smallest, largest = tirx.min_value(dtype).value, tirx.max_value(dtype).value
    lo = smallest if math.isinf(lo) else min(max(math.ceil(lo), smallest), largest)
    hi = largest if math.isinf(hi) else min(max(math.floor(hi), smallest), largest)
    return _clamp(x, const(lo, dtype), const(hi, dtype))


def _sign(x):
    one, zero = _c(x, 1), _c(x, 0)
    return tirx.Select(x > zero, one, tirx.Select(x < zero, -one, x if is_float(dtype_of(x)) else zero))


def _gelu(x, approximate):
    if approximate == "tanh":
        inner = _c(x, math.sqrt(2 / math.pi)) * (x + _c(x, 0.044715) * x * x * x)
        return _c(x, 0.5) * x * (_c(x, 1) + vector_tanh(inner))
    return _c(x, 0.5) * x * (_c(x, 1) + vector_erf(x * _c(x, 1 / math.sqrt(2))))


def _elu(x, alpha):
    return tirx.Select(x > _c(x, 0), x, _c(x, alpha) * (vector_exp(x) - _c(x, 1)))


UNARY = {
    "neg": lambda x: -x,
    "abs": lambda x: tirx.abs(x),
    "sign": _sign,
    "relu": lambda x: tirx.Select(x < _c(x, 0), _c(x, 0), x),
    "sqrt": lambda x: tirx.sqrt(x),
    "exp": vector_exp,
    "log": lambda x: tirx.log(x),
    "erf": vector_erf,
    "reciprocal": lambda x: _c(x, 1) / x,
    "floor": lambda x: tirx.floor(x),
    "ceil": lambda x: tirx.ceil(x),
    "round": lambda x: tirx.nearbyint(x),
    "sin": lambda x: tirx.sin(x),
    "cos": lambda x: tirx.cos(x),
    "sigmoid": _sigmoid,
    "tanh": vector_tanh,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": _softplus,
    "mish": lambda x: x * tirx.tanh(_softplus(x)),
    "hardswish": lambda x: x * _clamp(x + _c(x, 3), _c(x, 0), _c(x, 6)) / _c(x, 6),
    "leaky_relu": lambda x, alpha: tirx.Select(x > _c(x, 0), x, _c(x, alpha) * x),
    "elu": _elu,
    "selu": lambda x, alpha, gamma: _c(x, gamma) * _elu(x, alpha),
    "gelu": _gelu,
    "hardsigmoid": lambda x, alpha, beta: _clamp(_c(x, alpha) * x + _c(x, beta), _c(x, 0), _c(x, 1)),
    "clip": _clip,
    "logical_not": lambda x: tirx.Not(x),
}


def _div(a, b):
    return a / b if is_float(dtype_of(a)) else tirx.truncdiv(a, b)


def _pow(a, b):
    if is_float(dtype_of(a)):
        if isinstance(b, tirx.FloatImm) and b.value in (2.0, 3.0, 4.0):
            # a constant small power as products: GPT-2's GELU cubes x, and powf does not vectorize
            product = a
            for _ in range(int(b.value) - 1):
                product = product * a
            return product
        return tirx.power(a, b)
    # Integer powers through float64 are exact up to 2**53; negative exponents truncate toward zero.
    dtype = dtype_of(a)
    exact = tirx.power(a.astype("float64"), b.astype("float64")).astype(dtype)
    one = const(1, dtype)
    unit = tirx.Select(tirx.EQ(tirx.truncmod(b, const(2, dtype)), const(0, dtype)), one, a)
    negative = tirx.Select(tirx.Or(tirx.EQ(a, one), tirx.EQ(a, -one)), unit, const(0, dtype))
    return tirx.Select(b < const(0, dtype), negative, exact)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": _div,
    "pow": _pow,
    "prelu": lambda x, slope: tirx.Select(x > _c(x, 0), x, slope * x),
}

COMPARE = {
    "equal": tirx.EQ,
    "less": tirx.LT,
    "less_equal": tirx.LE,
    "greater": tirx.GT,
    "greater_equal": tirx.GE,
    "logical_and": tirx.And,
    "logical_or": tirx.Or,
    "logical_xor": lambda a, b: tirx.Or(tirx.And(a, tirx.Not(b)), tirx.And(tirx.Not(a), b)),
}


@register(*UNARY, *BINARY)
def lower_elementwise(call):
    """Unary and binary elementwise ops, by formula."""
    fn = UNARY.get(call.op) or BINARY[call.op]
    return _map(call, fn)


@register(*COMPARE)
def lower_compare(call):
    """Comparisons and bool logic: a bool tensor."""
    return _map(call, COMPARE[call.op], dtype="bool")


@register("min", "max")
def lower_minmax(call):
    """Variadic elementwise min/max."""
    pick = tirx.min if call.op == "min" else tirx.max

    def fn(first, *rest):
        out = first
        for x in rest:
            out = pick(out, x)
        return out

    return _map(call, fn)


@register("where")
def lower_where(call):
    """Select a where cond holds, else b."""
    return _map(call, lambda c, a, b: tirx.Select(c, a, b))


@register("cast")
def lower_cast(call):
    """Dtype conversion: floats to ints truncate; anything to bool is != 0."""
    target = call.dtype()

    def fn(x, to):
        if target == "bool":
            return x != const(0, dtype_of(x))
        return x.astype(target)

    shape = call.shape()
    read = operand(call, 0, shape)
    return spatial_compute(shape, lambda *idx: fn(read(*idx), None), name="cast", rule="elementwise")

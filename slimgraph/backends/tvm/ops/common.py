"""Helpers shared by the TE lowerings: broadcasting, half-precision compute, scalar constants,
indices read from data (checked, see :func:`positions`).

Half-precision values are computed in float32 and rounded once per op, as the
reference interpreter does, so fused and unfused kernels agree with it; float64
values are computed in float64 (:func:`compute_dtype`).

Example::

    >>> from tvm import te
    >>> x = te.placeholder((2, 1), "float32", name="x")
    >>> f = broadcast(x, (2, 3))
    >>> f(1, 2).indices
    (1, 0)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from tvm import te, tirx

from slimgraph.errors import IndexOutOfRangeError
from slimgraph.ir.ops.shape import wrap_indices

Index = Callable[..., object]

COMPUTE_DTYPE = {"float16": "float32", "bfloat16": "float32"}


def dtype_of(expr) -> str:
    """The dtype of a TIR expression, a TE element read or a TE tensor, as a string."""
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if ty is not None and hasattr(ty, "dtype") else str(expr.dtype)


def compute_dtype(dtype: str) -> str:
    """The float dtype sums, means and scalar factors of a ``dtype`` op are computed in:
    float64 for float64, float32 for every other float and for integers averaged as floats."""
    return "float64" if dtype == "float64" else "float32"


def up(expr):
    """``expr`` in the dtype it is computed in (float32 for half types)."""
    wide = COMPUTE_DTYPE.get(dtype_of(expr))
    return expr.astype(wide) if wide else expr


def down(expr, dtype: str):
    """``expr`` cast to ``dtype`` when it differs."""
    return expr if dtype_of(expr) == dtype else expr.astype(dtype)


def vector_exp(x, flush: bool = False):
    """exp(x); for float32 a polynomial that vectorizes (Cephes' expf, within 2 ulp), where
    ``tirx.exp`` becomes one libm call per lane on CPUs. Overflow gives inf, -inf gives 0,
    and results below the normal range are denormals as libm's are, unless ``flush``: then
    they are 0 and no denormal is ever computed (each costs a microcode assist of ~100 cycles;
    softmax and attention, whose terms sum with exp(0) = 1, flush: ViT's padded keys made its
    attention 6x slower)."""
    if dtype_of(x) != "float32":
        return tirx.exp(x)

    def c(v):
        return tirx.const(v, "float32")

    # past these bounds exp is inf or 0 in float32 (or denormal): clamping keeps 2^n finite
    low = -87.3 if flush else -104.0
    clamped = tirx.max(tirx.min(x, c(89.0)), c(low))
    n = tirx.floor(clamped * c(1.44269504088896341) + c(0.5))
    r = clamped - n * c(0.693359375) + n * c(2.12194440e-4)
    p = c(1.9875691500e-4)
    for coef in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + c(coef)
    p = p * r * r + r + c(1.0)
    whole = n.astype("int32")

    def power(e):
        return tirx.reinterpret("float32", (e + tirx.const(127, "int32")) << tirx.const(23, "int32"))

    if flush:
        result = tirx.Select(x < c(low), c(0.0), p * power(whole))
    else:
        # 2^n as two normal halves, so the product rounds to a denormal or overflows as exp does
        half = whole >> tirx.const(1, "int32")
        result = p * power(half) * power(whole - half)
    return tirx.Select(tirx.isnan(x), x, result)  # NaN stays NaN (min and max would drop it)


def vector_erf(x):
    """erf(x); for float32 the rational approximation of Eigen and TVM's fast_erf (clamped to
    [-4, 4], where erf is 1 to float32 precision), which vectorizes where ``tirx.erf`` is a libm call."""
    if dtype_of(x) != "float32":
        return tirx.erf(x)
    return _odd_rational(x, 4.0,
                         (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02),
                         (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
                          -1.42647390514189e-02))


def vector_tanh(x):
    """tanh(x); for float32 Eigen's rational approximation (clamped to [-9, 9], where tanh is
    +-1 to float32 precision), which vectorizes where TVM's tanh makes libm ``expf`` calls."""
    if dtype_of(x) != "float32":
        return tirx.tanh(x)
    return _odd_rational(x, 9.0,
                         (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03),
                         (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


def _odd_rational(x, bound: float, p_coefs: tuple[float, ...], q_coefs: tuple[float, ...]):
    """t * P(t^2) / Q(t^2) for t = x clamped to [-bound, bound], in float32 (coefficients from the
    highest power down); NaN stays NaN (min and max would drop it)."""

    def c(v):
        return tirx.const(v, "float32")

    t = tirx.max(tirx.min(x, c(bound)), c(-bound))
    x2 = t * t
    p, q = c(p_coefs[0]), c(q_coefs[0])
    for coef in p_coefs[1:]:
        p = p * x2 + c(coef)
    for coef in q_coefs[1:]:
        q = q * x2 + c(coef)
    return tirx.Select(tirx.isnan(x), x, t * p / q)


def const(value, dtype: str):
    """A scalar constant of ``dtype`` (bools and ints exactly, floats rounded)."""
    if dtype == "bool":
        return tirx.const(bool(value), "bool")
    if dtype.startswith(("int", "uint")):
        return tirx.const(int(value), dtype)
    return tirx.const(float(value), dtype)


def dims(tensor) -> list:
    """A TE tensor's dims: ints, and ``tirx`` expressions for dynamic ones (batch, sequence)."""
    from tvm import tirx

    return [int(d) if isinstance(d, tirx.IntImm) else d for d in tensor.shape]


def broadcast(tensor, out_shape: Sequence[int]) -> Index:
    """An index function reading ``tensor`` broadcast numpy-style to ``out_shape``."""
    shape = dims(tensor)
    offset = len(out_shape) - len(shape)

    def read(*idx):
        return tensor[tuple(0 if d == 1 else idx[offset + i] for i, d in enumerate(shape))]

    return read


def operand(call, i: int, out_shape: Sequence[int]) -> Index:
    """Input ``i`` of ``call`` broadcast to ``out_shape``; a one-element constant is inlined."""
    array = call.consts[i]
    if array is not None and array.size == 1:
        value = const(np.asarray(array).reshape(()).item(), dtype_of(call.args[i]))
        return lambda *idx: value
    return broadcast(call.args[i], out_shape)


def lowest(dtype: str):
    """The smallest value of ``dtype`` (-inf for floats): the identity of max."""
    if dtype.startswith(("float", "bfloat")):
        return tirx.const(-np.inf, dtype)
    return tirx.min_value(dtype)


def highest(dtype: str):
    """The largest value of ``dtype`` (+inf for floats): the identity of min."""
    if dtype.startswith(("float", "bfloat")):
        return tirx.const(np.inf, dtype)
    return tirx.max_value(dtype)


def is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def spatial_compute(shape, fn, name: str, rule: str | None = None, **attrs):
    """``te.compute`` with the schedule hints the CPU and GPU rules read."""
    block_attrs = {f"sg.{k}": v for k, v in attrs.items()}
    if rule:
        block_attrs["sg.rule"] = rule
    return te.compute(tuple(shape), fn, name=name, attrs=block_attrs or None)


def positions(call, i: int, size: "int | Sequence[int]", what: str) -> Index:
    """Input ``i`` of ``call``, indices into an axis of ``size``, as an index function giving
    positions inside the axis: negatives count from the end, as in ONNX and torch. A list of
    sizes is for coordinate rows (ScatterND): an entry's size is the one its last index picks.

    An index outside ``[-size, size)`` makes the call fail (:meth:`OpCall.check`), and until
    then reads as a position clamped into the axis, so no kernel ever touches memory past a
    tensor. Constant indices are checked now, failing the build instead.
    """
    indices = call.args[i]
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]  # a dynamic size is an expression
    if 0 in sizes and 0 not in dims(indices):
        # an empty axis has no position to clamp to, and any index into it is out of range
        raise IndexOutOfRangeError(f"{call.where}: {what}: indices into an empty axis can never be in range")
    if call.consts[i] is not None and all(isinstance(s, int) for s in sizes):
        array = call.consts[i]
        for j, s in enumerate(sizes):
            wrap_indices(array if isinstance(size, int) else array[..., j], s, f"{call.where}: {what}")
    elif call.consts[i] is not None and np.all((call.consts[i] >= -1) & (call.consts[i] <= 0)):
        pass  # the first or last entry: inside any axis, since a dynamic dim is at least 1
    else:
        rule = (f"{what} of size {size} takes indices in [-{size}, {size})" if not isinstance(size, (list, tuple))
                else f"{what} into axes of sizes {sizes} take indices in [-size, size) of their axis")
        call.check(_all_inside(indices, sizes, call.kernel.name), rule)
    dtype = dtype_of(indices)
    # a position inside a dynamic axis fits the axis's own (int32) dtype; left int64 it meets
    # that axis's size in the row-major arithmetic of inlined views, which TVM does not widen
    narrow = next((str(s.ty.dtype) for s in sizes if not isinstance(s, int)), None)

    def read(*idx):
        span = _pick(sizes, idx[-1] if len(sizes) > 1 else 0, dtype)
        raw = indices[idx]
        low = const(0, dtype)
        pos = tirx.max(tirx.min(tirx.Select(raw < low, raw + span, raw), span - const(1, dtype)), low)
        return pos if narrow is None or narrow == dtype else pos.astype(narrow)

    return read


def _pick(sizes: Sequence, j, dtype: str):
    """``sizes[j]`` as an expression of ``dtype`` (``j`` a loop variable or an int)."""
    if isinstance(j, int):
        return _size(sizes[j], dtype)
    out = _size(sizes[-1], dtype)
    for n in reversed(range(len(sizes) - 1)):
        out = tirx.Select(j == n, _size(sizes[n], dtype), out)
    return out


def _size(size, dtype: str):
    """An axis size (an int, or a dynamic dim's expression) as an expression of ``dtype``."""
    return const(size, dtype) if isinstance(size, int) else size.astype(dtype)


def _all_inside(indices, sizes: Sequence[int], name: str):
    """A 0-d bool tensor: whether every entry of ``indices`` lies inside ``[-size, size)``."""
    dtype = dtype_of(indices)
    shape = dims(indices)
    axes = [te.reduce_axis((0, d), f"k{n}") for n, d in enumerate(shape)]

    def outside(*idx):
        span = _pick(sizes, idx[-1] if len(sizes) > 1 else 0, dtype)
        raw = indices[idx]
        return tirx.Select(tirx.Or(raw < -span, raw >= span), const(1, "int32"), const(0, "int32"))

    if not axes:
        return te.compute((), lambda: outside() == 0, name=f"{name}_check")
    if any(isinstance(d, int) and d == 0 for d in shape):
        return te.compute((), lambda: tirx.const(True, "bool"), name=f"{name}_check")
    count = te.compute((), lambda: te.sum(outside(*axes), axis=axes), name=f"{name}_count")
    # A reduction's init sits inside its loops, so over a dynamic axis that comes out empty the count
    # is never written: an empty index tensor must be judged by its size, not by the count.
    empty = tirx.const(False, "bool")
    for d in shape:
        if not isinstance(d, int):
            empty = tirx.Or(empty, d == 0)
    # the bool, not the count, leaves the kernel: asserting on it needs no comparison kernel after
    return te.compute((), lambda: tirx.Or(empty, count[()] == 0), name=f"{name}_check")

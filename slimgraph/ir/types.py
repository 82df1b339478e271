"""Tensor types: dtypes, shapes with integer or symbolic dims, broadcasting.

A dim is an ``int`` or a ``str``. A string dim is a product of named symbols
with an optional integer factor (``"N"``, ``"N*3"``, ``"B*T"``), so that a
batch dimension can stay open through reshapes and flattens: flattening
``[N,16,4,4]`` from axis 0 gives ``[N*256]``.

Example::

    >>> from slimgraph.ir.types import TensorType, DType
    >>> t = TensorType(DType.float32, ("N", 3, 32, 32))
    >>> str(t)
    'f32[N,3,32,32]'
    >>> TensorType.parse_dtype("float16")
    <DType.float16: 'f16'>
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Iterable, Union

import ml_dtypes
import numpy as np

from slimgraph.errors import GraphError

Dim = Union[int, str]
Shape = tuple  # tuple[Dim, ...]


class DType(enum.Enum):
    """Element types of the IR; the value is the short name used in the text form."""

    float32 = "f32"
    float64 = "f64"
    float16 = "f16"
    bfloat16 = "bf16"
    int4 = "i4"
    int8 = "i8"
    uint8 = "u8"
    int32 = "i32"
    int64 = "i64"
    bool = "bool"

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype holding this element type (ml_dtypes for bf16 and int4)."""
        return _NUMPY[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.float32, DType.float64, DType.float16, DType.bfloat16)

    @property
    def is_int(self) -> bool:
        return self in (DType.int4, DType.int8, DType.uint8, DType.int32, DType.int64)

    @property
    def bits(self) -> int:
        return 4 if self is DType.int4 else 8 * self.numpy.itemsize

    @classmethod
    def of(cls, spec: "DType | str | np.dtype | type") -> "DType":
        """Return the DType for a short name, a long name or a numpy dtype."""
        if isinstance(spec, DType):
            return spec
        if isinstance(spec, str):
            key = spec.strip()
            if key in _BY_NAME:
                return _BY_NAME[key]
            raise GraphError(f"unknown dtype {spec!r}; valid: {', '.join(d.value for d in DType)}")
        try:
            np_dtype = np.dtype(spec)
        except TypeError as exc:
            raise GraphError(f"unknown dtype {spec!r}") from exc
        for dtype, candidate in _NUMPY.items():
            if candidate == np_dtype:
                return dtype
        raise GraphError(f"numpy dtype {np_dtype} has no slimgraph dtype; valid: {', '.join(d.name for d in DType)}")


_NUMPY = {
    DType.float32: np.dtype(np.float32),
    DType.float64: np.dtype(np.float64),
    DType.float16: np.dtype(np.float16),
    DType.bfloat16: np.dtype(ml_dtypes.bfloat16),
    DType.int4: np.dtype(ml_dtypes.int4),
    DType.int8: np.dtype(np.int8),
    DType.uint8: np.dtype(np.uint8),
    DType.int32: np.dtype(np.int32),
    DType.int64: np.dtype(np.int64),
    DType.bool: np.dtype(np.bool_),
}
_BY_NAME = {d.value: d for d in DType} | {d.name: d for d in DType}

# ---------------------------------------------------------------------------
# Symbolic dims: a dim string is a monomial, coeff * sym1 * sym2 * ...

_SYMBOL = r"[A-Za-z_][A-Za-z0-9_]*"
_DIM_RE = re.compile(rf"^(?:\d+\*)?{_SYMBOL}(?:\*{_SYMBOL})*(?:\*\d+)?$")


def is_symbolic(dim: Dim) -> bool:
    return isinstance(dim, str)


def check_dim(dim: object) -> Dim:
    """Validate one dim, returning it in canonical form."""
    if type(dim) is int and dim >= 0:
        return dim
    if isinstance(dim, (bool, np.bool_)):
        raise GraphError(f"bad dim {dim!r}: dims are non-negative ints or symbol names")
    if isinstance(dim, (int, np.integer)):
        if dim < 0:
            raise GraphError(f"bad dim {dim}: dims cannot be negative")
        return int(dim)
    if isinstance(dim, str) and _DIM_RE.match(dim):
        return _from_mono(*_mono(dim))
    raise GraphError(f"bad dim {dim!r}: dims are non-negative ints or symbol names such as 'N' or 'N*3'")


def _mono(dim: Dim) -> tuple[int, tuple[str, ...]]:
    if isinstance(dim, int):
        return dim, ()
    coeff, syms = 1, []
    for part in dim.split("*"):
        if part.isdigit():
            coeff *= int(part)
        else:
            syms.append(part)
    return coeff, tuple(sorted(syms))


def _from_mono(coeff: int, syms: tuple[str, ...]) -> Dim:
    if not syms or coeff == 0:
        return coeff
    body = "*".join(syms)
    return body if coeff == 1 else f"{body}*{coeff}"


def dim_mul(a: Dim, b: Dim) -> Dim:
    """Product of two dims (``dim_mul('N', 3) == 'N*3'``)."""
    ca, sa = _mono(a)
    cb, sb = _mono(b)
    return _from_mono(ca * cb, tuple(sorted(sa + sb)))


def dim_div(a: Dim, b: Dim) -> Dim | None:
    """Exact quotient of two dims, or None when it is not a whole dim."""
    ca, sa = _mono(a)
    cb, sb = _mono(b)
    if cb == 0 or ca % cb:
        return None
    rest = list(sa)
    for sym in sb:
        if sym not in rest:
            return None
        rest.remove(sym)
    return _from_mono(ca // cb, tuple(rest))


def numel(shape: Iterable[Dim]) -> Dim:
    """Number of elements of a shape: an int, or a symbolic product."""
    total: Dim = 1
    for dim in shape:
        total = dim_mul(total, dim)
    return total


def concrete(dim: Dim, bindings: dict[str, int] | None = None, default: int = 1) -> int:
    """Evaluate a dim with symbols bound (unbound symbols take ``default``)."""
    coeff, syms = _mono(dim)
    for sym in syms:
        coeff *= (bindings or {}).get(sym, default)
    return coeff


def bind_dim(declared: Dim, actual: int, bindings: dict[str, int]) -> bool:
    """Match a concrete size against a declared dim, binding free symbols.

    Returns False when they cannot agree. A monomial with one unbound symbol is
    solved for it (``N*3`` against 12 binds N=4).
    """
    coeff, syms = _mono(declared)
    unbound = [s for s in syms if s not in bindings]
    known = coeff * math.prod(bindings[s] for s in syms if s in bindings)
    if not unbound:
        return known == actual
    if len(unbound) > 1 or known == 0 or actual % known:
        return False
    bindings[unbound[0]] = actual // known
    return True


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy-style broadcast of shapes with symbolic dims.

    A symbol against 1 stays the symbol; a symbol against an int other than 1
    becomes that int (the symbol must equal it at run time); two different
    symbols cannot be broadcast statically.
    """
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        result: Dim = 1
        for dim in dims:
            if dim == 1 or dim == result:
                continue
            if result == 1:
                result = dim
            elif isinstance(result, str) and isinstance(dim, int):
                result = dim
            elif isinstance(result, int) and isinstance(dim, str):
                continue
            else:
                raise GraphError(
                    f"shapes {', '.join(format_shape(s) for s in shapes)} do not broadcast "
                    f"(axis {i - rank}: {result} vs {dim})"
                )
        out.append(result)
    return tuple(out)


def format_shape(shape: Iterable[Dim]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Turn a possibly negative axis into 0..rank-1, or raise GraphError."""
    if not -rank <= axis < max(rank, 1):
        raise GraphError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


@dataclass(frozen=True)
class TensorType:
    """A dtype and a shape; the type of every Value.

    ``TensorType(DType.float32, ("N", 10))`` prints as ``f32[N,10]``.
    """

    dtype: DType
    shape: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DType.of(self.dtype))
        object.__setattr__(self, "shape", tuple(check_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def symbols(self) -> set[str]:
        return {s for d in self.shape for s in _mono(d)[1]}

    def numel(self, bindings: dict[str, int] | None = None) -> int:
        """Element count, with symbols bound (unbound symbols count as 1)."""
        return math.prod(concrete(d, bindings) for d in self.shape)

    def nbytes(self, bindings: dict[str, int] | None = None) -> int:
        """Bytes as stored: int4 packs two elements per byte."""
        return (self.numel(bindings) * self.dtype.bits + 7) // 8

    def with_shape(self, shape: Iterable[Dim]) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType | str) -> "TensorType":
        return TensorType(DType.of(dtype), self.shape)

    @staticmethod
    def parse_dtype(name: str) -> DType:
        return DType.of(name)

    @classmethod
    def of_array(cls, array: np.ndarray) -> "TensorType":
        return cls(DType.of(array.dtype), tuple(int(d) for d in array.shape))

    def __str__(self) -> str:
        return f"{self.dtype.value}{format_shape(self.shape)}"

    def __repr__(self) -> str:
        return f"TensorType({self})"

"""Shape values with symbolic dims, evaluated at import.

``Shape`` of a tensor typed ``f32[N,3,8,8]`` gives the int64 vector ``[N,3,8,8]``;
it is kept as a numpy object array of dims (ints and symbol strings) and the
shape arithmetic that follows (Gather, Concat, Unsqueeze, Slice, Mul, ...) is
evaluated on it, so that a later Reshape or Expand gets a shape it can turn into
static attributes. Such a value never becomes a tensor in the graph.

Example::

    >>> import numpy as np
    >>> dims = shape_value(("N", 16, 4, 4))
    >>> evaluate("mul", [dims[:1], np.array([2], np.int64)], {}).tolist()
    ['N*2']
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from slimgraph.errors import SlimgraphError
from slimgraph.ir.registry import get_op
from slimgraph.ir.types import dim_div, dim_mul


class SymbolicError(SlimgraphError):
    """An op cannot be evaluated on a shape that holds symbolic dims."""


def is_symbolic(array: np.ndarray) -> bool:
    return array.dtype == object


def shape_value(dims: Sequence) -> np.ndarray:
    """A 1-d shape vector: int64 when every dim is known, else an object array of dims."""
    return _normalize(np.array([d if isinstance(d, str) else int(d) for d in dims] or [], dtype=object))


def reshape_target(shape: np.ndarray, in_shape: Sequence, allowzero: bool) -> tuple[int, ...]:
    """Static ``reshape`` attributes for a (possibly symbolic) ONNX shape vector.

    A symbolic entry equal to the input dim at the same position becomes 0 (copy);
    one remaining symbolic entry becomes -1 (inferred).
    """
    out: list = []
    for i, dim in enumerate(shape.tolist()):
        if isinstance(dim, str) and not allowzero and i < len(in_shape) and in_shape[i] == dim:
            out.append(0)
        else:
            out.append(dim)
    unknown = [i for i, d in enumerate(out) if isinstance(d, str)]
    if len(unknown) == 1 and -1 not in out:
        out[unknown[0]] = -1
    elif unknown:
        raise SymbolicError(
            f"the target shape [{', '.join(map(str, out))}] has symbolic dims that cannot be "
            "expressed as copied (0) or inferred (-1) dims"
        )
    return tuple(int(d) for d in out)


def evaluate(op: str, arrays: Sequence[np.ndarray], attrs: dict) -> np.ndarray | tuple:
    """Run IR op ``op`` on shape values, at least one of them symbolic."""
    if op in _ARITHMETIC:
        a, b = (_as_objects(x) for x in arrays)
        return _normalize(np.asarray(np.frompyfunc(_ARITHMETIC[op], 2, 1)(a, b), dtype=object))
    if op == "cast":
        if not attrs["to"].is_int:
            raise SymbolicError(f"cannot cast a shape holding symbolic dims to {attrs['to'].name}")
        return arrays[0]
    if op not in _STRUCTURAL:
        raise SymbolicError(f"{op} cannot be evaluated on a shape that holds symbolic dims")
    opdef = get_op(op)
    # Structural ops only move elements around, so their numpy reference works on dims.
    try:
        result = opdef.impl(*arrays, **opdef.normalize_attrs(attrs))
    except (TypeError, ValueError, IndexError) as exc:
        raise SymbolicError(f"{op} on a shape that holds symbolic dims failed: {exc}") from None
    if isinstance(result, tuple):
        return tuple(_normalize(np.asarray(r, dtype=object)) for r in result)
    return _normalize(np.asarray(result, dtype=object))


_STRUCTURAL = ("identity", "gather", "concat", "unsqueeze", "squeeze", "slice", "reshape", "flatten",
               "transpose", "split", "expand", "tile")


def _as_objects(array: np.ndarray) -> np.ndarray:
    if is_symbolic(array):
        return array
    return np.array([int(v) for v in array.ravel().tolist()], dtype=object).reshape(array.shape)


def _normalize(array: np.ndarray) -> np.ndarray:
    values = [v if isinstance(v, str) else int(v) for v in array.ravel().tolist()]
    if any(isinstance(v, str) for v in values):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out.reshape(array.shape)
    return np.array(values, dtype=np.int64).reshape(array.shape)


def _mul(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if (isinstance(a, int) and a < 0) or (isinstance(b, int) and b < 0):
        raise SymbolicError(f"cannot multiply the dims {a} and {b}")
    return dim_mul(a, b)


def _div(a, b):
    if isinstance(a, int) and isinstance(b, int):
        if b == 0:
            raise SymbolicError("division by zero in shape arithmetic")
        return int(a / b)  # ONNX integer division truncates toward zero
    out = dim_div(a, b) if not (isinstance(b, int) and b <= 0) else None
    if out is None:
        raise SymbolicError(f"the dim {a} is not known to divide by {b}")
    return out


def _add(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0 or b == 0:
        return b if a == 0 else a
    raise SymbolicError(f"cannot add the dims {a} and {b}: symbolic dims are products of symbols")


def _sub(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    if b == 0:
        return a
    if a == b:
        return 0
    raise SymbolicError(f"cannot subtract the dims {b} from {a}: symbolic dims are products of symbols")


_ARITHMETIC: dict[str, Callable] = {"mul": _mul, "div": _div, "add": _add, "sub": _sub}


__all__ = ["SymbolicError", "evaluate", "is_symbolic", "reshape_target", "shape_value"]

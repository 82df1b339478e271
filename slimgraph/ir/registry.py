"""The op registry: every op is declared once, here or in ``slimgraph.ir.ops``.

An :class:`OpDef` holds the op's input and attribute schema, its type
inference, its numpy reference implementation, its FLOP count and its
category (which the fusion pass reads). Backends keep their own per-op
lowering tables keyed by op name, so the IR never depends on a backend.

Example: declaring an op::

    >>> import numpy as np
    >>> from slimgraph.ir.registry import define_op, In, infer_same, elementwise_flops
    >>> _ = define_op(
    ...     "square_example", inputs=[In("x")], infer=infer_same,
    ...     impl=lambda x: x * x, flops=elementwise_flops, category="elementwise",
    ...     doc="x * x, elementwise.")
    >>> get_op("square_example").impl(np.array([3.0]))
    array([9.])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from slimgraph.errors import GraphError, OpError
from slimgraph.registry import Registry
from slimgraph.ir.types import DType, TensorType, broadcast_shapes

REQUIRED = object()  # marks an attribute without a default

#: What the fusion pass and the backends read about an op.
CATEGORIES = ("source", "elementwise", "injective", "reduction", "compute", "opaque")

#: Attribute kinds and what they hold once coerced.
ATTR_KINDS = ("int", "float", "bool", "str", "ints", "floats", "dtype", "tensor", "graph")


@dataclass(frozen=True)
class In:
    """One input of an op. ``optional`` inputs may be left out at the end; a
    ``variadic`` input (the last one) takes any number of values (at least ``min``)."""

    name: str
    optional: bool = False
    variadic: bool = False
    min: int = 1
    doc: str = ""


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its kind, default and, for strings, the valid choices."""

    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise GraphError(f"attribute {self.name}: unknown kind {self.kind!r}; valid: {', '.join(ATTR_KINDS)}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any, op: str) -> Any:
        """Return ``value`` in canonical form (tuples, python scalars) or raise OpError."""
        if value is None and self.default is None:
            return None
        try:
            out = _COERCE[self.kind](value)
        except (TypeError, ValueError, GraphError) as exc:
            raise OpError(f"attribute {self.name}={value!r} is not a valid {self.kind}: {exc}", op=op) from None
        if self.choices is not None and out not in self.choices:
            raise OpError(
                f"attribute {self.name}={value!r} is not one of {', '.join(map(repr, self.choices))}", op=op
            )
        return out


def _as_int(v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"expected an int, got {type(v).__name__}")
    return int(v)


def _as_float(v: Any) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a number, got {type(v).__name__}")
    return float(v)


def _as_bool(v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"expected a bool, got {type(v).__name__}")
    return bool(v)


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _as_seq(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def coerce(v: Any) -> tuple:
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray)):
            raise TypeError(f"expected a list, got {type(v).__name__}")
        return tuple(item(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v))

    return coerce


def _as_tensor(v: Any) -> np.ndarray:
    if not isinstance(v, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(v).__name__}")
    DType.of(v.dtype)
    if v.flags.writeable:
        # Constants are shared between a graph and its clones; freezing them is
        # what lets passes copy graphs cheaply without ever mutating an input.
        v = v.copy()
        v.flags.writeable = False
    return v


def _as_graph(v: Any) -> Any:
    from slimgraph.ir.graph import Graph

    if not isinstance(v, Graph):
        raise TypeError(f"expected a Graph, got {type(v).__name__}")
    return v


_COERCE: dict[str, Callable[[Any], Any]] = {
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "str": _as_str,
    "ints": _as_seq(_as_int),
    "floats": _as_seq(_as_float),
    "dtype": DType.of,
    "tensor": _as_tensor,
    "graph": _as_graph,
}

InferFn = Callable[[Sequence[TensorType], dict], Sequence[TensorType]]
ImplFn = Callable[..., Any]
FlopsFn = Callable[[Sequence[TensorType], Sequence[TensorType], dict], int]


@dataclass(frozen=True)
class OpDef:
    """An op's one declaration. See :func:`define_op`."""

    name: str
    inputs: tuple[In, ...]
    attrs: tuple[Attr, ...]
    infer: InferFn
    impl: ImplFn
    flops: FlopsFn
    category: str
    doc: str
    commutative: bool = False
    attr_index: dict = field(default_factory=dict, compare=False, repr=False)

    def attr(self, name: str) -> Attr:
        return self.attr_index[name]

    def arity_ok(self, n: int) -> bool:
        lo, hi = self.arity()
        return lo <= n and (hi is None or n <= hi)

    def arity(self) -> tuple[int, int | None]:
        """(fewest, most) inputs; most is None for variadic ops."""
        lo = 0
        for inp in self.inputs:
            if inp.variadic:
                return lo + inp.min, None
            if not inp.optional:
                lo += 1
        return lo, len(self.inputs)

    def normalize_attrs(self, attrs: dict, where: str | None = None) -> dict:
        """Check attribute names, coerce values and fill in defaults."""
        unknown = sorted(set(attrs) - set(self.attr_index))
        if unknown:
            valid = ", ".join(a.name for a in self.attrs) or "none"
            raise OpError(f"unknown attribute {unknown[0]!r}; valid: {valid}", op=self.name, where=where)
        out = {}
        for spec in self.attrs:
            if spec.name in attrs:
                try:
                    out[spec.name] = spec.coerce(attrs[spec.name], self.name)
                except OpError as exc:
                    raise OpError(str(exc).split(": ", 1)[1], op=self.name, where=where) from None
            elif spec.required:
                raise OpError(f"missing required attribute {spec.name!r}", op=self.name, where=where)
            else:
                out[spec.name] = spec.default
        return out

    def infer_types(self, types: Sequence[TensorType], attrs: dict, where: str | None = None) -> list[TensorType]:
        """Run type inference; any GraphError from the op becomes an OpError naming the node."""
        if not self.arity_ok(len(types)):
            lo, hi = self.arity()
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise OpError(f"takes {want} inputs, got {len(types)}", op=self.name, where=where)
        try:
            return list(self.infer(types, attrs))
        except OpError:
            raise
        except GraphError as exc:
            raise OpError(str(exc), op=self.name, where=where) from None


#: Every declared op, by name (filled by the modules of ``slimgraph.ir.ops``).
OPS: Registry[str, OpDef] = Registry("op")


def define_op(
    name: str,
    *,
    inputs: Sequence[In],
    infer: InferFn,
    impl: ImplFn,
    category: str,
    doc: str,
    attrs: Sequence[Attr] = (),
    flops: FlopsFn | None = None,
    commutative: bool = False,
) -> OpDef:
    """Declare an op and add it to the registry.

    ``infer(input_types, attrs)`` returns the output types; it raises GraphError
    for inputs it rejects. ``impl(*arrays, **attrs)`` is the numpy reference and
    returns one array or a tuple of arrays. ``flops(input_types, output_types,
    attrs)`` counts floating-point work with symbolic dims taken as 1.
    """
    if category not in CATEGORIES:
        raise GraphError(f"op {name!r}: unknown category {category!r}; valid: {', '.join(CATEGORIES)}")
    op = OpDef(
        name=name,
        inputs=tuple(inputs),
        attrs=tuple(attrs),
        infer=infer,
        impl=impl,
        flops=flops or (lambda i, o, a: 0),
        category=category,
        doc=doc,
        commutative=commutative,
        attr_index={a.name: a for a in attrs},
    )
    return OPS.register(name, op)


def get_op(name: str) -> OpDef:
    """Look an op up by name; an unknown name gives an OpError listing near matches."""
    _load_builtin_ops()
    try:
        return OPS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(OPS), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OpError(f"unknown op{hint}", op=name) from None


def has_op(name: str) -> bool:
    _load_builtin_ops()
    return name in OPS


def all_ops() -> dict[str, OpDef]:
    """Every registered op, by name."""
    _load_builtin_ops()
    return dict(OPS)


def _load_builtin_ops() -> None:
    # The op modules import this one; importing them lazily breaks the cycle.
    import slimgraph.ir.ops  # noqa: F401


# ---------------------------------------------------------------------------
# Shared inference and FLOP helpers used by many op declarations.


def infer_same(types: Sequence[TensorType], attrs: dict) -> list[TensorType]:
    """The output has the type of the first input."""
    return [types[0]]


def infer_broadcast(types: Sequence[TensorType], attrs: dict) -> list[TensorType]:
    """Numpy broadcasting of all inputs; they must share a dtype."""
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise GraphError(f"inputs have different dtypes: {', '.join(sorted(d.value for d in dtypes))}")
    return [TensorType(types[0].dtype, broadcast_shapes(*(t.shape for t in types)))]


def elementwise_flops(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: dict) -> int:
    """One operation per output element."""
    return sum(o.numel() for o in outs)


def require_float(t: TensorType, what: str = "input") -> None:
    if not t.dtype.is_float:
        raise GraphError(f"{what} must be a float tensor, got {t}")

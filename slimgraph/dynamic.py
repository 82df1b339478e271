"""``dynamic=``: which input axes a compiled model serves at any size, and within what bounds.

``slimgraph.compile(..., dynamic=...)`` takes the axes in either of two forms:

- a mapping from input (its position, or its name) to ``{axis: dim}``:
  ``{0: {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}``;
- torch.export's ``dynamic_shapes`` style: a tuple or list with one entry per input,
  each None or ``{axis: dim}``.

A dim is a name, a ``(name, min, max)`` tuple, or a ``torch.export.Dim`` (its name
and bounds). Axes sharing a name share one size, and a bare name takes the bounds
given to that name elsewhere (else 1 to :data:`UNBOUNDED`). Each name becomes the IR symbol
of those axes; a call outside a symbol's bounds is refused, naming the input, the axis and
the bounds.

Example::

    >>> parse_dynamic({0: {0: "batch", 1: ("seq", 1, 384)}}, 2, ["ids", "mask"], [2, 2])
    {0: {0: DynamicDim(name='batch', min=1, max=2147483647), 1: DynamicDim(name='seq', min=1, max=384)}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from slimgraph.arguments import check_int
from slimgraph.errors import ArgumentError, GraphError
from slimgraph.ir.types import check_dim

#: The largest size of a dim declared without bounds (torch's sizes are int64, TVM's shape vars too,
#: but no tensor this backend compiles gets near 2**31 along one axis).
UNBOUNDED = 2**31 - 1


@dataclass(frozen=True)
class DynamicDim:
    """One named dynamic size and its inclusive bounds."""

    name: str
    min: int = 1
    max: int = UNBOUNDED


#: Input position -> axis -> its dynamic dim.
DynamicAxes = dict[int, dict[int, DynamicDim]]


def parse_dynamic(dynamic: Any, count: int, names: Sequence[str | None], ranks: Sequence[int | None]) -> DynamicAxes:
    """Check ``dynamic`` against the inputs (``count`` of them, with these names and ranks, None where
    unknown) and return it normalized; ArgumentError names what is wrong and where."""
    if isinstance(dynamic, Mapping):
        entries = list(dynamic.items())
    elif isinstance(dynamic, (tuple, list)):
        if len(dynamic) != count:
            raise ArgumentError(f"dynamic: {len(dynamic)} entries for {count} inputs; give one per input (None "
                                "for a static one) or a mapping {input: {axis: name}}")
        entries = [(i, axes) for i, axes in enumerate(dynamic) if axes is not None]
    else:
        raise ArgumentError(f"dynamic={dynamic!r}: give a mapping {{input: {{axis: name}}}} or a tuple with one "
                            "{axis: name} (or None) per input")
    found: list[tuple[int, int, DynamicDim | str]] = []
    bounds: dict[str, DynamicDim] = {}
    for key, axes in entries:
        index = _input_index(key, count, names)
        if not isinstance(axes, Mapping):
            raise ArgumentError(f"dynamic[{key!r}]={axes!r}: give a mapping {{axis: name}}")
        rank = ranks[index]
        for axis, spec in axes.items():
            where = f"dynamic[{key!r}][{axis!r}]"
            axis = check_int(f"{where}: axis", axis)
            if rank is not None:
                if not -rank <= axis < rank:
                    raise ArgumentError(f"{where}: input {index} has {rank} axes; no axis {axis}")
                axis %= rank
            dim = _dim(where, spec)
            if isinstance(dim, DynamicDim) and bounds.setdefault(dim.name, dim) != dim:
                raise ArgumentError(f"{where}: {dim.name} is declared with bounds {dim.min}..{dim.max} here and "
                                    f"{bounds[dim.name].min}..{bounds[dim.name].max} elsewhere")
            found.append((index, axis, dim))
    out: DynamicAxes = {}
    for index, axis, dim in found:
        out.setdefault(index, {})[axis] = bounds.get(dim, DynamicDim(dim)) if isinstance(dim, str) else dim
    return out


def bounds_of(dynamic: DynamicAxes) -> dict[str, tuple[int, int]]:
    """Each dynamic symbol's (min, max)."""
    return {d.name: (d.min, d.max) for axes in dynamic.values() for d in axes.values()}


def _input_index(key: Any, count: int, names: Sequence[str | None]) -> int:
    if isinstance(key, str):
        if key not in names:
            known = ", ".join(repr(n) for n in names if n) or "none (use positions)"
            raise ArgumentError(f"dynamic: no input named {key!r}; input names: {known}")
        return list(names).index(key)
    index = check_int(f"dynamic: input {key!r}", key, minimum=0)
    if index >= count:
        raise ArgumentError(f"dynamic: input {index} does not exist; the model takes {count} inputs")
    return index


def _dim(where: str, spec: Any) -> DynamicDim | str:
    """The dim ``spec`` declares, or its name alone when it gives no bounds."""
    if isinstance(spec, str):
        name, low, high = spec, 1, UNBOUNDED
    elif isinstance(spec, tuple) and len(spec) == 3:
        name, low, high = spec
    elif hasattr(spec, "__name__") and hasattr(spec, "min") and hasattr(spec, "max"):  # torch.export.Dim
        # torch's default min is 0; a size-0 axis is not compiled (reductions over nothing are refused)
        name, low, high = spec.__name__, max(int(spec.min), 1), min(int(spec.max), UNBOUNDED)
    else:
        raise ArgumentError(f"{where}={spec!r}: give a name, a (name, min, max) tuple or a torch.export.Dim")
    try:
        valid = isinstance(name, str) and check_dim(name) == name and "*" not in name
    except GraphError:
        valid = False
    if not valid:
        raise ArgumentError(f"{where}: {name!r} is not a valid dim name "
                            "(letters, digits, _; not starting with a digit)")
    if isinstance(spec, str):
        return name
    low = check_int(f"{where}: min", low, minimum=1)
    high = check_int(f"{where}: max", high, minimum=low)
    return DynamicDim(name, low, high)

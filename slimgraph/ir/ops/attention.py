"""The transformer contractions: scaled-dot-product attention as one op, and einsum.

``attention`` is torch's ``F.scaled_dot_product_attention`` with grouped-query
heads: q is ``[..., H, L, E]``, k and v are ``[..., Hk, S, E]`` and
``[..., Hk, S, Ev]`` with ``H`` a multiple of ``Hk`` (query head ``h`` reads
key/value head ``h // (H / Hk)``). A bool mask says where a query may attend;
a float mask is added to the scores. ``causal`` lets query ``i`` see keys
``j <= i`` (top-left aligned, as torch). A query that may attend nowhere gets
zeros, as torch's safe softmax gives, not NaN.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> q = g.add_input("q", TensorType("f32", ("N", 4, 7, 16)))
    >>> kv = g.add_input("kv", TensorType("f32", ("N", 2, 7, 16)))
    >>> str(g.call("attention", q, kv, kv, causal=True).type)
    'f32[N,4,7,16]'
    >>> str(g.call("einsum", q, q, equation="nhqd,nhkd->nhqk").type)
    'f32[N,4,7,7]'
"""

from __future__ import annotations

import math
import string
from typing import Sequence

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.registry import Attr, In, define_op, require_float
from slimgraph.ir.types import Dim, DType, TensorType, broadcast_shapes, concrete

# ---------------------------------------------------------------------------
# attention


def _infer_attention(types, attrs):
    q, k, v = types[:3]
    for name, t in zip("qkv", (q, k, v)):
        require_float(t, name)
        if t.dtype != q.dtype:
            raise GraphError(f"{name} is {t} but q is {q}: q, k and v must share a dtype")
        if t.rank < 3:
            raise GraphError(f"{name} is {t}: attention needs [..., heads, sequence, features]")
    if not (q.rank == k.rank == v.rank):
        raise GraphError(f"q {q}, k {k} and v {v} must have the same rank")
    if q.shape[:-3] != k.shape[:-3] or k.shape[:-3] != v.shape[:-3]:
        raise GraphError(f"q {q}, k {k} and v {v} must share their leading (batch) dims")
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if v.shape[-3] != kv_heads or k.shape[-2] != v.shape[-2]:
        raise GraphError(f"k {k} and v {v} must share their heads and sequence dims")
    if not (isinstance(heads, int) and isinstance(kv_heads, int) and kv_heads > 0 and heads % kv_heads == 0):
        raise GraphError(f"q has {heads} heads, k and v {kv_heads}: the first must be a multiple of the second")
    if q.shape[-1] != k.shape[-1]:
        raise GraphError(f"q {q} and k {k} must share their feature dim")
    scores = (*q.shape[:-1], k.shape[-2])
    if len(types) > 3:
        mask = types[3]
        if mask.dtype not in (DType.bool, q.dtype):
            raise GraphError(f"mask is {mask}: it must be bool (where to attend) or {q.dtype} (added to the scores)")
        if broadcast_shapes(scores, mask.shape) != scores:
            raise GraphError(f"mask {mask} does not broadcast to the scores [{','.join(map(str, scores))}]")
    return [q.with_shape((*q.shape[:-1], v.shape[-1]))]


def attention_scale(features: int, scale: float | None) -> float:
    """The factor on q @ k^T: ``scale`` when given, else 1/sqrt(features)."""
    return 1 / math.sqrt(features) if scale is None else scale


def _attention(q, k, v, mask=None, *, causal: bool, scale: float | None) -> np.ndarray:
    out_dtype = q.dtype
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    group = q.shape[-3] // k.shape[-3]
    k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    scores = (q @ np.swapaxes(k, -1, -2)) * attention_scale(q.shape[-1], scale)
    allowed = np.ones(scores.shape, bool)
    if causal:
        allowed &= np.tril(np.ones(scores.shape[-2:], bool))
    if mask is not None:
        if mask.dtype == np.bool_:
            allowed &= mask
        else:
            scores = scores + mask.astype(np.float64)
    scores = np.where(allowed, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    # A row with nothing to attend to has max -inf; shifting by 0 instead keeps it at exp(-inf) = 0, not NaN.
    weights = np.exp(scores - np.where(np.isneginf(top), 0.0, top))
    total = weights.sum(axis=-1, keepdims=True)
    return ((weights / np.where(total > 0, total, 1.0)) @ v).astype(out_dtype)


def _attention_flops(ins, outs, attrs) -> int:
    q, k, v = ins[:3]
    pairs = q.numel() // concrete(q.shape[-1]) * concrete(k.shape[-2])
    return 2 * pairs * (concrete(q.shape[-1]) + concrete(v.shape[-1])) + 4 * pairs


define_op(
    "attention",
    inputs=[In("q"), In("k"), In("v"), In("mask", optional=True)],
    attrs=[Attr("causal", "bool", False, doc="query i attends keys j <= i"),
           Attr("scale", "float", None, doc="factor on q @ k^T; default 1/sqrt(E)")],
    infer=_infer_attention,
    impl=_attention,
    flops=_attention_flops,
    category="compute",
    doc="softmax(q @ k^T * scale + mask) @ v, with grouped-query heads; fully masked queries give zeros.",
)


# ---------------------------------------------------------------------------
# einsum


def einsum_subscripts(equation: str, ranks: Sequence[int]) -> tuple[list[str], str]:
    """The letters of each operand and of the output, with any ``...`` spelled
    out as letters of their own (the implicit output, when there is no ``->``,
    is the ellipsis then the letters used once, in alphabetical order)."""
    text = equation.replace(" ", "")
    lhs, arrow, rhs = text.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise GraphError(f"einsum {equation!r} names {len(terms)} operands but has {len(ranks)} inputs")
    used = set(text) - {".", ",", "-", ">"}
    if not all(c in string.ascii_letters for c in used):
        raise GraphError(f"einsum {equation!r}: subscripts must be letters")
    spare = iter(c for c in string.ascii_letters if c not in used)
    width = max((rank - len(t.replace("...", "")) for t, rank in zip(terms, ranks) if "..." in t), default=0)
    ellipsis = "".join(next(spare) for _ in range(width))
    operands = []
    for term, rank in zip(terms, ranks):
        letters = term.replace("...", "")
        if ("..." in term and len(letters) > rank) or ("..." not in term and len(letters) != rank):
            raise GraphError(f"einsum {equation!r}: operand {term!r} does not fit a tensor of rank {rank}")
        operands.append(term.replace("...", ellipsis[width - (rank - len(letters)):]))
    if arrow:
        output = rhs.replace("...", ellipsis)
        unknown = set(output) - set("".join(operands))
        if unknown or len(set(output)) != len(output):
            raise GraphError(f"einsum {equation!r}: output subscripts {rhs!r} are repeated or not in any operand")
    else:
        counts = "".join(operands)
        output = ellipsis + "".join(sorted(c for c in set(counts) - set(ellipsis) if counts.count(c) == 1))
    return operands, output


def einsum_sizes(operands: Sequence[str], shapes: Sequence[Sequence[Dim]]) -> dict[str, Dim]:
    """Each letter's size; 1 broadcasts against any other size."""
    sizes: dict[str, Dim] = {}
    for term, shape in zip(operands, shapes):
        for letter, dim in zip(term, shape):
            seen = sizes.get(letter, 1)
            if dim != 1 and seen != 1 and seen != dim:
                raise GraphError(f"einsum subscript {letter!r} is {seen} in one operand and {dim} in another")
            sizes[letter] = dim if seen == 1 else seen
    return sizes


def _infer_einsum(types, attrs):
    dtype = types[0].dtype
    for i, t in enumerate(types):
        if t.dtype != dtype or t.dtype in (DType.bool, DType.int4):
            raise GraphError(f"einsum input {i} is {t}: inputs must be numeric and share a dtype")
    operands, output = einsum_subscripts(attrs["equation"], [t.rank for t in types])
    sizes = einsum_sizes(operands, [t.shape for t in types])
    return [TensorType(dtype, tuple(sizes[c] for c in output))]


def _einsum(*xs, equation: str) -> np.ndarray:
    # integers sum in int64 and wrap on the way back, as the compiled kernel does
    wide = [x.astype(np.int64 if x.dtype.kind in "iu" else np.float64) for x in xs]
    return np.asarray(np.einsum(equation, *wide)).astype(xs[0].dtype)


def _einsum_flops(ins, outs, attrs) -> int:
    operands, output = einsum_subscripts(attrs["equation"], [t.rank for t in ins])
    sizes = einsum_sizes(operands, [t.shape for t in ins])
    points = math.prod(concrete(d) for d in sizes.values())
    return points * len(ins)


define_op(
    "einsum",
    inputs=[In("xs", variadic=True)],
    attrs=[Attr("equation", "str", doc="numpy/torch einsum subscripts, e.g. 'bhqd,bhkd->bhqk'")],
    infer=_infer_einsum,
    impl=_einsum,
    flops=_einsum_flops,
    category="compute",
    doc="Einstein summation over the inputs (torch.einsum, ONNX Einsum); ``...`` broadcasts.",
)

"""Size and cost reports: bytes per weight with its encoding, parameter counts, FLOPs; before and after.

One row per logical weight: a plain constant (``dense f32``, with the share
of zeros when it has been magnitude-pruned; an int8 constant holding only 0
and +-2^k, as ``lower-quantized`` writes log2 weights, counts as the 4-bit
exponents the backend stores; an ``i4`` one as two per byte; a mostly-zero
linear or 1x1 conv weight as the block-ELL form it ships in on CPUs, by
:mod:`slimgraph.ir.sparse`'s rule, ``sparse 1x16 blocks``), or a weight-shared one, whose
packed codes and codebook are counted together under the decoded weight's
name (``kmeans 4-bit, 16 centroids``). Bytes are those of the compressed form:
``compile(weights="decoded")``, or a kernel that ``weights="auto"`` measured faster
decoded, holds more. Parameters count logical elements
(a shared 64x64 weight is still 4096 parameters); bytes count what is stored.
Constants inside fused regions are included.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 4)))
    >>> g.set_outputs([g.call("linear", x, g.const(np.ones((2, 4), np.float32), name="fc.weight"))])
    >>> r = size_report(g)
    >>> (r.parameters, r.weight_bytes, r.flops, r.tensors[0].encoding)
    (8, 32, 16, 'dense f32')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimgraph.analysis.stats import graph_stats
from slimgraph.ir.graph import Graph, Node
from slimgraph.ir.ops.quant import log2_codes
from slimgraph.ir.sparse import sparse_weight
from slimgraph.ir.types import DType


@dataclass(frozen=True)
class TensorSize:
    """One weight: name, logical shape, encoding, stored bytes, parameters and non-zeros."""

    name: str
    shape: tuple
    encoding: str
    bytes: int
    parameters: int
    nonzero: int


@dataclass(frozen=True)
class SizeReport:
    """Per-weight sizes and the graph's totals; ``str()`` is a Markdown table."""

    name: str
    tensors: tuple[TensorSize, ...]
    flops: int

    @property
    def parameters(self) -> int:
        return sum(t.parameters for t in self.tensors)

    @property
    def weight_bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    @property
    def nonzero(self) -> int:
        return sum(t.nonzero for t in self.tensors)

    def __str__(self) -> str:
        lines = [
            "| weight | shape | encoding | bytes | params | non-zero |",
            "| --- | --- | --- | ---: | ---: | ---: |",
        ]
        for t in self.tensors:
            lines.append(
                f"| {t.name} | {list(t.shape)} | {t.encoding} | {t.bytes:,} | {t.parameters:,} | {t.nonzero:,} |"
            )
        lines.append(f"| **total** | | | {self.weight_bytes:,} | {self.parameters:,} | {self.nonzero:,} |")
        lines.append(f"\nFLOPs: {self.flops:,}")
        return "\n".join(lines)


def size_report(graph: Graph) -> SizeReport:
    """The size report of ``graph``."""
    return SizeReport(graph.name, tuple(_weights(graph)), graph_stats(graph).flops)


def _weights(graph: Graph) -> list[TensorSize]:
    rows: list[TensorSize] = []
    encoded: set[int] = set()
    for node in graph.nodes:
        if node.op == "codebook_decode" and all(v.is_const for v in node.inputs):
            rows.append(_shared(node))
            encoded.update(id(v) for v in node.inputs)
    for node in graph.nodes:
        if node.op == "fused":
            rows.extend(_weights(node.body))
        elif node.op == "const" and id(node.output) not in encoded:
            array = node.attrs["value"]
            t = node.output.type
            nonzero = int(np.count_nonzero(array))
            encoding, nbytes = f"dense {t.dtype.value}", t.nbytes()
            if t.dtype is DType.int8 and array.size >= 2 and log2_codes(array) is not None:
                # powers of two (log2 weights lowered to integers) are held as 4-bit exponents
                encoding, nbytes = "log2 4-bit", (array.size + 1) // 2
            plan = _sparse_form(node)
            if plan is not None:
                encoding = f"sparse {'1x16 blocks' if plan.width > 1 else 'elements'}"
                nbytes = plan.nbytes
            if array.size and nonzero < array.size and array.size >= 16:
                encoding += f", {100 * (1 - nonzero / array.size):.0f}% zeros"
            rows.append(TensorSize(node.output.name, t.shape, encoding, nbytes, t.numel(), nonzero))
    return rows


def _sparse_form(const: Node):
    """The sparse form the weight ``const`` ships in when a layer reads it so (the first such user,
    inside the fused regions it is an operand of too)."""
    array = const.attrs["value"]
    pending = [const.output]
    while pending:
        value = pending.pop()
        for user in value.users:
            if user.op == "fused":
                pending.extend(p for p, v in zip(user.body.inputs, user.inputs) if v is value)
            elif user.op in ("linear", "conv") and len(user.inputs) > 1 and user.inputs[1] is value:
                plan = sparse_weight(user.op, user.attrs, user.inputs[0].type.shape, user.output.type.dtype, array)
                if plan is not None:
                    return plan
    return None


def _shared(node: Node) -> TensorSize:
    indices, codebook = (v.const_value for v in node.inputs)
    decoded = node.opdef.impl(indices, codebook, **node.attrs)
    out = node.output.type
    return TensorSize(
        node.output.name,
        out.shape,
        f"kmeans {node.attrs['bits']}-bit, {codebook.size} centroids",
        indices.nbytes + codebook.nbytes,
        out.numel(),
        int(np.count_nonzero(decoded)),
    )


def compare_sizes(before: Graph | SizeReport, after: Graph | SizeReport) -> str:
    """A Markdown table of each weight before and after (bytes, encoding) and the totals with ratios."""
    a = before if isinstance(before, SizeReport) else size_report(before)
    b = after if isinstance(after, SizeReport) else size_report(after)
    rows_after = {t.name: t for t in b.tensors}
    lines = [
        "| weight | before | bytes | after | bytes | ratio |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for t in a.tensors:
        n = rows_after.pop(t.name, None)
        if n is None:
            lines.append(f"| {t.name} | {t.encoding} {list(t.shape)} | {t.bytes:,} | (removed) | 0 | 0.000 |")
        else:
            ratio = n.bytes / t.bytes if t.bytes else 1.0
            lines.append(
                f"| {t.name} | {t.encoding} {list(t.shape)} | {t.bytes:,} | {n.encoding} {list(n.shape)} | "
                f"{n.bytes:,} | {ratio:.3f} |"
            )
    for n in rows_after.values():
        lines.append(f"| {n.name} | (new) | 0 | {n.encoding} {list(n.shape)} | {n.bytes:,} | |")
    lines.append("")
    lines.append("| total | before | after | ratio |")
    lines.append("| --- | ---: | ---: | ---: |")
    for label, x, y in (
        ("weight bytes", a.weight_bytes, b.weight_bytes),
        ("parameters", a.parameters, b.parameters),
        ("non-zero parameters", a.nonzero, b.nonzero),
        ("FLOPs", a.flops, b.flops),
    ):
        lines.append(f"| {label} | {x:,} | {y:,} | {y / x if x else 1.0:.3f} |")
    return "\n".join(lines)

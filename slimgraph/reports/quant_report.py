"""What ``quantize`` did: per layer, the scheme, the scale ranges, the bytes; and a sensitivity table.

:func:`quant_report` reads a quantized graph (QDQ form): every conv/linear/
matmul whose weight comes through a ``dequantize`` is a quantized layer.
Given ``eval_data`` (and the float graph, calibration and pass options), it
also quantizes each layer alone and measures, per layer, the agreement of
the top-1 class with the float model (or the accuracy with ``labels``) and
the output SQNR in dB: the layers that cost most are the ones to ``skip``.

Example::

    >>> report = quant_report(qgraph, float_graph)                          # doctest: +SKIP
    >>> print(report)                                                       # doctest: +SKIP
    >>> rows = sensitivity_table(float_graph, table, x_test, labels=y_test)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from slimgraph.ir.graph import Graph, Node
from slimgraph.metrics import top1_accuracy
from slimgraph.passes.calibrate import CalibrationTable
from slimgraph.passes.quantize import layer_name, quantize_graph
from slimgraph.analysis.stats import graph_stats


@dataclass(frozen=True)
class LayerRow:
    """One quantized layer: its name, op, weight scheme, scale range and weight bytes before and after."""

    layer: str
    op: str
    weights: str
    activations: str
    scale_min: float
    scale_max: float
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class SensitivityRow:
    """One layer quantized alone: top-1 agreement with float (or accuracy) and output SQNR in dB."""

    layer: str
    metric: float
    sqnr_db: float


@dataclass
class QuantReport:
    """Rows per quantized layer, total weight bytes, and optionally a sensitivity table."""

    layers: list[LayerRow]
    bytes_before: int
    bytes_after: int
    sensitivity: list[SensitivityRow] = field(default_factory=list)
    metric_name: str = "top-1 agreement %"

    @property
    def ratio(self) -> float:
        return self.bytes_after / max(self.bytes_before, 1)

    def __str__(self) -> str:
        rows = [["layer", "op", "weights", "activations", "scales", "bytes"]]
        for r in self.layers:
            rows.append(
                [r.layer, r.op, r.weights, r.activations, f"{r.scale_min:.3g}..{r.scale_max:.3g}",
                 f"{r.bytes_before} -> {r.bytes_after}"]
            )
        text = _table(rows) + f"\nweight bytes {self.bytes_before} -> {self.bytes_after} ({self.ratio:.3f}x)"
        if self.sensitivity:
            sens = [["layer (quantized alone)", self.metric_name, "SQNR dB"]]
            sens += [[s.layer, f"{s.metric:.2f}", f"{s.sqnr_db:.1f}"] for s in self.sensitivity]
            text += "\n\n" + _table(sens)
        return text


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _scheme(dq: Node) -> str:
    a = dq.attrs
    dtype = dq.inputs[0].type.dtype.value
    if a["scheme"] == "log2":
        return f"log2 {dtype} exp {a['min_exp']}..{a['max_exp']}"
    granularity = "per-channel" if len(a["scale"]) > 1 else "per-tensor"
    symmetric = "symmetric" if not any(a["zero_point"]) else "asymmetric"
    return f"{dtype} {granularity} {symmetric}"


def quantized_layers(graph: Graph) -> list[Node]:
    """The conv/linear/matmul nodes of a QDQ graph whose weight is a dequantized constant."""
    return [
        n
        for n in graph.nodes
        if n.op in ("conv", "linear", "matmul")
        and any(v.producer is not None and v.producer.op == "dequantize" and v.producer.inputs[0].is_const for v in n.inputs[:2])
    ]


def quant_report(quantized: Graph, original: Graph | None = None) -> QuantReport:
    """Per quantized layer: scheme, scales and bytes; totals from ``original`` (the float graph) when given."""
    rows = []
    for node in quantized_layers(quantized):
        w_dq = next(v.producer for v in node.inputs[:2] if v.producer is not None and v.producer.op == "dequantize" and v.producer.inputs[0].is_const)
        x_dq = next((v.producer for v in node.inputs[:2] if v.producer is not None and v.producer.op == "dequantize" and not v.producer.inputs[0].is_const), None)
        codes = w_dq.inputs[0].type
        scales = np.float32(w_dq.attrs["scale"])
        rows.append(
            LayerRow(
                layer=layer_name(node),
                op=node.op,
                weights=_scheme(w_dq),
                activations=_scheme(x_dq) if x_dq is not None else "float",
                scale_min=float(scales.min()),
                scale_max=float(scales.max()),
                bytes_before=codes.with_dtype(w_dq.attrs["to"]).nbytes(),
                bytes_after=codes.nbytes(),
            )
        )
    after = graph_stats(quantized).weight_bytes
    before = graph_stats(original).weight_bytes if original is not None else after + sum(r.bytes_before - r.bytes_after for r in rows)
    return QuantReport(rows, before, after)


def sensitivity_table(
    original: Graph,
    calibration: CalibrationTable,
    eval_data: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | None = None,
    **options: Any,
) -> list[SensitivityRow]:
    """Quantize each layer alone (the others stay float) and measure it on ``eval_data``.

    The metric is the top-1 accuracy in percent with ``labels``, else the
    percentage of samples whose top-1 class matches the float model's.
    ``options`` are the ``quantize`` pass's; ``calibration`` covers every layer.
    """
    inputs = list(eval_data) if isinstance(eval_data, (list, tuple)) else [eval_data]
    reference = original.run(*inputs)[0]
    layers = [layer_name(n) for n in original.nodes if n.op in options.get("ops", ("conv", "linear", "matmul"))]
    extra_skip = tuple(options.pop("skip", ()))
    rows = []
    for layer in layers:
        others = tuple(name for name in layers if name != layer)
        quantized = quantize_graph(original, calibration, skip=others + extra_skip, **options)
        out = quantized.run(*inputs)[0]
        metric = top1_accuracy(out, reference if labels is None else labels)
        noise = float(np.mean((out.astype(np.float64) - reference) ** 2))
        signal = float(np.mean(reference.astype(np.float64) ** 2))
        rows.append(SensitivityRow(layer, metric, 10 * np.log10(signal / noise) if noise > 0 else float("inf")))
    return rows

"""``quantize``: insert quantize/dequantize (QDQ) pairs around the ops it quantizes.

For every op in ``ops`` (conv, linear, matmul by default) that ``skip`` does
not name, the pass

- replaces a constant weight by its integer form and a ``dequantize``
  (int8 or int4 linear, symmetric, per output channel or per tensor; or
  log2 codes, ``sign(w) * 2^round(log2|w|)`` with the exponent clamped to
  ``log2-min-exp..0`` relative to the largest magnitude);
- puts a ``quantize -> dequantize`` pair on each activation input, with
  scales from a calibration table (int8 or uint8, symmetric or asymmetric);
- quantizes a constant bias to int32 with scale ``s_x * s_w`` (as ONNX
  Runtime's QDQ form does), so that ``lower-quantized`` can use it as is.

Activation ranges come from :func:`slimgraph.passes.calibrate.calibrate`.
In Python, :func:`quantize_graph` calibrates and quantizes in one call;
in a pipeline the pass takes data or a table from the run's
:class:`~slimgraph.passes.context.PassContext` (``calibration_data``) and
calibrates the graph it is given, wherever it sits in the pipeline; in
pipeline text, ``calibration=table.json`` names a saved table, which wins
over the context's data.
``activations=none`` quantizes weights only and needs no calibration.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> w = g.const(np.arange(12, dtype=np.float32).reshape(3, 4) - 6, name="fc.weight")
    >>> g.set_outputs([g.call("linear", x, w)])
    >>> data = [np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)]
    >>> q = quantize_graph(g, data, progress=False)
    >>> [n.op for n in q.nodes if n.op != "const"]
    ['dequantize', 'quantize', 'dequantize', 'linear']
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Iterable, Literal

import numpy as np

from slimgraph.errors import PassError
from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.ir.ops.quant import quant_range
from slimgraph.ir.registry import get_op
from slimgraph.ir.types import DType
from slimgraph.passes.calibrate import OBSERVER_OPTIONS, CalibrationTable, calibrate, linear_params
from slimgraph.passes.context import PassContext
from slimgraph.passes.registry import Pass, option, register_pass

_WEIGHT_DTYPE = {"int8": DType.int8, "int4": DType.int4}
_LOC_LAYER = re.compile(r"\(([^()]*)\)\s*$")


def layer_name(node: Node) -> str:
    """A readable name for a layer: the torch module path in its loc, else its output's name."""
    match = _LOC_LAYER.search(node.loc or "")
    return match.group(1) if match else node.output.name


def weight_index(node: Node) -> int | None:
    """Which input of a conv/linear/matmul is its weight (a constant), or None."""
    if node.op in ("conv", "linear", "conv_transpose"):
        return 1 if node.inputs[1].is_const else None
    if node.op == "matmul":
        return 1 if node.inputs[1].is_const else (0 if node.inputs[0].is_const else None)
    return None


def _weight_axis(node: Node, w: np.ndarray) -> int | None:
    """The output-channel axis of the weight (None: only per-tensor makes sense)."""
    if node.op == "conv":
        return 0
    if node.op == "linear":
        return 0 if node.attrs["trans_b"] else 1
    if node.op == "matmul" and w.ndim == 2 and node.inputs[1].is_const:
        return 1
    return None


@register_pass("quantize")
class Quantize(Pass):
    """Insert quantize/dequantize pairs around conv/linear/matmul: calibrated activations, integer weights."""

    compresses = True

    ops: tuple[str, ...] = option(("conv", "linear", "matmul"), "ops to quantize")
    skip: tuple[str, ...] = option((), "layers to keep in float: names or glob patterns (layer, output or weight)")
    weights: Literal["int8", "int4", "log2"] = option("int8", "weight scheme")
    granularity: Literal["per-channel", "per-tensor"] = option("per-channel", "weight scales")
    activations: Literal["int8", "uint8", "none"] = option("int8", "activation dtype (none: weights only)")
    symmetric: bool = option(False, "symmetric activations (zero point 0; 128 for uint8)")
    observer: Literal["minmax", "moving-average", "percentile", "mse", "entropy"] = option(
        "minmax", "how activation ranges are found from the calibration data"
    )
    percentile: float = option(99.99, "the percentile observer's point", minimum=50.0, maximum=100.0)
    weight_observer: Literal["minmax", "mse"] = option("minmax", "weight ranges: largest magnitude, or least error")
    log2_min_exp: int = option(-6, "log2 weights: the smallest exponent, relative to the largest magnitude",
                                minimum=-30, maximum=0)
    outputs: bool = option(False, "also quantize graph outputs computed by quantized ops (after relu/clip)")
    calibration: str = option("", "a calibration table (JSON) saved by CalibrationTable.save")

    uses_calibration = True

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        targets = [n for n in graph.nodes if n.op in self.ops and not self._skipped(n)]
        table = self._table(graph, ctx.calibration_data) if self.activations != "none" else None
        quantized: dict[int, tuple[Value, float]] = {}  # id(float value) -> (its dequantize, scale)
        for node in targets:
            windex = weight_index(node)
            if windex is None and node.op != "matmul":
                continue  # a conv/linear with a computed weight: left in float
            w_scales = self._quantize_weight(graph, node, windex) if windex is not None else None
            x_scale = None
            if table is not None:
                for i, value in enumerate(node.inputs[:2]):
                    if i != windex and value.type.dtype.is_float:
                        x_scale = self._quantize_activation(graph, node, i, table, quantized)
            if x_scale is not None and w_scales is not None and self.weights != "log2":
                self._quantize_bias(graph, node, x_scale, w_scales)
            if table is not None and self.outputs:
                self._quantize_output(graph, node, table)
        return graph

    # -- what to quantize ----------------------------------------------------

    def _skipped(self, node: Node) -> bool:
        names = {layer_name(node), node.output.name}
        names.update(v.name for v in node.inputs if v.is_const)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.skip for name in names)

    def _table(self, graph: Graph, source: Any) -> CalibrationTable:
        """The table named in the pass's text, else the context's table or data calibrated on ``graph``."""
        if self.calibration:
            source = CalibrationTable.load(self.calibration)
        if source is None:
            raise PassError(
                "quantize needs calibration data for activations: pass calibration_data to slimgraph.compile, "
                "call quantize_graph(graph, data), run it with PassContext(calibration_data=...), give "
                "calibration=<table.json>, or use activations=none"
            )
        if isinstance(source, CalibrationTable):
            return source
        return calibrate(graph, source, self.observer, self.activation_values(graph), **self.observer_options())

    def activation_values(self, graph: Graph) -> list[str]:
        """The names of the values this pass would quantize as activations (those it needs ranges for)."""
        targets = [n for n in graph.nodes if n.op in self.ops and not self._skipped(n)]
        names = [v.name for n in targets for i, v in enumerate(n.inputs[:2]) if i != weight_index(n) and not v.is_const]
        if self.outputs:
            names += [v.name for v in map(lambda n: _output_of_chain(graph, n), targets) if v is not None]
        return list(dict.fromkeys(names))

    def observer_options(self) -> dict:
        """Options for the activation observer: the percentile, and the integer grid (for mse)."""
        qmin, qmax = quant_range(self.activations if self.activations != "none" else "i8")
        options = {"percentile": self.percentile, "qmin": qmin, "qmax": qmax, "symmetric": self.symmetric}
        return {k: v for k, v in options.items() if k in OBSERVER_OPTIONS[self.observer]}

    # -- weights -------------------------------------------------------------

    def _quantize_weight(self, graph: Graph, node: Node, index: int) -> np.ndarray:
        """Replace the weight by integer codes and a dequantize; returns the per-channel scales."""
        value = node.inputs[index]
        w = value.const_value.astype(np.float32)
        axis = _weight_axis(node, w) if self.granularity == "per-channel" else None
        if node.op == "matmul" and index == 0:
            axis = None
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if axis is not None else w.reshape(1, -1)
        magnitude = np.abs(moved).max(axis=1).astype(np.float64)
        magnitude = np.where(magnitude > 0, magnitude, 1.0)
        attrs: dict[str, Any] = {"axis": axis or 0}
        if self.weights == "log2":
            scales, min_exp = magnitude, self.log2_min_exp
            dtype = DType.int4 if 1 - min_exp <= quant_range(DType.int4)[1] else DType.int8
            attrs.update(scheme="log2", min_exp=min_exp, max_exp=0)
        else:
            dtype = _WEIGHT_DTYPE[self.weights]
            qmax = quant_range(dtype)[1]
            if self.weight_observer == "mse":
                magnitude = _mse_clip(moved, magnitude, qmax)
            scales = magnitude / qmax
        scales = np.maximum(scales.astype(np.float32), np.float32(1e-30))
        attrs.update(scale=tuple(float(s) for s in scales), zero_point=(0,) * len(scales))
        quantize = get_op("quantize")
        with np.errstate(divide="ignore"):  # log2 of a zero weight: code 0, as specified
            codes = quantize.impl(w, **quantize.normalize_attrs({**attrs, "dtype": dtype}))
        with graph.inserting_before(node):
            q = graph.const(codes, name=f"{value.name}.q")
            dq = graph.call("dequantize", q, to=value.type.dtype, **attrs)
        graph.set_input(node, index, dq)
        _drop_if_unused(graph, value)
        return scales

    # -- activations ---------------------------------------------------------

    def _quantize_activation(self, graph: Graph, node: Node, i: int, table: CalibrationTable, done: dict) -> float:
        value = node.inputs[i]
        if id(value) not in done:
            with graph.inserting_before(node):
                dq = self._qdq(graph, value, table, f"input {i} of {node.describe()}")
            done[id(value)] = (dq, dq.producer.attrs["scale"][0])
        dq, scale = done[id(value)]
        graph.set_input(node, i, dq)
        return scale

    def _qdq(self, graph: Graph, value: Value, table: CalibrationTable, where: str) -> Value:
        """quantize -> dequantize of ``value`` with its calibrated range (at the insertion point)."""
        if value.name not in table.ranges:
            raise PassError(
                f"the calibration table has no range for %{value.name} ({where}); "
                "calibrate the graph as the quantize pass sees it"
            )
        dtype = DType.of("i8" if self.activations == "int8" else "u8")
        qmin, qmax = quant_range(dtype)
        scale, zero = linear_params(*table.ranges[value.name], qmin, qmax, self.symmetric)
        params = {"scale": (float(np.float32(scale)),), "zero_point": (zero,)}
        q = graph.call("quantize", value, dtype=dtype, name=f"{value.name}.q", **params)
        return graph.call("dequantize", q, name=f"{value.name}.dq", to=value.type.dtype, **params)

    def _quantize_output(self, graph: Graph, node: Node, table: CalibrationTable) -> None:
        """A QDQ pair on the graph output that ``node`` computes (through relu/clip), read by the output only."""
        value = _output_of_chain(graph, node)
        if value is None:
            return
        dq = self._qdq(graph, value, table, f"output %{value.name}")
        graph.set_outputs([dq if v is value else v for v in graph.outputs])

    def _quantize_bias(self, graph: Graph, node: Node, x_scale: float, w_scales: np.ndarray) -> None:
        if node.op not in ("conv", "linear") or len(node.inputs) < 3 or not node.inputs[2].is_const:
            return
        if node.op == "linear" and node.attrs["beta"] != 1.0:
            return
        bias = node.inputs[2].const_value
        if bias.ndim != 1:
            return
        scales = (np.float64(x_scale) * w_scales.astype(np.float64)).astype(np.float32)
        codes = np.clip(np.rint(bias / scales), -(2**31), 2**31 - 1).astype(np.int32)
        with graph.inserting_before(node):
            q = graph.const(codes, name=f"{node.inputs[2].name}.q")
            dq = graph.call(
                "dequantize", q, scale=tuple(map(float, scales)), zero_point=(0,) * len(scales), axis=0,
                to=node.inputs[2].type.dtype,
            )
        float_bias = node.inputs[2]
        graph.set_input(node, 2, dq)
        _drop_if_unused(graph, float_bias)


def _drop_if_unused(graph: Graph, value: Value) -> None:
    """Remove the constant behind ``value`` once nothing reads it (a shared weight may still be read)."""
    if not value.users and all(v is not value for v in graph.outputs):
        graph.remove_node(value.producer)


def _output_of_chain(graph: Graph, node: Node) -> Value | None:
    """The graph output ``node`` computes directly or through a relu/clip chain, or None."""
    value = node.output
    outputs = {id(v) for v in graph.outputs}
    while id(value) not in outputs:
        if len(value.users) != 1 or value.users[0].op not in ("relu", "clip"):
            return None
        value = value.users[0].output
    return value


def _mse_clip(rows: np.ndarray, magnitude: np.ndarray, qmax: int) -> np.ndarray:
    """Per row, the clip magnitude (a fraction of the largest) with the least squared rounding error."""
    best, best_err = magnitude.copy(), np.full(len(rows), np.inf)
    for alpha in np.linspace(0.5, 1.0, 51):
        clip = magnitude * alpha
        scale = (clip / qmax)[:, None]
        err = ((np.clip(np.rint(rows / scale), -qmax - 1, qmax) * scale - rows) ** 2).sum(axis=1)
        better = err < best_err
        best, best_err = np.where(better, clip, best), np.where(better, err, best_err)
    return best


def quantize_graph(
    graph: Graph, calibration_data: Iterable[Any] | CalibrationTable | None = None, progress: bool = True, **options: Any
) -> Graph:
    """Calibrate ``graph`` on ``calibration_data`` and return it quantized (QDQ form).

    ``options`` are the ``quantize`` pass's (``weights="int4"``,
    ``granularity="per-tensor"``, ``observer="percentile"``, ...; snake- or
    kebab-case). ``calibration_data`` may also be a saved CalibrationTable,
    or None with ``activations="none"``. ``progress`` draws a bar over the batches.
    """
    from slimgraph.passes.registry import get_pass

    pass_ = get_pass("quantize").create(options)
    if calibration_data is not None and not isinstance(calibration_data, CalibrationTable):
        calibration_data = calibrate(
            graph,
            calibration_data,
            pass_.observer,
            pass_.activation_values(graph),
            progress=progress,
            **pass_.observer_options(),
        )
    return pass_(graph, PassContext(calibration_data=calibration_data))


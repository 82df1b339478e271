"""Calibration: run sample data through a graph and record a range per activation.

:func:`calibrate` runs the reference interpreter over the batches the user
gives and feeds every observed float value to an observer, which turns what
it saw into a (low, high) range. The result is a :class:`CalibrationTable`
(value name -> range) that the ``quantize`` pass turns into scales; it saves
to JSON, so a pipeline can name it in text (``quantize{calibration=t.json}``).

Observers (:data:`OBSERVERS`):

- ``minmax``: the smallest and largest value seen;
- ``moving-average``: min and max of each batch, averaged exponentially
  (``momentum`` weighs the past), as torch.ao's MovingAverageMinMaxObserver;
- ``percentile``: the ``percentile`` and ``100 - percentile`` points of a histogram;
- ``mse``: the clipped range whose quantization has the least squared error
  over the histogram (the integer grid of the scheme being calibrated for);
- ``entropy``: TensorRT's KL-divergence threshold on the histogram of ``|x|``.

Every range contains 0, so that zero is exactly representable.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> g.set_outputs([g.call("relu", x, name="r")])
    >>> data = [np.array([[-1, 0, 2, 3]], np.float32), np.array([[0, 5, 1, 1]], np.float32)]
    >>> table = calibrate(g, data, progress=False)
    >>> table.ranges["x"], table.ranges["r"]
    ((-1.0, 5.0), (0.0, 5.0))
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from slimgraph.errors import PassError
from slimgraph.ir.graph import Graph, Value
from slimgraph.ir.types import bind_dim, format_shape

#: Bins of the histogram observers.
HISTOGRAM_BINS = 2048


class CalibrationError(PassError):
    """Calibration data that does not fit the graph, or a bad observer choice."""


# ---------------------------------------------------------------------------
# Observers


class Observer:
    """Sees the values of one tensor batch after batch; :meth:`range` gives (low, high)."""

    def update(self, array: np.ndarray) -> None:
        raise NotImplementedError

    def range(self) -> tuple[float, float]:
        raise NotImplementedError


class MinMaxObserver(Observer):
    """The smallest and largest finite value seen."""

    def __init__(self) -> None:
        self.low, self.high = math.inf, -math.inf

    def update(self, array: np.ndarray) -> None:
        finite = array[np.isfinite(array)]
        if finite.size:
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))

    def range(self) -> tuple[float, float]:
        if self.low > self.high:
            return 0.0, 0.0
        return min(self.low, 0.0), max(self.high, 0.0)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Per-batch min and max, averaged: ``r = momentum * r + (1 - momentum) * batch``."""

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self._seen = False

    def update(self, array: np.ndarray) -> None:
        finite = array[np.isfinite(array)]
        if not finite.size:
            return
        low, high = float(finite.min()), float(finite.max())
        if not self._seen:
            self.low, self.high, self._seen = low, high, True
            return
        self.low = self.momentum * self.low + (1 - self.momentum) * low
        self.high = self.momentum * self.high + (1 - self.momentum) * high


class HistogramObserver(Observer):
    """A histogram over [low, high] that grows (re-binning) when a batch falls outside."""

    def __init__(self, bins: int = HISTOGRAM_BINS) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, np.float64)
        self.low, self.high = 0.0, 0.0

    def update(self, array: np.ndarray) -> None:
        finite = array[np.isfinite(array)].astype(np.float64, copy=False)
        if not finite.size:
            return
        low, high = min(self.low, float(finite.min())), max(self.high, float(finite.max()))
        if high <= low:
            return
        if (low, high) != (self.low, self.high) and self.counts.any():
            old_centers = self._centers()
            self.counts = np.histogram(old_centers, self.bins, (low, high), weights=self.counts)[0]
        self.low, self.high = low, high
        self.counts = self.counts + np.histogram(finite, self.bins, (low, high))[0]

    def _centers(self) -> np.ndarray:
        edges = np.linspace(self.low, self.high, self.bins + 1)
        return (edges[:-1] + edges[1:]) / 2

    def range(self) -> tuple[float, float]:
        return self.low, self.high


class PercentileObserver(HistogramObserver):
    """The ``100 - percentile`` and ``percentile`` points of the histogram (low clipped only when negative)."""

    def __init__(self, percentile: float = 99.99, bins: int = HISTOGRAM_BINS) -> None:
        super().__init__(bins)
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        total = self.counts.sum()
        if not total:
            return 0.0, 0.0
        cdf = np.cumsum(self.counts) / total
        edges = np.linspace(self.low, self.high, self.bins + 1)
        q = self.percentile / 100.0
        high = float(edges[1 + min(np.searchsorted(cdf, q), self.bins - 1)])
        low = float(edges[np.searchsorted(cdf, 1.0 - q)])
        return min(low, 0.0), max(high, 0.0)


class MSEObserver(HistogramObserver):
    """The range ``alpha * (low, high)`` whose quantization error over the histogram is least.

    ``qmin``/``qmax`` and ``symmetric`` describe the integer grid the range is for.
    """

    def __init__(self, qmin: int = -128, qmax: int = 127, symmetric: bool = False, bins: int = HISTOGRAM_BINS):
        super().__init__(bins)
        self.qmin, self.qmax, self.symmetric = qmin, qmax, symmetric

    def range(self) -> tuple[float, float]:
        if not self.counts.any():
            return 0.0, 0.0
        centers, counts = self._centers(), self.counts
        best, best_err = (self.low, self.high), math.inf
        for alpha in np.linspace(0.05, 1.0, 96):
            low, high = self.low * alpha, self.high * alpha
            scale, zero = linear_params(low, high, self.qmin, self.qmax, self.symmetric)
            q = np.clip(np.rint(centers / scale) + zero, self.qmin, self.qmax)
            err = float(np.sum(counts * ((q - zero) * scale - centers) ** 2))
            if err < best_err:
                best, best_err = (low, high), err
        return best


class EntropyObserver(HistogramObserver):
    """TensorRT's entropy calibration: the threshold T on |x| minimizing KL(P || Q) with ``levels`` bins."""

    def __init__(self, levels: int = 128, bins: int = HISTOGRAM_BINS) -> None:
        super().__init__(bins)
        self.levels = levels

    def range(self) -> tuple[float, float]:
        if not self.counts.any():
            return 0.0, 0.0
        top = max(-self.low, self.high)
        magnitude = np.histogram(np.abs(self._centers()), self.bins, (0.0, top), weights=self.counts)[0]
        threshold = top * _kl_threshold(magnitude, self.levels) / self.bins
        return max(self.low, -threshold), min(self.high, threshold)


def _kl_threshold(hist: np.ndarray, levels: int) -> int:
    """The bin count i (levels..len(hist)) whose clipped, ``levels``-bin quantized histogram is closest in KL."""
    best_i, best_kl = len(hist), math.inf
    for i in range(levels, len(hist) + 1, max(1, len(hist) // 256)):
        clipped = hist[:i].astype(np.float64)
        p = clipped.copy()
        p[-1] += hist[i:].sum()  # the reference keeps the outliers in its last bin; the candidate cannot
        nonzero = p > 0
        q = np.zeros(i)
        for idx in np.array_split(np.arange(i), levels):
            used = idx[clipped[idx] > 0]
            if used.size:
                q[used] = clipped[idx].sum() / used.size
        p_sum, q_sum = p.sum(), q.sum()
        if not p_sum or not q_sum:
            continue
        pn, qn = p[nonzero] / p_sum, q[nonzero] / q_sum
        kl = float(np.sum(pn * np.log(pn / np.maximum(qn, 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


#: Observer name -> factory taking the observer options.
OBSERVERS = {
    "minmax": lambda **o: MinMaxObserver(),
    "moving-average": lambda **o: MovingAverageMinMaxObserver(o.get("momentum", 0.9)),
    "percentile": lambda **o: PercentileObserver(o.get("percentile", 99.99)),
    "mse": lambda **o: MSEObserver(o.get("qmin", -128), o.get("qmax", 127), o.get("symmetric", False)),
    "entropy": lambda **o: EntropyObserver(),
}


#: The options each observer takes, with the range of each number (inclusive).
OBSERVER_OPTIONS: dict[str, dict[str, tuple[float, float] | None]] = {
    "minmax": {},
    "moving-average": {"momentum": (0.0, 1.0)},
    "percentile": {"percentile": (50.0, 100.0)},
    "mse": {"qmin": (-(2**31), 2**31 - 1), "qmax": (-(2**31), 2**31 - 1), "symmetric": None},
    "entropy": {},
}


def make_observer(name: str, **options: Any) -> Observer:
    """A new observer called ``name``; CalibrationError lists the valid names and options."""
    if name not in OBSERVERS:
        raise CalibrationError(f"unknown observer {name!r}; valid: {', '.join(OBSERVERS)}")
    valid = OBSERVER_OPTIONS[name]
    for key, value in options.items():
        if key not in valid:
            raise CalibrationError(f"observer {name!r} takes no option {key!r}; its options: {', '.join(valid) or 'none'}")
        bounds = valid[key]
        if bounds is None:
            if not isinstance(value, bool):
                raise CalibrationError(f"observer {name!r}: {key}={value!r} must be True or False")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not bounds[0] <= value <= bounds[1]:
            raise CalibrationError(f"observer {name!r}: {key}={value!r} must be a number from {bounds[0]} to {bounds[1]}")
    if name == "mse" and options.get("qmin", -128) >= options.get("qmax", 127):
        raise CalibrationError(f"observer 'mse': qmin={options.get('qmin', -128)} must be below qmax={options.get('qmax', 127)}")
    return OBSERVERS[name](**options)


def linear_params(low: float, high: float, qmin: int, qmax: int, symmetric: bool) -> tuple[float, int]:
    """(scale, zero point) mapping [low, high] (which holds 0) onto qmin..qmax.

    >>> linear_params(-1.0, 3.0, -128, 127, False)
    (0.01568627450980392, -64)
    >>> linear_params(-1.0, 3.0, -128, 127, True)
    (0.023622047244094488, 0)
    """
    low, high = min(low, 0.0), max(high, 0.0)
    if symmetric:
        bound = max(-low, high)
        # uint8 symmetric centres the grid at 128 (ONNX Runtime's convention)
        half = (qmax - qmin) // 2
        zero = 0 if qmin < 0 else (qmin + qmax + 1) // 2
        scale = bound / half if bound > 0 else 1.0
        return max(scale, 1e-12), zero
    if high - low <= 0:
        return 1.0, 0 if qmin < 0 else qmin
    scale = (high - low) / (qmax - qmin)
    zero = int(np.clip(round(qmin - low / scale), qmin, qmax))
    return scale, zero


# ---------------------------------------------------------------------------
# The table and the driver


@dataclass
class CalibrationTable:
    """Observed ranges per value name, with how they were found; saves to and loads from JSON."""

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    observer: str = "minmax"
    batches: int = 0

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"observer": self.observer, "batches": self.batches, "ranges": self.ranges}, indent=1))
        tmp.replace(path)  # never a partial file

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationTable":
        try:
            data = json.loads(Path(path).read_text())
            ranges = {str(k): (float(v[0]), float(v[1])) for k, v in data["ranges"].items()}
            return cls(ranges, str(data.get("observer", "minmax")), int(data.get("batches", 0)))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise CalibrationError(f"cannot read calibration table {str(path)!r}: {exc}") from None


def calibrate(
    graph: Graph,
    data: Iterable[Any],
    observer: str = "minmax",
    values: Sequence[str] | None = None,
    progress: bool = True,
    **observer_options: Any,
) -> CalibrationTable:
    """Run ``data`` through ``graph`` and record a range per observed value.

    ``data`` is an iterable of batches; a batch is one array (one-input
    graphs), a tuple/list of arrays (positional) or a name -> array mapping;
    torch tensors are accepted. ``values`` names the values to observe
    (default: every float input and computed float value). ``progress``
    draws a tqdm bar over the batches. Options go to the observer
    (``percentile=99.9``, ``momentum=0.9``, ``qmin``/``qmax``/``symmetric`` for mse).

    >>> from slimgraph.ir import TensorType
    >>> g = Graph(); x = g.add_input("x", TensorType("f32", (2,))); g.set_outputs([x])
    >>> calibrate(g, [np.ones(3, np.float32)], progress=False)
    Traceback (most recent call last):
    ...
    slimgraph.passes.calibrate.CalibrationError: calibration batch 0, input %x: got shape [3], expected f32[2]
    """
    if not isinstance(graph, Graph):
        raise CalibrationError(f"graph: calibration runs a slimgraph Graph, got a {type(graph).__name__}")
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise CalibrationError(f"calibration data: give an iterable of input batches, got a {type(data).__name__}")
    if observer not in OBSERVERS:
        raise CalibrationError(f"unknown observer {observer!r}; valid: {', '.join(OBSERVERS)}")
    targets = _observed_values(graph, values)
    probe = graph.clone()
    probe.set_outputs([probe.value(v.name) for v in targets])
    observers = {v.name: make_observer(observer, **observer_options) for v in targets}
    spans = {v.name: [math.inf, -math.inf] for v in graph.inputs if v.type.dtype.is_float}
    batches = 0
    for index, batch in enumerate(_progress(data, progress)):
        feeds = batch_feeds(graph, batch, index)
        for name, span in spans.items():
            finite = feeds[name][np.isfinite(feeds[name])]
            if finite.size:
                span[0], span[1] = min(span[0], float(finite.min())), max(span[1], float(finite.max()))
        for value, array in zip(targets, probe.run(feeds)):
            observers[value.name].update(array)
        batches += 1
    if batches == 0:
        raise CalibrationError("calibration data is empty: give at least one batch")
    _check_spans(spans, batches)
    ranges = {name: tuple(float(r) for r in obs.range()) for name, obs in observers.items()}
    return CalibrationTable(ranges, observer, batches)


def _check_spans(spans: dict[str, list[float]], batches: int) -> None:
    # Data without spread calibrates every range to a point (zero when all NaN), so every
    # scale downstream would be arbitrary: the data is wrong, not the model.
    for name, (low, high) in spans.items():
        if low > high:
            raise CalibrationError(f"calibration data for input %{name} holds no finite value in {batches} batch(es) "
                                   "(all NaN or infinite): no range can be calibrated from it")
        if low == high:
            raise CalibrationError(f"calibration data for input %{name} is constant (every value is {low:g} in "
                                   f"{batches} batch(es)): give samples of real inputs, which vary")


def _observed_values(graph: Graph, names: Sequence[str] | None) -> list[Value]:
    if names is not None:
        missing = [n for n in names if not graph.has_value(n)]
        if missing:
            raise CalibrationError(f"cannot observe {', '.join(map(repr, missing))}: no such value in @{graph.name}")
        return [graph.value(n) for n in dict.fromkeys(names)]
    computed = [v for node in graph.nodes if node.op != "const" for v in node.outputs]
    return [v for v in [*graph.inputs, *computed] if v.type.dtype.is_float]


def _progress(data: Iterable[Any], enabled: bool) -> Iterable[Any]:
    if not enabled:
        return data
    from tqdm.auto import tqdm

    total = len(data) if hasattr(data, "__len__") else None
    return tqdm(data, total=total, desc="calibrate", unit="batch", leave=False)


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach") and hasattr(array, "numpy"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def batch_feeds(graph: Graph, batch: Any, index: int) -> dict[str, np.ndarray]:
    """One batch of sample data (an array, a tuple/list of arrays or a name -> array
    mapping; torch tensors too) as name -> numpy array, checked against the graph's
    input types; ``index`` numbers the batch in error messages.

    >>> from slimgraph.ir import TensorType
    >>> g = Graph(); x = g.add_input("x", TensorType("f32", ("N", 2))); g.set_outputs([x])
    >>> batch_feeds(g, np.ones((3, 2), np.float32), 0)["x"].shape
    (3, 2)
    """
    names = [v.name for v in graph.inputs]
    if isinstance(batch, Mapping):
        unknown = [k for k in batch if k not in names]
        if unknown:
            raise CalibrationError(
                f"calibration batch {index}: no input named {unknown[0]!r}; inputs: {', '.join(names)}"
            )
        feeds = dict(batch)
    else:
        arrays = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        if len(arrays) != len(names):
            raise CalibrationError(
                f"calibration batch {index}: got {len(arrays)} arrays, but @{graph.name} takes "
                f"{len(names)} inputs ({', '.join(names)})"
            )
        feeds = dict(zip(names, arrays))
    missing = [n for n in names if n not in feeds]
    if missing:
        raise CalibrationError(f"calibration batch {index}: missing input {missing[0]!r}")
    bindings: dict[str, int] = {}
    checked = {}
    for value in graph.inputs:
        array = _as_numpy(feeds[value.name])
        want = value.type
        where = f"calibration batch {index}, input %{value.name}"
        if array.dtype != want.dtype.numpy:
            raise CalibrationError(f"{where}: got dtype {array.dtype}, expected {want.dtype.value} ({want})")
        if array.ndim != want.rank or not all(bind_dim(d, int(n), bindings) for d, n in zip(want.shape, array.shape)):
            raise CalibrationError(f"{where}: got shape {format_shape(array.shape)}, expected {want}")
        checked[value.name] = array
    return checked

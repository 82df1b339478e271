"""The ledger's result: rows, the warnings about passes that do not pay, and its renderings
(a text table, JSON, a PNG chart).

A pass does not pay when the compiled model gets slower than the row before it
by more than ``slower_tolerance`` (relative) and more than the harness's own
noise (p90 - median, the smaller of the two rows'), whatever it did to FLOPs
or bytes; when it costs more than ``max_metric_drop`` points of the metric
(accuracy with labels, top-1 agreement with the float model without); or when
it shrinks the IR's weight bytes by more than ``SHRINK`` but the saved model's
parameter bytes not (``bytes``).

Example::

    >>> row = lambda i, ms, flops: LedgerRow(i, f"p{i}", 3, 10, 40, {"f32": 40}, flops, ms, ms * 1.01, 10)
    >>> book = Ledger("m", "llvm", "p1", [row(0, 1.0, 100), row(1, 1.5, 50)])
    >>> [w.message for w in book.warnings]
    ['pass 1 (p1) shrinks FLOPs by 50% but makes the compiled model slower: 1.000 -> 1.500 ms median (+50%, noise 0.010 ms)']
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from slimgraph.passes.manager import _si as si

#: A relative shrink of weight bytes the ``bytes`` warning looks for in the IR and the saved model.
SHRINK = 0.05


@dataclass(frozen=True)
class LedgerRow:
    """The model after ``step`` (row 0: the input model). ``parameters`` counts logical
    elements and ``weight_bytes`` what is stored, split by ``encodings`` (see
    :func:`slimgraph.analysis.size_report.size_report`). Latency from ``CompiledModel.benchmark``;
    ``metric`` (accuracy in percent by default) needs labels; ``agreement`` (top-1, percent) and
    ``max_error``/``mean_error`` (|output - float output|) need evaluation data. ``cached``: the graph
    was the same as an earlier row's, so its compiled model and measurements were reused.
    ``artifact_bytes`` is measured on the compiled model's saved folder (its ``params.npz``, the
    weights as shipped) and ``resident_bytes`` on that folder loaded back (the weights it holds
    in memory), so a pass that shrinks the IR's ``weight_bytes`` but not what ships shows."""

    index: int
    step: str
    nodes: int
    parameters: int
    weight_bytes: int
    encodings: dict[str, int]
    flops: int
    median_ms: float
    p90_ms: float
    runs: int
    metric: float | None = None
    agreement: float | None = None
    max_error: float | None = None
    mean_error: float | None = None
    cached: bool = False
    pass_seconds: float = 0.0
    compile_seconds: float = 0.0
    artifact_bytes: int | None = None
    resident_bytes: int | None = None

    @property
    def noise_ms(self) -> float:
        """The spread the harness reports: p90 - median."""
        return self.p90_ms - self.median_ms

    @property
    def quality(self) -> float | None:
        """The figure accuracy warnings watch: the metric, else agreement."""
        return self.metric if self.metric is not None else self.agreement


@dataclass(frozen=True)
class LedgerWarning:
    """A pass that does not pay: ``kind`` is ``slower``, ``metric`` or ``bytes``."""

    index: int
    step: str
    kind: str
    message: str


@dataclass
class Ledger:
    """Rows of a ledger run; ``str(ledger)`` is the table followed by the warnings."""

    model: str
    target: str
    pipeline: str
    rows: list[LedgerRow]
    metric_name: str = "accuracy"
    max_metric_drop: float = 1.0
    slower_tolerance: float = 0.05
    seconds: float = 0.0
    warnings: list[LedgerWarning] = field(init=False)

    def __post_init__(self) -> None:
        self.warnings = [w for prev, row in zip(self.rows, self.rows[1:]) for w in self._judge(prev, row)]

    def _judge(self, prev: LedgerRow, row: LedgerRow) -> list[LedgerWarning]:
        out = []
        where = f"pass {row.index} ({row.step})"
        slower = row.median_ms - prev.median_ms
        noise = min(prev.noise_ms, row.noise_ms)  # one disturbed run inflates a p90, not both
        if slower > self.slower_tolerance * prev.median_ms and slower > noise:
            change = (
                f"{prev.median_ms:.3f} -> {row.median_ms:.3f} ms median "
                f"({_pct(row.median_ms, prev.median_ms)}, noise {noise:.3f} ms)"
            )
            shrunk = [
                f"{name} by {-float(_rel(now, before)) * 100:.0f}%"
                for name, now, before in (("FLOPs", row.flops, prev.flops), ("bytes", row.weight_bytes, prev.weight_bytes))
                if now < before
            ]
            if shrunk:
                text = f"{where} shrinks {' and '.join(shrunk)} but makes the compiled model slower: {change}"
            else:
                text = (
                    f"{where} makes the compiled model slower without shrinking FLOPs ({_pct(row.flops, prev.flops)}) "
                    f"or bytes ({_pct(row.weight_bytes, prev.weight_bytes)}): {change}"
                )
            out.append(LedgerWarning(row.index, row.step, "slower", text))
        if (row.artifact_bytes is not None and prev.artifact_bytes is not None
                and row.weight_bytes < (1 - SHRINK) * prev.weight_bytes
                and row.artifact_bytes > (1 - SHRINK) * prev.artifact_bytes):
            out.append(LedgerWarning(
                row.index, row.step, "bytes",
                f"{where} shrinks the IR's weight bytes by {-_rel(row.weight_bytes, prev.weight_bytes) * 100:.0f}% "
                f"but not the saved model's: {prev.artifact_bytes:,} -> {row.artifact_bytes:,} bytes "
                f"({_pct(row.artifact_bytes, prev.artifact_bytes)})",
            ))
        if prev.quality is not None and row.quality is not None and prev.quality - row.quality > self.max_metric_drop:
            name = self.metric_name if row.metric is not None else "top-1 agreement"
            out.append(LedgerWarning(
                row.index, row.step, "metric",
                f"{where} costs {prev.quality - row.quality:.2f} points of {name} ({prev.quality:.2f} -> "
                f"{row.quality:.2f}), more than the {self.max_metric_drop:g} allowed",
            ))
        return out

    # -- renderings ------------------------------------------------------------

    def table(self) -> str:
        """One row per step; changed figures carry ``(vs previous row / vs start)``."""
        start = self.rows[0]
        has_metric = any(r.metric is not None for r in self.rows)
        has_agree = any(r.agreement is not None for r in self.rows)
        has_saved = any(r.artifact_bytes is not None for r in self.rows)
        header = ["#", "step", "nodes", "params", "bytes", "stored as"] + ["saved", "resident"] * has_saved
        header += ["FLOPs", "median ms", "p90 ms"]
        header += [self.metric_name] * has_metric + ["agree %", "max err", "mean err"] * has_agree
        lines = [header]
        prev = start
        for r in self.rows:
            first = r is start
            cells = [
                str(r.index),
                r.step + (" *" if r.cached else ""),
                _cell(str(r.nodes), r.nodes, prev.nodes, start.nodes, first, count=True),
                _cell(si(r.parameters), r.parameters, prev.parameters, start.parameters, first),
                _cell(si(r.weight_bytes), r.weight_bytes, prev.weight_bytes, start.weight_bytes, first),
                ", ".join(f"{k} {si(v)}" for k, v in sorted(r.encodings.items(), key=lambda kv: -kv[1])),
            ]
            if has_saved:
                cells += [_bytes_cell(r.artifact_bytes, prev.artifact_bytes, start.artifact_bytes, first),
                          _bytes_cell(r.resident_bytes, prev.resident_bytes, start.resident_bytes, first)]
            cells += [
                _cell(si(r.flops), r.flops, prev.flops, start.flops, first),
                _cell(f"{r.median_ms:.3f}", r.median_ms, prev.median_ms, start.median_ms, first),
                f"{r.p90_ms:.3f}",
            ]
            if has_metric:
                cells.append(_points(r.metric, prev.metric, start.metric, first))
            if has_agree:
                cells += [
                    _points(r.agreement, prev.agreement, start.agreement, first),
                    "" if r.max_error is None else f"{r.max_error:.3g}",
                    "" if r.mean_error is None else f"{r.mean_error:.3g}",
                ]
            lines.append(cells)
            prev = r
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = ["  ".join(c.ljust(w) if i < 2 or i == 5 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                for row in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        notes = [f"{self.model} on {self.target}; changes: (vs previous row / vs start)"
                 + ("; * = graph unchanged, measurements reused" if any(r.cached for r in self.rows) else "")]
        return "\n".join(notes + text)

    def __str__(self) -> str:
        return "\n".join([self.table()] + [f"warning: {w.message}" for w in self.warnings])

    def to_dict(self) -> dict:
        """Everything, JSON-ready."""
        return {
            "model": self.model,
            "target": self.target,
            "pipeline": self.pipeline,
            "metric_name": self.metric_name,
            "max_metric_drop": self.max_metric_drop,
            "slower_tolerance": self.slower_tolerance,
            "seconds": self.seconds,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "warnings": [dataclasses.asdict(w) for w in self.warnings],
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def save_chart(self, path: str | os.PathLike) -> Path:
        """A PNG: latency (median, bar to p90) and the metric against weight bytes, one point per row."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        kb = [r.weight_bytes / 1e3 for r in self.rows]
        quality = [r.quality for r in self.rows]
        panels = 2 if any(q is not None for q in quality) else 1
        fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
        latency = axes[0][0]
        latency.errorbar(kb, [r.median_ms for r in self.rows],
                         yerr=[[0] * len(self.rows), [r.noise_ms for r in self.rows]], marker="o", capsize=3)
        latency.set(xlabel="weight bytes (kB)", ylabel="latency (ms, median; bar to p90)", title=f"{self.model}: latency")
        figures = [(latency, [r.median_ms for r in self.rows])]
        if panels == 2:
            metric = axes[0][1]
            name = self.metric_name if any(r.metric is not None for r in self.rows) else "top-1 agreement"
            metric.plot(kb, quality, marker="o", color="tab:green")
            metric.set(xlabel="weight bytes (kB)", ylabel=f"{name} (%)", title=f"{self.model}: {name}")
            figures.append((metric, quality))
        for ax, ys in figures:
            ax.grid(alpha=0.3)
            if max(kb) > 10 * min(kb) > 0:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            at: dict[tuple[float, float], list[str]] = {}  # rows on the same spot share one label
            for r, x, y in zip(self.rows, kb, ys):
                if y is not None:
                    at.setdefault((x, round(y, 6)), []).append(str(r.index))
            for (x, y), names in at.items():
                ax.annotate(",".join(names), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        key = "   ".join(f"{r.index}: {r.step}" for r in self.rows)
        fig.text(0.5, 0.01, key, ha="center", fontsize=7, wrap=True)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _rel(now: float, before: float) -> float:
    return (now - before) / before if before else 0.0


def _pct(now: float, before: float) -> str:
    if now == before:
        return "+0%"
    return f"{_rel(now, before) * 100:+.0f}%" if before else "new"


def _cell(text: str, now: float, prev: float, start: float, first: bool, count: bool = False) -> str:
    if first or (now == prev and now == start):
        return text
    show = (lambda a, b: f"{a - b:+d}") if count else _pct
    return f"{text} ({'=' if now == prev else show(now, prev)} / {'=' if now == start else show(now, start)})"


def _bytes_cell(now: int | None, prev: int | None, start: int | None, first: bool) -> str:
    if now is None:
        return ""
    return _cell(si(now), now, prev if prev is not None else now, start if start is not None else now, first)


def _points(now: float | None, prev: float | None, start: float | None, first: bool) -> str:
    if now is None:
        return ""
    text = f"{now:.2f}"
    if first or prev is None or start is None:
        return text
    return f"{text} ({now - prev:+.2f} / {now - start:+.2f})"

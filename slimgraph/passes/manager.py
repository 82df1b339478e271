"""The pass manager: runs a pipeline with instruments and reports per pass.

An instrument is an object with any of four hooks, called around each pass:
``before_pipeline(graph)``, ``before_pass(record, graph)``,
``after_pass(record, graph)`` and ``after_pipeline(graph)``; a hook that takes
a last parameter ``ctx`` also gets the run's
:class:`~slimgraph.passes.context.PassContext`, as every pass's ``apply`` can. Before-hooks run
in list order and after-hooks in reverse, so the last instrument sits closest
to the pass (where :class:`TimingInstrument` belongs). Instruments write what
they measure onto the :class:`PassRecord` of each pass, and the report
renders whatever was measured as a table.

Built-in instruments: :class:`VerifyInstrument` (verify after every pass),
:class:`TimingInstrument`, :class:`DumpInstrument` (numbered ``.sg`` files),
:class:`StatsInstrument` (nodes, parameters, bytes, FLOPs per pass) and
:class:`NumericsInstrument` (reference interpreter before and after; names
the first pass that moved the result beyond tolerance).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph("tiny")
    >>> x = g.add_input("x", TensorType("f32", (2, 3)))
    >>> g.set_outputs([g.call("relu", g.call("add", x, g.const(np.zeros((2, 3), np.float32))))])
    >>> out, report = run_pipeline(g, "canonicalize,dce", stats=True)
    >>> [n.op for n in out.nodes], [n.op for n in g.nodes]
    (['relu'], ['const', 'add', 'relu'])
    >>> [(r.name, r.before.nodes, r.after.nodes) for r in report.records]
    [('canonicalize', 2, 1), ('dce', 1, 1)]
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from slimgraph.arguments import check_writable_folder
from slimgraph.errors import PassError, SlimgraphError
from slimgraph.ir.graph import Graph
from slimgraph.ir.interpreter import random_inputs
from slimgraph.passes.context import PassContext, call_with_context
from slimgraph.passes.errors import NumericsError, PassFailedError
from slimgraph.passes.pipeline import format_pipeline, parse_pipeline
from slimgraph.passes.registry import Pass
from slimgraph.analysis.stats import GraphStats, graph_stats


@dataclass
class PassRecord:
    """One pass of a run: its place, name and pipeline text, plus what the
    instruments measured (None where no instrument measured it)."""

    index: int
    name: str
    text: str
    seconds: float | None = None
    before: GraphStats | None = None
    after: GraphStats | None = None
    max_error: float | None = None


class Instrument:
    """Base of instruments; every hook is optional and does nothing here."""

    def before_pipeline(self, graph: Graph) -> None:
        pass

    def before_pass(self, record: PassRecord, graph: Graph) -> None:
        pass

    def after_pass(self, record: PassRecord, graph: Graph) -> None:
        pass

    def after_pipeline(self, graph: Graph) -> None:
        pass


class VerifyInstrument(Instrument):
    """Verify the input, then the graph after every pass; a failure names the pass."""

    def before_pipeline(self, graph: Graph) -> None:
        graph.verify()

    def after_pass(self, record: PassRecord, graph: Graph) -> None:
        try:
            graph.verify()
        except SlimgraphError as exc:
            raise PassFailedError(f"left an invalid graph: {exc}", pass_name=record.name, index=record.index) from exc


class TimingInstrument(Instrument):
    """Time every pass (wall clock) into ``record.seconds``."""

    def __init__(self) -> None:
        self._start = 0.0

    def before_pass(self, record: PassRecord, graph: Graph) -> None:
        self._start = time.perf_counter()

    def after_pass(self, record: PassRecord, graph: Graph) -> None:
        record.seconds = time.perf_counter() - self._start


class StatsInstrument(Instrument):
    """Graph statistics before and after every pass (``record.before``/``record.after``)."""

    def __init__(self) -> None:
        self._last: GraphStats | None = None

    def before_pipeline(self, graph: Graph) -> None:
        self._last = graph_stats(graph)

    def before_pass(self, record: PassRecord, graph: Graph) -> None:
        record.before = self._last

    def after_pass(self, record: PassRecord, graph: Graph) -> None:
        record.after = self._last = graph_stats(graph)


class DumpInstrument(Instrument):
    """Write the IR to ``directory``: ``00-input.sg``, then ``01-<pass>.sg`` after each pass.

    Large constants go to sidecar files (see ``Graph.save``). Dumps left by an
    earlier run in the same directory are removed first, so the numbered files
    always describe one run.
    """

    _DUMP = re.compile(r"^\d{2,}-[A-Za-z0-9_-]+\.sg")

    def __init__(self, directory: str | os.PathLike):
        self.directory = check_writable_folder("dump_dir", directory, error=PassError)

    def before_pipeline(self, graph: Graph) -> None:
        with self._writing():
            self.directory.mkdir(parents=True, exist_ok=True)
            for old in self.directory.iterdir():
                if self._DUMP.match(old.name) and old.is_file():
                    old.unlink()
            graph.save(self.directory / "00-input.sg")

    def after_pass(self, record: PassRecord, graph: Graph) -> None:
        with self._writing():
            graph.save(self.directory / f"{record.index:02d}-{record.name}.sg")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise PassError(f"dump_dir={str(self.directory)!r}: cannot write the dumps: "
                            f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from None


class NumericsInstrument(Instrument):
    """Run the reference interpreter on ``sample_inputs`` before the pipeline
    and after every pass; raise NumericsError naming the first pass whose
    result differs from the original by more than ``atol + rtol * |expected|``.

    ``sample_inputs`` are arrays (positional), a name -> array mapping, or
    None for seeded random inputs (see :func:`random_inputs`).
    """

    def __init__(self, sample_inputs: Any = None, rtol: float = 1e-4, atol: float = 1e-5):
        self.sample_inputs = sample_inputs
        self.rtol = rtol
        self.atol = atol
        self._inputs: Any = None
        self._expected: list[np.ndarray] = []
        self._names: list[str] = []

    def before_pipeline(self, graph: Graph) -> None:
        self._inputs = random_inputs(graph) if self.sample_inputs is None else self.sample_inputs
        self._expected = self._run(graph)
        self._names = [v.name for v in graph.outputs]

    def after_pass(self, record: PassRecord, graph: Graph) -> None:
        got = self._run(graph)
        worst = 0.0
        for name, want, have in zip(self._names, self._expected, got):
            error, excess = compare(want, have, self.rtol, self.atol)
            worst = max(worst, error)
            if excess > 0:
                raise NumericsError(
                    f"max |difference| {error:.3g} exceeds atol={self.atol:g} + rtol={self.rtol:g} * |expected|",
                    pass_name=record.name,
                    index=record.index,
                    output=name,
                    max_error=error,
                )
        record.max_error = worst

    def _run(self, graph: Graph) -> list[np.ndarray]:
        if isinstance(self._inputs, Mapping):
            return graph.run(dict(self._inputs))
        return graph.run(*self._inputs)


def compare(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> tuple[float, float]:
    """(max |difference|, max excess over ``atol + rtol*|expected|``); NaNs must sit in the same places."""
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return float("inf"), float("inf")
    want = expected.astype(np.float64)
    have = actual.astype(np.float64)
    same = (want == have) | (np.isnan(want) & np.isnan(have))
    diff = np.where(same, 0.0, np.abs(want - have))
    diff = np.where(np.isnan(diff), np.inf, diff)
    excess = diff - (atol + rtol * np.where(np.isfinite(want), np.abs(want), 0.0))
    return float(diff.max(initial=0.0)), float(excess.max(initial=-np.inf))


class PassManager:
    """Runs a pipeline (text, or a list of pass instances) with instruments.

    ``run(graph, ctx)`` returns the final graph; ``graph`` is never changed.
    ``ctx`` (a :class:`PassContext`; default: an empty one) goes to every pass
    and instrument; the run's instruments are this manager's followed by the
    context's own (``ctx.instruments``, as in TVM), and the passes see them all.
    ``records`` holds one :class:`PassRecord` per pass of the last run.
    """

    def __init__(self, pipeline: str | Sequence[Pass], instruments: Sequence[Instrument] = ()):
        if not isinstance(pipeline, (str, Sequence)):
            raise PassError(f"pipeline={pipeline!r}: give pipeline text or a list of passes")
        self.passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
        strays = [p for p in self.passes if not isinstance(p, Pass)]
        if strays:
            raise PassError(f"pipeline: {strays[0]!r} is a {type(strays[0]).__name__}, not a pass")
        self.instruments = list(instruments)
        self.records: list[PassRecord] = []

    @property
    def pipeline(self) -> str:
        return format_pipeline(self.passes)

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        if not isinstance(graph, Graph):
            raise PassError(f"graph: passes run on a slimgraph Graph, got a {type(graph).__name__}")
        if ctx is None:
            ctx = PassContext()
        elif not isinstance(ctx, PassContext):
            raise PassError(f"ctx: must be a PassContext, got a {type(ctx).__name__}")
        instruments = tuple(self.instruments) + tuple(i for i in ctx.instruments if i not in self.instruments)
        # a copy, so the caller's context keeps its own list; options stay shared with the caller
        ctx = dataclasses.replace(ctx, instruments=instruments)
        self.records = []
        for inst in instruments:
            call_with_context(inst.before_pipeline, ctx, graph)
        for index, pass_ in enumerate(self.passes, start=1):
            record = PassRecord(index, pass_.name, pass_.pipeline_text())
            self.records.append(record)
            for inst in instruments:
                call_with_context(inst.before_pass, ctx, record, graph)
            graph = self._run_one(pass_, graph, record, ctx)
            for inst in reversed(instruments):
                call_with_context(inst.after_pass, ctx, record, graph)
        for inst in instruments:
            call_with_context(inst.after_pipeline, ctx, graph)
        return graph

    @staticmethod
    def _run_one(pass_: Pass, graph: Graph, record: PassRecord, ctx: PassContext) -> Graph:
        try:
            result = pass_(graph, ctx)
        except SlimgraphError as exc:
            raise PassFailedError(str(exc), pass_name=record.name, index=record.index) from exc
        if not isinstance(result, Graph):
            raise PassFailedError(
                f"returned {type(result).__name__}, not a Graph", pass_name=record.name, index=record.index
            )
        return result


@dataclass
class PipelineReport:
    """Per-pass records of a run; ``str(report)`` is a text table of what was measured."""

    pipeline: str
    records: list[PassRecord]

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds or 0.0 for r in self.records)

    def __str__(self) -> str:
        has_stats = any(r.after is not None for r in self.records)
        has_time = any(r.seconds is not None for r in self.records)
        has_error = any(r.max_error is not None for r in self.records)
        header = ["#", "pass"]
        if has_stats:
            header += ["nodes", "regions", "params", "weight bytes", "FLOPs"]
        if has_time:
            header.append("ms")
        if has_error:
            header.append("max |err|")
        rows = [header]
        if has_stats and self.records and self.records[0].before is not None:
            rows.append(["0", "(input)"] + _stat_cells(self.records[0].before, None) + [""] * (has_time + has_error))
        for r in self.records:
            row = [str(r.index), r.text]
            if has_stats:
                row += _stat_cells(r.after, r.before)
            if has_time:
                row.append(f"{r.seconds * 1e3:.1f}" if r.seconds is not None else "")
            if has_error:
                row.append(f"{r.max_error:.2g}" if r.max_error is not None else "")
            rows.append(row)
        if has_time:
            rows.append(
                ["", "total"] + [""] * (len(_STAT_COLUMNS) * has_stats) + [f"{self.total_seconds * 1e3:.1f}"] + [""] * has_error
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)


_STAT_COLUMNS = ("nodes", "regions", "parameters", "weight_bytes", "flops")


def _si(n: int) -> str:
    """A count with an SI suffix and three significant digits: 8.22G, 41.5M, 980."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _stat_cells(after: GraphStats | None, before: GraphStats | None) -> list[str]:
    """Each statistic after the pass, with its change in parentheses when it changed."""
    if after is None:
        return [""] * len(_STAT_COLUMNS)
    cells = []
    for field in _STAT_COLUMNS:
        show = _si if field == "flops" else str
        now = getattr(after, field)
        text = show(now)
        if before is not None and getattr(before, field) != now:
            delta = now - getattr(before, field)
            text += f" ({'+' if delta > 0 else '-'}{show(abs(delta))})"
        cells.append(text)
    return cells


def run_pipeline(
    graph: Graph,
    text: str,
    *,
    dump_dir: str | os.PathLike | None = None,
    stats: bool = False,
    verify: bool = True,
    sample_inputs: Any = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    ctx: PassContext | None = None,
) -> tuple[Graph, PipelineReport]:
    """Run pipeline ``text`` on ``graph`` with context ``ctx``; returns the new graph and a report.

    Passes are always timed. ``verify`` checks the graph after every pass;
    ``stats`` records nodes/parameters/bytes/FLOPs per pass; ``dump_dir``
    writes the IR after every pass; ``sample_inputs`` (arrays, a mapping, or
    ``"random"``) turns on the numerics check against the input graph.
    """
    if not isinstance(graph, Graph):
        raise PassError(f"graph: passes run on a slimgraph Graph, got a {type(graph).__name__}")
    instruments: list[Instrument] = []
    if verify:
        instruments.append(VerifyInstrument())
    if sample_inputs is not None:
        random = isinstance(sample_inputs, str) and sample_inputs == "random"
        instruments.append(NumericsInstrument(None if random else sample_inputs, rtol, atol))
    if dump_dir is not None:
        instruments.append(DumpInstrument(dump_dir))
    if stats:
        instruments.append(StatsInstrument())
    instruments.append(TimingInstrument())
    manager = PassManager(text, instruments)
    result = manager.run(graph, ctx)
    return result, PipelineReport(manager.pipeline, manager.records)

"""Running the ledger: the pipeline pass by pass (or group by group), each intermediate
model compiled (cached by graph content), benchmarked and evaluated.

Example::

    >>> from slimgraph.demo import demo_model, demo_inputs
    >>> book = ledger(demo_model(), demo_inputs(batch=2), "fold-constants;cse,dce", runs=3, warmup=1)
    >>> [row.step for row in book.rows]
    ['(input)', 'fold-constants', 'cse,dce']
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from slimgraph.analysis.size_report import SizeReport, size_report
from slimgraph.driver import bind_shapes, import_model
from slimgraph.errors import SlimgraphError
from slimgraph.ir.graph import Graph
from slimgraph.ir.interpreter import random_inputs
from slimgraph.ir.printer import collect_payloads, print_graph
from slimgraph.ledger.data import EvalSet, LedgerError, as_batches
from slimgraph.ledger.report import Ledger, LedgerRow
from slimgraph.metrics import top1_accuracy
from slimgraph.passes.context import PassContext
from slimgraph.passes.manager import PassManager, TimingInstrument, VerifyInstrument
from slimgraph.passes.pipeline import format_pipeline, parse_pipeline
from slimgraph.passes.registry import Pass
from slimgraph.analysis.stats import graph_stats

#: Least warm-up time before a row is timed (``CompiledModel.benchmark`` caps the calls it takes).
WARMUP_S = 1.0

Metric = Callable[[np.ndarray, np.ndarray], float]


def ledger(
    model: Any,
    example_inputs: Sequence[Any] | None,
    pipeline: str,
    target: str = "llvm",
    eval_data: Any = None,
    metric: Metric | None = None,
    *,
    calibration_data: Any = None,
    train_data: Any = None,
    runs: int = 30,
    warmup: int = 5,
    max_metric_drop: float = 1.0,
    slower_tolerance: float = 0.05,
    progress: bool = False,
    weights: str = "auto",
) -> Ledger:
    """Run ``pipeline`` over ``model`` and measure the compiled model after every step.

    ``model`` is anything :func:`slimgraph.compile` takes. A step is one pass;
    separate groups with ``;`` to measure after each group instead
    (``"fold-constants,cse;prune{ratio=0.5};fuse"``). The compiled model has
    the shapes of ``example_inputs`` (default: seeded random inputs with
    symbolic dims 1), and is timed with ``CompiledModel.benchmark(runs, warmup)``.

    ``eval_data`` is inputs (an array, or a list of arrays) or ``(inputs,
    labels)``: every row then gets top-1 agreement and max/mean output error
    against the input model, and with labels ``metric(outputs, labels)``
    (default: top-1 accuracy in percent). Passes that calibrate (``quantize``)
    get ``calibration_data`` (arrays or a list of batches; default: the
    evaluation inputs, else the example inputs) unless their text names a table;
    ``finetune`` steps train on ``train_data`` (``(x, y)`` or inputs) when given,
    else they distill on the calibration inputs.
    Warnings flag steps slower by more than ``slower_tolerance`` (and the
    noise), or costing more than ``max_metric_drop`` points. ``weights`` is how each compiled
    model holds compressed weights (``weights=`` of :func:`slimgraph.compile`).
    """
    started = time.perf_counter()
    graph = import_model(model, example_inputs)
    if example_inputs is None:
        example_inputs = random_inputs(graph, dim=1)
    examples = tuple(np.asarray(x) for x in example_inputs)
    bindings = bind_shapes(graph, examples, None)
    batch = examples[0].shape[0] if examples and examples[0].ndim else 1
    evalset = EvalSet.of(eval_data) if eval_data is not None else None
    calibration = as_batches(calibration_data if calibration_data is not None else evalset, batch) or [examples]
    steps = _steps(pipeline)
    # a finetune step trains on train_data when given, else distills on the calibration batches
    ctx = PassContext(calibration_data=calibration, evaluation_data=eval_data,
                      options={"train_data": train_data} if train_data is not None else {})
    bench = _Bench(target, bindings, examples, evalset, metric, batch, runs, warmup, weights)

    bar = _bar(progress, len(steps) + 1, graph.name)
    rows = [bench.row(0, "(input)", graph, 0.0)]
    _advance(bar, "(input)")
    for index, (text, passes) in enumerate(steps, start=1):
        manager = PassManager(passes, [VerifyInstrument(), TimingInstrument()])
        graph = manager.run(graph, ctx)
        rows.append(bench.row(index, text, graph, sum(r.seconds or 0.0 for r in manager.records)))
        _advance(bar, text)
    if bar is not None:
        bar.close()
    return Ledger(
        graph.name, target, pipeline, rows,
        metric_name=getattr(metric, "__name__", "metric") if metric is not None else "accuracy",
        max_metric_drop=max_metric_drop, slower_tolerance=slower_tolerance,
        seconds=time.perf_counter() - started,
    )


def _steps(pipeline: str) -> list[tuple[str, list[Pass]]]:
    """(label, passes) per row: one per pass, or one per ``;``-separated group."""
    groups = pipeline.split(";") if ";" in pipeline else None
    if groups is None:
        passes = parse_pipeline(pipeline)
        return [(p.pipeline_text(), [p]) for p in passes]
    steps = []
    for number, group in enumerate(groups, start=1):
        passes = parse_pipeline(group)
        if not passes:
            raise LedgerError(f"group {number} of pipeline {pipeline!r} is empty")
        steps.append((format_pipeline(passes), passes))
    return steps


@dataclass(frozen=True)
class _Measured:
    median_ms: float
    p90_ms: float
    runs: int
    outputs: np.ndarray | None
    compile_seconds: float
    artifact_bytes: int
    resident_bytes: int


class _Bench:
    """Compiles, times and evaluates graphs, once per distinct graph."""

    def __init__(self, target, bindings, examples, evalset, metric, batch, runs, warmup, weights):
        self.target = target
        self.weights = weights
        self.bindings = bindings
        self.examples = examples
        self.evalset = evalset
        self.metric = metric or top1_accuracy
        self.batch = batch
        self.runs = runs
        self.warmup = warmup
        self.cache: dict[str, _Measured] = {}
        self.reference: np.ndarray | None = None

    def row(self, index: int, step: str, graph: Graph, pass_seconds: float) -> LedgerRow:
        key = graph_key(graph, self.target, self.bindings)
        cached = key in self.cache
        if not cached:
            try:
                self.cache[key] = self._measure(graph)
            except SlimgraphError as exc:
                raise LedgerError(f"ledger row {index} ({step}): {exc}") from exc
        m = self.cache[key]
        if self.reference is None:
            self.reference = m.outputs
        stats = graph_stats(graph)
        sizes = size_report(graph)
        quality = self._quality(m.outputs)
        return LedgerRow(
            index, step, stats.nodes, sizes.parameters, sizes.weight_bytes, encodings(sizes), stats.flops,
            m.median_ms, m.p90_ms, m.runs, *quality,
            cached=cached, pass_seconds=pass_seconds, compile_seconds=0.0 if cached else m.compile_seconds,
            artifact_bytes=m.artifact_bytes, resident_bytes=m.resident_bytes,
        )

    def _measure(self, graph: Graph) -> _Measured:
        from slimgraph.backends.tvm import build

        start = time.perf_counter()
        compiled = build(graph, self.target, self.bindings, weights=self.weights)
        seconds = time.perf_counter() - start
        # at least WARMUP_S of warm-up: a sub-millisecond model's calls just after an import or pass
        # (other libraries' threads still spinning after torch.export or a pass) ran up to 2x slow
        timing = compiled.benchmark(*self.examples, warmup=self.warmup, warmup_s=WARMUP_S, runs=self.runs,
                                    kernel_repeat=1)
        outputs = self.evalset.predict(compiled, self.batch) if self.evalset is not None else None
        artifact, resident = saved_sizes(compiled)
        return _Measured(timing.median_ms, timing.p90_ms, timing.runs, outputs, seconds, artifact, resident)

    def _quality(self, outputs: np.ndarray | None) -> tuple[float | None, float | None, float | None, float | None]:
        """(metric, agreement %, max error, mean error) of ``outputs`` against labels and the float model."""
        if outputs is None:
            return None, None, None, None
        labels = self.evalset.labels
        metric = float(self.metric(outputs, labels)) if labels is not None else None
        ref = self.reference
        diff = np.abs(outputs.astype(np.float64) - ref.astype(np.float64))
        agreement = top1_accuracy(outputs, ref)
        return metric, agreement, float(diff.max(initial=0.0)), float(diff.mean())


def saved_sizes(compiled) -> tuple[int, int]:
    """(bytes of the weights file in ``compiled``'s saved folder, bytes of the weights that
    folder holds in memory once loaded back): what ships and what stays resident."""
    import tempfile
    from pathlib import Path

    from slimgraph.backends.tvm import load_compiled

    with tempfile.TemporaryDirectory(prefix="slimgraph-ledger-") as tmp:
        folder = compiled.save(Path(tmp) / "model")
        return (folder / "params.npz").stat().st_size, load_compiled(folder).param_bytes


def graph_key(graph: Graph, target: str, bindings: dict[str, int]) -> str:
    """A hash of everything the compiled model depends on: the printed graph, the
    payloads it prints by reference, the target and the shape bindings."""
    digest = hashlib.sha256(f"{target}\n{sorted(bindings.items())}\n".encode())
    digest.update(print_graph(graph).encode())
    for name, array in sorted(collect_payloads(graph).items()):
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def encodings(sizes: SizeReport) -> dict[str, int]:
    """Stored weight bytes per encoding (``{"dense f32": 4096, "kmeans 4-bit": 1088}``)."""
    out: dict[str, int] = {}
    for t in sizes.tensors:
        kind = t.encoding.split(",")[0]  # drop per-tensor detail (zeros share, centroid count)
        out[kind] = out.get(kind, 0) + t.bytes
    return out


def _bar(progress: bool, total: int, name: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"ledger @{name}", unit="step", leave=True)


def _advance(bar, step: str) -> None:
    if bar is not None:
        bar.set_postfix_str(step)
        bar.update(1)

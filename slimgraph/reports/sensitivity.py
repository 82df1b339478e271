"""Per-layer pruning sensitivity: how much each prunable layer's pruning alone costs.

For each prunable layer (a channel group for ``method="channel"``, a weight
for ``method="magnitude"``) and each ratio, the graph is pruned at that layer
only and evaluated on ``data``: with ``labels``, the drop in top-1 accuracy
(points); without, the share of samples whose top-1 class changed from the
unpruned graph's (output disagreement, points). The table suggests per-layer
ratios for a tolerated drop, as ``overrides`` for the ``prune`` pass.

Example::

    >>> table = sensitivity(graph, x_test, labels=y_test)            # doctest: +SKIP
    >>> print(table)                                                 # doctest: +SKIP
    >>> Prune(method="channel", ratio=0, overrides=table.suggest(1.0))(graph)   # doctest: +SKIP
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from slimgraph.errors import SlimgraphError
from slimgraph.ir.graph import Graph
from slimgraph.metrics import top1_accuracy
from slimgraph.passes.prune import Prune, check_fraction, prunable_groups, weight_layers

Runner = Callable[[Graph, Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class SensitivityRow:
    """One layer: its weight names, channel (or element) count and the drop at each ratio."""

    layer: str
    names: tuple[str, ...]
    size: int
    drops: tuple[float, ...]


@dataclass(frozen=True)
class SensitivityTable:
    """Drops (points) per layer and ratio; ``baseline`` is the unpruned score."""

    method: str
    metric: str
    ratios: tuple[float, ...]
    baseline: float
    rows: tuple[SensitivityRow, ...]

    def suggest(self, max_drop: float) -> tuple[str, ...]:
        """``pattern:ratio`` overrides: per layer, the largest ratio whose drop is at most ``max_drop``."""
        out = []
        for row in self.rows:
            ok = [r for r, d in zip(self.ratios, row.drops) if d <= max_drop]
            out.append(f"{glob.escape(row.names[0])}:{max(ok) if ok else 0.0}")
        return tuple(out)

    def __str__(self) -> str:
        head = " | ".join(f"{r:g}" for r in self.ratios)
        lines = [
            f"{self.method} pruning sensitivity: drop in {self.metric} (points; baseline {self.baseline:.2f})",
            "",
            f"| layer | size | {head} |",
            "| --- | ---: |" + " ---: |" * len(self.ratios),
        ]
        for row in self.rows:
            lines.append(f"| {row.layer} | {row.size} | " + " | ".join(f"{d:.2f}" for d in row.drops) + " |")
        return "\n".join(lines)


def _interpret(graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    return graph.run(*inputs)[0]


def sensitivity(
    graph: Graph,
    data: np.ndarray | Sequence[np.ndarray],
    *,
    labels: np.ndarray | None = None,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    method: str = "channel",
    criterion: str = "l1",
    run: Runner = _interpret,
) -> SensitivityTable:
    """Prune each prunable layer of ``graph`` alone at each ratio and measure the drop on ``data``.

    ``data`` is the input array (or a sequence, one per graph input);
    ``labels`` the class of each sample (top-1 accuracy), else agreement with
    the unpruned graph's top-1 is measured. ``run(graph, inputs)`` evaluates a
    graph (default: the reference interpreter; pass a compiled runner for speed).
    """

    if method not in ("channel", "magnitude"):
        raise SlimgraphError(f"sensitivity: unknown method {method!r}; valid: channel, magnitude")
    for r in ratios:
        check_fraction(r, "prune", "ratio" if method == "channel" else "sparsity")
    inputs = [data] if isinstance(data, np.ndarray) else list(data)
    reference = np.asarray(run(graph, inputs))
    target = reference if labels is None else np.asarray(labels)
    if labels is not None and target.shape != reference.shape[:-1]:
        raise SlimgraphError(f"sensitivity: {target.shape[0]} labels for {reference.shape[0]} samples")

    def score(g: Graph) -> float:
        return top1_accuracy(np.asarray(run(g, inputs)), target)

    baseline = score(graph)
    if method == "channel":
        layers = [(tuple(g.names), g.size) for g in prunable_groups(graph)[1]]
    else:
        layers = [((w.name,), w.type.numel()) for w in {id(w): w for _, w in weight_layers(graph)}.values()]
    rows = []
    for names, size in layers:
        drops = []
        for r in ratios:
            override = (f"{glob.escape(names[0])}:{r}",)
            if method == "channel":
                pruned = Prune(method="channel", ratio=0.0, criterion=criterion, overrides=override)(graph)
            else:
                pruned = Prune(method="magnitude", sparsity=0.0, overrides=override)(graph)
            drops.append(baseline - score(pruned))
        rows.append(SensitivityRow(" + ".join(names), names, size, tuple(drops)))
    metric = "top-1 accuracy" if labels is not None else "top-1 agreement"
    return SensitivityTable(method, metric, tuple(ratios), baseline, tuple(rows))

"""Depth variants: a model with its least useful residual blocks skipped.

Narrowing in depth is the other half of narrowing in width, and on deep
networks the cheaper one: a skipped block costs no kernel at all. A variant
at ``depth`` keeps ``round(depth * n)`` of the ``n`` residual blocks
(:func:`~slimgraph.analysis.residual.residual_blocks`) and skips the rest,
chosen by :func:`depth_sensitivity` (the blocks whose skipping alone
costs least). Downstream batch norms then see
other inputs than in training, so their statistics are measured again on
sample inputs when given; fine-tuning (distillation from the full depth, the
variant's ``origin``) may follow.

Example::

    >>> table = depth_sensitivity(graph, x_calib)                     # doctest: +SKIP
    >>> table.least_sensitive(2)                                      # doctest: +SKIP
    ('add_3', 'add_5')
    >>> half = depth_variant(graph, 0.5, table, samples=[x_calib])    # doctest: +SKIP
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from slimgraph.analysis.residual import residual_blocks
from slimgraph.errors import SlimgraphError
from slimgraph.ir.graph import Graph
from slimgraph.metrics import top1_accuracy
from slimgraph.passes import PassContext, ReestimateBatchNorms, SkipBlocks


@dataclass(frozen=True)
class DepthSensitivity:
    """The drop (points) when each residual block alone is skipped; ``baseline`` is the full depth's
    score; ``layers`` names the module of each block's branch."""

    metric: str
    baseline: float
    drops: dict[str, float]
    layers: dict[str, str]

    def least_sensitive(self, count: int) -> tuple[str, ...]:
        """The ``count`` blocks whose skipping costs least (ties: the later block first, as the
        later blocks of a residual stage refine what the earlier ones computed)."""
        order = sorted(self.drops, key=lambda name: (self.drops[name], -list(self.drops).index(name)))
        return tuple(order[:count])

    def __str__(self) -> str:
        lines = [f"depth sensitivity: drop in {self.metric} (points; baseline {self.baseline:.2f})", "",
                 "| block | branch | drop |", "| --- | --- | ---: |"]
        lines += [f"| %{name} | {self.layers[name]} | {drop:.2f} |" for name, drop in self.drops.items()]
        return "\n".join(lines)


def depth_sensitivity(
    graph: Graph, data: np.ndarray | Sequence[np.ndarray], *, labels: np.ndarray | None = None,
    run: Callable[[Graph, Sequence[np.ndarray]], np.ndarray] = lambda g, inputs: g.run(*inputs)[0],
) -> DepthSensitivity:
    """Skip each residual block of ``graph`` alone (the ``skip-blocks`` pass) and measure the drop on
    ``data`` (an array, or one per input): in top-1 accuracy with ``labels``, else in top-1 agreement
    with the full graph. ``run(graph, inputs)`` evaluates a graph (default: the reference interpreter).
    """
    blocks = residual_blocks(graph)
    if not blocks:
        raise SlimgraphError(f"depth sensitivity: @{graph.name} has no residual blocks (adds x + f(x)) to skip")
    inputs = [data] if isinstance(data, np.ndarray) else list(data)
    reference = np.asarray(run(graph, inputs))
    target = reference if labels is None else np.asarray(labels)
    baseline = top1_accuracy(reference, target)
    drops = {b.name: baseline - top1_accuracy(np.asarray(run(SkipBlocks(blocks=(glob.escape(b.name),))(graph), inputs)),
                                              target)
             for b in blocks}
    metric = "top-1 accuracy" if labels is not None else "top-1 agreement"
    return DepthSensitivity(metric, baseline, drops, {b.name: b.branch for b in blocks})


def blocks_to_skip(depth: float, table: DepthSensitivity) -> tuple[str, ...]:
    """The blocks a variant at ``depth`` (the fraction of residual blocks kept) skips.

    Example::

        >>> t = DepthSensitivity("top-1 agreement", 100.0, {"a": 5.0, "b": 0.5, "c": 1.0}, {})
        >>> blocks_to_skip(0.34, t)
        ('b', 'c')
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0.0 < depth <= 1.0:
        raise SlimgraphError(f"depth={depth!r}: must be a fraction of the residual blocks in (0, 1]")
    count = len(table.drops)
    return table.least_sensitive(count - math.floor(depth * count + 0.5))  # halves round up: keep more


def depth_variant(graph: Graph, depth: float, table: DepthSensitivity, samples: Sequence[Any] | None = None) -> Graph:
    """``graph`` with the blocks :func:`blocks_to_skip` names skipped, its batch norms re-estimated
    on ``samples`` (input batches) when given. Its ``origin`` is the graph's (or the graph)."""
    skipped = blocks_to_skip(depth, table)
    if not skipped:
        return graph
    out = SkipBlocks(blocks=tuple(glob.escape(name) for name in skipped))(graph).verify()
    return ReestimateBatchNorms()(out, PassContext(calibration_data=samples)) if samples is not None else out

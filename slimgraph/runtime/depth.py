"""Depth variants: a model with its least useful residual blocks skipped.

Narrowing in depth is the other half of narrowing in width, and on deep
networks the cheaper one: a skipped block costs no kernel at all. A variant
at ``depth`` keeps ``round(depth * n)`` of the ``n`` residual blocks
(:func:`~slimgraph.analysis.residual.residual_blocks`) and skips the rest,
chosen by :func:`~slimgraph.analysis.sensitivity.depth_sensitivity` (the
blocks whose skipping alone costs least). Downstream batch norms then see
other inputs than in training, so their statistics are measured again on
sample inputs when given; fine-tuning (distillation from the full depth, the
variant's ``origin``) may follow.

Example::

    >>> from slimgraph.analysis import depth_sensitivity             # doctest: +SKIP
    >>> table = depth_sensitivity(graph, x_calib)                     # doctest: +SKIP
    >>> half = depth_variant(graph, 0.5, table, samples=[x_calib])    # doctest: +SKIP
"""

from __future__ import annotations

import glob
import math
from typing import Any, Sequence

from slimgraph.analysis.sensitivity import DepthSensitivity
from slimgraph.errors import SlimgraphError
from slimgraph.ir.graph import Graph
from slimgraph.runtime.calibration import reestimate_batch_norms


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
    from slimgraph.passes.skip_blocks import SkipBlocks

    skipped = blocks_to_skip(depth, table)
    if not skipped:
        return graph
    out = SkipBlocks(blocks=tuple(glob.escape(name) for name in skipped))(graph).verify()
    return reestimate_batch_norms(out, samples) if samples is not None else out

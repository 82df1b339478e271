"""``reestimate-batch-norms``: batch-norm statistics measured again on sample inputs.

Structured pruning leaves stale statistics behind: a batch norm after a
layer whose input channels were removed still normalizes with the mean and
variance recorded in training, for inputs it no longer gets, and every
layer after it sees activations on the wrong scale. Measuring them again on
a few hundred sample inputs (no labels, no training) recovers most of the
accuracy the pruning lost.

The pass reads its sample inputs from the run's context
(``PassContext.calibration_data``): a list of batches, each one array
(one-input graphs), a tuple or list of arrays, or a mapping from input name
to array; torch tensors are accepted.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> from slimgraph.passes import PassContext
    >>> g = Graph(); x = g.add_input("x", TensorType("f32", ("N", 1)))
    >>> one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    >>> g.set_outputs([g.call("batch_norm", x, g.const(one), g.const(zero), g.const(zero), g.const(one))])
    >>> ctx = PassContext(calibration_data=[np.array([[1.0], [3.0]], np.float32)])
    >>> bn = ReestimateBatchNorms()(g, ctx).nodes[-1]
    >>> bn.inputs[3].const_value.tolist(), bn.inputs[4].const_value.tolist()
    ([2.0], [1.0])
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from slimgraph.errors import PassError
from slimgraph.ir.graph import Graph, Value
from slimgraph.passes.calibrate import CalibrationTable, batch_feeds
from slimgraph.passes.context import PassContext
from slimgraph.passes.registry import Pass, register_pass


@register_pass("reestimate-batch-norms")
class ReestimateBatchNorms(Pass):
    """Measure every batch norm's mean and variance again on the context's calibration batches."""

    uses_calibration = True

    def apply(self, graph: Graph, ctx: PassContext) -> None:
        """Batch norms are measured in graph order, each after the ones before it are updated
        (one pass over the batches per batch norm), so that each sees the inputs it will get."""
        batches = ctx.calibration_data
        if batches is None or isinstance(batches, CalibrationTable):
            raise PassError("reestimate-batch-norms needs input batches as the context's calibration_data "
                            "(PassContext(calibration_data=[batch, ...])); a CalibrationTable holds no activations")
        batches = list(batches)  # read once per batch norm
        if not batches:
            raise PassError("reestimate-batch-norms: calibration_data is empty; give at least one batch of inputs")
        for node in [n for n in graph.nodes if n.op == "batch_norm" and all(v.is_const for v in n.inputs[1:])]:
            (stats,) = channel_statistics(graph, [node.inputs[0]], batches)
            for value, array in ((node.inputs[3], stats.mean), (node.inputs[4], stats.var)):
                graph.set_const(value, array)


class ChannelStatistics:
    """Running per-channel (axis 1) mean and variance of arrays.

    Example::

        >>> s = ChannelStatistics(); s.update(np.array([[1.0, -2.0], [3.0, 2.0]])); s.mean.tolist(), s.var.tolist()
        ([2.0, 0.0], [1.0, 4.0])
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: np.ndarray | float = 0.0
        self._squares: np.ndarray | float = 0.0

    def update(self, array: np.ndarray) -> None:
        a = np.asarray(array, dtype=np.float64)
        axes = tuple(i for i in range(a.ndim) if i != 1)
        self._sum = self._sum + a.sum(axis=axes)
        self._squares = self._squares + (a * a).sum(axis=axes)
        self.count += a.size // a.shape[1]

    @property
    def mean(self) -> np.ndarray:
        return self._sum / self.count

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self._squares / self.count - self.mean**2, 0.0)


def channel_statistics(graph: Graph, values: Sequence[Value], batches: Iterable[Any]) -> list[ChannelStatistics]:
    """Per-channel statistics of ``values`` of ``graph`` (run by the reference interpreter) over ``batches``.

    Example::

        >>> from slimgraph.ir import Graph, TensorType
        >>> g = Graph(); x = g.add_input("x", TensorType("f32", ("N", 2))); g.set_outputs([x])
        >>> channel_statistics(g, [x], [np.ones((3, 2), np.float32)])[0].mean.tolist()
        [1.0, 1.0]
    """
    probe = graph.clone()
    probe.set_outputs([probe.value(v.name) for v in values])
    stats = [ChannelStatistics() for _ in values]
    for index, batch in enumerate(batches):
        for s, array in zip(stats, probe.run(batch_feeds(graph, batch, index))):
            s.update(array)
    return stats

"""The ``finetune`` pipeline step: :func:`~slimgraph.training.distill.finetune` as a pass.

``prune{method=channel,ratio=0.5},finetune{epochs=3,loss=kd}`` prunes and then
distills the pruned graph from the graph before pruning (its ``origin``). The
step trains on what the run's :class:`~slimgraph.passes.context.PassContext`
holds: ``options["train_data"]`` (``(x, y)`` or inputs; the ledger's
``train_data=``) when given, else its ``calibration_data``
(``slimgraph.compile(..., calibration_data=...)``, the ledger's calibration
batches: inputs without labels, which distillation needs no more than).

Example::

    >>> from slimgraph.passes import parse_pipeline
    >>> [p.pipeline_text() for p in parse_pipeline("finetune{epochs=2,loss=kd}")]
    ['finetune{epochs=2}']
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from slimgraph.errors import PassError
from slimgraph.ir.graph import Graph
from slimgraph.passes.context import PassContext
from slimgraph.passes.registry import Pass, option, register_pass


@register_pass("finetune")
class Finetune(Pass):
    """Fine-tune the graph on training data, distilling from its uncompressed origin by default."""

    epochs: int = option(3, "passes over the training data", minimum=1)
    loss: Literal["kd", "ce", "mse"] = option("kd", "kd (soft targets; + CE with labels), ce, or mse to the teacher")
    temperature: float = option(4.0, "softmax temperature of the soft targets", minimum=1e-6)
    alpha: float = option(0.5, "weight of KD against CE when labels are given", minimum=0.0, maximum=1.0)
    lr: float = option(1e-3, "Adam learning rate", minimum=1e-12)
    batch_size: int = option(64, "rows per step", minimum=1)
    seed: int = option(0, "seed of the shuffling and of torch")

    uses_calibration = True

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        from slimgraph.training.distill import finetune

        data = ctx.options.get("train_data", ctx.calibration_data)
        if data is None:
            raise PassError(
                "finetune needs training data: pass calibration_data to slimgraph.compile or the ledger (or its "
                "train_data), or run it with PassContext(calibration_data=...) or options={'train_data': (x, y)}"
            )
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return finetune(graph, data, progress=False, **options)

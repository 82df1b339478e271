"""``skip-blocks``: a shallower model, with chosen residual blocks ``x + f(x)`` reduced to ``x``.

The blocks are those :func:`slimgraph.analysis.residual.residual_blocks` finds
(identity-shortcut adds), named by their add's output value; ``blocks`` lists
names or glob patterns, each of which must match one. Every reader of a
skipped add reads its shortcut instead, and the branch is removed. Which
blocks to skip is chosen by measurement (:func:`slimgraph.runtime.depth.block_sensitivity`);
the result records its ``origin``, so fine-tuning distills from the full depth.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph(); x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> w = g.const(np.eye(4, dtype=np.float32), name="fc.weight")
    >>> g.set_outputs([g.call("add", x, g.call("relu", g.call("linear", x, w)), name="res")])
    >>> [n.op for n in SkipBlocks(blocks=("res",))(g).nodes]
    []
"""

from __future__ import annotations

import fnmatch

from slimgraph.analysis.residual import residual_blocks
from slimgraph.errors import PassError
from slimgraph.ir.graph import Graph
from slimgraph.passes.dce import DeadCodeElimination
from slimgraph.passes.registry import Pass, option, register_pass


@register_pass("skip-blocks")
class SkipBlocks(Pass):
    """Skip residual blocks: each named add x + f(x) outputs x, and f is removed."""

    compresses = True

    blocks: tuple[str, ...] = option((), "residual adds to skip: output names or glob patterns")

    def apply(self, graph: Graph) -> None:
        found = residual_blocks(graph)
        unused = [p for p in self.blocks if not any(fnmatch.fnmatchcase(b.name, p) for b in found)]
        if unused:
            listed = ", ".join(b.name for b in found) or "none"
            raise PassError(f"skip-blocks: {unused[0]!r} matches no residual block of @{graph.name}; blocks: {listed}")
        for block in found:
            if any(fnmatch.fnmatchcase(block.name, p) for p in self.blocks):
                add = graph.value(block.name).producer
                graph.replace_all_uses(add.output, add.inputs[block.shortcut_index])
        DeadCodeElimination().apply(graph)

"""Residual blocks: adds whose output is ``x + f(x)``, and the rewrite that skips them (output ``x``).

A residual add has two operands, one of which (the *shortcut* ``x``) is an
ancestor of the other (the *branch* ``f(x)``), with the shortcut's type. A
ResNet's identity blocks and a transformer's attention and MLP sublayers are
such adds; a block with a projection shortcut (``downsample(x) + f(x)``) is
not, since neither operand is computed from the other. Skipping a block
(the ``skip-blocks`` pass) makes every reader of the add read the shortcut
instead; the branch is then dead and removed. Blocks are named by their add's output value (stable
through clones and channel pruning); :attr:`ResidualBlock.layer` is the
module the add came from, for reports.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph(); x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> w = g.const(np.eye(4, dtype=np.float32), name="fc.weight")
    >>> g.set_outputs([g.call("add", x, g.call("relu", g.call("linear", x, w)), name="res")])
    >>> [str(b) for b in residual_blocks(g)]
    ['%res (res, 2 ops)']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from slimgraph.ir.graph import Graph, Node, Value

_LOC_LAYER = re.compile(r"\(([^()]*)\)\s*$")


@dataclass(frozen=True)
class ResidualBlock:
    """A residual add: its output's name, which operand is the shortcut, and the ops of its branch."""

    name: str
    shortcut_index: int
    layer: str
    branch_ops: int
    #: the module the branch's last op came from (a transformer block's attention or MLP)
    branch: str = ""

    def __str__(self) -> str:
        return f"%{self.name} ({self.layer}, {self.branch_ops} ops)"


def _layer(node: Node) -> str:
    """The torch module a node came from (its loc's ``(module)``), else its output's name."""
    match = _LOC_LAYER.search(node.loc or "")
    return match.group(1) if match else node.output.name


def residual_blocks(graph: Graph) -> list[ResidualBlock]:
    """The residual adds of ``graph``, in graph order (see the module docstring)."""
    blocks = []
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    for node in graph.nodes:
        if node.op != "add" or len(node.inputs) != 2 or any(v.is_const for v in node.inputs):
            continue
        for index in (0, 1):
            shortcut, branch = node.inputs[index], node.inputs[1 - index]
            if shortcut.type != node.output.type:
                continue
            between = _nodes_between(shortcut, branch, position)
            if between:
                blocks.append(ResidualBlock(node.output.name, index, _layer(node), len(between),
                                            _layer(branch.producer)))
                break
    return blocks


def _nodes_between(shortcut: Value, branch: Value, position: dict[int, int]) -> list[Node]:
    """The nodes on paths from ``shortcut`` to ``branch`` (empty when ``shortcut`` is not its ancestor)."""
    ancestors: dict[int, Node] = {}
    stack = [branch.producer] if branch.producer is not None else []
    while stack:  # without recursion: a deep network must not meet Python's recursion limit
        node = stack.pop()
        if id(node) not in ancestors:
            ancestors[id(node)] = node
            stack.extend(v.producer for v in node.inputs if v.producer is not None and v is not shortcut)
    between: set[int] = set()
    for node in sorted(ancestors.values(), key=lambda n: position[id(n)]):  # topological
        if any(v is shortcut or id(v.producer) in between for v in node.inputs):
            between.add(id(node))
    return [n for n in ancestors.values() if id(n) in between]

"""The pattern-rewrite API: op trees with wildcards, predicates and captures,
a rewrite callback, and one greedy driver applied to a fixed point.

Patterns match values:

- ``Any("x")`` matches any value and captures it as ``x``;
- ``Const("w", value=1.0, where=pred)`` matches a constant (all elements equal
  to ``value``, and/or ``pred(array)`` true);
- ``Pat("conv", Any("x"), Const("w"), name="c", attrs={"groups": 1},
  where=pred, one_use=True)`` matches a value produced by a ``conv`` (or any
  op of a tuple of names, or any op but ``const`` for ``"*"``) whose inputs
  match the sub-patterns. With no sub-patterns the inputs are not looked at. Attribute constraints are a
  value or a predicate on the value; ``where`` is a predicate on the node;
  ``one_use`` asks that the value has one reader and is not a graph output.

Every pattern also takes ``dtype`` (a name such as ``"f32"`` or a tuple of
names) and ``rank``. A name used twice must capture the same value. Ops
declared commutative match their two inputs in either order.

A rule pairs a root :class:`Pat` with a callback ``fn(m: Match)`` that builds
replacement values with ``m.graph`` (new nodes go just before the matched
node) and returns them (one per output of the matched node), or returns
None, before building anything, to decline. :func:`apply_rewrites` runs rules
over a graph in place until nothing matches, removing what they make dead.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> @rewrite(Pat("mul", Any("x"), Const(value=1.0)))
    ... def mul_one(m):
    ...     return m["x"] if m["x"].type == m.root.output.type else None
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (2,)))
    >>> g.set_outputs([g.call("relu", g.call("mul", g.const(np.float32(1)), x))])
    >>> apply_rewrites(g, [mul_one])
    1
    >>> [n.op for n in g.nodes]
    ['relu']
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.ir.registry import get_op
from slimgraph.ir.types import DType
from slimgraph.passes.errors import RewriteError

Captures = dict  # name -> Value, plus ("node", name) -> Node for Pat captures
Outputs = frozenset  # ids of the graph's output values, for one_use


class Pattern:
    """Base of all patterns: a capture name and type constraints."""

    def __init__(self, name: str | None, dtype: typing.Any, rank: int | None):
        self.name = name
        self.dtypes = None if dtype is None else {DType.of(d) for d in (dtype if isinstance(dtype, tuple) else (dtype,))}
        self.rank = rank

    def match(self, value: Value, captures: Captures, outputs: Outputs) -> Captures | None:
        """Match ``value``; returns the captures extended, or None."""
        if self.dtypes is not None and value.type.dtype not in self.dtypes:
            return None
        if self.rank is not None and value.type.rank != self.rank:
            return None
        if not self._match(value):
            return None
        if self.name is None:
            return captures
        bound = captures.get(self.name)
        if bound is not None:
            return captures if bound is value else None
        return {**captures, self.name: value}

    def _match(self, value: Value) -> bool:
        return True


class Any(Pattern):
    """A wildcard: any value (optionally ``where(value)``), captured as ``name``."""

    def __init__(
        self,
        name: str | None = None,
        *,
        dtype: typing.Any = None,
        rank: int | None = None,
        where: Callable[[Value], bool] | None = None,
    ):
        super().__init__(name, dtype, rank)
        self.where = where

    def _match(self, value: Value) -> bool:
        return self.where is None or bool(self.where(value))


class Const(Pattern):
    """A constant: ``value`` (every element equal to it) and ``where(array)`` must hold."""

    def __init__(
        self,
        name: str | None = None,
        *,
        value: float | int | bool | None = None,
        dtype: typing.Any = None,
        rank: int | None = None,
        where: Callable[[np.ndarray], bool] | None = None,
    ):
        super().__init__(name, dtype, rank)
        self.value = value
        self.where = where

    def _match(self, value: Value) -> bool:
        array = value.const_value
        if array is None:
            return False
        if self.value is not None and not (array.size and np.all(array == self.value)):
            return False
        return self.where is None or bool(self.where(array))


class Pat(Pattern):
    """An op node whose inputs match ``inputs`` (not looked at when none are given)."""

    def __init__(
        self,
        op: str | tuple[str, ...],
        *inputs: Pattern,
        name: str | None = None,
        attrs: dict | None = None,
        where: Callable[[Node], bool] | None = None,
        one_use: bool = False,
        output: int | None = None,
        dtype: typing.Any = None,
        rank: int | None = None,
    ):
        super().__init__(name, dtype, rank)
        self.ops = (op,) if isinstance(op, str) else tuple(op)
        for op_name in self.ops:
            if op_name != "*":
                get_op(op_name)  # an unknown op name is a bug in the pattern: say so now
        self.inputs = inputs
        self.attrs = dict(attrs or {})
        self.where = where
        self.one_use = one_use
        self.output = output

    def match(self, value: Value, captures: Captures, outputs: Outputs) -> Captures | None:
        node = value.producer
        if node is None or (self.output is not None and value.index != self.output):
            return None
        captures = super().match(value, captures, outputs)
        return None if captures is None else self._match_node(node, captures, outputs)

    def match_node(self, node: Node, graph: Graph) -> Captures | None:
        """Match ``node`` of ``graph`` as the root of a rule; returns the captures or None."""
        return self._match_node(node, {}, frozenset(id(v) for v in graph.outputs))

    def _match_node(self, node: Node, captures: Captures, outputs: Outputs) -> Captures | None:
        if node.op not in self.ops and not (self.ops == ("*",) and node.op != "const"):
            return None
        for key, want in self.attrs.items():
            have = node.attrs.get(key)
            if not (want(have) if callable(want) else have == want):
                return None
        if self.where is not None and not self.where(node):
            return None
        if self.one_use and any(len(v.users) != 1 or id(v) in outputs for v in node.outputs):
            return None
        if self.name is not None:
            captures = {**captures, ("node", self.name): node}
        if not self.inputs:
            return captures
        if len(node.inputs) != len(self.inputs):
            return None
        orders = [self.inputs]
        if len(self.inputs) == 2 and node.opdef.commutative:
            orders.append(self.inputs[::-1])
        for order in orders:
            result = _match_all(order, node.inputs, captures, outputs)
            if result is not None:
                return result
        return None


def _match_all(patterns: Sequence[Pattern], values: Sequence[Value], captures: Captures, outputs: Outputs):
    for pattern, value in zip(patterns, values):
        captures = pattern.match(value, captures, outputs)
        if captures is None:
            return None
    return captures


class Match:
    """What a rule matched: ``graph``, the ``root`` node, and the captures
    (``m["x"]`` is a Value, ``m.array("w")`` a constant's array, ``m.node("c")``
    the node a named Pat matched)."""

    def __init__(self, graph: Graph, root: Node, captures: Captures):
        self.graph = graph
        self.root = root
        self._captures = captures

    def __getitem__(self, name: str) -> Value:
        return self._captures[name]

    def __contains__(self, name: str) -> bool:
        return name in self._captures

    def node(self, name: str) -> Node:
        return self._captures[("node", name)]

    def array(self, name: str) -> np.ndarray:
        return self[name].const_value


RewriteFn = Callable[[Match], "Value | Sequence[Value] | None"]


@dataclass(frozen=True)
class RewriteRule:
    """A root pattern, a callback and a name (for messages)."""

    pattern: Pat
    fn: RewriteFn
    name: str


def rewrite(pattern: Pat, name: str | None = None) -> Callable[[RewriteFn], RewriteRule]:
    """Decorator: turn ``fn(m) -> values | None`` into a :class:`RewriteRule` for ``pattern``."""
    if not isinstance(pattern, Pat):
        raise TypeError("the root of a rewrite rule must be a Pat (an op pattern)")

    def decorate(fn: RewriteFn) -> RewriteRule:
        return RewriteRule(pattern, fn, name or fn.__name__)

    return decorate


def apply_rewrites(graph: Graph, rules: Sequence[RewriteRule], *, max_iterations: int = 32) -> int:
    """Apply ``rules`` to ``graph`` in place until none matches; returns the number of rewrites.

    Each sweep visits nodes in order and tries the rules in order; the first
    rule whose pattern matches and whose callback returns values wins. Nodes
    the rewrite leaves unused are removed. Raises RewriteError when a rule
    returns values of the wrong type, or when ``max_iterations`` sweeps all
    still rewrite something (rules that undo each other).
    """
    total = 0
    for _ in range(max_iterations):
        fired: list[str] = []
        removed: set[int] = set()
        for node in list(graph.nodes):
            if id(node) in removed:
                continue
            for rule in rules:
                captures = rule.pattern.match_node(node, graph)
                if captures is None:
                    continue
                start = graph.nodes.index(node)
                with graph.inserting_before(node):
                    result = rule.fn(Match(graph, node, captures))
                if result is None:
                    continue
                if _check_result(node, result, rule):
                    fired.append(rule.name)
                    created = graph.nodes[start : graph.nodes.index(node)]
                    removed |= replace_node(graph, node, result, fresh=created)
                    break
        total += len(fired)
        if not fired:
            return total
    raise RewriteError(
        f"rewrites did not reach a fixed point in {max_iterations} sweeps; "
        f"rules still firing: {', '.join(sorted(set(fired)))}"
    )


def _check_result(node: Node, result, rule: RewriteRule) -> bool:
    """Whether ``result`` replaces something; raises RewriteError when it cannot replace ``node``."""
    values = (result,) if isinstance(result, Value) else tuple(result)
    if len(values) != len(node.outputs):
        raise RewriteError(
            f"rule '{rule.name}' returned {len(values)} values for {node.describe()}, which has {len(node.outputs)}"
        )
    for old, new in zip(node.outputs, values):
        if new.type != old.type:
            raise RewriteError(
                f"rule '{rule.name}' replaced %{old.name}: {old.type} with %{new.name}: {new.type} at {node.describe()}"
            )
    return not all(new is old for new, old in zip(values, node.outputs))


def replace_node(
    graph: Graph, node: Node, result: Value | Sequence[Value], fresh: Sequence[Node] = ()
) -> set[int]:
    """Make every reader of ``node``'s outputs read ``result`` (one value per
    output) instead, then erase ``node`` and whatever that leaves unused.

    Names survive the replacement: a value made by one of the ``fresh`` nodes
    takes over the name of the value it replaces, and so does any value that
    replaces a graph output (unless it is a graph input or already an output).
    Returns the ids of the erased nodes.
    """
    values = (result,) if isinstance(result, Value) else tuple(result)
    outputs = {id(v) for v in graph.outputs}
    fresh_ids = {id(n) for n in fresh}
    renames = [
        (old.name, new)
        for old, new in zip(node.outputs, values)
        if new.producer is not None
        and id(new) not in outputs
        and (id(old) in outputs or id(new.producer) in fresh_ids)
    ]
    for old, new in zip(node.outputs, values):
        graph.replace_all_uses(old, new)
    removed = erase_dead(graph, node)
    for name, new in renames:
        if not graph.has_value(name):
            graph.rename(new, name)
    return removed


def erase_dead(graph: Graph, node: Node) -> set[int]:
    """Remove ``node`` if nothing reads it, then its producers that became unused; returns their ids."""
    removed: set[int] = set()
    outputs = {id(v) for v in graph.outputs}
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in removed or any(v.users or id(v) in outputs for v in n.outputs):
            continue
        stack.extend(v.producer for v in n.inputs if v.producer is not None)
        graph.remove_node(n)
        removed.add(id(n))
    return removed

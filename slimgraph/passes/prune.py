"""``prune``: unstructured magnitude pruning and structured channel pruning.

- ``method=magnitude``: zero the smallest-magnitude ``sparsity`` fraction of
  each conv/linear weight (``scope=layer``), of all of them pooled under
  one threshold (``scope=global``), or of each output channel (``scope=row``:
  every row keeps as many weights, which the sparse kernels run without
  padding). Shapes stay; the zeros are the saving.
- ``method=block``: the same with blocks of ``block`` = [output channels,
  inputs] elements (of the weight seen as [out, in], a conv's kernel
  positions flattened into the inputs) ranked by their L2 norm and zeroed
  whole: the TVM backend's sparse kernels skip a zero block at once.
- ``method=channel``: remove the ``ratio`` least important output channels of
  every prunable channel group (see :mod:`slimgraph.analysis.channels`), or
  of its attention heads when the group is split into heads: producers lose output channels, batch norms and per-channel constants lose
  entries, consumers lose input channels, depthwise convs follow their
  producer, residual-tied channels go as one group. Importance is the L1 or
  L2 norm of each channel's filter (summed over the group's producers after
  normalizing each by its mean), or ``|gamma|`` of the batch norm right after
  each producer (``bn-gamma``; a producer without one falls back to L2).

``skip`` lists weight names or glob patterns left alone; ``overrides``
(``pattern:value``) sets another sparsity or ratio for matching layers. A
pattern matches a weight name (``features.0.weight``) or its layer
(``features.0``); one that matches nothing is an error.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 8)))
    >>> w = g.const(np.arange(1, 33, dtype=np.float32).reshape(4, 8), name="fc.weight")
    >>> g.set_outputs([g.call("linear", x, w)])
    >>> pruned = Prune(sparsity=0.25)(g)
    >>> int((pruned.value("fc.weight").const_value == 0).sum())
    8
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Literal

import numpy as np

from slimgraph.analysis.channels import ChannelAnalysis, ChannelGroup, analyze_channels, rewrite_channels
from slimgraph.errors import PassError
from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.passes.errors import OptionValueError
from slimgraph.passes.registry import Pass, option, register_pass

#: Ops whose input 1 is a weight that pruning and weight sharing work on.
WEIGHT_OPS = ("conv", "linear", "conv_transpose")


def weight_layers(graph: Graph) -> list[tuple[Node, Value]]:
    """(node, weight) for every conv/linear whose weight is a float constant of rank >= 2."""
    return [
        (n, n.inputs[1])
        for n in graph.nodes
        if n.op in WEIGHT_OPS
        and len(n.inputs) > 1
        and n.inputs[1].is_const
        and n.inputs[1].type.dtype.is_float
        and n.inputs[1].type.rank >= 2
    ]


def matches(name: str, pattern: str) -> bool:
    """A weight name matches a glob pattern, or the pattern names its layer."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def parse_overrides(
    overrides: Iterable[str], pass_name: str, option_name: str = "overrides"
) -> list[tuple[str, float]]:
    """``["layer1.*:0.3", ...]`` -> ``[("layer1.*", 0.3), ...]``; OptionValueError for bad entries."""
    out = []
    for item in overrides:
        pattern, sep, value = item.rpartition(":")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not pattern or number is None:
            raise OptionValueError(
                f"bad entry {item!r} in option '{option_name}' of pass '{pass_name}': expected pattern:number",
                pass_name=pass_name,
                option=option_name,
            )
        out.append((pattern, number))
    return out


def check_fraction(value: float, pass_name: str, option_name: str) -> None:
    """OptionValueError unless ``0 <= value < 1``."""
    if not 0.0 <= value < 1.0:
        raise OptionValueError(
            f"bad value {value!r} for option '{option_name}' of pass '{pass_name}': must lie in [0, 1)",
            pass_name=pass_name,
            option=option_name,
        )


class LayerSelection:
    """Per-layer amounts from a default, a skip list and ``pattern:value`` overrides.

    :meth:`amount` gives the amount for a set of weight names (the last
    matching override wins; a skipped name gives 0); :meth:`check_used`
    raises PassError for a pattern that matched no name.
    """

    def __init__(
        self,
        pass_name: str,
        default: float,
        skip: Iterable[str],
        overrides: Iterable[str],
        check: Callable[[float], None] | None = None,
    ):
        self.pass_name = pass_name
        self.default = default
        self.skip = list(skip)
        self.overrides = parse_overrides(overrides, pass_name)
        for _, value in self.overrides:
            (check or (lambda v: check_fraction(v, pass_name, "overrides")))(value)
        self._used: set[str] = set()

    def amount(self, names: Iterable[str]) -> float:
        names = list(names)
        value = self.default
        for pattern, v in self.overrides:
            if any(matches(n, pattern) for n in names):
                self._used.add(pattern)
                value = v
        for pattern in self.skip:
            if any(matches(n, pattern) for n in names):
                self._used.add(pattern)
                value = 0.0
        return value

    def is_overridden(self, names: Iterable[str]) -> bool:
        names = list(names)
        return any(matches(n, p) for p, _ in self.overrides for n in names) or any(
            matches(n, p) for p in self.skip for n in names
        )

    def check_used(self, candidates: Iterable[str]) -> None:
        candidates = sorted(set(candidates))
        for option_name, patterns in (("skip", self.skip), ("overrides", [p for p, _ in self.overrides])):
            for pattern in patterns:
                if pattern not in self._used and not any(matches(n, pattern) for n in candidates):
                    shown = ", ".join(candidates[:8]) + (", ..." if len(candidates) > 8 else "")
                    raise PassError(
                        f"pass '{self.pass_name}': pattern {pattern!r} in option '{option_name}' matches no "
                        f"prunable weight; prunable weights: {shown or 'none'}"
                    )


@register_pass("prune")
class Prune(Pass):
    """Prune weights: unstructured magnitude pruning, or structured removal of output channels."""

    compresses = True

    method: Literal["magnitude", "block", "channel"] = option(
        "magnitude", "zero small weights, zero small blocks of weights, or remove whole channels")
    sparsity: float = option(0.5, "magnitude, block: fraction of weights set to zero, in [0, 1)")
    scope: Literal["layer", "global", "row"] = option(
        "layer", "magnitude, block: one threshold per layer, for all layers, or per output channel (balanced rows)")
    block: tuple[int, ...] = option((1, 16), "block: [output channels, inputs] of a block, zeroed together")
    ratio: float = option(0.3, "channel: fraction of each group's output channels removed, in [0, 1)")
    criterion: Literal["l1", "l2", "bn-gamma"] = option("l1", "channel: how a channel's importance is measured")
    skip: tuple[str, ...] = option((), "weight names or glob patterns left unpruned")
    overrides: tuple[str, ...] = option((), "pattern:value entries: another sparsity (or ratio) for matching layers")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self.sparsity, self.name, "sparsity")
        check_fraction(self.ratio, self.name, "ratio")
        if len(self.block) != 2 or min(self.block) < 1:
            raise OptionValueError(
                f"bad value {list(self.block)!r} for option 'block' of pass '{self.name}': give [rows, columns], "
                "both at least 1", pass_name=self.name, option="block")
        self.selection()  # checks the overrides' syntax and values now, not at apply time

    def selection(self) -> LayerSelection:
        default = self.ratio if self.method == "channel" else self.sparsity
        return LayerSelection(self.name, default, self.skip, self.overrides)

    def apply(self, graph: Graph) -> Graph | None:
        if self.method in ("magnitude", "block"):
            return self._magnitude(graph)
        analysis = analyze_channels(graph)
        selection = self.selection()
        keep = {
            group.id: channel_keep_mask(group, selection.amount(group.names), self.criterion)
            for group in analysis.groups
            if group.prunable
        }
        selection.check_used(n for g in analysis.groups if g.prunable for n in g.names)
        keep = {k: m for k, m in keep.items() if not m.all()}
        return rewrite_channels(graph, analysis, keep) if keep else None

    def _magnitude(self, graph: Graph) -> None:
        selection = self.selection()
        layers = weight_layers(graph)
        weights = list({id(w): w for _, w in layers}.values())
        axes = {id(w): 1 if n.op == "linear" and not n.attrs["trans_b"] else 0 for n, w in layers}
        # what is ranked: each weight's magnitude, or each block's L2 norm (one score per block)
        scores = {w.name: np.abs(w.const_value) if self.method == "magnitude"
                  else block_norms(w.const_value, axes[id(w)], self.block) for w in weights}
        amounts = {w.name: selection.amount([w.name]) for w in weights}
        selection.check_used(amounts)
        pooled = [w for w in weights if self.scope == "global" and not selection.is_overridden([w.name])]
        thresholds = {w.name: _threshold([scores[w.name]], amounts[w.name])
                      for w in weights if w not in pooled and self.scope != "row"}
        if pooled:
            shared = _threshold([scores[w.name] for w in pooled], self.sparsity)
            thresholds.update({w.name: shared for w in pooled})
        for w in weights:
            if self.scope == "row":
                drop = _row_drop(scores[w.name], axes[id(w)] if self.method == "magnitude" else 0, amounts[w.name])
            elif thresholds[w.name] >= 0:
                drop = scores[w.name] <= thresholds[w.name]
            else:
                continue
            array = w.const_value
            if self.method == "block":
                drop = expand_blocks(drop, array.shape, axes[id(w)], self.block)
            graph.set_const(w, np.where(drop, np.zeros((), array.dtype), array))


def _row_drop(scores: np.ndarray, out_axis: int, sparsity: float) -> np.ndarray:
    """Mask of the ``sparsity`` lowest scores of each output channel (the same count in every
    row, ties broken by position): balanced rows, which a sparse kernel runs without padding."""
    moved = np.moveaxis(scores, out_axis, 0)
    rows = moved.reshape(moved.shape[0], -1)
    count = int(np.floor(sparsity * rows.shape[1] + 1e-9))
    drop = np.zeros(rows.shape, bool)
    np.put_along_axis(drop, np.argsort(rows, axis=1, kind="stable")[:, :count], True, axis=1)
    return np.moveaxis(drop.reshape(moved.shape), 0, out_axis)


def block_norms(w: np.ndarray, out_axis: int, block: tuple[int, ...]) -> np.ndarray:
    """The L2 norm of each ``block`` (output channels x inputs) of ``w`` seen as [out, in]
    (the output-channel axis first, the rest flattened); edge blocks are padded with zeros."""
    rows, cols = block
    flat = np.moveaxis(w.astype(np.float64), out_axis, 0).reshape(w.shape[out_axis], -1)
    padded = np.zeros((-(-flat.shape[0] // rows) * rows, -(-flat.shape[1] // cols) * cols))
    padded[: flat.shape[0], : flat.shape[1]] = flat
    blocks = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    return np.sqrt((blocks**2).sum(axis=(1, 3)))


def expand_blocks(mask: np.ndarray, shape: tuple, out_axis: int, block: tuple[int, ...]) -> np.ndarray:
    """A per-block mask (as :func:`block_norms` lays blocks out) as a mask of the weight's elements."""
    moved = (shape[out_axis], *(d for i, d in enumerate(shape) if i != out_axis))
    full = np.repeat(np.repeat(mask, block[0], axis=0), block[1], axis=1)
    flat = full[: moved[0], : int(np.prod(moved[1:]))]
    return np.moveaxis(flat.reshape(moved), 0, out_axis)


def _threshold(arrays: list[np.ndarray], sparsity: float) -> float:
    """The magnitude at or below which ``sparsity`` of the elements lie (-1 for none)."""
    values = np.sort(np.concatenate([np.abs(a).ravel() for a in arrays]))
    count = int(np.floor(sparsity * values.size + 1e-9))
    return float(values[count - 1]) if count > 0 else -1.0


def channel_importance(group: ChannelGroup, criterion: str) -> np.ndarray:
    """Importance of each channel of ``group``: per producer, normalized by its mean, summed."""
    total = np.zeros(group.size)
    for producer in group.producers:
        score = None
        if criterion == "bn-gamma":
            users = producer.output.users
            if len(users) == 1 and users[0].op == "batch_norm" and users[0].inputs[1].is_const:
                score = np.abs(users[0].inputs[1].const_value.astype(np.float64))
        if score is None:
            w = producer.inputs[1].const_value.astype(np.float64)
            axis = 1 if producer.op == "linear" and not producer.attrs["trans_b"] else 0
            flat = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
            score = np.abs(flat).sum(axis=1) if criterion == "l1" else np.sqrt((flat**2).sum(axis=1))
        total += score / max(float(score.mean()), 1e-30)
    return total


def channel_keep_mask(group: ChannelGroup, ratio: float, criterion: str) -> np.ndarray:
    """Keep the most important ``1 - ratio`` of the group's channels (at least one), in whole
    blocks of ``group.block`` channels (attention heads), a block's importance the sum of its channels'."""
    units = group.size // group.block
    remove = min(int(np.floor(ratio * units + 1e-9)), units - 1)
    keep = np.ones(group.size, bool)
    if remove > 0:
        score = channel_importance(group, criterion).reshape(units, group.block).sum(axis=1)
        # A stable sort keeps the lower index among equal scores, so results are deterministic.
        order = np.argsort(score, kind="stable")
        keep.reshape(units, group.block)[order[:remove]] = False
    return keep


def prunable_groups(graph: Graph) -> tuple[ChannelAnalysis, list[ChannelGroup]]:
    """The channel analysis of ``graph`` and its prunable groups (what sensitivity scans)."""
    analysis = analyze_channels(graph)
    return analysis, [g for g in analysis.groups if g.prunable]

"""Channel analysis: which output channels of conv/linear layers can be removed, and together with what.

Every value that holds channels gets a *label* per channel: the channel
space it comes from and its index there. Channels lie on axis 1 (NCHW
activations, ``[N, F]`` features) or, after a linear over ``[N, T, D]``
(a transformer's tokens), on the last axis. A conv (``groups=1``) or a
linear with constant weights opens a new space; per-channel ops (batch
norm, activations, pooling, depthwise convs) pass labels through;
``concat`` on axis 1 concatenates them; a flatten repeats each label once
per spatial position; a reshape that keeps the last axis (``[N, T, D]``
to ``[N*T, D]`` and back) keeps last-axis labels; an elementwise op on
two activations (a residual add) ties their spaces into one group, so
those channels are pruned together. Whatever the analysis cannot follow
(a graph output, an unknown op, a transpose, a layer norm, which mixes
the channels it normalizes) *fixes* the spaces it reads, which are then
never pruned. In a transformer that pins the model width (layer norms
and residual adds read it) and leaves the MLPs' hidden width prunable,
and the attention heads: a last axis split into ``[heads, head width]``
reaches ``attention`` through transposes, which ties q, k and v channel by
channel, and the group then goes in whole heads (``ChannelGroup.block``).

:func:`rewrite_channels` then rebuilds the graph keeping chosen channels of
each group: it slices producers' weights (output axis), per-channel
parameters, and every consumer's weights (input axis), and fixes the
attributes that hold channel counts (``groups`` of depthwise convs,
``shape`` of reshapes). It can also fold removed channels into kept ones
(``merges``), which ``share-weights{method=merge}`` uses.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 3, 8, 8)))
    >>> w1 = g.const(np.ones((8, 3, 3, 3), np.float32), name="c1.weight")
    >>> w2 = g.const(np.ones((4, 8, 1, 1), np.float32), name="c2.weight")
    >>> g.set_outputs([g.call("conv", g.call("relu", g.call("conv", x, w1, pads=(1, 1, 1, 1))), w2)])
    >>> a = analyze_channels(g)
    >>> [(grp.names, grp.size, grp.prunable) for grp in a.groups]
    [(['c1.weight'], 8, True), (['c2.weight'], 4, False)]
    >>> keep = {a.groups[0].id: np.arange(8) < 5}
    >>> rewrite_channels(g, a, keep).value("c2.weight").type.shape
    (4, 5, 1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.ir.types import normalize_axis

#: (space id per channel, index in the space per channel); space -1 is untracked.
Labels = tuple[np.ndarray, np.ndarray]

#: Ops that keep channels where they are and treat each one on its own.
_POOLS = {"max_pool", "avg_pool", "global_avg_pool", "global_max_pool"}
_RESHAPES = {"reshape", "flatten", "squeeze", "unsqueeze"}
_NORMS = {"batch_norm", "instance_norm"}


@dataclass
class ChannelGroup:
    """Channels that must be kept or removed together.

    ``producers`` are the conv/linear nodes whose output channels form the
    group (several when residual adds tie them); ``carriers`` the ops the
    channels flow through; ``consumers`` the nodes that read them as input
    channels; ``fixed`` says why the group cannot be pruned (None if it can); ``block``
    is how many consecutive channels go or stay together (an attention head's width).
    """

    id: int
    size: int
    producers: list[Node] = field(default_factory=list)
    carriers: list[Node] = field(default_factory=list)
    consumers: list[Node] = field(default_factory=list)
    fixed: str | None = None
    block: int = 1

    @property
    def prunable(self) -> bool:
        return self.fixed is None

    @property
    def names(self) -> list[str]:
        """The producers' weight names (what skip lists and overrides match)."""
        return [p.inputs[1].name for p in self.producers]


@dataclass(frozen=True)
class _Edit:
    """Slice const input ``index`` of a node along ``axis`` by the keep mask of ``labels``.
    ``mixing`` edits are consumer weights (input channels), where merges add up."""

    index: int
    axis: int
    labels: Labels
    mixing: bool = False


@dataclass
class ChannelAnalysis:
    """The result of :func:`analyze_channels`: ``groups`` (roots only) plus what the rewrite needs."""

    graph: Graph
    groups: list[ChannelGroup]
    labels: dict[int, Labels]
    edits: dict[int, list[_Edit]]
    shape_attr: dict[int, tuple[Labels, int, int]]
    groups_attr: dict[int, Labels]
    root: np.ndarray

    def mask(self, labels: Labels, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Which channels of a value with ``labels`` survive ``keep`` (group id -> bool per channel)."""
        space, index = labels
        out = np.ones(len(space), bool)
        for i, (s, k) in enumerate(zip(space, index)):
            if s >= 0:
                kept = keep.get(int(self.root[s]))
                if kept is not None:
                    out[i] = bool(kept[k])
        return out


class _Spaces:
    """Union-find over channel spaces, each with its producers and why it is fixed."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.producers: list[list[Node]] = []
        self.carriers: list[list[Node]] = []
        self.consumers: list[list[Node]] = []
        self.fixed: list[str | None] = []
        self.block: list[int] = []

    def new(self, size: int, producer: Node) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.producers.append([producer])
        self.carriers.append([])
        self.consumers.append([])
        self.fixed.append(None)
        self.block.append(1)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[b] = a
        for attr in ("producers", "carriers", "consumers"):
            getattr(self, attr)[a].extend(getattr(self, attr)[b])
        self.fixed[a] = self.fixed[a] or self.fixed[b]
        if self.block[a] != self.block[b] and 1 not in (self.block[a], self.block[b]):
            self.fixed[a] = self.fixed[a] or "heads of different widths tied together"
        self.block[a] = max(self.block[a], self.block[b])

    def roots_in(self, labels: Labels | None) -> set[int]:
        return set() if labels is None else {self.find(int(s)) for s in set(labels[0].tolist()) if s >= 0}

    def fix(self, labels: Labels | None, why: str) -> None:
        for r in self.roots_in(labels):
            self.fixed[r] = self.fixed[r] or why

    def note(self, attr: str, labels: Labels | None, node: Node) -> None:
        for r in self.roots_in(labels):
            getattr(self, attr)[r].append(node)


def _untracked(n: int) -> Labels:
    return np.full(n, -1), np.zeros(n, int)


def _whole_space(labels: Labels, spaces: _Spaces) -> int | None:
    """The space if ``labels`` is exactly one space's channels in order, else None."""
    space, index = labels
    if len(space) == 0 or space[0] < 0 or not np.all(space == space[0]):
        return None
    s = int(space[0])
    return s if spaces.size[s] == len(space) and np.array_equal(index, np.arange(len(space))) else None


def _channels(v: Value, axis: int = 1) -> int | None:
    t = v.type
    return t.shape[axis] if t.rank >= 2 and axis < t.rank and isinstance(t.shape[axis], int) else None


def _const_channel_axis(c: Value, out: Value, axis: int) -> int | None:
    """The axis of a broadcast constant that runs along ``out``'s channels (on ``axis``), if it varies there."""
    a = axis - (out.type.rank - c.type.rank)
    return a if 0 <= a < c.type.rank and c.type.shape[a] != 1 else None


def analyze_channels(graph: Graph) -> ChannelAnalysis:
    """Find the channel groups of ``graph`` and which of them can be pruned."""
    spaces = _Spaces()
    labels: dict[int, Labels] = {}
    axes: dict[int, int] = {}  # the channel axis of each labelled value
    edits: dict[int, list[_Edit]] = {}
    shape_attr: dict[int, tuple[Labels, int, int]] = {}
    groups_attr: dict[int, Labels] = {}

    def get(v: Value) -> Labels | None:
        return labels.get(id(v))

    def fix_inputs(node: Node, why: str) -> None:
        for v in node.inputs:
            spaces.fix(get(v), why)

    def through(node: Node, lab: Labels | None, axis: int) -> None:
        if lab is not None:
            labels[id(node.output)] = lab
            axes[id(node.output)] = axis
            spaces.note("carriers", lab, node)

    for node in graph.nodes:
        op = node.op
        why = f"read by {node.describe()}"
        if op == "const":
            continue
        ins = node.inputs
        x = ins[0] if ins else None
        lab = get(x) if x is not None else None
        axis = axes.get(id(x), 1) if x is not None else 1
        consts_ok = all(v.is_const for v in ins[1:])

        if any(isinstance(axes.get(id(v)), tuple) for v in ins) and op not in ("transpose", "attention", *_RESHAPES):
            fix_inputs(node, why + " (channels split into attention heads)")
        elif op in ("conv", *_NORMS, *_POOLS, "concat") and lab is not None and axis != 1:
            # these work on NCHW channels; last-axis channels reach them only through a layout change
            fix_inputs(node, why + " (channels on the last axis)")
        elif op == "conv" and consts_ok and ins[1].type.dtype.is_float:
            groups, cin, cout = node.attrs["groups"], _channels(x), ins[1].type.shape[0]
            if groups == 1:
                if lab is not None:
                    edits.setdefault(id(node), []).append(_Edit(1, 1, lab, mixing=True))
                    spaces.note("consumers", lab, node)
                space = spaces.new(cout, node)
                out_lab = (np.full(cout, space), np.arange(cout))
                labels[id(node.output)] = out_lab
                edits.setdefault(id(node), []).extend(_Edit(i, 0, out_lab) for i in range(1, len(ins)))
            elif groups == cin == cout and lab is not None:
                # Depthwise: each channel is its own filter, so it follows its producer.
                edits.setdefault(id(node), []).extend(_Edit(i, 0, lab) for i in range(1, len(ins)))
                groups_attr[id(node)] = lab
                through(node, lab, 1)
            else:
                fix_inputs(node, why + " (a grouped conv)")
        elif op == "linear" and consts_ok and x.type.rank >= 2 and node.output.type.rank == x.type.rank \
                and not node.attrs["trans_a"]:
            # over [N, F] or [N, T, D] alike: input features and output features on the last axis
            trans_b, last = node.attrs["trans_b"], x.type.rank - 1
            if lab is not None and axis != last:
                spaces.fix(lab, why + " (channels not on the last axis)")
            elif lab is not None:
                edits.setdefault(id(node), []).append(_Edit(1, 1 if trans_b else 0, lab, mixing=True))
                spaces.note("consumers", lab, node)
            out = node.output.type.shape[-1]
            bias_ok = len(ins) < 3 or ins[2].type.shape[-1:] == (out,)
            if isinstance(out, int) and ins[1].type.dtype.is_float and bias_ok:
                space = spaces.new(out, node)
                out_lab = (np.full(out, space), np.arange(out))
                labels[id(node.output)] = out_lab
                axes[id(node.output)] = node.output.type.rank - 1
                edits.setdefault(id(node), []).append(_Edit(1, 0 if trans_b else 1, out_lab))
                if len(ins) == 3:
                    edits[id(node)].append(_Edit(2, ins[2].type.rank - 1, out_lab))
        elif op in _NORMS and consts_ok:
            if lab is not None:
                edits.setdefault(id(node), []).extend(_Edit(i, 0, lab) for i in range(1, len(ins)))
            through(node, lab, 1)
        elif node.opdef.category == "elementwise" and op not in ("quantize", "dequantize") and len(node.outputs) == 1:
            _elementwise(node, spaces, labels, axes, edits, why)
        elif op == "identity" or op in _POOLS:
            through(node, lab, axis)
        elif op in ("softmax", "log_softmax") and x.type.rank >= 2:
            if normalize_axis(node.attrs["axis"], x.type.rank) == axis:
                fix_inputs(node, why)
            else:
                through(node, lab, axis)
        elif op.startswith("reduce_") and lab is not None and _reduced_axis(node, axis) is not None:
            through(node, lab, _reduced_axis(node, axis))
        elif op in _RESHAPES and lab is not None:
            out, per = _reshape_labels(node, lab, axis), 1
            if out is not None and isinstance(out[1], tuple) and not isinstance(axis, tuple):
                # the last axis split into [heads, head width]: whole heads go or stay
                whole, per = _whole_space(lab, spaces), node.output.type.shape[-1]
                root = spaces.find(whole) if whole is not None else None
                if root is None or spaces.block[root] not in (1, per):
                    out = None
                else:
                    spaces.block[root] = per
            if out is None:
                spaces.fix(lab, why)
            else:
                if op == "reshape":
                    shape_attr[id(node)] = (out[0], out[1][0] if isinstance(out[1], tuple) else out[1], per)
                through(node, *out)
        elif op == "transpose" and lab is not None:
            perm = list(node.attrs["perm"]) or list(range(x.type.rank))[::-1]
            moved = tuple(perm.index(a) for a in axis) if isinstance(axis, tuple) else perm.index(axis)
            if isinstance(moved, tuple) and moved[0] > moved[1]:
                fix_inputs(node, why + " (heads moved after their width)")
            else:
                through(node, lab, moved)
        elif op == "attention" and any(get(v) is not None for v in ins):
            _attention(node, spaces, labels, axes, why)
        elif op == "concat" and normalize_axis(node.attrs["axis"], node.output.type.rank) == 1 and all(
            _channels(v) is not None and axes.get(id(v), 1) == 1 for v in ins
        ):
            parts = [get(v) or _untracked(_channels(v)) for v in ins]
            through(node, (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])), 1)
        else:
            fix_inputs(node, why)
    for v in graph.outputs:
        spaces.fix(get(v), "a graph output")

    root = np.array([spaces.find(s) for s in range(len(spaces.parent))], dtype=int)
    groups = [
        ChannelGroup(
            id=r,
            size=spaces.size[r],
            producers=spaces.producers[r],
            carriers=list({id(n): n for n in spaces.carriers[r]}.values()),
            consumers=list({id(n): n for n in spaces.consumers[r]}.values()),
            fixed=spaces.fixed[r],
            block=spaces.block[r],
        )
        for r in sorted(set(root.tolist()))
    ]
    return ChannelAnalysis(graph, groups, labels, edits, shape_attr, groups_attr, root)


def _elementwise(node: Node, spaces: _Spaces, labels: dict, axes: dict, edits: dict, why: str) -> None:
    out = node.output
    acts = [v for v in node.inputs if not v.is_const]
    # the channel axis of the labelled operands of the output's rank: axis 1 or the last, the same for all
    found = sorted({axes.get(id(v), 1) for v in acts if id(v) in labels and v.type.rank == out.type.rank})
    if len(found) > 1:
        for v in acts:
            spaces.fix(labels.get(id(v)), why + " (channels on different axes)")
        return
    axis = found[0] if found else 1
    n_out = _channels(out, axis)
    tied = [v for v in acts if v.type.rank == out.type.rank and n_out is not None and _channels(v, axis) == n_out]
    for v in acts:
        if v not in tied:
            spaces.fix(labels.get(id(v)), why + " (broadcast along channels)")
    labs = [labels.get(id(v)) for v in tied]
    if not labs or any(lab is None for lab in labs):
        for lab in labs:
            spaces.fix(lab, why + " (mixed with an untracked value)")
        return
    first = labs[0]
    resolved = [(np.array([spaces.find(s) if s >= 0 else -1 for s in lab[0]]), lab[1]) for lab in labs]
    same = all(np.array_equal(r[0], resolved[0][0]) and np.array_equal(r[1], resolved[0][1]) for r in resolved)
    if not same:
        whole = [_whole_space(lab, spaces) for lab in labs]
        if any(w is None for w in whole) or len({spaces.size[w] for w in whole}) != 1:
            for lab in labs:
                spaces.fix(lab, why + " (channels tied in a layout the analysis cannot follow)")
            return
        for w in whole[1:]:
            spaces.union(whole[0], w)
    for i, v in enumerate(node.inputs):
        if v.is_const:
            c_axis = _const_channel_axis(v, out, axis)
            if c_axis is not None:
                edits.setdefault(id(node), []).append(_Edit(i, c_axis, first))
    labels[id(out)] = first
    axes[id(out)] = axis
    spaces.note("carriers", first, node)


def _attention(node: Node, spaces: _Spaces, labels: dict, axes: dict, why: str) -> None:
    """q, k and v split into the same heads ([N, heads, T, width], whole spaces of one size) tie
    their spaces channel by channel: a head goes from all three, and from the output, together."""
    q, k, v = node.inputs[:3]
    labs = [labels.get(id(x)) for x in (q, k, v)]
    wholes = [_whole_space(lab, spaces) if lab is not None and axes.get(id(x)) == (1, 3) else None
              for lab, x in zip(labs, (q, k, v))]
    if any(w is None for w in wholes) or len({spaces.size[w] for w in wholes}) != 1:
        for x in node.inputs:
            spaces.fix(labels.get(id(x)), why + " (q, k and v not split into the same heads)")
        return
    for x in node.inputs[3:]:
        spaces.fix(labels.get(id(x)), why + " (a mask)")
    for w in wholes[1:]:
        spaces.union(wholes[0], w)
    labels[id(node.output)] = labs[2]
    axes[id(node.output)] = (1, 3)
    spaces.note("carriers", labs[2], node)


def _reduced_axis(node: Node, axis: int) -> int | None:
    """Where channel ``axis`` lands after a reduction that keeps it and the batch axis (None otherwise)."""
    rank = node.inputs[0].type.rank
    reduced = {normalize_axis(a, rank) for a in node.attrs["axes"] or range(rank)}
    if reduced & {0, axis}:
        return None
    return axis if node.attrs["keepdims"] else axis - sum(a < axis for a in reduced)


def _reshape_labels(node: Node, lab: Labels, axis) -> tuple[Labels, int | tuple[int, int]] | None:
    """Labels and channel axis after a reshape-like op: one that keeps the batch axis and either keeps
    the channel axis 1 (dropping or adding unit spatial dims) or flattens channels with space, or one
    that keeps the last axis when the channels lie there (``[N, T, D]`` <-> ``[N*T, D]``), splits it
    into heads (``[N, T, H, D/H]``, channel axis ``(heads axis, width axis)``) or merges them back."""
    src, dst = node.inputs[0].type.shape, node.output.type.shape
    if len(src) < 2 or len(dst) < 2:
        return None
    if axis == 1 and src[0] == dst[0] and all(isinstance(d, int) for d in src[1:] + dst[1:]):
        spatial_in = int(np.prod(src[2:], dtype=np.int64))
        spatial_out = int(np.prod(dst[2:], dtype=np.int64))
        if dst[1] == src[1] and spatial_in == spatial_out:
            return lab, 1
        if len(dst) == 2 and dst[1] == src[1] * spatial_in and (node.op != "flatten" or node.attrs["axis"] == 1):
            return (np.repeat(lab[0], spatial_in), np.repeat(lab[1], spatial_in)), 1
    if isinstance(axis, tuple):
        # [..., heads, width] merged back into one last axis
        merged = axis == (len(src) - 2, len(src) - 1) and all(isinstance(d, int) for d in src[-2:])
        return (lab, len(dst) - 1) if merged and dst[-1] == src[-2] * src[-1] else None
    if axis == len(src) - 1 and isinstance(src[-1], int) and dst[-1] == src[-1]:
        # row-major order keeps each row of the last axis whole when its length stays
        return lab, len(dst) - 1
    if axis == len(src) - 1 and len(dst) >= 3 and all(isinstance(d, int) and d > 1 for d in dst[-2:]) \
            and dst[-2] * dst[-1] == src[-1]:
        # the last axis split into [heads, head width]
        return lab, (len(dst) - 2, len(dst) - 1)
    return None


def rewrite_channels(
    graph: Graph,
    analysis: ChannelAnalysis,
    keep: dict[int, np.ndarray],
    merges: dict[int, Sequence[tuple[int, int, float]]] | None = None,
) -> Graph:
    """A new graph with only the kept channels of each group.

    ``keep`` maps a group id to a bool mask over its channels (groups not
    given keep everything). ``merges`` maps a group id to ``(removed,
    survivor, alpha)`` triples: before a removed channel's input-side
    weights are dropped, ``alpha`` times them is added to the survivor's.
    """
    merges = merges or {}
    out = Graph(graph.name)
    mapping: dict[int, Value] = {}
    made: dict[tuple, Value] = {}
    for v in graph.inputs:
        mapping[id(v)] = out.add_input(v.name, v.type)

    def const(v: Value, todo: list[_Edit]) -> Value:
        key = (id(v),) + tuple((e.axis, id(e.labels), e.mixing) for e in todo)
        if key not in made:
            array = v.const_value
            for edit in todo:
                array = _apply_edit(array, edit, analysis, keep, merges)
            made[key] = out.call("const", name=v.name, value=array)
        return made[key]

    for node in graph.nodes:
        if node.op == "const":
            continue
        todo = analysis.edits.get(id(node), [])
        inputs = [
            const(v, [e for e in todo if e.index == i]) if v.is_const else mapping[id(v)]
            for i, v in enumerate(node.inputs)
        ]
        attrs = dict(node.attrs)
        if id(node) in analysis.groups_attr:
            attrs["groups"] = int(analysis.mask(analysis.groups_attr[id(node)], keep).sum())
        if id(node) in analysis.shape_attr:
            reshaped, axis, per = analysis.shape_attr[id(node)]
            if attrs["shape"][axis] > 0:
                shape = list(attrs["shape"])
                shape[axis] = int(analysis.mask(reshaped, keep).sum()) // per
                attrs["shape"] = tuple(shape)
        new = out.add_node(node.op, inputs, attrs, names=[o.name for o in node.outputs], loc=node.loc)
        for old, nv in zip(node.outputs, new.outputs):
            mapping[id(old)] = nv
    out.set_outputs([mapping[id(v)] if not v.is_const else const(v, []) for v in graph.outputs])
    return out


def _apply_edit(array: np.ndarray, edit: _Edit, analysis: ChannelAnalysis, keep: dict, merges: dict) -> np.ndarray:
    mask = analysis.mask(edit.labels, keep)
    if mask.all():
        return array
    if edit.mixing and merges:
        array = _merge_columns(array, edit, analysis, merges)
    return np.compress(mask, array, axis=edit.axis)


def _merge_columns(array: np.ndarray, edit: _Edit, analysis: ChannelAnalysis, merges: dict) -> np.ndarray:
    """Add ``alpha`` x the input-side weights of each removed channel to its survivor's."""
    space, index = edit.labels
    roots = np.where(space >= 0, analysis.root[np.maximum(space, 0)], -1)
    work = np.moveaxis(array.astype(np.float64), edit.axis, 0).copy()
    for group, triples in merges.items():
        for removed, survivor, alpha in triples:
            src = np.flatnonzero((roots == group) & (index == removed))
            dst = np.flatnonzero((roots == group) & (index == survivor))
            work[dst] += alpha * work[src]
    return np.moveaxis(work, 0, edit.axis).astype(array.dtype)

"""``fuse``: group ops into ``fused`` regions, each lowered later as one kernel.

The policy is four rewrite rules, applied with the pattern driver to a fixed
point (nodes are visited in topological order, so regions grow downstream):

1. Seed. Every anchor op (conv, matmul/linear, pooling, softmax, the norms
   and the reductions: every op of category ``compute`` or ``reduction``
   unless ``anchors`` lists them) becomes a region of its own. A region
   never holds two anchors.
2. Epilogue. An elementwise op joins the region whose result it reads (bias,
   activation, residual add, ...; ``requantize`` stays its own kernel, see ``join``) when the region's result has
   no other reader, or when its only other readers are elementwise ops that
   read nothing else computed and feed this one (``x * sigmoid(x)`` joins as
   a whole). Epilogue ops may read values computed elsewhere (the residual
   of a residual add) unless ``residual`` is off, but never broadcast the
   anchor's result to a larger tensor: squeeze-excite's
   ``map * sigmoid(conv(pooled))`` is no epilogue of the gate's conv (rule 3
   gives it to the 1x1 conv that reads the scaled map, or it stays a kernel
   of its own).
   An epilogue runs inside the anchor's tile, so there it would be unrolled
   once per element of the whole map (EfficientNet-B0's build ran for
   minutes) and recompute the sigmoid for each. An epilogue op may read a
   matmul's result through a ``reshape`` that only adds or drops unit dims
   (torch's linear runs on a [rows, K] view and reshapes back to [1, rows, N]
   before its bias or activation). A ``quantize`` ends the
   epilogue: its integer result is what should travel between kernels, and
   the ``dequantize`` that reads it becomes the next anchor's prologue.
   An epilogue that reads the result several times (GPT-2's gelu_new written
   out) cannot join op by op; the chain it forms (rule 4) joins as a whole
   when it is the result's only reader (see ``_chain_epilogue``).
3. Prologue. A region with an anchor takes the producer of one of its inputs
   when the region is that value's only reader and the producer is cheap:
   injective (reshape, transpose, pad, slice, ...), ``cast`` or
   ``dequantize``. An elementwise producer is not taken: the anchor would
   recompute it for every output it reads it for. One exception: a 1x1 conv
   takes squeeze-excite's ``map * gate`` (one number per channel), which it
   multiplies in as it reads the map, instead of a kernel of its own that
   writes the scaled map and reads it again.
4. Chains. Elementwise ops with no anchor to join fuse with the elementwise
   or injective producers that only they read (``chains`` turns this off),
   and such a region takes more of them upstream and downstream like the
   others: an attention head's slice, transpose and scaling become one kernel
   instead of three. Injective ops compute nothing; where several of them read
   one value (the shifted slices of a local response norm) the elementwise op
   before them runs once per read, cheap next to a kernel of its own
   (Inception v1: 93 kernels to 79, 21.3 to 19.4 ms).

Invariants: a region has one result, every other value it computes is read
only inside it, and no anchor is ever recomputed (only a cheap elementwise op
read several times through an injective one, rule 4); a region has at most ``max-ops`` ops; a merge that brings in a
value computed outside is checked on ``graph.to_networkx()`` not to create a
cycle. Constants stay outside as region inputs. Regions of one op are
unwrapped at the end.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 3, 8, 8)))
    >>> w = g.const(np.ones((4, 3, 3, 3), np.float32))
    >>> y = g.call("relu", g.call("add", g.call("conv", x, w), g.const(np.ones((4, 1, 1), np.float32))))
    >>> g.set_outputs([y])
    >>> fused = FuseRegions()(g)
    >>> [(n.op, n.attrs.get("anchor")) for n in fused.nodes if n.op != "const"]
    [('fused', 'conv')]
    >>> [n.op for n in fused.nodes[-1].body.nodes]
    ['conv', 'add', 'relu']
"""

from __future__ import annotations

from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.ir.registry import all_ops
from slimgraph.passes.errors import OptionValueError
from slimgraph.passes.pattern import Match, Pat, RewriteRule, apply_rewrites, rewrite
from slimgraph.passes.registry import Pass, option, register_pass

#: Anchors whose epilogue may start with a reshape of their result (the dense kernel's tile
#: computes the reshaped read; the conv rules' tiles would not).
RESHAPED_EPILOGUE_ANCHORS = ("linear", "matmul")

#: Elementwise ops cheap enough to join an anchor's prologue next to the injective ones.
CHEAP_CONVERSIONS = ("cast", "dequantize")


@register_pass("fuse")
class FuseRegions(Pass):
    """Group each anchor (conv, matmul, pool, softmax, norm, reduction) with its elementwise epilogue into fused regions."""

    max_ops: int = option(16, "most ops in one region")
    anchors: tuple[str, ...] = option((), "ops that may anchor a region (empty: every compute or reduction op)")
    prologue: bool = option(True, "anchors take their cheap injective producers")
    epilogue: bool = option(True, "anchors take the elementwise ops that read their result")
    residual: bool = option(True, "epilogue ops may read values computed outside the region")
    chains: bool = option(True, "fuse chains of elementwise ops that have no anchor")

    def __post_init__(self) -> None:
        super().__post_init__()
        ops = all_ops()
        unknown = [a for a in self.anchors if a not in ops]
        if unknown:
            raise OptionValueError(
                f"bad value '{unknown[0]}' for option 'anchors' of pass 'fuse': not an op",
                choices=_default_anchors(),
                pass_name="fuse",
                option="anchors",
            )
        if self.max_ops < 1:
            raise OptionValueError(
                f"bad value {self.max_ops} for option 'max-ops' of pass 'fuse': must be at least 1",
                pass_name="fuse",
                option="max-ops",
            )

    def apply(self, graph: Graph) -> None:
        fuser = _Fuser(self)
        apply_rewrites(graph, fuser.rules(), max_iterations=64)
        apply_rewrites(graph, [fuser.unwrap_single_op_regions()])


def _default_anchors() -> tuple[str, ...]:
    return tuple(sorted(n for n, op in all_ops().items() if op.category in ("compute", "reduction")))


def _elementwise(node: Node) -> bool:
    return node.opdef.category == "elementwise" and len(node.outputs) == 1


def _chainable(node: Node) -> bool:
    """Elementwise or injective: no reductions or contractions, so a chain of them recomputes
    at most cheap elementwise ops, and a reshape, slice or transpose in it is index arithmetic."""
    return node.opdef.category in ("elementwise", "injective") and len(node.outputs) == 1


def _channel_scaling(prod: Node, region: Node) -> bool:
    """Whether ``prod`` scales each channel of a map by one number (squeeze-excite's ``map * gate``,
    the gate [N, C, 1, 1]) for a region whose anchor is a 1x1 conv: read through the conv's
    prologue, the map is scaled as the conv reads it, not written and read again by a kernel of
    its own (EfficientNet-B0: 16 kernels)."""
    if prod.op != "mul" or region.attrs["anchor"] != "conv":
        return False
    shape = prod.output.type.shape
    if len(shape) < 3 or not any(v.type.shape == shape for v in prod.inputs):
        return False
    gates = [v for v in prod.inputs if v.type.shape != shape]
    if len(gates) != 1 or tuple(gates[0].type.shape[-(len(shape) - 2):]) != (1,) * (len(shape) - 2):
        return False
    conv = next(n for n in region.body.nodes if n.op == "conv")
    return all(d == 1 for d in conv.inputs[1].type.shape[2:])


def _chain_epilogue(anchored: Node, chain: Node, residual: bool) -> bool:
    """Whether a chain region (elementwise ops, no anchor) is a whole epilogue of the ``anchored``
    region it reads: GPT-2's gelu_new, ``0.5 x (1 + tanh(c (x + 0.044715 x^3))))``, reads the
    linear's result three times, so no single op of it could join (rule 2 takes an op only when
    the result has no reader outside the region), and it ran as a kernel of its own that read
    the result back. It joins when it is the result's only reader, its ops are elementwise of
    the result's shape (a matmul's result read through a reshape of unit dims, as rule 2 allows),
    and it reads nothing else computed unless ``residual``."""
    if anchored.body.outputs[0].producer.op == "quantize":
        return False
    index = next((i for i, v in enumerate(chain.inputs) if v is anchored.output), None)
    if index is None:
        return False
    shape = chain.output.type.shape
    read = chain.body.inputs[index]
    for node in chain.body.nodes:
        if node.op == "reshape" and node.inputs[0] is read and _unit_dims_only(node) and \
                anchored.attrs["anchor"] in RESHAPED_EPILOGUE_ANCHORS and node.output.type.shape == shape:
            continue
        if not _elementwise(node) or node.op == "requantize" or node.output.type.shape != shape:
            return False
    if read.type.shape != shape and not all(u.op == "reshape" for u in read.users):
        return False
    others = [v for i, v in enumerate(chain.inputs) if i != index and not v.is_const]
    return residual or not others


def _unit_dims_only(reshape: Node) -> bool:
    """Whether a reshape only adds or drops dims of size 1 ([S, N] -> [1, S, N]). One that splits
    or merges rows would make a tile of the matmul's rows a ragged set of the epilogue's."""
    def kept(shape):
        return [d for d in shape if d != 1]

    return kept(reshape.inputs[0].type.shape) == kept(reshape.output.type.shape)


def _only_reader(value: Value, readers: list[Node], graph: Graph) -> bool:
    """Whether every reader of ``value`` is in ``readers`` (and it is not a graph output)."""
    return all(any(u is r for r in readers) for u in value.users) and all(v is not value for v in graph.outputs)


class _Fuser:
    """The rules of one run of the pass; remembers the regions it made."""

    def __init__(self, options: FuseRegions):
        self.options = options
        self.anchors = set(options.anchors or _default_anchors())
        self.made: dict[int, Graph] = {}  # id(body) -> body of every region this run made

    def rules(self) -> list[RewriteRule]:
        rules = []

        @rewrite(Pat("*", where=lambda n: n.op in self.anchors and len(n.outputs) == 1))
        def seed_anchor(m: Match) -> Value:
            return self.merge(m.graph, [m.root], m.root.op)

        @rewrite(Pat("*", where=_elementwise))
        def join_elementwise(m: Match) -> Value | None:
            return self.join(m.graph, m.root)

        @rewrite(Pat("fused", where=lambda n: id(n.body) in self.made))
        def take_producer(m: Match) -> Value | None:
            return self.take_producer(m.graph, m.root)

        rules.append(seed_anchor)
        if self.options.epilogue or self.options.chains:
            rules.append(join_elementwise)
        if self.options.prologue or self.options.chains:
            rules.append(take_producer)
        return rules

    def unwrap_single_op_regions(self) -> RewriteRule:
        @rewrite(Pat("fused", where=lambda n: id(n.body) in self.made and len(n.body.nodes) == 1))
        def unwrap(m: Match) -> Value:
            (inner,) = m.root.body.nodes
            return m.graph.add_node(inner.op, m.root.inputs, inner.attrs, loc=inner.loc).outputs[0]

        return unwrap

    # -- the rules' decisions --------------------------------------------------------

    def join(self, graph: Graph, node: Node) -> Value | None:
        """An elementwise ``node`` joins the region it reads, or starts a chain with its producers."""
        if node.op == "requantize":
            # Fused into a conv tile, requantize's int64 arithmetic runs per element, unrolled,
            # and the kernel is slower than the conv plus requantize as its own contiguous,
            # vectorized kernel (VNNI 64->64 3x3 at 56x56: 0.64 ms against 0.53 + 0.06).
            return None
        helpers = [
            v.producer
            for v in node.inputs
            if v.producer is not None and _chainable(v.producer) and _only_reader(v, [node], graph)
        ]
        for value in node.inputs:
            region, via = value.producer, []
            if (region is not None and region.op == "reshape" and _only_reader(value, [node], graph)
                    and _unit_dims_only(region)):
                # a matmul's result reshaped (torch's linear on [M, K] views) still takes its epilogue
                region, via, value = region.inputs[0].producer, [region], region.inputs[0]
            if region is None or id(region.attrs.get("body")) not in self.made:
                continue
            if not (self.options.epilogue if region.attrs["anchor"] else self.options.chains):
                continue
            if via and region.attrs["anchor"] not in RESHAPED_EPILOGUE_ANCHORS:
                continue
            if region.body.outputs[0].producer.op == "quantize":
                continue  # a requantized result is what should cross between kernels
            # Elementwise ops that read the region's result and feed only this node join with it.
            joining = [] if via else [h for h in helpers if _elementwise(h) and any(v is value for v in h.inputs)]
            if not _only_reader(value, via + joining + [node], graph):
                continue
            shape = via[0].output.type.shape if via else value.type.shape
            if region.attrs["anchor"] and any(m.output.type.shape != shape for m in joining + [node]):
                continue  # an epilogue never broadcasts the anchor's result (see rule 2)
            members = [region] + via + joining + [node]
            residual = bool(_outside_inputs(members, self.made))
            if residual and region.attrs["anchor"] and not self.options.residual:
                continue
            if self._acceptable(graph, members):
                return self.merge(graph, members, region.attrs["anchor"])
        if self.options.chains and helpers:
            members = helpers + [node]
            if self._acceptable(graph, members):
                return self.merge(graph, members, "")
        return None

    def take_producer(self, graph: Graph, region: Node) -> Value | None:
        """A region takes the producer of one of its inputs that only it reads."""
        anchor = region.attrs["anchor"]
        for value in region.inputs:
            prod = value.producer
            if prod is None or prod.op == "const" or len(prod.outputs) != 1:
                continue
            # a region is taken only by a chain, and only when it is an anchor's region of this run
            if prod.op == "fused" and (anchor or not prod.attrs["anchor"] or id(prod.attrs["body"]) not in self.made):
                continue
            if anchor:
                fits = self.options.prologue and (prod.opdef.category == "injective" or prod.op in CHEAP_CONVERSIONS
                                                  or _channel_scaling(prod, region))
            elif prod.op == "fused":
                fits = self.options.epilogue and _chain_epilogue(prod, region, self.options.residual)
            else:
                fits = self.options.chains and _chainable(prod)
            members = [prod, region]
            if fits and _only_reader(value, [region], graph) and self._acceptable(graph, members):
                # a chain that took its anchored producer is that anchor's region now
                return self.merge(graph, members, prod.attrs["anchor"] if prod.op == "fused" else anchor)
        return None

    def _acceptable(self, graph: Graph, members: list[Node]) -> bool:
        if sum(_size(n, self.made) for n in members) > self.options.max_ops:
            return False
        producers = [v.producer for v in _outside_inputs(members, self.made) if v.producer is not None]
        return not producers or not _creates_cycle(graph, members, producers)

    # -- building regions --------------------------------------------------------------

    def merge(self, graph: Graph, members: list[Node], anchor: str) -> Value:
        """One fused node for ``members`` (regions among them are inlined); returns its result.

        ``members`` end with the node whose result is the region's; everything
        else they compute is read only among them. The caller (the rewrite
        driver) rewires the readers and removes the members.
        """
        members = sorted(members, key=graph.nodes.index)
        inside = {id(v) for n in members for v in n.outputs}
        externals = list({id(v): v for n in members for v in n.inputs if id(v) not in inside}.values())
        body = Graph(f"{anchor or 'elementwise'}_{len(self.made)}")
        mapping = {id(v): body.add_input(v.name, v.type) for v in externals}
        for node in members:
            if id(node.attrs.get("body")) in self.made:
                inner = node.body
                local = {id(p): mapping[id(v)] for p, v in zip(inner.inputs, node.inputs)}
                _copy_nodes(body, inner.nodes, local)
                mapping[id(node.output)] = local[id(inner.outputs[0])]
            else:
                _copy_nodes(body, [node], mapping)
        result = members[-1].output
        body.set_outputs([mapping[id(result)]])
        self.made[id(body)] = body
        loc = next((n.loc for n in body.nodes if n.op == anchor), members[-1].loc)
        return graph.add_node("fused", externals, {"body": body, "anchor": anchor}, types=[result.type], loc=loc).output


def _size(node: Node, made: dict[int, Graph]) -> int:
    return len(node.body.nodes) if id(node.attrs.get("body")) in made else 1


def _outside_inputs(members: list[Node], made: dict[int, Graph]) -> list[Value]:
    """The values from elsewhere (graph inputs or computed, not constants) that a
    merge adds as region inputs; a region's own inputs were checked when it was made."""
    inside = {id(v) for n in members for v in n.outputs}
    return [
        v
        for n in members
        if id(n.attrs.get("body")) not in made
        for v in n.inputs
        if id(v) not in inside and not v.is_const
    ]


def _copy_nodes(body: Graph, nodes: list[Node], mapping: dict[int, Value]) -> None:
    for node in nodes:
        copy = body.add_node(
            node.op,
            [mapping[id(v)] for v in node.inputs],
            node.attrs,
            names=[v.name for v in node.outputs],
            types=[v.type for v in node.outputs],
            loc=node.loc,
        )
        mapping.update({id(v): c for v, c in zip(node.outputs, copy.outputs)})


def _creates_cycle(graph: Graph, members: list[Node], producers: list[Node]) -> bool:
    """Would contracting ``members`` into one node make a cycle? It would if one
    of the ``producers`` of its outside inputs can be reached from a member."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    first = min(index[id(n)] for n in members)
    late = [index[id(p)] for p in producers if index[id(p)] > first]
    if not late:
        return False  # nodes are in topological order: nothing before every member is reachable from one
    import networkx as nx  # imported here: only this check needs it, and it is slow to import

    dg = graph.to_networkx()
    reachable: set = set()
    for node in members:
        reachable |= nx.descendants(dg, index[id(node)])
    return any(i in reachable for i in late)

"""``bf16``: run convs and matmuls with bfloat16 weights and activations, float32 everywhere else.

Each ``conv`` (ungrouped), ``linear`` and ``matmul`` whose weight is a float32
constant becomes ``cast(op(cast(x, bf16), w_bf16, b_bf16), f32)``: the weight
(and a bias) is rounded to bf16 once, here, the activation as it enters the op,
and the op's float32 sum is rounded to bf16 as it leaves. The backends sum
products of bf16 values in float32 (on AMX tiles, see ``ops/amx.py``, or with
AVX512-BF16 ``vdpbf16ps``, see ``ops/nn.py``), so the loss is the roundings,
about 3 significant digits per op. Everything between (activations, norms, softmax, residual adds) stays
float32. Grouped and depthwise convs are left alone: they are bound by memory,
not by multiply-adds, and bf16 would only add conversions.

Run it after ``fold-constants`` (so batch norms are folded into the weights
first) and before ``fuse`` (the casts then fuse into the op's kernel):
``compile(..., precision="bf16")`` places it there.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 16)))
    >>> w = g.const(np.ones((8, 16), np.float32), name="fc.weight")
    >>> g.set_outputs([g.call("linear", x, w, trans_b=True)])
    >>> [f"{n.op}:{n.outputs[0].type}" for n in ToBf16()(g).nodes]
    ['cast:bf16[1,16]', 'const:bf16[8,16]', 'linear:bf16[1,8]', 'cast:f32[1,8]']
"""

from __future__ import annotations

from slimgraph.ir.graph import Graph, Node
from slimgraph.ir.types import DType
from slimgraph.passes.errors import OptionValueError
from slimgraph.passes.registry import Pass, option, register_pass

#: Ops whose constant weight (input 1) and optional bias (input 2) the pass converts.
BF16_OPS = ("conv", "linear", "matmul")


@register_pass("bf16")
class ToBf16(Pass):
    """Convs and matmuls with constant weights compute on bf16 operands with float32 sums."""

    ops: tuple[str, ...] = option(BF16_OPS, "ops to convert, from conv, linear, matmul")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [op for op in self.ops if op not in BF16_OPS]
        if unknown:
            raise OptionValueError(
                f"bad value {unknown[0]!r} for option 'ops' of pass '{self.name}': choose from {', '.join(BF16_OPS)}",
                pass_name=self.name,
                option="ops",
            )

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op in self.ops and _converts(node):
                _convert(graph, node)


def _converts(node: Node) -> bool:
    x, w = node.inputs[:2]
    return (
        x.type.dtype is DType.float32
        and w.is_const
        and w.type.dtype is DType.float32
        and (node.op != "conv" or node.attrs["groups"] == 1)
        and (node.op != "matmul" or w.type.rank == 2)
    )


def _convert(graph: Graph, node: Node) -> None:
    bf16 = DType.bfloat16
    with graph.inserting_before(node):
        operands = [graph.call("cast", node.inputs[0], to=bf16)]
        for value in node.inputs[1:]:
            if value.is_const:
                operands.append(graph.const(value.const_value.astype(bf16.numpy), name=f"{value.name}.bf16", dtype=bf16))
            else:
                operands.append(graph.call("cast", value, to=bf16))
        result = graph.call(node.op, *operands, loc=node.loc, **node.attrs)
    with graph.inserting_after(result.producer):
        wide = graph.call("cast", result, to=DType.float32)
    graph.replace_all_uses(node.outputs[0], wide)
    replaced = [v.producer for v in node.inputs if v.is_const]
    graph.remove_node(node)
    for const in replaced:
        if not const.outputs[0].users and const.outputs[0] not in graph.outputs:
            graph.remove_node(const)

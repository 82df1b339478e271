"""slimgraph's dataflow IR: types, graphs, the op registry, text form, verifier, interpreter.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType, parse
    >>> g = Graph("double")
    >>> x = g.add_input("x", TensorType("f32", ("N",)))
    >>> g.set_outputs([g.call("add", x, x)])
    >>> parse(str(g)) == g
    True
    >>> g.run(np.array([1.0, 2.0], np.float32))[0]
    array([2., 4.], dtype=float32)
"""

from slimgraph.ir.graph import Graph, Node, Value
from slimgraph.ir.interpreter import run
from slimgraph.ir.parser import parse
from slimgraph.ir.printer import print_graph
from slimgraph.ir.registry import Attr, In, OpDef, all_ops, define_op, get_op
from slimgraph.ir.serialize import load
from slimgraph.ir.types import DType, TensorType
from slimgraph.ir.verifier import verify

__all__ = [
    "Attr",
    "DType",
    "Graph",
    "In",
    "Node",
    "OpDef",
    "TensorType",
    "Value",
    "all_ops",
    "define_op",
    "get_op",
    "load",
    "parse",
    "print_graph",
    "run",
    "verify",
]

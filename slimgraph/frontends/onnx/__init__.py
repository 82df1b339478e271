"""The ONNX frontend: :func:`from_onnx` turns an ONNX model into a slimgraph Graph.

Written and tested for opsets 6 to 21 of the default domain. Initializers (also those listed as graph
inputs, as older models do) become ``const`` nodes named after them; Constant,
ConstantOfShape and shape arithmetic (Shape, Gather, Concat, Unsqueeze, ...)
fold on import. ONNX tensor names become value names and each node's ``loc``
is the ONNX node name (``OpType_<index>`` when it has none). Unsupported ops
are reported all at once in one :class:`UnsupportedOpsError`.

Example::

    >>> import numpy as np
    >>> from onnx import TensorProto, helper
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    >>> model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    >>> g = from_onnx(model, dynamic_batch=True)
    >>> g.run(np.array([[-1, 2, -3, 4], [5, -6, 7, -8]], np.float32))[0]
    array([[0., 2., 0., 4.],
           [5., 0., 7., 0.]], dtype=float32)
"""

from __future__ import annotations

import os
from typing import Union

import onnx

from slimgraph.frontends.onnx.importer import Importer, UnsupportedOpsError
from slimgraph.frontends.onnx.loader import read_model
from slimgraph.frontends.onnx.registry import CONVERTERS
from slimgraph.ir.graph import Graph


def from_onnx(model_or_path: Union[onnx.ModelProto, str, os.PathLike], dynamic_batch: bool = False) -> Graph:
    """Import an ONNX model (a ModelProto, never modified, or a path to a .onnx file).

    With ``dynamic_batch`` axis 0 of every graph input becomes the symbol ``N``
    and stays symbolic through the graph (a Reshape whose constant target starts
    with the batch of 1 the model was exported with copies ``N`` instead). Raises
    FrontendError (file problems, unconvertible nodes) or its subclass
    UnsupportedOpsError, which lists every op type without a converter.
    """
    model, source = read_model(model_or_path)
    return Importer(model, source, dynamic_batch=dynamic_batch).run()


def supported_ops() -> list[str]:
    """The ONNX op types this frontend converts."""
    return sorted(CONVERTERS)


__all__ = ["UnsupportedOpsError", "from_onnx", "supported_ops"]

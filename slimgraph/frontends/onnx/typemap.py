"""ONNX element types and value infos as slimgraph types.

Example::

    >>> from onnx import TensorProto, helper
    >>> vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, None])
    >>> str(value_info_type(vi, dynamic_batch=False))
    'f32[batch,3,x_d2]'
"""

from __future__ import annotations

import re

from onnx import TensorProto, ValueInfoProto, helper

from slimgraph.errors import FrontendError, GraphError
from slimgraph.ir.types import DType, TensorType

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BATCH = "N"


def onnx_dtype(elem_type: int, what: str) -> DType:
    """The DType of an ONNX element type; FrontendError naming ``what`` when slimgraph has none."""
    try:
        return DType.of(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError, GraphError):
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type
        valid = ", ".join(d.name for d in DType)
        raise FrontendError(f"{what} has ONNX type {name}, which slimgraph does not support (valid: {valid})") from None


def value_info_type(vi: ValueInfoProto, dynamic_batch: bool) -> TensorType:
    """The TensorType of a graph input.

    Named dims (``dim_param``) become symbols of that name when it is an identifier;
    axis 0 otherwise becomes ``N``, and any other axis the name made an identifier
    (``<input>_d<axis>`` when it has none). With ``dynamic_batch`` axis 0 is always ``N``.
    """
    what = f"graph input '{vi.name}'"
    if not vi.type.HasField("tensor_type"):
        raise FrontendError(f"{what} is not a tensor (sequences, maps and optionals are not supported)")
    tensor = vi.type.tensor_type
    dtype = onnx_dtype(tensor.elem_type, what)
    if not tensor.HasField("shape"):
        raise FrontendError(f"{what} has no shape; give it one (rank and dims) in the model")
    dims: list = []
    for axis, dim in enumerate(tensor.shape.dim):
        if axis == 0 and dynamic_batch:
            dims.append(BATCH)
        elif dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and _IDENTIFIER.match(dim.dim_param):
            dims.append(dim.dim_param)
        elif axis == 0:
            dims.append(BATCH)
        else:
            dims.append(_symbol(dim.dim_param or f"{vi.name}_d{axis}"))
    return TensorType(dtype, tuple(dims))


def _symbol(text: str) -> str:
    # Tensor names may hold any character; a symbol must be an identifier.
    sym = re.sub(r"\W", "_", text)
    return sym if _IDENTIFIER.match(sym) else f"s_{sym}"

"""What a converter sees of the node it converts: :class:`NodeContext`.

Operands are slimgraph Values (tensors computed at run time) or numpy arrays
(known at import: initializers, Constants and everything computed from them
alone). :meth:`NodeContext.emit` adds an IR op; when every operand is known it
evaluates the op with its numpy reference instead, so shape arithmetic and
constant subgraphs fold on import.

Example, a converter (``registry.converter`` registers it)::

    @converter("ScaledRelu", domain="com.example")
    def _scaled_relu(ctx):
        scale = ctx.const(1, "the scale")           # must be known at import
        return ctx.emit("mul", ctx.emit("relu", ctx.input(0)), scale)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import numpy as np
from onnx import AttributeProto, NodeProto, helper

from slimgraph.errors import FrontendError
from slimgraph.frontends.onnx.symbolic import is_symbolic
from slimgraph.ir.graph import Value
from slimgraph.ir.types import DType

if TYPE_CHECKING:
    from slimgraph.frontends.onnx.importer import Importer

#: A converter's operand: a run-time Value or an array known at import
#: (an object array is a shape vector with symbolic dims).
Operand = Union[Value, np.ndarray]

_REQUIRED = object()


class NodeContext:
    """One ONNX node being converted: its attributes, inputs and the model's opset."""

    def __init__(self, importer: "Importer", node: NodeProto, index: int):
        self.node = node
        self.op_type = node.op_type
        self.opset: int = importer.opset
        self.dynamic_batch: bool = importer.dynamic_batch
        self.loc: str = node.name or f"{node.op_type}_{index}"
        self._importer = importer
        # Values this node's emits created; the importer renames the returned ones to the ONNX outputs.
        self.created: list[Value] = []

    # -- attributes -----------------------------------------------------------

    def attr(self, name: str, default: Any = _REQUIRED) -> Any:
        """An attribute as plain Python data (lists as tuples, tensors as arrays)."""
        for attribute in self.node.attribute:
            if attribute.name == name:
                return self._decode(attribute)
        if default is _REQUIRED:
            raise self.error(f"the required attribute '{name}' is missing")
        return default

    def has_attr(self, name: str) -> bool:
        return any(a.name == name for a in self.node.attribute)

    def _decode(self, attribute: AttributeProto) -> Any:
        if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            raise self.error(f"attribute '{attribute.name}' holds a sub-graph, which is not supported")
        if attribute.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS):
            raise self.error(f"attribute '{attribute.name}' holds a sparse tensor, which is not supported")
        if attribute.type == AttributeProto.TENSOR:
            return self._importer.tensor_to_array(attribute.t, f"attribute '{attribute.name}' of {self.where}")
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, list):
            return tuple(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in value)
        return value

    # -- inputs -------------------------------------------------------------------

    @property
    def num_inputs(self) -> int:
        """Inputs given, counting empty (skipped optional) ones in the middle."""
        return len(self.node.input)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def input(self, i: int) -> Operand:
        """Input ``i`` as a Value or, when known at import, an array."""
        if not self.has_input(i):
            raise self.error(f"input {i} is missing")
        return self._importer.lookup(self.node.input[i], self)

    def value(self, i: int) -> Value:
        """Input ``i`` as a graph Value (a known array becomes a const node)."""
        return self._importer.materialize(self.input(i), self)

    def const(self, i: int, what: str) -> np.ndarray:
        """Input ``i``, which must be known at import; ``what`` says what it is for the error."""
        operand = self.input(i)
        if isinstance(operand, np.ndarray) and not is_symbolic(operand):
            return operand
        reason = "depends on symbolic dims" if isinstance(operand, np.ndarray) else "is computed at run time"
        raise self.error(
            f"input {i} ('{self.node.input[i]}', {what}) must be known at import "
            f"(an initializer or computed from constants), but it {reason}"
        )

    def ints(self, i: int, what: str) -> tuple[int, ...]:
        """A constant integer input as a tuple (scalars give one element)."""
        return tuple(int(v) for v in self.const(i, what).ravel())

    def optional_ints(self, i: int, what: str) -> tuple[int, ...] | None:
        return self.ints(i, what) if self.has_input(i) else None

    def shape(self, i: int) -> tuple:
        """The shape of input ``i`` (dims are ints or symbols)."""
        return self.shape_of(self.input(i))

    @staticmethod
    def shape_of(operand: Operand) -> tuple:
        return operand.type.shape if isinstance(operand, Value) else tuple(operand.shape)

    def rank(self, i: int) -> int:
        return len(self.shape(i))

    def dtype(self, i: int) -> DType:
        return self.dtype_of(self.input(i))

    def dtype_of(self, operand: Operand) -> DType:
        if isinstance(operand, Value):
            return operand.type.dtype
        return self._importer.array_dtype(operand, self)

    # -- outputs ------------------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        return len(self.node.output)

    def output_used(self, i: int) -> bool:
        """Whether output ``i`` exists and a later node or the graph reads it."""
        return i < len(self.node.output) and self._importer.is_consumed(self.node.output[i])

    # -- building -------------------------------------------------------------------

    def emit(self, op: str, *inputs: Operand, **attrs: Any) -> Any:
        """Apply IR op ``op``; folded to an array when every input is known.

        Returns one operand, or a tuple for multi-output ops.
        """
        return self._importer.emit(self, op, inputs, attrs)

    def scalar(self, value: float | int, like: Operand) -> np.ndarray:
        """A 0-d array of ``value`` in the dtype of ``like`` (for arithmetic with it)."""
        dtype = like.type.dtype.numpy if isinstance(like, Value) else like.dtype
        return np.asarray(value, dtype=dtype)

    @property
    def where(self) -> str:
        return f"node '{self.loc}' ({self.op_type})"

    def error(self, message: str) -> FrontendError:
        """A FrontendError naming the model and this node."""
        return FrontendError(f"{self._importer.source}: {self.where}: {message}")

"""The state one torch import builds up: the Graph, named weights, symbolic dims, locations.

Converters receive a :class:`Context` and call :meth:`Context.call` to add IR
nodes; the context names each new value after the FX node being converted and
stamps it with that node's source location, so converters never deal with
names or locations themselves.

Example::

    >>> import torch
    >>> from slimgraph.frontends.torch.context import Context
    >>> ctx = Context("demo")
    >>> w = ctx.param("fc.weight", torch.ones(3, 4))
    >>> x = ctx.graph.add_input("x", ctx.tensor_type(torch.zeros(2, 4)))
    >>> str(ctx.call("linear", x, w).type)
    'f32[2,3]'
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, Sequence

import ml_dtypes
import numpy as np
import torch

from slimgraph.errors import FrontendError, SlimgraphWarning
from slimgraph.ir import DType, Graph, TensorType, Value
from slimgraph.ir.types import dim_mul

#: The batch symbol used for ``dynamic_batch=True``.
BATCH = "N"

_DTYPES = {
    torch.float32: DType.float32,
    torch.float64: DType.float64,
    torch.float16: DType.float16,
    torch.bfloat16: DType.bfloat16,
    torch.int8: DType.int8,
    torch.uint8: DType.uint8,
    torch.int32: DType.int32,
    torch.int64: DType.int64,
    torch.bool: DType.bool,
}
_TORCH_DTYPES = {v: k for k, v in _DTYPES.items()}


def ir_dtype(dtype: torch.dtype, where: str = "") -> DType:
    """The IR dtype of a torch dtype."""
    try:
        return _DTYPES[dtype]
    except KeyError:
        valid = ", ".join(str(d).replace("torch.", "") for d in _DTYPES)
        raise FrontendError(f"{where}dtype {dtype} has no slimgraph dtype; supported: {valid}") from None


def torch_dtype(dtype: DType) -> torch.dtype:
    """The torch dtype of an IR dtype (for ``x.dtype`` in traced code)."""
    return _TORCH_DTYPES[dtype]


def to_numpy(tensor: torch.Tensor, name: str = "tensor") -> np.ndarray:
    """A numpy copy of a tensor (bf16 through ml_dtypes)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    ir_dtype(tensor.dtype, f"{name}: ")
    return tensor.numpy().copy()


def warn_frozen_buffers(module_name: str, names: Sequence[str]) -> None:
    """Warn that ``forward`` updates these buffers: the graph holds each at the value one call gives it."""
    if names:
        warnings.warn(
            f"module {module_name}: forward updates the buffer{'s' if len(names) > 1 else ''} "
            f"{', '.join(sorted(set(names)))}; the graph keeps the value one call gives each, "
            "so calls of the compiled model will not update it further",
            SlimgraphWarning,
            stacklevel=2,
        )


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block, then restore each one's own flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


class Context:
    """Builds one Graph from one traced torch program.

    ``loc`` and ``base`` describe the FX node being converted: every value
    :meth:`call` creates is named after ``base`` and located at ``loc``.
    ``symbols`` maps torch's shape symbols (``s0``) to IR dims (``N``).
    """

    def __init__(self, name: str):
        self.graph = Graph(name)
        self.loc: str | None = None
        self.base = "v"
        self.symbols: dict[str, str] = {}
        self._params: dict[str, Value] = {}
        self._by_tensor: dict[int, Value] = {}

    # -- building ------------------------------------------------------------

    def call(self, op: str, *inputs: Value, **attrs: Any):
        """Add ``op`` at the current location; returns its output (a tuple if several)."""
        names = [f"{self.base}_{op}"] * max(1, len(attrs.get("sizes", ())))  # split has one output per size
        node = self.graph.add_node(op, inputs, attrs, names=names, loc=self.loc)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def const(self, value: Any, dtype: DType | None = None) -> Value:
        """A constant from a number or array, in ``dtype`` when given (else a float is f32)."""
        array = np.asarray(value, dtype=None if dtype is None else dtype.numpy)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)
        node = self.graph.add_node("const", [], {"value": array}, names=[f"{self.base}_const"], loc=self.loc)
        return node.output

    def param(self, name: str, tensor: torch.Tensor | None = None) -> Value:
        """The constant named ``name`` (a torch state_dict name), created on first use.

        A tensor registered under several names (tied weights) is one constant,
        named by the first.
        """
        if name not in self._params:
            if tensor is None:
                raise FrontendError(f"no parameter, buffer or constant named {name!r}")
            if id(tensor) not in self._by_tensor:
                node = self.graph.add_node("const", [], {"value": to_numpy(tensor, name)}, names=[name])
                self._by_tensor[id(tensor)] = node.output
            self._params[name] = self._by_tensor[id(tensor)]
        return self._params[name]

    def tensor_type(self, tensor: torch.Tensor, dynamic_batch: bool = False) -> TensorType:
        """The IR type of an example tensor; ``dynamic_batch`` makes axis 0 the symbol N."""
        shape = tuple(int(d) for d in tensor.shape)
        if dynamic_batch and shape:
            shape = (BATCH,) + shape[1:]
        return TensorType(ir_dtype(tensor.dtype), shape)

    # -- symbolic sizes ---------------------------------------------------------

    def dim(self, size: Any) -> int | str:
        """An IR dim for a torch size: an int, or a SymInt over the batch symbol."""
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            return int(size)
        if isinstance(size, str):
            return size
        if isinstance(size, torch.SymInt):
            return self._sym_expr(size.node.expr)
        raise FrontendError(f"{self.where()}expected a size, got {type(size).__name__} {size!r}")

    def _sym_expr(self, expr: Any) -> int | str:
        if expr.is_Integer:
            return int(expr)
        if expr.is_Symbol and str(expr) in self.symbols:
            return self.symbols[str(expr)]
        if expr.is_Mul:
            out: int | str = 1
            for factor in expr.args:
                out = dim_mul(out, self._sym_expr(factor))
            return out
        raise FrontendError(
            f"{self.where()}symbolic size {expr} is not a multiple of the batch size; "
            "slimgraph keeps only products of the batch symbol"
        )

    def where(self) -> str:
        """``"loc: "`` for messages, or empty when the location is unknown."""
        return f"{self.loc}: " if self.loc else ""

    # -- finishing -------------------------------------------------------------

    def finish(self, outputs: list[Value]) -> Graph:
        """Set the outputs and drop nodes nothing reads (unused weights, dead views)."""
        self.graph.set_outputs(outputs)
        live = {id(v) for v in outputs}
        for node in reversed(list(self.graph.nodes)):
            if any(id(v) in live for v in node.outputs):
                live.update(id(v) for v in node.inputs)
            else:
                self.graph.remove_node(node)
        return self.graph

"""A Graph as a ``torch.nn.Module``, and the fine-tuned weights back into the Graph.

:func:`to_torch` makes a module whose parameters are the graph's float
weights, named exactly as the graph's constants (``features.0.weight`` is a
parameter ``weight`` of a submodule ``features.0``, so state dicts line up
with the original torch model), and whose ``forward`` runs the graph op by
op in torch. Batch norms run in inference form (their statistics are
buffers, not trained). With ``quant_aware=True`` a quantized (QDQ) graph
trains on its grid: each linear-quantized integer weight read only by
``dequantize`` becomes a float parameter (its dequantized value) that every
call rounds to the grid with a straight-through estimator, and each
activation ``quantize`` rounds the same way; :func:`load_weights` writes the
parameters back as integer codes on the same scales. :func:`load_weights` writes a module's (fine-tuned)
tensors back into a copy of the graph by name, keeping its structure;
re-importing the module with ``slimgraph.frontends.from_torch`` works too.

Example::

    >>> import numpy as np, torch
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> g.set_outputs([g.call("linear", x, g.const(np.eye(2, 4, dtype=np.float32), name="fc.weight"))])
    >>> m = to_torch(g)
    >>> [name for name, _ in m.named_parameters()]
    ['fc.weight']
    >>> m(torch.ones(3, 4)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from slimgraph.backends.torch.ops import TORCH_OPS, quantize_codes
from slimgraph.errors import BackendError
from slimgraph.ir.graph import Graph, Value
from slimgraph.ir.registry import get_op
from slimgraph.ir.types import DType

#: (op, input index) pairs whose float constant is a trainable parameter; other constants are buffers.
_TRAINABLE = {
    ("conv", 1), ("conv", 2), ("conv_transpose", 1), ("conv_transpose", 2),
    ("linear", 1), ("linear", 2), ("matmul", 1),
    ("batch_norm", 1), ("batch_norm", 2), ("instance_norm", 1), ("instance_norm", 2),
    ("group_norm", 1), ("group_norm", 2),
    ("layer_norm", 1), ("layer_norm", 2), ("prelu", 1), ("codebook_decode", 1),
}  # fmt: skip


class GraphModule(nn.Module):
    """Runs a slimgraph Graph op by op in torch; see :func:`to_torch`."""

    def __init__(self, graph: Graph, keep_zeros: "bool | Graph" = False, quant_aware: bool = False):
        super().__init__()
        _check_supported(graph)
        self.graph = graph
        self.quant_aware = quant_aware
        self._names: dict[str, str] = {}
        #: graph constant -> the quantize attributes of its grid, for weights trained as float latents
        self._grids: dict[str, dict[str, Any]] = {}
        before = {n.output.name: n.output.const_value for n in keep_zeros.nodes if n.op == "const"} \
            if isinstance(keep_zeros, Graph) else None
        for node in graph.nodes:
            if node.op != "const":
                continue
            value = node.output
            array = _torch_ready(value.const_value)
            grid = _weight_grid(value) if quant_aware else None
            held = _held_zeros(value.name, array, grid, before) if keep_zeros is not False else None
            if grid is not None:
                self._grids[value.name] = grid
                array = get_op("dequantize").impl(array, **_dequantize_attrs(grid))
            trainable = grid is not None or value.type.dtype.is_float and _is_weight(value)
            self._names[value.name] = _attach(self, value.name, array, trainable, held)

    def forward(self, *inputs: torch.Tensor) -> Any:
        """Run the graph on its inputs (positional, in the graph's order)."""
        if len(inputs) != len(self.graph.inputs):
            raise BackendError(f"graph @{self.graph.name} takes {len(self.graph.inputs)} inputs, got {len(inputs)}")
        outs = self._run(self.graph, inputs, top=True)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run(self, graph: Graph, inputs: Sequence[torch.Tensor], top: bool) -> list[torch.Tensor]:
        """The outputs of ``graph`` (the module's graph, or a fused node's body) on ``inputs``."""
        env: dict[int, torch.Tensor] = {id(v): x for v, x in zip(graph.inputs, inputs)}
        for node in graph.nodes:
            if node.op == "const":
                env[id(node.output)] = self._const(node.output) if top else torch.from_numpy(
                    _torch_ready(node.output.const_value))
                continue
            args = [env[id(v)] for v in node.inputs]
            if node.op == "fused":
                result = tuple(self._run(node.attrs["body"], args, top=False))
            elif self.quant_aware and node.op == "quantize":
                # float codes, so that the gradient reaches the layers before
                result = quantize_codes(*args, **node.attrs, ste=True)
            else:
                result = TORCH_OPS[node.op](*args, **node.attrs)
            for out, t in zip(node.outputs, result if isinstance(result, tuple) else (result,)):
                env[id(out)] = t
        return [env[id(v)] for v in graph.outputs]

    def _const(self, value: Value) -> torch.Tensor:
        tensor = self.get_tensor(value.name)
        grid = self._grids.get(value.name)
        return tensor if grid is None else quantize_codes(tensor, **grid, ste=True)

    def get_tensor(self, const_name: str) -> torch.Tensor:
        """The parameter or buffer holding the graph constant ``const_name``."""
        target = self._names[const_name]
        try:
            return self.get_parameter(target)
        except AttributeError:
            return self.get_buffer(target)

    def const_array(self, const_name: str) -> np.ndarray:
        """The value of graph constant ``const_name`` as the graph stores it: a weight trained
        on its grid is rounded to its integer codes, exactly as the forward pass rounds it."""
        tensor = self.get_tensor(const_name).detach().cpu()
        grid = self._grids.get(const_name)
        if grid is None:
            return tensor.numpy()
        return get_op("quantize").impl(tensor.numpy(), **grid)


def _weight_grid(value: Value) -> dict[str, Any] | None:
    """The quantize attributes of an integer constant that only linear ``dequantize`` s with one
    set of parameters read (a QDQ weight or bias), or None."""
    users = value.users
    if value.type.dtype.is_float or not users or any(u.op != "dequantize" for u in users):
        return None
    attrs = {k: v for k, v in users[0].attrs.items() if k != "to"}
    if attrs["scheme"] != "linear" or any({k: v for k, v in u.attrs.items() if k != "to"} != attrs for u in users):
        return None
    return {**attrs, "dtype": value.type.dtype}


def _dequantize_attrs(grid: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in grid.items() if k != "dtype"}, "to": DType.float32}


def _torch_ready(array: np.ndarray) -> np.ndarray:
    """A copy of a constant that torch takes: int4 (log2 and int4 codes), which torch lacks, widened to int8."""
    return np.array(array, np.int8) if array.dtype == DType.int4.numpy else np.array(array)


def _held_zeros(name: str, array: np.ndarray, grid: dict[str, Any] | None,
                before: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """The entries of constant ``name`` that fine-tuning holds at zero, or None.

    Every zero, unless ``before`` (the constants of the graph this one was compressed from) shows
    that a quantized weight was not pruned: when each of its zero codes is a weight before (named
    as this one, or as it before its ``.q``) that quantizes to zero, rounding made them, and they
    train like any other code. One pruned zero makes the whole tensor held: a pruned weight that
    would also round to zero cannot be told apart."""
    zero = array == (np.asarray(grid["zero_point"]).reshape(_grid_shape(grid, array)) if grid else 0)
    if not zero.any():
        return None
    if grid is None or before is None:
        return zero
    source = before.get(name.removesuffix(".q")) if name.endswith(".q") else before.get(name)
    if source is None or np.shape(source) != array.shape or not np.issubdtype(np.asarray(source).dtype, np.floating):
        return zero
    attrs = {k: v for k, v in grid.items() if k != "dtype"}
    requantized = get_op("quantize").impl(np.asarray(source, np.float32), dtype=grid["dtype"], **attrs)
    return zero if (zero & (requantized != array)).any() else None


def _grid_shape(grid: dict[str, Any], array: np.ndarray) -> tuple[int, ...]:
    """The shape a grid's per-axis parameters broadcast to against ``array``."""
    if len(grid["zero_point"]) == 1:
        return ()
    shape = [1] * array.ndim
    shape[grid["axis"]] = -1
    return tuple(shape)


def _attach(root: nn.Module, name: str, array: np.ndarray, trainable: bool, held: np.ndarray | None) -> str:
    """Register ``array`` under the dotted ``name`` (submodules for the dots) and return
    the target name; a name that clashes with the tree is flattened (dots to underscores).
    The gradient of a trainable one is masked where ``held``."""
    for target in (name, name.replace(".", "_")):
        parent, _, leaf = target.rpartition(".")
        module = _submodule(root, parent.split(".") if parent else [])
        if module is not None and leaf and not hasattr(module, leaf):
            break
    else:
        raise BackendError(f"cannot name a torch parameter after graph constant %{name}")
    tensor = torch.from_numpy(array.copy())
    if not trainable:
        module.register_buffer(leaf, tensor)
        return target
    param = nn.Parameter(tensor)
    module.register_parameter(leaf, param)
    if held is not None:
        mask = torch.from_numpy(~held).to(tensor.dtype)
        # Zero gradients keep pruned weights at exactly zero under SGD and Adam.
        param.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))
    return target


def _submodule(root: nn.Module, path: list[str]) -> nn.Module | None:
    """The submodule at ``path``, created as needed; None if a non-module attribute is in the way."""
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            if not part or hasattr(module, part):
                return None
            child = nn.Module()
            module.add_module(part, child)
        module = child
    return module


def _is_weight(value: Value) -> bool:
    """Whether a constant is read as a trainable weight, directly or inside a fused node's body."""
    for user in value.users:
        for i, v in enumerate(user.inputs):
            if v is not value:
                continue
            if (user.op, i) in _TRAINABLE or user.op == "fused" and _is_weight(user.attrs["body"].inputs[i]):
                return True
    return False


def _all_nodes(graph: Graph) -> list:
    """The nodes of ``graph`` and of its fused nodes' bodies."""
    nodes, stack = [], [graph]
    while stack:  # regions nest at most MAX_REGION_DEPTH levels; no recursion needed
        g = stack.pop()
        nodes += g.nodes
        stack += [n.attrs["body"] for n in g.nodes if n.op == "fused"]
    return nodes


def _check_supported(graph: Graph) -> None:
    nodes = _all_nodes(graph)
    missing = Counter(n.op for n in nodes if n.op not in ("const", "fused") and n.op not in TORCH_OPS)
    if missing:
        first = {op: next(n for n in nodes if n.op == op) for op in missing}
        listed = "; ".join(f"{op} x{count} (first: {first[op].describe()})" for op, count in sorted(missing.items()))
        raise BackendError(f"the torch backend cannot run graph @{graph.name}: unsupported ops: {listed}")


def to_torch(graph: Graph, keep_zeros: "bool | Graph" = False, quant_aware: bool = False) -> GraphModule:
    """A ``torch.nn.Module`` running ``graph``; parameters are its float weights, named as its constants.

    ``keep_zeros=True`` masks the gradients of weights that hold zeros, so that
    fine-tuning a magnitude-pruned graph keeps its sparsity; given the graph it was
    compressed from instead, a quantized weight whose zero codes all come from
    rounding that graph's weight trains them too. ``quant_aware=True``
    trains a QDQ graph's integer weights on their grid (see the module docstring).
    """
    if not isinstance(graph, Graph):
        raise BackendError(f"to_torch: graph must be a slimgraph Graph, got a {type(graph).__name__}")
    # torch.export binds arguments by the forward's signature: give it one
    # parameter per graph input (a class per graph, named after the graph).
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
        inspect.Parameter(name if name.isidentifier() else f"input{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for i, name in enumerate(v.name for v in graph.inputs)
    ]

    def forward(self: GraphModule, *inputs: torch.Tensor) -> Any:
        return GraphModule.forward(self, *inputs)

    forward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    name = graph.name if graph.name.isidentifier() else "GraphModule"
    return type(name, (GraphModule,), {"forward": forward, "__doc__": GraphModule.__doc__})(
        graph.clone(), keep_zeros=keep_zeros, quant_aware=quant_aware
    )


def load_weights(graph: Graph, module: nn.Module) -> Graph:
    """A copy of ``graph`` whose constants take the values of ``module``'s tensors of the same names.

    ``module`` is a :class:`GraphModule` (or any module whose state dict uses the
    graph's constant names); shapes must match, so a pruned structure is kept.
    A quantization-aware module's weights come back as integer codes on their grid.
    """
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    names = module._names if isinstance(module, GraphModule) else {}
    out = graph.clone()
    for node in out.nodes:
        if node.op != "const":
            continue
        key = names.get(node.output.name, node.output.name)
        if key not in state:
            continue
        if isinstance(module, GraphModule):
            state[key] = module.const_array(node.output.name)
        array = state[key].astype(node.output.type.dtype.numpy, copy=False)
        if array.shape != node.output.type.shape:
            raise BackendError(
                f"load_weights: module tensor {key!r} has shape {list(array.shape)}, "
                f"but graph constant %{node.output.name} is {node.output.type}"
            )
        out.set_const(node.output, array)
    return out

"""The torch.export path: export in eval mode, decompose to core ATen, convert the FX graph.

Parameters, buffers and lifted constants arrive as placeholders; the export
signature maps each to its state_dict name, which becomes the IR constant's
name. With ``dynamic_batch`` axis 0 of every input is one ``torch.export.Dim``,
and torch's symbol for it (``s0``) maps to the IR symbol ``N``. Every
converted node is checked against torch's own shape and dtype metadata.

Example::

    >>> import torch
    >>> g = export_graph(torch.nn.Linear(4, 3), (torch.zeros(2, 4),), dynamic_batch=True)
    >>> [str(v.type) for v in g.outputs]
    ['f32[N,3]']
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any, Iterator

import torch
import torch.fx
from torch.export.graph_signature import InputKind, OutputKind

from slimgraph.dynamic import DynamicAxes
from slimgraph.errors import FrontendError
from slimgraph.frontends.torch import walker
from slimgraph.frontends.torch.context import BATCH, Context, evaluating, ir_dtype, warn_frozen_buffers
from slimgraph.frontends.torch.registry import ATEN, load_converters
from slimgraph.ir import Graph, TensorType, Value


def export(module: torch.nn.Module, inputs: tuple, dynamic_batch: bool,
           dynamic: DynamicAxes | None = None) -> torch.export.ExportedProgram:
    """torch.export in eval mode (the module's own flags restored), decomposed to core ATen.

    ``dynamic`` (input index -> axis -> DynamicDim) declares each named dim as one
    ``torch.export.Dim`` with its bounds. 0-d integer tensors that the module holds as plain
    attributes (see :func:`tensor_scalars`) are read as Python numbers, unless the module
    exports only with them as tensors."""
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim(BATCH, min=1)
        dynamic_shapes = tuple(
            {0: batch} if isinstance(x, torch.Tensor) and x.dim() > 0 else None for x in inputs
        )
    if dynamic:
        dims = {d.name: torch.export.Dim(d.name, min=d.min, max=d.max)
                for axes in dynamic.values() for d in axes.values()}
        dynamic_shapes = tuple({a: dims[d.name] for a, d in dynamic.get(i, {}).items()} or None
                               for i in range(len(inputs)))
    if dynamic_shapes is not None and _takes_varargs(module):
        dynamic_shapes = (dynamic_shapes,)  # forward(*inputs): the specs of the one tuple argument
    with evaluating(module), warnings.catch_warnings():
        # torch 2.13's own pytree deprecation noise, raised from inside export
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = None
        scalars = tensor_scalars(module)
        if scalars:
            try:
                with as_numbers(scalars):
                    program = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes)
            except Exception:  # noqa: BLE001 - its code needs them as tensors: export it as it is
                pass
        if program is None:
            program = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes)
        return program.run_decompositions(_decompositions())


def tensor_scalars(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.Tensor]]:
    """The plain attributes (neither parameter nor buffer) of ``module`` and its submodules that
    hold a 0-d integer or bool tensor, as ``(submodule, name, tensor)``.

    Code run under ``torch.jit.trace`` (``torch.onnx.export(dynamo=False)``) often stores such a
    tensor where it otherwise stores a Python int: ``transformers``' ``torch_int``, or Swin's
    window size clamped to a small feature map. torch.export lifts the tensor as a constant
    whose value it does not know, so a size computed from it is data-dependent and export fails
    (``Could not guard on data-dependent expression``), although eager runs the module fine."""
    found = []
    for sub in module.modules():
        for name, value in vars(sub).items():
            if (isinstance(value, torch.Tensor) and value.dim() == 0
                    and not value.is_floating_point() and not value.is_complex()):
                found.append((sub, name, value))
    return found


@contextlib.contextmanager
def as_numbers(scalars: list[tuple[torch.nn.Module, str, torch.Tensor]]) -> Iterator[None]:
    """Each of :func:`tensor_scalars`' attributes as its Python number for the block, then the
    tensor again: the module is left as it was.

    Example::

        >>> m = torch.nn.Linear(2, 2)
        >>> m.size = torch.tensor(7)
        >>> with as_numbers(tensor_scalars(m)):
        ...     m.size
        7
        >>> m.size
        tensor(7)
    """
    for sub, name, tensor in scalars:
        sub.__dict__[name] = tensor.item()
    try:
        yield
    finally:
        for sub, name, tensor in scalars:
            sub.__dict__[name] = tensor


def _takes_varargs(module: torch.nn.Module) -> bool:
    params = list(inspect.signature(module.forward).parameters.values())
    return bool(params) and params[0].kind is inspect.Parameter.VAR_POSITIONAL


def _decompositions() -> dict:
    """torch's core-ATen table less what the IR holds whole: scaled-dot-product attention (one
    op; torch's decomposition of it also trips over its own strides, GPT-2 fails to export
    without this) and the interpolations (one ``resize`` where the decomposition would leave a
    dozen arange/index ops)."""
    load_converters()
    table = torch.export.default_decompositions()
    table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
    for op in list(table.keys()):
        if "upsample" in str(op) and str(op) in ATEN:
            table.pop(op)
    return table


def export_graph(module: torch.nn.Module, inputs: tuple, dynamic_batch: bool = False,
                 dynamic: DynamicAxes | None = None) -> Graph:
    """Export ``module`` and convert the program (see :func:`convert_program`)."""
    return convert_program(export(module, inputs, dynamic_batch, dynamic), type(module).__name__, dynamic)


def convert_program(program: torch.export.ExportedProgram, name: str, dynamic: DynamicAxes | None = None) -> Graph:
    """Convert an ExportedProgram (already decomposed) to a Graph; ``dynamic``'s dims
    become IR symbols of their names."""
    graph = program.graph
    walker.check_supported(graph, None, f"module {name}")
    ctx = Context(name)
    specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    users = [n for n in placeholders if specs[n.name].kind == InputKind.USER_INPUT]
    for node in users:  # symbols first: every input's batch dim is the same Dim
        _bind_batch_symbol(ctx, node.meta.get("val"))
    for i, node in enumerate(users):
        for axis, dim in (dynamic or {}).get(i, {}).items():
            _bind_symbol(ctx, node.meta.get("val"), i, axis, dim.name)
    env = {node: _resolve(ctx, program, specs[node.name], node) for node in placeholders}
    outputs = walker.convert(ctx, graph, None, env.__getitem__, lambda n, r: _check(ctx, n, r))
    kinds = [spec.kind for spec in program.graph_signature.output_specs]
    warn_frozen_buffers(name, [spec.target for spec in program.graph_signature.output_specs
                               if spec.kind == OutputKind.BUFFER_MUTATION])
    selected = [v for v, kind in zip(outputs, kinds) if kind == OutputKind.USER_OUTPUT]
    return ctx.finish(walker.tensor_outputs(selected))


def _bind_batch_symbol(ctx: Context, val: Any) -> None:
    if isinstance(val, torch.Tensor) and val.dim() > 0 and isinstance(val.shape[0], torch.SymInt):
        expr = val.shape[0].node.expr
        if expr.is_Symbol:
            ctx.symbols[str(expr)] = BATCH


def _bind_symbol(ctx: Context, val: Any, index: int, axis: int, name: str) -> None:
    size = val.shape[axis] if isinstance(val, torch.Tensor) and axis < val.dim() else None
    if not isinstance(size, torch.SymInt) or not size.node.expr.is_Symbol:
        raise FrontendError(f"dynamic: input {index} axis {axis} ({name}): torch.export made it {size}, not a "
                            "symbol; the model's code fixes that size")
    ctx.symbols[str(size.node.expr)] = name


def _resolve(ctx: Context, program: torch.export.ExportedProgram, spec: Any, node: torch.fx.Node) -> Any:
    kind, target = spec.kind, spec.target
    if kind == InputKind.USER_INPUT:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return val  # a Python scalar input, specialized by export
        shape = tuple(ctx.dim(d) for d in val.shape)
        return ctx.graph.add_input(node.name, TensorType(ir_dtype(val.dtype, f"input {node.name}: "), shape))
    if kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
        tensor = program.state_dict.get(target)
        if tensor is None:
            tensor = program.constants.get(target)
        if not isinstance(tensor, torch.Tensor):
            raise FrontendError(f"{target}: exported {kind.name.lower()} is not a tensor")
        return ctx.param(target, tensor)
    raise FrontendError(f"input {node.name} of kind {kind.name} ({target}) is not supported")


def _check(ctx: Context, node: torch.fx.Node, result: Any) -> None:
    """Compare a converted node with torch's metadata; a mismatch is a converter bug, reported with its place."""
    vals = node.meta.get("val")
    pairs = zip(result, vals) if isinstance(result, tuple) and isinstance(vals, (tuple, list)) else [(result, vals)]
    for value, val in pairs:
        if not isinstance(value, Value) or not isinstance(val, torch.Tensor):
            continue
        expected = TensorType(ir_dtype(val.dtype), tuple(ctx.dim(d) for d in val.shape))
        if value.type != expected:
            raise FrontendError(
                f"{ctx.where()}{node.target} converted to {value.type} but torch computes {expected}; "
                "this is a slimgraph bug, please report it"
            )

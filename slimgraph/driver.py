"""The compile driver: model import, optimization and shape binding, shared by every entry point.

``slimgraph.compile`` (:mod:`slimgraph.api`), the narrowed variants of
:mod:`slimgraph.runtime.narrow` and the ledger all go through these steps: a
model becomes a Graph (:func:`import_model`), a pipeline runs on it with a
:class:`~slimgraph.passes.context.PassContext` (:func:`optimize`), its
symbolic dims get sizes (:func:`bind_shapes`) and the TVM backend builds it
(:func:`compile_graph`). It sits above the frontends and backends and below
the runtime, the ledger and the public API, so none of those imports another.

Example::

    >>> from slimgraph.demo import demo_model, demo_inputs
    >>> graph = import_model(demo_model(), demo_inputs(batch=2))
    >>> bind_shapes(optimize(graph, "default"), demo_inputs(batch=2), None)
    {'N': 2}
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from slimgraph.errors import ArgumentError, BackendError, FrontendError
from slimgraph.ir.graph import Graph
from slimgraph.ir.types import bind_dim
from slimgraph.passes.context import PassContext

if TYPE_CHECKING:
    from slimgraph.dynamic import DynamicAxes


def compile_graph(
    graph: Graph,
    target: str = "llvm",
    pipeline: str | None = "default",
    *,
    example_inputs: Sequence[Any] | None = None,
    shapes: Mapping[str, int] | None = None,
    dynamic: Any = None,
    axes: DynamicAxes | None = None,
    calibration_data: Any = None,
    tune: int = 0,
    database: str | os.PathLike | None = None,
    dump_ir: str | os.PathLike | None = None,
    progress: bool | Callable[[str, int, int], None] = False,
    weights: str = "auto",
    remote: str | None = None,
    precision: str = "fp32",
):
    """Optimize ``graph`` with ``pipeline`` and build it for ``target``: a CompiledModel.

    The arguments are :func:`slimgraph.compile`'s (checked there); ``axes`` are
    the dynamic axes a torch module was exported with (:func:`torch_dynamic_axes`).
    """
    from slimgraph.backends.tvm import build
    from slimgraph.backends.tvm.targets import parse_target

    check_shapes_names(graph, shapes)
    bounds = dynamic_bounds(graph, dynamic, axes)
    ctx = PassContext(calibration_data=calibration_data, target=parse_target(target))
    optimized = optimize(graph, pipeline, ctx, precision)
    if dump_ir is not None:
        try:
            optimized.save(dump_ir)
        except OSError as exc:
            raise ArgumentError(f"dump_ir={str(dump_ir)!r}: cannot write the IR there: {exc.strerror or exc}") from None
    bindings = bind_shapes(optimized, example_inputs, shapes)
    for symbol, (low, high) in bounds.items():
        if not low <= bindings[symbol] <= high:
            raise ArgumentError(f"dynamic: the example size {symbol}={bindings[symbol]} is outside its bounds "
                                f"{low}..{high}")
    report = progress if callable(progress) else (ProgressBar(optimized.name) if progress else None)
    return build(
        optimized, target, bindings, tune=tune, database=None if database is None else str(database), progress=report,
        dynamic=bounds, weights=weights, remote=remote,
    )


def optimize(graph: Graph, pipeline: str | None, ctx: PassContext | None = None, precision: str = "fp32") -> Graph:
    """Run a pass pipeline (None: the graph as is) with the context ``ctx`` (calibration data, target, ...);
    ``precision="bf16"`` adds the ``bf16`` pass before the first ``fuse`` (else at the end)."""
    from slimgraph.passes import PassManager, ToBf16, VerifyInstrument, parse_pipeline

    passes = parse_pipeline(pipeline) if pipeline else []
    if precision == "bf16":
        at = next((i for i, p in enumerate(passes) if p.name == "fuse"), len(passes))
        passes.insert(at, ToBf16())
    if not passes:
        return graph
    return PassManager(passes, instruments=[VerifyInstrument()]).run(graph, ctx)


def import_model(model: Any, example_inputs: Sequence[Any] | None = None,
                 dynamic: DynamicAxes | None = None, *, dynamic_batch: bool = False) -> Graph:
    """The Graph of a torch module, ONNX model or path, IR file or Graph; a torch module's ``dynamic``
    axes are exported symbolic, and with ``dynamic_batch`` axis 0 of every input is the symbol ``N``."""
    if isinstance(model, Graph):
        return model
    if isinstance(model, (str, os.PathLike)):
        from slimgraph.frontends.model_spec import load_model

        return load_model(str(model))
    kind = type(model).__module__.split(".")[0]
    if kind == "onnx":
        from slimgraph.frontends import from_onnx

        return from_onnx(model)
    if kind == "torch" or is_torch_module(model):
        if example_inputs is None:
            raise FrontendError("compiling a torch module needs example_inputs (a tuple of tensors)")
        import torch

        from slimgraph.frontends import from_torch

        return from_torch(model, tuple(torch.as_tensor(x) for x in example_inputs), dynamic_batch=dynamic_batch,
                          dynamic=dynamic)
    raise FrontendError(
        f"cannot compile a {type(model).__name__}: pass a torch.nn.Module, an ONNX model or path, a .sg file or a Graph"
    )


def bind_shapes(graph: Graph, example_inputs: Sequence[Any] | None, shapes: Mapping[str, int] | None) -> dict[str, int]:
    """Sizes for the graph's symbolic dims: from example inputs, then ``shapes``, else 1."""
    bindings: dict[str, int] = dict(shapes or {})
    if example_inputs is not None:
        for value, array in zip(graph.inputs, example_inputs):
            for dim, size in zip(value.type.shape, tuple(array.shape)):
                if not bind_dim(dim, int(size), bindings):
                    raise BackendError(
                        f"example input %{value.name} has shape {list(array.shape)}, which does not fit {value.type}"
                    )
    for value in graph.inputs:
        for symbol in sorted(value.type.symbols):
            bindings.setdefault(symbol, 1)
    return bindings


def is_torch_module(model: Any) -> bool:
    """Whether ``model`` is a ``torch.nn.Module`` (False when torch is not installed)."""
    try:
        import torch

        return isinstance(model, torch.nn.Module)
    except ImportError:
        return False


def torch_dynamic_axes(model: Any, example_inputs: Sequence[Any] | None, dynamic: Any) -> DynamicAxes:
    """``dynamic`` checked against a torch module's example inputs and ``forward``'s argument names."""
    import inspect

    from slimgraph.dynamic import parse_dynamic

    if example_inputs is None:
        raise ArgumentError("dynamic: compiling a torch module with dynamic axes needs example_inputs")
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in params[: len(example_inputs)]]
    names += [None] * (len(example_inputs) - len(names))
    ranks = [len(getattr(x, "shape", ())) for x in example_inputs]
    axes = parse_dynamic(dynamic, len(example_inputs), names, ranks)
    for index, dims in axes.items():
        for axis, dim in dims.items():
            size = int(example_inputs[index].shape[axis])
            if not dim.min <= size <= dim.max:
                raise ArgumentError(f"dynamic: example input {index} axis {axis} has size {size}, outside the bounds "
                                    f"of {dim.name}: {dim.min}..{dim.max}")
    return axes


def dynamic_bounds(graph: Graph, dynamic: Any, axes: DynamicAxes | None) -> dict[str, tuple[int, int]]:
    """Each dynamic symbol of ``graph``'s inputs with its (min, max). A torch module's axes were
    exported under their names; in any other model each named axis must already be symbolic."""
    from slimgraph.dynamic import bounds_of, parse_dynamic

    if dynamic is None:
        return {}
    if axes is not None:
        return bounds_of(axes)
    axes = parse_dynamic(dynamic, len(graph.inputs), [v.name for v in graph.inputs],
                         [v.type.rank for v in graph.inputs])
    bounds: dict[str, tuple[int, int]] = {}
    for index, dims in axes.items():
        value = graph.inputs[index]
        for axis, dim in dims.items():
            symbol = value.type.shape[axis]
            if not isinstance(symbol, str) or "*" in symbol:
                raise ArgumentError(f"dynamic: input {index} (%{value.name}) axis {axis} is {symbol} in {value.type}; "
                                    "only an axis the model leaves symbolic (one name) can be dynamic here")
            if bounds.setdefault(symbol, (dim.min, dim.max)) != (dim.min, dim.max):
                raise ArgumentError(f"dynamic: symbol {symbol} is given two different bounds")
    return bounds


def check_shapes_names(graph: Graph, shapes: Mapping[str, int] | None) -> None:
    symbols = {s for v in graph.inputs for s in v.type.symbols}
    unknown = sorted(set(shapes or {}) - symbols)
    if unknown:
        have = ", ".join(sorted(symbols)) or "none (every input shape is fixed)"
        raise ArgumentError(f"shapes: {', '.join(map(repr, unknown))} names no symbolic dim of @{graph.name}'s inputs; "
                            f"its symbols: {have}")


class ProgressBar:
    """A tqdm bar on stderr fed by the backend's ``(step, done, total)`` callbacks."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def __call__(self, step: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=f"compile @{self.label}", unit="step", leave=True)
        self.bar.set_postfix_str(step)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()

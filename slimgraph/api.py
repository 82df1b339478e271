"""``slimgraph.compile``: frontend -> pass pipeline -> backend, in one call.

Example::

    >>> import numpy as np
    >>> from slimgraph.api import compile
    >>> from slimgraph.demo import demo_model, demo_inputs
    >>> model = compile(demo_model(), demo_inputs(batch=2))
    >>> model(*demo_inputs(batch=2)).shape
    (2, 10)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from slimgraph.arguments import check_example_inputs, check_int, check_writable_file, check_writable_folder
from slimgraph.errors import ArgumentError, BackendError, FrontendError
from slimgraph.ir.graph import Graph
from slimgraph.ir.types import bind_dim

if TYPE_CHECKING:
    from slimgraph.dynamic import DynamicAxes


def compile(  # noqa: A001 - the public name the design asks for
    model: Any,
    example_inputs: Sequence[Any] | None = None,
    target: str = "llvm",
    pipeline: str | None = "default",
    *,
    shapes: Mapping[str, int] | None = None,
    tune: int = 0,
    database: str | os.PathLike | None = None,
    dump_ir: str | os.PathLike | None = None,
    progress: bool | Callable[[str, int, int], None] = False,
    variants: Sequence[float] | None = None,
    batches: Sequence[int] | None = None,
    eval_data: Any = None,
    finetune: Callable | None = None,
    budget_ms: float | None = None,
    policy: Callable | None = None,
    calibration_data: Any = None,
    dynamic: Any = None,
    precision: str = "fp32",
):
    """Compile a model for ``target`` and return a CompiledModel.

    ``model`` is a ``torch.nn.Module`` (``example_inputs`` required), an ONNX
    ModelProto or ``.onnx`` path, an IR file (``.sg``) or a slimgraph Graph.
    ``pipeline`` is a pass pipeline (``"default"``, or text such as
    ``"fold-constants,fuse"``; None runs no passes). Symbolic dims take their
    sizes from ``example_inputs``, then ``shapes`` (``{"N": 8}``), else 1.
    ``tune=TRIALS`` tunes with MetaSchedule, keeping records in ``database``.
    ``dump_ir`` writes the optimized IR there; ``progress=True`` draws a
    progress bar on stderr (or pass a callback ``(step, done, total)``).

    ``dynamic`` (``{input: {axis: name}}``, or torch.export's ``dynamic_shapes``
    style with ``Dim``s; see :mod:`slimgraph.dynamic`) compiles those axes once
    for every size within their bounds: the kernels keep them symbolic. For a
    torch module they are exported as ``torch.export.Dim``s; in an ONNX model,
    IR file or Graph each named axis must already be symbolic, and its symbol
    takes the bounds.

    ``calibration_data`` (an iterable of input batches, or a CalibrationTable)
    calibrates every ``quantize`` pass of the pipeline; with ``variants``, input
    batches also re-estimate each pruned width's batch-norm statistics.

    ``variants=[1.0, 0.75, 0.5]`` builds narrowed variants by structured
    channel pruning and returns a GuardedModel that picks one per call (input
    guards for ``batches``, a latency ``budget_ms`` or a ``policy``); see
    :func:`slimgraph.runtime.narrow`.

    ``precision="bf16"`` (on CPUs with AVX512-BF16 or AMX-BF16 only) runs convs
    and matmuls on bf16 weights and activations with float32 sums, through the
    ``bf16`` pass placed before ``fuse`` (see :mod:`slimgraph.passes.bf16`);
    outputs differ from float32 by about 1e-2 relative::

        model = slimgraph.compile(resnet, [x], precision="bf16")
    """
    example_inputs = check_example_inputs(example_inputs)
    _check_compile_arguments(target, pipeline, shapes, tune, database, dump_ir, progress, variants, batches,
                             eval_data, finetune, budget_ms, policy, calibration_data)
    _check_precision(precision, target, variants)
    if dynamic is not None and variants is not None:
        raise ArgumentError("dynamic: not supported with variants=[...] (their guards pick fixed batch buckets)")
    axes = _torch_dynamic(model, example_inputs, dynamic) if dynamic is not None and _is_torch_module(model) else None
    if variants is not None:
        from slimgraph.runtime import narrow

        return narrow(model, example_inputs, variants, batches=batches, eval_data=eval_data, finetune=finetune,
                      target=target, pipeline=pipeline, budget_ms=budget_ms, policy=policy,
                      calibration_data=calibration_data)
    from slimgraph.backends.tvm import build

    graph = import_model(model, example_inputs, axes)
    _check_shapes_names(graph, shapes)
    bounds = _dynamic_bounds(graph, dynamic, axes)
    optimized = optimize(graph, pipeline, calibration_data, precision)
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
    compiled = build(
        optimized, target, bindings, tune=tune, database=None if database is None else str(database), progress=report,
        dynamic=bounds,
    )
    return compiled


def _check_compile_arguments(target, pipeline, shapes, tune, database, dump_ir, progress, variants, batches, eval_data,
                             finetune, budget_ms, policy, calibration_data) -> None:
    # Everything is checked before the import and the build, which can take minutes.
    from slimgraph.backends.tvm.targets import parse_target

    parse_target(target)
    if pipeline is not None and not isinstance(pipeline, str):
        raise ArgumentError(f"pipeline={pipeline!r}: give pipeline text such as 'default' or 'fold-constants,fuse', or None")
    passes = []
    if pipeline:
        from slimgraph.passes import parse_pipeline

        passes = parse_pipeline(pipeline)
    if calibration_data is not None:
        from slimgraph.passes.calibrate import CalibrationTable

        batches_given = isinstance(calibration_data, Iterable) and not isinstance(calibration_data, (str, bytes))
        if not (batches_given or isinstance(calibration_data, CalibrationTable)):
            raise ArgumentError(f"calibration_data: give an iterable of input batches or a CalibrationTable, got a "
                                f"{type(calibration_data).__name__}")
        if variants is None and not any(p.name == "quantize" for p in passes):
            raise ArgumentError(f"calibration_data: pipeline {pipeline!r} has no quantize pass to calibrate "
                                "(and without variants= there are no batch norms to re-estimate)")
    if shapes is not None:
        if not isinstance(shapes, Mapping):
            raise ArgumentError(f"shapes={shapes!r}: give a mapping from symbol to size, e.g. {{'N': 8}}")
        for key, size in shapes.items():
            if not isinstance(key, str):
                raise ArgumentError(f"shapes: key {key!r} is not a symbol name (a str such as 'N')")
            check_int(f"shapes[{key!r}]", size, minimum=1)
    check_int("tune", tune, minimum=0)
    if database is not None:
        check_writable_folder("database", database)
    if dump_ir is not None:
        check_writable_file("dump_ir", dump_ir)
    if not isinstance(progress, bool) and not callable(progress):
        raise ArgumentError(f"progress={progress!r}: give True, False or a function (step, done, total)")
    if variants is not None:
        ignored = [name for name, value in (("shapes", shapes), ("database", database), ("dump_ir", dump_ir))
                   if value is not None] + (["tune"] if tune else [])
        if ignored:
            raise ArgumentError(f"{', '.join(ignored)}: not supported with variants=[...]; leave them out")
    else:
        extra = [name for name, value in (("batches", batches), ("eval_data", eval_data), ("finetune", finetune),
                                          ("budget_ms", budget_ms), ("policy", policy)) if value is not None]
        if extra:
            raise ArgumentError(f"{', '.join(extra)}: only used with variants=[...] (narrowed variants); "
                                "give variants or leave them out")


#: What ``compile(precision=...)`` accepts.
PRECISIONS = ("fp32", "bf16")


def _check_precision(precision: Any, target: str, variants: Any) -> None:
    if precision not in PRECISIONS:
        raise ArgumentError(f"precision={precision!r}: choose from {', '.join(map(repr, PRECISIONS))}")
    if precision == "fp32":
        return
    if variants is not None:
        raise ArgumentError("precision='bf16': not supported with variants=[...]; leave one of them out")
    from slimgraph.backends.tvm.targets import parse_target

    spec = parse_target(target)
    if not (spec.has_cpu_features("avx512bf16") or spec.has_cpu_features("amx-bf16")):
        raise ArgumentError(f"precision='bf16' needs a CPU with AVX512-BF16 or AMX-BF16, and target {target!r} has "
                            "neither; use precision='fp32' there")


def _check_shapes_names(graph: Graph, shapes: Mapping[str, int] | None) -> None:
    symbols = {s for v in graph.inputs for s in v.type.symbols}
    unknown = sorted(set(shapes or {}) - symbols)
    if unknown:
        have = ", ".join(sorted(symbols)) or "none (every input shape is fixed)"
        raise ArgumentError(f"shapes: {', '.join(map(repr, unknown))} names no symbolic dim of @{graph.name}'s inputs; "
                            f"its symbols: {have}")


def _torch_dynamic(model: Any, example_inputs: Sequence[Any] | None, dynamic: Any) -> DynamicAxes:
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


def _dynamic_bounds(graph: Graph, dynamic: Any, axes: DynamicAxes | None) -> dict[str, tuple[int, int]]:
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


def import_model(model: Any, example_inputs: Sequence[Any] | None = None,
                 dynamic: DynamicAxes | None = None) -> Graph:
    """The Graph of a torch module, ONNX model or path, IR file or Graph; ``dynamic`` axes of a torch
    module are exported symbolic."""
    if isinstance(model, Graph):
        return model
    if isinstance(model, (str, os.PathLike)):
        from slimgraph.frontends.model_spec import load_model

        return load_model(str(model))
    kind = type(model).__module__.split(".")[0]
    if kind == "onnx":
        from slimgraph.frontends import from_onnx

        return from_onnx(model)
    if kind == "torch" or _is_torch_module(model):
        if example_inputs is None:
            raise FrontendError("compiling a torch module needs example_inputs (a tuple of tensors)")
        import torch

        from slimgraph.frontends import from_torch

        return from_torch(model, tuple(torch.as_tensor(x) for x in example_inputs), dynamic=dynamic)
    raise FrontendError(
        f"cannot compile a {type(model).__name__}: pass a torch.nn.Module, an ONNX model or path, a .sg file or a Graph"
    )


def optimize(graph: Graph, pipeline: str | None, calibration_data: Any = None, precision: str = "fp32") -> Graph:
    """Run a pass pipeline (None: the graph as is); ``quantize`` passes calibrate on ``calibration_data``;
    ``precision="bf16"`` adds the ``bf16`` pass before the first ``fuse`` (else at the end)."""
    from slimgraph.passes import PassManager, ToBf16, VerifyInstrument, parse_pipeline

    passes = parse_pipeline(pipeline) if pipeline else []
    if precision == "bf16":
        at = next((i for i, p in enumerate(passes) if p.name == "fuse"), len(passes))
        passes.insert(at, ToBf16())
    if not passes:
        return graph
    if calibration_data is not None:
        passes = [p.with_calibration(calibration_data) if p.name == "quantize" else p for p in passes]
    return PassManager(passes, instruments=[VerifyInstrument()]).run(graph)


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


def _is_torch_module(model: Any) -> bool:
    try:
        import torch

        return isinstance(model, torch.nn.Module)
    except ImportError:
        return False


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


def load(path: str | os.PathLike):
    """Load what slimgraph saved: a guarded set's folder (``GuardedModel.save``)
    gives a GuardedModel, a compiled model's folder (``CompiledModel.save``) a
    CompiledModel, an IR text file (``Graph.save``) a Graph.

    A saved folder is checked against its manifest first; a compiled folder holds
    native code that runs when it is loaded, so load only folders you trust."""
    from slimgraph.storage import folder_kind

    kind = folder_kind(path)
    if kind == "guarded model":
        from slimgraph.runtime import load_guarded

        return load_guarded(path)
    if kind is not None or os.path.isdir(path):
        from slimgraph.backends.tvm import load_compiled

        return load_compiled(path)
    from slimgraph.ir.serialize import load as load_graph

    return load_graph(path)

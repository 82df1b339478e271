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
from typing import Any, Callable, Iterable, Mapping, Sequence

from slimgraph.arguments import check_example_inputs, check_int, check_writable_file, check_writable_folder
from slimgraph.driver import bind_shapes, compile_graph, import_model, is_torch_module, optimize, torch_dynamic_axes
from slimgraph.errors import ArgumentError

__all__ = ["bind_shapes", "compile", "import_model", "load", "optimize"]


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
    weights: str = "auto",
    remote: str | None = None,
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
    is the pipeline's ``PassContext.calibration_data``: every pass that
    calibrates (``quantize``, ``reestimate-batch-norms``) reads it, and a
    ``finetune`` step distills on it; with
    ``variants``, input batches also re-estimate each pruned width's batch-norm
    statistics.

    ``remote="host:port"`` (a TVM RPC server) or ``"key@host:port"`` (a tracker)
    builds here, uploads the model and returns a model whose calls and
    ``benchmark()`` run there; ``tune=`` then measures through the tracker's
    boards. See :mod:`slimgraph.backends.tvm.remote`.

    ``variants=[1.0, 0.75, 0.5]`` builds narrowed variants by structured
    channel pruning and returns a GuardedModel that picks one per call (input
    guards for ``batches``, a latency ``budget_ms`` or a ``policy``); see
    :func:`slimgraph.runtime.narrow`.

    ``weights="compressed"`` (CPU targets) keeps weights that the pipeline compressed
    (``share-weights``, int4, log2, pruning) compressed in the model and its saved folder,
    decoded inside the kernels or run by sparse kernels; ``weights="decoded"`` stores them
    decoded and dense; ``weights="auto"`` (the default) keeps each kernel's form as measured on
    this machine: each kernel that differs is built and timed alone in both forms once, and the
    decision is kept in a per-machine cache (``$SLIMGRAPH_CACHE_DIR/weight-forms.json``), so a
    later compile of the same layers measures nothing; ``model.weight_forms`` says which form
    each kernel took (see docs/compression.md).

    ``precision="bf16"`` (on CPUs with AMX or AVX512-BF16 only) runs convs and
    matmuls on bf16 weights and activations with float32 sums, through the
    ``bf16`` pass placed before ``fuse`` (see :mod:`slimgraph.passes.bf16` and
    docs/bf16.md), on AMX tiles where the CPU has them; outputs differ from
    float32 by about 1e-2 relative::

        model = slimgraph.compile(resnet, [x], precision="bf16")
    """
    example_inputs = check_example_inputs(example_inputs)
    if weights not in ("compressed", "decoded", "auto"):
        raise ArgumentError(f"weights={weights!r}: give 'compressed', 'decoded' or 'auto'")
    _check_compile_arguments(target, pipeline, shapes, tune, database, dump_ir, progress, variants, batches,
                             eval_data, finetune, budget_ms, policy, calibration_data)
    _check_precision(precision, target, variants)
    if dynamic is not None and variants is not None:
        raise ArgumentError("dynamic: not supported with variants=[...] (their guards pick fixed batch buckets)")
    if remote is not None:
        from slimgraph.backends.tvm.remote import parse_remote

        parse_remote(remote)
        if variants is not None:
            raise ArgumentError("remote: not supported with variants=[...] (the guard measures its variants here)")
    axes = torch_dynamic_axes(model, example_inputs, dynamic) if dynamic is not None and is_torch_module(model) else None
    if variants is not None:
        from slimgraph.runtime import narrow

        return narrow(model, example_inputs, variants, batches=batches, eval_data=eval_data, finetune=finetune,
                      target=target, pipeline=pipeline, budget_ms=budget_ms, policy=policy,
                      calibration_data=calibration_data)
    graph = import_model(model, example_inputs, axes)
    return compile_graph(graph, target, pipeline, example_inputs=example_inputs, shapes=shapes, dynamic=dynamic,
                         axes=axes, calibration_data=calibration_data, tune=tune, database=database, dump_ir=dump_ir,
                         progress=progress, weights=weights, remote=remote, precision=precision)


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
    if not (spec.has("amx") or spec.has("bf16")):
        raise ArgumentError(f"precision='bf16' needs a CPU with AMX or AVX512-BF16, and target {target!r} has neither; "
                            "use precision='fp32' there")


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
        if variants is None and not any(p.uses_calibration for p in passes):
            raise ArgumentError(f"calibration_data: pipeline {pipeline!r} has no pass that reads it (no quantize pass, "
                                "no reestimate-batch-norms, no finetune; and without variants= no widths to re-estimate)")
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

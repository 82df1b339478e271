"""Graph -> CompiledModel: lower, schedule (or apply tuning records), compile with TVM.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph("double")
    >>> x = g.add_input("x", TensorType("f32", (4,)))
    >>> g.set_outputs([g.call("add", x, x)])
    >>> model = build(g, "llvm")
    >>> model(np.arange(4, dtype=np.float32))
    array([0., 2., 4., 6.], dtype=float32)
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from typing import TYPE_CHECKING, Callable

from slimgraph.backends.tvm import tir_pipeline
from slimgraph.backends.tvm.compiled import CompiledModel, metadata
from slimgraph.backends.tvm.lower import AUTO, assert_checks, lower_graph
from slimgraph.backends.tvm.schedules import schedule_module
from slimgraph.backends.tvm.targets import TargetSpec, parse_target
from slimgraph.dynamic import UNBOUNDED
from slimgraph.errors import BackendError, SlimgraphWarning
from slimgraph.ir.graph import Graph
from slimgraph.ir.types import concrete, format_shape

if TYPE_CHECKING:
    from slimgraph.backends.tvm.weight_forms import FormChooser

Progress = Callable[[str, int, int], None]


def build(
    graph: Graph,
    target: "str | TargetSpec" = "llvm",
    bindings: dict[str, int] | None = None,
    *,
    tune: int = 0,
    database: str | None = None,
    progress: Progress | None = None,
    dynamic: dict[str, tuple[int, int]] | None = None,
    weights: "str | dict[str, str]" = "auto",
    remote: str | None = None,
    chooser: "FormChooser | None" = None,
) -> CompiledModel:
    """Compile ``graph`` for ``target``; symbolic dims take their sizes from ``bindings``.

    ``dynamic`` maps symbols that stay symbolic to their (min, max) sizes: the one
    build serves every size in those bounds, and calls outside them are refused.

    ``tune=TRIALS`` runs MetaSchedule for that many trials in all (CPU and
    runnable GPU targets) and keeps its records in ``database`` (a folder);
    any later build given the same folder reuses them without tuning again.
    ``progress(step, done, total)`` is called as the build advances.

    ``weights="compressed"`` (CPU targets) keeps weights the IR stores compressed (k-means
    codes, int4, log2) so in the model and decodes them inside the kernels, and runs
    mostly-zero weights with sparse kernels; ``weights="decoded"`` stores them decoded and
    dense (more memory, no decode in the kernels); ``weights="auto"`` (the default) keeps encoded
    weights encoded and, for each kernel with a sparse weight, the form measured faster on this
    machine, sparse or dense (``chooser``, default a
    :class:`~slimgraph.backends.tvm.weight_forms.FormChooser` over the per-machine cache: each
    differing kernel built and timed alone once, later builds reuse the decision); a dict
    gives the form per kernel name (``compressed`` for the others).
    ``remote`` (``host:port`` of a TVM RPC server, or ``key@host:port`` of a tracker)
    uploads the model there and returns a RemoteModel whose calls run there; tuning
    then measures through MetaSchedule's RPC runner (see :mod:`slimgraph.backends.tvm.remote`).
    """
    import tvm
    from tvm import relax

    spec = parse_target(target)
    where = None
    if remote is not None:
        from slimgraph.backends.tvm.remote import CALL_TIMEOUT, RemoteModel, parse_remote

        where = parse_remote(remote)
        if spec.runtime != "tvm":
            raise BackendError(f"remote={remote}: target {spec.text} runs through {spec.runtime} on this machine, "
                               "not over TVM's RPC")
        where.check(CALL_TIMEOUT)
    bindings = dict(bindings or {})
    dynamic = dict(dynamic or {})
    # sizes are checked at the largest a dim is declared to take; an unbounded one at its example
    bounded = {s: high for s, (_, high) in dynamic.items() if high < UNBOUNDED}
    largest = check_sizes(graph, {**bindings, **bounded})
    # dynamic kernels index in int32 where every tensor fits it at the largest sizes: int64
    # indices defeat the matmul rule's re-layout (TVM mixes them with the int32 static extents)
    index_dtype = "int32" if largest < 2**31 and len(bounded) == len(dynamic) else "int64"
    report = progress or (lambda step, done, total: None)
    report("lower", 0, 3)
    if weights == AUTO and chooser is None:
        from slimgraph.backends.tvm.weight_forms import FormChooser

        chooser = FormChooser(spec)
    lowered = lower_graph(graph, spec, bindings, dynamic, index_dtype, weights, chooser if weights == AUTO else None)
    report("schedule", 1, 3)
    # schedule_module rewrites its module in place; tuning needs the kernels as lowered
    unscheduled = lowered.mod.clone() if tune or database else None
    mod = schedule_module(lowered.mod, spec)
    if unscheduled is not None:
        from slimgraph.backends.tvm.tune import apply_tuning

        runner = where.runner(CALL_TIMEOUT) if where is not None and tune else None
        mod = apply_tuning(mod, unscheduled, spec, trials=tune, database=database, progress=report, runner=runner)
    if not spec.is_gpu:
        mod = assert_checks(mod, lowered.kernels)
    report("compile", 2, 3)
    from slimgraph.backends.opencl.model import OpenCLModel, opencl_metadata  # it imports this package
    from slimgraph.backends.opencl.plan import capture

    # OpenCL models run through PyOpenCL, replaying the kernel launches TVM's host code would make
    with (capture() if spec.runtime == "pyopencl" else contextlib.nullcontext({})) as host:
        try:
            executable = tvm.compile(mod, spec.tvm(), relax_pipeline=relax.pipeline.default_build_pipeline(),
                                     tir_pipeline=tir_pipeline.for_target(spec))
        except Exception as exc:  # TVM's own errors are long C++ traces; keep the first line
            raise BackendError(f"TVM failed to compile @{graph.name} for {spec.text}: "
                               f"{str(exc).strip().splitlines()[0]}") from exc
    report("done", 3, 3)
    funcs = list(dict.fromkeys(k.func for k in lowered.kernels))
    sources = kernel_sources(executable, mod, funcs, spec)
    meta = metadata(graph.name, lowered, sources, bindings, dynamic)
    if spec.runtime == "pyopencl":
        meta["opencl"] = opencl_metadata(host.get("mod"), _module_sources(executable, spec)[0], funcs,
                                         lowered.kernels)
        return OpenCLModel(None, meta, lowered.params, graph, spec)
    compiled = CompiledModel(executable, meta, lowered.params, graph, spec)
    return compiled if where is None else RemoteModel(compiled, where, CALL_TIMEOUT)


#: The most elements a tensor may have: TVM computes addresses in int64, and index arithmetic
#: multiplies extents, so far larger tensors fail inside TVM with a type or overflow error.
MAX_ELEMENTS = 2**48


def check_sizes(graph: Graph, bindings: dict[str, int]) -> int:
    """BackendError for a tensor (inputs, results, regions' insides) of negative size or more than
    MAX_ELEMENTS elements, and for a reduction over an empty input to a non-empty result.
    Returns the element count of the largest tensor."""
    largest = 0
    pending = [graph]
    while pending:
        g = pending.pop()
        for value in g.values():
            shape = [concrete(d, bindings) for d in value.type.shape]
            if any(d < 0 for d in shape):
                raise BackendError(f"@{g.name}: %{value.name} would be {format_shape(shape)}: a negative size "
                                   f"(bindings {bindings})")
            if math.prod(shape) > MAX_ELEMENTS:
                raise BackendError(
                    f"@{g.name}: %{value.name} would be {format_shape(shape)} ({math.prod(shape):.3g} elements); "
                    f"the TVM backend compiles tensors of up to 2**48 elements (check the sizes given in shapes=)"
                )
            largest = max(largest, math.prod(shape))
        for node in g.nodes:
            _check_empty_reduction(node, bindings)
        pending.extend(a for node in g.nodes for a in node.attrs.values() if isinstance(a, Graph))
    return largest


def _check_empty_reduction(node, bindings: dict[str, int]) -> None:
    # A TVM reduction over an empty axis never runs its init, so a non-empty result computed from an
    # empty input (a sum over nothing, a linear with no input features) would be uninitialised memory.
    if node.opdef.category not in ("compute", "reduction"):
        return
    out_sizes = [math.prod(concrete(d, bindings) for d in v.type.shape) for v in node.outputs]
    empty = [v for v in node.inputs if math.prod(concrete(d, bindings) for d in v.type.shape) == 0]
    if empty and any(out_sizes):
        raise BackendError(
            f"{node.describe()}: reduces over the empty input %{empty[0].name} "
            f"({format_shape([concrete(d, bindings) for d in empty[0].type.shape])}) to a non-empty result; "
            "the TVM backend does not compile reductions over nothing"
        )


def kernel_sources(executable, mod, names: list[str], spec: TargetSpec) -> dict[str, tuple[str, str]]:
    """Per kernel: (scheduled TIR, generated target source)."""
    device_text, host_text = _module_sources(executable, spec)
    # indexed once: searching the whole text again for each kernel took ViT-base's 232 kernels 50 s
    functions = _functions(device_text if spec.is_gpu else host_text, gpu=spec.is_gpu)
    defined = {gv.name_hint for gv in mod.functions}
    return {name: (mod[name].script() if name in defined else "", _kernel_source(functions, name, spec.is_gpu))
            for name in names}


def _module_sources(executable, spec: TargetSpec) -> tuple[str, str]:
    """(device source: CUDA/OpenCL C, host source: LLVM IR) of an executable built for ``spec``."""
    device, host = [], []
    stack = list(executable.mod.imports)
    while stack:
        m = stack.pop()
        kind = m.kind
        try:
            if kind == spec.device_module:
                device.append(m.inspect_source())
            elif kind == spec.host_module:
                host.append(m.inspect_source("ll"))
        except Exception:  # noqa: BLE001 - a module without inspectable source contributes nothing
            pass
        stack.extend(m.imports)
    return "\n".join(device), "\n".join(host)


#: Where a function definition starts, with its name: LLVM IR on CPUs, CUDA or OpenCL C on GPUs
#: (the name is the last identifier before a parenthesis on the line: CUDA puts
#: ``__launch_bounds__(...)`` before it).
_LLVM_DEFINE = re.compile(r"^define [^\n]*@([\w.$]+)\(", re.M)
_GPU_KERNEL = re.compile(r'(?:extern "C" __global__ void[^\n]*|__kernel void\s+)\b(\w+)\s*\(')
_BRACES = re.compile(r"[{}]")


def _functions(text: str, gpu: bool) -> dict[str, str]:
    """Every function defined in ``text``, by name, in text order (declarations skipped)."""
    out = {}
    for match in (_GPU_KERNEL if gpu else _LLVM_DEFINE).finditer(text):
        brace = text.find("{", match.end())
        if brace < 0:
            continue
        if not gpu:  # LLVM IR ends a function with a "}" alone on its line
            close = text.find("\n}", brace)
            out[match.group(1)] = text[match.start() : (close + 2 if close >= 0 else len(text))]
            continue
        semicolon = text.find(";", match.end())
        if 0 <= semicolon < brace:
            continue
        depth = 0
        for b in _BRACES.finditer(text, brace):
            depth += 1 if b.group() == "{" else -1
            if depth == 0:
                out[match.group(1)] = text[match.start() : b.end()]
                break
    return out


def _kernel_source(functions: dict[str, str], name: str, gpu: bool) -> str:
    """The functions belonging to kernel ``name``: on CPU its entry, its body and the
    parallel lambdas they call; on GPU its device kernels."""
    if gpu:
        return "\n\n".join(body for fn, body in functions.items() if fn.startswith(name))
    own = (name, "__tvm_ffi_" + name)
    pieces = [body for fn, body in functions.items() if fn in own or fn.startswith(name + "_compute_")]
    seen: set[str] = set()
    pending = [lam for piece in pieces for lam in re.findall(r"@(__tvm_parallel_lambda[.\d]*)\b", piece)]
    while pending:
        lam = pending.pop()
        if lam in seen or lam not in functions:
            continue
        seen.add(lam)
        pieces.append(functions[lam])
        pending.extend(re.findall(r"@(__tvm_parallel_lambda[.\d]*)\b", functions[lam]))
    return "\n\n".join(pieces)

"""Build a GuardedModel: narrowed widths of one model, compiled per batch bucket, measured.

:func:`narrow` imports the model once with a symbolic batch, derives each
width (by the structured channel pruning pass, ``prune{method=channel}``, or
from models the caller trained at each width), re-estimates a pruned width's
batch-norm statistics on calibration data when given, optionally fine-tunes
it, checks that every width keeps the input and output contract of the full
model, compiles it once per batch bucket, measures each compiled variant's
latency and, with evaluation data, each width's top-1 accuracy. A
dynamic-batch variant per width, compiled once with the batch a symbolic
dim (1 to :data:`FALLBACK_MAX_BATCH`), serves the batch sizes no bucket
covers; it runs compiled code, slower than a bucket but never the
reference interpreter.

Example::

    >>> import numpy as np, torch                                          # doctest: +SKIP
    >>> guarded = narrow(net, (torch.zeros(8, 1, 8, 8),), variants=[1.0, 0.75, 0.5],
    ...                  batches=[1, 8, 32], eval_data=(x_test, y_test), budget_ms=2.0)  # doctest: +SKIP
    >>> guarded(np.zeros((8, 1, 8, 8), np.float32)).shape                 # doctest: +SKIP
    (8, 10)
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from slimgraph.arguments import check_callable, check_example_inputs, check_int
from slimgraph.driver import compile_graph, import_model, is_torch_module
from slimgraph.ir.graph import Graph
from slimgraph.ir.types import concrete, is_symbolic
from slimgraph.metrics import top1_accuracy
from slimgraph.passes import PassContext, Prune, ReestimateBatchNorms
from slimgraph.runtime.controller import ControllerConfig
from slimgraph.runtime.guard import GraphRunner, GuardedModel, GuardError, Variant, check_budget, is_thread_count
from slimgraph.timing import measure

#: The largest batch the fallback variant serves: a bound keeps its index arithmetic in 32 bits,
#: which keeps the packed matmul and conv schedules (an unbounded batch falls back to 64-bit loops).
FALLBACK_MAX_BATCH = 4096

Finetune = Callable[[Graph, float], Graph]


def narrow(
    model: Any,
    example_inputs: Sequence[Any] | None = None,
    variants: Sequence[float] | Mapping[float, Any] = (1.0, 0.75, 0.5),
    *,
    depths: Sequence[float] = (1.0,),
    batches: Sequence[int] | None = None,
    fallback: bool = True,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    calibration_data: Iterable[Any] | None = None,
    finetune: Finetune | None = None,
    train_data: Any = None,
    target: str = "llvm",
    pipeline: str | None = "default",
    budget_ms: float | Mapping[int | None, float] | None = None,
    policy: Callable | None = None,
    config: ControllerConfig | None = None,
    threads: Sequence[int | None] | None = None,
    runs: int = 30,
    progress: Callable[[str], None] | None = None,
) -> GuardedModel:
    """Narrowed, compiled, measured variants of ``model`` behind a guard.

    ``variants`` lists widths (fractions of the channels kept; the pruning
    pass removes the rest) or maps each width to a model of that width with
    the same inputs and outputs. ``batches`` are the batch buckets compiled
    ahead of time (default: the example inputs' batch); ``fallback`` adds a
    dynamic-batch compiled variant per width. ``eval_data=(x, y)`` measures top-1
    accuracy. ``calibration_data`` (an iterable of input batches, as for
    ``compile``) re-estimates the batch-norm statistics of every pruned width
    (the ``reestimate-batch-norms`` pass) and is the calibration data of
    ``pipeline``'s passes (``quantize``) for every width.
    ``finetune(graph, width) -> graph`` runs on every pruned width after that
    (:func:`finetune_with` trains through the torch round trip); ``train_data``
    (``(x, y)`` or inputs alone) instead fine-tunes each by distillation from
    the full model (:func:`slimgraph.finetune`, its defaults).
    ``depths`` lists fractions of the residual blocks kept: each width also
    gets variants that skip its least useful blocks (ranked on the
    calibration data by top-1 agreement), batch norms re-estimated and
    fine-tuned as the width was; they need ``calibration_data``.
    ``threads`` lists the thread counts each compiled width also runs at (None:
    a thread per core); by default, on a CPU with several cores, ``(None, 1)``:
    under a competing load a single-threaded narrow variant keeps a budget that
    no multi-threaded one does. The thread variants share one compiled model.
    ``budget_ms``, ``policy`` and ``config`` go to :class:`GuardedModel`.
    """
    if isinstance(variants, (str, bytes)) or not isinstance(variants, (Sequence, Mapping)):
        raise GuardError(f"variants={variants!r}: give a list of widths, e.g. [1.0, 0.75, 0.5]")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) for w in variants):
        raise GuardError(f"variants={list(variants)}: widths must be fractions in (0, 1]")
    widths = sorted(variants, reverse=True)
    if not widths or any(not 0.0 < w <= 1.0 for w in widths):
        raise GuardError(f"variants={list(variants)}: widths must be fractions in (0, 1]")
    _check_arguments(batches, eval_data, finetune, target, pipeline, budget_ms, policy, config, runs, progress)
    depth_list = _check_depths(depths, calibration_data)
    if finetune is not None and train_data is not None:
        raise GuardError("give finetune= or train_data=, not both (train_data fine-tunes by distillation)")
    if train_data is not None:
        from slimgraph.training import finetune_step

        finetune = finetune_step(train_data)
    example_inputs = check_example_inputs(example_inputs, error=GuardError)
    say = progress or (lambda _msg: None)
    thread_counts = _thread_counts(threads, target)
    samples = _calibration_batches(calibration_data)
    if isinstance(variants, Mapping):
        graphs = {(w, 1.0): _import(variants[w], example_inputs) for w in widths}
    else:
        full = _import(model, example_inputs)
        graphs = {(w, 1.0): _narrowed(full, w, samples, finetune) for w in widths}
    for w in widths:
        graphs.update(_shallower(graphs[w, 1.0], w, depth_list, samples, finetune, say))
    reference = graphs[widths[0], 1.0]
    for (w, d), graph in graphs.items():
        _check_contract(reference, graph, w, d)
    symbol, default_batch = _batch_symbol(reference, example_inputs)
    buckets = list(batches) if batches is not None else [default_batch]
    if symbol is None and (fallback or buckets != [default_batch]):
        raise GuardError(
            f"@{reference.name} has a fixed batch of {default_batch}: import it with a symbolic batch to get "
            f"buckets {buckets} or a fallback"
        )

    out: list[Variant] = []
    feeds: dict[str, list[np.ndarray]] = {}
    for (w, d), graph in graphs.items():
        per_width: list[Variant] = []
        label = f"width {w:g}" + (f" depth {d:g}" if d != 1.0 else "")
        for b in buckets:
            say(f"compile {label} batch {b}")
            compiled = compile_graph(graph, target, pipeline, shapes={symbol: b} if symbol else None,
                                     calibration_data=samples)
            for n in thread_counts:
                per_width.append(Variant(_name(w, b, n, d), compiled, width=w, threads=n, depth=d))
                feeds[per_width[-1].name] = _zeros(compiled.input_types)
        if fallback:
            say(f"compile {label} any batch")
            compiled = compile_graph(graph, target, pipeline, dynamic=_batch_axes(graph, symbol),
                                     shapes={symbol: default_batch}, calibration_data=samples)
            per_width.append(Variant(_name(w, None, depth=d), compiled, width=w, batch=None, depth=d))
            feeds[per_width[-1].name] = _zeros([v.type for v in graph.inputs], {symbol: default_batch})
        if eval_data is not None:
            say(f"evaluate {label}")
            acc = variant_accuracy(_largest_bucket(per_width), *eval_data)
            for v in per_width:
                v.accuracy = acc
        out.extend(per_width)
    say("measure latencies")
    measure_variants(out, feeds, runs=runs)
    return GuardedModel(out, budget_ms, policy=policy, config=config, name=reference.name)


def _check_arguments(batches, eval_data, finetune, target, pipeline, budget_ms, policy, config, runs,
                     progress) -> None:
    """Check every argument (the pipeline's text too) before any import or compile:
    a bad budget must not surface after minutes of building."""
    from slimgraph.backends.tvm.targets import parse_target
    from slimgraph.passes import parse_pipeline

    if batches is not None:
        if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or not batches:
            raise GuardError(f"batches={batches!r}: give a list of batch sizes, e.g. [1, 8]")
        for i, b in enumerate(batches):
            check_int(f"batches[{i}]", b, minimum=1, error=GuardError)
    if eval_data is not None and not (isinstance(eval_data, (tuple, list)) and len(eval_data) == 2):
        raise GuardError(f"eval_data: give a pair (inputs, labels), got a {type(eval_data).__name__}")
    for name, fn in (("finetune", finetune), ("policy", policy), ("progress", progress)):
        check_callable(name, fn, error=GuardError)
    parse_target(target)
    if pipeline is not None and not isinstance(pipeline, str):
        raise GuardError(f"pipeline={pipeline!r}: give pipeline text such as 'default', or None")
    check_budget(budget_ms)
    if config is not None and not isinstance(config, ControllerConfig):
        raise GuardError(f"config: must be a ControllerConfig, got a {type(config).__name__}")
    check_int("runs", runs, minimum=1, error=GuardError)
    if pipeline:
        parse_pipeline(pipeline)


def measure_variants(
    variants: Sequence[Variant], feeds: Mapping[str, Sequence[np.ndarray]], runs: int = 30, rounds: int = 5
) -> None:
    """Set each variant's ``latency_ms``: the lowest of ``rounds`` interleaved rounds of
    :func:`measure_latency` (each a median). Foreign load on a shared machine only
    ever slows a round down, so the quietest round is the closest to the unloaded
    latency, and interleaving spreads a burst of it over every variant instead of
    one. Interpreter variants get a tenth of the runs.

    Example::

        >>> from slimgraph.ir import Graph, TensorType
        >>> g = Graph(); x = g.add_input("x", TensorType("f32", (2,))); g.set_outputs([g.call("relu", x)])
        >>> v = Variant("relu", GraphRunner(g))
        >>> measure_variants([v], {"relu": [np.zeros(2, np.float32)]}, runs=5); v.latency_ms > 0
        True
    """
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            share = runs if not isinstance(v.model, GraphRunner) else max(1, runs // 10)
            samples[v.name].append(measure_latency(v, feeds[v.name], runs=max(1, share // rounds)))
    for v in variants:
        v.latency_ms = min(samples[v.name])


def finetune_with(
    x: np.ndarray, y: np.ndarray, epochs: int = 3, lr: float = 1e-3, batch: int = 64, seed: int = 0,
    loss: str = "ce",
) -> Finetune:
    """A ``finetune`` for :func:`narrow`: train a pruned graph on ``(x, y)`` through the torch round
    trip with :func:`slimgraph.finetune` (``loss="kd"`` distills from the full model), seeded.

    Example::

        >>> tune = finetune_with(x_train, y_train, epochs=2)     # doctest: +SKIP
        >>> narrow(net, example, [1.0, 0.5], finetune=tune)      # doctest: +SKIP
    """
    from slimgraph.training import finetune_step

    return finetune_step((x, y), epochs=epochs, lr=lr, batch_size=batch, seed=seed, loss=loss)


def measure_latency(fn: Callable[..., Any], inputs: Sequence[np.ndarray], warmup: int = 3, runs: int = 30) -> float:
    """Median wall time of ``fn(*inputs)`` in milliseconds, after ``warmup`` calls, through
    :func:`slimgraph.timing.measure` (no noise warning: :func:`measure_variants` takes the
    quietest of several interleaved rounds instead).

    Example::

        >>> measure_latency(lambda x: x + 1, [np.zeros(4)], runs=5) > 0
        True
    """
    return measure(lambda: fn(*inputs), warmup=warmup, runs=max(1, runs), max_cv=None).median_ms


def variant_accuracy(variant: Variant, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (percent) of a variant on ``(x, y)``, run in chunks of its batch
    bucket (the last chunk zero-padded) or all at once on a symbolic-batch variant.

    Example::

        >>> from slimgraph.ir import Graph, TensorType
        >>> g = Graph(); x = g.add_input("x", TensorType("f32", ("N", 2))); g.set_outputs([g.call("relu", x)])
        >>> variant_accuracy(Variant("id", GraphRunner(g)), np.eye(2, dtype=np.float32), np.array([0, 0]))
        50.0
    """
    x = np.asarray(x)
    chunk = variant.batch or len(x)
    logits = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
        logits.append(np.asarray(variant(padded))[: len(part)])
    return top1_accuracy(np.concatenate(logits), y)


# ---------------------------------------------------------------------------
# helpers


def _import(model: Any, example_inputs: Sequence[Any] | None) -> Graph:
    """The model's graph, with a symbolic batch when it is a torch module."""
    if example_inputs is None and is_torch_module(model):
        raise GuardError("narrowing a torch module needs example_inputs (a tuple of tensors)")
    return import_model(model, example_inputs, dynamic_batch=True)


def _calibration_batches(data: Iterable[Any] | None) -> list[Any] | None:
    """The calibration batches as a list (they are read once per batch norm and per width)."""
    if data is None:
        return None
    from slimgraph.passes.calibrate import CalibrationTable

    if isinstance(data, CalibrationTable):
        raise GuardError(
            "narrow needs calibration_data as input batches: a CalibrationTable holds the full model's ranges, "
            "and each width has its own"
        )
    batches = list(data)
    if not batches:
        raise GuardError("calibration_data is empty: give at least one batch of inputs")
    return batches


def _narrowed(full: Graph, width: float, samples: list[Any] | None, finetune: Finetune | None) -> Graph:
    """``full`` pruned to ``width``, with its batch norms re-estimated on ``samples`` and then fine-tuned,
    when those are given (fine-tuning keeps the statistics, so they must be right before it)."""
    if width == 1.0:
        return full
    graph = Prune(method="channel", ratio=1.0 - width)(full).verify()
    if samples is not None:
        graph = ReestimateBatchNorms()(graph, PassContext(calibration_data=samples))
    return finetune(graph, width) if finetune is not None else graph


def _check_depths(depths: Sequence[float], calibration_data: Any) -> list[float]:
    """The depths, deepest first; below 1.0 they need calibration data to rank blocks on."""
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or not depths or any(
        isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d <= 1.0 for d in depths
    ):
        raise GuardError(f"depths={depths!r}: give fractions of the residual blocks kept in (0, 1], e.g. [1.0, 0.5]")
    if any(d < 1.0 for d in depths) and calibration_data is None:
        raise GuardError("depths below 1.0 need calibration_data: input batches to rank the residual blocks on and "
                         "to re-estimate batch norms with")
    return sorted({float(d) for d in depths} | {1.0}, reverse=True)


def _shallower(graph: Graph, width: float, depths: list[float], samples: list[Any] | None,
               finetune: Finetune | None, say: Callable[[str], None]) -> dict[tuple[float, float], Graph]:
    """The variants of one width below full depth, keyed (width, depth); depths that skip no block
    (too few blocks to round to another count) or repeat one are left out."""
    if depths == [1.0]:
        return {}
    from slimgraph.runtime.depth import blocks_to_skip, depth_sensitivity, depth_variant
    from slimgraph.training import TrainData

    say(f"rank residual blocks of width {width:g}")
    table = depth_sensitivity(graph, list(TrainData.of(graph, samples).inputs))
    out, seen = {}, {()}
    for d in depths:
        skipped = blocks_to_skip(d, table)
        if skipped in seen:
            continue
        seen.add(skipped)
        shallow = depth_variant(graph, d, table, samples)
        out[width, d] = finetune(shallow, width) if finetune is not None else shallow
    return out


def _check_contract(full: Graph, narrowed: Graph, width: float, depth: float = 1.0) -> None:
    """Every width and depth takes the full model's inputs and gives its outputs (types, in order)."""
    want = ([str(v.type) for v in full.inputs], [str(v.type) for v in full.outputs])
    got = ([str(v.type) for v in narrowed.inputs], [str(v.type) for v in narrowed.outputs])
    if want != got:
        raise GuardError(
            f"width {width:g}" + (f" depth {depth:g}" if depth != 1.0 else "") + f" changes the model's contract: inputs {got[0]} -> outputs {got[1]}, but the full "
            f"model has inputs {want[0]} -> outputs {want[1]}"
        )


def _batch_symbol(graph: Graph, example_inputs: Sequence[Any] | None) -> tuple[str | None, int]:
    """The symbol of the first input's batch dim (None when fixed) and the example batch size."""
    if not graph.inputs or not graph.inputs[0].type.rank:
        raise GuardError(f"@{graph.name} has no batched first input to guard on")
    dim = graph.inputs[0].type.shape[0]
    example = int(np.shape(example_inputs[0])[0]) if example_inputs else concrete(dim)
    return (dim if is_symbolic(dim) else None), example


def _batch_axes(graph: Graph, symbol: str) -> dict[int, dict[int, tuple[str, int, int]]]:
    """``dynamic=`` for the fallback: every input axis that is the batch symbol, from 1 to
    :data:`FALLBACK_MAX_BATCH`."""
    return {i: {a: (symbol, 1, FALLBACK_MAX_BATCH) for a, d in enumerate(v.type.shape) if d == symbol}
            for i, v in enumerate(graph.inputs) if symbol in v.type.shape}


def _zeros(types, bindings: dict | None = None) -> list[np.ndarray]:
    return [np.zeros(tuple(concrete(d, bindings) for d in t.shape), t.dtype.numpy) for t in types]


def _largest_bucket(variants: list[Variant]) -> Variant:
    compiled = [v for v in variants if v.batch is not None]
    return max(compiled, key=lambda v: v.batch) if compiled else variants[0]


def _thread_counts(threads: Sequence[int | None] | None, target: str) -> list[int | None]:
    """The thread counts of each compiled width: the given ones (the default count first), or
    ``[None, 1]`` on a CPU target with several cores and ``[None]`` elsewhere."""
    from slimgraph.backends.tvm import parse_target
    from slimgraph.backends.tvm.targets import cpu_cores

    cpu = parse_target(target).is_cpu
    if threads is None:
        return [None, 1] if cpu and cpu_cores() > 1 else [None]
    counts = list(dict.fromkeys(threads))
    if not counts or any(n is not None and not is_thread_count(n) for n in counts):
        raise GuardError(f"threads={list(threads)}: give thread counts (positive ints, or None for one per core)")
    if not cpu and counts != [None]:
        raise GuardError(f"threads={list(threads)}: thread counts apply to CPU targets, not {target}")
    return sorted(counts, key=lambda n: -(n or 1 << 30))


def _name(width: float, batch: int | None, threads: int | None = None, depth: float = 1.0) -> str:
    name = f"w{round(width * 100)}" + (f"-d{round(depth * 100)}" if depth != 1.0 else "")
    name += f"-b{batch if batch is not None else 'N'}"
    return name if threads is None else f"{name}-t{threads}"

"""The pass context: what a pipeline run knows besides the graph.

One :class:`PassContext` goes with a run, as in TVM (``tvm.transform.PassContext``)
and xDSL (``Context``): calibration data, the target it compiles for, evaluation
data, the instruments that watch it and free-form options. The pass manager hands
it to every pass's ``apply`` and to every instrument hook that asks for it; what a
pass needs from outside the graph comes from here, never from hidden state on the
pass, so a pass stays a frozen value that its pipeline text describes whole.

A pass or hook asks for the context by taking a second argument named ``ctx``
(``def apply(self, graph, ctx)``); one that takes only the graph keeps working
and never sees it (:func:`call_with_context` decides which).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> from slimgraph.passes import Pass, register_pass, PassManager
    >>> @register_pass("count-batches-example")
    ... class CountBatches(Pass):
    ...     '''Record how many calibration batches the run has (an example).'''
    ...     def apply(self, graph, ctx):
    ...         ctx.options["batches"] = len(ctx.calibration_data)
    >>> g = Graph(); x = g.add_input("x", TensorType("f32", (2,))); g.set_outputs([g.call("relu", x)])
    >>> ctx = PassContext(calibration_data=[np.ones(2, np.float32)] * 3)
    >>> _ = PassManager("count-batches-example").run(g, ctx); ctx.options
    {'batches': 3}
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class PassContext:
    """What a pipeline run gives its passes and instruments besides the graph.

    ``calibration_data``: input batches or a CalibrationTable (``quantize``,
    ``reestimate-batch-norms``); ``target``: what the graph will be compiled for
    (a :class:`~slimgraph.backends.tvm.targets.TargetSpec`, asked ``is_cpu`` or
    ``has("vnni")``; None when unknown); ``evaluation_data``: inputs, or
    ``(inputs, labels)``; ``instruments``: the run's (the pass manager adds its
    own); ``options``: anything else, by name.
    """

    calibration_data: Any = None
    target: Any = None
    evaluation_data: Any = None
    instruments: Sequence[Any] = ()
    options: dict[str, Any] = field(default_factory=dict)


def call_with_context(fn: Callable[..., Any], ctx: PassContext, *args: Any) -> Any:
    """Call ``fn(*args, ctx)`` when ``fn`` takes a ``ctx`` parameter, else ``fn(*args)``."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    takes = _code_takes_context(code) if code is not None else _signature_takes_context(fn)
    return fn(*args, ctx) if takes else fn(*args)


@functools.lru_cache(maxsize=None)
def _code_takes_context(code: Any) -> bool:
    # a plain function or method: its parameter names, looked up once per function
    return "ctx" in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]


def _signature_takes_context(fn: Callable[..., Any]) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable Python cannot inspect takes what it always took
        return False

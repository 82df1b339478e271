"""The runtime guard: several narrowed variants of one model, one picked per call.

:class:`GuardedModel` admits a call through input guards (shape, batch bucket,
dtype, device) and picks a width by a latency budget
(:class:`LatencyController`) or a user policy; :func:`narrow` builds the
variants by structured channel pruning and compiles each.

Example::

    >>> from slimgraph.runtime import ControllerConfig
    >>> ControllerConfig().up_fraction
    0.8
"""

from slimgraph.runtime.controller import ControllerConfig, ControllerError, LatencyController
from slimgraph.runtime.guard import (
    CallRecord,
    Candidate,
    GraphRunner,
    GuardError,
    GuardedModel,
    GuardStats,
    Variant,
    load_guarded,
)
from slimgraph.runtime.guard_store import register_variant_kind
from slimgraph.runtime.narrow import finetune_with, measure_variants, narrow

__all__ = [
    "CallRecord",
    "Candidate",
    "ControllerConfig",
    "ControllerError",
    "GraphRunner",
    "GuardError",
    "GuardStats",
    "GuardedModel",
    "LatencyController",
    "Variant",
    "finetune_with",
    "load_guarded",
    "measure_variants",
    "narrow",
    "register_variant_kind",
]

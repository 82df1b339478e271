"""The TVM backend: lower slimgraph graphs to Relax/TIR, schedule, compile, run.

Entry points: :func:`build` (a Graph to a :class:`CompiledModel`),
:func:`load_compiled` (a saved model), :func:`parse_target` and
:data:`TARGET_HELP` (the valid targets). TVM is imported only when a model is
built or loaded.

Example::

    >>> from slimgraph.backends.tvm import parse_target
    >>> parse_target("cuda:sm_80").arch
    'sm_80'
"""

from slimgraph.backends.tvm.build import build
from slimgraph.backends.tvm.compiled import BenchmarkResult, CompiledModel, Kernel, KernelTiming, load_compiled
from slimgraph.backends.tvm.targets import TARGET_HELP, TargetError, TargetSpec, parse_target, valid_targets

__all__ = [
    "TARGET_HELP",
    "BenchmarkResult",
    "CompiledModel",
    "Kernel",
    "KernelTiming",
    "TargetError",
    "TargetSpec",
    "build",
    "load_compiled",
    "parse_target",
    "valid_targets",
]

"""The TVM backend: lower slimgraph graphs to Relax/TIR, schedule, compile, run.

Entry points: :func:`build` (a Graph to a :class:`CompiledModel`),
:func:`load_compiled` (a saved model), :func:`parse_target` and
:func:`valid_targets` (the target kinds, one file each under ``target_kinds/``). TVM is imported only when a model is
built or loaded.

Example::

    >>> from slimgraph.backends.tvm import parse_target
    >>> parse_target("cuda:sm_80").arch
    'sm_80'
"""

import os

from slimgraph.backends.tvm.targets import cpu_cores

# TVM sizes its CPU thread pool once, when first used, to half the hardware
# threads unless TVM_NUM_THREADS says otherwise (it assumes hyper-threading):
# one thread on a 2-core machine, which ran ResNet-50 in 85 ms instead of 48.
# The llvm target means all cores, so say so before TVM's pool exists.
os.environ.setdefault("TVM_NUM_THREADS", str(cpu_cores()))

from slimgraph.backends.tvm.build import build  # noqa: E402
from slimgraph.backends.tvm.compiled import BenchmarkResult, CompiledModel, Kernel, KernelTiming, load_compiled  # noqa: E402
from slimgraph.backends.tvm.targets import TargetError, TargetKind, TargetSpec, parse_target, valid_targets  # noqa: E402

__all__ = [
    "BenchmarkResult",
    "CompiledModel",
    "Kernel",
    "KernelTiming",
    "TargetError",
    "TargetKind",
    "TargetSpec",
    "build",
    "load_compiled",
    "parse_target",
    "valid_targets",
]

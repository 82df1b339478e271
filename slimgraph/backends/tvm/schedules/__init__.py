"""Schedules: the project's own CPU rules, TVM's dlight rules on GPUs.

:func:`schedule_module` schedules every PrimFunc of a lowered module for a
target. A rule that fails on an unusual kernel falls back to a simpler
schedule for that kernel, never failing the build.

Example::

    >>> {"attention", "conv2d_packed", "dense_packed"} <= set(CPU_RULES)
    True
"""

from __future__ import annotations

from slimgraph.backends.tvm.schedules.cpu import CPU_RULES, schedule_cpu


def schedule_module(mod, target):
    """Schedule each PrimFunc of ``mod`` (a Relax IRModule) for ``target`` (a TargetSpec)."""
    import tvm

    if target.is_gpu:
        from slimgraph.backends.tvm.schedules.gpu import schedule_gpu

        return schedule_gpu(mod, target)
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            updates[gv] = schedule_cpu(func, target)
    for gv, func in updates.items():
        mod[gv] = func
    return mod


__all__ = ["CPU_RULES", "schedule_cpu", "schedule_module"]

"""GPU schedules: TVM's dlight rules, most specific first, with the fallback rule last.

Example::

    >>> [type(r).__name__ for r in gpu_rules()][-1]
    'Fallback'
"""

from __future__ import annotations


def gpu_rules() -> list:
    """dlight's GPU rules in the order they are tried."""
    from tvm.s_tir import dlight as dl

    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Transpose(),
            dl.gpu.Fallback()]


def schedule_gpu(mod, target):
    """Apply dlight to every unscheduled PrimFunc of ``mod`` for a GPU ``target`` (a TargetSpec)."""
    from tvm.s_tir import dlight as dl

    with target.tvm():
        return dl.ApplyDefaultSchedule(*gpu_rules())(mod)

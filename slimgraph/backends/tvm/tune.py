"""Optional MetaSchedule tuning, with records kept in a database folder that later builds reuse.

Tuning searches schedules for the unscheduled kernels (MetaSchedule needs
them untouched), measuring candidates on this machine. Kernels with a record
in the database take the tuned schedule; the others keep the project's rules.
A build given a database folder and ``tune=0`` only applies its records.

Example::

    >>> from slimgraph.backends.tvm.tune import database_files
    >>> database_files("/nonexistent")
    []
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from slimgraph.backends.tvm import tir_pipeline
from slimgraph.errors import BackendError

#: The JSON files MetaSchedule's JSONDatabase keeps in its work directory.
DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


def database_files(folder: str | os.PathLike) -> list[Path]:
    """The database files present in ``folder``."""
    return [Path(folder) / name for name in DATABASE_FILES if (Path(folder) / name).exists()]


def apply_tuning(scheduled, unscheduled, target, *, trials: int, database: str | None, progress=None, runner=None):
    """Tune ``unscheduled`` (when ``trials`` > 0) and return ``scheduled`` with
    every kernel that has a database record replaced by its tuned form. ``runner``
    (MetaSchedule's RPC runner) measures the candidates on remote devices."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    if target.runtime != "tvm":
        raise BackendError("tuning measures kernels through TVM's runtime, which has no OpenCL here; tune for "
                           "llvm or cuda (OpenCL models run through PyOpenCL)")
    if target.is_gpu and not target.can_run and runner is None:
        raise BackendError(f"tuning measures kernels on the device: {target.cannot_run_reason()}")
    folder = Path(database or "slimgraph-tuning")
    folder.mkdir(parents=True, exist_ok=True)
    tvm_target = target.tvm()
    if trials > 0:
        if progress:
            progress(f"tune {trials} trials", 1, 3)
        tune_kernels(unscheduled, tvm_target, folder, trials, runner, tir_pipeline.for_target(target))
    if not database_files(folder):
        return scheduled
    db = ms.database.JSONDatabase(work_dir=str(folder))
    with tvm_target, db:
        tuned = relax.transform.MetaScheduleApplyDatabase()(unscheduled)
    for gv, func in tuned.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and _was_tuned(func, unscheduled[gv]):
            scheduled[gv] = func
    return scheduled


def tune_kernels(mod, tvm_target, folder: Path, trials: int, runner=None, pipeline: str = "default") -> None:
    """Search schedules for every kernel of ``mod`` (a Relax IRModule of
    unscheduled PrimFuncs), ``trials`` measurements in all, and add the
    records to the JSON database in ``folder``. Candidates are built with the
    TIR pipeline named ``pipeline`` (``tir_pipeline.for_target``) and measured
    here, or by ``runner`` (a MetaSchedule runner, e.g. the RPC runner).

    Example::

        tune_kernels(lowered.mod.clone(), parse_target("llvm").tvm(), Path("db"), trials=16)
    """
    import logging

    from tvm.s_tir import meta_schedule as ms

    # MetaSchedule's logging setup lists its logger's handlers by name in a new logging config
    # and fails on an unnamed one (pytest's capture handlers, a user's own), so those step aside
    # while it tunes; the console and file handlers it adds on every run are removed afterwards,
    # so tuning leaves logging as it found it and a second tuning in the process works.
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    before = list(ms_logger.handlers)
    unnamed = [h for h in before if not h.get_name()]
    for handler in unnamed:
        ms_logger.removeHandler(handler)
    try:
        ms.relax_integration.tune_relax(
            mod,
            {},
            tvm_target,
            str(folder),
            max_trials_global=trials,
            builder=ms.builder.LocalBuilder(f_build=functools.partial(build_candidate, pipeline=pipeline)),
            runner=runner or "local",
        )
    finally:
        for handler in [h for h in ms_logger.handlers if h not in before]:
            ms_logger.removeHandler(handler)
            handler.close()
        for handler in unnamed:
            ms_logger.addHandler(handler)


def build_candidate(mod, target, _params, pipeline: str = "default"):
    """Build one scheduled candidate in a MetaSchedule builder worker.

    This is MetaSchedule's default build less its ``import
    tvm.s_tir.tensor_intrin``: that import parses every tensor intrinsic's
    TVMScript (20-30 s on a 2-core machine), and the builder starts fresh
    workers for every batch, so each batch hit the 30 s build timeout and no
    candidate was ever measured. A candidate is already scheduled (any
    tensorization applied in the search process), so its build needs none.
    It compiles with ``pipeline``, the TIR pipeline the final build uses
    (``tir_pipeline.for_target``), so a candidate is timed as the model will run.

    Example::

        ms.builder.LocalBuilder(f_build=functools.partial(build_candidate, pipeline="slimgraph"))
    """
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm.tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target,
                          pipeline=tir_pipeline.registered(pipeline))


def _was_tuned(tuned, original) -> bool:
    import tvm_ffi

    return not tuned.same_as(original) and not tvm_ffi.structural_equal(tuned, original)

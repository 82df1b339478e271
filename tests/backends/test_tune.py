"""MetaSchedule tuning through ``slimgraph.compile(tune=..., database=...)``: records kept and reused.

One linear+relu kernel is tuned for a few trials (the budget is kept tiny:
this checks the plumbing, not the search), then rebuilt with ``tune=0`` from
the same folder. Most of the tuning test's time is MetaSchedule importing its
tensor intrinsics.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from slimgraph.api import compile, import_model  # noqa: E402
from slimgraph.backends.tvm.targets import runnable_targets  # noqa: E402
from slimgraph.backends.tvm.tune import DATABASE_FILES  # noqa: E402
from slimgraph.errors import BackendError  # noqa: E402


@pytest.fixture(scope="module")
def linear_relu():
    """(module, example inputs, the interpreter's output)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU()).eval()
    x = torch.randn(4, 32)
    return module, (x,), import_model(module, (x,)).run(x.numpy())[0]


def _records(folder) -> list[list]:
    """The tuning records MetaSchedule wrote: one ``[workload index, record]`` JSON list per line."""
    lines = (folder / DATABASE_FILES[1]).read_text().splitlines()
    return [json.loads(line)[1] for line in lines if line.strip()]


def test_tuning_writes_records_that_a_later_build_applies(linear_relu, tmp_path):
    module, inputs, want = linear_relu
    ruled = compile(module, inputs)
    # an unnamed handler on MetaSchedule's logger (as pytest's log capture leaves after an earlier
    # tuning in the process) made TVM's logging setup fail; it stays in place, and nothing is added
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = logging.NullHandler()
    ms_logger.addHandler(unnamed)
    try:
        tuned = compile(module, inputs, tune=8, database=tmp_path)
        assert ms_logger.handlers[-1:] == [unnamed] and ms_logger.handlers.count(unnamed) == 1
        assert not any(h.get_name() for h in ms_logger.handlers)
    finally:
        ms_logger.removeHandler(unnamed)
    records = _records(tmp_path)
    assert len(records) == 8
    # a record is [trace, run_secs, target, args]; a failed candidate's run_secs is [1e10]
    assert any(all(0 < t < 1 for t in run_secs) for _, run_secs, _, _ in records)

    reused = compile(module, inputs, tune=0, database=tmp_path)
    assert len(_records(tmp_path)) == 8  # tune=0 only reads the folder
    for model in (tuned, reused):
        (kernel,) = model.kernels
        assert "meta_schedule." in kernel.tir  # MetaSchedule's annotations: the searched schedule
        assert kernel.tir != ruled.kernels[0].tir
    assert reused.kernels[0].tir == tuned.kernels[0].tir
    assert "meta_schedule." not in ruled.kernels[0].tir
    for model in (ruled, tuned, reused):
        np.testing.assert_allclose(model(inputs[0].numpy()), want, rtol=1e-5, atol=1e-5)


def test_an_empty_database_folder_keeps_the_rule_schedules(linear_relu, tmp_path):
    module, inputs, want = linear_relu
    ruled = compile(module, inputs)
    model = compile(module, inputs, tune=0, database=tmp_path)
    assert model.kernels[0].tir == ruled.kernels[0].tir
    np.testing.assert_allclose(model(inputs[0].numpy()), want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("cuda" in runnable_targets(), reason="a CUDA GPU is visible: tuning for it is possible")
def test_tuning_for_a_gpu_this_machine_cannot_run_is_refused(linear_relu, tmp_path):
    module, inputs, _ = linear_relu
    with pytest.raises(BackendError, match="tuning measures kernels on the device"):
        compile(module, inputs, target="cuda:sm_90", tune=4, database=tmp_path)

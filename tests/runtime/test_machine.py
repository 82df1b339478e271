"""The run-queue reading behind the guard's idle hint."""

from __future__ import annotations

import sys

import pytest

from slimgraph.runtime import machine


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procs_running is Linux's")
def test_the_run_queue_counts_at_least_the_caller():
    assert machine.runnable_threads() >= 1


def test_an_unreadable_or_unexpected_proc_stat_means_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "PROC_STAT", str(tmp_path / "missing"))
    assert machine.runnable_threads() is None and machine.machine_idle() is False
    stat = tmp_path / "stat"
    stat.write_text("cpu 1 2 3\nprocs_running x\n")
    monkeypatch.setattr(machine, "PROC_STAT", str(stat))
    assert machine.runnable_threads() is None
    stat.write_text("cpu 1 2 3\nprocs_running 1\nprocs_blocked 0\n")
    assert machine.runnable_threads() == 1 and machine.machine_idle() is True
    stat.write_text("cpu 1 2 3\nprocs_running 5\n")
    assert machine.machine_idle() is False

"""The timing loop and its statistics, on a fake clock: every figure is exact and nothing here
depends on how fast the machine is."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from slimgraph.errors import ArgumentError, SlimgraphWarning
from slimgraph.timing import DEFAULT_RUNS, TickClock, Timing, measure


def scripted(clock: TickClock, seconds):
    """A function whose calls 'take' the given seconds in turn, counting its calls."""
    durations = iter(seconds)
    calls = []

    def fn():
        calls.append(1)
        clock.advance(next(durations))

    return fn, calls


def test_first_call_warmup_and_runs_are_separate():
    clock = TickClock()
    # first call 1 s (lazy set-up), two warm-up calls, then four timed calls
    fn, calls = scripted(clock, [1.0, 0.5, 0.5, 0.25, 0.125, 0.25, 0.5])
    t = measure(fn, runs=4, warmup=2, clock=clock, max_cv=None)
    assert len(calls) == 7
    assert t.first_ms == 1000.0 and t.warmup == 2
    assert t.times_ms == (250.0, 125.0, 250.0, 500.0)
    assert t.median_ms == 250.0 and t.min_ms == 125.0 and t.max_ms == 500.0
    assert t.mean_ms == pytest.approx(281.25)
    assert t.wall_s == pytest.approx(1.125)
    assert t.throughput == pytest.approx(4 / 1.125)


def test_percentiles_match_numpy():
    clock = TickClock()
    seconds = [0.0] + [i / 1000 for i in range(1, 101)]  # 1..100 ms
    fn, _ = scripted(clock, seconds)
    t = measure(fn, runs=100, warmup=0, clock=clock, max_cv=None)
    times = np.arange(1, 101, dtype=float)
    for q, got in ((50, t.median_ms), (90, t.p90_ms), (95, t.p95_ms), (99, t.p99_ms)):
        assert got == pytest.approx(np.percentile(times, q))
    assert t.p90_ms < t.p95_ms < t.p99_ms  # distinct figures, not one number three times
    assert t.cv == pytest.approx(np.std(times, ddof=1) / np.mean(times))


def test_default_is_a_count():
    clock = TickClock(tick=0.001)
    t = measure(lambda: None, warmup=0, clock=clock, max_cv=None)
    assert t.runs == DEFAULT_RUNS


def test_run_by_duration_stops_once_the_time_has_passed():
    clock = TickClock()
    fn, calls = scripted(clock, [1 / 64] * 1000)
    t = measure(fn, duration_s=0.125, warmup=0, clock=clock, max_cv=None)
    assert t.runs == 8 and len(calls) == 9  # the first call is not a run
    assert t.wall_s == 0.125


def test_count_and_duration_both_reached_and_the_cap_wins():
    clock = TickClock()
    fn, _ = scripted(clock, [1 / 64] * 1000)
    assert measure(fn, runs=20, duration_s=0.125, warmup=0, clock=clock, max_cv=None).runs == 20
    assert measure(fn, runs=2, duration_s=0.125, warmup=0, clock=clock, max_cv=None).runs == 8
    assert measure(fn, runs=2, duration_s=10.0, max_runs=7, warmup=0, clock=clock, max_cv=None).runs == 7


def test_warmup_by_duration_is_capped():
    clock = TickClock()
    fn, calls = scripted(clock, [1 / 64] * 1000)
    t = measure(fn, runs=1, warmup=2, warmup_s=0.125, clock=clock, max_cv=None)
    assert t.warmup == 8 and len(calls) == 1 + 8 + 1
    t = measure(fn, runs=1, warmup=2, warmup_s=100.0, max_warmup=20, clock=clock, max_cv=None)
    assert t.warmup == 20


def test_concurrent_callers_share_the_count():
    # a clock per thread: each caller's calls take 10 ms of its own time, however the threads interleave
    local = threading.local()

    def fn():
        local.now = getattr(local, "now", 0.0) + 0.01

    t = measure(fn, runs=40, warmup=1, batch=8, concurrency=4, clock=lambda: getattr(local, "now", 0.0),
                max_cv=None)
    assert t.runs == 40 and t.concurrency == 4 and t.batch == 8
    assert t.times_ms == pytest.approx((10.0,) * 40)


def test_concurrent_callers_each_warm_up_on_their_own_thread():
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def fn():
        with lock:
            me = threading.get_ident()
            seen[me] = seen.get(me, 0) + 1

    t = measure(fn, runs=12, warmup=3, concurrency=3, clock=TickClock(0.001), max_cv=None)
    assert t.runs == 12
    workers = {k: v for k, v in seen.items() if k != threading.get_ident()}
    assert len(workers) == 3 and all(v >= 3 for v in workers.values())
    assert sum(workers.values()) == 3 * 3 + 12  # the first call ran on the measuring thread


def test_an_error_in_a_caller_reaches_the_measuring_thread():
    def fn():
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("kernel failed")

    for warmup in (0, 2):  # failing in the timed phase, or in the warm-up while the others wait
        with pytest.raises(RuntimeError, match="kernel failed"):
            measure(fn, runs=4, warmup=warmup, concurrency=2, clock=TickClock(0.001), max_cv=None)


def test_noisy_runs_warn_and_steady_ones_do_not():
    clock = TickClock()
    fn, _ = scripted(clock, [0.01] + [0.01, 0.03] * 10)
    with pytest.warns(SlimgraphWarning, match=r"coefficient of variation.*too noisy to trust"):
        measure(fn, runs=20, warmup=0, clock=clock)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlimgraphWarning)
        measure(lambda: None, runs=20, warmup=0, clock=TickClock(0.001))
        fn, _ = scripted(clock, [0.01] + [0.01, 0.03] * 10)
        measure(fn, runs=20, warmup=0, clock=clock, max_cv=None)  # asked not to warn


def test_as_dict_and_summary_carry_every_figure():
    t = Timing((1.0, 2.0, 3.0, 4.0), first_ms=9.0, wall_s=0.01, warmup=5, batch=2, concurrency=2)
    data = t.as_dict()
    assert data["median_ms"] == 2.5 and data["first_ms"] == 9.0 and data["times_ms"] == [1.0, 2.0, 3.0, 4.0]
    assert data["throughput"] == pytest.approx(800.0)
    assert {"p90_ms", "p95_ms", "p99_ms", "mean_ms", "cv", "concurrency", "batch"} <= data.keys()
    text = t.summary()
    assert "first call   9.000 ms" in text and "median 2.500 ms" in text and "p99 3.970" in text
    assert "800.0 samples/s (batch 2, 2 callers, 4 runs" in text


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(runs=0), "runs=0"), (dict(runs=2.5), "runs=2.5"), (dict(warmup=-1), "warmup=-1"),
    (dict(duration_s=0), "duration_s=0"), (dict(warmup_s=-1.0), "warmup_s=-1.0"), (dict(batch=0), "batch=0"),
    (dict(concurrency=0), "concurrency=0"), (dict(max_runs=0), "max_runs=0"), (dict(max_cv=-0.1), "max_cv=-0.1"),
    (dict(warmup=10, max_warmup=5), "max_warmup=5"),
])
def test_bad_arguments_are_named_before_any_call(kwargs, fragment):
    calls = []
    with pytest.raises(ArgumentError, match=fragment.replace(".", r"\.")):
        measure(lambda: calls.append(1), clock=TickClock(0.001), **kwargs)
    assert not calls

"""The one warm-up-and-timing loop of slimgraph, and the statistics of what it measured.

:func:`measure` times a function the way OpenVINO's ``benchmark_app`` and
TensorRT's ``trtexec`` time an engine: the first call alone (what the first
request sees, lazy set-up included), then warm-up calls (a count and, if asked,
a least duration), then timed calls by count or by duration, from one caller or
from several threads calling the same function at once. The :class:`Timing` it
returns has the median, p90/p95/p99, the mean with its coefficient of variation,
and the throughput at the given batch; a :class:`~slimgraph.errors.SlimgraphWarning`
says when the runs varied too much to trust. ``CompiledModel.benchmark``, the
ledger, ``runtime.narrow`` and the scripts under ``benchmarks/`` all time through it.

The clock is injectable, so code built on this loop is tested without real time:
:class:`TickClock` is a clock that only moves when it is read or told to.

Example::

    >>> clock = TickClock()
    >>> seconds = iter([0.5, 0.25, 0.25, 0.375, 0.25])   # what each call 'takes'
    >>> t = measure(lambda: clock.advance(next(seconds)), runs=4, warmup=0, clock=clock, max_cv=None)
    >>> t.first_ms, t.median_ms, t.max_ms, t.runs
    (500.0, 250.0, 375.0, 4)
    >>> round(t.throughput, 2)  # samples per second: 4 calls in 1.125 s
    3.56
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from slimgraph.arguments import check_int, check_positive
from slimgraph.errors import ArgumentError, SlimgraphWarning

Clock = Callable[[], float]  # seconds, monotonic

#: Runs when neither a count nor a duration is asked for.
DEFAULT_RUNS = 30
#: A coefficient of variation (standard deviation over mean) above this warns: the mean is not to be trusted.
NOISY_CV = 0.10


class TickClock:
    """A fake monotonic clock: each read moves it ``tick`` seconds, :meth:`advance` moves it
    further. Safe to share between threads.

    >>> clock = TickClock(tick=0.5)
    >>> clock(), clock(), clock.advance(2.0), clock()
    (0.0, 0.5, None, 3.0)
    """

    def __init__(self, tick: float = 0.0, start: float = 0.0):
        self.tick = tick
        self._now = start
        self._lock = threading.Lock()
        self.reads = 0

    def __call__(self) -> float:
        with self._lock:
            now = self._now
            self._now += self.tick
            self.reads += 1
            return now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward without reading it (a call that 'takes' that long)."""
        with self._lock:
            self._now += seconds


@dataclass(frozen=True)
class Timing:
    """What :func:`measure` saw: every timed call's latency and the figures users compare.

    ``times_ms`` holds each timed call in milliseconds (all callers together);
    ``wall_s`` is the timed phase's wall time, from which ``throughput`` (samples
    per second: ``batch`` times calls over wall time) is computed, so concurrent
    callers that overlap show as more throughput at the same latency.
    """

    times_ms: tuple[float, ...]
    first_ms: float
    wall_s: float
    warmup: int
    batch: int = 1
    concurrency: int = 1

    @property
    def runs(self) -> int:
        return len(self.times_ms)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the latencies, in ms (linear interpolation, as numpy's)."""
        return float(np.percentile(self.times_ms, q))

    @property
    def median_ms(self) -> float:
        return self.percentile(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile(90)

    @property
    def p95_ms(self) -> float:
        return self.percentile(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.times_ms))

    @property
    def std_ms(self) -> float:
        """Sample standard deviation (0 for a single run)."""
        return float(np.std(self.times_ms, ddof=1)) if self.runs > 1 else 0.0

    @property
    def cv(self) -> float:
        """Coefficient of variation: standard deviation over mean."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Samples per second over the timed phase (``batch`` samples per call)."""
        return self.batch * self.runs / self.wall_s if self.wall_s > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        """Every figure, and the raw latencies, as JSON-able data."""
        figures = ("runs", "first_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "mean_ms",
                   "std_ms", "cv", "throughput", "wall_s", "warmup", "batch", "concurrency")
        return {**{name: getattr(self, name) for name in figures}, "times_ms": list(self.times_ms)}

    def summary(self) -> str:
        """The figures as lines, in the order ``benchmark_app`` and ``trtexec`` print them."""
        callers = f"{self.concurrency} caller{'s' if self.concurrency > 1 else ''}"
        return "\n".join([
            f"first call   {self.first_ms:.3f} ms",
            f"latency      median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f}, p95 {self.p95_ms:.3f}, "
            f"p99 {self.p99_ms:.3f}, min {self.min_ms:.3f}, max {self.max_ms:.3f}",
            f"mean         {self.mean_ms:.3f} ms, coefficient of variation {self.cv * 100:.1f}%",
            f"throughput   {self.throughput:.1f} samples/s (batch {self.batch}, {callers}, {self.runs} runs "
            f"in {self.wall_s:.2f} s after {self.warmup} warm-up calls)",
        ])


def measure(
    fn: Callable[[], Any],
    *,
    runs: int | None = None,
    duration_s: float | None = None,
    max_runs: int | None = None,
    warmup: int = 5,
    warmup_s: float = 0.0,
    max_warmup: int = 5000,
    batch: int = 1,
    concurrency: int = 1,
    clock: Clock = time.perf_counter,
    max_cv: float | None = NOISY_CV,
) -> Timing:
    """Time ``fn()``: the first call alone, then warm-up, then the timed calls.

    Warm-up is at least ``warmup`` calls and at least ``warmup_s`` seconds, but no
    more than ``max_warmup`` calls (each caller warms up on its own thread). The
    timed phase runs until ``runs`` calls are made and ``duration_s`` seconds have
    passed (either alone: that one; neither: ``DEFAULT_RUNS`` calls), stopping at
    ``max_runs`` calls whatever the duration. ``concurrency`` threads call
    ``fn`` at once, sharing the count. ``batch`` is the samples one call handles,
    for the throughput. When the runs' coefficient of variation exceeds ``max_cv``
    a :class:`SlimgraphWarning` says the figures are too noisy to trust
    (``max_cv=None``: never). ``clock`` returns seconds.

    >>> t = measure(lambda: None, runs=3, warmup=1, clock=TickClock(0.125), max_cv=None)
    >>> t.times_ms, t.warmup
    ((125.0, 125.0, 125.0), 1)
    """
    if not callable(fn):
        raise ArgumentError(f"fn={fn!r}: must be a function to time")
    least = check_int("runs", runs, minimum=1) if runs is not None else (1 if duration_s is not None else DEFAULT_RUNS)
    seconds = check_positive("duration_s", duration_s) if duration_s is not None else 0.0
    cap = check_int("max_runs", max_runs, minimum=1) if max_runs is not None else None
    check_int("warmup", warmup, minimum=0)
    if isinstance(warmup_s, bool) or not isinstance(warmup_s, (int, float)) or not 0 <= warmup_s < math.inf:
        raise ArgumentError(f"warmup_s={warmup_s!r}: must be a finite number of seconds >= 0")
    check_int("max_warmup", max_warmup, minimum=warmup)
    check_int("batch", batch, minimum=1)
    check_int("concurrency", concurrency, minimum=1)
    if max_cv is not None:
        check_positive("max_cv", max_cv)

    start = clock()
    fn()
    first_ms = (clock() - start) * 1e3

    state = _Run(least, seconds, cap, clock)
    # callers start the timed phase together, once every one has warmed up
    barrier = threading.Barrier(concurrency, action=state.begin)

    def caller(times: list[float]) -> None:
        calls, began = 0, clock()
        try:
            while calls < max_warmup and (calls < warmup or clock() - began < warmup_s):
                fn()
                calls += 1
        except BaseException:
            barrier.abort()  # the other callers must not wait for this one
            raise
        state.warmed(calls)
        barrier.wait()
        while state.claim():
            t0 = clock()
            fn()
            times.append((clock() - t0) * 1e3)

    per_caller: list[list[float]] = [[] for _ in range(concurrency)]
    if concurrency == 1:
        caller(per_caller[0])
    else:
        _in_threads(caller, per_caller)
    times = tuple(t for own in per_caller for t in own)
    timing = Timing(times, first_ms, clock() - state.start, state.warmup_calls, batch, concurrency)
    if max_cv is not None and timing.runs > 1 and timing.cv > max_cv:
        warnings.warn(SlimgraphWarning(
            f"latency varied by {timing.cv * 100:.0f}% (coefficient of variation) over {timing.runs} runs "
            f"(median {timing.median_ms:.3f} ms, min {timing.min_ms:.3f}, max {timing.max_ms:.3f}): too noisy to "
            f"trust; run longer, or on a quieter machine"), stacklevel=2)
    return timing


class _Run:
    """The timed phase's shared state: callers claim calls one at a time until the count and
    the duration are both reached, or the cap."""

    def __init__(self, least: int, seconds: float, cap: int | None, clock: Clock):
        self.least, self.seconds, self.cap, self.clock = least, seconds, cap, clock
        self.lock = threading.Lock()
        self.claimed = 0
        self.warmup_calls = 0
        self.start = 0.0

    def warmed(self, calls: int) -> None:
        with self.lock:
            self.warmup_calls = max(self.warmup_calls, calls)

    def begin(self) -> None:
        self.start = self.clock()

    def claim(self) -> bool:
        with self.lock:
            if self.claimed >= self.least and self.clock() - self.start >= self.seconds:
                return False
            if self.cap is not None and self.claimed >= self.cap:
                return False
            self.claimed += 1
            return True


def _in_threads(caller: Callable[[list[float]], None], per_caller: list[list[float]]) -> None:
    """Run ``caller`` on one thread per list and wait for all; the first error of any is raised here
    (the callers' own, before the broken barrier it left the others)."""
    errors: list[BaseException] = []

    def run(own: list[float]) -> None:
        try:
            caller(own)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the measuring thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(own,), daemon=True) for own in per_caller]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise min(errors, key=lambda e: isinstance(e, threading.BrokenBarrierError))

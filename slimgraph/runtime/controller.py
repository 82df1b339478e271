"""The latency controller: which width of a model to run next, to stay under a budget.

A :class:`LatencyController` holds a ladder of variants ordered widest first
(index 0 is the full model). It keeps the latencies of the last calls each
variant served and reads two estimates from them: the *recent* latency, the
median of the last few calls (it follows a change of load within a few calls
and ignores an odd slow one), and the *tail*, the 95th percentile of a longer
window (a budget is kept or missed in the tail).

The *slowdown* is how much slower than unloaded a variant runs now; other
variants' latencies under the present load are predicted as their unloaded
latencies times the slowdown. (It is a rough guide: under a competing load
short calls suffer less than long ones, so it only ever decides how far to
step, never whether to.)

- **Down.** When more than half of the current variant's last ``recent``
  calls are over the budget (its recent latency is), or its tail is once
  the window holds ``min_samples`` calls, it steps down at once, as far as
  the load requires: to the widest narrower variant predicted to fit the
  budget, the slowdown read from the recent calls over it (at least one
  rung; the narrowest is the floor).
- **Up.** While below the top it sends one call now and then to the next
  wider variant (a *probe*). When the probe is under ``budget *
  up_fraction``, it steps up to the widest variant predicted to fit that
  headroom at the probe's slowdown: once the load has gone, a single probe
  brings it back to the top. A step up is on probation for its first
  ``recent`` calls: one of them over the budget takes it back to where it
  came from (a lucky probe costs one slow call, not three).
- **Cheap probes.** A probe under load costs a slow call, so a probe that
  does not fit doubles the wait before the next probe from that variant (up
  to ``max_backoff`` times the ``probe_interval_s``), and so does a step up
  undone within ``hold_s``. The wait is cut short when each of the current
  variant's last ``recent`` calls is under ``eased_fraction`` of its median
  over the window at the last failed probe: the load has eased, so the wider
  variant may fit again. It is cut short too when the ``idle`` hint (the
  guard reads the machine's run queue) says nothing else runs: a call at a
  narrow rung is short enough to finish inside the time slices a competing
  load leaves it, so its latency may not show that the load has gone.
- **Threads.** A ladder may hold the same widths at fewer threads (a rung's
  thread count; rungs with more threads come first, each thread class
  widest first). On a machine with more runnable threads than cores a
  multi-threaded call waits at every kernel's barrier for a descheduled
  worker, so under load a single-threaded narrow rung fits where no
  multi-threaded one does. Predictions respect that (:meth:`predict`): a
  multi-threaded rung is predicted to lose at least the observed excess, and
  a rung with more threads than any observed is never predicted, only
  probed. A probe passes over the rungs of a lower thread class whose
  unloaded latency is over the headroom; past them it goes to the widest
  rung of the next thread class up that fits the headroom unloaded, so one
  fitting probe there brings the ladder back to the top.
- **No flapping.** The gap between the down and up thresholds (hysteresis),
  a minimum time from any switch to a step up (``dwell_s``), the median
  (a noise spike moves it little) and the back-off.

A variant's unloaded latency is the one it was measured at, lowered to its
recent latency whenever that is lower: a measurement taken on a busy machine
is too high, never too low, and a baseline that is too high would make every
slowdown look smaller than it is.

The controller is pure Python and takes its clock as an argument, so tests
drive it with a fake clock and scripted latencies. It is not thread-safe by
itself: :class:`~slimgraph.runtime.guard.GuardedModel` holds a lock around it.

Example::

    >>> ctl = LatencyController([2.0, 1.0], budget_ms=3.0, clock=lambda: 0.0)
    >>> ctl.choose()
    0
    >>> for _ in range(5):
    ...     ctl.record(ctl.choose(), 6.0)  # three times the unloaded latency: over budget
    >>> ctl.current
    1
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Sequence

from slimgraph.errors import SlimgraphError


class ControllerError(SlimgraphError):
    """A latency controller was given an invalid ladder or setting."""


@dataclass(frozen=True)
class ControllerConfig:
    """Tuning of :class:`LatencyController` (see its module for the rules).

    ``recent`` calls per variant give the recent latency (their median), and
    a step up is on probation for that many calls; ``window`` calls give the
    tail (their ``quantile``), read only once it holds ``min_samples``. Step
    down above ``budget * down_fraction``, up below ``budget * up_fraction``;
    no step up within ``dwell_s`` of a switch. One probe per
    ``probe_interval_s`` times the back-off, which
    doubles on a probe that does not fit or a step up undone within
    ``hold_s``, up to ``max_backoff``; a probe comes early when each of the
    current variant's last ``recent`` calls is under ``eased_fraction`` of its
    window's median at the last failed probe.

    Example::

        >>> ControllerConfig(window=20).quantile
        0.95
    """

    window: int = 50
    quantile: float = 0.95
    min_samples: int = 20
    recent: int = 5
    down_fraction: float = 1.0
    up_fraction: float = 0.8
    dwell_s: float = 0.25
    probe_interval_s: float = 0.25
    max_backoff: int = 8
    hold_s: float = 2.0
    eased_fraction: float = 0.8

    def __post_init__(self) -> None:
        for name in ("min_samples", "recent"):
            if not 1 <= getattr(self, name) <= self.window:
                raise ControllerError(f"window={self.window}, {name}={getattr(self, name)}: need 1 <= {name} <= window")
        if not 0.0 <= self.quantile <= 1.0:
            raise ControllerError(f"quantile={self.quantile}: must be in [0, 1]")
        if not 0.0 < self.up_fraction < self.down_fraction:
            raise ControllerError(
                f"up_fraction={self.up_fraction}, down_fraction={self.down_fraction}: need 0 < up < down "
                f"(the gap between them is the hysteresis)"
            )
        if not 0.0 < self.eased_fraction <= 1.0:
            raise ControllerError(f"eased_fraction={self.eased_fraction}: must be in (0, 1]")
        if self.max_backoff < 1:
            raise ControllerError(f"max_backoff={self.max_backoff}: must be at least 1")
        for name in ("dwell_s", "probe_interval_s", "hold_s"):
            if getattr(self, name) < 0:
                raise ControllerError(f"{name}={getattr(self, name)}: must be >= 0")


class LatencyController:
    """Picks a rung of a width ladder per call; see the module docstring.

    ``latencies_ms`` are the measured (unloaded) latencies of the rungs in
    ladder order (the most threads first, each thread count widest first);
    they stand in for a rung's estimates until it has served calls.
    ``clock`` returns seconds. ``threads`` gives each rung's thread count;
    ``idle()``, when given, says whether the machine runs nothing but this
    caller, which lets a probe come early.
    """

    def __init__(
        self,
        latencies_ms: Sequence[float],
        budget_ms: float,
        config: ControllerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        threads: Sequence[float] | None = None,
        idle: Callable[[], bool] | None = None,
    ):
        if not latencies_ms:
            raise ControllerError("a latency controller needs at least one variant")
        self.threads = [1.0] * len(latencies_ms) if threads is None else [float(t) for t in threads]
        if len(self.threads) != len(latencies_ms) or any(not t >= 1 for t in self.threads):
            raise ControllerError(f"threads={threads}: need one thread count (>= 1) per rung")
        if any(a < b for a, b in zip(self.threads, self.threads[1:])):
            raise ControllerError(f"threads={threads}: rungs with more threads come first")
        if not (budget_ms > 0 and math.isfinite(budget_ms)):
            raise ControllerError(f"budget_ms={budget_ms}: must be a positive number of milliseconds")
        self.budget_ms = float(budget_ms)
        self.config = config or ControllerConfig()
        self.clock = clock
        self.idle = idle
        self.unloaded = [float(x) for x in latencies_ms]
        if not all(x > 0 and math.isfinite(x) for x in self.unloaded):
            raise ControllerError(f"latencies_ms={list(latencies_ms)}: each must be a positive number")
        self._windows = [deque(maxlen=self.config.window) for _ in self.unloaded]
        # per rung, for the probes sent from it: the back-off, and the latency its last
        # calls must all be under for a probe to come early (0: never)
        self._backoff = [1] * self.size
        self._eased_below = [0.0] * self.size
        self._last_up = (-math.inf, 0, 0)  # (time, from rung, to rung) of the last step up
        self._probation = 0  # calls left before a step up is trusted
        self.current = 0
        self.switches = 0
        self._last_switch = -math.inf
        self._last_probe = clock()

    @property
    def size(self) -> int:
        return len(self.unloaded)

    def recent(self, index: int) -> float:
        """The recent latency of rung ``index`` (ms): the median of its last ``config.recent`` calls."""
        window = self._windows[index]
        if not window:
            return self.unloaded[index]
        return statistics.median(self._last(index))

    def tail(self, index: int) -> float:
        """The tail latency of rung ``index`` (ms): the ``config.quantile`` of its last ``config.window`` calls."""
        window = self._windows[index]
        if not window:
            return self.unloaded[index]
        # the inverted-CDF quantile (the smallest sample with at least that share of the
        # calls at or below it) is over the budget only when more than 1 - quantile of
        # the calls are: one odd slow call among 20 never decides, as interpolation would
        rank = max(math.ceil(self.config.quantile * len(window) - 1e-9), 1)
        return sorted(window)[rank - 1]

    def _last(self, index: int) -> list[float]:
        """The latencies of the last ``config.recent`` calls of rung ``index``."""
        window = self._windows[index]
        return list(islice(window, max(len(window) - self.config.recent, 0), None))

    @property
    def headroom(self) -> float:
        """The latency (ms) a probe must beat for a step up: ``budget * up_fraction``."""
        return self.budget_ms * self.config.up_fraction

    def probe_interval(self) -> float:
        """Seconds between probes of the next wider rung, back-off included."""
        return self.config.probe_interval_s * self._backoff[self.current]

    def probe_rung(self) -> int | None:
        """The rung a probe from the current one goes to (None at the top): the next wider
        one of the same thread count, unless it is below the top thread count and its
        unloaded latency is over the headroom (it serves only under load; a probe of it
        never fits). Past that, the widest rung of the next larger thread count whose
        unloaded latency is under the headroom (else its narrowest): under load a probe
        with more threads costs its barrier stalls whatever its width, so it may as well
        be the rung whose answer brings the ladder back to the top."""
        rung, headroom = self.current, self.headroom
        if rung == 0:
            return None
        wider, own = rung - 1, self.threads[rung]
        if self.threads[wider] == own and (own == self.threads[0] or self.unloaded[wider] < headroom):
            return wider
        more = min(t for t in self.threads[:rung] if t > own)  # the next thread count up
        rungs = [r for r in range(rung) if self.threads[r] == more]
        return next((r for r in rungs if self.unloaded[r] < headroom), rungs[-1])

    def predict(self, rung: int, observed: int, latency_ms: float) -> float:
        """Rung ``rung``'s latency (ms) under the load at which rung ``observed`` took ``latency_ms``.

        Work scales with the slowdown (``latency / unloaded`` of the observed rung). A
        multi-threaded call also waits at each kernel's barrier for a worker the OS has
        descheduled, a loss that does not shrink with the work, so for a rung with more
        than one thread the prediction is at least its unloaded latency plus the observed
        rung's excess. A rung with more threads than the observed one cannot be predicted
        from it (inf): it is only reached by probing it.
        """
        if self.threads[rung] > self.threads[observed]:
            return math.inf
        base = self.unloaded[observed]
        scaled = self.unloaded[rung] * latency_ms / base
        if self.threads[rung] > 1:
            return max(scaled, self.unloaded[rung] + latency_ms - base)
        return scaled

    def choose(self) -> int:
        """The rung to run next: the current one, or a wider one when a probe is due."""
        target = self.probe_rung()
        if target is None:
            return self.current
        now = self.clock()
        waited = now - self._last_probe
        last = self._last(self.current)
        # every one of the last calls, not their median: under load a run of lucky calls
        # pulls a median of five down often, five of five rarely
        eased = len(last) == self.config.recent and max(last) < self._eased_below[self.current]
        due = waited >= self.probe_interval()
        if not due and waited >= self.config.probe_interval_s:
            # a short call barely slows under load, so from a narrow rung the load's end may not
            # show in its latency: a machine that runs nothing else says so directly
            # (only for a rung that fits unloaded: idleness cannot make the others fit)
            fits_unloaded = self.unloaded[target] < self.headroom
            due = eased or (fits_unloaded and self.idle is not None and self.idle())
        if due:
            self._last_probe = now
            return target
        return self.current

    def record(self, index: int, latency_ms: float) -> None:
        """Feed back the latency of a call that ran rung ``index``; may switch rungs."""
        if not 0 <= index < self.size:
            raise ControllerError(f"rung {index} is out of range: the ladder has {self.size} variants")
        now = self.clock()
        window = self._windows[index]
        window.append(float(latency_ms))
        if len(window) >= self.config.recent:
            self.unloaded[index] = min(self.unloaded[index], self.recent(index))
        if index == self.current:
            target = self._step_down_target(index, latency_ms)
            self._probation = max(self._probation - 1, 0)
            if target is not None:
                self._step_down(target, now)
        elif index == self.probe_rung():
            self._judge_probe(index, latency_ms, now)

    def _step_down_target(self, index: int, latency_ms: float) -> int | None:
        """The rung to step down to when the current rung ``index`` is over budget, else None."""
        cfg, window = self.config, self._windows[index]
        limit = self.budget_ms * cfg.down_fraction
        if index == self.size - 1:
            return None
        if self._probation and latency_ms > limit:
            return self._last_up[1]  # back to where the step up came from
        # a load that just began shows in the recent calls over the limit (the others
        # ran before it); a tail of odd slow calls is a reason to step down, not to step far
        slow = [x for x in self._last(index) if x > limit]
        if len(slow) > cfg.recent // 2:
            level = statistics.median(slow)
        elif len(window) >= cfg.min_samples and self.tail(index) > limit:
            level = self.recent(index)
        else:
            return None
        return next((r for r in range(index + 1, self.size) if self.predict(r, index, level) <= limit), self.size - 1)

    def _step_down(self, target: int, now: float) -> None:
        cfg, rung = self.config, self.current
        up_at, came_from, went_to = self._last_up
        if went_to == rung and now - up_at < cfg.hold_s:
            self._backoff[came_from] = min(self._backoff[came_from] * 2, cfg.max_backoff)
        else:
            # a new load: the rungs it may probe from start afresh
            for r in range(rung + 1, target + 1):
                self._backoff[r], self._eased_below[r] = 1, 0.0
        self._switch(target, now)

    def _judge_probe(self, index: int, latency_ms: float, now: float) -> None:
        cfg, rung, headroom = self.config, self.current, self.headroom
        if latency_ms >= headroom:
            self._backoff[rung] = min(self._backoff[rung] * 2, cfg.max_backoff)
            # the load level is the median of the whole window: a recent median that dipped on
            # noise (and brought this probe early) must not lower the bar the next ease must pass
            window = self._windows[rung]
            level = statistics.median(window) if window else self.unloaded[rung]
            self._eased_below[rung] = level * cfg.eased_fraction
        elif now - self._last_switch >= cfg.dwell_s:
            target = next(r for r in range(index + 1) if self.predict(r, index, latency_ms) < headroom)
            self._last_up = (now, rung, target)
            self._switch(target, now)
            self._probation = cfg.recent

    def _switch(self, rung: int, now: float) -> None:
        # the new rung starts from a clean window (a step up to the probed rung keeps
        # the probe that justified it): its older samples (probes under a load that has
        # since gone, calls before the switch) would judge it by another time
        window = self._windows[rung]
        keep = [window[-1]] if rung == self.probe_rung() and window else []
        window.clear()
        window.extend(keep)
        self.current = rung
        self.switches += 1
        self._last_switch = now
        self._probation = 0
        # the first probe of the new wider neighbour waits a full interval: the
        # estimate that caused a step down must not be overturned at once
        self._last_probe = now

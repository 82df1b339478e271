"""The latency controller: which width of a model to run next, to stay under a budget.

A :class:`LatencyController` holds a ladder of variants ordered widest first
(index 0 is the full model). Its latency estimate of a variant is a tail
estimate smoothed over recent calls: the 95th percentile of the last 50
calls that variant served (a budget is kept or missed in the tail, and one
slow call moves it little).

- It steps down one rung when the current variant's estimate is over the
  budget.
- While below the top it sends one call every ``probe_interval_s`` to the
  next wider variant. It steps back up when that probe and the wider
  variant's latency predicted from the present load are both below
  ``budget * up_fraction``; the prediction scales the wider variant's
  unloaded latency by the current variant's slowdown (estimate over
  unloaded latency), which every call refreshes.
- Flapping is held off three ways: the gap between the down and up
  thresholds (hysteresis), a minimum time from any switch to a step up
  (``dwell_s``; stepping down waits only for ``min_samples`` calls on the
  current rung, because a missed budget costs now), and a back-off: a step up that is undone within ``hold_s`` doubles the
  probe interval of that rung (up to ``max_backoff`` times), so a load
  whose slow calls a lucky probe missed does not pull it up again and again.

A variant's window is emptied when its newest sample is older than
``stale_after_s``: latencies measured under a load that has since gone (or
begun) say nothing about now.

The controller is pure Python and takes its clock as an argument, so tests
drive it with a fake clock and scripted latencies. It is not thread-safe by
itself: :class:`~slimgraph.runtime.guard.GuardedModel` holds a lock around it.

Example::

    >>> ctl = LatencyController([2.0, 1.0], budget_ms=3.0, clock=lambda: 0.0)
    >>> ctl.choose()
    0
    >>> for _ in range(10):
    ...     ctl.record(ctl.choose(), 6.0)  # twice the unloaded latency: over budget
    >>> ctl.current
    1
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from slimgraph.errors import SlimgraphError


class ControllerError(SlimgraphError):
    """A latency controller was given an invalid ladder or setting."""


@dataclass(frozen=True)
class ControllerConfig:
    """Tuning of :class:`LatencyController` (see its module for the rules).

    ``window`` calls per variant, of which the estimate is the ``quantile``;
    no step down on fewer than ``min_samples``; step down above
    ``budget * down_fraction``, up below ``budget * up_fraction``; no step
    up within ``dwell_s`` of a switch; one probe per ``probe_interval_s`` (times the
    back-off, which doubles when a step up is undone within ``hold_s``, up to
    ``max_backoff``); windows older than ``stale_after_s`` are emptied.

    Example::

        >>> ControllerConfig(window=10).quantile
        0.95
    """

    window: int = 50
    quantile: float = 0.95
    min_samples: int = 10
    down_fraction: float = 1.0
    up_fraction: float = 0.8
    dwell_s: float = 0.25
    probe_interval_s: float = 0.25
    hold_s: float = 2.0
    max_backoff: int = 8
    stale_after_s: float = 0.25

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_samples <= self.window:
            raise ControllerError(f"window={self.window}, min_samples={self.min_samples}: need 1 <= min <= window")
        if not 0.0 <= self.quantile <= 1.0:
            raise ControllerError(f"quantile={self.quantile}: must be in [0, 1]")
        if not 0.0 < self.up_fraction < self.down_fraction:
            raise ControllerError(
                f"up_fraction={self.up_fraction}, down_fraction={self.down_fraction}: need 0 < up < down "
                f"(the gap between them is the hysteresis)"
            )
        if self.max_backoff < 1:
            raise ControllerError(f"max_backoff={self.max_backoff}: must be at least 1")
        for name in ("dwell_s", "probe_interval_s", "hold_s", "stale_after_s"):
            if getattr(self, name) < 0:
                raise ControllerError(f"{name}={getattr(self, name)}: must be >= 0")


class LatencyController:
    """Picks a rung of a width ladder per call; see the module docstring.

    ``latencies_ms`` are the measured (unloaded) latencies of the variants,
    widest first; they stand in for a variant's estimate until it has served
    calls. ``clock`` returns seconds.
    """

    def __init__(
        self,
        latencies_ms: Sequence[float],
        budget_ms: float,
        config: ControllerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not latencies_ms:
            raise ControllerError("a latency controller needs at least one variant")
        if not (budget_ms > 0 and math.isfinite(budget_ms)):
            raise ControllerError(f"budget_ms={budget_ms}: must be a positive number of milliseconds")
        self.budget_ms = float(budget_ms)
        self.config = config or ControllerConfig()
        self.clock = clock
        self.unloaded = [float(x) for x in latencies_ms]
        if not all(x > 0 and math.isfinite(x) for x in self.unloaded):
            raise ControllerError(f"latencies_ms={list(latencies_ms)}: each must be a positive number")
        self._windows = [deque(maxlen=self.config.window) for _ in self.unloaded]
        self._updated = [-math.inf] * self.size
        self._backoff = [1] * self.size
        self._stepped_up_at = [-math.inf] * self.size
        self.current = 0
        self.switches = 0
        self._last_switch = -math.inf
        self._last_probe = clock()

    @property
    def size(self) -> int:
        return len(self.unloaded)

    def estimate(self, index: int) -> float:
        """The latency estimate of rung ``index`` (ms): a quantile of its recent calls."""
        window = self._windows[index]
        if not window:
            return self.unloaded[index]
        return float(np.quantile(np.fromiter(window, float, len(window)), self.config.quantile))

    def predicted(self, index: int) -> float:
        """Latency of rung ``index`` predicted from the current rung's slowdown under the present load."""
        slowdown = self.estimate(self.current) / self.unloaded[self.current]
        return self.unloaded[index] * slowdown

    def probe_interval(self) -> float:
        """Seconds between probes of the next wider rung, back-off included."""
        return self.config.probe_interval_s * self._backoff[max(self.current - 1, 0)]

    def choose(self) -> int:
        """The rung to run next: the current one, or the wider one when a probe is due."""
        now = self.clock()
        if self.current > 0 and now - self._last_probe >= self.probe_interval():
            self._last_probe = now
            return self.current - 1
        return self.current

    def record(self, index: int, latency_ms: float) -> None:
        """Feed back the latency of a call that ran rung ``index``; may switch rungs."""
        if not 0 <= index < self.size:
            raise ControllerError(f"rung {index} is out of range: the ladder has {self.size} variants")
        now = self.clock()
        cfg = self.config
        window = self._windows[index]
        if now - self._updated[index] > cfg.stale_after_s:
            window.clear()
        window.append(float(latency_ms))
        self._updated[index] = now
        # stepping down is never delayed (a missed budget costs now); stepping up waits out the dwell
        if index == self.current and index < self.size - 1 and len(window) >= cfg.min_samples:
            if self.estimate(index) > self.budget_ms * cfg.down_fraction:
                undone = now - self._stepped_up_at[index] < cfg.hold_s
                self._backoff[index] = min(self._backoff[index] * 2, cfg.max_backoff) if undone else 1
                self._switch(index + 1, now)
                return
        headroom = self.budget_ms * cfg.up_fraction
        if now - self._last_switch < cfg.dwell_s:
            return
        if index == self.current - 1 and max(latency_ms, self.predicted(index)) < headroom:
            self._stepped_up_at[index] = now
            self._switch(index, now)

    def _switch(self, rung: int, now: float) -> None:
        # the new rung starts from a clean window (a step up keeps the probe that
        # justified it): its older samples (probes under a load that has since
        # gone, calls before the switch) would judge it by another time
        window = self._windows[rung]
        keep = [window[-1]] if rung < self.current and window else []
        window.clear()
        window.extend(keep)
        self.current = rung
        self.switches += 1
        self._last_switch = now
        # the first probe of the new wider neighbour waits a full interval: the
        # estimate that caused a step down must not be overturned at once
        self._last_probe = now

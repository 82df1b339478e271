"""The guarded model: several variants of one model, one picked per call.

The variants (:class:`Variant`, :class:`GraphRunner`) live in
:mod:`slimgraph.runtime.variants`, saving and loading in
:mod:`slimgraph.runtime.guard_store`; this module holds the choice.

:class:`GuardedModel` picks the variant for each call in three steps:

1. input guards: the variants whose input types (shape with batch, dtype) and
   device admit the call; an exact batch specialization wins over the
   symbolic fallback. Variants with the same inputs form a ladder of widths
   (on a CPU also of thread counts: the same widths on one thread, for a
   machine with more runnable threads than cores).
   A call no guard admits raises :class:`GuardError` listing what is accepted.
2. a latency budget: a :class:`~slimgraph.runtime.controller.LatencyController`
   per ladder steps to narrower widths when calls run over budget and back up
   when there is headroom;
3. or, instead of the budget, a ``policy`` callable that gets the ladder's
   :class:`Candidate` s (measured latency, smoothed latency, accuracy) and
   returns the name of the one to run.

Calls run outside the lock, which guards only the controller state and the
statistics, so several threads can call one GuardedModel at once. A variant
whose model does not declare ``thread_safe = True`` serves one call at a time.
A call's latency is measured from when it enters the guard (the admission and
the choice are part of what the caller waits for, and on a loaded machine a
preemption there costs as much as one in the model) to the end of the model
call, less any wait for a variant busy with another thread's call.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> def scale(k):
    ...     g = Graph(f"scale{k}")
    ...     x = g.add_input("x", TensorType("f32", ("N", 2)))
    ...     g.set_outputs([g.call("mul", x, g.const(np.float32(k)))])
    ...     return GraphRunner(g)
    >>> model = GuardedModel([Variant("full", scale(2), width=1.0, latency_ms=2.0),
    ...                       Variant("half", scale(1), width=0.5, latency_ms=1.0)], budget_ms=3.0)
    >>> model(np.ones((1, 2), np.float32)).tolist()
    [[2.0, 2.0]]
    >>> model.stats().calls
    {'full': 1, 'half': 0}
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from slimgraph.arguments import check_callable, check_int, check_positive
from slimgraph.ir.types import format_shape
from slimgraph.runtime.controller import ControllerConfig, LatencyController
from slimgraph.runtime.guard_store import read_variants, save_variants
from slimgraph.runtime.machine import machine_idle
from slimgraph.runtime.variants import GraphRunner, GuardError, Variant, batch_of, describe_input, is_thread_count

log = logging.getLogger("slimgraph.runtime")

__all__ = ["CallRecord", "Candidate", "GraphRunner", "GuardError", "GuardStats", "GuardedModel", "Variant",
           "check_budget", "is_thread_count", "load_guarded"]


@dataclass(frozen=True)
class Candidate:
    """What a policy sees of a variant: measured (unloaded) latency, the median
    latency of its recent calls (None before any), accuracy (None when unmeasured),
    thread count (None: a thread per core), depth (the fraction of residual blocks kept)."""

    name: str
    width: float
    batch: int | None
    latency_ms: float | None
    recent_ms: float | None
    accuracy: float | None
    threads: int | None = None
    depth: float = 1.0


@dataclass(frozen=True)
class CallRecord:
    """One served call: when (guard clock, seconds), which variant, its latency, whether
    it was a probe of a wider variant, and how long it waited for its variant while
    another caller ran it (``waited_ms``, not part of ``latency_ms``)."""

    time: float
    variant: str
    batch: int
    latency_ms: float
    probe: bool
    waited_ms: float = 0.0


@dataclass(frozen=True)
class GuardStats:
    """Calls per variant, latency percentiles (ms) per variant and ``overall``, the
    number of switches between widths, and what reaches the caller in time (with a
    budget; None without one), each call judged by what its caller waited, the time
    it queued for its variant included:

    - ``slo_attainment``: the share of calls inside their budget;
    - ``effective_accuracy``: the mean over calls of the served variant's measured
      accuracy, a call over its budget counting as wrong (None when an accuracy is unknown);
    - ``p95_over_budget``: the 95th percentile of each call's latency over its budget;
    - ``full_share``: the share of calls on a full variant (full width and depth, every core).
    """

    calls: dict[str, int]
    latency: dict[str, dict[str, float]]
    switches: int
    slo_attainment: float | None = None
    effective_accuracy: float | None = None
    p95_over_budget: float | None = None
    full_share: float | None = None

    def table(self) -> str:
        """The statistics as Markdown."""
        lines = ["| variant | calls | p50 ms | p95 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |"]
        for name in [*self.calls, "overall"]:
            lat = self.latency.get(name, {})
            count = self.calls.get(name, sum(self.calls.values()))
            cells = [f"{lat[k]:.3f}" if k in lat else "-" for k in ("p50", "p95", "p99")]
            lines.append(f"| {name} | {count} | " + " | ".join(cells) + " |")
        lines.append(f"\nswitches: {self.switches}")
        served = {"SLO attainment": self.slo_attainment, "effective accuracy": self.effective_accuracy,
                  "p95 / budget": self.p95_over_budget, "calls on the full model": self.full_share}
        facts = [f"{k}: {v:.1%}" if k != "effective accuracy" else f"{k}: {v:.2f}%"
                 for k, v in served.items() if v is not None and k != "p95 / budget"]
        if self.p95_over_budget is not None:
            facts.insert(2, f"p95 / budget: {self.p95_over_budget:.2f}")
        if facts:
            lines.append("; ".join(facts))
        return "\n".join(lines)


PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {}
    arr = np.asarray(samples, dtype=np.float64)
    out = {k: float(np.percentile(arr, q)) for k, q in PERCENTILES.items()}
    out["mean"] = float(arr.mean())
    return out


# ---------------------------------------------------------------------------
# the guarded model


def ladder_order(variants: Sequence[Variant]) -> tuple[list[Variant], list[Variant]]:
    """The rungs of a ladder in order, and the variants left off it.

    The most threads first. Within a thread count, when every variant has a
    measured latency and accuracy (widths x depths), the rungs are the full
    model (full width and depth) and the others no variant beats on both (as
    fast or faster, as accurate or more, better in one), slowest and most
    accurate first; the beaten ones are left off, as a guard would never gain by
    running them. Without those measurements: widest first, then deepest.

    Example::

        >>> from slimgraph.ir import TensorType
        >>> t = (TensorType("f32", (1, 2)),)
        >>> vs = [Variant("full", print, inputs=t, latency_ms=4.0, accuracy=99.0),
        ...       Variant("w50", print, width=0.5, inputs=t, latency_ms=2.0, accuracy=97.0),
        ...       Variant("d50", print, depth=0.5, inputs=t, latency_ms=2.5, accuracy=96.0)]
        >>> [[v.name for v in part] for part in ladder_order(vs)]
        [['full', 'w50'], ['d50']]
    """
    rungs, left_off = [], []
    for threads in sorted({v.thread_class for v in variants}, reverse=True):
        group = [v for v in variants if v.thread_class == threads]
        if all(v.latency_ms is not None and v.accuracy is not None for v in group):
            def beaten(v: Variant) -> bool:
                if v.width == 1.0 and v.depth == 1.0:
                    return False  # the user's model stays: an accuracy measured on a few samples is noisy
                return any(o.latency_ms <= v.latency_ms and o.accuracy >= v.accuracy
                           and (o.latency_ms, o.accuracy) != (v.latency_ms, v.accuracy) for o in group)

            rungs += sorted((v for v in group if not beaten(v)), key=lambda v: (-v.latency_ms, -v.accuracy))
            left_off += [v for v in group if beaten(v)]
        else:
            rungs += sorted(group, key=lambda v: (-v.width, -v.depth))
    return rungs, left_off


class _Ladder:
    """Variants with the same inputs and device, and their selection state, in
    :func:`ladder_order` (variants it leaves off are never run)."""

    def __init__(self, variants: list[Variant], budget_ms: float | None, config, clock, idle_hint):
        self.variants, self.left_off = ladder_order(variants)
        self.spec = self.variants[0].spec
        self.static = all(t.is_static for t in self.variants[0].inputs)
        self.controller = None
        self.recent = [deque(maxlen=config.window) for _ in self.variants]
        self.current = 0
        if budget_ms is not None and len(self.variants) > 1:
            missing = [v.name for v in self.variants if not v.latency_ms]
            if missing:
                raise GuardError(
                    f"a latency budget needs each variant's measured latency; missing for {', '.join(missing)}"
                )
            # thread counts matter to the controller only when some variant sets one
            threads = [v.thread_class for v in self.variants] if any(v.threads for v in self.variants) else None
            self.controller = LatencyController(
                [v.latency_ms for v in self.variants], budget_ms, config, clock, threads=threads, idle=idle_hint
            )

    def candidates(self) -> list[Candidate]:
        return [
            Candidate(v.name, v.width, v.batch, v.latency_ms, float(np.median(r)) if r else None, v.accuracy,
                      v.threads, v.depth)
            for v, r in zip(self.variants, self.recent)
        ]


class GuardedModel:
    """Several variants of one model behind input guards and a latency budget or policy.

    ``budget_ms`` is one budget for every batch bucket or a mapping from bucket
    (None for the fallback) to budget; without a budget and a policy the widest
    admitted variant runs. ``policy(candidates) -> name`` replaces the budget.
    ``idle_hint()`` tells the controllers that nothing else runs on the machine
    (default: the run queue holds only the caller), so a probe comes early; give
    None with a fake ``clock``.
    ``on_call(record)`` is called after each call (outside the lock); the last
    ``history`` :class:`CallRecord` s are kept (``records()``).
    See the module docstring for an example.
    """

    def __init__(
        self,
        variants: Sequence[Variant],
        budget_ms: float | Mapping[int | None, float] | None = None,
        *,
        policy: Callable[[list[Candidate]], str] | None = None,
        config: ControllerConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
        on_call: Callable[[CallRecord], None] | None = None,
        history: int = 100_000,
        name: str = "model",
        idle_hint: Callable[[], bool] | None = machine_idle,
    ):
        variants = list(variants)
        if not variants:
            raise GuardError("a guarded model needs at least one variant")
        strays = [type(v).__name__ for v in variants if not isinstance(v, Variant)]
        if strays:
            raise GuardError(f"variants: each must be a Variant, got a {strays[0]}")
        check_budget(budget_ms)
        if isinstance(budget_ms, Mapping):
            buckets = {v.batch for v in variants}
            stray = [b for b in budget_ms if b not in buckets]
            if stray:
                raise GuardError(f"budget_ms: bucket {stray[0]!r} has no variant; buckets: "
                                 f"{', '.join(map(str, sorted(buckets, key=lambda b: (b is None, b or 0))))}")
        for arg, fn in (("policy", policy), ("clock", clock), ("on_call", on_call), ("idle_hint", idle_hint)):
            check_callable(arg, fn, error=GuardError)
        if config is not None and not isinstance(config, ControllerConfig):
            raise GuardError(f"config: must be a ControllerConfig, got a {type(config).__name__}")
        check_int("history", history, minimum=1, error=GuardError)
        if not isinstance(name, str) or not name:
            raise GuardError(f"name={name!r}: must be a non-empty string")
        names = [v.name for v in variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GuardError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        self.name = name
        self.variants = variants
        self.budget_ms = budget_ms
        self.policy = policy
        self.config = config or ControllerConfig()
        self.clock = clock
        self.on_call = on_call
        groups: dict[str, list[Variant]] = {}
        for v in variants:
            groups.setdefault(v.spec, []).append(v)
        # exact specializations are tried before symbolic fallbacks
        self._ladders = sorted(
            (_Ladder(vs, self._budget_for(vs[0].batch), self.config, clock, idle_hint) for vs in groups.values()),
            key=lambda ladder: not ladder.static,
        )
        self._lock = threading.Lock()
        # a model that does not declare ``thread_safe = True`` runs one call at a time, whichever
        # variant (thread count) it serves; different models still run in parallel
        model_locks: dict[int, Any] = {}
        self._call_locks = {
            v.name: contextlib.nullcontext() if getattr(v.model, "thread_safe", False)
            else model_locks.setdefault(id(v.model), threading.Lock())
            for v in variants
        }
        self._history = history
        self._clear_stats()

    def _budget_for(self, batch: int | None) -> float | None:
        if self.budget_ms is None or isinstance(self.budget_ms, (int, float)):
            return self.budget_ms
        return self.budget_ms.get(batch)

    # -- calling ---------------------------------------------------------------

    def __call__(self, *inputs: Any):
        """Run the variant the guards and the budget (or policy) pick; returns its outputs."""
        start = self.clock()
        ladder = self._admit(inputs)
        if self.policy is not None:
            rung, probe = self._ask_policy(ladder), False
        else:
            with self._lock:
                rung, probe = self._choose(ladder)
        variant = ladder.variants[rung]
        queued = self.clock()
        with self._call_locks[variant.name]:
            waited = self.clock() - queued
            result = variant(*inputs)
            end = self.clock()
        ms = (end - start - waited) * 1e3
        record = CallRecord(end, variant.name, batch_of(inputs), ms, probe, waited * 1e3)
        with self._lock:
            self._observe(ladder, rung, ms, record)
        log.debug("%s: %s served batch %d in %.3f ms%s", self.name, variant.name, record.batch, ms,
                  " (probe)" if probe else "")
        if self.on_call is not None:
            self.on_call(record)
        return result

    def select(self, *inputs: Any) -> Variant:
        """The variant a call with these inputs would run now (no call made, no state changed)."""
        ladder = self._admit(inputs)
        if self.policy is not None:
            return ladder.variants[self._ask_policy(ladder)]
        with self._lock:
            return ladder.variants[ladder.controller.current if ladder.controller else 0]

    def _admit(self, inputs: Sequence[Any]) -> _Ladder:
        for ladder in self._ladders:
            if ladder.variants[0].admits(inputs):
                return ladder
        got = ", ".join(f"{d}{format_shape(s)} on {dev}" for d, s, dev in map(describe_input, inputs)) or "no inputs"
        expected = "; ".join(ladder.spec for ladder in self._ladders)
        raise GuardError(f"{self.name}: no variant admits the call ({got}); expected one of: {expected}")

    def _choose(self, ladder: _Ladder) -> tuple[int, bool]:
        if ladder.controller is None:
            return 0, False
        rung = ladder.controller.choose()
        return rung, rung != ladder.controller.current

    def _ask_policy(self, ladder: _Ladder) -> int:
        # the user's policy runs outside the lock, on a snapshot of the candidates
        with self._lock:
            candidates = ladder.candidates()
        answer = self.policy(candidates)
        answer = getattr(answer, "name", answer)
        for i, v in enumerate(ladder.variants):
            if v.name == answer:
                return i
        valid = ", ".join(v.name for v in ladder.variants)
        raise GuardError(f"{self.name}: the policy chose {answer!r}, which is not a candidate; candidates: {valid}")

    def _observe(self, ladder: _Ladder, rung: int, ms: float, record: CallRecord) -> None:
        before = ladder.current
        if ladder.controller is not None and self.policy is None:
            ladder.controller.record(rung, ms)
            ladder.current = ladder.controller.current
        else:
            ladder.current = rung
        ladder.recent[rung].append(ms)
        self._switches += ladder.current != before
        self._samples.setdefault(record.variant, deque(maxlen=self._history)).append(ms)
        self._counts[record.variant] = self._counts.get(record.variant, 0) + 1
        self._records.append(record)

    # -- statistics ------------------------------------------------------------

    def stats(self) -> GuardStats:
        """Calls per variant, latency percentiles per variant and overall, switches."""
        with self._lock:
            calls = {v.name: self._counts.get(v.name, 0) for v in self.variants}
            samples = {k: list(v) for k, v in self._samples.items()}
            switches = self._switches
            records = list(self._records)
        latency = {name: _percentiles(s) for name, s in samples.items()}
        latency["overall"] = _percentiles([x for s in samples.values() for x in s])
        return GuardStats(calls, latency, switches, **self._served(records))

    def _served(self, records: list[CallRecord]) -> dict[str, float | None]:
        """SLO attainment, effective accuracy, p95 over budget and the full model's share of ``records``."""
        by_name = {v.name: v for v in self.variants}
        budgets = {v.name: self._budget_for(v.batch) for v in self.variants}
        timed = [r for r in records if budgets[r.variant] is not None]
        if not timed:
            return {}
        # what the caller waited: the queue for the variant counts, though the controller
        # judges a variant by its own run time (the queue says how many call, not how fast it is)
        seen = [r.latency_ms + r.waited_ms for r in timed]
        within = [ms <= budgets[r.variant] for ms, r in zip(seen, timed)]
        accuracies = [by_name[r.variant].accuracy for r in timed]
        full = [by_name[r.variant] for r in timed]
        return {
            "slo_attainment": float(np.mean(within)),
            "effective_accuracy": None if any(a is None for a in accuracies)
            else float(np.mean([a if ok else 0.0 for a, ok in zip(accuracies, within)])),
            "p95_over_budget": float(np.percentile([ms / budgets[r.variant] for ms, r in zip(seen, timed)], 95)),
            "full_share": float(np.mean([v.width == 1.0 and v.depth == 1.0 and v.threads is None for v in full])),
        }

    def records(self) -> list[CallRecord]:
        """The most recent calls, oldest first."""
        with self._lock:
            return list(self._records)

    def reset_stats(self) -> None:
        """Forget counts, latencies and records (the controllers keep their state)."""
        with self._lock:
            self._clear_stats()

    def _clear_stats(self) -> None:
        self._counts: dict[str, int] = {}
        self._samples: dict[str, deque] = {}
        self._records: deque = deque(maxlen=self._history)
        self._switches = 0

    # -- describing, saving ------------------------------------------------------

    def __str__(self) -> str:
        budget = self.budget_ms
        head = f"guarded @{self.name}"
        if self.policy is not None:
            head += f" policy={getattr(self.policy, '__name__', type(self.policy).__name__)}"
        elif budget is not None:
            head += f" budget={_format_budget(budget)}"
        lines = [head + " {"]
        for ladder in self._ladders:
            kind = "batch " + str(ladder.variants[0].batch) if ladder.static else "fallback"
            lines.append(f"  guard {ladder.spec}  # {kind}")
            for v in [*ladder.variants, *ladder.left_off]:
                facts = [f"width={v.width:g}"] + ([f"depth={v.depth:g}"] if v.depth != 1.0 else [])
                facts += [f"threads={v.threads}"] if v.threads is not None else []
                if v.latency_ms is not None:
                    facts.append(f"latency={v.latency_ms:.3f}ms")
                if v.accuracy is not None:
                    facts.append(f"accuracy={v.accuracy:.2f}%")
                note = "  # left off: another is as fast and as accurate" if v in ladder.left_off else ""
                lines.append(f"    variant {v.name} {{{', '.join(facts)}}}{note}")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def dump(self) -> str:
        """The guard table followed by the IR of each variant that has one."""
        parts = [str(self)]
        for v in self.variants:
            ir = getattr(v.model, "ir", None)
            if ir is not None:
                parts.append(f"// variant {v.name}\n{ir}")
        return "\n".join(parts)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write every variant (via its model's ``save``) and a manifest to ``directory``, atomically."""
        return save_variants(directory, self.name, self.budget_ms, self.config, self.variants, str(self))


def load_guarded(directory: str | os.PathLike, **options: Any) -> GuardedModel:
    """Load a model written by :meth:`GuardedModel.save`; ``options`` (policy, clock,
    on_call, budget_ms, ...) are passed to :class:`GuardedModel` and win over the saved ones.

    Example::

        >>> load_guarded("/no/such/dir")
        Traceback (most recent call last):
        ...
        slimgraph.errors.LoadError: /no/such/dir: no such folder
    """
    variants, saved = read_variants(directory)
    return GuardedModel(variants, **{**saved, **options})


# ---------------------------------------------------------------------------
# helpers


def check_budget(budget_ms: Any) -> None:
    """GuardError unless ``budget_ms`` is None, a positive number of milliseconds, or a mapping
    from batch bucket (an int, or None for the fallback) to one."""
    if budget_ms is None:
        return
    items = budget_ms.items() if isinstance(budget_ms, Mapping) else [(None, budget_ms)]
    for bucket, ms in items:
        if bucket is not None and not is_thread_count(bucket):  # a bucket is a positive int, as a thread count
            raise GuardError(f"budget_ms: key {bucket!r} is not a batch bucket (a positive int, or None)")
        label = "budget_ms" if not isinstance(budget_ms, Mapping) else f"budget_ms[{bucket!r}]"
        check_positive(label, ms, error=GuardError)


def _format_budget(budget) -> str:
    if isinstance(budget, (int, float)):
        return f"{budget:g}ms"
    return "{" + ", ".join(f"{'fallback' if k is None else k}: {v:g}ms" for k, v in budget.items()) + "}"



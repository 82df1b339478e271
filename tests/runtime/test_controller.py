"""The latency controller under a fake clock and scripted latencies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slimgraph.runtime.controller import ControllerConfig, ControllerError, LatencyController

UNLOADED = [3.6, 2.5, 1.5]  # ms, widest first
BUDGET = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(ctl: LatencyController, clock: FakeClock, latency, until_s: float, gap_ms: float = 1.0):
    """Serve calls back to back until ``until_s``; ``latency(rung, t)`` scripts each call's latency.
    One row per call: (time after it, rung it ran, latency, current rung after it, whether it was a probe)."""
    trace = []
    while clock.now < until_s:
        before = ctl.current
        rung = ctl.choose()
        ms = latency(rung, clock.now)
        clock.now += (ms + gap_ms) / 1e3
        ctl.record(rung, ms)
        trace.append((clock.now, rung, ms, ctl.current, rung != before))
    return trace


def load_between(start: float, stop: float, factor: float, unloaded=UNLOADED):
    def latency(rung: int, t: float) -> float:
        return unloaded[rung] * (factor if start <= t < stop else 1.0)

    return latency


def window(trace, t0: float, t1: float):
    return [row for row in trace if t0 <= row[0] < t1]


def switch_times(trace) -> list[tuple[float, int]]:
    """(time, new rung) of every switch in a trace."""
    currents = [0] + [row[3] for row in trace]
    return [(row[0], row[3]) for row, prev in zip(trace, currents) if row[3] != prev]


def test_steps_down_under_load_and_back_up_when_it_goes():
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    trace = simulate(ctl, clock, load_between(2.0, 6.0, factor=2.5), until_s=10.0)

    before = window(trace, 0.0, 2.0)
    assert {row[1] for row in before} == {0}

    # 2.5x load: the full variant takes 9 ms, the 75% one 6.25 ms, the 50% one 3.75 ms
    settled = window(trace, 3.0, 6.0)
    assert {rung for _, rung, _, _, probe in settled if not probe} == {2}
    probes = [ms for *_, ms, _, probe in settled if probe]
    assert 0 < len(probes) <= math.ceil(3.0 / ctl.config.probe_interval_s) + 1
    assert np.percentile([row[2] for row in settled], 95) <= BUDGET

    # back to the full variant within a few probe intervals once the load stops
    recovered = window(trace, 6.0 + 4 * ctl.config.probe_interval_s, 10.0)
    assert recovered and {row[3] for row in recovered} == {0}
    # straight down to the rung that fits the 2.5x load, and straight back up on the first probe that fits
    assert [rung for _, rung in switch_times(trace)] == [2, 0]


def test_reacts_within_a_few_calls_and_goes_as_far_down_as_the_load_requires():
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    trace = simulate(ctl, clock, load_between(1.0, 5.0, factor=2.5), until_s=5.0)
    loaded = [row for row in trace if row[0] - (row[2] + 1.0) / 1e3 >= 1.0]
    # the median of the last `recent` calls crosses the budget on the third slow call of five
    late = [row for row in loaded if row[2] > BUDGET and not row[4]]
    assert len(late) == math.ceil(ctl.config.recent / 2)
    assert switch_times(trace)[0][1] == 2


def test_moderate_load_stops_at_the_first_rung_that_fits():
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    trace = simulate(ctl, clock, load_between(1.0, 5.0, factor=1.6), until_s=5.0)
    # 1.6x: full 5.76 ms (over), 75% 4.0 ms (fits); the full one stays over 0.8 * budget, so no step back up
    served = {rung for _, rung, _, _, probe in window(trace, 2.0, 5.0) if not probe}
    assert served == {1}
    assert ctl.switches == 1


def test_does_not_flap_around_the_threshold():
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    rng = np.random.default_rng(0)
    noise = {}

    def latency(rung: int, t: float) -> float:
        # the full variant hovers around the budget (0.9x to 1.1x), the others scale with it
        key = round(t, 6)
        noise.setdefault(key, rng.uniform(0.9, 1.1))
        return UNLOADED[rung] * (BUDGET / UNLOADED[0]) * noise[key]

    simulate(ctl, clock, latency, until_s=20.0)
    assert ctl.switches <= 1
    assert ctl.current == 1


def test_noise_spikes_far_over_budget_do_not_switch():
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    calls = iter(range(10**6))

    def latency(rung: int, t: float) -> float:
        # one call in 40 is preempted for 20x the budget (2.5% of calls: the p95 still fits), and one
        # such spike comes among the very first calls, when the window holds just a few
        n = next(calls)
        return 100.0 if n == 1 or n % 40 == 39 else UNLOADED[rung]

    trace = simulate(ctl, clock, latency, until_s=10.0)
    assert sum(row[2] > BUDGET for row in trace) > 20
    assert ctl.switches == 0 and ctl.current == 0


def test_a_slow_tail_steps_down_one_rung_even_when_the_median_fits():
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    calls = iter(range(10**6))

    def latency(rung: int, t: float) -> float:
        # one call in eight of the full variant is preempted: 3x slower (mean 4.95 ms, under budget)
        return UNLOADED[rung] * (3.0 if rung == 0 and next(calls) % 8 == 0 else 1.0)

    trace = simulate(ctl, clock, latency, until_s=10.0)
    assert switch_times(trace)[0][1] == 1  # the median says there is no load: one rung is enough
    late = window(trace, 5.0, 10.0)  # lucky probes pull it up a few times; the back-off makes that rare
    assert [row[1] for row in late].count(1) / len(late) > 0.8
    assert np.percentile([row[2] for row in late], 95) <= BUDGET


def test_probes_under_a_sustained_load_back_off():
    def probes_and_late_calls(config: ControllerConfig) -> tuple[int, int]:
        clock = FakeClock()
        ctl = LatencyController(UNLOADED, BUDGET, config=config, clock=clock)
        trace = simulate(ctl, clock, load_between(0.0, 30.0, factor=2.5), until_s=30.0)
        settled = window(trace, 1.0, 30.0)
        return sum(row[4] for row in settled), sum(row[2] > BUDGET for row in settled)

    probes, late = probes_and_late_calls(ControllerConfig())
    cfg = ControllerConfig()
    # a probe that does not fit doubles the wait, up to max_backoff x the interval
    assert probes <= 29.0 / (cfg.probe_interval_s * cfg.max_backoff) + math.log2(cfg.max_backoff) + 1
    assert late == probes  # under load the only slow calls are the probes
    probes_without_backoff, _ = probes_and_late_calls(ControllerConfig(max_backoff=1))
    assert probes * 4 <= probes_without_backoff


def recovery_time(config: ControllerConfig, unloaded=UNLOADED, measured=UNLOADED, stop: float = 20.0) -> float:
    """Seconds from the end of a 2.5x load to the controller's return to the full variant."""
    clock = FakeClock()
    ctl = LatencyController(measured, BUDGET, config=config, clock=clock)
    trace = simulate(ctl, clock, load_between(0.0, stop, factor=2.5, unloaded=unloaded), until_s=stop + 20.0)
    back = [t for t, rung in switch_times(trace) if t >= stop and rung == 0]
    return back[0] - stop if back else math.inf


def test_a_probe_comes_early_when_the_load_eases():
    config = ControllerConfig()
    early = recovery_time(config)
    # the current rung speeds up from 3.75 to 1.5 ms when the load stops: probes resume at once
    assert early <= config.dwell_s + 2 * config.probe_interval_s + 0.01
    # without that cue the back-off (2 s between probes by then) holds the recovery back
    assert recovery_time(ControllerConfig(eased_fraction=1e-9)) > early + config.probe_interval_s


@pytest.mark.parametrize("stop", [19.0, 19.5, 20.0, 20.5])
def test_a_noisy_current_rung_still_shows_when_the_load_eases(stop):
    # scheduler ticks make latencies jump between levels: under load the 50% variant takes 3.75 ms,
    # but five calls in every 40 run at 1.8 ms, and such a run of fast calls brings a probe early.
    # That failed probe must not lower the bar to 1.8 ms, or the unloaded mix of 1.5 and 2.4 ms
    # that follows would never pass it and the recovery would wait for the backed-off probe
    calls = iter(range(10**6))

    def latency(rung: int, t: float) -> float:
        if rung < 2:
            return UNLOADED[rung] * (2.5 if t < stop else 1.0)
        n = next(calls)
        if t < stop:
            return 1.8 if n % 40 >= 35 else 3.75
        return (1.5, 2.4)[n % 2]

    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    trace = simulate(ctl, clock, latency, until_s=stop + 5.0)
    probes = [t for t, *_, probe in window(trace, 10.0, stop) if probe]
    assert len(probes) > (stop - 10.0) / (ctl.config.probe_interval_s * ctl.config.max_backoff) + 2  # early ones
    back = [t for t, rung in switch_times(trace) if t >= stop and rung == 0]
    assert back and back[0] - stop < ctl.config.dwell_s + 2 * ctl.config.probe_interval_s


def test_a_baseline_measured_on_a_busy_machine_is_corrected():
    # the full variant was measured at 7 ms on a busy machine; it really takes 3.6 ms. Its predicted
    # latency (7 ms times the slowdown) would never fit the 4 ms headroom: the probes correct it
    measured = [7.0, *UNLOADED[1:]]
    assert recovery_time(ControllerConfig(), measured=measured) < 10.0


def step_ups_under_sustained_load(config: ControllerConfig, slowed: int, seconds: float = 30.0) -> tuple[int, int]:
    """Step ups, and calls over budget, under a load that only hurts sustained use of the
    ``slowed`` widest rungs (2.2x): a lone probe is fast, a run of calls is not."""
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, config=config, clock=clock)
    ups = late = 0
    while clock.now < seconds:
        before = ctl.current
        rung = ctl.choose()
        probe = rung != before
        ms = UNLOADED[rung] * (2.2 if rung < slowed and not probe else 1.0)
        clock.now += (ms + 1.0) / 1e3
        ctl.record(rung, ms)
        ups += ctl.current < before
        late += ms > BUDGET
    return ups, late


@pytest.mark.parametrize("slowed", [1, 2])
def test_a_step_up_that_does_not_hold_backs_off_the_probes(slowed):
    # with two rungs slowed, a lucky probe of the 75% variant leads up to the full one (its prediction
    # fits) and the guard falls back two rungs: the back-off must hold whichever rung it probes from
    ups, late = step_ups_under_sustained_load(ControllerConfig(), slowed)
    ups_without_backoff, late_without_backoff = step_ups_under_sustained_load(ControllerConfig(max_backoff=1), slowed)
    assert ups * 2 <= ups_without_backoff
    assert late * 2 <= late_without_backoff
    assert ups <= 30.0 / (ControllerConfig().probe_interval_s * ControllerConfig().max_backoff) + 4
    # the first reaction takes three slow calls; a step up is on probation, so each one that
    # does not hold costs a single slow call before the guard is back where it came from
    assert late == ControllerConfig().recent // 2 + 1 + ups


def test_step_up_waits_for_the_dwell_time():
    clock = FakeClock()
    config = ControllerConfig(dwell_s=1.0, probe_interval_s=0.1)
    ctl = LatencyController(UNLOADED, BUDGET, config=config, clock=clock)
    trace = simulate(ctl, clock, load_between(0.0, 0.3, factor=5.0), until_s=3.0)
    (down, low), (up, high) = switch_times(trace)
    assert (low, high) == (2, 0)
    # the load is gone at 0.3 s and the probes fit from then on, but the step up waits for the dwell time
    assert config.dwell_s <= up - down <= config.dwell_s + config.probe_interval_s + 0.01


def test_narrowest_rung_is_the_floor():
    clock = FakeClock()
    ctl = LatencyController(UNLOADED, BUDGET, clock=clock)
    simulate(ctl, clock, load_between(0.0, 10.0, factor=10.0), until_s=3.0)
    assert ctl.current == 2


# DigitsCNN(128) at batch 32 on two cores, measured: widths 100/75/50/25% on both threads, then on one
THREADED = [7.9, 4.9, 2.5, 0.7, 15.7, 9.3, 4.4, 1.3]
THREADS = [2, 2, 2, 2, 1, 1, 1, 1]
THREADED_BUDGET = 2 * THREADED[0]


def oversubscribed_between(start: float, stop: float):
    """Busy processes on every core: a two-thread call waits about 45 ms at its kernels' barriers
    whatever its width, a one-thread call gets half a core (both as measured)."""

    def latency(rung: int, t: float) -> float:
        if not start <= t < stop:
            return THREADED[rung]
        return THREADED[rung] + 45.0 if THREADS[rung] > 1 else THREADED[rung] * 1.9

    return latency


def test_under_oversubscription_it_runs_narrow_on_one_thread_and_returns_to_all_threads():
    clock = FakeClock()
    ctl = LatencyController(THREADED, THREADED_BUDGET, clock=clock, threads=THREADS)
    trace = simulate(ctl, clock, oversubscribed_between(2.0, 12.0), until_s=16.0)
    assert {row[1] for row in window(trace, 0.0, 2.0)} == {0}

    # down from the two-thread full width straight to a one-thread rung: the narrower two-thread
    # rungs lose the same 45 ms, which the scaled prediction alone would not have seen
    (down_at, first), *_ = switch_times(trace)
    assert THREADS[first] == 1 and down_at < 2.0 + 4 * (THREADED[0] + 46.0) / 1e3  # three slow calls
    assert not any(THREADS[row[1]] > 1 and not row[4] for row in window(trace, down_at + 1e-9, 12.0))

    # it settles on the widest width that fits on one thread (50%: 8.4 ms; 75% takes 17.7), and its
    # probes are rare enough that the tail stays in the budget
    settled = window(trace, 5.0, 12.0)
    assert {row[1] for row in settled if not row[4]} == {6}
    assert np.percentile([row[2] for row in settled], 95) <= THREADED_BUDGET
    # the probes back off: a handful in 7 s, not one every probe interval
    assert sum(row[4] for row in settled) <= 7.0 / 2.0 + 1

    # once the load stops, probes pass over the one-thread full width (15.7 ms can never fit the
    # headroom) to the two-thread full width, which fits, and the full width is back within a second
    recovered = window(trace, 13.0, 16.0)
    assert recovered and {row[3] for row in recovered} == {0}
    after = window(trace, 12.0, 16.0)
    assert 4 not in {row[1] for row in after}
    assert [rung for _, rung in switch_times(after)][-1:] == [0] and {row[1] for row in after if row[4]} <= {0, 5}


def test_an_idle_machine_brings_the_probe_early_from_a_narrow_rung():
    """A call short enough to finish inside the time slices a load leaves it does not slow, so
    from the narrowest rung the end of the load does not show; the run-queue hint says it."""

    def latency(rung: int, t: float) -> float:
        if not 2.0 <= t < 8.0:
            return THREADED[rung]
        if THREADS[rung] > 1:
            return THREADED[rung] + 45.0
        return THREADED[rung] if THREADED[rung] < 2.0 else THREADED[rung] * 4.0

    back_at = {}
    for hint in (False, True):
        clock = FakeClock()
        idle = (lambda: not 2.0 <= clock.now < 8.0) if hint else None
        ctl = LatencyController(THREADED, THREADED_BUDGET, clock=clock, threads=THREADS, idle=idle)
        trace = simulate(ctl, clock, latency, until_s=12.0)
        # under the load only the narrowest one-thread rung fits; its probes back off to 2 s
        assert {row[1] for row in window(trace, 3.0, 8.0) if not row[4]} == {7}
        back_at[hint] = next(t for t, rung in switch_times(trace) if t >= 8.0 and rung == 0)
    assert back_at[True] - 8.0 <= 2 * ctl.config.probe_interval_s + 0.05
    assert back_at[False] - 8.0 > 1.0  # without it, the backed-off probe waits up to 2 s


def test_an_idle_machine_does_not_hasten_probes_of_a_rung_that_never_fits():
    """A full width over the budget even unloaded: idleness must not undo the probe back-off."""
    over_budget = {}
    for idle in (None, lambda: True):
        clock = FakeClock()
        ctl = LatencyController([12.0, 5.0], 10.0, clock=clock, idle=idle)
        trace = simulate(ctl, clock, lambda rung, t: [12.0, 5.0][rung], until_s=60.0, gap_ms=88.0)
        over_budget[idle is None] = sum(row[2] > 10.0 for row in trace)
    assert over_budget[False] == over_budget[True] < 60 / (ctl.config.probe_interval_s * ctl.config.max_backoff) + 5


def test_a_probe_never_predicts_a_rung_with_more_threads():
    clock = FakeClock()
    ctl = LatencyController(THREADED, THREADED_BUDGET, clock=clock, threads=THREADS)
    assert ctl.predict(2, 6, 1.0) == math.inf
    assert ctl.predict(6, 2, 5.0) == pytest.approx(THREADED[6] * 2.0)
    # a two-thread rung loses at least the observed rung's excess; a one-thread rung only scales
    assert ctl.predict(3, 0, THREADED[0] + 45.0) == pytest.approx(THREADED[3] + 45.0)
    assert ctl.predict(7, 0, THREADED[0] * 2) == pytest.approx(THREADED[7] * 2)
    with pytest.raises(ControllerError, match="more threads come first"):
        LatencyController(THREADED, THREADED_BUDGET, threads=list(reversed(THREADS)))
    with pytest.raises(ControllerError, match="one thread count"):
        LatencyController(THREADED, THREADED_BUDGET, threads=[2, 1])


def test_invalid_settings_are_reported():
    with pytest.raises(ControllerError, match="up_fraction"):
        ControllerConfig(up_fraction=1.2)
    with pytest.raises(ControllerError, match="min_samples"):
        ControllerConfig(window=5, min_samples=10)
    with pytest.raises(ControllerError, match="recent"):
        ControllerConfig(recent=0)
    with pytest.raises(ControllerError, match="eased_fraction"):
        ControllerConfig(eased_fraction=1.5)
    with pytest.raises(ControllerError, match="budget_ms"):
        LatencyController(UNLOADED, -1.0)
    with pytest.raises(ControllerError, match="at least one"):
        LatencyController([], 1.0)
    with pytest.raises(ControllerError, match="out of range"):
        LatencyController(UNLOADED, 1.0).record(3, 1.0)

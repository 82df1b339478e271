"""Benchmark: the runtime guard keeping a latency budget while competing load comes and goes.

A scaled-up digits CNN (``DigitsCNN(width=128)``: a full call at batch 32 takes
about 8 ms on two cores, long enough to time well on a shared machine) is
trained, narrowed to 100/75/50/25% width by structured channel pruning (batch
norms re-estimated on calibration inputs, then fine-tuned), compiled with TVM
for batch 32, each width run on every core and on one thread (``--threads``),
and guarded with a latency budget of ``--budget-factor`` x the full variant's
unloaded latency: above it, so that without load the full model runs, and
below its latency under load. A stream of batch-32 calls (``--rate`` per
second, open loop) is served while busy-loop processes (``--load-procs``,
default two per core) start and stop on the ``--phases`` schedule; then the
same schedule is served by the full model alone. This is done ``--repeats``
times. The full model is the full width on every core, as compiled.

With ``--depths`` (e.g. ``1,0.5``; ``--model resnet``, a digits ResNet whose
residual blocks can be skipped) every width also gets depth variants, and the
same schedule is served by a guard over widths x depths, a guard over widths
alone and the full model alone, one after the other. Calls rotate through the
labelled test set, so each contender is judged by what reached the caller:
*SLO attainment* (the share of calls inside the budget) and *effective
accuracy* (the accuracy of the answers returned within the budget, a late
answer counting as wrong), next to p95/budget and the share of calls on the
full model.

The issue's criteria, checked per repeat on the guard over every variant:

(a) under load, the guarded model's p95 latency is within 1.1x the budget
    while the full model alone exceeds the budget;
(b) without load, at least 90% of the guarded model's calls run the full
    variant (every call of the unloaded phases, the recovery after a load
    stops included);
(c) with ``--depths``: under load, the guard over widths x depths returns a
    higher effective accuracy than the guard over widths alone and than the
    full model alone.

A call's latency runs from its start to its answer; how long the caller
waited past the call's due time before it started (the scheduler's delay in
waking it, under load) is reported beside it as *wait* (p95), not counted in
the latency the guard sees or the budget checks.

It also says where the misses come from: loaded calls over the budget are
*reaction* (before the guard first stepped down in that phase), *probe*
(a call sent to a wider variant) or *steady* (the rest); unloaded calls of a
narrower variant are *recovery* (after a load stopped, before the first full
call) or *spurious* (a step down without load). Prints the latency per second
and per variant, a summary with PASS/FAIL, and writes
``benchmarks/results/guard_under_load.json`` (figures, breakdown, and every
call in ``guard_under_load.trace.json``) and ``.png``.

    python benchmarks/guard_under_load.py [--width 128] [--repeats 3] [--phases 0:10,1:15,0:15,1:15,0:10]
    python benchmarks/guard_under_load.py --model resnet --width 32 --depths 1,0.5 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimgraph.runtime import GuardedModel  # noqa: E402
from slimgraph.runtime.narrow import finetune_with, narrow  # noqa: E402
from tests.digits import DigitsCNN, DigitsResNet, digits_data, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
P95_LIMIT = 1.1  # criterion (a): guarded p95 within this many budgets
FULL_SHARE = 0.9  # criterion (b): share of unloaded calls on the full variant


def trained(width: int, cache: Path | None, kind: str = "cnn", blocks: int = 6, epochs: int = 3) -> torch.nn.Module:
    """A DigitsCNN (or DigitsResNet) of ``width`` trained for ``epochs`` (seeded), kept in ``cache`` when given."""
    tag = f"digits_cnn_w{width}" if kind == "cnn" else f"digits_resnet_w{width}_b{blocks}"
    tag += f"_e{epochs}" if epochs != 3 else ""
    file = cache / f"{tag}.pt" if cache else None
    model = DigitsCNN(width) if kind == "cnn" else DigitsResNet(width, blocks)
    if file and file.exists():
        model.load_state_dict(torch.load(file))
        return model.eval()
    torch.manual_seed(0)
    model = train(model, digits_data(), epochs=epochs)
    if file:
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), file)
    return model


def build(width: int, widths: list[float], batch: int, method: str, cache: Path | None,
          threads: list[int | None], kind: str = "cnn", blocks: int = 6,
          depths: list[float] | None = None, loss: str = "ce", epochs: int = 3) -> GuardedModel:
    """The guarded model (no budget yet): every width (and depth) compiled for ``batch``, measured, evaluated."""
    data = digits_data()
    example = (torch.zeros(batch, 1, 8, 8),)
    eval_data = (data.x_test, data.y_test)
    began = time.perf_counter()
    options = dict(batches=[batch], fallback=False, eval_data=eval_data, runs=60, threads=threads,
                   progress=lambda msg: print(f"[build {time.perf_counter() - began:.0f} s] {msg}", flush=True))
    if method == "prune":
        calibration = [data.x_train[i : i + 64] for i in range(0, 256, 64)]
        return narrow(trained(width, cache, kind, blocks, epochs), example, widths, calibration_data=calibration,
                      depths=depths or [1.0], finetune=finetune_with(data.x_train, data.y_train, loss=loss),
                      **options)
    return narrow(None, example, {w: trained(round(width * w), cache, kind, blocks, epochs) for w in widths},
                  **options)


class Load:
    """Processes that keep the cores busy (pure-Python busy loops), started and stopped on demand."""

    def __init__(self, procs: int):
        self.procs = procs
        self.running: list[subprocess.Popen] = []

    def start(self) -> None:
        if not self.running:
            self.running = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.procs)]

    def stop(self) -> None:
        for proc in self.running:
            proc.terminate()
        for proc in self.running:
            proc.wait()
        self.running = []


def cpu_seconds() -> tuple[float, float] | None:
    """Busy CPU seconds so far of the whole machine and of this process with its finished
    children (None off Linux); their difference over a run is the load of other users."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except OSError:
        return None
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = sum(u.ru_utime + u.ru_stime for u in usage)
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own


def foreign_cores(before: tuple[float, float] | None, seconds: float) -> float | None:
    """Cores kept busy by other users' processes on average since ``before`` (a :func:`cpu_seconds`)."""
    after = cpu_seconds()
    if before is None or after is None:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds


@dataclass(frozen=True)
class Row:
    """One served call: start time (s), phase index, whether the load ran, latency, variant, probe,
    and how many of its rows it answered correctly."""

    t: float
    phase: int
    loaded: bool
    ms: float
    variant: str
    probe: bool
    correct: int = 0
    rows: int = 0
    wait_ms: float = 0.0


def serve(fn: Callable, last: Callable[[], tuple[str, bool]], batches: list[tuple[np.ndarray, np.ndarray]],
          phases: list[tuple[bool, float]], load: Load, rate: float) -> list[Row]:
    """Call ``fn(x)`` at ``rate`` calls per second through the load schedule (an open-loop
    stream: a call that overruns its slot delays the next one, missed slots are dropped rather
    than bunched up), ``x`` going round the labelled ``batches``. ``last()`` names the variant
    the call ran and whether it was a probe. A row's ``wait_ms`` is how late the call started
    after its due time (the later of its slot and the previous call's end)."""
    rows = []
    turn = 0
    period = 1.0 / rate
    start = due = time.perf_counter()
    end = start
    try:
        for index, (loaded, seconds) in enumerate(phases):
            load.start() if loaded else load.stop()
            end += seconds
            while due < end:
                time.sleep(max(0.0, due - time.perf_counter()))
                x, y = batches[turn % len(batches)]
                turn += 1
                begin = time.perf_counter()
                out = fn(x)
                done = time.perf_counter()
                correct = int((np.asarray(out).argmax(axis=1) == y).sum())
                rows.append(Row(begin - start, index, loaded, (done - begin) * 1e3, *last(), correct, len(y),
                                (begin - due) * 1e3))
                due = max(due + period, done)
    finally:
        load.stop()
    return rows


def summarize(rows: list[Row], budget: float | None = None, full: str | None = None) -> dict:
    """Latency percentiles and variant shares; with a budget, what reached the caller in time:
    SLO attainment, effective accuracy (late answers wrong), p95 / budget, share on ``full``."""
    lat = [r.ms for r in rows]
    if not lat:
        return {}
    names = [r.variant for r in rows]
    out = {
        "calls": len(lat),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "p95_wait_ms": float(np.percentile([r.wait_ms for r in rows], 95)),
        "share": {n: names.count(n) / len(names) for n in sorted(set(names))},
    }
    if budget is not None:
        in_time = [r for r in rows if r.ms <= budget]
        out.update(
            slo_attainment=len(in_time) / len(rows),
            effective_accuracy=100.0 * sum(r.correct for r in in_time) / sum(r.rows for r in rows),
            accuracy=100.0 * sum(r.correct for r in rows) / sum(r.rows for r in rows),
            p95_over_budget=out["p95_ms"] / budget,
            full_share=names.count(full) / len(names),
        )
    return out


def breakdown(rows: list[Row], phases: list[tuple[bool, float]], full: str, budget: float) -> dict:
    """Where the loaded calls over budget and the unloaded calls off the full variant come from,
    and how long the guard took to react to each load and to recover after it."""
    late = {"reaction": 0, "probe": 0, "steady": 0}
    narrow = {"recovery": 0, "spurious": 0}
    react_s, recover_s = [], []
    for index, (loaded, _) in enumerate(phases):
        part = [r for r in rows if r.phase == index]
        if not part:
            continue
        settled = next((i for i, r in enumerate(part) if not r.probe and (r.variant != full) == loaded), len(part))
        if loaded:
            react_s.append(part[settled].t - part[0].t if settled < len(part) else None)
            for i, r in enumerate(part):
                if r.ms > budget:
                    late["probe" if r.probe else "reaction" if i < settled else "steady"] += 1
        else:
            after_load = index > 0 and phases[index - 1][0]
            if after_load:
                recover_s.append(part[settled].t - part[0].t if settled < len(part) else None)
            for i, r in enumerate(part):
                if r.variant != full:
                    narrow["recovery" if after_load and i < settled else "spurious"] += 1
    return {"late_calls": late, "off_full_calls": narrow, "reaction_s": react_s, "recovery_s": recover_s}


def per_second(rows: list[Row]) -> list[dict]:
    out = []
    for sec in range(int(rows[-1].t) + 1):
        part = [r for r in rows if sec <= r.t < sec + 1]
        if part:
            names = [r.variant for r in part]
            out.append({"t": sec, "loaded": part[0].loaded, "calls": len(part),
                        "p95_ms": float(np.percentile([r.ms for r in part], 95)),
                        "share": {n: names.count(n) / len(names) for n in sorted(set(names))}})
    return out


def run_once(guarded: GuardedModel, full_model: Callable, full: str, budget: float,
             batches: list[tuple[np.ndarray, np.ndarray]], phases: list[tuple[bool, float]], load: Load,
             rate: float, others: dict[str, GuardedModel] | None = None) -> dict:
    """One repeat: the guarded model, any ``others`` (other guards), then the full model alone, through
    the schedule; figures and checks."""
    last: dict = {}
    for model in [guarded, *(others or {}).values()]:
        model.on_call = lambda rec: last.update(variant=rec.variant, probe=rec.probe)
    guarded.reset_stats()
    before, start = cpu_seconds(), time.perf_counter()
    g_rows = serve(guarded, lambda: (last["variant"], last["probe"]), batches, phases, load, rate)
    foreign = foreign_cores(before, time.perf_counter() - start)
    # one after the other: served side by side, the full model's slow calls would be the guarded model's load
    other_rows = {name: serve(model, lambda: (last["variant"], last["probe"]), batches, phases, load, rate)
                  for name, model in (others or {}).items()}
    f_rows = serve(full_model, lambda: (full, False), batches, phases, load, rate)
    served = {"guarded": g_rows, **other_rows, "full_alone": f_rows}
    contenders = {name: {"loaded": summarize([r for r in rows if r.loaded], budget, full),
                         "all": summarize(rows, budget, full)} for name, rows in served.items()}
    g_loaded, f_loaded = contenders["guarded"]["loaded"], contenders["full_alone"]["loaded"]
    unloaded = [r for r in g_rows if not r.loaded]
    checks = {
        "guarded_loaded_p95_over_budget": g_loaded["p95_ms"] / budget,
        "full_alone_loaded_p95_over_budget": f_loaded["p95_ms"] / budget,
        "unloaded_full_share": sum(r.variant == full for r in unloaded) / len(unloaded),
    }
    checks["a_pass"] = (checks["guarded_loaded_p95_over_budget"] <= P95_LIMIT
                        and checks["full_alone_loaded_p95_over_budget"] > 1.0)
    checks["b_pass"] = checks["unloaded_full_share"] >= FULL_SHARE
    if others:
        effective = {name: c["loaded"]["effective_accuracy"] for name, c in contenders.items()}
        checks["loaded_effective_accuracy"] = effective
        checks["c_pass"] = all(effective["guarded"] > v for name, v in effective.items() if name != "guarded")
    return {
        "foreign_cores_during_guarded": foreign,
        "checks": checks,
        "contenders": contenders,
        "guarded": {"loaded": g_loaded, "unloaded": summarize(unloaded), "switches": guarded.stats().switches,
                    "per_variant": guarded.stats().latency, **breakdown(g_rows, phases, full, budget)},
        "full_alone": {"loaded": f_loaded, "unloaded": summarize([r for r in f_rows if not r.loaded])},
        "per_second": {"guarded": per_second(g_rows), "full_alone": per_second(f_rows)},
        "trace": {name: [[round(r.t, 4), r.phase, round(r.ms, 3), r.variant, int(r.probe)] for r in rows]
                  for name, rows in (("guarded", g_rows), ("full_alone", f_rows))},
    }


def print_repeat(index: int, result: dict, budget: float) -> None:
    print(f"\nrepeat {index + 1}: second  load  calls  p95 ms (guarded)  variants                          | "
          f"p95 ms (full alone)")
    for g, f in zip(result["per_second"]["guarded"], result["per_second"]["full_alone"]):
        share = " ".join(f"{re.sub(r'-b[0-9N]+', '', k)}:{v:.0%}" for k, v in g["share"].items())
        print(f"          {g['t']:6d}  {'on ' if g['loaded'] else 'off'}  {g['calls']:5d}  {g['p95_ms']:16.2f}  "
              f"{share:<34}| {f['p95_ms']:.2f}")
    g = result["guarded"]
    print(f"late calls (> budget {budget:.2f} ms) under load: {g['late_calls']}; unloaded calls off the full "
          f"variant: {g['off_full_calls']}; reaction s: {_seconds(g['reaction_s'])}; recovery s: "
          f"{_seconds(g['recovery_s'])}; switches: {g['switches']}")


SERVED = (("slo_attainment", "SLO attainment", "{:.1%}"), ("effective_accuracy", "effective accuracy", "{:.2f}%"),
          ("accuracy", "accuracy", "{:.2f}%"), ("p95_over_budget", "p95 / budget", "{:.2f}"),
          ("full_share", "calls on full", "{:.1%}"), ("p95_wait_ms", "p95 wait ms", "{:.2f}"))


def print_served(results: list[dict]) -> None:
    """Per contender, under load and over the whole schedule: what reached the caller in time,
    per repeat and the mean over repeats."""
    names = list(results[0]["contenders"])
    for part in ("loaded", "all"):
        print(f"\nwhat reached the caller ({'calls under load' if part == 'loaded' else 'every call'}); "
              "a late answer counts as wrong")
        print("| contender | repeat | " + " | ".join(title for _, title, _ in SERVED) + " |")
        print("| --- | ---: |" + " ---: |" * len(SERVED))
        for name in names:
            figures = [r["contenders"][name][part] for r in results]
            for k, f in enumerate(figures):
                print(f"| {name} | {k + 1} | " + " | ".join(fmt.format(f[key]) for key, _, fmt in SERVED) + " |")
            mean = {key: float(np.mean([f[key] for f in figures])) for key, _, _ in SERVED}
            print(f"| **{name}** | mean | " + " | ".join(fmt.format(mean[key]) for key, _, fmt in SERVED) + " |")


def _seconds(values: list) -> str:
    return "[" + ", ".join("-" if v is None else f"{v:.2f}" for v in values) + "]"


def plot(path: Path, results: list[dict], budget: float, phases) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(results), 1, figsize=(11, 3.5 * 2 * len(results)), sharex=True, squeeze=False)
    names = sorted({row[3] for result in results for trace in result["trace"].values() for row in trace})
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    for k, result in enumerate(results):
        for j, (name, title) in enumerate((("guarded", "guarded model"), ("full_alone", "full model alone"))):
            ax = axes[2 * k + j][0]
            t0, label = 0.0, "competing load"
            for loaded, seconds in phases:
                if loaded:
                    ax.axvspan(t0, t0 + seconds, color="0.9", label=label)
                    label = None
                t0 += seconds
            trace = result["trace"][name]
            for variant in sorted({row[3] for row in trace}):
                pts = [(row[0], row[2]) for row in trace if row[3] == variant]
                ax.scatter(*zip(*pts), s=3, label=variant, color=colors[variant])
            ax.axhline(budget, color="red", linestyle="--", label=f"budget {budget:.2f} ms")
            ax.axhline(P95_LIMIT * budget, color="red", linestyle=":", linewidth=0.8, label=f"{P95_LIMIT}x budget")
            ax.set_yscale("log")
            ax.set_ylabel("latency (ms)")
            ax.set_title(f"{title}, repeat {k + 1}")
            ax.legend(loc="upper right", markerscale=4, fontsize=8)
    axes[-1][0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128, help="DigitsCNN width of the full model")
    parser.add_argument("--widths", default="1,0.75,0.5,0.25", help="the variants' widths")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--method", choices=["prune", "train"], default="prune")
    parser.add_argument("--budget-factor", type=float, default=2.0, help="budget = factor x full unloaded latency")
    parser.add_argument("--phases", default="0:10,1:15,0:15,1:15,0:10", help="load(0/1):seconds, comma separated")
    parser.add_argument("--load-procs", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--rate", type=float, default=40.0, help="calls per second in the stream")
    parser.add_argument("--repeats", type=int, default=1, help="times the whole schedule is served")
    parser.add_argument("--out", default=str(RESULTS / "guard_under_load"))
    parser.add_argument("--cache", type=Path, help="folder to keep the trained CNNs in between runs")
    parser.add_argument("--threads", default="all,1",
                        help="thread counts each width runs at ('all': a thread per core), comma separated")
    parser.add_argument("--model", choices=["cnn", "resnet"], default="cnn",
                        help="DigitsCNN, or DigitsResNet (residual blocks, for --depths)")
    parser.add_argument("--blocks", type=int, default=6, help="residual blocks of --model resnet")
    parser.add_argument("--depths", default="1", help="fractions of the residual blocks kept, comma separated")
    parser.add_argument("--loss", choices=["ce", "kd"], default="ce", help="fine-tuning loss of the narrowed variants")
    parser.add_argument("--train-epochs", type=int, default=3,
                        help="training epochs of the full model (a wide ResNet needs more than 3 to be the most "
                             "accurate variant, which the ladder's order by accuracy assumes)")
    args = parser.parse_args()
    phases = [(p.split(":")[0] == "1", float(p.split(":")[1])) for p in args.phases.split(",")]
    widths = sorted((float(w) for w in args.widths.split(",")), reverse=True)
    threads = [None if t == "all" else int(t) for t in args.threads.split(",")]

    depths = sorted((float(d) for d in args.depths.split(",")), reverse=True)
    built = build(args.width, widths, args.batch, args.method, args.cache, threads, args.model, args.blocks, depths,
                  args.loss, args.train_epochs)
    full = next(v for v in built.variants if v.width == 1.0 and v.depth == 1.0 and v.threads == threads[0])
    budget = args.budget_factor * full.latency_ms
    guarded = GuardedModel(built.variants, budget_ms=budget, name=built.name)
    print(guarded)
    # the same budget over the widths alone: what depth adds
    others = {"width_only": GuardedModel([v for v in built.variants if v.depth == 1.0], budget_ms=budget,
                                         name=built.name)} if any(d < 1.0 for d in depths) else {}

    data = digits_data()
    batches = [(data.x_test[i : i + args.batch], data.y_test[i : i + args.batch])
               for i in range(0, len(data.y_test) - args.batch + 1, args.batch)]
    load = Load(args.load_procs)
    results = []
    for k in range(args.repeats):
        results.append(run_once(guarded, full.model, full.name, budget, batches, phases, load, args.rate, others))
        print_repeat(k, results[-1], budget)
    print("\n" + guarded.stats().table())
    print_served(results)

    passes = sum(all(v for k, v in r["checks"].items() if k.endswith("_pass")) for r in results)
    label = f"DigitsCNN(width={args.width})" if args.model == "cnn" else f"DigitsResNet(width={args.width}, blocks={args.blocks})"
    print(f"\n{label} batch {args.batch}, {os.cpu_count()} cores, {args.load_procs} busy "
          f"processes under load, budget {budget:.2f} ms ({args.budget_factor:g} x full unloaded "
          f"{full.latency_ms:.2f} ms), phases {args.phases}, {args.rate:g} calls/s")
    for v in guarded.variants:
        print(f"  {v.name}: width {v.width:g}, depth {v.depth:g}, threads {v.threads or 'all'}, unloaded {v.latency_ms:.2f} ms, "
              f"accuracy {v.accuracy:.2f}%")
    # foreign load: cores other users' processes kept busy while the guarded model served (not the schedule's)
    depth = "c_pass" in results[0]["checks"]
    print(f"\n| repeat | foreign load (cores) | (a) guarded loaded p95 / budget (<= {P95_LIMIT}) | full alone loaded "
          f"p95 / budget (> 1) | (a) | (b) unloaded calls on {full.name} (>= {FULL_SHARE:.0%}) | (b) |"
          + (" (c) loaded effective accuracy: widths x depths / widths / full alone | (c) |" if depth else ""))
    print("| ---: | ---: | ---: | ---: | --- | ---: | --- |" + (" ---: | --- |" if depth else ""))
    for k, r in enumerate(results):
        c, foreign = r["checks"], r["foreign_cores_during_guarded"]
        foreign = "-" if foreign is None else f"{foreign:.2f}"
        row = (f"| {k + 1} | {foreign} | {c['guarded_loaded_p95_over_budget']:.2f} | "
               f"{c['full_alone_loaded_p95_over_budget']:.2f} | {'PASS' if c['a_pass'] else 'FAIL'} | "
               f"{c['unloaded_full_share']:.1%} | {'PASS' if c['b_pass'] else 'FAIL'} |")
        if depth:
            e = c["loaded_effective_accuracy"]
            row += (f" {e['guarded']:.2f} / {e['width_only']:.2f} / {e['full_alone']:.2f} | "
                    f"{'PASS' if c['c_pass'] else 'FAIL'} |")
        print(row)
    print(f"\nevery criterion held in {passes} of {len(results)} repeats")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": f"{label} batch {args.batch}, variants by {args.method}, depths {args.depths}",
        "cpu_count": os.cpu_count(),
        "load_procs": args.load_procs,
        "phases": args.phases,
        "rate_per_s": args.rate,
        "budget_ms": budget,
        "budget_factor": args.budget_factor,
        "variants": {v.name: {"width": v.width, "depth": v.depth, "threads": v.threads, "unloaded_ms": v.latency_ms,
                              "accuracy": v.accuracy}
                     for v in guarded.variants},
        "controller": asdict(guarded.config),
        "passes": passes,
        "repeats": [{k: v for k, v in r.items() if k != "trace"} for r in results],
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    # every call, [t s, phase, ms, variant, probe], one repeat per line
    traces = out.with_name(out.name + ".trace.json")
    traces.write_text("[\n" + ",\n".join(json.dumps(r["trace"]) for r in results) + "\n]\n")
    plot(out.with_suffix(".png"), results, budget, phases)
    print(f"wrote {out.with_suffix('.json')}, {traces} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

"""Benchmark: the runtime guard keeping a latency budget while competing load comes and goes.

A scaled-up digits CNN (``DigitsCNN(width=64)``) is narrowed to 100%, 75% and
50% width, compiled with TVM for batch 32 and guarded with a latency budget
(by default 2x the full model's unloaded median). A stream of batch-32 calls
is served while busy-loop processes that keep every core busy start and stop
(the ``--phases`` schedule), 100 calls per second. The same schedule is then
served by the full model alone. Prints latency per second and per variant, and writes
``benchmarks/results/guard_under_load.json`` and ``.png`` (matplotlib).

Variants come from structured channel pruning of the trained full model,
fine-tuned through the torch round trip (``--method prune``, the default), or
from a CNN trained at each width (``--method train``).

    python benchmarks/guard_under_load.py [--width 64] [--phases 0:5,1:10,0:10,1:10,0:5] [--load-procs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimgraph.runtime import GuardedModel  # noqa: E402
from slimgraph.runtime.narrow import finetune_with, narrow  # noqa: E402
from tests.digits import DigitsCNN, digits_data, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WIDTHS = (1.0, 0.75, 0.5)


def trained(width: int, cache: Path | None) -> DigitsCNN:
    """A DigitsCNN of ``width`` trained for 3 epochs (seeded), kept in ``cache`` when given."""
    file = cache / f"digits_cnn_w{width}.pt" if cache else None
    model = DigitsCNN(width)
    if file and file.exists():
        model.load_state_dict(torch.load(file))
        return model.eval()
    torch.manual_seed(0)
    model = train(model, digits_data(), epochs=3)
    if file:
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), file)
    return model


def build(width: int, batch: int, method: str, cache: Path | None) -> GuardedModel:
    """The guarded CNN (no budget yet): every width compiled for ``batch``, measured, evaluated."""
    data = digits_data()
    example = (torch.zeros(batch, 1, 8, 8),)
    eval_data = (data.x_test, data.y_test)
    full = trained(width, cache)
    if method == "prune":
        tune = finetune_with(data.x_train, data.y_train)
        return narrow(full, example, list(WIDTHS), batches=[batch], fallback=False, eval_data=eval_data,
                      finetune=tune)
    models = {w: trained(round(width * w), cache) for w in WIDTHS}
    return narrow(None, example, models, batches=[batch], fallback=False, eval_data=eval_data)


class Load:
    """Processes that keep the cores busy (pure-Python busy loops), started and stopped on demand."""

    def __init__(self, procs: int):
        self.procs = procs
        self.running: list[subprocess.Popen] = []

    def start(self) -> None:
        self.running = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.procs)]

    def stop(self) -> None:
        for proc in self.running:
            proc.terminate()
        for proc in self.running:
            proc.wait()
        self.running = []


def serve(fn: Callable, variant: Callable[[], str], x: np.ndarray, phases: list[tuple[bool, float]], load: Load,
          rate: float) -> list[tuple]:
    """Call ``fn(x)`` at ``rate`` calls per second through the load schedule (an open-loop
    stream: a call that overruns its slot delays the next one, missed slots are dropped rather
    than bunched up). One row per call: (time s, loaded, latency ms, variant)."""
    rows = []
    period = 1.0 / rate
    start = due = time.perf_counter()
    end = start
    try:
        for loaded, seconds in phases:
            load.start() if loaded else load.stop()
            end += seconds
            while due < end:
                time.sleep(max(0.0, due - time.perf_counter()))
                begin = time.perf_counter()
                fn(x)
                done = time.perf_counter()
                rows.append((begin - start, loaded, (done - begin) * 1e3, variant()))
                due = max(due + period, done)
    finally:
        load.stop()
    return rows


def recovering(t: float, phases: list[tuple[bool, float]], settle_s: float) -> bool:
    """Whether ``t`` falls within ``settle_s`` after a loaded phase ended."""
    start = 0.0
    for i, (loaded, seconds) in enumerate(phases):
        if start <= t < start + seconds:
            return not loaded and i > 0 and phases[i - 1][0] and t - start < settle_s
        start += seconds
    return False


def summarize(rows, loaded: bool) -> dict:
    lat = [r[2] for r in rows if r[1] == loaded]
    names = [r[3] for r in rows if r[1] == loaded]
    if not lat:
        return {}
    return {
        "calls": len(lat),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "share": {n: names.count(n) / len(names) for n in sorted(set(names))},
    }


def per_second(rows) -> list[dict]:
    out = []
    for sec in range(int(rows[-1][0]) + 1):
        part = [r for r in rows if sec <= r[0] < sec + 1]
        if part:
            names = [r[3] for r in part]
            out.append({"t": sec, "loaded": part[0][1], "calls": len(part),
                        "p95_ms": float(np.percentile([r[2] for r in part], 95)),
                        "share": {n: names.count(n) / len(names) for n in sorted(set(names))}})
    return out


def plot(path: Path, guarded_rows, full_rows, budget: float, phases) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, rows, title in [(axes[0], guarded_rows, "guarded model"), (axes[1], full_rows, "full model alone")]:
        t0, label = 0.0, "competing load"
        for loaded, seconds in phases:
            if loaded:
                ax.axvspan(t0, t0 + seconds, color="0.9", label=label)
                label = None
            t0 += seconds
        for name in sorted({r[3] for r in rows}):
            pts = [(r[0], r[2]) for r in rows if r[3] == name]
            ax.scatter(*zip(*pts), s=3, label=name)
        ax.axhline(budget, color="red", linestyle="--", label=f"budget {budget:.2f} ms")
        ax.axhline(1.1 * budget, color="red", linestyle=":", linewidth=0.8, label="1.1x budget")
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    axes[1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64, help="DigitsCNN width of the full model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--method", choices=["prune", "train"], default="prune")
    parser.add_argument("--budget-factor", type=float, default=2.0, help="budget = factor x full unloaded median")
    parser.add_argument("--phases", default="0:5,1:10,0:10,1:10,0:5", help="load(0/1):seconds, comma separated")
    parser.add_argument("--load-procs", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second in the stream")
    parser.add_argument("--settle-s", type=float, default=3.0, help="recovery time left out of the unloaded share")
    parser.add_argument("--out", default=str(RESULTS / "guard_under_load"))
    parser.add_argument("--cache", type=Path, help="folder to keep the trained CNNs in between runs")
    parser.add_argument("--trace", action="store_true", help="also write every call to the JSON")
    args = parser.parse_args()
    phases = [(p.split(":")[0] == "1", float(p.split(":")[1])) for p in args.phases.split(",")]

    guarded = build(args.width, args.batch, args.method, args.cache)
    by_width = {v.width: v for v in guarded.variants}
    budget = args.budget_factor * by_width[1.0].latency_ms
    guarded = GuardedModel(guarded.variants, budget_ms=budget, name=guarded.name)
    print(guarded)

    x = digits_data().x_test[: args.batch]
    load = Load(args.load_procs)
    last = {}
    guarded.on_call = lambda rec: last.__setitem__("name", rec.variant)
    full = by_width[1.0]
    # one after the other: served side by side, the full model's slow calls would be the guarded model's load
    guarded_rows = serve(guarded, lambda: last["name"], x, phases, load, args.rate)
    full_rows = serve(full.model, lambda: full.name, x, phases, load, args.rate)
    stats = guarded.stats()

    result = {
        "model": f"DigitsCNN(width={args.width}) batch {args.batch}, variants by {args.method}",
        "cpu_count": os.cpu_count(),
        "load_procs": args.load_procs,
        "phases": args.phases,
        "budget_ms": budget,
        "variants": {v.name: {"width": v.width, "unloaded_ms": v.latency_ms, "accuracy": v.accuracy}
                     for v in guarded.variants},
        "guarded": {"loaded": summarize(guarded_rows, True), "unloaded": summarize(guarded_rows, False),
                    "switches": stats.switches, "per_variant": stats.latency},
        "full_alone": {"loaded": summarize(full_rows, True), "unloaded": summarize(full_rows, False)},
        "per_second": {"guarded": per_second(guarded_rows), "full_alone": per_second(full_rows)},
    }
    g_loaded, f_loaded = result["guarded"]["loaded"], result["full_alone"]["loaded"]
    full_name = by_width[1.0].name
    settled = [r for r in guarded_rows if not r[1] and not recovering(r[0], phases, args.settle_s)]
    result["checks"] = {
        "guarded_loaded_p95_over_budget": g_loaded["p95_ms"] / budget,
        "full_alone_loaded_p95_over_budget": f_loaded["p95_ms"] / budget,
        "unloaded_full_share": result["guarded"]["unloaded"]["share"].get(full_name, 0.0),
        "unloaded_settled_full_share": sum(r[3] == full_name for r in settled) / max(len(settled), 1),
        "accuracy_drop_narrowest": by_width[1.0].accuracy - by_width[min(by_width)].accuracy,
    }

    print("\nsecond  load  calls  p95 ms (guarded)  variants              | p95 ms (full alone)")
    for g, f in zip(result["per_second"]["guarded"], result["per_second"]["full_alone"]):
        share = " ".join(f"{k}:{v:.0%}" for k, v in g["share"].items())
        print(f"{g['t']:6d}  {'on ' if g['loaded'] else 'off'}  {g['calls']:5d}  {g['p95_ms']:16.3f}  {share:<22}| "
              f"{f['p95_ms']:.3f}")
    print("\n" + stats.table())
    print(f"\nbudget {budget:.3f} ms; under load: guarded p95 {g_loaded['p95_ms']:.3f} ms "
          f"({result['checks']['guarded_loaded_p95_over_budget']:.2f}x budget), full alone p95 "
          f"{f_loaded['p95_ms']:.3f} ms ({result['checks']['full_alone_loaded_p95_over_budget']:.2f}x); "
          f"without load {result['checks']['unloaded_full_share']:.1%} of calls ran {full_name} "
          f"({result['checks']['unloaded_settled_full_share']:.1%} leaving out the {args.settle_s:g} s after each "
          f"load stops)")
    for v in guarded.variants:
        print(f"  {v.name}: width {v.width:g}, unloaded {v.latency_ms:.3f} ms, accuracy {v.accuracy:.2f}%")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.trace:
        result["trace"] = {name: [[round(t, 4), loaded, round(ms, 4), v] for t, loaded, ms, v in rows]
                           for name, rows in (("guarded", guarded_rows), ("full_alone", full_rows))}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(out.with_suffix(".png"), guarded_rows, full_rows, budget, phases)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

"""Benchmark: does structured channel pruning make the compiled model faster?

The digits CNN (tests/digits.py, ``--width`` scales every layer) and the
torch ResNet-18 (tests/models.py) are imported, pruned with
``prune{method=channel,ratio=R}``, and both versions are compiled by the TVM
backend (``slimgraph.api.compile``, default pipeline) for the same batch.
Prints FLOPs, parameter counts and median latencies of both, and the speed
ratio (unpruned / pruned), as a Markdown table; ``--json`` writes them too.

    python benchmarks/prune_speed.py [--ratio 0.5] [--batch 64] [--width 16] [--target llvm] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def models(width: int, batch: int):
    """(name, graph, example input) for each benchmarked model."""
    import torch

    from slimgraph.frontends import from_torch
    from tests.digits import DigitsCNN, digits_data, train, trained_digits_cnn
    from tests.models import resnet18

    digits = trained_digits_cnn() if width == 16 else train(DigitsCNN(width), digits_data(), epochs=1)
    x = np.repeat(digits_data().x_test, (batch + 359) // 360, axis=0)[:batch]
    yield f"digits-cnn(w={width})", from_torch(digits, (torch.from_numpy(x),)), x
    module, (example,) = resnet18(batch)
    yield "resnet18", from_torch(module, (example,)), example.numpy()


def measure(graph, x: np.ndarray, target: str, runs: int) -> dict:
    from slimgraph.api import compile as sg_compile
    from slimgraph.analysis.stats import graph_stats

    compiled = sg_compile(graph, (x,), target=target)
    result = compiled.benchmark(x, runs=runs)
    stats = graph_stats(graph)
    return {"median_ms": result.median_ms, "p90_ms": result.p90_ms, "flops": stats.flops, "params": stats.parameters}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--target", default="llvm")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--models", default="", help="comma-separated name prefixes (default: all)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from slimgraph.passes.prune import Prune

    rows = []
    wanted = [m for m in args.models.split(",") if m]
    for name, graph, x in models(args.width, args.batch):
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        pruned = Prune(method="channel", ratio=args.ratio)(graph)
        before, after = measure(graph, x, args.target, args.runs), measure(pruned, x, args.target, args.runs)
        rows.append({"model": name, "before": before, "after": after,
                     "flops_ratio": after["flops"] / before["flops"],
                     "speedup": before["median_ms"] / after["median_ms"]})
    print(f"channel pruning ratio {args.ratio}, batch {args.batch}, target {args.target}\n")
    print("| model | FLOPs before | FLOPs after | ratio | ms before | ms after | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"| {r['model']} | {b['flops']:,} | {a['flops']:,} | {r['flops_ratio']:.3f} | "
              f"{b['median_ms']:.3f} | {a['median_ms']:.3f} | {r['speedup']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ratio": args.ratio, "batch": args.batch, "target": args.target, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

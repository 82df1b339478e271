"""Rule-scheduled vs MetaSchedule-tuned latency of small models on this CPU, with the tuning time.

Each model is compiled with the project's schedule rules, then tuned for
``--trials`` trials into a fresh database folder, then rebuilt with ``tune=0``
from that folder (the records applied without searching). Latencies are
whole-model medians from ``CompiledModel.benchmark``. The first tuning in a
process includes MetaSchedule's one-off import of its tensor intrinsics.
Prints a Markdown table and writes JSON.

    python benchmarks/tune_small.py [--trials 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def models():
    """name -> (torch module, example input)."""
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU()).eval()
    dense = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU()).eval()
    return {"conv3x3 16->32 @32x32": (conv, torch.randn(1, 16, 32, 32)), "linear 256x256 batch 8": (dense, torch.randn(8, 256))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64, help="MetaSchedule trials per model (default 64)")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "tune_small.json"))
    args = parser.parse_args()

    import slimgraph

    rows = []
    for name, (module, x) in models().items():
        want = module(x).detach().numpy()
        ruled = slimgraph.compile(module, (x,))
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            tuned = slimgraph.compile(module, (x,), tune=args.trials, database=folder)
            tune_s = time.perf_counter() - start
            start = time.perf_counter()
            reused = slimgraph.compile(module, (x,), tune=0, database=folder)
            reuse_s = time.perf_counter() - start
        for model in (ruled, tuned, reused):
            np.testing.assert_allclose(model(x.numpy()), want, rtol=1e-4, atol=1e-4)
        rule_ms = ruled.benchmark(x.numpy()).median_ms
        tuned_ms = reused.benchmark(x.numpy()).median_ms
        rows.append({"model": name, "trials": args.trials, "rule_ms": rule_ms, "tuned_ms": tuned_ms,
                     "speedup": rule_ms / tuned_ms, "tune_s": tune_s, "reuse_build_s": reuse_s})

    print(f"| model | rule-scheduled ms | tuned ({args.trials} trials) ms | speed-up | tuning s | rebuild from records s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['rule_ms']:.4f} | {r['tuned_ms']:.4f} | x{r['speedup']:.2f} | {r['tune_s']:.0f} | "
              f"{r['reuse_build_s']:.1f} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"cpu_cores": os.cpu_count(), "rows": rows}, f, indent=2)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Full-size ResNet-50 (224x224, batch 1, fp32) on OpenCL beside llvm, kernel by kernel (issue 17).

Both builds come from the same optimized graph, so their kernels pair up by
name. ``llvm`` runs the project's CPU schedules through TVM; ``opencl`` runs
the GPU schedules (dlight) through PyOpenCL on the first OpenCL device (PoCL's
CPU device here), timed by OpenCL profiling events. The point on PoCL is
correctness (the error against the interpreter is printed), not speed: GPU
schedules are shaped for thousands of hardware threads, which a CPU device
emulates in software.

Prints the whole-model latencies and the per-kernel table (slowest OpenCL
kernels first, with the llvm time of the same kernel and the ratio), and
writes ``benchmarks/results/opencl_resnet50.json``.

    python benchmarks/opencl_resnet50.py [--runs 3] [--kernel-repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kernel-repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="kernel rows to print")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import slimgraph
    from slimgraph.backends.opencl import device_name
    from tests.models import resnet50_imagenet

    module, inputs = resnet50_imagenet()
    x = inputs[0].numpy()
    built, results = {}, {"model": "resnet50 224x224 batch 1 fp32", "opencl_device": device_name()}
    for target in ("llvm", "opencl"):
        start = time.perf_counter()
        built[target] = slimgraph.compile(module, inputs, target=target)
        results[f"{target}_build_s"] = time.perf_counter() - start
        print(f"{target}: built in {results[f'{target}_build_s']:.0f} s", flush=True)
    reference = built["llvm"].ir.run(x)[0]
    for target, model in built.items():
        start = time.perf_counter()
        got = model(x)
        results[f"{target}_first_call_s"] = time.perf_counter() - start
        results[f"{target}_error"] = float(np.abs(got - reference).max() / np.abs(reference).max())
        bench = model.benchmark(x, warmup=1, runs=args.runs, kernel_repeat=args.kernel_repeat)
        results[target] = {"median_ms": bench.median_ms, "p90_ms": bench.p90_ms,
                           "kernels": {k.name: {"ops": k.ops, "ms": k.ms, "gflops": k.gflops} for k in bench.kernels}}
        print(f"{target}: error {results[f'{target}_error']:.1e}, median {bench.median_ms:.1f} ms", flush=True)
    print(table(results, args.top))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "opencl_resnet50.json").write_text(json.dumps(results, indent=1))


def table(results: dict, top: int) -> str:
    cpu, gpu = results["llvm"], results["opencl"]
    lines = [f"OpenCL device: {results['opencl_device']}",
             f"whole model: llvm {cpu['median_ms']:.1f} ms, opencl {gpu['median_ms']:.1f} ms "
             f"(x{gpu['median_ms'] / cpu['median_ms']:.1f}); errors vs the interpreter: llvm "
             f"{results['llvm_error']:.1e}, opencl {results['opencl_error']:.1e}", "",
             "| kernel | ops | opencl ms | llvm ms | opencl / llvm |", "| --- | --- | ---: | ---: | ---: |"]
    rows = sorted(gpu["kernels"].items(), key=lambda kv: -kv[1]["ms"])[:top]
    for name, k in rows:
        c = cpu["kernels"].get(name, {}).get("ms", float("nan"))
        lines.append(f"| {name} | {k['ops']} | {k['ms']:.2f} | {c:.2f} | {k['ms'] / c:.1f} |")
    by_op: dict[str, list[float]] = {}
    for name, k in gpu["kernels"].items():
        anchor = k["ops"].split("+")[0]
        pair = by_op.setdefault(anchor, [0.0, 0.0])
        pair[0] += k["ms"]
        pair[1] += cpu["kernels"].get(name, {}).get("ms", 0.0)
    lines += ["", "| first op | opencl ms | llvm ms | opencl / llvm |", "| --- | ---: | ---: | ---: |"]
    for op, (g, c) in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {op} | {g:.1f} | {c:.1f} | {g / c if c else float('nan'):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Transformer speed on the CPU: slimgraph against ONNX Runtime, and where slimgraph's time goes.

Each model comes from ``benchmarks/real_models.py`` (``transformers`` configs,
full size, random weights, batch 1, fp32; text at 128 tokens with a padding
mask). slimgraph compiles the torch model for ``llvm`` with the default
pipeline; ONNX Runtime runs the same model exported to ONNX. Both get the
same numpy inputs and the same thread count, and their calls alternate
(one slimgraph call, one ORT call, ...) so a load that comes and goes on a
shared machine hits both alike. Then ``CompiledModel.benchmark()`` gives the
per-kernel table: the slowest kernels with their GFLOP/s and the share of
this CPU's peak.

Peak: the theoretical fp32 peak is cores x 64 FLOPs per cycle (two AVX-512 FMA
ports x 16 lanes x 2; 32 with AVX2) x the clock that /proc/cpuinfo reports;
the practical one is what torch's fp32 GEMM (oneDNN/MKL) sustains at 2048^3
on the same threads, measured at the start of the run. Kernel GFLOP/s are
shown against the theoretical one.

    python benchmarks/transformers_speed.py [--models bert-base,vit-base] [--threads 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_models import MODELS, RESULTS  # noqa: E402 - the builders live beside this script

DEFAULT_MODELS = ("bert-base", "distilbert", "gpt2", "vit-base", "deit-small")
#: FLOPs one core retires per cycle in fp32: 2 FMA ports x lanes (16 with AVX-512, 8 with AVX2) x 2.
def flops_per_cycle(flags: list[str]) -> int:
    return 2 * (16 if "avx512f" in flags else 8) * 2


def cpu_info() -> tuple[list[str], float]:
    """This CPU's flags and its clock in GHz, from /proc/cpuinfo."""
    flags, mhz = [], 0.0
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].split()
        elif line.startswith("cpu MHz") and not mhz:
            mhz = float(line.split(":", 1)[1])
    return flags, mhz / 1e3


def measured_gemm_gflops(threads: int) -> float:
    """torch's fp32 GEMM (oneDNN/MKL) at 2048^3 on ``threads`` threads: what this CPU sustains."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        for _ in range(2):
            a @ b
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return 2 * 2048**3 / best / 1e9
    finally:
        torch.set_num_threads(before)


def interleaved(fns: dict, seconds: float, min_runs: int = 5, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Median and fastest ms of each callable, calling them in turn until ``seconds`` pass (at least
    ``min_runs`` rounds). On a shared machine the fastest call is the one least disturbed."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < min_runs or time.perf_counter() - start < seconds:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
        if len(times[next(iter(times))]) >= 200:
            break
    return {k: {"median": float(np.median(v)), "min": float(np.min(v))} for k, v in times.items()}


def export_onnx(module, inputs, path: str) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(module, tuple(inputs), path, dynamo=False, opset_version=17)


#: Ops that name a kernel in the time-by-op summary, first match wins; otherwise its first op.
ANCHORS = ("attention", "linear", "matmul", "conv", "layer_norm", "softmax", "gather")


def _anchor(ops: str) -> str:
    names = ops.split("+")
    return next((a for a in ANCHORS if a in names), names[0])


def run_model(name: str, threads: int, seconds: float, top: int) -> dict:
    import onnxruntime as ort
    import torch

    from slimgraph.api import compile as sg_compile

    torch.manual_seed(0)
    module, inputs = MODELS[name][1]()
    arrays = [t.numpy() for t in inputs]
    row: dict = {"model": name}
    t0 = time.perf_counter()
    model = sg_compile(module, inputs, target="llvm")
    row["compile_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(module, inputs, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = dict(zip([i.name for i in session.get_inputs()], arrays))
    with torch.no_grad():
        want = module(*inputs).numpy()
    got = np.asarray(model(*arrays))
    row["max_rel_error"] = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))
    ms = interleaved({"slimgraph": lambda: model(*arrays), "onnxruntime": lambda: session.run(None, feed)}, seconds)
    row["ms"] = {k: v["median"] for k, v in ms.items()}
    row["min_ms"] = {k: v["min"] for k, v in ms.items()}
    row["ort_over_slimgraph"] = row["ms"]["onnxruntime"] / row["ms"]["slimgraph"]
    row["ort_over_slimgraph_min"] = row["min_ms"]["onnxruntime"] / row["min_ms"]["slimgraph"]
    bench = model.benchmark(*arrays, warmup=1, runs=3, kernel_repeat=5)
    kernels = sorted(bench.kernels, key=lambda k: -k.ms)
    row["kernels"] = [
        {"name": k.name, "ops": k.ops, "calls": k.calls, "ms": k.ms, "share": k.share, "gflops": k.gflops}
        for k in kernels[:top]
    ]
    by_op: dict[str, float] = {}
    for k in bench.kernels:
        by_op[_anchor(k.ops)] = by_op.get(_anchor(k.ops), 0.0) + k.ms
    row["ms_by_anchor"] = dict(sorted(by_op.items(), key=lambda p: -p[1]))
    return row


def report(rows: list[dict], threads: int, peak: float, gemm: float) -> str:
    lines = [f"Batch 1, fp32, {threads} threads, medians of interleaved calls; peak {peak:.0f} GFLOP/s "
             f"(theoretical); torch fp32 GEMM 2048^3 on {threads} threads sustains {gemm:.0f} GFLOP/s", "",
             "| model | slimgraph ms | ONNX Runtime ms | ORT / slimgraph | fastest call: slimgraph / ORT ms | ratio | "
             "compile s | max rel error |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['ms']['slimgraph']:.1f} | {r['ms']['onnxruntime']:.1f} | "
                     f"{r['ort_over_slimgraph']:.2f} | {r['min_ms']['slimgraph']:.1f} / {r['min_ms']['onnxruntime']:.1f} | "
                     f"{r['ort_over_slimgraph_min']:.2f} | {r['compile_s']:.0f} | {r['max_rel_error']:.1e} |")
    ratios = [r["ort_over_slimgraph"] for r in rows if "ort_over_slimgraph" in r]
    if ratios:
        lines.append(f"\ngeometric mean ORT / slimgraph: {float(np.exp(np.mean(np.log(ratios)))):.2f}")
    for r in rows:
        if "kernels" not in r:
            continue
        lines += ["", f"### {r['model']}: time by anchor op (ms): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in list(r["ms_by_anchor"].items())[:8]), "",
                  "| kernel | ops | calls | ms (all calls) | share | GFLOP/s | of peak |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for k in r["kernels"]:
            rate = (f"{k['gflops']:.1f} | {k['gflops'] / peak:.0%}" if k["gflops"] is not None else "- | -")
            lines.append(f"| {k['name']} | {k['ops'][:60]} | {k['calls']} | {k['ms']:.2f} | {k['share']:.1%} | {rate} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="interleaved timing per model")
    parser.add_argument("--top", type=int, default=12, help="kernels shown per model")
    parser.add_argument("--json", default=str(RESULTS / "transformers_speed.json"))
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    flags, ghz = cpu_info()
    peak = args.threads * flops_per_cycle(flags) * ghz
    gemm = measured_gemm_gflops(args.threads)
    rows = []
    for name in args.models.split(","):
        try:
            rows.append(run_model(name.strip(), args.threads, args.seconds, args.top))
        except Exception as exc:  # noqa: BLE001 - one model failing is a row, not the end of the run
            rows.append({"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "kernels"}), file=sys.stderr, flush=True)
    print(report(rows, args.threads, peak, gemm))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "peak_gflops": peak, "clock_ghz": ghz,
                               "torch_gemm_gflops": gemm, "cpu_flags": flags,
                               "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

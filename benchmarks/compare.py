"""Time slimgraph against PyTorch eager, torch.compile, ONNX Runtime and TVM's own importer.

One run over a suite: the ONNX model-zoo architectures shipped with onnx
(light ResNet-50, Inception v1, SqueezeNet, ShuffleNet) and the torch models
of the frontends suite (ResNet-18/50, a MobileNetV2-style net, a transformer
block). Every contender gets the same inputs and the same thread count;
latencies are medians after warm-up. Prints a Markdown table (latencies and
slimgraph's speed-up over each) and writes JSON.

    python benchmarks/compare.py [--models a,b] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LIGHT = os.path.join(os.path.dirname(__import__("onnx").__file__), "backend", "test", "data", "light")
ONNX_MODELS = {"resnet50-onnx": "light_resnet50", "inception_v1": "light_inception_v1",
               "squeezenet": "light_squeezenet", "shufflenet": "light_shufflenet"}
TORCH_MODELS = {"resnet50-full": "resnet50_imagenet", "resnet18": "resnet18", "resnet50": "resnet50", "mobilenet_v2": "mobilenet_v2",
                "transformer_block": "transformer_block"}
CONTENDERS = ("slimgraph", "torch eager", "torch.compile", "onnxruntime", "tvm default")


def median_ms(fn: Callable[[], object], warmup: int = 3, budget_s: float = 3.0, min_runs: int = 3) -> float:
    """Median latency of ``fn`` after warm-up, running until the time budget (at least ``min_runs``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def load(name: str, batch: int):
    """(torch module or None, ONNX path or None, numpy inputs)."""
    if name in ONNX_MODELS:
        import onnx

        path = os.path.join(LIGHT, ONNX_MODELS[name] + ".onnx")
        model = onnx.load(path)
        rng = np.random.default_rng(0)
        inputs = []
        init = {i.name for i in model.graph.initializer}
        for inp in model.graph.input:
            if inp.name in init:
                continue
            dims = [d.dim_value or batch for d in inp.type.tensor_type.shape.dim]
            inputs.append(rng.standard_normal(dims).astype(np.float32))
        return None, path, inputs
    from tests import models

    module, example = getattr(models, TORCH_MODELS[name])(batch=batch)
    return module, None, [t.numpy() for t in example]


def run_slimgraph(module, path, inputs, threads):
    import slimgraph.api as api

    start = time.perf_counter()
    model = api.compile(module if module is not None else path, inputs, target="llvm")
    compile_s = time.perf_counter() - start
    return median_ms(lambda: model(*inputs)), compile_s


def run_eager(module, path, inputs, threads):
    import torch

    if module is None:
        return None
    tensors = [torch.from_numpy(x) for x in inputs]
    with torch.inference_mode():
        return median_ms(lambda: module(*tensors))


def run_torch_compile(module, path, inputs, threads):
    import torch

    if module is None:
        return None
    tensors = [torch.from_numpy(x) for x in inputs]
    compiled = torch.compile(module)
    with torch.inference_mode():
        return median_ms(lambda: compiled(*tensors), warmup=3)


def _onnx_path_of(module, path, inputs, tmp):
    if path is not None:
        return path
    import torch

    out = os.path.join(tmp, "model.onnx")
    torch.onnx.export(module, tuple(torch.from_numpy(x) for x in inputs), out, dynamo=False)
    return out


def run_ort(module, path, inputs, threads, tmp):
    import onnxruntime as ort

    onnx_path = _onnx_path_of(module, path, inputs, tmp)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, inputs))
    return median_ms(lambda: session.run(None, feed))


def run_tvm_default(module, path, inputs, threads):
    import tvm
    from tvm import relax

    from slimgraph.backends.tvm.targets import parse_target

    if path is not None:
        import onnx
        from tvm.relax.frontend.onnx import from_onnx

        mod = from_onnx(onnx.load(path), keep_params_in_input=False)
    else:
        import torch
        from tvm.relax.frontend.torch import from_exported_program

        exported = torch.export.export(module, tuple(torch.from_numpy(x) for x in inputs))
        mod = from_exported_program(exported)
    executable = tvm.compile(mod, parse_target("llvm").tvm())
    vm = relax.VirtualMachine(executable, tvm.cpu())

    def call():
        # numpy in, numpy out, as slimgraph and onnxruntime are timed
        result = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
        return [o.numpy() for o in (result if isinstance(result, (list, tuple, tvm.ir.Array)) else [result])]

    return median_ms(call, warmup=1, budget_s=2.0, min_runs=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(list(ONNX_MODELS) + list(TORCH_MODELS)))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--skip", default="", help="contenders to skip, comma-separated (e.g. 'tvm default')")
    parser.add_argument("--json", default="benchmarks/compare.json")
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            module, path, inputs = load(name, args.batch)
            row: dict = {"model": name, "ms": {}, "errors": {}}
            runners = {
                "slimgraph": lambda: run_slimgraph(module, path, inputs, args.threads),
                "torch eager": lambda: run_eager(module, path, inputs, args.threads),
                "torch.compile": lambda: run_torch_compile(module, path, inputs, args.threads),
                "onnxruntime": lambda: run_ort(module, path, inputs, args.threads, tmp),
                "tvm default": lambda: run_tvm_default(module, path, inputs, args.threads),
            }
            for contender, runner in runners.items():
                if contender in skip:
                    continue
                try:
                    value = runner()
                except Exception as exc:  # noqa: BLE001 - a contender that cannot run the model gets a dash
                    row["errors"][contender] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    continue
                if contender == "slimgraph":
                    value, row["compile_s"] = value
                if value is not None:
                    row["ms"][contender] = value
            results.append(row)
            print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row["ms"].items()), file=sys.stderr, flush=True)
    print(table(results, args.threads))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"threads": args.threads, "batch": args.batch, "results": results}, f, indent=1)
    return 0


def table(results: list[dict], threads: int) -> str:
    """Latencies in ms and slimgraph's speed-up (other / slimgraph) per contender."""
    others = [c for c in CONTENDERS if c != "slimgraph"]
    head = ["model", "slimgraph ms", "compile s"] + [f"{c} ms" for c in others] + [f"x vs {c}" for c in others]
    lines = [f"Latency, batch 1, fp32, {threads} threads (median after warm-up); x = other / slimgraph (>1: slimgraph faster)",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in results:
        ms = row["ms"]
        ours = ms.get("slimgraph")
        cells = [row["model"], f"{ours:.2f}" if ours else "-", f"{row.get('compile_s', 0):.1f}"]
        cells += [f"{ms[c]:.2f}" if c in ms else "-" for c in others]
        cells += [f"{ms[c] / ours:.2f}" if c in ms and ours else "-" for c in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Time slimgraph against ONNX Runtime, OpenVINO (f32 and its default precision), PyTorch and TVM.

The default suite is the full-size real models of ``benchmarks/real_models.py``
(built with ``transformers`` from their configs, random weights, nothing
downloaded; text models at sequence 128): BERT-base, DistilBERT, GPT-2, the T5
encoder, ViT-base, DeiT-small, Swin-tiny, ConvNeXt-tiny, ResNet-50, MobileNetV2,
EfficientNet-B0. The ONNX zoo models shipped with onnx (``resnet50-onnx``,
``inception_v1``, ``squeezenet``, ``shufflenet``) and the torch models of the tests
(``resnet18``, ``mobilenet_v2``, ``transformer_block``, ...) can be named too.

Each model runs in a child process with a time limit, so one that fails or hangs
is a row and the rest still run. In it every contender gets the same numpy
inputs, returns numpy, and runs on the same number of threads: slimgraph (from
the torch module), ONNX Runtime and OpenVINO on one ONNX file exported once
(OpenVINO through ``ov.convert_model``, ``PERFORMANCE_HINT=LATENCY``, with
``INFERENCE_PRECISION_HINT=f32`` and again with the CPU's default precision:
bf16 where the CPU has it), PyTorch eager, and on request torch.compile and
TVM's own importer. All are timed by :func:`slimgraph.timing.measure`, in
interleaved rounds (a burst of foreign load spreads over every contender
instead of hitting one), and checked against eager.

Prints a Markdown table (each peer's median ms, or ``--stat min``, slimgraph's ratio peer/slimgraph:
above 1, slimgraph is faster; geometric means) and writes
``benchmarks/results/compare.json`` with every timing and the CPU's flags.

    python benchmarks/compare.py [--models bert-base,vit-base] [--threads N] [--skip "torch eager"]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_models import MODELS, RESULTS, _lively_batch_norms, child_row  # noqa: E402

LIGHT = Path(__import__("onnx").__file__).parent / "backend" / "test" / "data" / "light"
ONNX_MODELS = {"resnet50-onnx": "light_resnet50", "inception_v1": "light_inception_v1",
               "squeezenet": "light_squeezenet", "shufflenet": "light_shufflenet"}
TORCH_MODELS = {"resnet50-full": "resnet50_imagenet", "resnet18": "resnet18", "resnet50": "resnet50",
                "mobilenet_v2": "mobilenet_v2", "transformer_block": "transformer_block"}
SUITE = ("bert-base", "distilbert", "gpt2", "t5-encoder", "vit-base", "deit-small", "swin-tiny", "convnext-tiny",
         "resnet-50", "mobilenet-v2", "efficientnet-b0")
CONTENDERS = ("slimgraph", "slimgraph bf16", "onnxruntime", "openvino f32", "openvino", "torch eager", "torch.compile",
              "tvm default")
#: Left out unless asked for with --contenders: not the peers the project measures itself against, and
#: slow (torch.compile's build, untuned TVM's 80x) or erratic on a loaded machine (eager's thread barriers);
#: slimgraph bf16 (``compile(precision="bf16")``, CPUs with AMX or AVX512-BF16) is OpenVINO's default precision's peer.
OPTIONAL = ("slimgraph bf16", "torch eager", "torch.compile", "tvm default")
#: The peers slimgraph's ratio is shown against, in the table's order.
RATIOS = ("onnxruntime", "openvino f32", "openvino")
#: /proc/cpuinfo flags that decide which kernels a runtime can use.
KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8")


# -- models -------------------------------------------------------------------------


def load(name: str, batch: int) -> tuple[Any, Path | None, list[np.ndarray]]:
    """(torch module or None, ONNX path or None, numpy inputs) of a model of any of the three suites."""
    if name in MODELS:
        import torch

        if batch != 1:
            raise SystemExit(f"{name}: the real models are built at batch 1")
        torch.manual_seed(0)
        module, inputs = MODELS[name][1]()
        _lively_batch_norms(module)
        return module, None, [t.numpy() for t in inputs]
    if name in ONNX_MODELS:
        import onnx

        path = LIGHT / f"{ONNX_MODELS[name]}.onnx"
        model = onnx.load(str(path))
        rng = np.random.default_rng(0)
        init = {i.name for i in model.graph.initializer}
        inputs = [rng.standard_normal([d.dim_value or batch for d in i.type.tensor_type.shape.dim]).astype(np.float32)
                  for i in model.graph.input if i.name not in init]
        return None, path, inputs
    from tests import models

    module, example = getattr(models, TORCH_MODELS[name])(batch=batch)
    return module, None, [t.numpy() for t in example]


def onnx_file(module, path: Path | None, inputs: list[np.ndarray], tmp: str) -> Path:
    """The ONNX file ONNX Runtime and OpenVINO both read: the zoo's own, or one export of ``module``."""
    if path is not None:
        return path
    import warnings

    import torch

    out = Path(tmp) / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(module, tuple(torch.from_numpy(x) for x in inputs), str(out), dynamo=False,
                          opset_version=17)
    return out


# -- contenders: each returns a function of no arguments giving the outputs as numpy --------


def _slimgraph(precision: str) -> Callable:
    def build(module, path, inputs, threads, onnx_path):
        import slimgraph

        model = slimgraph.compile(module if module is not None else str(path), inputs, target="llvm",
                                  precision=precision)
        return lambda: model(*inputs)

    return build


def build_ort(module, path, inputs, threads, onnx_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = dict(zip((i.name for i in session.get_inputs()), inputs))
    return lambda: session.run(None, feed)


def _openvino(precision: str | None) -> Callable:
    def build(module, path, inputs, threads, onnx_path):
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = core.compile_model(ov.convert_model(str(onnx_path)), "CPU", config)
        request = compiled.create_infer_request()

        def call():
            # copies out: a request's output tensors are overwritten by its next call
            return [np.array(t.data) for t in request.infer(inputs).to_tuple()]

        call.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # what "default" turned out to be
        return call

    return build


def build_eager(module, path, inputs, threads, onnx_path):
    import torch

    if module is None:
        return None
    tensors = [torch.from_numpy(x) for x in inputs]

    def call():
        with torch.inference_mode():
            return module(*tensors).numpy()

    return call


def build_torch_compile(module, path, inputs, threads, onnx_path):
    import torch

    # the eager call, on the compiled module
    return build_eager(None if module is None else torch.compile(module), path, inputs, threads, onnx_path)


def build_tvm_default(module, path, inputs, threads, onnx_path):
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from slimgraph.backends.tvm.targets import parse_target

    mod = from_onnx(onnx.load(str(onnx_path)), keep_params_in_input=False)
    vm = relax.VirtualMachine(tvm.compile(mod, parse_target("llvm").tvm()), tvm.cpu())

    def call():
        result = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
        return [o.numpy() for o in (result if isinstance(result, (list, tuple, tvm.ir.Array)) else [result])]

    return call


BUILDERS = {"slimgraph": _slimgraph("fp32"), "slimgraph bf16": _slimgraph("bf16"), "onnxruntime": build_ort, "openvino f32": _openvino("f32"),
            "openvino": _openvino(None), "torch eager": build_eager, "torch.compile": build_torch_compile,
            "tvm default": build_tvm_default}


def _first(outputs) -> np.ndarray:
    return np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs, dtype=np.float64)


def run_one(name: str, contenders: list[str], threads: int, batch: int, budget_s: float, rounds: int,
            statistic: str) -> dict:
    """One model, every contender built, checked against eager and timed in interleaved rounds."""
    os.environ["TVM_NUM_THREADS"] = str(threads)  # before TVM starts its pool
    import torch

    from slimgraph.timing import Timing, measure

    torch.set_num_threads(threads)
    module, path, inputs = load(name, batch)
    row: dict = {"model": name, "ms": {}, "build_s": {}, "errors": {}, "timing": {}, "max_rel_error": {}}
    calls: dict[str, Callable] = {}
    want = None
    if module is not None:
        with torch.inference_mode():
            want = _first(module(*(torch.from_numpy(x) for x in inputs)).numpy())
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = onnx_file(module, path, inputs, tmp)
        for contender in contenders:
            start = time.perf_counter()
            try:
                call = BUILDERS[contender](module, path, inputs, threads, onnx_path)
                if call is not None:
                    first = _first(call())
            except Exception as exc:  # noqa: BLE001 - a contender that cannot run the model gets a dash
                row["errors"][contender] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
                continue
            if call is None:
                continue
            row["build_s"][contender] = time.perf_counter() - start
            if hasattr(call, "precision"):
                row.setdefault("precision", {})[contender] = call.precision
            calls[contender] = call
            if want is not None:
                row["max_rel_error"][contender] = float(np.abs(first - want).max() / max(np.abs(want).max(), 1e-30))
    runs: dict[str, list[Timing]] = {c: [] for c in calls}
    for round_ in range(rounds):
        for contender, call in calls.items():
            runs[contender].append(measure(call, duration_s=budget_s / rounds, runs=3, max_runs=200,
                                           warmup=3 if round_ == 0 else 1, batch=batch, max_cv=None))
    for contender, timings in runs.items():
        merged = Timing(tuple(t for timing in timings for t in timing.times_ms), timings[0].first_ms,
                        sum(t.wall_s for t in timings), timings[0].warmup, batch)
        row["ms"][contender] = getattr(merged, f"{statistic}_ms")
        row["timing"][contender] = {k: v for k, v in merged.as_dict().items() if k != "times_ms"}
    return row


# -- the table ------------------------------------------------------------------------


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def table(results: list[dict], threads: int, contenders: list[str], statistic: str) -> str:
    """``statistic`` ms per contender, then slimgraph's ratio to each peer in RATIOS (peer ms / slimgraph ms:
    above 1, slimgraph is faster), with geometric means over the models every side ran."""
    peers = [c for c in contenders if c != "slimgraph"]
    ratios = [c for c in RATIOS if c in peers]
    head = ["model", "slimgraph ms"] + [f"{c} ms" for c in peers] + [f"{c} / slimgraph" for c in ratios]
    lines = [f"Latency, batch 1, {threads} threads, {statistic} ms; ratio = peer ms / slimgraph ms (>1: slimgraph faster)",
             "", "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    by_peer: dict[str, list[float]] = {c: [] for c in ratios}
    for row in results:
        ms = row.get("ms", {})
        ours = ms.get("slimgraph")
        cells = [row["model"], f"{ours:.2f}" if ours else _why(row, "slimgraph")]
        cells += [f"{ms[c]:.2f}" if c in ms else _why(row, c) for c in peers]
        for c in ratios:
            if ours and c in ms:
                by_peer[c].append(ms[c] / ours)
                cells.append(f"{ms[c] / ours:.2f}")
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    means = [f"{geomean(by_peer[c]):.2f} ({len(by_peer[c])})" if by_peer[c] else "-" for c in ratios]
    lines.append("| geometric mean (models) | " + " | ".join([""] * (1 + len(peers))) + " | " + " | ".join(means) + " |")
    failed = [f"- {r['model']}: {r['error']}" for r in results if "error" in r]
    failed += [f"- {r['model']}, {c}: {e}" for r in results for c, e in r.get("errors", {}).items()]
    return "\n".join(lines + ([""] + failed if failed else []))


def _why(row: dict, contender: str) -> str:
    return "failed" if "error" in row or contender in row.get("errors", {}) else "-"


def cpu_info() -> dict:
    """The CPU's model name and flags (/proc/cpuinfo), and LLVM's name for it (what TVM compiles for)."""
    info: dict = {"cores": len(os.sched_getaffinity(0))}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and "model" not in info:
            info["model"] = value.strip()
        if key.strip() == "flags" and "flags" not in info:
            info["flags"] = value.split()
    flags = set(info.get("flags", []))
    info["key_flags"] = {f: f in flags for f in KEY_FLAGS}
    try:
        from slimgraph.backends.tvm.targets import host_cpu

        info["llvm_cpu"] = host_cpu()
    except ImportError:
        pass
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = list(MODELS) + list(ONNX_MODELS) + list(TORCH_MODELS)
    parser.add_argument("--models", default=",".join(SUITE), help="comma-separated, from: " + ", ".join(known))
    parser.add_argument("--contenders", default=",".join(c for c in CONTENDERS if c not in OPTIONAL),
                        help="comma-separated, from: " + ", ".join(CONTENDERS))
    parser.add_argument("--skip", default="", help="contenders to leave out, comma-separated")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timed runs per contender and model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the budget is split into")
    parser.add_argument("--stat", default="median", choices=("median", "min", "mean", "p90"),
                        help="the figure compared (default median; min is the least disturbed on a loaded machine)")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per model before it is stopped")
    parser.add_argument("--json", default=str(RESULTS / "compare.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip() and c.strip() not in skip]
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    if args.child:
        print(json.dumps(run_one(args.child, contenders, args.threads, args.batch, args.budget, args.rounds, args.stat)),
              flush=True)
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        parser.error(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(known)}")
    child_args = ["--contenders", ",".join(contenders), "--threads", str(args.threads), "--batch", str(args.batch),
                  "--budget", str(args.budget), "--rounds", str(args.rounds), "--stat", args.stat]
    results = []
    for name in names:
        row = child_row(Path(__file__), [name, *child_args], args.timeout, {"model": name})
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "timing"}), file=sys.stderr, flush=True)
    print(table(results, args.threads, contenders, args.stat))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "batch": args.batch, "budget_s": args.budget,
                               "rounds": args.rounds, "statistic": args.stat, "contenders": contenders, "cpu": cpu_info(),
                               "results": results}, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

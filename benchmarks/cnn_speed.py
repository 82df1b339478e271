"""CNN latency: slimgraph against ONNX Runtime and OpenVINO, interleaved in one run (issue 15, items 2-3).

The full-size convolutional models of ``real_models.py`` (ResNet-50, MobileNetV2,
EfficientNet-B0, ConvNeXt-tiny; built from ``transformers`` configs, batch 1)
are compiled by slimgraph (fp32, and bf16 with ``--bf16``), exported to ONNX
for ONNX Runtime and OpenVINO, and timed in rounds that alternate the
contenders, so a noisy machine slows all of them alike. Every contender gets
the same numpy input and the same thread count. Prints a Markdown table (median
ms, the ratio ORT / slimgraph, and for bf16 the output's error relative to the
fp32 output's largest magnitude) and slimgraph's heaviest kernels per model
(from ``CompiledModel.benchmark()``), and writes
``benchmarks/results/cnn_speed.json``.

    python benchmarks/cnn_speed.py [--models resnet-50,mobilenet-v2] [--threads 2] [--bf16] [--openvino]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CNNS = ("resnet-50", "mobilenet-v2", "efficientnet-b0", "convnext-tiny")


def _ort(onnx_path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino(onnx_path: str, threads: int, f32: bool):
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(ov.convert_model(onnx_path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer([x])[0]


def interleaved_ms(calls: dict, x: np.ndarray, rounds: int, per_round: int, statistic=np.median) -> dict[str, float]:
    """ms of each call (``statistic`` of its times, the median by default), timed in ``rounds`` that
    run every contender ``per_round`` times in turn."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        for _ in range(3):
            fn(x)
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(statistic(t)) for name, t in times.items()}


def run_model(name: str, args, tmp: str) -> dict:
    import torch

    import slimgraph
    from real_models import MODELS, _lively_batch_norms

    torch.manual_seed(0)
    module, inputs = MODELS[name][1]()
    _lively_batch_norms(module)
    x = inputs[0].numpy()
    row: dict = {"model": name, "ms": {}, "compile_s": {}}
    calls = {}
    outputs = {}
    precisions = ("fp32", "bf16") if args.bf16 else ("fp32",)
    for precision in precisions:
        start = time.perf_counter()
        # fp32-only runs leave precision out, so the script also times checkouts that predate it
        model = slimgraph.compile(module, [x], "llvm", **({"precision": precision} if args.bf16 else {}))
        row["compile_s"][precision] = time.perf_counter() - start
        calls[f"slimgraph {precision}"] = model
        outputs[precision] = np.asarray(model(x))
        bench = model.benchmark(x, warmup=2, runs=5, kernel_repeat=3)
        top = sorted(bench.kernels, key=lambda k: -k.ms)[: args.kernels]
        row.setdefault("kernels", {})[precision] = [
            {"name": k.name, "ops": k.ops, "ms": k.ms, "share": k.share, "gflops": k.gflops} for k in top]
    with torch.no_grad():
        want = module(*inputs).numpy()
    scale = float(np.max(np.abs(want)))
    row["rel_error"] = {p: float(np.max(np.abs(out - want)) / scale) for p, out in outputs.items()}
    onnx_path = os.path.join(tmp, f"{name}.onnx")
    torch.onnx.export(module, inputs, onnx_path, dynamo=False)
    calls["onnxruntime"] = _ort(onnx_path, args.threads)
    if args.openvino:
        calls["openvino f32"] = _openvino(onnx_path, args.threads, f32=True)
        calls["openvino default"] = _openvino(onnx_path, args.threads, f32=False)
    row["ms"] = interleaved_ms(calls, x, args.rounds, args.per_round, getattr(np, args.statistic))
    return row


def table(rows: list[dict], threads: int, statistic: str = "median") -> str:
    contenders = list(dict.fromkeys(c for r in rows for c in r["ms"]))
    ratios = [c for c in contenders if c != "slimgraph fp32" and not c.startswith("slimgraph")]
    head = ["model"] + [f"{c} ms" for c in contenders] + [f"{c} / slimgraph fp32" for c in ratios]
    if any("bf16" in r["rel_error"] for r in rows):
        head += ["openvino default / slimgraph bf16", "bf16 rel. error", "fp32 rel. error"]
    lines = [f"Batch 1, {threads} threads, {statistic} ms in interleaved rounds; ratio > 1: slimgraph faster", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    geo: dict[str, list[float]] = {c: [] for c in ratios}
    for r in rows:
        ms = r["ms"]
        ours = ms.get("slimgraph fp32")
        cells = [r["model"]] + [f"{ms[c]:.2f}" if c in ms else "-" for c in contenders]
        for c in ratios:
            if c in ms and ours:
                geo[c].append(ms[c] / ours)
            cells.append(f"{ms[c] / ours:.2f}" if c in ms and ours else "-")
        if "bf16 rel. error" in head:
            bf = ms.get("slimgraph bf16")
            ov = ms.get("openvino default")
            cells += [f"{ov / bf:.2f}" if bf and ov else "-",
                      f"{r['rel_error'].get('bf16', float('nan')):.1e}", f"{r['rel_error']['fp32']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    mean = ["geometric mean"] + [""] * len(contenders) + [
        f"{math.exp(sum(map(math.log, v)) / len(v)):.2f}" if v else "-" for v in geo.values()]
    lines.append("| " + " | ".join(mean + [""] * (len(head) - len(mean))) + " |")
    for r in rows:
        for precision, kernels in r.get("kernels", {}).items():
            lines += ["", f"{r['model']} {precision}: heaviest kernels", "", "| kernel | ops | ms | share | GFLOP/s |",
                      "| --- | --- | --- | --- | --- |"]
            lines += [f"| {k['name']} | {k['ops'][:60]} | {k['ms']:.3f} | {k['share']:.1%} | {k['gflops']:.1f} |"
                      for k in kernels]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CNNS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also compile with precision='bf16'")
    parser.add_argument("--openvino", action="store_true", help="also time OpenVINO (f32 hint and default precision)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--statistic", choices=("median", "min"), default="median",
                        help="min: the fastest call, steadier than the median on a loaded machine")
    parser.add_argument("--kernels", type=int, default=8, help="heaviest kernels listed per model")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cnn_speed.json"))
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(run_model(name.strip(), args, tmp))
            print(json.dumps({k: rows[-1][k] for k in ("model", "ms", "rel_error")}), file=sys.stderr, flush=True)
    print(table(rows, args.threads, args.statistic))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "batch": 1, "statistic": args.statistic, "results": rows},
                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every model of the test suites compiled for ``opencl`` and checked against the interpreter (issue 17).

The models: the frontends suite (``tests/models.py``: ResNet-18/50, MobileNetV2,
a transformer block, an MLP; the ONNX "light" zoo models), the real-models
suite (``tests/models/``: the vision, audio and text architectures at their
small test configurations), and int8 versions (calibrated ``quantize`` then
``lower-quantized``) of the convolutional and transformer ones. Each is
compiled with the default pipeline for ``opencl`` (run through PyOpenCL on
the first OpenCL device: PoCL's CPU device here), and with ``--llvm`` for
``llvm`` too (the suites' own tests check that; it doubles the time); each
result is compared with the reference interpreter run on the optimized graph:
the error is the largest absolute difference relative to the reference
output's largest magnitude (the bar is 1e-4). Each model runs in a child
process with a time limit, so one failure is reported and the rest still run.

Prints a Markdown table (model, largest output, llvm and opencl errors, opencl
build and first-call seconds, kernels) and writes
``benchmarks/results/opencl_models.json``, keeping the rows of cases not run
this time, so the sweep can run in parts.

    python benchmarks/opencl_models.py [--only resnet,bert] [--llvm] [--timeout 900]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BAR = 1e-4

FRONTEND_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "transformer_block", "mlp")
LIGHT = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
         "vgg19", "zfnet512")
VISION_AUDIO = ("vit", "swin", "resnet", "convnext", "mobilenet_v2", "efficientnet", "mobilevit", "segformer",
                "wav2vec2", "whisper_encoder")
TEXT = ("bert", "distilbert", "roberta", "gpt2", "llama", "t5", "bart")
INT8 = ("frontends/resnet18", "frontends/mobilenet_v2", "frontends/transformer_block", "frontends/mlp",
        "vision/convnext")
INT8_PIPELINE = "canonicalize,fold-constants,cse,dce,quantize,lower-quantized,fuse"


def cases() -> list[str]:
    return ([f"frontends/{m}" for m in FRONTEND_MODELS] + [f"onnx-light/{m}" for m in LIGHT]
            + [f"vision/{m}" for m in VISION_AUDIO] + [f"text/{m}" for m in TEXT] + [f"int8:{m}" for m in INT8])


def _source(case: str):
    """(model for slimgraph.compile, example inputs)."""
    import torch

    suite, name = case.split("/")
    if suite == "frontends":
        from tests.models import MODELS

        return MODELS[name]()
    if suite == "onnx-light":
        import numpy as np
        import onnx

        path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
        from tests.frontends.test_onnx_models import light_input

        _, x = light_input(path)
        return str(path), (np.asarray(x),)
    # tests/models/ holds test modules beside tests/models.py, imported by pytest from their folder
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    if suite == "vision":
        from test_vision_audio_models import build

        module, example = build(name)
        return module, (example,)
    from test_text_models import MODELS

    torch.manual_seed(0)
    return MODELS[name]()


def child(case: str, with_llvm: bool) -> dict:
    import slimgraph
    from slimgraph.backends.opencl import device_name

    quantized = case.startswith("int8:")
    model, inputs = _source(case.removeprefix("int8:"))
    feeds = [x.numpy() if hasattr(x, "numpy") else x for x in inputs]
    options = {"pipeline": INT8_PIPELINE, "calibration_data": [tuple(feeds)]} if quantized else {}
    row: dict = {"case": case, "device": device_name()}
    if with_llvm:
        start = time.perf_counter()
        cpu = slimgraph.compile(model, inputs, target="llvm", **options)
        row["llvm_build_s"] = time.perf_counter() - start
        row["llvm_error"] = _error(cpu(*feeds), cpu.ir.run(*feeds))
    start = time.perf_counter()
    gpu = slimgraph.compile(model, inputs, target="opencl", **options)
    row["opencl_build_s"] = time.perf_counter() - start
    start = time.perf_counter()
    got = gpu(*feeds)
    row["opencl_first_call_s"] = time.perf_counter() - start
    reference = gpu.ir.run(*feeds)
    row["reference_max"] = max(float(abs(r).max()) for r in reference if r.size)
    row["opencl_error"] = _error(got, reference)
    row["kernels"] = len(gpu.kernels)
    return row


def _error(got, reference) -> float:
    import numpy as np

    got = got if isinstance(got, tuple) else (got,)
    worst = 0.0
    for g, r in zip(got, reference):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        scale = float(np.abs(r).max()) if r.size else 0.0
        worst = max(worst, float(np.abs(g - r).max()) / (scale or 1.0) if r.size else 0.0)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated substrings of the cases to run")
    parser.add_argument("--llvm", action="store_true", help="also build and check each model for llvm")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.llvm)), flush=True)
        return
    chosen = [c for c in cases() if not args.only or any(s in c for s in args.only.split(","))]
    rows = []
    for case in chosen:
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", case, *(["--llvm"] if args.llvm else [])],
                                  capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            row = json.loads(lines[-1][7:]) if lines else {
                "case": case, "failure": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        except subprocess.TimeoutExpired:
            row = {"case": case, "failure": f"timed out after {args.timeout:.0f} s"}
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(_line(row), flush=True)
    path = RESULTS / "opencl_models.json"
    ran = {r["case"] for r in rows}
    earlier = [r for r in (json.loads(path.read_text()) if path.exists() else []) if r["case"] not in ran]
    order = {c: i for i, c in enumerate(cases())}
    rows = sorted(earlier + rows, key=lambda r: order.get(r["case"], len(order)))
    print()
    print(table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))


def _line(row: dict) -> str:
    if "failure" in row:
        return f"{row['case']}: FAILED {row['failure']}"
    ok = "ok" if row["opencl_error"] <= BAR else "ABOVE 1e-4"
    llvm = f", llvm {row['llvm_error']:.2e}" if "llvm_error" in row else ""
    return (f"{row['case']}: opencl {row['opencl_error']:.2e} ({ok}){llvm}, {row['kernels']} kernels, "
            f"opencl build {row['opencl_build_s']:.0f} s + first call {row['opencl_first_call_s']:.0f} s")


def table(rows: list[dict]) -> str:
    lines = ["| model | largest output | llvm error | opencl error | within 1e-4 | kernels | opencl build s "
             "| first call s |", "| --- | ---: | ---: | ---: | :---: | ---: | ---: | ---: |"]
    for r in rows:
        if "failure" in r:
            lines.append(f"| {r['case']} | | | | FAILED: {r['failure']} | | | |")
            continue
        llvm = f"{r['llvm_error']:.1e}" if "llvm_error" in r else "-"
        lines.append(f"| {r['case']} | {r['reference_max']:.3g} | {llvm} | {r['opencl_error']:.1e} | "
                     f"{'yes' if r['opencl_error'] <= BAR else 'NO'} | {r['kernels']} | {r['opencl_build_s']:.1f} | "
                     f"{r['opencl_first_call_s']:.1f} |")
    devices = {r["device"] for r in rows if "device" in r}
    if devices:
        lines.append(f"\nOpenCL device: {', '.join(sorted(devices))}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""ResNet-50, batch 1, on this CPU: slimgraph's lowered int8 model vs its float compile vs ONNX Runtime int8.

The model is the ONNX backend-test ResNet-50 (``light_resnet50.onnx``, shipped with
the onnx package). Both quantizers calibrate on the same 32 seeded samples:
slimgraph (int8, per-channel weights, min-max) and onnxruntime.quantization
(static QDQ, per-channel). Prints a table; writes benchmarks/results/quant_resnet50.json.

    python benchmarks/quant_resnet50.py [--samples 32] [--runs 20] [--skip-tvm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from slimgraph.timing import measure


def _timeit(fn, runs: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call (slimgraph's timing loop)."""
    return measure(fn, runs=runs, warmup=1).median_ms / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--skip-tvm", action="store_true", help="calibration and ONNX Runtime only")
    args = parser.parse_args()

    import onnxruntime as ort
    from onnxruntime import quantization as oq

    from slimgraph.api import import_model
    from slimgraph.passes import run_pipeline
    from slimgraph.passes.calibrate import calibrate
    from slimgraph.passes.lower_quantized import LowerQuantized
    from slimgraph.passes.quantize import Quantize, quantize_graph

    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_resnet50.onnx")
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(args.samples)]
    x = samples[0]
    results: dict = {"model": "light_resnet50", "batch": 1, "machine": platform.processor() or platform.machine()}

    graph, _ = run_pipeline(import_model(path), "fold-constants,dce")
    start = time.perf_counter()
    table = calibrate(graph, samples, values=Quantize().activation_values(graph))
    results["calibration_seconds"] = time.perf_counter() - start
    print(f"calibration of {args.samples} samples: {results['calibration_seconds']:.1f} s", flush=True)
    qdq = quantize_graph(graph, table)
    lowered = LowerQuantized()(qdq)

    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(path)
        input_name = model.graph.input[0].name
        float_path, int8_path = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
        onnx.save(model, float_path)

        class Reader(oq.CalibrationDataReader):
            def __init__(self):
                self.it = iter({input_name: s} for s in samples)

            def get_next(self):
                return next(self.it, None)

        oq.quantize_static(float_path, int8_path, Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True)
        options = ort.SessionOptions()
        sessions = {
            "onnxruntime float": ort.InferenceSession(float_path, options, providers=["CPUExecutionProvider"]),
            "onnxruntime int8": ort.InferenceSession(int8_path, options, providers=["CPUExecutionProvider"]),
        }
        for name, session in sessions.items():
            results[name] = _timeit(lambda s=session: s.run(None, {input_name: x}), args.runs)
            print(f"{name}: {results[name] * 1e3:.2f} ms", flush=True)

    if not args.skip_tvm:
        from slimgraph.backends.tvm import build
        import slimgraph.backends.tvm.ops.quantized  # noqa: F401

        fused_float, _ = run_pipeline(graph, "fuse")
        fused_int8, _ = run_pipeline(lowered, "fuse")
        variants = {"slimgraph float": fused_float, "slimgraph int8 (lowered)": fused_int8}
        for name, g in variants.items():
            start = time.perf_counter()
            compiled = build(g, "llvm", {"N": 1})
            print(f"{name}: built in {time.perf_counter() - start:.0f} s", flush=True)
            results[name] = _timeit(lambda c=compiled: c(x), args.runs)
            print(f"{name}: {results[name] * 1e3:.2f} ms", flush=True)

    rows = [(k, v) for k, v in results.items() if isinstance(v, float) and k != "calibration_seconds"]
    print("\n| runtime | ms (median) |\n| --- | ---: |")
    for k, v in rows:
        print(f"| {k} | {v * 1e3:.2f} |")
    if "slimgraph int8 (lowered)" in results:
        int8 = results["slimgraph int8 (lowered)"]
        results["int8_vs_slimgraph_float"] = results["slimgraph float"] / int8
        results["int8_vs_onnxruntime_int8"] = results["onnxruntime int8"] / int8
        print(f"speed-up of lowered int8: x{results['int8_vs_slimgraph_float']:.2f} vs slimgraph float, "
              f"x{results['int8_vs_onnxruntime_int8']:.2f} vs ONNX Runtime int8")
    out = Path(__file__).parent / "results" / "quant_resnet50.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(results, indent=1))
    tmp_out.replace(out)


if __name__ == "__main__":
    main()

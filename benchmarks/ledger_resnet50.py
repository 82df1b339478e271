"""The ledger of ResNet-50 (the ONNX model zoo's light_resnet50 shipped with onnx) on this CPU.

No labels: each row gets top-1 agreement and max/mean output error against
the float model, on seeded random images. ``quantize`` calibrates on other
seeded random images. Prints the table and the warnings, writes
``benchmarks/results/ledger_resnet50.json`` and ``.png``.

    python benchmarks/ledger_resnet50.py [--pipeline P] [--images N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODEL = os.path.join(os.path.dirname(__import__("onnx").__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="fold-constants,fuse,quantize", help="the pipeline to account for")
    parser.add_argument("--images", type=int, default=8, help="random images for agreement (default 8)")
    parser.add_argument("--calibration", type=int, default=2, help="random images to calibrate on (default 2)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per row (default 10)")
    parser.add_argument("--name", default="ledger_resnet50", help="base name of the JSON and PNG files")
    args = parser.parse_args()

    import slimgraph.backends.tvm.ops.quantized  # noqa: F401 - registered here until the package imports it
    import slimgraph.passes.lower_quantized  # noqa: F401 - registered here until slimgraph.passes imports it
    import slimgraph.passes.quantize  # noqa: F401 - likewise
    from slimgraph.frontends import from_onnx
    from slimgraph.ledger import ledger

    start = time.perf_counter()
    graph = from_onnx(MODEL)
    shape = tuple(int(d) for d in graph.inputs[0].type.shape)
    images = np.random.default_rng(0).standard_normal((args.images, *shape[1:])).astype(np.float32)
    calib = np.random.default_rng(1).standard_normal((args.calibration, *shape[1:])).astype(np.float32)
    book = ledger(graph, (images[: shape[0]],), args.pipeline, eval_data=images, calibration_data=calib,
                  runs=args.runs, warmup=2, progress=True)
    print(book)
    print(f"\nledger run: {book.seconds:.0f} s (with import: {time.perf_counter() - start:.0f} s)")
    print(f"wrote {book.save_json(os.path.join(RESULTS, args.name + '.json'))}")
    print(f"wrote {book.save_chart(os.path.join(RESULTS, args.name + '.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

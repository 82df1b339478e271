"""The bf16 kernels layer by layer: float32, AVX512-BF16 ``vdpbf16ps`` and AMX tiles side by side.

ResNet-50's conv shapes and BERT-base's linear shapes (bias and ReLU or GELU in the epilogue,
as in the models) are each built three ways: float32 for ``llvm``, ``precision="bf16"`` for
``llvm`` (AMX where the host has it) and for ``llvm:cooperlake`` (AVX512-BF16 without AMX:
the ``vdpbf16ps`` kernel). Every contender runs on one thread and is timed by the CPU time of
that thread (``time.thread_time`` as :func:`slimgraph.timing.measure`'s clock), in interleaved
rounds: on a machine shared with other work, wall-clock times of parallel kernels mostly
measure the other work. Prints a table (fastest round's ms per contender, GFLOP/s, AMX's
speed-up over float32) and writes ``benchmarks/results/bf16_layers.json``.

    python benchmarks/bf16_layers.py [--rounds 5] [--runs 5] [--only conv|linear]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_models import RESULTS  # noqa: E402

#: (C_in, C_out, size, kernel, stride) of ResNet-50's distinct convs (the stem aside).
CONVS = [(64, 64, 56, 1, 1), (64, 64, 56, 3, 1), (64, 256, 56, 1, 1), (256, 64, 56, 1, 1),
         (128, 128, 56, 3, 2), (512, 128, 28, 1, 1), (128, 128, 28, 3, 1), (128, 512, 28, 1, 1),
         (256, 256, 14, 3, 1), (1024, 256, 14, 1, 1), (256, 1024, 14, 1, 1),
         (512, 512, 7, 3, 1), (2048, 512, 7, 1, 1), (512, 2048, 7, 1, 1)]
#: (rows, K, N) of BERT-base's linears at sequence 128.
LINEARS = [(128, 768, 768), (128, 768, 3072), (128, 3072, 768)]
CONTENDERS = {"fp32": ("llvm", "fp32"), "vdpbf16ps": ("llvm:cooperlake", "bf16"), "amx": ("llvm", "bf16")}


def _conv(c_in: int, c_out: int, size: int, kernel: int, stride: int, precision: str):
    from slimgraph.ir import Graph, TensorType
    from slimgraph.passes import FuseRegions, ToBf16

    rng = np.random.default_rng(0)
    g = Graph("conv")
    x = g.add_input("x", TensorType("f32", (1, c_in, size, size)))
    w = g.const(rng.standard_normal((c_out, c_in, kernel, kernel)).astype(np.float32) * 0.1)
    b = g.const(rng.standard_normal(c_out).astype(np.float32))
    half = kernel // 2
    g.set_outputs([g.call("relu", g.call("conv", x, w, b, strides=(stride, stride), pads=(half,) * 4))])
    flops = 2 * c_in * c_out * kernel * kernel * (-(-size // stride)) ** 2
    return FuseRegions()(ToBf16()(g) if precision == "bf16" else g), (1, c_in, size, size), flops


def _linear(rows: int, k: int, n: int, precision: str):
    from slimgraph.ir import Graph, TensorType
    from slimgraph.passes import FuseRegions, ToBf16

    rng = np.random.default_rng(0)
    g = Graph("linear")
    x = g.add_input("x", TensorType("f32", (1, rows, k)))
    w = g.const(rng.standard_normal((n, k)).astype(np.float32) * 0.1)
    b = g.const(rng.standard_normal(n).astype(np.float32))
    g.set_outputs([g.call("gelu", g.call("linear", x, w, b, trans_b=True))])
    return FuseRegions()(ToBf16()(g) if precision == "bf16" else g), (1, rows, k), 2 * rows * k * n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per contender and round")
    parser.add_argument("--only", choices=("conv", "linear"), help="one kind of layer")
    parser.add_argument("--json", default=str(RESULTS / "bf16_layers.json"))
    args = parser.parse_args(argv)

    from slimgraph.backends.tvm import build
    from slimgraph.backends.tvm.targets import parse_target
    from slimgraph.timing import measure

    host = parse_target("llvm")
    contenders = {name: spec for name, spec in CONTENDERS.items() if name != "amx" or host.has("amx")}
    layers = ([("conv", s, _conv) for s in CONVS] if args.only != "linear" else []) + \
             ([("linear", s, _linear) for s in LINEARS] if args.only != "conv" else [])
    rows = []
    print("| layer | " + " | ".join(f"{c} ms | {c} GFLOP/s" for c in contenders) + " | amx / fp32 |")
    print("| --- | " + " | ".join("---: | ---:" for _ in contenders) + " | ---: |")
    for kind, shape, make in layers:
        models, flops = {}, 0
        for name, (target, precision) in contenders.items():
            graph, in_shape, flops = make(*shape, precision)
            models[name] = build(graph, target, {})
        x = np.random.default_rng(1).standard_normal(in_shape).astype(np.float32)
        best = {name: float("inf") for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                t = measure(lambda m=model: m(x, threads=1), runs=args.runs, warmup=1, clock=time.thread_time,
                            max_cv=None)
                best[name] = min(best[name], min(t.times_ms))
        row = {"kind": kind, "shape": list(shape), "flops": flops, "ms": best,
               "gflops": {n: flops / (ms / 1e3) / 1e9 for n, ms in best.items()}}
        rows.append(row)
        ratio = f"{best['fp32'] / best['amx']:.2f}" if "amx" in best else "-"
        print(f"| {kind} {'x'.join(map(str, shape))} | "
              + " | ".join(f"{best[n]:.3f} | {row['gflops'][n]:.0f}" for n in contenders) + f" | {ratio} |",
              flush=True)
    if "amx" in contenders:
        speedups = [r["ms"]["fp32"] / r["ms"]["amx"] for r in rows]
        print(f"\ngeometric mean amx / fp32: {float(np.exp(np.mean(np.log(speedups)))):.2f} "
              f"(one thread, CPU time, fastest of {args.rounds} rounds of {args.runs} calls)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"threads": 1, "clock": "thread_time", "rounds": args.rounds,
                                           "runs": args.runs, "layers": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does compression pay in the deployed model? Bytes shipped, bytes resident, latency, agreement (issue 16).

Two parts, both on ``llvm`` for this CPU:

1. ``sparse``: one BERT-base feed-forward layer (x [128, 768] @ W.T, W [3072, 768]
   plus bias) pruned by magnitude (unstructured), by 1x16 blocks, and by 1x16
   blocks with every output row keeping as many (``scope=row``) at densities
   from 5% to 60%, compiled with the sparse kernel (forced past its density bound,
   ``slimgraph.ir.sparse.MAX_DENSITY``) and dense (``weights="decoded"``),
   the two timed interleaved. The crossover is the highest density at which the
   sparse kernel still wins.
2. ``models``: BERT-base's encoder (``transformers.BertConfig()`` shapes, random
   weights, ``--bert-layers`` of its 12 layers, input hidden states [1, 128, 768]:
   the linear layers, attention and norms, no embedding tables) and ResNet-50 (the
   ONNX backend-test ``light_resnet50.onnx``, batch 1) as float and after each of
   k-means 4-bit (``share-weights{bits=4}``), int4 and log2 (``quantize`` with int8
   activations calibrated on 4 seeded inputs, then ``lower-quantized``) and 90%
   magnitude sparsity; each compressed one built three times: ``weights="compressed"``,
   ``weights="decoded"`` and ``weights="auto"`` (the default: per kernel the form measured
   faster, into a fresh cache, so its build time includes the measuring; a second
   ``auto`` build, which finds every decision cached, is timed too). Per model: the saved folder's
   ``params.npz`` bytes, the weights resident after ``slimgraph.load`` of that
   folder (``CompiledModel.param_bytes``), the IR's weight bytes (``size_report``),
   the median latency (``CompiledModel.benchmark``, the best median of
   ``--rounds`` interleaved rounds) and the largest output difference from the
   float model relative to its largest magnitude (ResNet-50 also top-1 agreement
   on its 4 inputs).

Prints Markdown tables; writes ``benchmarks/results/compression_pays.json``.

    python benchmarks/compression_pays.py [--parts sparse,models] [--models bert,resnet50]
                                          [--bert-layers 2] [--rounds 3] [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
RESULTS = Path(__file__).resolve().parent / "results"
SEQ, HIDDEN, FFN = 128, 768, 3072
DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6)
#: (method, scope) of the pruned layers: unstructured, 1x16 blocks, 1x16 blocks balanced per row.
PRUNINGS = (("magnitude", "layer"), ("block", "layer"), ("block", "row"))


def _best_medians(models: dict, inputs: list, rounds: int, runs: int) -> dict[str, float]:
    """Each model's best median latency (ms) over ``rounds`` rounds that time every model in turn."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, model in models.items():
            ms = model.benchmark(*inputs, warmup=3, runs=runs, kernel_repeat=1).median_ms
            best[name] = min(best.get(name, float("inf")), ms)
    return best


def sparse_part(rounds: int, runs: int) -> dict:
    from slimgraph.backends.tvm import build
    from slimgraph.ir import sparse
    from slimgraph.ir import Graph, TensorType
    from slimgraph.passes.prune import Prune

    rng = np.random.default_rng(0)
    g = Graph("ffn")
    x = g.add_input("x", TensorType("f32", (SEQ, HIDDEN)))
    w = g.const((rng.standard_normal((FFN, HIDDEN)) * 0.02).astype(np.float32), name="fc.weight")
    b = g.const((rng.standard_normal(FFN) * 0.02).astype(np.float32), name="fc.bias")
    g.set_outputs([g.call("linear", x, w, b, trans_b=True)])
    xv = rng.standard_normal((SEQ, HIDDEN)).astype(np.float32)
    bound, sparse.MAX_DENSITY = sparse.MAX_DENSITY, 1.0
    rows = []
    try:
        for method, scope in PRUNINGS:
            for density in DENSITIES:
                pruned = Prune(method=method, scope=scope, sparsity=round(1 - density, 4))(g)
                models = {"sparse": build(pruned, "llvm", {}, weights="compressed"),
                          "dense": build(pruned, "llvm", {}, weights="decoded")}
                ms = _best_medians(models, [xv], rounds, runs)
                error = float(np.abs(models["sparse"](xv) - models["dense"](xv)).max())
                rows.append({"pruning": f"{method}, scope={scope}", "density": density,
                             "sparse_kernel": any("sparse_matmul" in k.tir for k in models["sparse"].kernels),
                             "sparse_ms": ms["sparse"], "dense_ms": ms["dense"],
                             "speedup": ms["dense"] / ms["sparse"], "sparse_bytes": models["sparse"].param_bytes,
                             "dense_bytes": models["dense"].param_bytes, "max_abs_diff": error})
                r = rows[-1]
                print(f"{rows[-1]['pruning']:22s} density {density:4.0%}: sparse {r['sparse_ms']:7.3f} ms, dense {r['dense_ms']:7.3f} ms "
                      f"(x{r['speedup']:.2f}), {r['sparse_bytes']:,} vs {r['dense_bytes']:,} bytes", flush=True)
    finally:
        sparse.MAX_DENSITY = bound
    # a weight whose sparse form is no smaller stays dense even when forced: no kernel to compare
    crossover = {m: max((r["density"] for r in rows if r["pruning"] == m and r["sparse_kernel"] and r["speedup"] > 1),
                        default=None) for m in dict.fromkeys(r["pruning"] for r in rows)}
    print("\n| pruning | density | sparse ms | dense ms | speed-up | sparse bytes | dense bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        kernel = "" if r["sparse_kernel"] else " (stays dense)"
        print(f"| {r['pruning']} | {r['density']:.0%}{kernel} | {r['sparse_ms']:.3f} | {r['dense_ms']:.3f} | "
              f"x{r['speedup']:.2f} | {r['sparse_bytes']:,} | {r['dense_bytes']:,} |")
    print(f"\nhighest density at which the sparse kernel wins: {crossover}")
    return {"rows": rows, "crossover_density": crossover, "bound": bound}


def _bert(layers: int):
    import torch
    import transformers

    config = transformers.BertConfig(num_hidden_layers=layers)
    encoder = transformers.BertModel(config, add_pooling_layer=False).encoder.eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, hidden):
            return self.encoder(hidden)[0]

    gen = torch.Generator().manual_seed(0)
    samples = [torch.randn(1, SEQ, HIDDEN, generator=gen).numpy() for _ in range(4)]
    return Encoder().eval(), samples


def _resnet50():
    import onnx

    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
    rng = np.random.default_rng(0)
    return path, [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(4)]


#: variant -> pipeline between the import's default simplification and ``fuse``.
VARIANTS = {
    "float": "",
    "kmeans 4-bit": "share-weights{bits=4}",
    "int4": "quantize{weights=int4},lower-quantized",
    "log2": "quantize{weights=log2},lower-quantized",
    "sparse 90%": "prune{sparsity=0.9}",
}


def model_part(name: str, layers: int, rounds: int, runs: int) -> list[dict]:
    import torch

    import slimgraph
    from slimgraph.analysis import size_report
    from slimgraph.api import import_model
    from slimgraph.backends.tvm import build
    from slimgraph.passes import PassManager, run_pipeline
    from slimgraph.passes.context import PassContext

    model, samples = _bert(layers) if name == "bert" else _resnet50()
    example = (torch.from_numpy(samples[0]),) if name == "bert" else (samples[0],)
    graph = import_model(model, example)
    base, _ = run_pipeline(graph, "canonicalize,fold-constants,cse,dce")
    built, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for variant, passes in VARIANTS.items():
            steps = [p for p in (passes, "fuse") if p]
            optimized = PassManager(",".join(steps)).run(base, PassContext(calibration_data=[[s] for s in samples]))
            for form in ("compressed",) if variant == "float" else ("compressed", "decoded", "auto"):
                start = time.perf_counter()
                compiled = build(optimized, "llvm", {}, weights=form)
                seconds = time.perf_counter() - start
                again_s = None
                if form == "auto":  # every decision is cached now: this build measures nothing
                    start = time.perf_counter()
                    build(optimized, "llvm", {}, weights=form)
                    again_s = time.perf_counter() - start
                folder = compiled.save(Path(tmp) / f"{variant}-{form}".replace(" ", "_").replace("%", ""))
                loaded = slimgraph.load(folder)
                label = variant if variant == "float" else f"{variant} ({form})"
                built[label] = loaded
                forms = list(loaded.weight_forms.values())
                rows.append({"model": name, "variant": variant, "weights": form, "label": label,
                             "ir_bytes": size_report(optimized).weight_bytes,
                             "artifact_bytes": (folder / "params.npz").stat().st_size,
                             "resident_bytes": loaded.param_bytes, "build_s": seconds, "rebuild_s": again_s,
                             "forms": {f: forms.count(f) for f in ("compressed", "decoded") if f in forms}})
                print(f"{name} {label}: built in {seconds:.0f} s"
                      + (f" (again, cached: {again_s:.0f} s)" if again_s is not None else "")
                      + f", forms {rows[-1]['forms']}", flush=True)
        latency = _best_medians(built, samples[:1], rounds, runs)
        outputs = {label: np.stack([np.asarray(m(s)) for s in samples]) for label, m in built.items()}
    ref = outputs["float"]
    for row in rows:
        out = outputs[row["label"]]
        row["ms"] = latency[row["label"]]
        row["rel_error"] = float(np.abs(out - ref).max() / np.abs(ref).max())
        if name == "resnet50":
            row["top1_agreement"] = float((out.argmax(-1) == ref.argmax(-1)).mean() * 100)
    float_row = rows[0]
    print(f"\n{name}" + (f" ({layers} encoder layers)" if name == "bert" else "") + ", batch 1:")
    print("| variant | IR bytes | saved params.npz | resident after load | ms | vs float | vs decoded | max rel. error "
          "| kernel forms | build s (cached) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        twin = next((r for r in rows if r["variant"] == row["variant"] and r["weights"] == "decoded"), None)
        vs_decoded = f"x{twin['ms'] / row['ms']:.2f}" if twin is not None and twin is not row else ""
        print(f"| {row['label']} | {row['ir_bytes']:,} | {row['artifact_bytes']:,} | {row['resident_bytes']:,} | "
              f"{row['ms']:.2f} | x{float_row['ms'] / row['ms']:.2f} | {vs_decoded} | {row['rel_error']:.3g} | "
              f"{', '.join(f'{n} {f}' for f, n in row['forms'].items())} | {row['build_s']:.0f}"
              + (f" ({row['rebuild_s']:.0f})" if row["rebuild_s"] is not None else "") + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="sparse,models")
    parser.add_argument("--models", default="bert,resnet50")
    parser.add_argument("--bert-layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    # weights="auto" measures into a cache of this run's own, so its first build's cost is the real one
    os.environ["SLIMGRAPH_CACHE_DIR"] = tempfile.mkdtemp(prefix="slimgraph-cache-")
    results: dict = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                     "bert_layers": args.bert_layers}
    parts = args.parts.split(",")
    if "sparse" in parts:
        results["sparse"] = sparse_part(args.rounds, args.runs)
    if "models" in parts:
        results["models"] = [row for name in args.models.split(",")
                             for row in model_part(name, args.bert_layers, args.rounds, args.runs)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "compression_pays.json"
    earlier = json.loads(out.read_text()) if out.exists() else {}  # a run of one part keeps the other's
    out.write_text(json.dumps({**earlier, **results}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

"""Benchmark: depth variants (residual blocks skipped) of a ResNet-style model and a transformer.

Each model is trained (seeded), imported with a symbolic batch, and its
residual blocks ranked by :func:`slimgraph.runtime.depth.depth_sensitivity` (top-1
agreement with the full model on 512 training inputs when each block alone is
skipped). For each depth (the fraction of residual blocks kept) the variant
skips the least sensitive blocks (:func:`slimgraph.runtime.depth.depth_variant`,
batch norms re-estimated on those inputs), is fine-tuned by distillation from
the full model (``slimgraph.finetune``, ``--epochs``), and compiled with TVM
for batch ``--batch``. Latencies are measured interleaved (the lowest of 5
rounds of medians, :func:`slimgraph.runtime.narrow.measure_variants`), so
every variant sees the same machine. Prints a Markdown table per model and
writes ``benchmarks/results/depth_variants.json``.

    python benchmarks/depth_variants.py [--depths 1,0.75,0.5,0.25] [--batch 32] [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimgraph import compile as sg_compile, finetune  # noqa: E402
from slimgraph.frontends import from_torch  # noqa: E402
from slimgraph.runtime import Variant  # noqa: E402
from slimgraph.runtime.depth import blocks_to_skip, depth_sensitivity, depth_variant  # noqa: E402
from slimgraph.runtime.narrow import measure_variants, variant_accuracy  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def resnet(width: int, blocks: int):
    """(name, trained module, (x_train, y_train), (x_test, y_test)) for the digits ResNet."""
    from tests import digits

    torch.manual_seed(0)
    model = digits.train(digits.DigitsResNet(width, blocks), digits.digits_data(), epochs=4)
    d = digits.digits_data()
    return f"digits-resnet(w={width}, blocks={blocks})", model, (d.x_train, d.y_train), (d.x_test, d.y_test)


def transformer(dim: int, depth: int):
    from tests import digits, tokens

    torch.manual_seed(0)
    model = digits.train(tokens.TokenClassifier(dim=dim, hidden=2 * dim, depth=depth), tokens.token_data(),
                         epochs=16, batch=128)
    d = tokens.token_data()
    return f"transformer(dim={dim}, blocks={depth})", model, (d.x_train, d.y_train), (d.x_test, d.y_test)


def run_model(name, module, train, test, depths, batch, epochs, runs, threads) -> list[dict]:
    x_train, y_train = train
    graph = from_torch(module, (torch.from_numpy(x_train[:4]),), dynamic_batch=True)
    samples = [x_train[i : i + 128] for i in range(0, 512, 128)]
    table = depth_sensitivity(graph, np.concatenate(samples))
    print(f"\n## {name}: {len(table.drops)} residual blocks\n\n{table}\n")
    rows, variants, feeds = [], [], {}
    for depth in depths:
        skipped = blocks_to_skip(depth, table)
        shallow = depth_variant(graph, depth, table, samples)
        tuned = shallow if not skipped or not epochs else finetune(shallow, train, epochs=epochs, progress=False)
        compiled = sg_compile(tuned, None, pipeline="default", shapes={graph.inputs[0].type.shape[0]: batch})
        variant = Variant(f"d{round(depth * 100)}", compiled, depth=depth, threads=threads)
        variants.append(variant)
        feeds[variant.name] = [test[0][:batch]]
        rows.append({"model": name, "depth": depth, "skipped": [table.layers[s] for s in skipped],
                     "accuracy_skipped": _accuracy(shallow, test), "accuracy": variant_accuracy(variant, *test),
                     "flops": compiled.flops})
    measure_variants(variants, feeds, runs=runs)
    for row, variant in zip(rows, variants):
        row["latency_ms"] = variant.latency_ms
        row["speedup"] = variants[0].latency_ms / variant.latency_ms
    print("| depth | blocks kept | skipped branches | accuracy (skipped, BN re-estimated) | + KD | FLOPs | "
          "latency ms | speed-up |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        kept = len(table.drops) - len(row["skipped"])
        print(f"| {row['depth']:g} | {kept} | {', '.join(row['skipped']) or '-'} | {row['accuracy_skipped']:.2f} | "
              f"{row['accuracy']:.2f} | x{row['flops'] / rows[0]['flops']:.2f} | {row['latency_ms']:.3f} | "
              f"{row['speedup']:.2f}x |")
    return rows


def _accuracy(graph, test) -> float:
    x, y = test
    return float((graph.run(x)[0].argmax(axis=1) == y).mean() * 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,0.75,0.5,0.25")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="KD fine-tuning epochs per variant (0: none)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="threads per call (default: one per core)")
    parser.add_argument("--resnet-width", type=int, default=32)
    parser.add_argument("--resnet-blocks", type=int, default=6)
    parser.add_argument("--dim", type=int, default=32, help="transformer width")
    parser.add_argument("--transformer-blocks", type=int, default=4)
    parser.add_argument("--out", default=str(RESULTS / "depth_variants.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    depths = sorted((float(d) for d in args.depths.split(",")), reverse=True)
    rows = []
    for name, module, train, test in (resnet(args.resnet_width, args.resnet_blocks),
                                      transformer(args.dim, args.transformer_blocks)):
        rows += run_model(name, module, train, test, depths, args.batch, args.epochs, args.runs, args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_count": os.cpu_count(), "batch": args.batch, "threads": args.threads,
                               "epochs": args.epochs, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

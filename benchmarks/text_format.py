"""Benchmark: printing and parsing a 10,000-node graph.

Prints a table and writes benchmarks/results/text_format.json. Each figure is
the median of several runs, so one noisy run on a shared machine does not
decide it.

    python benchmarks/text_format.py [--nodes 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from slimgraph.ir import Graph, TensorType, parse, print_graph
from slimgraph.ir.printer import collect_payloads
from slimgraph.timing import measure


def big_graph(nodes: int) -> Graph:
    """A residual chain of ``nodes`` nodes mixing ops, attributes, and small and large constants."""
    rng = np.random.default_rng(0)
    g = Graph("big")
    x = g.add_input("x", TensorType("f32", ("N", 64)))
    y = x
    while len(g.nodes) < nodes:
        i = len(g.nodes)
        w = g.const(rng.standard_normal((64, 64)).astype(np.float32), name=f"layer{i}.weight")
        b = g.const(rng.standard_normal(64).astype(np.float32) if i % 2 else np.zeros(8, np.float32)[:1], name=f"layer{i}.bias")
        h = g.call("linear", y, w, loc=f"layer{i}")
        h = g.call("add", h, b)
        h = g.call("leaky_relu", h, alpha=0.1)
        h = g.call("clip", h, min=-6.0, max=6.0)
        y = g.call("add", y, h)
    g.set_outputs([y])
    return g


def _median_time(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls (the first call is timed apart: slimgraph's timing loop)."""
    return measure(fn, runs=repeat, warmup=0).median_ms / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "text_format.json"))
    args = parser.parse_args()

    graph = big_graph(args.nodes)
    text = print_graph(graph)
    payloads = collect_payloads(graph)
    assert parse(text, payloads) == graph  # the figures mean nothing if the round trip is wrong
    results = {
        "nodes": len(graph.nodes),
        "text_bytes": len(text),
        "print_s": _median_time(lambda: print_graph(graph), args.repeat),
        "parse_s": _median_time(lambda: parse(text, payloads), args.repeat),
        "repeat": args.repeat,
    }
    print(f"| graph | nodes | text KiB | print (s) | parse (s) |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    print(f"| big residual chain | {results['nodes']} | {results['text_bytes'] / 1024:.0f} | "
          f"{results['print_s']:.3f} | {results['parse_s']:.3f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

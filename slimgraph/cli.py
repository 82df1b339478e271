"""The ``slimgraph`` command.

Subcommands:

- ``slimgraph demo``: build the built-in model in the IR, print it, verify it and run it;
- ``slimgraph dump MODEL [-o FILE]``: print the IR of an ONNX file, an IR file or a
  ``package.module:factory`` returning ``(module, example_inputs)``.

Every user error ends with one line ``slimgraph: error: ...`` and exit status 2.

Example::

    $ slimgraph dump model.onnx -o model.sg
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

from slimgraph.errors import SlimgraphError


def _cmd_demo(args: argparse.Namespace) -> int:
    from slimgraph.demo import demo_inputs, demo_model

    graph = demo_model()
    graph.verify()
    if not args.quiet:
        print(graph)
    inputs = demo_inputs(batch=args.batch)
    start = time.perf_counter()
    (probs,) = graph.run(*inputs)
    elapsed = time.perf_counter() - start
    print(f"@{graph.name}: {len(graph.nodes)} nodes, verified; reference interpreter, batch {args.batch}: "
          f"{elapsed * 1e3:.1f} ms; top-1 classes {probs.argmax(axis=1).tolist()}")
    return 0


def _cmd_dump(args: argparse.Namespace) -> int:
    from slimgraph.frontends.model_spec import load_model

    graph = load_model(args.model, dynamic_batch=args.dynamic_batch)
    graph.verify()
    if args.output:
        graph.save(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(graph, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``slimgraph`` command."""
    parser = argparse.ArgumentParser(
        prog="slimgraph",
        description="A model-optimization compiler: trace, slim, fuse and compile neural networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="build the built-in model in the IR, print, verify and run it")
    demo.add_argument("--batch", type=int, default=1, help="batch size to run (default 1)")
    demo.add_argument("--quiet", action="store_true", help="do not print the IR")
    demo.set_defaults(func=_cmd_demo)

    dump = sub.add_parser("dump", help="print the IR of a model")
    dump.add_argument("model", help="an .onnx file, an IR text file, or package.module:factory")
    dump.add_argument("-o", "--output", help="write the IR here (large constants go to FILE.weights)")
    dump.add_argument("--dynamic-batch", action="store_true", help="keep the batch dimension symbolic (N)")
    dump.set_defaults(func=_cmd_dump)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slimgraph`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except SlimgraphError as exc:
        print(f"slimgraph: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

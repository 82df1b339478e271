"""The ``slimgraph`` command.

Subcommands:

- ``slimgraph demo``: the built-in model end to end: its IR, what each pass did, the
  compiled model's agreement with the interpreter and its per-kernel benchmark;
- ``slimgraph dump MODEL [-o FILE]``: print the IR of a model: ``demo``, an IR file
  (``.sg``), an ONNX file or a ``package.module:factory`` returning
  ``(module, example_inputs)``;
- ``slimgraph passes``: every registered pass with its doc and options, and the named pipelines;
- ``slimgraph opt MODEL --pipeline P [--dump-dir D] [--stats] [-o FILE]``: run a pipeline;
- ``slimgraph compile MODEL --target T --pipeline P [--dump-ir FILE] -o DIR``: compile with TVM;
- ``slimgraph bench MODEL_OR_DIR [--runs N | --duration S] [--batch B] [--concurrency C] [--json F]``:
  first-call latency, median, p90/p95/p99, mean and its variation, throughput, and the per-kernel
  table (calls, total and mean time, share, GFLOP/s);
- ``slimgraph ledger MODEL --pipeline P [--data FILE] [--json F] [--png F]``: what each pass buys,
  measured on the compiled model.

Every user error ends with one line ``slimgraph: error: ...`` and exit status 2.

Example::

    $ slimgraph dump model.onnx -o model.sg
    $ slimgraph opt model.sg --pipeline "fold-constants,fuse{max-ops=8}" --stats
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Sequence

from slimgraph.errors import SlimgraphError


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from slimgraph.api import compile
    from slimgraph.demo import demo_inputs, demo_model
    from slimgraph.passes import run_pipeline

    graph = demo_model()
    graph.verify()
    if not args.quiet:
        print(graph)
    inputs = demo_inputs(batch=args.batch)
    optimized, report = run_pipeline(graph, args.pipeline, stats=True, sample_inputs=inputs)
    print(f"passes ({args.pipeline}):\n{report}\n")
    if not args.quiet:
        print(optimized)
    model = compile(optimized, inputs, target=args.target, pipeline=None, progress=True)
    (expected,) = graph.run(*inputs)
    got = model(*inputs)
    error = float(np.max(np.abs(got - expected)))
    print(f"{model}: max |compiled - interpreter| = {error:.2e}; top-1 classes {got.argmax(axis=1).tolist()}")
    print(model.benchmark(*inputs).table())
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


def _cmd_passes(args: argparse.Namespace) -> int:
    from slimgraph.passes import named_pipelines, registered_passes

    for name, info in registered_passes().items():
        print(f"{name}\n    {info.doc}")
        for opt in info.options:
            print(f"    {opt.name}: {opt.type_name} = {opt.format(opt.default)}    {opt.doc}")
    print("\npipelines:")
    for name, (text, doc) in named_pipelines().items():
        print(f"{name} = {text}\n    {doc}")
    return 0


def _cmd_opt(args: argparse.Namespace) -> int:
    from slimgraph.frontends.model_spec import load_model
    from slimgraph.passes import run_pipeline

    graph = load_model(args.model, dynamic_batch=args.dynamic_batch)
    out, report = run_pipeline(
        graph,
        args.pipeline,
        dump_dir=args.dump_dir,
        stats=args.stats,
        verify=True,
        sample_inputs="random" if args.check_numerics else None,
    )
    print(report, file=sys.stderr)
    if args.stats:
        from slimgraph.analysis import compare_sizes

        print(compare_sizes(graph, out), file=sys.stderr)
    if args.output:
        out.save(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    elif not args.quiet:
        print(out, end="")
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from slimgraph.api import compile

    model = compile(args.model, target=args.target, pipeline=args.pipeline, dump_ir=args.dump_ir, progress=True,
                    tune=args.tune, database=args.database, precision=args.precision, weights=args.weights)
    if args.output:
        model.save(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    print(model)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from slimgraph.api import compile, load

    if os.path.isdir(args.model):
        model = load(args.model)
    else:
        from slimgraph.frontends.model_spec import load_model

        # with --batch the model's batch is imported symbolic and bound to it
        graph = load_model(args.model, dynamic_batch=args.batch is not None)
        first = graph.inputs[0].type.shape[0] if graph.inputs and graph.inputs[0].type.shape else None
        shapes = {first: args.batch} if args.batch and isinstance(first, str) else None
        model = compile(graph, target=args.target, shapes=shapes, progress=True)
    result = model.benchmark(warmup=args.warmup, runs=args.runs, duration_s=args.duration, batch=args.batch,
                             concurrency=args.concurrency, kernel_repeat=args.kernel_repeat, json_path=args.json)
    print(result.table())
    if args.json:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _cmd_ledger(args: argparse.Namespace) -> int:
    from slimgraph.frontends.model_spec import load_model
    from slimgraph.ir.interpreter import random_inputs
    from slimgraph.ledger import ledger, load_data

    graph = load_model(args.model, dynamic_batch=args.dynamic_batch)
    evalset, calibration = load_data(args.data) if args.data else (None, None)
    first = graph.inputs[0].type.shape[0] if graph.inputs and graph.inputs[0].type.shape else 1
    batch = args.batch or (first if isinstance(first, int) else 1)
    examples = [x[:batch] for x in evalset.inputs] if evalset is not None else random_inputs(graph, dim=batch)
    book = ledger(
        graph, examples, args.pipeline, target=args.target, eval_data=evalset, calibration_data=calibration,
        runs=args.runs, warmup=args.warmup, max_metric_drop=args.max_drop, progress=True,
    )
    print(book)
    for path, save in ((args.json, book.save_json), (args.png, book.save_chart)):
        if path:
            print(f"wrote {save(path)}", file=sys.stderr)
    return 0


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (argparse names the option when it fails)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}, the least it may be")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} is not a finite number of seconds > 0")
    return value


def _points(text: str) -> float:
    """An argparse type: a finite number >= 0 (points of the metric)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} is not a finite number >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``slimgraph`` command."""
    parser = argparse.ArgumentParser(
        prog="slimgraph",
        description="A model-optimization compiler: trace, slim, fuse and compile neural networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the built-in model end to end: IR, passes, TVM compile, benchmark")
    demo.add_argument("--batch", type=_count(1), default=1, help="batch size to run (default 1)")
    demo.add_argument("--pipeline", default="default", help="pass pipeline (default: the default pipeline)")
    demo.add_argument("--target", default="llvm", help="compile target (default llvm, this CPU)")
    demo.add_argument("--quiet", action="store_true", help="do not print the IR")
    demo.set_defaults(func=_cmd_demo)

    dump = sub.add_parser("dump", help="print the IR of a model")
    dump.add_argument("model", help="an .onnx file, an IR text file, or package.module:factory")
    dump.add_argument("-o", "--output", help="write the IR here (large constants go to FILE.weights)")
    dump.add_argument("--dynamic-batch", action="store_true", help="keep the batch dimension symbolic (N)")
    dump.set_defaults(func=_cmd_dump)

    passes = sub.add_parser("passes", help="list the registered passes, their options and the named pipelines")
    passes.set_defaults(func=_cmd_passes)

    opt = sub.add_parser("opt", help="run a pass pipeline over a model and print or write the result")
    opt.add_argument("model", help="demo, an IR text file, an .onnx file, or package.module:factory")
    opt.add_argument("--pipeline", default="default", help="pipeline text, e.g. 'fold-constants,fuse{max-ops=8}'")
    opt.add_argument("--dump-dir", help="write the IR after every pass into this folder (numbered files)")
    opt.add_argument("--stats", action="store_true", help="report nodes, parameters, bytes and FLOPs per pass")
    opt.add_argument("--check-numerics", action="store_true",
                     help="run the reference interpreter before and after each pass on random inputs")
    opt.add_argument("--dynamic-batch", action="store_true", help="keep the batch dimension symbolic (N)")
    opt.add_argument("-o", "--output", help="write the optimized IR here instead of printing it")
    opt.add_argument("--quiet", action="store_true", help="print only the report")
    opt.set_defaults(func=_cmd_opt)

    comp = sub.add_parser("compile", help="compile a model with TVM and save it")
    comp.add_argument("model", help="demo, an IR text file, an .onnx file, or package.module:factory")
    comp.add_argument("--target", default="llvm", help="llvm (this CPU), cuda[:sm_XY], opencl (default llvm)")
    comp.add_argument("--pipeline", default="default", help="pass pipeline run before lowering")
    comp.add_argument("--dump-ir", help="write the optimized IR here")
    comp.add_argument("-o", "--output", help="save the compiled model into this folder")
    comp.add_argument("--tune", type=_count(0), default=0, metavar="TRIALS", help="MetaSchedule trials (default 0: none)")
    comp.add_argument("--database", help="tuning records folder; later compiles reuse its records")
    comp.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                      help="bf16: convs and matmuls on bf16 operands, float32 sums (CPUs with AMX or AVX512-BF16)")
    comp.add_argument("--weights", choices=("auto", "compressed", "decoded"), default="auto",
                      help="how compressed weights (shared, int4, log2, pruned) are held: compressed and decoded in "
                           "the kernels, decoded and dense, or auto (default): per kernel, the faster of the two as "
                           "measured once on this machine")
    comp.set_defaults(func=_cmd_compile)

    bench = sub.add_parser("bench", help="benchmark a compiled model folder or a model: latency percentiles, "
                                         "throughput and the per-kernel table")
    bench.add_argument("model", help="a folder written by 'slimgraph compile -o', or a model as for compile")
    bench.add_argument("--target", default="llvm", help="target when compiling a model (default llvm)")
    bench.add_argument("--warmup", type=_count(0), default=5, help="untimed runs after the first call (default 5)")
    bench.add_argument("--runs", type=_count(1), help="timed runs (default 30; with --duration: at least this many)")
    bench.add_argument("--duration", type=_seconds, metavar="S", help="run for at least S seconds")
    bench.add_argument("--batch", type=_count(1), help="batch of the random inputs (default: the model's)")
    bench.add_argument("--concurrency", type=_count(1), default=1, help="threads calling the model at once (default 1)")
    bench.add_argument("--kernel-repeat", type=_count(1), default=10, help="timed runs of each kernel (default 10)")
    bench.add_argument("--json", help="write every figure (and each run's latency) as JSON here")
    bench.set_defaults(func=_cmd_bench)

    led = sub.add_parser("ledger", help="what each pass buys: size, FLOPs, compiled latency and accuracy after every pass")
    led.add_argument("model", help="demo, an IR text file, an .onnx file, or package.module:factory")
    led.add_argument("--pipeline", default="default", help="pipeline text; ';' between groups gives one row per group")
    led.add_argument("--data", help=".npz: x (or x0, x1, ...) inputs, optional y labels, optional calib inputs")
    led.add_argument("--target", default="llvm", help="compile target (default llvm, this CPU)")
    led.add_argument("--batch", type=_count(1), help="batch of the compiled model (default: the model's, else 1)")
    led.add_argument("--runs", type=_count(1), default=30, help="timed runs per row (default 30)")
    led.add_argument("--warmup", type=_count(0), default=5, help="untimed runs first (default 5)")
    led.add_argument("--max-drop", type=_points, default=1.0, help="warn when a pass costs more points of accuracy")
    led.add_argument("--dynamic-batch", action="store_true", help="keep the batch dimension symbolic (N)")
    led.add_argument("--json", help="write the ledger as JSON here")
    led.add_argument("--png", help="write the chart (latency and accuracy against bytes) here")
    led.set_defaults(func=_cmd_ledger)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    # before the work: a path that cannot be written must not fail after a long compile or ledger
    from slimgraph.arguments import check_writable_file, check_writable_folder
    from slimgraph.storage import check_save_target

    for name in ("output", "json", "png"):
        path = getattr(args, name, None)
        if path:
            flag = "-o" if name == "output" else f"--{name}"
            if args.command == "compile" and name == "output":  # a compiled model is saved as a folder
                check_writable_folder(flag, path)
                check_save_target(path)  # refused now (`.`, a folder of the user's), not after the compile
            else:
                check_writable_file(flag, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slimgraph`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        _check_outputs(args)
        return func(args)
    except SlimgraphError as exc:
        print(f"slimgraph: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"slimgraph: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

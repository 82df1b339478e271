"""Per-kernel tables of the full-size real models: where the time goes, and how far each kernel is
from this CPU's peak.

Each model (built as in ``benchmarks/real_models.py``) is compiled for ``llvm`` and run through
``CompiledModel.benchmark()`` in a child process with a time limit. Prints, per model, the
benchmark's figures and per-kernel table (calls, total and mean ms, share, GFLOP/s) with each
kernel's GFLOP/s as a share of the CPU's fp32 peak: cores x clock x FLOPs per cycle (two FMA
units of 16 floats on AVX-512, of 8 on AVX2; the clock is /proc/cpuinfo's, so turbo makes the
real peak higher). Writes ``benchmarks/results/kernel_table.json``.

    python benchmarks/kernel_table.py [--models bert-base,vit-base] [--threads N] [--duration 10] [--top 12]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.compare import cpu_info, load  # noqa: E402
from benchmarks.real_models import MODELS, RESULTS, child_row  # noqa: E402


def peak_gflops(info: dict, threads: int) -> float | None:
    """fp32 FMA peak of ``threads`` cores at the clock /proc/cpuinfo reports, or None when unknown."""
    try:
        mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        return None
    flags = info.get("key_flags", {})
    lanes = 16 if flags.get("avx512f") else 8 if flags.get("avx2") else 4
    return threads * mhz / 1e3 * 2 * lanes * 2  # two FMA units, two FLOPs per lane each


def run_one(name: str, threads: int, duration: float) -> dict:
    os.environ["TVM_NUM_THREADS"] = str(threads)  # before TVM starts its pool
    import slimgraph

    module, _, inputs = load(name, 1)
    model = slimgraph.compile(module, inputs, target="llvm")
    result = model.benchmark(*inputs, duration_s=duration, warmup=3, kernel_repeat=5)
    return {**result.as_dict(), "model": name, "graph": result.model}


def table(row: dict, peak: float | None, top: int) -> str:
    lines = [f"## {row['model']}: median {row['median_ms']:.3f} ms (p90 {row['p90_ms']:.3f}, first call "
             f"{row['first_ms']:.0f} ms, CV {row['cv'] * 100:.0f}%), {row['flops'] / 1e9:.2f} GFLOP",
             "", "| kernel | ops | calls | total ms | mean ms | share | GFLOP/s | of peak |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in row["kernels"][:top]:
        rate = k["gflops"]
        shown = f"{rate:.1f}" if rate is not None else "-"
        of_peak = f"{rate / peak * 100:.0f}%" if rate is not None and peak else "-"
        lines.append(f"| {k['name']} | {k['ops']} | {k['calls']} | {k['ms']:.2f} | {k['mean_ms']:.3f} | "
                     f"{k['share'] * 100:.1f}% | {shown} | {of_peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert-base,vit-base", help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of timed whole-model runs")
    parser.add_argument("--top", type=int, default=12, help="kernels shown per model, slowest first")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per model before it is stopped")
    parser.add_argument("--json", default=str(RESULTS / "kernel_table.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.child, args.threads, args.duration)), flush=True)
        return 0
    info = cpu_info()
    peak = peak_gflops(info, args.threads)
    print(f"CPU: {info.get('model', '?')}, {args.threads} threads, fp32 peak ~{peak:.0f} GFLOP/s" if peak else
          f"CPU: {info.get('model', '?')}, peak unknown")
    rows = []
    for name in (n.strip() for n in args.models.split(",") if n.strip()):
        row = child_row(Path(__file__), [name, "--threads", str(args.threads), "--duration", str(args.duration)],
                        args.timeout, {"model": name})
        rows.append(row)
        print("\n" + (table(row, peak, args.top) if "kernels" in row else f"## {name}: {row.get('error')}"), flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "cpu": info, "peak_gflops": peak, "results": rows}, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

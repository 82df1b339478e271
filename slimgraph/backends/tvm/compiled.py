"""The compiled model: call it, inspect its kernels, save and load it, benchmark it.

A :class:`CompiledModel` wraps a Relax VM executable built from a lowered
graph. Call it with numpy arrays (numpy comes back) or torch tensors (torch
comes back; passed through DLPack without a copy when they are contiguous and
on the model's device). ``.ir`` is the optimized graph, ``.kernels`` lists each
kernel with its generated source and FLOPs, ``.save(dir)`` writes the shared
library, the weights (once, as the kernels read them), the metadata, and with
``ir=True`` the IR (atomically, see
:mod:`slimgraph.storage`), and :func:`load_compiled` reads them back in any
process after checking every file against the folder's manifest. A saved
folder holds native code that runs when it is loaded: load only folders you
trust.

Example::

    >>> import numpy as np, slimgraph.backends.tvm as sgtvm   # doctest: +SKIP
    >>> from slimgraph.demo import demo_model, demo_inputs     # doctest: +SKIP
    >>> model = sgtvm.build(demo_model(), "llvm", {"N": 1})    # doctest: +SKIP
    >>> probs = model(*demo_inputs())                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from slimgraph.arguments import check_int, check_writable_file
from slimgraph.backends.tvm.tile_permission import AMX_KERNEL, request_tile_data
from slimgraph.errors import ArgumentError, BackendError, IndexOutOfRangeError, LoadError, SlimgraphError
from slimgraph.ir.interpreter import random_inputs
from slimgraph.ir.types import DType, TensorType, bind_dim, concrete
from slimgraph.storage import read_json, staged_directory, verify_folder
from slimgraph.timing import Clock, Timing, measure

FORMAT_VERSION = 2  # 2: a files.json manifest (sizes and SHA-256 of every file); kernels name the shared function they run
KIND = "slimgraph model"


def _list_of(check):
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _pair_of_str(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)


_KERNEL_KEYS = {"name": str, "func": str, "ops": list, "node": str, "flops": int, "tir": str, "source": str}
# what load_compiled checks of metadata.json before it builds anything from it
_META_SCHEMA = {
    "name": lambda v: isinstance(v, str),
    "target": lambda v: isinstance(v, str),
    "inputs": _list_of(_pair_of_str),
    "params": _list_of(_pair_of_str),
    "outputs": _list_of(lambda x: isinstance(x, str)),
    "output_types": _list_of(lambda x: isinstance(x, str)),
    "kernels": _list_of(lambda k: isinstance(k, dict) and all(isinstance(k.get(f), t) for f, t in _KERNEL_KEYS.items())),
    "steps": _list_of(lambda s: isinstance(s, dict) and isinstance(s.get("kind"), str)),
    "bindings": lambda v: v is None or isinstance(v, dict),
    "dynamic": lambda v: v is None or isinstance(v, dict) and all(
        isinstance(b, list) and len(b) == 2 and all(type(x) is int for x in b) for b in v.values()),
}
# TVM's export_library aborts the process when two threads run it at once
_EXPORT_LOCK = threading.Lock()
# TVM's affinity mode for its default pool (kBig): keep it when resizing the pool
_BIG_CORES = 1
# a cap on warm-up by duration (warmup_s): a sub-microsecond model would otherwise make millions of calls
MAX_WARMUP_CALLS = 5000


@dataclass(frozen=True)
class Kernel:
    """One kernel call: its ``name``, the ``ops`` it computes, the IR ``node`` it
    came from, its FLOPs, its scheduled TIR and its target ``source`` (LLVM IR on
    CPU, CUDA C or OpenCL C on GPUs), and ``func``, the compiled function it runs:
    its own name, or the first identical kernel's (identical kernels compile once); ``weights``
    is the form its compressed weights took (``compressed`` or ``decoded``; "" when it reads
    none), measured per kernel under ``weights="auto"``."""

    name: str
    ops: tuple[str, ...]
    node: str
    flops: int
    tir: str
    source: str
    func: str
    weights: str = ""


@dataclass(frozen=True)
class KernelTiming:
    """One compiled kernel's counters over a model run: the ``calls`` it gets (identical layers share
    one kernel), the IR ``nodes`` of those calls, their ``ms`` in all and ``mean_ms`` each, the
    ``share`` of the model's kernel time, ``gflops`` (None where the ops' FLOPs are not known), and
    the form its compressed ``weights`` took ("" when it reads none; see :class:`Kernel`)."""

    name: str
    ops: str
    calls: int
    nodes: tuple[str, ...]
    ms: float
    share: float
    gflops: float | None
    weights: str = ""

    @property
    def mean_ms(self) -> float:
        return self.ms / self.calls


@dataclass(frozen=True)
class BenchmarkResult:
    """Whole-model timing (a :class:`~slimgraph.timing.Timing`: first call, median, p90/p95/p99,
    mean and its variation, throughput) and the per-kernel counters, slowest first."""

    model: str
    target: str
    flops: int
    timing: Timing
    kernels: list[KernelTiming]

    @property
    def median_ms(self) -> float:
        return self.timing.median_ms

    @property
    def p90_ms(self) -> float:
        return self.timing.p90_ms

    @property
    def runs(self) -> int:
        return self.timing.runs

    def as_dict(self) -> dict[str, Any]:
        """Everything, as JSON-able data."""
        return {
            "model": self.model, "target": self.target, "flops": self.flops, **self.timing.as_dict(),
            "kernels": [dict(asdict(k), nodes=list(k.nodes), mean_ms=k.mean_ms) for k in self.kernels],
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`as_dict` to ``path``; returns the path."""
        out = Path(path)
        out.write_text(json.dumps(self.as_dict(), indent=1))
        return out

    def table(self) -> str:
        """The whole-model figures, then the per-kernel table as Markdown, slowest first."""
        t = self.timing
        model_gflops = f", {self.flops / (t.median_ms * 1e6):.1f} GFLOP/s at the median" if self.flops and t.median_ms else ""
        lines = [
            f"@{self.model} on {self.target}: {self.flops / 1e9:.3f} GFLOP per call{model_gflops}",
            t.summary(),
            "",
            "| kernel | ops | calls | total ms | mean ms | share | GFLOP/s | weights |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for k in self.kernels:
            gflops = f"{k.gflops:.1f}" if k.gflops is not None else "-"
            lines.append(f"| {k.name} | {k.ops} | {k.calls} | {k.ms:.4f} | {k.mean_ms:.4f} | {k.share * 100:.1f}% "
                         f"| {gflops} | {k.weights or '-'} |")
        return "\n".join(lines)


class CompiledModel:
    """A model compiled by the TVM backend. See the module docstring."""

    kind = "tvm"  # the loader a guarded model's manifest names for this variant (runtime.guard_store)

    def __init__(self, executable, meta: dict, params: list[tuple[str, np.ndarray]], ir, target,
                 library: bytes | None = None):
        from slimgraph.backends.tvm.targets import parse_target

        self._exec = executable
        # a library loaded from disk cannot be exported again: its bytes are kept to save it again
        self._library_bytes = library
        self._meta = meta
        self._params_np = params
        self.ir = ir
        self.target = parse_target(target) if isinstance(target, str) else target
        self._local = threading.local()  # one VM per thread: a TVM VM is not safe to share
        self._params_lock = threading.Lock()
        self._params_dev = None
        # parsed once: a small model's call is tens of microseconds, and parsing costs two of them
        self._inputs = [_type_from(t) for _, t in meta["inputs"]]
        self._outputs = [_type_from(t) for t in meta["output_types"]]
        # symbol -> (min, max) of the dims compiled symbolic; empty for a static model
        self._dynamic = {s: (low, high) for s, (low, high) in (meta.get("dynamic") or {}).items()}
        # Linux grants AMX tiles on request only; a kernel that calls the AMX micro-kernel needs them
        self._uses_amx = any(AMX_KERNEL in k["tir"] for k in meta["kernels"])

    @property
    def dynamic(self) -> dict[str, tuple[int, int]]:
        """The symbols this model serves at any size, each with its (min, max) bounds."""
        return dict(self._dynamic)

    # -- introspection -------------------------------------------------------

    @property
    def input_types(self) -> list[TensorType]:
        return list(self._inputs)

    @property
    def output_types(self) -> list[TensorType]:
        return list(self._outputs)

    @property
    def kernels(self) -> list[Kernel]:
        """Each kernel call with its scheduled TIR, generated source and FLOPs, in execution order
        (calls of identical kernels share one compiled ``func``)."""
        return [
            Kernel(k["name"], tuple(k["ops"]), k["node"], k["flops"], k["tir"], k["source"], k["func"],
                   k.get("weights", ""))
            for k in self._meta["kernels"]
        ]

    @property
    def weight_forms(self) -> dict[str, str]:
        """The form each kernel reading compressed weights took, by kernel name
        (``compressed`` or ``decoded``; see ``weights=`` of :func:`slimgraph.compile`)."""
        return {k["name"]: k["weights"] for k in self._meta["kernels"] if k.get("weights")}

    @property
    def flops(self) -> int:
        return sum(k["flops"] for k in self._meta["kernels"])

    @property
    def param_bytes(self) -> int:
        """Bytes of the weights the model holds (and a saved folder stores): compressed weights
        count as stored, codes and codebooks (see ``weights=`` of :func:`slimgraph.compile`)."""
        return sum(a.nbytes for _, a in self._params_np)

    def __repr__(self) -> str:
        ins = ", ".join(t for _, t in self._meta["inputs"])
        forms = list(self.weight_forms.values())
        held = "".join(f", {forms.count(f)} {f}" for f in ("compressed", "decoded") if f in forms)
        return (f"<CompiledModel @{self._meta['name']} ({ins}) on {self.target.text}: {len(self._meta['kernels'])} "
                f"kernels{held}>")

    # -- running -------------------------------------------------------------

    def _device(self):
        return self.target.device()

    #: Calls from several threads are safe: each thread gets its own VM over the shared weights.
    thread_safe = True

    def _ensure_vm(self):
        vm = getattr(self._local, "vm", None)
        if vm is None:
            import tvm
            from tvm import relax

            if self._uses_amx:
                request_tile_data()
            dev = self._device()
            with self._params_lock:
                if self._params_dev is None:
                    self._params_dev = [tvm.runtime.tensor(a, dev) for _, a in self._params_np]
            vm = self._local.vm = relax.VirtualMachine(self._exec, dev)
            self._local.main = vm["main"]
        return vm

    def __call__(self, *inputs: Any, threads: int | None = None):
        """Run the model. Numpy in, numpy out; torch in, torch out. One output comes
        back as a single array, several as a tuple. ``threads`` (CPU targets) runs
        this call's kernels on that many threads instead of one per core."""
        self._ensure_vm()
        main = self._local.main
        as_torch = any(_is_torch(x) for x in inputs)
        args = self._convert_inputs(inputs, share=not as_torch)
        if threads is None:
            result = _run(main, args, self._params_dev)
        else:
            with self._threads(threads):
                result = _run(main, args, self._params_dev)
        outs = _flatten(result)
        converted = [self._convert_output(o, t, as_torch) for o, t in zip(outs, self._outputs)]
        return converted[0] if len(converted) == 1 else tuple(converted)

    @contextlib.contextmanager
    def _threads(self, threads: int):
        """Size the calling thread's TVM pool to ``threads`` for the block, then restore it.

        TVM keeps one pool per calling thread, so this never touches another
        thread's calls, and resizing costs about a microsecond.
        """
        if not self.target.is_cpu:
            raise BackendError(f"threads={threads}: a thread count applies to CPU targets, not {self.target.text}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BackendError(f"threads={threads!r}: must be a positive number of threads")
        import tvm_ffi

        # TVM pins the calling thread to a core of its choosing whenever it (re)configures the
        # pool; the caller's own affinity (taskset, a server's pinning) must survive that
        mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

        def configure(count: int) -> None:
            tvm_ffi.get_global_func("runtime.config_threadpool")(_BIG_CORES, count)
            if mask is not None:
                os.sched_setaffinity(0, mask)

        before = int(tvm_ffi.get_global_func("runtime.NumThreads")())
        if mask is not None:
            os.sched_setaffinity(0, mask)
        if before == threads:
            yield
            return
        configure(threads)
        try:
            yield
        finally:
            configure(before)

    def _convert_inputs(self, inputs: Sequence[Any], share: bool = True) -> list:
        """The inputs as TVM tensors. ``share=False`` copies numpy arrays: a torch output
        that is a view of an input must not alias the caller's numpy buffer."""
        import tvm

        expected = self._inputs
        if len(inputs) != len(expected):
            raise BackendError(f"model takes {len(expected)} inputs ({', '.join(map(str, expected))}), got {len(inputs)}")
        dev = self._device()
        out = []
        sizes: dict[str, int] = {}
        for i, (x, t) in enumerate(zip(inputs, expected)):
            if self._dynamic and hasattr(x, "shape"):
                self._bind_sizes(i, tuple(x.shape), t, sizes)
                t = t.with_shape(tuple(x.shape))  # checked: the dtype checks below compare the rest
            if _is_torch(x):
                x = x.detach()
                if tuple(x.shape) != tuple(t.shape) or str(x.dtype).replace("torch.", "") != _torch_name(t.dtype):
                    raise BackendError(f"input {i}: got torch {tuple(x.shape)} {x.dtype}, compiled for {t}")
                if x.device.type != self.target.input_device:
                    x = x.to(self.target.input_device)
                if not x.is_contiguous() or x.data_ptr() % 64:
                    x = x.contiguous().clone()  # TVM kernels assume dense, aligned buffers
                out.append(tvm.runtime.from_dlpack(x))
                continue
            if not isinstance(x, (np.ndarray, np.generic)):
                raise BackendError(f"input {i}: got a {type(x).__name__}; give a numpy array or torch tensor ({t})")
            array = np.asarray(x)
            if t.dtype is DType.int4 and array.dtype == t.dtype.numpy:
                array = array.astype(np.int8)
            elif array.dtype != t.dtype.numpy:
                raise BackendError(f"input {i}: got dtype {array.dtype}, compiled for {t}")
            if tuple(array.shape) != tuple(t.shape):
                raise BackendError(
                    f"input {i}: got shape {list(array.shape)}, compiled for {t} (compile again with example inputs of "
                    f"this shape)"
                )
            out.append(self._device_tensor(array, dev, share))
        return out

    def _device_tensor(self, array: np.ndarray, dev, share: bool = True):
        """An input array as the model's runtime takes it (OpenCLModel keeps numpy, RemoteModel
        sends it to the server)."""
        import tvm

        if self.target.is_cpu:
            return _host_tensor(array, tvm, share)
        return tvm.runtime.tensor(np.ascontiguousarray(array), dev)

    def _bind_sizes(self, i: int, shape: tuple, t: TensorType, sizes: dict[str, int]) -> None:
        """Bind input ``i``'s dynamic dims into ``sizes``; BackendError naming the input, the axis
        and the bounds when ``shape`` does not fit ``t`` or a size is outside its symbol's bounds."""
        name = self._meta["inputs"][i][0].split(":", 1)[1]
        if len(shape) != t.rank:
            raise BackendError(f"input {i} (%{name}): got shape {list(shape)}, compiled for {t}")
        for axis, (dim, size) in enumerate(zip(t.shape, shape)):
            before = dict(sizes)
            if not bind_dim(dim, int(size), sizes):
                known = ", ".join(f"{s}={n}" for s, n in before.items() if s in str(dim).split("*"))
                raise BackendError(f"input {i} (%{name}): axis {axis} has size {size}, which does not fit dim {dim} "
                                   f"of {t}" + (f" ({known} from the inputs before it)" if known else ""))
            for symbol in sizes.keys() - before.keys():
                low, high = self._dynamic[symbol]
                if not low <= sizes[symbol] <= high:
                    raise BackendError(f"input {i} (%{name}): axis {axis} has size {size} "
                                       f"(so {symbol}={sizes[symbol]}), outside the bounds compiled for {symbol}: "
                                       f"{low} <= {symbol} <= {high}")

    def _convert_output(self, tensor, t: TensorType, as_torch: bool):
        if as_torch:
            import torch

            return torch.from_dlpack(tensor)  # torch has no int4: it stays widened to int8
        array = tensor.numpy()
        return array.astype(t.dtype.numpy) if t.dtype is DType.int4 else array

    # -- save / load ---------------------------------------------------------

    def save(self, directory: str | os.PathLike, ir: bool = False) -> Path:
        """Write the model to ``directory`` (library, weights, metadata, and the
        ``files.json`` manifest), atomically: at every instant the folder holds the
        old complete model or the new one. ``directory`` must be new, empty, or a
        folder slimgraph saved; anything else is a :class:`SaveError`.

        The weights are stored once, in the form the kernels read (``params.npz``);
        ``ir=True`` also stores the optimized IR with its own copy of the weights
        (``model.sg`` and its sidecar), which :func:`load_compiled` gives back as
        ``.ir`` (to fine-tune or inspect); without it a loaded model's ``ir`` is None."""
        target = Path(directory)
        with staged_directory(target, KIND) as staging:
            if self._library_bytes is not None:
                (staging / "model.so").write_bytes(self._library_bytes)
            elif self._exec is not None:  # an OpenCL model has no native code: its kernels are in the metadata
                with _EXPORT_LOCK:
                    self._exec.export_library(str(staging / "model.so"))
            _save_params(staging / "params.npz", self._params_np)
            if ir and self.ir is not None:
                self.ir.save(staging / "model.sg")
            meta = dict(self._meta, format=FORMAT_VERSION, target=self.target.text)
            (staging / "metadata.json").write_text(json.dumps(meta, indent=1))
        return target

    # -- benchmark -----------------------------------------------------------

    def benchmark(
        self,
        *inputs: Any,
        warmup: int = 5,
        runs: int | None = None,
        duration_s: float | None = None,
        warmup_s: float = 0.0,
        batch: int | None = None,
        concurrency: int = 1,
        kernel_repeat: int = 10,
        json_path: str | os.PathLike | None = None,
        clock: Clock = time.perf_counter,
    ) -> BenchmarkResult:
        """Time the whole model as ``benchmark_app`` and ``trtexec`` do, then each kernel.

        The model runs through :func:`slimgraph.timing.measure`: the first call
        alone, ``warmup`` calls (and at least ``warmup_s`` seconds), then ``runs``
        calls or ``duration_s`` seconds (default 30 calls) from ``concurrency``
        threads at once; a :class:`~slimgraph.errors.SlimgraphWarning` says when
        the runs vary too much to trust. Inputs default to seeded random data
        with ``batch`` on the first input's first axis (a dynamic batch takes any
        size in its bounds; a static one must match). Each kernel then runs
        ``kernel_repeat`` times on the real intermediate values; kernels shared by
        identical layers are one row with their calls counted. ``json_path``
        writes the result as JSON; ``clock`` is injectable for tests.

        Example::

            >>> result = model.benchmark(duration_s=2.0, concurrency=2)   # doctest: +SKIP
            >>> print(result.table())                                     # doctest: +SKIP
        """
        check_int("benchmark: kernel_repeat", kernel_repeat, minimum=1, error=BackendError)
        if batch is not None:
            check_int("benchmark: batch", batch, minimum=1, error=BackendError)
        if json_path is not None:
            check_writable_file("benchmark: json_path", json_path, error=BackendError)
        call, given, per_kernel = self._benchmark_plan(inputs or self._sample_inputs(batch))
        if batch is not None and given != batch:
            raise BackendError(f"benchmark: batch={batch}, but the inputs have batch {given}")
        try:
            timing = measure(call, runs=runs, duration_s=duration_s, warmup=warmup, warmup_s=warmup_s,
                             max_warmup=max(warmup, MAX_WARMUP_CALLS), batch=given, concurrency=concurrency,
                             clock=clock)
        except ArgumentError as exc:
            raise BackendError(f"benchmark: {exc}") from None
        result = BenchmarkResult(self._meta["name"], self.target.text, self.flops, timing,
                                 self._kernel_counters(per_kernel(kernel_repeat)))
        if json_path is not None:
            result.save_json(json_path)
        return result

    def _benchmark_plan(self, inputs: Sequence[Any]):
        """What :meth:`benchmark` times on ``inputs``: (one whole call, the inputs' batch, a function
        of a repeat count giving each kernel call's ``(name, ms)``)."""
        import tvm

        feeds = self._convert_inputs(inputs)
        given = int(feeds[0].shape[0]) if feeds and len(feeds[0].shape) else 1
        dev = self._device()

        def call() -> None:
            self._ensure_vm()  # each calling thread runs its own VM
            _run(self._local.main, feeds, self._params_dev)
            dev.sync()

        return call, given, lambda repeat: self._time_kernels(feeds, repeat, dev, tvm)

    def _sample_inputs(self, batch: int | None) -> list[np.ndarray]:
        """Seeded random inputs; ``batch`` sizes the first input's first axis where it is a symbol
        (other symbols take 1), and must equal it where it is fixed."""
        first = self._inputs[0].shape[0] if self._inputs and self._inputs[0].shape else None
        sizes = {}
        if batch is not None and isinstance(first, str):
            if not bind_dim(first, batch, sizes):
                raise BackendError(f"benchmark: batch={batch} does not fit the first input's first axis {first}")
        elif batch is not None and first != batch:
            raise BackendError(f"benchmark: batch={batch}, but the model was compiled for batch {first} "
                               f"(compile it with a dynamic batch, or for this one)")
        return random_inputs([t.with_shape(tuple(concrete(d, sizes) for d in t.shape)) for t in self._inputs])

    def _kernel_counters(self, per_call: list[tuple[str, float]]) -> list[KernelTiming]:
        """Per-call times grouped by the compiled kernel they ran, slowest first."""
        info = {k["name"]: k for k in self._meta["kernels"]}
        groups: dict[str, list[tuple[str, float]]] = {}
        for name, ms in per_call:
            groups.setdefault(info[name]["func"], []).append((name, ms))
        total = sum(ms for _, ms in per_call) or 1.0
        rows = []
        for func, calls in groups.items():
            ms = sum(t for _, t in calls)
            flops = sum(info[name]["flops"] for name, _ in calls)
            rows.append(KernelTiming(calls[0][0], "+".join(info[calls[0][0]]["ops"]), len(calls),
                                     tuple(name for name, _ in calls), ms, ms / total,
                                     flops / (ms * 1e6) if flops and ms > 0 else None,
                                     info[calls[0][0]].get("weights", "")))
        return sorted(rows, key=lambda k: -k.ms)

    def _time_kernels(self, feeds, repeat: int, dev, tvm) -> list[tuple[str, float]]:
        """Run the kernels one by one on real intermediate values, timing each."""
        lib = self._library()
        sizes: dict[str, int] = {}
        for i, (feed, t) in enumerate(zip(feeds, self._inputs)):
            self._bind_sizes(i, tuple(feed.shape), t, sizes)

        def shape(text: str) -> tuple[int, ...]:
            return tuple(concrete(d, sizes) for d in _type_from(text).shape)

        env: dict[str, Any] = {key: t for (key, _), t in zip(self._meta["inputs"], feeds)}
        env.update({"p:" + name: t for (name, _), t in zip(self._params_np, self._params_dev)})
        results = []
        for step in self._meta["steps"]:
            if step["kind"] == "view":
                src = env[step["src"]]
                env[step["out"]] = src._create_view(shape(step["type"]))
                continue
            args = [env[k] for k in step["args"]] + [sizes[s] for s in step.get("shape_args", [])]
            outs = [tvm.runtime.empty(shape(t), _tvm_dtype(_type_from(t)), dev) for t in step["out_types"]]
            timer = lib.time_evaluator(step["func"], dev, number=1, repeat=repeat, min_repeat_ms=0)
            timing = timer(*args, *outs)
            results.append((step["name"], float(np.median(timing.results)) * 1e3))
            env.update(zip(step["outs"], outs))
        return results

    def _library(self):
        mod = self._exec.mod if hasattr(self._exec, "mod") else self._exec
        for m in mod.imports:
            if self._meta["kernels"] and m.implements_function(self._meta["kernels"][0]["func"]):
                return m
        return mod.imports[0]


def load_compiled(directory: str | os.PathLike) -> CompiledModel:
    """Load a model written by :meth:`CompiledModel.save`.

    Every file is checked against the folder's manifest (size and SHA-256) before
    the library is touched; a missing, damaged or foreign folder is a
    :class:`LoadError` naming the file. The check catches damage and mix-ups, not
    tampering: the library is native code that runs on load, so load only
    folders you trust.
    """
    import tvm

    path = Path(directory)
    verify_folder(path, KIND)
    meta_file = path / "metadata.json"
    meta = read_json(meta_file, FORMAT_VERSION, "metadata")
    wrong = [k for k, check in _META_SCHEMA.items() if not check(meta.get(k))]
    if wrong:
        raise LoadError(f"{meta_file}: incomplete or malformed metadata: {', '.join(wrong)}")
    from slimgraph.backends.tvm.targets import parse_target

    try:
        opencl = parse_target(meta["target"]).runtime == "pyopencl"  # no native library: OpenCL C in the metadata
    except SlimgraphError as exc:
        raise LoadError(f"{meta_file}: {exc}") from None
    try:
        library = None if opencl else (path / "model.so").read_bytes()
        lib = None if opencl else tvm.runtime.load_module(str(path / "model.so"))
    except (OSError, RuntimeError) as exc:  # TVM's errors are RuntimeErrors
        raise LoadError(f"{path / 'model.so'}: cannot load the library: {str(exc).splitlines()[0]}") from None
    try:
        params = _load_params(path / "params.npz", meta["params"])
    except (OSError, ValueError, KeyError, TypeError, SlimgraphError, zipfile.BadZipFile) as exc:
        raise LoadError(f"{path / 'params.npz'}: does not hold the weights metadata.json lists: {exc}") from None
    ir = None
    if (path / "model.sg").exists():
        from slimgraph.ir.serialize import load

        try:
            ir = load(path / "model.sg")
        except SlimgraphError as exc:
            raise LoadError(f"{path / 'model.sg'}: {exc}") from None
    try:
        if opencl:
            from slimgraph.backends.opencl.model import OpenCLModel

            return OpenCLModel(None, meta, params, ir, meta["target"])
        return CompiledModel(lib, meta, params, ir, meta["target"], library=library)
    except (KeyError, TypeError, ValueError, AttributeError, SlimgraphError) as exc:
        raise LoadError(f"{meta_file}: incomplete or inconsistent metadata: {exc!r}") from None


# ---------------------------------------------------------------------------
# helpers


def _run(main, args: list, params: list):
    """Call the VM's ``main``; a failed index check (a TIR assert's IndexError on CPUs, a Relax
    assert's AssertionError on GPUs) becomes IndexOutOfRangeError."""
    from slimgraph.backends.tvm.lower import INDEX_CHECK

    try:
        return main(*args, *params)
    except (IndexError, AssertionError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if INDEX_CHECK not in message:
            raise
        raise IndexOutOfRangeError(message) from None


def _type_from(text: str) -> TensorType:
    dtype, _, rest = text.partition("[")
    dims = [int(d) if d.isdigit() else d for d in rest.rstrip("]").split(",") if d]  # symbols: dynamic dims
    return TensorType(dtype, tuple(dims))


def _tvm_dtype(t: TensorType) -> str:
    from slimgraph.backends.tvm.lower import TVM_DTYPE

    return TVM_DTYPE[t.dtype]


def _torch_name(dtype: DType) -> str:
    return {DType.float32: "float32", DType.float64: "float64", DType.float16: "float16", DType.bfloat16: "bfloat16",
            DType.int8: "int8", DType.uint8: "uint8", DType.int32: "int32", DType.int64: "int64", DType.bool: "bool",
            DType.int4: "int8"}[dtype]


def _host_tensor(array: np.ndarray, tvm, share: bool):
    """A CPU tensor over ``array``: shared through DLPack when ``share`` and TVM can take it as
    it is (dense, 64-byte aligned, writeable), else over an aligned copy. Either is two to thirty
    times cheaper than ``tvm.runtime.tensor``'s allocate-and-copy (13 us for a 1 KB input), which
    serves what numpy cannot export through DLPack (bfloat16 and the other ml_dtypes, kind V)."""
    if array.dtype.kind not in "biuf" or not array.size:
        return tvm.runtime.tensor(np.ascontiguousarray(array))
    aligned = array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % 64 == 0
    if not (share and aligned):
        storage = np.empty(array.nbytes + 64, np.uint8)
        start = -storage.ctypes.data % 64
        copy = storage[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
        copy[...] = array
        array = copy
    return tvm.runtime.from_dlpack(array)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "__dlpack__")


def _flatten(result) -> list:
    import tvm

    if isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [r for item in result for r in _flatten(item)]


def _save_params(path: Path, params: list[tuple[str, np.ndarray]]) -> None:
    # bf16 has no numpy file dtype: stored as its bits and restored from the metadata's dtype
    arrays = {f"p{i}": (a.view(np.uint16) if a.dtype.kind == "V" else a) for i, (_, a) in enumerate(params)}
    np.savez(path, **arrays)


def _load_params(path: Path, specs: list) -> list[tuple[str, np.ndarray]]:
    with np.load(path) as data:
        out = []
        for i, (name, dtype) in enumerate(specs):
            array = data[f"p{i}"]
            want = DType.of(dtype).numpy
            out.append((name, array.view(want) if array.dtype != want else array))
    return out


def metadata(name: str, lowered, kernel_sources: dict[str, tuple[str, str]], bindings: dict[str, int],
             dynamic: dict[str, tuple[int, int]] | None = None) -> dict:
    """The JSON-able description of a lowered model that :class:`CompiledModel` keeps and saves."""
    from slimgraph.backends.tvm.lower import ViewStep

    steps = []
    for s in lowered.steps:
        if isinstance(s, ViewStep):
            steps.append({"kind": "view", "src": s.src, "out": s.out, "type": str(s.type)})
        else:
            steps.append({"kind": "kernel", "name": s.name, "func": s.func, "args": s.args, "outs": s.outs,
                          "out_types": [str(t) for t in s.out_types], "shape_args": s.shape_args})
    kernels = []
    for k in lowered.kernels:
        tir, source = kernel_sources.get(k.func, ("", ""))
        info = asdict(k)
        kernels.append({"name": k.name, "func": k.func, "ops": list(k.ops), "node": k.node, "flops": info["flops"],
                        "tir": tir, "source": source, "weights": k.weights})
    return {
        "name": name,
        "inputs": [[key, str(t)] for key, t in lowered.inputs],
        "params": [[n, TensorType.of_array(a).dtype.value] for n, a in lowered.params],
        "outputs": lowered.outputs,
        "output_types": [str(t) for t in lowered.output_types],
        "kernels": kernels,
        "steps": steps,
        "bindings": bindings,
        "dynamic": {s: [int(low), int(high)] for s, (low, high) in sorted((dynamic or {}).items())},
    }

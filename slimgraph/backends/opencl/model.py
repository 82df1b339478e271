"""Run a TVM-built ``opencl`` model through PyOpenCL, on any OpenCL device.

The TVM wheel generates OpenCL C but has no OpenCL runtime, so
:class:`OpenCLModel` does the runtime's work: it compiles each kernel's
source with the device's OpenCL compiler, keeps the weights in device
buffers, and walks the model's steps (the straight sequence of kernel calls
and views that ``main`` runs), replaying each kernel function's launch plan
(:mod:`slimgraph.backends.opencl.plan`): buffers and sizes as arguments,
global size = ``blockIdx`` extent x ``threadIdx`` extent per axis, local size
= ``threadIdx`` extent. It keeps the :class:`CompiledModel` API: call it with
numpy or torch, save and load it (no native library: the kernels travel as
OpenCL C in ``metadata.json``), ``benchmark()`` with per-kernel times from
OpenCL profiling events.

The device is the first GPU any OpenCL platform offers, else the first device
(PoCL's CPU device where ``pip install "slimgraph[opencl]"`` installed it);
``SLIMGRAPH_OPENCL_DEVICE=substring`` picks the first device whose
"platform: device" name contains it. The choice is logged on the
``slimgraph`` logger and shown by ``repr(model)``.

Example::

    >>> import slimgraph                                            # doctest: +SKIP
    >>> from slimgraph.demo import demo_model, demo_inputs          # doctest: +SKIP
    >>> model = slimgraph.compile(demo_model(), target="opencl")    # doctest: +SKIP
    >>> model                                                       # doctest: +SKIP
    <CompiledModel @demo_cnn (f32[1,3,32,32]) on opencl (Portable Computing Language: pthread-...): 15 kernels>
    >>> probs = model(*demo_inputs())                               # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Any

import numpy as np

from slimgraph.backends.opencl.plan import evaluate
from slimgraph.backends.tvm.compiled import CompiledModel, _is_torch, _type_from
from slimgraph.backends.tvm.targets import TargetError
from slimgraph.errors import BackendError, IndexOutOfRangeError
from slimgraph.ir.types import DType, concrete

log = logging.getLogger("slimgraph")

_INSTALL = 'pip install "slimgraph[opencl]" (PyOpenCL with PoCL, a CPU OpenCL device)'


def opencl_available() -> bool:
    """Whether PyOpenCL is installed and sees at least one OpenCL device."""
    try:
        _context()
    except TargetError:
        return False
    return True


def device_name() -> str:
    """``platform: device`` of the OpenCL device models run on (TargetError when there is none)."""
    return _describe(_context()[1])


def _describe(device) -> str:
    return f"{device.platform.name.strip()}: {device.name.strip()}"


_CONTEXT_LOCK = threading.Lock()


def _context():
    """(context, device): the first GPU, else the first device, unless SLIMGRAPH_OPENCL_DEVICE names one.
    One per process: two threads making the first call must not build a model's programs in one
    context and its queues in another."""
    with _CONTEXT_LOCK:
        return _open_context()


@functools.lru_cache(maxsize=None)
def _open_context():
    try:
        import pyopencl as cl
    except ImportError:
        raise TargetError(f"target 'opencl' runs through PyOpenCL, which is not installed: {_INSTALL}") from None
    devices = []
    try:
        for platform in cl.get_platforms():
            devices.extend(platform.get_devices())
    except cl.Error as exc:  # no ICD loader or no platform at all
        raise TargetError(f"target 'opencl': no OpenCL platform found ({exc}); {_INSTALL}") from None
    if not devices:
        raise TargetError(f"target 'opencl': no OpenCL device found; {_INSTALL}")
    wanted = os.environ.get("SLIMGRAPH_OPENCL_DEVICE", "").strip().lower()
    if wanted:
        chosen = [d for d in devices if wanted in _describe(d).lower()]
        if not chosen:
            raise TargetError(f"SLIMGRAPH_OPENCL_DEVICE={wanted!r} matches none of the OpenCL devices: "
                              + "; ".join(_describe(d) for d in devices))
    else:
        chosen = [d for d in devices if d.type & cl.device_type.GPU] or devices
    device = chosen[0]
    log.info("OpenCL device: %s", _describe(device))
    return cl.Context([device]), device


class OpenCLModel(CompiledModel):
    """A model compiled for ``opencl`` and run through PyOpenCL. See the module docstring."""

    def __init__(self, executable, meta: dict, params: list[tuple[str, np.ndarray]], ir, target,
                 library: bytes | None = None):
        super().__init__(None, meta, params, ir, target)
        plan = meta["opencl"]
        self._plans: dict[str, dict] = plan["functions"]
        self._kernel_args: dict[str, list[str]] = plan["kernels"]
        self._sources: dict[str, str] = plan["sources"]
        self._messages: dict[str, str] = dict(plan["checks"])
        self._shared_lock = threading.Lock()
        self._programs: dict[str, Any] | None = None
        self._params_cl: dict[str, Any] | None = None

    def __repr__(self) -> str:
        try:
            where = device_name()
        except TargetError:
            where = "no OpenCL device here"
        return super().__repr__().replace(f"on {self.target.text}:", f"on {self.target.text} ({where}):")

    # -- running -------------------------------------------------------------

    def __call__(self, *inputs: Any, threads: int | None = None):
        """Run the model: numpy in, numpy out; torch in, torch (on the CPU) out."""
        if threads is not None:
            raise BackendError(f"threads={threads}: a thread count applies to CPU targets, not {self.target.text}")
        as_torch = any(_is_torch(x) for x in inputs)
        arrays, sizes = self._arrays(inputs)
        outs, _ = self._execute(arrays, sizes)
        if as_torch:
            outs = [_to_torch(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _arrays(self, inputs) -> tuple[list[np.ndarray], dict[str, int]]:
        """The inputs checked against the compiled types (the CPU path's checks), as numpy arrays,
        and the sizes of the dynamic dims they bind."""
        host = [_from_torch(x) if _is_torch(x) else x for x in inputs]
        arrays = self._convert_inputs(host)
        sizes: dict[str, int] = {}
        for i, (a, t) in enumerate(zip(arrays, self._inputs)):
            self._bind_sizes(i, tuple(a.shape), t, sizes)
        return arrays, sizes

    def _device_tensor(self, array: np.ndarray, dev, share: bool = True):
        return np.ascontiguousarray(array)

    def _device(self):
        return None

    def _ensure_ready(self):
        """Compile the kernels and upload the weights once; each thread gets its own queues and kernels."""
        import pyopencl as cl

        ctx, device = _context()
        with self._shared_lock:
            if self._programs is None:
                self._programs = {name: _build(ctx, name, source) for name, source in self._sources.items()}
            if self._params_cl is None:
                self._params_cl = {"p:" + n: _upload(ctx, a) for n, a in self._params_np}
        local = self._local
        if getattr(local, "queue", None) is None:
            local.queue = cl.CommandQueue(ctx, device)
            local.profiling = cl.CommandQueue(ctx, device, properties=cl.command_queue_properties.PROFILING_ENABLE)
            local.kernels = {}
            local.pool = _BufferPool()
        return ctx, local

    def _kernel(self, local, name: str):
        import pyopencl as cl

        kernel = local.kernels.get(name)
        if kernel is None:
            if name not in self._programs:
                raise BackendError(f"OpenCL: kernel {name} has no source in this model")
            kernel = local.kernels[name] = cl.Kernel(self._programs[name], name)
        return kernel

    def _execute(self, arrays: list[np.ndarray], sizes: dict[str, int], profile: bool = False):
        """Run every step; (outputs as numpy, [(step name, [events])] when ``profile``).

        Intermediate buffers come from the calling thread's pool and go back to it after their
        last reader (the queue is in order, so a later launch that reuses one runs after it), so a
        call holds only its live activations and allocates nothing once warm."""
        import pyopencl as cl

        ctx, local = self._ensure_ready()
        queue = local.profiling if profile else local.queue
        pool = local.pool
        env: dict[str, Any] = dict(self._params_cl)
        shapes: dict[str, tuple[int, ...]] = {"p:" + n: a.shape for n, a in self._params_np}
        for (key, _), a in zip(self._meta["inputs"], arrays):
            env[key], shapes[key] = _upload(ctx, a), a.shape
        timed = []
        live: dict[str, Any] = {}
        try:
            for step, released in zip(self._meta["steps"], self._releases):
                if step["kind"] == "view":
                    env[step["out"]] = env[step["src"]]
                    shapes[step["out"]] = _shape(step["type"], sizes)
                    continue
                outs = []
                for key, text in zip(step["outs"], step["out_types"]):
                    t = _type_from(text)
                    shapes[key] = _shape(text, sizes)
                    outs.append(pool.take(ctx, int(np.prod(shapes[key], dtype=np.int64)) * _itemsize(t.dtype)))
                env.update(zip(step["outs"], outs))
                live.update(zip(step["outs"], outs))
                values = [env[k] for k in step["args"]] + [sizes[s] for s in step.get("shape_args", [])] + outs
                value_shapes = [shapes[k] for k in step["args"]] + [None] * len(step.get("shape_args", [])) \
                    + [shapes[k] for k in step["outs"]]
                events = self._launch(ctx, queue, local, step, values, value_shapes, sizes)
                timed.append((step["name"], events))
                for key in released:
                    pool.give(live.pop(key))
            results = []
            for key, t in zip(self._meta["outputs"], self._outputs):
                shape = tuple(concrete(d, sizes) for d in t.shape)
                host = np.empty(shape, np.int8 if t.dtype is DType.int4 else t.dtype.numpy)
                if host.size:
                    cl.enqueue_copy(queue, _bytes(host), env[key])
                results.append(host.astype(t.dtype.numpy) if t.dtype is DType.int4 else host)
            self._raise_failed_checks(queue, env)
        except cl.Error as exc:  # out of device memory, a launch the device refuses: the user's error family
            raise BackendError(f"OpenCL: running @{self._meta['name']} on {_describe(ctx.devices[0])} failed: "
                               f"{str(exc).strip()[:500]}") from None
        finally:
            queue.finish()  # nothing may still run on a buffer the pool hands out again
            for buffer in live.values():
                pool.give(buffer)
        return results, timed

    @functools.cached_property
    def _releases(self) -> list[list[str]]:
        """For each step, the buffers (by the key of the step that made them) it reads last; a view
        reads its source's buffer, and outputs and index checks are read after every step."""
        steps = self._meta["steps"]
        source: dict[str, str] = {}
        last: dict[str, int] = {}
        for n, step in enumerate(steps):
            if step["kind"] == "view":
                source[step["out"]] = source.get(step["src"], step["src"])
                continue
            for key in step["args"]:
                if source.get(key, key) in last:
                    last[source.get(key, key)] = n
            last.update((key, n) for key in step["outs"])
        kept = {source.get(k, k) for k in [*self._meta["outputs"], *self._messages]}
        releases: list[list[str]] = [[] for _ in steps]
        for key, n in last.items():
            if key not in kept:
                releases[n].append(key)
        return releases

    def _launch(self, ctx, queue, local, step: dict, values: list, value_shapes: list, sizes: dict) -> list:
        plan = self._plans[step["func"]]
        scope = dict(sizes)
        for kind, declared, value, shape in zip(plan["params"], plan["shapes"], values, value_shapes):
            if kind == "buffer":
                scope.update((d, s) for d, s in zip(declared, shape) if isinstance(d, str))
            elif isinstance(declared, str):
                scope[declared] = int(value)
        scratch = [local.pool.take(ctx, int(np.prod([evaluate(d, scope) for d in s["shape"]], dtype=np.int64))
                                   * np.dtype(_numpy_name(s["dtype"])).itemsize) for s in plan["scratch"]]
        events = self._replay(queue, local, plan["steps"], values, scratch, scope)
        for buffer in scratch:
            local.pool.give(buffer)
        return events

    def _replay(self, queue, local, steps: list[dict], values: list, scratch: list, scope: dict) -> list:
        """Enqueue the launches of ``steps`` (host loops repeat their body); their events."""
        import pyopencl as cl

        events = []
        for launch in steps:
            if "for" in launch:
                begin = evaluate(launch["begin"], scope)
                for i in range(begin, begin + evaluate(launch["extent"], scope)):
                    events += self._replay(queue, local, launch["body"], values, scratch, {**scope, launch["for"]: i})
                continue
            kernel = self._kernel(local, launch["kernel"])
            for i, ((kind, *where), param) in enumerate(zip(launch["args"], self._kernel_args[launch["kernel"]])):
                if kind == "buffer":
                    source, index = where
                    kernel.set_arg(i, values[index] if source == "param" else scratch[index])
                else:
                    kernel.set_arg(i, np.dtype(_numpy_name(param)).type(evaluate(where[0], scope)))
            block = [evaluate(e, scope) for e in launch["block"]]
            grid = [evaluate(e, scope) for e in launch["grid"]]
            if 0 in block or 0 in grid:
                continue  # an empty tensor: nothing to compute
            global_size = tuple(g * b for g, b in zip(grid, block))
            events.append(cl.enqueue_nd_range_kernel(queue, kernel, global_size, tuple(block)))
        return events

    def _raise_failed_checks(self, queue, env: dict) -> None:
        import pyopencl as cl

        for key, message in self._messages.items():
            ok = np.zeros((), np.uint8)
            cl.enqueue_copy(queue, ok, env[key])
            if not ok:
                raise IndexOutOfRangeError(message)

    # -- benchmark -----------------------------------------------------------

    def _benchmark_plan(self, inputs):
        """As :meth:`CompiledModel._benchmark_plan`: each timed call runs to the queue's end, and each
        kernel call's time is its OpenCL profiling events' device time, the median over the repeats."""
        arrays, sizes = self._arrays(inputs)
        given = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1

        def per_kernel(repeat: int) -> list[tuple[str, float]]:
            per_call: dict[str, list[float]] = {}
            for _ in range(repeat):
                _, timed = self._execute(arrays, sizes, profile=True)
                for name, events in timed:
                    per_call.setdefault(name, []).append(sum((e.profile.end - e.profile.start) * 1e-6
                                                             for e in events))
            return [(name, float(np.median(ms))) for name, ms in per_call.items()]

        return (lambda: self._execute(arrays, sizes)), given, per_kernel


def opencl_metadata(captured_mod, device_source: str, funcs: list[str], kernels) -> dict:
    """What :class:`OpenCLModel` keeps under ``metadata["opencl"]``: each kernel function's launch plan,
    each device kernel's parameter kinds and OpenCL source, and the index checks' messages."""
    from slimgraph.backends.opencl.plan import kernel_params, launch_plans, split_sources

    if captured_mod is None:
        raise BackendError("OpenCL: TVM's pipeline did not run MakePackedAPI, so no launch plan was recorded")
    return {
        "functions": launch_plans(captured_mod, funcs),
        "kernels": kernel_params(captured_mod),
        "sources": split_sources(device_source),
        "checks": [[key, message] for k in kernels for key, message in k.checks],
    }


def _build(ctx, name: str, source: str):
    import pyopencl as cl

    device = ctx.devices[0]
    for extension, what in (("cl_khr_fp16", "float16"), ("cl_khr_fp64", "float64")):
        if extension in source and extension not in device.extensions:
            raise BackendError(f"OpenCL: kernel {name} computes in {what}, which {_describe(device)} does not "
                               f"support (it lacks {extension}); compile for llvm, or run on a device that has it")
    # IEEE results as numpy and the CPU build give them: OpenCL C may fuse a*b+c into one fma and
    # divide within 2.5 ulp by default, and one ulp decides a tie in an int8 model's quantize
    options = ["-cl-fp32-correctly-rounded-divide-sqrt"] if _correct_division(device) else []
    try:
        return cl.Program(ctx, "#pragma OPENCL FP_CONTRACT OFF\n" + source).build(options=options)
    except cl.Error as exc:
        raise BackendError(f"OpenCL: the device's compiler rejected kernel {name}: {str(exc).strip()[:2000]}") from None


def _correct_division(device) -> bool:
    import pyopencl as cl

    try:
        return bool(device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT)
    except cl.Error:
        return False


def _upload(ctx, array: np.ndarray):
    import pyopencl as cl

    if not array.nbytes:
        return _empty(ctx, 0)
    return cl.Buffer(ctx, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR, hostbuf=_bytes(array))


def _bytes(array: np.ndarray) -> np.ndarray:
    """The array's memory as bytes: PyOpenCL copies through the buffer protocol, which
    ml_dtypes' bfloat16 does not offer."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


class _BufferPool:
    """Device buffers of one thread's calls, free for reuse, by size: a request takes the smallest
    free buffer that holds it (kernels write only the bytes their tensor has)."""

    def __init__(self) -> None:
        self._free: dict[int, list] = {}

    def take(self, ctx, nbytes: int):
        fits = [size for size, free in self._free.items() if free and size >= nbytes]
        return self._free[min(fits)].pop() if fits else _empty(ctx, nbytes)

    def give(self, buffer) -> None:
        self._free.setdefault(buffer.size, []).append(buffer)


def _empty(ctx, nbytes: int):
    import pyopencl as cl

    return cl.Buffer(ctx, cl.mem_flags.READ_WRITE, size=max(int(nbytes), 1))  # OpenCL has no empty buffers


def _shape(text: str, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(concrete(d, sizes) for d in _type_from(text).shape)


def _itemsize(dtype: DType) -> int:
    return 1 if dtype is DType.int4 else np.dtype(dtype.numpy).itemsize


def _numpy_name(tvm_dtype: str) -> str:
    return {"bool": "bool", "bfloat16": "uint16"}.get(tvm_dtype, tvm_dtype)


def _from_torch(x) -> np.ndarray:
    """A torch tensor as numpy; bfloat16, which numpy has only through ml_dtypes, by its bits."""
    import torch

    x = x.detach().cpu()
    if x.dtype is torch.bfloat16:
        return x.view(torch.int16).numpy().view(DType.bfloat16.numpy)
    return x.numpy()


def _to_torch(array: np.ndarray):
    """An output as torch, as the CPU path gives it: bfloat16 by its bits, int4 widened to int8."""
    import torch

    if array.dtype == DType.bfloat16.numpy:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    if array.dtype == DType.int4.numpy:
        return torch.from_numpy(array.astype(np.int8))
    return torch.from_numpy(array)

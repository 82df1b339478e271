"""Each kernel's weight form, measured once per machine: ``weights="auto"``, the default.

A kernel that stores a weight compressed (k-means codes, int4 or log2 nibbles,
a sparse layout) can also run on the same weight decoded and dense. The
lowering (:func:`~slimgraph.backends.tvm.lower.lower_graph`) hands every such
kernel, in both forms, to a :class:`FormChooser`, which keeps the compressed
form unless the decoded one is faster by more than :data:`DECODED_GAIN`. It
builds and times the two forms of that kernel alone (not the whole model),
in pairs of one call of each, and decides by the median of the pairs' ratios,
which a machine whose load drifts while it measures moves least; it writes the decision to a
:class:`FormCache`: a JSON file per machine, keyed by the target (CPU name,
features, cores) and the structural hashes of the kernel's two unscheduled
forms, which name neither weights nor layers. So identical layers are measured
once, the next compile of the same model measures nothing and takes the same
forms, and a graph with no compressed weight never reaches the chooser.

The cache lives in ``$SLIMGRAPH_CACHE_DIR`` (default ``~/.cache/slimgraph``) as
``weight-forms.json``; deleting it makes the next compile measure again.

Example::

    >>> import tempfile
    >>> cache = FormCache(tempfile.mkdtemp() + "/forms.json")
    >>> cache.get("k"), cache.put("k", {"form": "decoded"}), cache.get("k")
    (None, None, {'form': 'decoded'})
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from slimgraph.backends.tvm.lower import WEIGHT_FORMS, KernelForms
from slimgraph.backends.tvm.targets import TargetSpec
from slimgraph.errors import BackendError
from slimgraph.storage import write_private_file
from slimgraph.timing import Clock, measure

#: The environment variable naming the folder of slimgraph's per-machine caches.
CACHE_ENV = "SLIMGRAPH_CACHE_DIR"
CACHE_FILE = "weight-forms.json"
#: The decoded form is taken only when the compressed one is slower than it by more than this
#: factor: the compressed form holds less memory, and on a loaded machine a few percent is noise.
DECODED_GAIN = 1.10
#: Timed pairs (one call of each form, back to back) per kernel, after WARMUP calls of each.
PAIRS, WARMUP = 15, 2

#: The buffer dtypes :func:`time_kernel_forms` fills with numpy arrays.
NUMPY_DTYPES = frozenset({"float32", "float64", "float16", "int8", "uint8", "int32", "int64", "bool"})
#: ``time_forms(kernel)``: each form's time in ms, and optionally ``ratio``, compressed over decoded
#: time measured in pairs, which the decision then uses (the injectable part of :class:`FormChooser`).
FormTimer = Callable[[KernelForms], "dict[str, float]"]


def default_cache_path() -> Path:
    """``$SLIMGRAPH_CACHE_DIR/weight-forms.json``, else under ``~/.cache/slimgraph``."""
    folder = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "slimgraph")
    return Path(folder) / CACHE_FILE


class FormCache:
    """The per-machine record of measured kernel forms: a JSON object from key to decision.

    Writes replace the file atomically after merging with what is on disk, so two
    compiles at once lose at most a decision, which the next compile measures again."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # no cache yet, or a damaged one: measure again
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict | None:
        """The decision recorded under ``key`` (``{"form": ..., ...}``), or None."""
        record = self._read().get(key)
        return record if isinstance(record, dict) and record.get("form") in WEIGHT_FORMS else None

    def put(self, key: str, record: dict) -> None:
        """Record ``record`` under ``key``; a cache that cannot be written is skipped (the next
        compile measures again) rather than failing the compile."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = self._read()
            data[key] = record
            os.replace(write_private_file(self.path, json.dumps(data, indent=1, sort_keys=True).encode()), self.path)
        except OSError:
            pass


class FormChooser:
    """Chooses each kernel's form (see the module docstring); ``time_forms`` (default
    :func:`time_kernel_forms`) measures a kernel's two forms, ``cache`` keeps the decisions.
    ``measured`` lists the kernels this chooser measured (cache misses)."""

    def __init__(self, target: TargetSpec, cache: FormCache | None = None, time_forms: FormTimer | None = None):
        self.target = target
        self.cache = cache if cache is not None else FormCache()
        self.time_forms = time_forms or (lambda kernel: time_kernel_forms(kernel, target))
        self.measured: list[str] = []

    def key(self, kernel: KernelForms) -> str:
        """The cache key of ``kernel``: the target and the structural hashes of its two forms."""
        import tvm_ffi

        hashes = [str(tvm_ffi.structural_hash(kernel.forms[f].func)) for f in WEIGHT_FORMS]
        text = "|".join([str(self.target.tvm()), *hashes])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def __call__(self, kernel: KernelForms) -> str:
        if not self.target.can_run or not measurable(kernel):
            return "compressed"  # code for another machine cannot be timed here, nor a dynamic kernel at one size
        key = self.key(kernel)
        hit = self.cache.get(key)
        if hit is not None:
            return hit["form"]
        ms = self.time_forms(kernel)
        ratio = ms.get("ratio", ms["compressed"] / ms["decoded"])
        form = "decoded" if ratio > DECODED_GAIN else "compressed"
        self.cache.put(key, {"form": form, "compressed_ms": ms["compressed"], "decoded_ms": ms["decoded"],
                             "ratio": ratio, "kernel": kernel.node, "target": self.target.text})
        self.measured.append(kernel.name)
        return form


def measurable(kernel: KernelForms) -> bool:
    """Whether every buffer of both forms has a fixed size (no dynamic dims) and a dtype numpy
    can make seeded inputs of (bfloat16 kernels keep the compressed form unmeasured)."""
    from tvm import tirx

    for lowered in kernel.forms.values():
        if lowered.shape_args:
            return False
        for p in lowered.func.params:
            if any(not isinstance(d, (int, tirx.IntImm)) for d in p.ty.shape) or str(p.ty.dtype) not in NUMPY_DTYPES:
                return False
    return True


def time_kernel_forms(kernel: KernelForms, target: TargetSpec, clock: Clock = time.perf_counter) -> dict[str, float]:
    """Each form of ``kernel`` scheduled and built alone, then timed on its real weights and
    seeded random activations in ``PAIRS`` pairs of one call of each form: each form's median
    ms, and ``ratio``, the median of the pairs' compressed / decoded times."""
    import tvm

    from slimgraph.backends.tvm import tir_pipeline
    from slimgraph.backends.tvm.schedules import schedule_module

    rng = np.random.default_rng(0)
    runs = {}
    for form, lowered in kernel.forms.items():
        mod = schedule_module(tvm.IRModule({"kernel": lowered.func.with_attr("global_symbol", "kernel")}), target)
        try:
            function = tvm.compile(mod, target.tvm(), tir_pipeline=tir_pipeline.for_target(target))["kernel"]
        except Exception as exc:  # TVM's errors are long C++ traces; keep the first line
            raise BackendError(f"{kernel.node}: building its {form} form alone failed: "
                               f"{str(exc).strip().splitlines()[0]}") from exc
        args = []
        for i, buf in enumerate(p.ty for p in lowered.func.params):
            shape, dtype = tuple(int(d) for d in buf.shape), str(buf.dtype)
            key = lowered.used[i] if i < len(lowered.used) else ""
            if key.startswith("p:"):
                array = kernel.arrays[key[2:]]
            elif dtype.startswith("float") and i < len(lowered.used):
                array = rng.standard_normal(shape).astype(dtype)
            else:  # outputs, and integer inputs at zero: every index in range
                array = np.zeros(shape, dtype)
            args.append(tvm.runtime.tensor(np.ascontiguousarray(array)))
        runs[form] = (function, args)
    times: dict[str, list[float]] = {form: [] for form in runs}
    for pair in range(PAIRS):
        for form, (function, args) in runs.items():
            timing = measure(lambda: function(*args), runs=1, warmup=WARMUP if pair == 0 else 0, clock=clock,
                             max_cv=None)
            times[form].append(timing.median_ms)
    ratios = [c / d if d > 0 else 1.0 for c, d in zip(times["compressed"], times["decoded"])]
    return {**{form: float(np.median(t)) for form, t in times.items()}, "ratio": float(np.median(ratios))}

"""Variants: what the guard chooses among, and how it reads a call's inputs.

A :class:`Variant` is anything callable on arrays (a TVM CompiledModel, a
:class:`GraphRunner` over the reference interpreter) plus what the guard needs
to know about it: its width, the batch bucket it was specialized for (None
for the symbolic-batch fallback), its input types and device, its measured
latency and accuracy. :mod:`slimgraph.runtime.guard` picks one per call;
:mod:`slimgraph.runtime.guard_store` saves and loads them.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from slimgraph.arguments import check_int
from slimgraph.errors import SlimgraphError
from slimgraph.ir.types import DType, bind_dim


class GuardError(SlimgraphError):
    """A call no variant admits, a policy answer that names no candidate, or a bad variant set."""


class GraphRunner:
    """A variant backend that runs a Graph with the reference interpreter.

    It serves the symbolic-batch fallback (any batch size) and the tests that
    must not need TVM.

    Example::

        >>> import numpy as np
        >>> from slimgraph.ir import Graph, TensorType
        >>> g = Graph(); x = g.add_input("x", TensorType("f32", ("N",))); g.set_outputs([g.call("relu", x)])
        >>> GraphRunner(g)(np.array([-1.0, 1.0], np.float32)).tolist()
        [0.0, 1.0]
    """

    kind = "graph"
    thread_safe = True  # the interpreter keeps no state between calls

    def __init__(self, graph):
        self.ir = graph
        self.input_types = [v.type for v in graph.inputs]

    def __call__(self, *inputs: Any):
        outs = self.ir.run(*[np.asarray(x) for x in inputs])
        return outs[0] if len(outs) == 1 else tuple(outs)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.ir.save(path / "model.sg")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "GraphRunner":
        from slimgraph.ir.serialize import load

        return cls(load(Path(directory) / "model.sg"))


@dataclass
class Variant:
    """One compiled width of a model, specialized for one batch bucket (None: any batch).

    ``inputs`` default to the model's ``input_types``; ``device`` is the torch
    device type its inputs live on, ``cpu`` or ``cuda`` (default: its model's
    ``target.input_device``, else ``cpu``). ``depth`` is the fraction of the
    model's residual blocks it keeps (:mod:`slimgraph.runtime.depth`). ``threads`` runs the
    model on that many threads (its ``__call__`` takes ``threads=``, as a TVM
    CompiledModel's does); None leaves the model's own choice (a thread per core).

    Example::

        >>> import numpy as np
        >>> from slimgraph.ir import Graph, TensorType
        >>> g = Graph(); x = g.add_input("x", TensorType("f32", (8, 3))); g.set_outputs([g.call("relu", x)])
        >>> Variant("w100-b8", GraphRunner(g)).batch
        8
    """

    name: str
    model: Callable[..., Any]
    width: float = 1.0
    inputs: tuple = ()
    batch: int | None = field(default=None)
    device: str = ""
    latency_ms: float | None = None
    accuracy: float | None = None
    threads: int | None = None
    depth: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GuardError(f"variant name={self.name!r}: must be a non-empty string")
        if not callable(self.model):
            raise GuardError(f"variant {self.name}: model={type(self.model).__name__} is not callable")
        for what in ("width", "depth"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise GuardError(f"variant {self.name}: {what}={value!r} must be a fraction in (0, 1]")
        if self.batch is not None:
            check_int(f"variant {self.name}: batch", self.batch, minimum=1, error=GuardError)
        if not self.inputs:
            types = getattr(self.model, "input_types", None)
            if types is None:
                raise GuardError(f"variant {self.name}: give its input types (the model has no input_types)")
            self.inputs = tuple(types)
        self.inputs = tuple(self.inputs)
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].rank else None
        if self.batch is None and isinstance(first, int):
            self.batch = first
        if self.batch is not None and first != self.batch:
            raise GuardError(f"variant {self.name}: batch bucket {self.batch} but its first input is {self.inputs[0]}")
        if not self.device:
            target = getattr(self.model, "target", None)
            self.device = getattr(target, "input_device", "cpu")
        if self.threads is not None:
            if not is_thread_count(self.threads):
                raise GuardError(f"variant {self.name}: threads={self.threads!r} must be a positive number of threads")
            if self.device != "cpu":
                raise GuardError(f"variant {self.name}: threads={self.threads} applies to CPU variants, not {self.device}")
            if not _takes_threads(self.model):
                raise GuardError(
                    f"variant {self.name}: threads={self.threads} but {type(self.model).__name__} takes no thread count"
                )

    def __call__(self, *inputs: Any):
        """Run the model on ``inputs`` (with the variant's thread count, when it has one)."""
        if self.threads is None:
            return self.model(*inputs)
        return self.model(*inputs, threads=self.threads)

    @property
    def thread_class(self) -> float:
        """The thread count the ladder orders by (inf for the model's own choice, a thread per core)."""
        return math.inf if self.threads is None else float(self.threads)

    @property
    def spec(self) -> str:
        """The guard in words: ``(f32[8,1,8,8]) on cpu``."""
        return f"({', '.join(map(str, self.inputs))}) on {self.device}"

    def admits(self, arrays: Sequence[Any]) -> bool:
        """Whether the inputs fit this variant's types (symbolic dims bound consistently) and device."""
        if len(arrays) != len(self.inputs):
            return False
        bindings: dict[str, int] = {}
        for array, want in zip(arrays, self.inputs):
            dtype, shape, device = describe_input(array)
            if device != self.device or dtype != want.dtype.value or len(shape) != want.rank:
                return False
            if not all(bind_dim(d, s, bindings) for d, s in zip(want.shape, shape)):
                return False
        return True


def is_thread_count(n: Any) -> bool:
    """Whether ``n`` is a number of threads: a positive int (not a bool)."""
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1


def _takes_threads(model: Any) -> bool:
    """Whether calling ``model`` accepts a ``threads=`` keyword."""
    try:
        params = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):  # a callable Python cannot inspect: it cannot be told
        return False
    return any(p.name == "threads" or p.kind is p.VAR_KEYWORD for p in params)


def describe_input(x: Any) -> tuple[str, tuple[int, ...], str]:
    """dtype (IR short name when the IR has it), shape and device of a numpy array or torch tensor."""
    if type(x).__module__.startswith("torch") and hasattr(x, "device"):
        dtype, shape, device = str(x.dtype).removeprefix("torch."), tuple(x.shape), x.device.type
    else:
        array = np.asarray(x)
        dtype, shape, device = array.dtype, tuple(array.shape), "cpu"
    try:
        return DType.of(dtype).value, shape, device
    except SlimgraphError:
        return str(dtype), shape, device


def batch_of(inputs: Sequence[Any]) -> int:
    shape = describe_input(inputs[0])[1] if inputs else ()
    return int(shape[0]) if shape else 1

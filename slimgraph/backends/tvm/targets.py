"""Compilation targets: parsing ``llvm``, ``cuda:sm_90``, ``opencl``, host detection, the valid list.

A target spec is a short string. ``llvm`` is the host CPU with its features and
core count detected; ``llvm:znver3`` names the CPU. ``cuda`` detects the GPU's
architecture (through PyTorch when it sees a GPU, else ``nvidia-smi``) and
``cuda:sm_90`` gives it, so that CUDA code can be built on a machine without
a GPU. ``opencl`` produces OpenCL C source; this TVM build has no OpenCL
runtime, so such a model can be built and inspected but not run.

A parsed target (:class:`TargetSpec`) answers what the rest of slimgraph asks:
its device kind (``is_cpu``, ``is_gpu``), where its inputs live
(``input_device``), its capabilities (``features``, ``lanes``, ``has(...)``),
whether it can run here. Each kind is one :class:`TargetKind` subclass in one
file under ``target_kinds/`` (``llvm.py``, ``cuda.py``, ``opencl.py``):
adding a target is adding such a file and importing it from
``target_kinds/__init__.py``.

Example::

    >>> spec = parse_target("cuda:sm_90")
    >>> spec.kind, spec.arch, spec.is_gpu, spec.input_device
    ('cuda', 'sm_90', True, 'cuda')
    >>> cpu = parse_target("llvm")
    >>> cpu.is_cpu, cpu.lanes >= 4, cpu.has("avx512") == ("avx512" in cpu.features)
    (True, True, True)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import ClassVar

from slimgraph.errors import BackendError
from slimgraph.registry import Registry


class TargetError(BackendError):
    """An unknown target, or one that cannot run on this machine."""


class TargetKind:
    """What one kind of target is (``llvm``, ``cuda``, ``opencl``): one subclass per kind, in a
    file of its own under ``target_kinds/``, registered with :func:`target_kind`.

    Class attributes: ``name``, ``help`` (one line for messages), ``device`` (``"cpu"`` or
    ``"gpu"``), ``input_device`` (the torch device type whose tensors it reads without a copy),
    ``aliases`` (other names that parse to it), ``device_module`` (the kind of the TVM runtime
    module holding its device code; None for a CPU) and ``host_module`` (the host code's).
    Methods: :meth:`parse` (the text after ``kind:``), :meth:`tvm` (a ``tvm.target.Target``),
    :meth:`can_run` on this machine, :meth:`tvm_device` and :meth:`cannot_run_reason`.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    device: ClassVar[str] = "cpu"
    input_device: ClassVar[str] = "cpu"
    aliases: ClassVar[tuple[str, ...]] = ()
    device_module: ClassVar[str | None] = None
    host_module: ClassVar[str] = "llvm"  # TVM compiles every target's host code with LLVM

    def parse(self, arch: str, text: str) -> "TargetSpec":
        """The target for ``text`` (``kind:arch``); TargetError when ``arch`` is invalid."""
        raise NotImplementedError

    def spec(self, arch: str, text: str, features: frozenset[str] = frozenset(), lanes: int = 1) -> "TargetSpec":
        """A TargetSpec of this kind using every core of this machine (what :meth:`parse` returns)."""
        return TargetSpec(self.name, arch, cpu_cores(), text, features, lanes)

    @staticmethod
    def host(spec: "TargetSpec") -> dict:
        """The host CPU's part of a device target's TVM spec."""
        return {"kind": "llvm", "mcpu": host_cpu(), "num-cores": spec.cores}

    def tvm(self, spec: "TargetSpec"):
        raise NotImplementedError

    def can_run(self) -> bool:
        return False

    def tvm_device(self):
        raise NotImplementedError

    def cannot_run_reason(self, spec: "TargetSpec") -> str:
        """Why this machine cannot run ``spec`` (the list of targets that can is added to it)."""
        return f"target {spec.text!r} cannot run on this machine"


#: Every target kind by name (and alias); the modules of ``target_kinds/`` fill it.
TARGET_KINDS: Registry[str, TargetKind] = Registry("target kind")


def target_kind(cls: type[TargetKind]) -> type[TargetKind]:
    """Class decorator: register a :class:`TargetKind` under its name and aliases."""
    kind = cls()
    for name in (cls.name, *cls.aliases):
        TARGET_KINDS.register(name, kind)
    return cls


def target_kinds() -> dict[str, TargetKind]:
    """Every target kind by its name (aliases left out), loading the built-in ones first."""
    _load_kinds()
    return {name: kind for name, kind in TARGET_KINDS.items() if name == kind.name}


def _load_kinds() -> None:
    # The kind modules import this one to subclass TargetKind; importing them lazily breaks the cycle.
    import slimgraph.backends.tvm.target_kinds  # noqa: F401


def valid_targets() -> str:
    """One line per valid target kind, for error messages and ``--help``."""
    return "; ".join(f"{name}: {kind.help}" for name, kind in target_kinds().items())


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target: ``kind`` (llvm, cuda, opencl), ``arch`` (CPU name or ``sm_XY``),
    ``cores`` (CPU threads), the text it was parsed from, and its capabilities:
    ``features`` (short names such as ``avx512``, ``vnni``, ``bf16``, ``amx``) and ``lanes``
    (f32 vector lanes). Code outside this module asks these properties, never the kind's name.
    """

    kind: str
    arch: str
    cores: int
    text: str
    features: frozenset[str] = frozenset()
    lanes: int = 1

    @property
    def _kind(self) -> TargetKind:
        _load_kinds()
        return TARGET_KINDS[self.kind]

    @property
    def device_kind(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return self._kind.device

    @property
    def is_cpu(self) -> bool:
        return self.device_kind == "cpu"

    @property
    def is_gpu(self) -> bool:
        return self.device_kind == "gpu"

    @property
    def device_module(self) -> str | None:
        """The kind of the TVM runtime module that holds the device code (``cuda``; None on a CPU)."""
        return self._kind.device_module

    @property
    def host_module(self) -> str:
        """The kind of the TVM runtime module that holds the host code."""
        return self._kind.host_module

    @property
    def input_device(self) -> str:
        """The torch device type (``cpu``, ``cuda``) of the tensors a compiled model reads without a copy."""
        return self._kind.input_device

    def has(self, *features: str) -> bool:
        """Whether the target has every capability named (``has("avx512", "vnni")``)."""
        return set(features) <= self.features

    @property
    def can_run(self) -> bool:
        """Whether this machine can execute code built for the target."""
        return self._kind.can_run()

    def tvm(self):
        """The ``tvm.target.Target`` (a JSON-dict target; TVM 0.27 rejects strings)."""
        return self._kind.tvm(self)

    def has_cpu_features(self, *features: str) -> bool:
        """Whether a CPU target has every LLVM feature named (e.g. ``avx512vnni``)."""
        if not self.is_cpu:
            return False
        from tvm.target import codegen

        return bool(codegen.target_has_features(list(features), self.tvm()))

    def device(self):
        """The TVM device to run on; TargetError when this machine cannot run the target."""
        if not self.can_run:
            raise TargetError(self.cannot_run_reason())
        return self._kind.tvm_device()

    def cannot_run_reason(self) -> str:
        return f"{self._kind.cannot_run_reason(self)}. Targets that can run here: {', '.join(runnable_targets())}"


def runnable_targets() -> list[str]:
    """Target kinds whose code this machine can execute."""
    return [name for name, kind in target_kinds().items() if kind.can_run()]


def parse_target(spec: "str | TargetSpec") -> TargetSpec:
    """Parse ``kind`` or ``kind:arch``: ``llvm``, ``llvm:CPU``, ``cuda``, ``cuda:sm_XY``, ``opencl``.

    An unknown kind raises :class:`TargetError` listing the valid ones; ``cuda``
    without an architecture on a machine without a GPU asks for one.
    """
    if isinstance(spec, TargetSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TargetError(f"target must be a string such as 'llvm', got {spec!r}; valid targets: {valid_targets()}")
    text = spec.strip()
    name, _, arch = text.partition(":")
    _load_kinds()
    kind = TARGET_KINDS.get(name.strip().lower())
    if kind is None:
        raise TargetError(f"unknown target {text!r}; valid targets: {valid_targets()}")
    return kind.parse(arch.strip(), text)


def cpu_cores() -> int:
    """Cores this process may run on (all of them, as ``llvm`` uses)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def host_cpu() -> str:
    """LLVM's name for the host CPU (it implies the CPU's vector features)."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


@functools.lru_cache(maxsize=None)
def llvm_cpus() -> tuple[str, ...]:
    """The CPU names LLVM accepts for this machine's architecture (``llvm:CPU``)."""
    import tvm
    from tvm.target import codegen

    return tuple(sorted(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm"}))))

"""Compilation targets: parsing ``llvm``, ``cuda:sm_90``, ``opencl``, host detection, the valid list.

A target spec is a short string. ``llvm`` is the host CPU with its features and
core count detected; ``llvm:znver3`` names the CPU. ``cuda`` detects the GPU's
architecture (through PyTorch when it sees a GPU, else ``nvidia-smi``) and
``cuda:sm_90`` gives it, so that CUDA code can be built on a machine without
a GPU. ``opencl`` produces OpenCL C source; this TVM build has no OpenCL
runtime, so such a model can be built and inspected but not run.

Example::

    >>> spec = parse_target("cuda:sm_90")
    >>> spec.kind, spec.arch, spec.is_gpu
    ('cuda', 'sm_90', True)
    >>> parse_target("llvm").kind
    'llvm'
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from slimgraph.errors import BackendError

#: The valid target kinds, with what each means; error messages list them.
TARGET_HELP = {
    "llvm": "the host CPU (features and cores detected); llvm:CPU names the CPU, e.g. llvm:znver3",
    "cuda": "an NVIDIA GPU (architecture detected); cuda:sm_XY gives it, e.g. cuda:sm_90",
    "opencl": "OpenCL C source (builds here; this TVM build cannot run it)",
}


class TargetError(BackendError):
    """An unknown target, or one that cannot run on this machine."""


def valid_targets() -> str:
    """One line per valid target kind, for error messages and ``--help``."""
    return "; ".join(f"{kind}: {text}" for kind, text in TARGET_HELP.items())


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target: ``kind`` (llvm, cuda, opencl), ``arch`` (CPU name or
    ``sm_XY``), ``cores`` (CPU threads), the text it was parsed from, and for
    the host CPU the LLVM features it has beyond what ``arch`` implies."""

    kind: str
    arch: str
    cores: int
    text: str
    features: tuple[str, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "opencl")

    @property
    def can_run(self) -> bool:
        """Whether this machine can execute code built for the target."""
        if self.kind == "llvm":
            return True
        if self.kind == "cuda":
            return _cuda_available()
        return False

    def tvm(self):
        """The ``tvm.target.Target`` (a JSON-dict target; TVM 0.27 rejects strings)."""
        import tvm

        if self.kind == "llvm":
            extra = {"mattr": list(self.features)} if self.features else {}
            return tvm.target.Target({"kind": "llvm", "mcpu": self.arch, "num-cores": self.cores, **extra})
        host = {"kind": "llvm", "mcpu": host_cpu(), "num-cores": self.cores}
        spec = {"kind": self.kind, "host": host}
        if self.kind == "cuda":
            # 48 KiB is what every architecture grants without opting in
            spec.update(arch=self.arch, max_shared_memory_per_block=49152)
        return tvm.target.Target(spec)

    def has_cpu_features(self, *features: str) -> bool:
        """Whether an ``llvm`` target's CPU has every LLVM feature named (e.g. ``avx512vnni``)."""
        if self.kind != "llvm":
            return False
        from tvm.target import codegen

        return bool(codegen.target_has_features(list(features), self.tvm()))

    def device(self):
        """The TVM device to run on; TargetError when this machine cannot run the target."""
        import tvm

        if not self.can_run:
            raise TargetError(self.cannot_run_reason())
        return tvm.cpu(0) if self.kind == "llvm" else tvm.cuda(0)

    def cannot_run_reason(self) -> str:
        if self.kind == "opencl":
            return ("target 'opencl' builds OpenCL C source only: this TVM build has no OpenCL runtime, so the model "
                    "cannot run here (inspect .kernels[i].source instead). Targets that can run here: "
                    + ", ".join(runnable_targets()))
        return (f"target {self.text!r} cannot run here: no CUDA GPU is visible. The model was built and can be "
                f"saved and run on a GPU machine. Targets that can run here: {', '.join(runnable_targets())}")


def runnable_targets() -> list[str]:
    """Target kinds whose code this machine can execute."""
    return ["llvm"] + (["cuda"] if _cuda_available() else [])


def parse_target(spec: "str | TargetSpec") -> TargetSpec:
    """Parse ``llvm``, ``llvm:CPU``, ``cuda``, ``cuda:sm_XY`` or ``opencl``.

    An unknown kind raises :class:`TargetError` listing the valid ones; ``cuda``
    without an architecture on a machine without a GPU asks for one.
    """
    if isinstance(spec, TargetSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TargetError(f"target must be a string such as 'llvm', got {spec!r}; valid targets: {valid_targets()}")
    text = spec.strip()
    kind, _, arch = text.partition(":")
    kind = kind.strip().lower()
    cores = cpu_cores()
    if kind in ("llvm", "cpu"):
        if arch and arch not in llvm_cpus():
            # LLVM would fall back to a generic CPU and the model would still carry the bad name
            raise TargetError(f"target {text!r}: LLVM knows no CPU {arch!r}; valid CPUs: {', '.join(llvm_cpus())}")
        return TargetSpec("llvm", arch, cores, text) if arch else TargetSpec("llvm", host_cpu(), cores, text,
                                                                                  host_extra_features())
    if kind == "cuda":
        arch = arch or _detect_cuda_arch()
        if not re.fullmatch(r"sm_\d+[a-z]?", arch):
            raise TargetError(f"target {text!r}: CUDA architecture {arch!r} is not of the form sm_XY (e.g. cuda:sm_90)")
        return TargetSpec("cuda", arch, cores, text)
    if kind == "opencl":
        if arch:
            raise TargetError(f"target {text!r}: opencl takes no architecture; valid targets: {valid_targets()}")
        return TargetSpec("opencl", "", cores, text)
    raise TargetError(f"unknown target {text!r}; valid targets: {valid_targets()}")


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


#: /proc/cpuinfo flags -> LLVM features that a CPU name can miss: a virtual machine may report an
#: older model number (LLVM names this Sapphire Rapids guest "rocketlake") while passing bf16 on.
#: AMX is left out until a kernel uses it: enabling LLVM's amx-* features made this guest's float32
#: convs 2-4x slower (MobileNetV2's kernels, measured).
_CPUINFO_FEATURES = {"avx512_bf16": "avx512bf16"}


@functools.lru_cache(maxsize=None)
def host_extra_features() -> tuple[str, ...]:
    """LLVM features (``+avx512bf16``, ...) the host has but its LLVM CPU name does not imply."""
    import tvm
    from tvm.target import codegen

    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: the CPU name is all there is
        return ()
    named = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})
    return tuple(f"+{feature}" for flag, feature in _CPUINFO_FEATURES.items()
                 if flag in flags and not codegen.target_has_features([feature], named))


@functools.lru_cache(maxsize=None)
def llvm_cpus() -> tuple[str, ...]:
    """The CPU names LLVM accepts for this machine's architecture (``llvm:CPU``)."""
    import tvm
    from tvm.target import codegen

    return tuple(sorted(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm"}))))


@functools.lru_cache(maxsize=None)
def _cuda_available() -> bool:
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:  # a TVM without CUDA runtime support counts as no GPU
        return False


def _detect_cuda_arch() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"sm_{major}{minor}"
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout.split()
            if out:
                return "sm_" + out[0].replace(".", "")
        except (subprocess.SubprocessError, OSError):
            pass
    raise TargetError("target 'cuda': no GPU found to detect its architecture; give it, e.g. cuda:sm_90 "
                      f"(valid targets: {valid_targets()})")

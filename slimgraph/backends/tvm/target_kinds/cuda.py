"""``cuda``: an NVIDIA GPU; ``cuda:sm_XY`` gives its architecture, so code builds without a GPU."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

from slimgraph.backends.tvm.targets import TargetError, TargetKind, TargetSpec, target_kind, valid_targets


@target_kind
class CUDA(TargetKind):
    name = "cuda"
    help = "an NVIDIA GPU (architecture detected); cuda:sm_XY gives it, e.g. cuda:sm_90"
    device = "gpu"
    input_device = "cuda"
    device_module = "cuda"

    def parse(self, arch: str, text: str) -> TargetSpec:
        arch = arch or _detect_cuda_arch()
        if not re.fullmatch(r"sm_\d+[a-z]?", arch):
            raise TargetError(f"target {text!r}: CUDA architecture {arch!r} is not of the form sm_XY (e.g. cuda:sm_90)")
        return self.spec(arch, text)

    def tvm(self, spec: TargetSpec):
        import tvm

        # 48 KiB is what every architecture grants without opting in
        return tvm.target.Target({"kind": "cuda", "host": self.host(spec), "arch": spec.arch,
                                  "max_shared_memory_per_block": 49152})

    def can_run(self) -> bool:
        return _cuda_available()

    def tvm_device(self):
        import tvm

        return tvm.cuda(0)

    def cannot_run_reason(self, spec: TargetSpec) -> str:
        return (f"target {spec.text!r} cannot run here: no CUDA GPU is visible. The model was built and can be "
                f"saved and run on a GPU machine")


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

"""``opencl``: OpenCL C source for a GPU; this TVM build has no OpenCL runtime to run it."""

from __future__ import annotations

from slimgraph.backends.tvm.targets import TargetError, TargetKind, TargetSpec, target_kind, valid_targets


@target_kind
class OpenCL(TargetKind):
    name = "opencl"
    help = "OpenCL C source (builds here; this TVM build cannot run it)"
    device = "gpu"
    input_device = "cpu"  # no torch device holds OpenCL buffers: inputs come from host memory
    device_module = "opencl"

    def parse(self, arch: str, text: str) -> TargetSpec:
        if arch:
            raise TargetError(f"target {text!r}: opencl takes no architecture; valid targets: {valid_targets()}")
        return self.spec("", text)

    def tvm(self, spec: TargetSpec):
        import tvm

        return tvm.target.Target({"kind": "opencl", "host": self.host(spec)})

    def cannot_run_reason(self, spec: TargetSpec) -> str:
        return ("target 'opencl' builds OpenCL C source only: this TVM build has no OpenCL runtime, so the model "
                "cannot run here (inspect .kernels[i].source instead)")

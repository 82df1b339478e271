"""``opencl``: OpenCL C kernels built by TVM and run through PyOpenCL (slimgraph.backends.opencl),
on the first OpenCL GPU, else any OpenCL device (PoCL's CPU device with the ``opencl`` extra)."""

from __future__ import annotations

from slimgraph.backends.tvm.targets import TargetError, TargetKind, TargetSpec, target_kind, valid_targets


@target_kind
class OpenCL(TargetKind):
    name = "opencl"
    help = "OpenCL C kernels run through PyOpenCL (the first GPU, else PoCL's CPU device)"
    device = "gpu"
    input_device = "cpu"  # no torch device holds OpenCL buffers: inputs come from host memory
    device_module = "opencl"
    runtime = "pyopencl"  # the TVM wheel has no OpenCL runtime

    def parse(self, arch: str, text: str) -> TargetSpec:
        if arch:
            raise TargetError(f"target {text!r}: opencl takes no architecture; valid targets: {valid_targets()}")
        return self.spec("", text)

    def tvm(self, spec: TargetSpec):
        import tvm

        return tvm.target.Target({"kind": "opencl", "host": self.host(spec)})

    def can_run(self) -> bool:
        from slimgraph.backends.opencl.model import opencl_available

        return opencl_available()

    def tvm_device(self):
        raise TargetError("target 'opencl' runs through PyOpenCL (slimgraph.backends.opencl), not a TVM device")

    def cannot_run_reason(self, spec: TargetSpec) -> str:
        from slimgraph.backends.opencl.model import device_name

        try:
            return f"target 'opencl' runs on {device_name()} through PyOpenCL"
        except TargetError as exc:  # what is missing: PyOpenCL, a platform, a device
            return str(exc).rstrip(".")

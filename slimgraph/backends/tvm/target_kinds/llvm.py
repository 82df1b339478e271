"""``llvm``: the host CPU (``llvm:CPU`` names another), its vector features and core count detected."""

from __future__ import annotations

import functools

from slimgraph.backends.tvm.targets import TargetError, TargetKind, TargetSpec, host_cpu, llvm_cpus, target_kind

#: Capability name -> the LLVM features that grant it (any of them).
FEATURES = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx512": ("avx512f",),
    "vnni": ("avx512vnni",),
    "bf16": ("avx512bf16",),
    "amx": ("amx-int8",),
}


@target_kind
class LLVM(TargetKind):
    name = "llvm"
    help = "the host CPU (features and cores detected); llvm:CPU names the CPU, e.g. llvm:znver3"
    device = "cpu"
    input_device = "cpu"
    aliases = ("cpu",)

    def parse(self, arch: str, text: str) -> TargetSpec:
        if arch and arch not in llvm_cpus():
            # LLVM would fall back to a generic CPU and the model would still carry the bad name
            raise TargetError(f"target {text!r}: LLVM knows no CPU {arch!r}; valid CPUs: {', '.join(llvm_cpus())}")
        cpu = arch or host_cpu()
        features = cpu_features(cpu)
        lanes = 16 if "avx512" in features else 8 if "avx2" in features else 4
        return self.spec(cpu, text, features, lanes)

    def tvm(self, spec: TargetSpec):
        import tvm

        return tvm.target.Target({"kind": "llvm", "mcpu": spec.arch, "num-cores": spec.cores})

    def can_run(self) -> bool:
        return True

    def tvm_device(self):
        import tvm

        return tvm.cpu(0)


@functools.lru_cache(maxsize=None)
def cpu_features(cpu: str) -> frozenset[str]:
    """The capabilities (keys of :data:`FEATURES`) LLVM grants CPU ``cpu``."""
    import tvm
    from tvm.target import codegen

    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    return frozenset(name for name, llvm in FEATURES.items()
                     if any(codegen.target_has_features([f], target) for f in llvm))

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
    "amx": ("amx-bf16",),
}

#: Capabilities only one kernel function uses, through inline assembly (``ops/amx.py``): never
#: added to the module's features, since enabling LLVM's amx-* features module-wide made this
#: guest's float32 convs 2-4x slower (MobileNetV2's kernels).
KERNEL_FEATURES = frozenset({"amx"})


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
        features = cpu_features(cpu) | (frozenset() if arch else host_extra_features())
        lanes = 16 if "avx512" in features else 8 if "avx2" in features else 4
        return self.spec(cpu, text, features, lanes)

    def tvm(self, spec: TargetSpec):
        import tvm

        # capabilities the CPU name does not imply (see host_extra_features) become LLVM attributes
        extra = sorted(f"+{FEATURES[c][0]}" for c in spec.features - cpu_features(spec.arch) - KERNEL_FEATURES)
        return tvm.target.Target({"kind": "llvm", "mcpu": spec.arch, "num-cores": spec.cores,
                                  **({"mattr": extra} if extra else {})})

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


#: /proc/cpuinfo flags -> capabilities that a CPU name can miss: a virtual machine may report an
#: older model number (LLVM names this Sapphire Rapids guest "rocketlake") while passing bf16 and
#: AMX on (``amx_bf16``: tiles with bf16 dot products).
CPUINFO_FLAGS = {"avx512_bf16": "bf16", "amx_bf16": "amx"}


@functools.lru_cache(maxsize=None)
def host_extra_features() -> frozenset[str]:
    """Capabilities of the host CPU that ``/proc/cpuinfo`` shows (see :data:`CPUINFO_FLAGS`)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: the CPU name is all there is
        return frozenset()
    return frozenset(capability for flag, capability in CPUINFO_FLAGS.items() if flag in flags)

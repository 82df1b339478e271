"""The target type: kinds in one file each, capabilities, and no target-name checks elsewhere."""

from __future__ import annotations

import ast

import pytest

from slimgraph.backends.tvm.targets import (
    TARGET_KINDS,
    TargetKind,
    TargetSpec,
    parse_target,
    runnable_targets,
    target_kind,
    target_kinds,
    valid_targets,
)
from slimgraph.errors import RegistrationError
from tests import layering


def test_each_kind_says_its_device_and_where_its_inputs_live():
    cpu, gpu, ocl = parse_target("llvm"), parse_target("cuda:sm_90"), parse_target("opencl")
    assert (cpu.is_cpu, cpu.is_gpu, cpu.input_device) == (True, False, "cpu")
    assert (gpu.is_cpu, gpu.is_gpu, gpu.input_device) == (False, True, "cuda")
    assert (ocl.is_gpu, ocl.input_device) == (True, "cpu")  # OpenCL buffers are filled from host memory
    assert parse_target("cpu").kind == "llvm" and list(target_kinds()) == ["llvm", "cuda", "opencl"]
    assert "llvm" in runnable_targets() and not ocl.can_run


def test_cpu_capabilities_follow_the_features_llvm_reports():
    cpu = parse_target("llvm")
    assert cpu.has("avx512") == cpu.has_cpu_features("avx512f")
    assert cpu.has("vnni") == cpu.has_cpu_features("avx512vnni")
    assert cpu.lanes == (16 if cpu.has("avx512") else 8 if cpu.has("avx2") else 4)
    old = parse_target("llvm:core2")  # SSE only: no wide vectors, no VNNI
    assert old.features.isdisjoint({"avx2", "avx512", "vnni", "amx"}) and old.lanes == 4
    assert not parse_target("cuda:sm_90").features


def test_a_new_kind_is_one_class_registered_with_its_name():
    with TARGET_KINDS.scoped():
        @target_kind
        class Accel(TargetKind):
            name = "accel"
            help = "a test accelerator"
            device = "gpu"

            def parse(self, arch, text):
                return TargetSpec("accel", arch or "v1", 1, text, frozenset({"int8"}), 32)

        spec = parse_target("accel:v2")
        assert (spec.arch, spec.is_gpu, spec.has("int8"), spec.can_run) == ("v2", True, True, False)
        assert "accel: a test accelerator" in valid_targets()
        with pytest.raises(RegistrationError, match="target kind 'accel' is already registered"):
            target_kind(Accel)
    assert "accel" not in TARGET_KINDS


NAMES = {"llvm", "cuda", "opencl", "cpu"}


def _target_checks(module: str) -> list[str]:
    """Comparisons of a target's kind or a class's name with a literal, in ``module``."""
    path = layering.PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        text = " ".join(ast.unparse(s) for s in sides)
        literals = {s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)}
        literals |= {e.value for s in sides if isinstance(s, (ast.Tuple, ast.List, ast.Set)) for e in s.elts
                     if isinstance(e, ast.Constant)}
        if ("target" in text or "spec" in text) and literals & NAMES or ".__name__" in text and literals:
            found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_target_name_or_class_name_is_compared_outside_the_target_type():
    where = [m for m in layering.modules()
             if not m.startswith("slimgraph.backends.tvm.target")]  # targets.py and target_kinds/
    checks = [c for m in where for c in _target_checks(m)]
    assert not checks, "ask the TargetSpec (is_cpu, input_device, has(...)) instead:\n" + "\n".join(checks)

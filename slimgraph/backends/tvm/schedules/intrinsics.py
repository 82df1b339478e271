"""Tensor intrinsics the CPU rules tensorize with.

TVM ships a VNNI 16x4 dot-product intrinsic, but its implementation passes
``vpdpbusd`` int32 vectors, the signature of older LLVMs; the LLVM in this TVM
wheel declares the byte operands as ``<64 x i8>`` and rejects the call. The
intrinsic here has the same description with that signature. (Importing TVM's
``tensor_intrin`` package would also parse every target's intrinsics, about
30 s, so the description is written here too.)

Example::

    >>> from slimgraph.backends.tvm.schedules.intrinsics import vnni_dot_16x4
    >>> vnni_dot_16x4()
    'slimgraph_dot_16x4_vnni'
"""

from __future__ import annotations

import functools

#: Name of the registered VNNI intrinsic: C[16] int32 += A[4] uint8 . B[16, 4] int8.
VNNI_DOT_16x4 = "slimgraph_dot_16x4_vnni"


@functools.lru_cache(maxsize=None)
def vnni_dot_16x4() -> str:
    """Register the VNNI 16x4 intrinsic once; returns its name for ``Schedule.tensorize``."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    TensorIntrin.register(VNNI_DOT_16x4, desc, impl)
    return VNNI_DOT_16x4

"""Tensor intrinsics the CPU rules tensorize with.

TVM ships a VNNI 16x4 dot-product intrinsic, but its implementation passes
``vpdpbusd`` int32 vectors, the signature of older LLVMs; the LLVM in this TVM
wheel declares the byte operands as ``<64 x i8>`` and rejects the call. The
intrinsic here has the same description with that signature. (Importing TVM's
``tensor_intrin`` package would also parse every target's intrinsics, about
30 s, so the description is written here too.)

TVM's LLVM code generator has no ``bfloat`` type: its legalization computes
bfloat16 in float32 and stores it as uint16, so ``vdpbf16ps`` (whose LLVM
intrinsic takes ``<32 x bfloat>``) cannot be called from TIR directly. The
bf16 intrinsic here keeps bf16 values as their uint16 bits and calls a small
LLVM IR function (:data:`DPBF16PS_LLVM`, linked into the kernel through a
``pragma_import_llvm`` annotation and inlined) that reinterprets them.

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


#: Name of the registered AVX512-BF16 intrinsic: C[16] float32 += A . B[16], each of A and B[i] a
#: pair of bf16 values packed in an int32 (the first in the low half).
BF16_DOT_16x2 = "slimgraph_dot_16x2_bf16"

#: The LLVM function the bf16 intrinsic calls: ``vdpbf16ps`` on bf16 pairs passed as int32 lanes.
#: ``linkonce_odr``: every kernel that uses it links a copy, and the copies merge.
DPBF16PS_LLVM = """
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
define linkonce_odr <16 x float> @slimgraph_dpbf16ps(<16 x float> %acc, <16 x i32> %a, <16 x i32> %b) alwaysinline {
  %ab = bitcast <16 x i32> %a to <32 x bfloat>
  %bb = bitcast <16 x i32> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %ab, <32 x bfloat> %bb)
  ret <16 x float> %r
}
"""


def bf16_half(pair, i):
    """The float32 value of bf16 number ``i`` (0: low half, 1: high half) of an int32 ``pair``:
    a bf16's bits are the upper half of the float32 it equals."""
    from tvm import tirx

    bits = tirx.Cast("uint32", pair) >> (tirx.Cast("uint32", i) * tirx.const(16, "uint32"))
    return tirx.reinterpret("float32", bits << tirx.const(16, "uint32"))


def bf16_bits(value):
    """The bf16 bits (in a uint32's low half) of a float32 expression, rounded to nearest even
    (exact for values that are bf16 already)."""
    from tvm import tirx

    bits = tirx.reinterpret("uint32", value)
    one, half = tirx.const(1, "uint32"), tirx.const(16, "uint32")
    return (bits + tirx.const(0x7FFF, "uint32") + ((bits >> half) & one)) >> half


@functools.lru_cache(maxsize=None)
def bf16_dot_16x2() -> str:
    """Register the AVX512-BF16 16x2 intrinsic once; returns its name for ``Schedule.tensorize``.
    A kernel tensorized with it must carry :data:`DPBF16PS_LLVM` (see ``pragma_import_llvm``)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((1,), "int32", offset_factor=1),
        B: T.Buffer((16,), "int32", offset_factor=1),
        C: T.Buffer((16,), "float32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:1], B[0:16])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + bf16_half(A[0], vk) * bf16_half(B[vi], vk)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((1,), "int32", offset_factor=1),
        B: T.Buffer((16,), "int32", offset_factor=1),
        C: T.Buffer((16,), "float32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:1], B[0:16])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_pure_extern(
                "float32x16",
                "slimgraph_dpbf16ps",
                C.vload([0], dtype="float32x16"),
                T.broadcast(A[0], 16),
                B.vload([0], dtype="int32x16"),
            )

    TensorIntrin.register(BF16_DOT_16x2, desc, impl)
    return BF16_DOT_16x2

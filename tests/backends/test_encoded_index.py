"""A packed weight's bit positions are computed in a type that holds them: int32 overflows past
2^31 bits (a 128k x 4096 LM head at 8 bits), and a negative byte index reads out of bounds."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import te  # noqa: E402

from slimgraph.backends.tvm.encoded import flat_index, unpack_code  # noqa: E402
from slimgraph.backends.tvm.ops.common import dtype_of  # noqa: E402


@pytest.mark.parametrize("shape, bits, dtype", [((64, 64), 4, "int32"), ((131072, 4096), 8, "int64"),
                                                ((2**27, 4), 4, "int64"), ((2**26, 4), 3, "int32")])
def test_bit_positions_widen_to_int64_when_they_pass_int32(shape, bits, dtype):
    idx = [te.var(f"i{d}", "int64") for d in range(len(shape))]
    assert dtype_of(flat_index(idx, shape, bits)) == dtype


def test_a_wide_index_unpacks_the_same_codes():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, 40)
    bits = 3
    stream = 0
    for n, c in enumerate(codes):
        stream |= int(c) << (n * bits)
    packed_np = np.frombuffer(stream.to_bytes((len(codes) * bits + 7) // 8 + 1, "little"), np.uint8)
    packed = te.placeholder((len(packed_np),), "uint8", name="packed")
    for dtype in ("int32", "int64"):
        out = te.compute((len(codes),), lambda i: unpack_code(packed, i.astype(dtype), bits, len(packed_np) - 1))
        func = tvm.compile(te.create_prim_func([packed, out]), target="llvm")
        got = tvm.runtime.empty((len(codes),), "int32")
        func(tvm.runtime.tensor(packed_np), got)
        np.testing.assert_array_equal(got.numpy(), codes)

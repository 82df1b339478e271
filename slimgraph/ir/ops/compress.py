"""Compressed-weight ops: ``codebook_decode`` turns packed codes and a codebook back into a tensor.

Weight sharing (``share-weights{method=kmeans}``) stores a layer's weight as a
small codebook (``2^bits`` float centroids) and one ``bits``-wide code per
element, packed little-endian into a ``u8`` bit stream (element ``i`` holds
bits ``i*bits .. i*bits+bits-1``). A backend decodes it once at load time
(the inputs are constants) or inside the kernel that reads the weight.

Example::

    >>> import numpy as np
    >>> codes = np.array([0, 3, 1, 2], np.uint8)
    >>> packed = pack_codes(codes, bits=2)
    >>> packed, unpack_codes(packed, 2, 4)
    (array([156], dtype=uint8), array([0, 3, 1, 2], dtype=uint8))
    >>> codebook_decode_ref(packed, np.float32([0, 1, 2, 3]), bits=2, shape=(2, 2)).tolist()
    [[0.0, 3.0], [1.0, 2.0]]
"""

from __future__ import annotations

import math

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.registry import Attr, In, define_op, require_float
from slimgraph.ir.types import DType, TensorType


def packed_size(count: int, bits: int) -> int:
    """Bytes holding ``count`` codes of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack integer codes (each < 2^bits) into a little-endian ``u8`` bit stream."""
    codes = np.asarray(codes, np.uint8).ravel()
    planes = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.ravel(), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes of a bit stream made by :func:`pack_codes`, as ``u8``."""
    planes = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: count * bits].reshape(count, bits)
    return (planes.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)


def _infer(types, attrs):
    indices, codebook = types
    bits, shape = attrs["bits"], attrs["shape"]
    if not 1 <= bits <= 8:
        raise GraphError(f"bits must lie in 1..8, got {bits}")
    if any(d < 0 for d in shape):
        raise GraphError(f"shape must have non-negative dims, got {list(shape)}")
    if indices.dtype != DType.uint8 or indices.rank != 1:
        raise GraphError(f"indices must be a 1-d u8 tensor of packed codes, got {indices}")
    want = packed_size(math.prod(shape), bits)
    if indices.shape[0] != want:
        raise GraphError(f"indices hold {indices.shape[0]} bytes; {math.prod(shape)} codes of {bits} bits need {want}")
    require_float(codebook, "codebook")
    if codebook.rank != 1 or not isinstance(codebook.shape[0], int) or not 1 <= codebook.shape[0] <= 2**bits:
        raise GraphError(f"codebook must be 1-d with 1..{2 ** bits} entries, got {codebook}")
    return [TensorType(codebook.dtype, tuple(shape))]


def codebook_decode_ref(indices: np.ndarray, codebook: np.ndarray, *, bits: int, shape: tuple) -> np.ndarray:
    """The numpy reference: ``codebook[codes].reshape(shape)``; codes past the codebook clamp to its end."""
    codes = unpack_codes(indices, bits, math.prod(shape))
    return codebook[np.minimum(codes, codebook.shape[0] - 1)].reshape(shape)


define_op(
    "codebook_decode",
    inputs=[In("indices", doc="u8[ceil(numel*bits/8)]: packed codes"), In("codebook", doc="float[K], K <= 2^bits")],
    attrs=[
        Attr("bits", "int", doc="bits per code, 1..8"),
        Attr("shape", "ints", doc="shape of the decoded tensor"),
    ],
    infer=_infer,
    impl=codebook_decode_ref,
    flops=lambda ins, outs, attrs: 0,
    category="injective",
    doc="Decodes a weight-shared tensor: codebook[unpacked codes], reshaped. FLOPs: 0 (a table lookup).",
)

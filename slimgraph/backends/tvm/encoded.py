"""Weights held compressed in the compiled model and decoded inside the kernels that read them.

A kernel whose weight the IR stores compressed gets an :class:`Encoding` for
it: k-means codes plus their codebook (``codebook_decode`` of constants),
int4 (an ``i4`` constant), or 4-bit power-of-two exponents (an int8 constant
whose every value is 0 or +-2^k, k <= 6, as ``lower-quantized`` writes log2
weights). Every weight parameter the kernel's lowering asks for (the weight
itself, or a re-laid-out copy such as the packed ``[N/B, K, B]`` matmul
layout) whose values the encoding can hold is stored encoded, and the kernel
reads it through a TE stage that unpacks the code (and looks it up). The CPU
schedules either inline that stage into the reading loop or, for the tiled
rules, decode one weight panel at a time into a small buffer ahead of the
register tile that reuses it, so no decoded copy of the whole weight exists at
run time. Re-layouts only permute, and pad with copies of edge values (a zero
need not be in a codebook), so a re-laid-out copy keeps the weight's values.

Codes of ``bits`` bits are packed little-endian into ``u8`` as
:func:`slimgraph.ir.ops.compress.pack_codes` does (element ``i`` in bits
``i*bits ..``); the int4 and log2 nibbles are two's complement.

Example::

    >>> import numpy as np
    >>> enc = Encoding("int4", least=4)
    >>> parts = enc.encode(np.array([[1, -2], [7, -8]], np.int8))
    >>> [(name, a.tolist()) for name, a in parts]
    [('codes', [225, 135])]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slimgraph.ir.ops.compress import pack_codes
from slimgraph.ir.ops.quant import log2_codes

#: The schedule hint of a decoding stage: the CPU rules decode a tile's weights once per
#: reduction step, ahead of the register tile that reuses them (see ``schedules/cpu.py``).
DECODE_ATTRS = {"sg.rule": "decode"}

@dataclass(frozen=True, eq=False)
class Encoding:
    """How a kernel's weight is stored: ``kind`` (codebook, int4, log2), the fewest
    elements an array must have to be stored so (the weight's own count: smaller
    parameters such as biases stay plain), and for ``codebook`` its table and bits."""

    kind: str
    least: int
    codebook: np.ndarray | None = None
    bits: int = 4

    def encode(self, array: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
        """The packed parts holding ``array`` exactly (``[(suffix, u8 codes), ...]``), or None
        when it is too small or holds values this encoding cannot."""
        if array.size < self.least:
            return None
        if self.kind == "codebook":
            if array.dtype != self.codebook.dtype:
                return None
            order = np.argsort(self.codebook, kind="stable")
            pos = np.clip(np.searchsorted(self.codebook[order], array.ravel()), 0, self.codebook.size - 1)
            codes = order[pos]
            if not np.array_equal(self.codebook[codes], array.ravel()):
                return None
            return [("codes", pack_codes(codes, self.bits)), ("codebook", self.codebook)]
        if array.dtype != np.int8:
            return None
        if self.kind == "int4":
            if array.size and (array.min() < -8 or array.max() > 7):
                return None
            return [("codes", pack_codes(array.astype(np.uint8) & 15, 4))]
        codes = log2_codes(array)
        return None if codes is None else [("codes", pack_codes(codes.astype(np.uint8) & 15, 4))]

    def stored_bytes(self, count: int) -> int:
        """Bytes of ``count`` elements stored in this encoding."""
        table = self.codebook.nbytes if self.kind == "codebook" else 0
        return (count * self.bits + 7) // 8 + table

    def decode(self, parts: list, shape: tuple, dtype: str):
        """A TE tensor of ``shape`` reading the placeholders ``parts`` (as :meth:`encode` made them)."""
        from tvm import te, tirx

        packed = parts[0]
        bits = self.bits
        last_byte = int(packed.shape[0]) - 1

        def code_at(idx):
            return unpack_code(packed, flat_index(idx, shape, bits), bits, last_byte)

        if self.kind == "codebook":
            table = parts[1]
            entries = int(table.shape[0])
            return te.compute(shape, lambda *idx: table[tirx.min(code_at(idx), entries - 1)], name="decode_codebook", attrs=DECODE_ATTRS)
        if self.kind == "int4":
            return te.compute(shape, lambda *idx: ((code_at(idx) ^ 8) - 8).astype(dtype), name="decode_int4", attrs=DECODE_ATTRS)

        def log2(*idx):
            code = (code_at(idx) ^ 8) - 8
            magnitude = tirx.shift_left(tirx.const(1, "int32"), tirx.max(tirx.abs(code), 1) - 1)
            return tirx.Select(code == 0, tirx.const(0, "int32"),
                               tirx.Select(code < 0, -magnitude, magnitude)).astype(dtype)

        return te.compute(shape, log2, name="decode_log2", attrs=DECODE_ATTRS)


def flat_index(idx, shape: tuple, bits: int):
    """Element ``idx``'s row-major offset into a ``shape`` tensor packed at ``bits`` per element: in
    int32 where every bit position fits, else int64 (a 128k x 4096 head at 8 bits passes 2^31)."""
    from tvm import tirx

    dtype = "int64" if math.prod(shape) * bits >= 2**31 else "int32"
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    return sum((i.astype(dtype) * s for i, s in zip(idx, strides)), tirx.const(0, dtype))


def unpack_code(packed, flat, bits: int, last_byte: int):
    """The ``bits``-wide code of element ``flat`` (a :func:`flat_index`) of the packed stream, as int32.

    When ``bits`` divides 8 a code lies within one byte; otherwise it may straddle
    two, and the 16-bit little-endian word at its first byte is read (the next
    byte clamped to the stream's end)."""
    from tvm import tirx

    bit = flat * bits
    byte = tirx.floordiv(bit, 8)
    low = packed[byte].astype("int32")
    if 8 % bits:
        low = low + packed[tirx.min(byte + 1, last_byte)].astype("int32") * 256
    return tirx.bitwise_and(tirx.shift_right(low, tirx.floormod(bit, 8).astype("int32")), (1 << bits) - 1)


def encoding_for_const(array: np.ndarray, int4: bool) -> Encoding | None:
    """The encoding of a constant weight: int4 when the IR declares it ``i4``, log2 when an
    int8 weight holds only 0 and +-2^k; else None (stored as it is)."""
    if int4:
        return Encoding("int4", array.size)
    if array.dtype == np.int8 and array.size >= 2 and log2_codes(array) is not None:
        return Encoding("log2", array.size)
    return None


def codebook_encoding(codebook: np.ndarray, bits: int, count: int) -> Encoding:
    """The encoding of a weight-shared tensor of ``count`` elements."""
    return Encoding("codebook", count, np.ascontiguousarray(codebook), bits)

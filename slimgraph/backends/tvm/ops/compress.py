"""TE lowering of ``codebook_decode``: unpack a code from the packed bit stream, look it up.

Element ``i`` reads the 16-bit little-endian word at byte ``i*bits // 8``
(the next byte clamped to the stream's end, since a code of up to 8 bits
may straddle two bytes), shifts by ``i*bits % 8`` and masks ``bits`` bits;
the code indexes the codebook (codes past its end clamp, as the reference).
With constant inputs the backend computes it once; inside a fused region it
decodes in the kernel that reads the weight.

Example::

    >>> from slimgraph.backends.tvm.lower import lowering_table
    >>> "codebook_decode" in lowering_table()
    True
"""

from __future__ import annotations

from tvm import tirx

from slimgraph.backends.tvm.encoded import flat_index, unpack_code
from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops.common import spatial_compute


@register("codebook_decode")
def lower_codebook_decode(call):
    packed, codebook = call.args
    bits = call.attrs["bits"]
    shape = call.shape()
    last_byte = int(packed.shape[0]) - 1
    entries = int(codebook.shape[0])

    def f(*idx):
        code = unpack_code(packed, flat_index(idx, tuple(shape), bits), bits, last_byte)
        return codebook[tirx.min(code, entries - 1)]

    return spatial_compute(shape, f, name="codebook_decode", rule="elementwise")

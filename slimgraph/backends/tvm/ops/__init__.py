"""TE lowerings, one module per op family; importing this package registers them all."""

from slimgraph.backends.tvm.ops import (  # noqa: F401
    attention, compress, elementwise, indexing, nn, quant, quantized, shape,
)

"""TE lowerings, one module per op family; importing this package registers them all."""

from slimgraph.backends.tvm.ops import attention, compress, elementwise, nn, quant, quantized, shape  # noqa: F401

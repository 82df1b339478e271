"""The built-in ops, one module per family; importing this package registers them all."""

from slimgraph.ir.ops import attention, compress, core, elementwise, indexing, nn, qlinear, quant, shape  # noqa: F401

"""The built-in ops, one module per family; importing this package registers them all."""

from slimgraph.ir.ops import core, elementwise, nn, quant, shape  # noqa: F401

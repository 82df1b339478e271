"""The ONNX op converters, one module per family; importing this package registers them all."""

from slimgraph.frontends.onnx.converters import elementwise, indexing, nn, quant, sequence, tensor  # noqa: F401

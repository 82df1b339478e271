"""slimgraph: trace, slim, fuse and compile neural networks, with every step visible."""

from slimgraph.errors import SlimgraphError
from slimgraph.ir import Graph, TensorType, load, parse

__version__ = "0.1.0"

__all__ = ["Graph", "SlimgraphError", "TensorType", "load", "parse", "__version__"]

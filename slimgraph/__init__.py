"""slimgraph: trace, slim, fuse and compile neural networks, with every step visible.

Example::

    >>> import slimgraph
    >>> from slimgraph.demo import demo_model
    >>> optimized, report = slimgraph.run_pipeline(demo_model(), "default")
    >>> any(n.op == "fused" for n in optimized.nodes)
    True
"""

from slimgraph.api import compile, load
from slimgraph.errors import SlimgraphError
from slimgraph.ir import Graph, TensorType, parse
from slimgraph.passes import Pass, register_pass, run_pipeline
from slimgraph.runtime import GuardedModel, Variant, narrow
from slimgraph.training import finetune
from slimgraph.ledger import ledger  # noqa: E402  (after the subpackages: the name then means the function)

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "GuardedModel",
    "Pass",
    "SlimgraphError",
    "TensorType",
    "Variant",
    "__version__",
    "compile",
    "finetune",
    "ledger",
    "load",
    "narrow",
    "parse",
    "register_pass",
    "run_pipeline",
]

"""The PyTorch backend: a Graph as a ``torch.nn.Module`` (for fine-tuning), and weights back.

Example::

    >>> from slimgraph.backends.torch import to_torch, load_weights   # doctest: +SKIP
    >>> module = to_torch(pruned_graph)                              # doctest: +SKIP
    >>> tuned = load_weights(pruned_graph, module)                   # doctest: +SKIP
"""

from slimgraph.backends.torch.module import GraphModule, load_weights, to_torch
from slimgraph.backends.torch.ops import TORCH_OPS

__all__ = ["GraphModule", "TORCH_OPS", "load_weights", "to_torch"]

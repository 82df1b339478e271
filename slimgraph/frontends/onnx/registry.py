"""The table of ONNX op converters, filled by the ``converters`` modules.

A converter is a function of one :class:`~slimgraph.frontends.onnx.context.NodeContext`
that returns the node's outputs (one operand, or a tuple with ``None`` for outputs it
does not produce). It handles every opset difference of its op itself.

Example: a converter for a custom-domain op (see ``converters/`` for many more)::

    @converter("FusedRelu", domain="com.example")
    def _fused_relu(ctx):
        return ctx.emit("relu", ctx.input(0))

and the keys nodes are looked up by::

    >>> op_key("Relu"), op_key("FusedConv", "com.microsoft")
    ('Relu', 'com.microsoft.FusedConv')
"""

from __future__ import annotations

from typing import Callable

from slimgraph.registry import Registry

#: Converters by op key: the op type for the default domain, ``domain.OpType`` otherwise.
CONVERTERS: Registry[str, Callable] = Registry("ONNX converter")

DEFAULT_DOMAINS = ("", "ai.onnx")


def op_key(op_type: str, domain: str = "") -> str:
    """The key a node's converter is registered under."""
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}.{op_type}"


def converter(*op_types: str, domain: str = "") -> Callable[[Callable], Callable]:
    """Register the decorated function as the converter of each of ``op_types``."""

    return CONVERTERS.decorator(*(op_key(op_type, domain) for op_type in op_types))

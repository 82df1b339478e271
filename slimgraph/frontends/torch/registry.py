"""Converter tables: one function per aten op, torch function, Tensor method or nn module type.

A converter takes the :class:`~slimgraph.frontends.torch.context.Context` and
the FX node's arguments, with every FX node already replaced by what it was
converted to (a Value, a tuple of Values, or a size), and returns the result.
Its Python signature mirrors the torch one, so positional and keyword calls
bind the same way they do in torch. Module converters also receive the module
and its qualified name (to find weights by their state_dict names).

Example: converting a user function that torch.fx keeps whole (``torch.fx.wrap``)::

    >>> import torch
    >>> from slimgraph.frontends.torch.registry import function, converter_for_function
    >>> def scaled_tanh(x):
    ...     return 2 * torch.tanh(x)
    >>> @function(scaled_tanh)
    ... def _scaled_tanh(ctx, x):
    ...     return ctx.call("mul", ctx.call("tanh", x), ctx.const(2.0, x.type.dtype))
    >>> converter_for_function(scaled_tanh) is _scaled_tanh
    True
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.fx.node import _get_qualified_name

from slimgraph.registry import Registry

Converter = Callable[..., Any]

#: "aten.relu.default" -> converter (torch.export path, core ATen after decompositions).
ATEN: Registry[str, Converter] = Registry("torch converter for ATen op")
#: qualified function name ("torch.flatten", "_operator.add") -> converter (torch.fx path).
FUNCTIONS: Registry[str, Converter] = Registry("torch converter for function")
#: Tensor method name ("view") -> converter (torch.fx path).
METHODS: Registry[str, Converter] = Registry("torch converter for Tensor method")
#: nn.Module class -> converter(ctx, module, path, *args, **kwargs) (torch.fx path).
MODULES: Registry[type, Converter] = Registry("torch converter for module")


def aten(*names: str) -> Callable[[Converter], Converter]:
    """Register a converter for aten overloads given as ``"relu.default"`` or ``"add.Tensor"``."""

    return ATEN.decorator(*(f"aten.{name}" for name in names))


def function(*fns: Callable, methods: tuple[str, ...] = ()) -> Callable[[Converter], Converter]:
    """Register a converter for torch functions and, with the same signature, Tensor methods."""

    def register(conv: Converter) -> Converter:
        for fn in fns:
            FUNCTIONS.register(function_name(fn), conv)
        for name in (methods,) if isinstance(methods, str) else methods:
            METHODS.register(name, conv)
        return conv

    return register


def method(*names: str) -> Callable[[Converter], Converter]:
    """Register a converter for Tensor methods only (``x.size()``, ``x.view(...)``)."""
    return function(methods=names)


def module(*classes: type) -> Callable[[Converter], Converter]:
    """Register a converter for nn.Module classes (exact type: subclasses are traced through)."""

    return MODULES.decorator(*classes)


def function_name(fn: Callable) -> str:
    """The name FX records for a called function (``torch.nn.functional.relu``)."""
    return _get_qualified_name(fn)


def converter_for_function(fn: Callable) -> Converter | None:
    return FUNCTIONS.get(function_name(fn))


def lookup(node: torch.fx.Node, root: torch.nn.Module | None) -> tuple[str, Converter | None]:
    """The display name of an FX node's target and its converter (None when unsupported)."""
    load_converters()
    if node.op == "call_module":
        cls = type(root.get_submodule(node.target))
        return f"{cls.__module__}.{cls.__qualname__}", MODULES.get(cls)
    if node.op == "call_method":
        return f"Tensor.{node.target}", METHODS.get(node.target)
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        name = str(target)
        return name, ATEN.get(name)
    try:
        name = function_name(target)
    except (RuntimeError, AttributeError):
        name = repr(target)
    return name, FUNCTIONS.get(name)


def load_converters() -> None:
    # The converter modules import this one to register themselves.
    from slimgraph.frontends.torch import aten as _aten  # noqa: F401
    from slimgraph.frontends.torch import functions as _functions  # noqa: F401
    from slimgraph.frontends.torch import modules as _modules  # noqa: F401

"""Model specs on the command line: ``demo`` (the built-in model), an IR text
file (``.sg``), a ``.onnx`` file, or ``package.module:factory`` for PyTorch.

``slimgraph dump``, ``opt`` and ``compile`` take any of these forms. A factory is a function without
arguments returning ``(module, example_inputs)``; the module is imported with
the working directory on the import path, as ``python -m`` would.

Example::

    >>> g = load_model("tests.models:mlp")  # doctest: +SKIP
    >>> load_model("no-colon")
    Traceback (most recent call last):
    ...
    slimgraph.errors.FrontendError: model spec 'no-colon' is not 'demo', a .sg or .onnx file, or package.module:factory
"""

from __future__ import annotations

import importlib
import os
import sys

from slimgraph.errors import FrontendError
from slimgraph.ir import Graph


def load_model(spec: str, dynamic_batch: bool = False) -> Graph:
    """Import the model a spec names (see the module docstring) as a Graph."""
    if spec == "demo":
        from slimgraph.demo import demo_model

        return demo_model()
    if spec.endswith(".sg"):
        from slimgraph.ir import load

        if dynamic_batch:
            raise FrontendError(f"{spec}: --dynamic-batch applies to imports; an IR file keeps the dims it declares")
        return load(spec)
    if spec.endswith(".onnx") or os.path.isfile(spec):
        from slimgraph.frontends import from_onnx

        return from_onnx(spec, dynamic_batch=dynamic_batch)
    module_name, sep, factory_name = spec.partition(":")
    if not sep or not module_name or not factory_name:
        raise FrontendError(f"model spec {spec!r} is not 'demo', a .sg or .onnx file, or package.module:factory")
    factory = getattr(_import(module_name, spec), factory_name, None)
    if not callable(factory):
        raise FrontendError(f"model spec {spec!r}: module {module_name} has no function {factory_name!r}")
    try:
        made = factory()
    except Exception as exc:
        raise FrontendError(f"model spec {spec!r}: {factory_name}() failed: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(made, tuple) and len(made) == 2):
        raise FrontendError(
            f"model spec {spec!r}: {factory_name}() must return (module, example_inputs), "
            f"got {type(made).__name__}"
        )
    from slimgraph.frontends import from_torch

    module, example_inputs = made
    return from_torch(module, example_inputs, dynamic_batch=dynamic_batch)


def _import(module_name: str, spec: str):
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise FrontendError(f"model spec {spec!r}: cannot import {module_name}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)

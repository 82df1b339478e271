"""Backends: the TVM compiler (``slimgraph.backends.tvm``); the reference interpreter is ``slimgraph.ir.run``.

Nothing here imports TVM until a model is built or loaded.

Example::

    >>> from slimgraph.backends import tvm as tvm_backend
    >>> tvm_backend.parse_target("llvm").kind
    'llvm'
"""

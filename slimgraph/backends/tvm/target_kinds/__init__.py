"""The built-in target kinds, one module each; importing this package registers them.

A new kind is a module here with a :class:`~slimgraph.backends.tvm.targets.TargetKind`
subclass decorated with ``@target_kind``, imported below (in the order messages list them).
"""

from slimgraph.backends.tvm.target_kinds import llvm  # noqa: F401, I001  (the host CPU first)
from slimgraph.backends.tvm.target_kinds import cuda, opencl  # noqa: F401

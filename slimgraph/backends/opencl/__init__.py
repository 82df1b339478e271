"""OpenCL execution: TVM-generated OpenCL C kernels run through PyOpenCL (any OpenCL device).

``slimgraph.compile(model, target="opencl")`` builds with the TVM backend and
returns an :class:`OpenCLModel`; see :mod:`slimgraph.backends.opencl.model`
for the device choice and :mod:`slimgraph.backends.opencl.plan` for how the
kernel launches are read off TVM's host code. Needs the ``opencl`` extra
(``pip install "slimgraph[opencl]"``); without it models still build (the
source is inspectable) and calling one says what to install.

Example::

    >>> from slimgraph.backends.opencl import opencl_available
    >>> isinstance(opencl_available(), bool)
    True
"""

from slimgraph.backends.opencl.model import OpenCLModel, device_name, opencl_available

__all__ = ["OpenCLModel", "device_name", "opencl_available"]

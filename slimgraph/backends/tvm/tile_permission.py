"""The AMX tile-data permission: Linux lets a process use AMX tiles only once it asks.

A tile instruction in a process that has not asked gets SIGILL, which kills the
process without a Python traceback. A compiled model whose kernels use AMX
(``ops/amx.py``) therefore calls :func:`request_tile_data` before its first call,
and a refusal is a :class:`~slimgraph.errors.BackendError` instead. The grant
holds for every thread of the process, so it is asked for once.

Example::

    >>> request_tile_data()  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

from slimgraph.errors import BackendError

#: ``arch_prctl`` on x86-64 Linux, the request and the feature number of tile data.
SYS_ARCH_PRCTL = 158
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18

#: The name of the AMX micro-kernel (``ops/amx.py``): a compiled kernel calling it uses tiles.
AMX_KERNEL = "slimgraph_amx_bf16_2x2"

_lock = threading.Lock()
_granted = False


def _arch_prctl(code: int, feature: int) -> tuple[int, int]:
    """``syscall(SYS_arch_prctl, code, feature)``: its result and errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(SYS_ARCH_PRCTL, code, feature)
    return result, ctypes.get_errno()


def request_tile_data() -> None:
    """Ask Linux for AMX tile data for this process (once; later calls return at once).

    Raises :class:`BackendError` naming the reason where the system refuses or cannot be asked.
    """
    global _granted
    if _granted:
        return
    with _lock:
        if _granted:
            return
        if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
            raise BackendError(f"AMX kernels need Linux on x86-64 (this is {sys.platform} on {platform.machine()}); "
                               "compile for a target without AMX, e.g. precision='fp32'")
        result, errno = _arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
        if result != 0:
            raise BackendError(
                f"the model's kernels use AMX tiles, and Linux refused tile data to this process "
                f"(arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): {os.strerror(errno)}); "
                "a kernel before 5.16 or a virtual machine without AMX state refuses it: "
                "compile with precision='fp32' or for another CPU")
        _granted = True

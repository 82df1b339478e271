"""What the machine is running right now, read cheaply enough to ask once per call.

The guard's controller learns the load from the latencies of the calls it
serves, but a short call finishes inside the time slices a competing load
leaves it and barely slows down, so from a narrow variant the end of a load
may not show. The kernel's run queue says it directly.

Example::

    >>> n = runnable_threads()
    >>> n is None or n >= 1   # at least the thread asking, where the count is known
    True
"""

from __future__ import annotations

PROC_STAT = "/proc/stat"


def runnable_threads() -> int | None:
    """Threads running or ready to run on the whole machine now, the caller included
    (``procs_running`` of ``/proc/stat``, about 8 us to read); None where unknown."""
    try:
        with open(PROC_STAT, "rb") as stat:
            for line in stat:
                if line.startswith(b"procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_idle() -> bool:
    """Whether nothing but the calling thread is runnable (False where unknown)."""
    return runnable_threads() == 1

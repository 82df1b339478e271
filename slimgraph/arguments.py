"""Checks of public-API arguments, shared by the entry points so that each one
rejects a bad argument before any long work, naming it and what is valid.

Each check takes the error class to raise (the entry point's own SlimgraphError
subclass), so ``except GuardError`` still catches a bad guard argument.

Example::

    >>> check_int("tune", -5, minimum=0)
    Traceback (most recent call last):
    ...
    slimgraph.errors.ArgumentError: tune=-5: must be an integer >= 0
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from slimgraph.errors import ArgumentError, SlimgraphError

ErrorType = type[SlimgraphError]


def check_int(name: str, value: Any, minimum: int | None = None, error: ErrorType = ArgumentError) -> int:
    """``value`` as an int (bools and floats refused), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise error(f"{name}={value!r}: must be an integer{bound}")
    return int(value)


def check_positive(name: str, value: Any, error: ErrorType = ArgumentError) -> float:
    """``value`` as a finite float > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < float("inf"):
        raise error(f"{name}={value!r}: must be a finite number > 0")
    return float(value)


def check_callable(name: str, value: Any, error: ErrorType = ArgumentError) -> None:
    """``value`` is None or callable."""
    if value is not None and not callable(value):
        raise error(f"{name}={value!r}: must be a function (or None), got {type(value).__name__}")


def check_path(name: str, value: Any, error: ErrorType = ArgumentError) -> Path:
    """``value`` as a Path (a str or os.PathLike)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise error(f"{name}={value!r}: must be a path (str or os.PathLike)")
    return Path(value)


def check_writable_file(name: str, value: Any, error: ErrorType = ArgumentError) -> Path:
    """A path a file can be written at: its folder exists and is writable, and it is not a folder."""
    path = check_path(name, value, error)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise error(f"{name}={str(path)!r}: is a folder; give a file path")
    if not folder.is_dir():
        raise error(f"{name}={str(path)!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{name}={str(path)!r}: the folder {str(folder)!r} is not writable")
    return path


def check_writable_folder(name: str, value: Any, error: ErrorType = ArgumentError) -> Path:
    """A folder that exists and is writable, or that can be created (its nearest existing parent is writable)."""
    path = check_path(name, value, error)
    if path.exists() and not path.is_dir():
        raise error(f"{name}={str(path)!r}: is a file; give a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent if existing != existing.parent else Path(".")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"{name}={str(path)!r}: {str(existing)!r} is not a writable folder")
    return path


def check_example_inputs(example_inputs: Any, error: ErrorType = ArgumentError) -> tuple | None:
    """``example_inputs`` as a tuple of numpy arrays or torch tensors (one array or tensor alone
    is one input); the error names the first element that is neither (a list, a dict, ...)."""
    if example_inputs is None:
        return None
    if is_array(example_inputs):
        return (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise error(
            f"example_inputs: got a {type(example_inputs).__name__}; give a tuple of numpy arrays or torch tensors, "
            "one per input"
        )
    for i, x in enumerate(example_inputs):
        if not is_array(x):
            raise error(
                f"example_inputs[{i}]: got a {type(x).__name__}; each input must be a numpy array or a torch tensor "
                "(convert lists with numpy.asarray(..., dtype=...))"
            )
    return tuple(example_inputs)


def is_array(x: Any) -> bool:
    """Whether ``x`` is a numpy array or a torch tensor (torch is not imported to tell).

    >>> is_array(np.zeros(2)), is_array([0.0, 1.0])
    (True, False)
    """
    return isinstance(x, np.ndarray) or (type(x).__module__.startswith("torch") and hasattr(x, "shape")
                                         and hasattr(x, "dtype"))

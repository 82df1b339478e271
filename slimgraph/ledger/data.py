"""Evaluation and calibration data for the ledger: normalizing, batching, loading from ``.npz``.

The compiled model has the batch size of the example inputs, so evaluation
data is cut into batches of that size (the last one padded, its padding
dropped from the outputs).

Example::

    >>> import numpy as np
    >>> data = EvalSet.of((np.zeros((5, 3), np.float32), np.arange(5)))
    >>> [b[0].shape for b in data.batches(2)], data.labels.tolist()
    ([(2, 3), (2, 3), (2, 3)], [0, 1, 2, 3, 4])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from slimgraph.errors import SlimgraphError


class LedgerError(SlimgraphError):
    """Bad ledger input: evaluation data, a data file, a pipeline grouping."""


@dataclass(frozen=True)
class EvalSet:
    """Model inputs (one array per model input, examples on axis 0) and optional labels."""

    inputs: tuple[np.ndarray, ...]
    labels: np.ndarray | None

    @staticmethod
    def of(data: Any) -> "EvalSet":
        """Accepts inputs alone (an array, or a list of arrays for several model
        inputs) or a tuple ``(inputs, labels)`` with ``labels`` an array or None."""
        if isinstance(data, EvalSet):
            return data
        if isinstance(data, tuple):
            if len(data) != 2:
                raise LedgerError(f"evaluation data as a tuple must be (inputs, labels), got {len(data)} items")
            inputs, labels = data
        else:
            inputs, labels = data, None
        arrays = tuple(np.asarray(x) for x in ([inputs] if _is_array(inputs) else inputs))
        if not arrays:
            raise LedgerError("evaluation data has no input arrays")
        count = len(arrays[0])
        if any(len(a) != count for a in arrays):
            raise LedgerError(f"evaluation inputs disagree on the number of examples: {[len(a) for a in arrays]}")
        if labels is not None:
            labels = np.asarray(labels)
            if len(labels) != count:
                raise LedgerError(f"evaluation data has {count} examples but {len(labels)} labels")
        return EvalSet(arrays, labels)

    def __len__(self) -> int:
        return len(self.inputs[0])

    def batches(self, batch: int) -> Iterator[tuple[np.ndarray, ...]]:
        """Batches of exactly ``batch`` examples; the last is padded by repeating its final example."""
        for start in range(0, len(self), batch):
            chunk = tuple(a[start : start + batch] for a in self.inputs)
            missing = batch - len(chunk[0])
            if missing:
                chunk = tuple(np.concatenate([c, np.repeat(c[-1:], missing, axis=0)]) for c in chunk)
            yield chunk

    def predict(self, model: Callable[..., Any], batch: int) -> np.ndarray:
        """``model``'s first output over every example, in order."""
        outs = []
        for chunk in self.batches(batch):
            result = model(*chunk)
            outs.append(np.asarray(result[0] if isinstance(result, tuple) else result))
        return np.concatenate(outs)[: len(self)]


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def load_data(path: str | os.PathLike) -> tuple[EvalSet, EvalSet | None]:
    """Read an ``.npz`` file: ``x`` (or ``x0``, ``x1``, ... for several model inputs),
    optional ``y`` (integer labels) and optional ``calib`` (calibration inputs; default ``x``).
    Returns the evaluation set and the calibration set (None without ``calib``).

    >>> load_data("missing.npz")
    Traceback (most recent call last):
    ...
    slimgraph.ledger.data.LedgerError: cannot read data file missing.npz: No such file or directory
    """
    try:
        archive = np.load(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LedgerError(f"cannot read data file {path}: {reason}") from exc
    with archive:
        keys = set(archive.files)
        numbered = sorted((k for k in keys if k[0] == "x" and k[1:].isdigit()), key=lambda k: int(k[1:]))
        names = ["x"] if "x" in keys else numbered
        if not names:
            raise LedgerError(f"data file {path} has no 'x' array (found: {', '.join(sorted(keys)) or 'nothing'})")
        inputs = [archive[k] for k in names]
        labels = archive["y"] if "y" in keys else None
        calib = EvalSet.of(archive["calib"]) if "calib" in keys else None
    return EvalSet.of((inputs, labels)), calib


def as_batches(data: Sequence[Any] | None, batch: int) -> list[tuple[np.ndarray, ...]]:
    """Calibration data as model-sized batches: ``data`` is an EvalSet, arrays
    (one per model input, examples on axis 0) or a list of ready batches."""
    if data is None:
        return []
    if isinstance(data, EvalSet):
        return list(data.batches(batch))
    if _is_array(data):
        return list(EvalSet.of(data).batches(batch))
    return [tuple(b) if isinstance(b, (tuple, list)) else (b,) for b in data]

"""Accuracy of model outputs: the one top-1 helper every report and the runtime share.

Example::

    >>> import numpy as np
    >>> logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> top1_accuracy(logits, np.array([1, 1, 1, 1]))
    50.0
    >>> top1_accuracy(logits, np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))  # agreement
    75.0
"""

from __future__ import annotations

import numpy as np

from slimgraph.errors import ArgumentError


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Percent of rows of ``outputs`` whose largest entry (last axis) is the label.

    ``labels`` are class indices, one per row, or reference outputs of the same
    shape as ``outputs`` (then the result is top-1 agreement with them).
    """
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if labels.shape == outputs.shape and outputs.ndim > 1:
        labels = labels.argmax(axis=-1)
    if labels.shape != outputs.shape[:-1]:
        raise ArgumentError(f"top-1 accuracy: {labels.shape[0] if labels.ndim else 1} labels for outputs of shape "
                            f"{list(outputs.shape)}; give one class index per row, or reference outputs of that shape")
    return float((outputs.argmax(axis=-1) == labels).mean() * 100.0)

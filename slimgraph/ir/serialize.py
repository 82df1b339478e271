"""Saving and loading graphs: the text form plus a sidecar holding large constants.

``graph.save("model.sg")`` writes ``model.sg`` (text) and, when the graph has
constants too large to print inline, ``model.sg.weights`` (an ``.npz`` of raw
bytes keyed by the ``@ref`` names in the text). Both files are written to a
temporary name first and renamed into place, so a failure never leaves a
half-written pair.

Example::

    >>> import numpy as np, tempfile, os
    >>> from slimgraph.ir import Graph, TensorType, load
    >>> g = Graph("g")
    >>> x = g.add_input("x", TensorType("f32", (64,)))
    >>> g.set_outputs([g.call("add", x, g.const(np.arange(64, dtype=np.float32), name="bias"))])
    >>> path = os.path.join(tempfile.mkdtemp(), "g.sg")
    >>> g.save(path)
    >>> load(path) == g
    True
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from slimgraph.errors import GraphError, SlimgraphError
from slimgraph.ir.parser import parse
from slimgraph.ir.printer import collect_payloads, print_graph

SIDECAR_SUFFIX = ".weights"


def save(graph, path: str | os.PathLike) -> None:
    """Write ``graph`` to ``path`` (and its sidecar when needed), atomically."""
    path = os.fspath(path)
    text = print_graph(graph)
    payloads = collect_payloads(graph)
    sidecar = path + SIDECAR_SUFFIX
    staged: list[tuple[str, str]] = []
    try:
        staged.append((_stage(path, text.encode()), path))
        if payloads:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.ascontiguousarray(v).reshape(-1).view(np.uint8) for k, v in payloads.items()})
            staged.append((_stage(sidecar, buf.getvalue()), sidecar))
    except BaseException:
        for tmp, _ in staged:
            os.unlink(tmp)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    if not payloads and os.path.exists(sidecar):
        os.unlink(sidecar)  # a stale sidecar would describe some other graph


@contextlib.contextmanager
def staged_directory(
    target: str | os.PathLike, marker: str, what: str, error: type[SlimgraphError] = SlimgraphError
) -> Iterator[Path]:
    """Write a folder atomically: yields an empty staging folder beside ``target``
    that replaces ``target`` when the block ends, and vanishes if it raises.

    A non-empty ``target`` without the ``marker`` file is not ours: it is refused
    rather than overwritten: ``error`` is raised, naming ``what`` was expected.
    """
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not (target / marker).exists():
        raise error(f"{target} exists and is not a saved {what}; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sg-save-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _stage(final: str, data: bytes) -> str:
    folder = os.path.dirname(os.path.abspath(final))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return tmp


def load(path: str | os.PathLike):
    """Read a graph written by :func:`save` (or any IR text file)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise GraphError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"{path}: cannot read IR text: {exc}") from None
    payloads = {}
    sidecar = path + SIDECAR_SUFFIX
    if os.path.exists(sidecar):
        try:
            with np.load(sidecar, allow_pickle=False) as archive:
                payloads = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise GraphError(f"{sidecar}: not a readable weights sidecar: {exc}") from None
    return parse(text, payloads, source=path)

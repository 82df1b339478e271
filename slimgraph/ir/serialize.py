"""Saving and loading graphs: the text form plus a sidecar holding large constants.

``graph.save("model.sg")`` writes ``model.sg`` (text) and, when the graph has
constants too large to print inline, ``model.sg.weights`` (an ``.npz`` of raw
bytes keyed by the ``@ref`` names in the text, whose SHA-256 the text's first
line records). Both files are written to a temporary name first and renamed
into place, so a failure never leaves a half-written file.

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
import hashlib
import io
import os
import zipfile

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.parser import parse
from slimgraph.ir.printer import collect_payloads, print_graph
from slimgraph.storage import write_private_file

SIDECAR_SUFFIX = ".weights"
_DIGEST_MARK = "# weights sha256: "


def save(graph, path: str | os.PathLike) -> None:
    """Write ``graph`` to ``path`` (and its sidecar when needed), atomically.

    The text's first line records the sidecar's SHA-256, so a sidecar from
    another graph (same names, same shapes) is refused on load."""
    path = os.fspath(path)
    text = print_graph(graph)
    payloads = collect_payloads(graph)
    sidecar = path + SIDECAR_SUFFIX
    staged: list[tuple[str, str]] = []
    try:
        if payloads:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.ascontiguousarray(v).reshape(-1).view(np.uint8) for k, v in payloads.items()})
            data = buf.getvalue()
            text = f"{_DIGEST_MARK}{hashlib.sha256(data).hexdigest()}\n{text}"
            staged.append((write_private_file(sidecar, data), sidecar))
        staged.append((write_private_file(path, text.encode()), path))
        for tmp, final in staged:
            os.replace(tmp, final)
        if not payloads and os.path.exists(sidecar):
            os.unlink(sidecar)  # a stale sidecar would describe some other graph
    except OSError as exc:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise GraphError(f"{path}: cannot write the IR: {exc.strerror or exc}") from None


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
            with open(sidecar, "rb") as fh:
                data = fh.read()
            if text.startswith(_DIGEST_MARK):
                recorded = text[len(_DIGEST_MARK) :].split("\n", 1)[0].strip()
                if hashlib.sha256(data).hexdigest() != recorded:
                    raise GraphError(f"{sidecar}: its SHA-256 differs from the one {path} records (a sidecar from another graph?)")
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                payloads = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise GraphError(f"{sidecar}: not a readable weights sidecar: {exc}") from None
    return parse(text, payloads, source=path)

"""Reading ONNX models: files are checked with errors that name the file and
what is wrong with it; a ModelProto passed in is only ever read.

Example::

    >>> read_model("missing.onnx")
    Traceback (most recent call last):
    ...
    slimgraph.errors.FrontendError: missing.onnx: no such file
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from slimgraph.errors import FrontendError


def read_model(model_or_path: Any) -> tuple[onnx.ModelProto, str]:
    """Return the ModelProto and a label for messages (the path, or the graph name)."""
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, f"model '{model_or_path.graph.name or 'main'}'"
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        return _read_file(path), str(path)
    raise FrontendError(
        f"from_onnx takes an onnx.ModelProto or a path to a .onnx file, got {type(model_or_path).__name__}"
    )


def _read_file(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise FrontendError(f"{path}: no such file")
    if path.is_dir():
        raise FrontendError(f"{path}: is a directory, not an .onnx file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrontendError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if not data:
        raise FrontendError(f"{path}: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        if _looks_like_text(data):
            raise FrontendError(f"{path}: a text file, not an ONNX model (ONNX files are binary protobuf)") from None
        raise FrontendError(f"{path}: not a valid ONNX model (truncated or corrupt protobuf: {exc})") from None
    problem = _structure_problem(model)
    if problem:
        raise FrontendError(f"{path}: {problem}")
    if any(uses_external_data(t) for t in model.graph.initializer):
        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise FrontendError(f"{path}: cannot load the model's external weight data: {exc}") from None
    return model


def _structure_problem(model: onnx.ModelProto) -> str | None:
    # Protobuf accepts many byte strings (unknown fields are skipped), so a text
    # file or a cut-off model can parse; what ONNX requires is then missing.
    if not model.HasField("graph") and not model.opset_import:
        return "not an ONNX model (no graph and no opset_import: is it an ONNX file?)"
    if not model.HasField("graph"):
        return "not a valid ONNX model: it has no graph (truncated or corrupt?)"
    if not model.opset_import:
        return "not a valid ONNX model: it has no opset_import (truncated or corrupt?)"
    if not model.graph.output:
        return "not a valid ONNX model: its graph has no outputs (truncated or corrupt?)"
    return None


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)

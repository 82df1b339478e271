"""Saving and loading a guarded model's variants: a manifest plus one folder per model.

Each variant's model is written through its own ``save`` (once per model:
thread-count variants share its folder) and read back by the loader of its
``kind``; ``guarded.json`` holds widths, buckets, thread counts, input types,
devices, latencies and accuracies. Everything is written through
:func:`slimgraph.storage.staged_directory`, so a save is all or nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from slimgraph.errors import LoadError, SlimgraphError
from slimgraph.ir.types import TensorType
from slimgraph.registry import Registry
from slimgraph.runtime.controller import ControllerConfig
from slimgraph.runtime.variants import GraphRunner, GuardError, Variant
from slimgraph.storage import inside, read_json, staged_directory, verify_folder

MANIFEST = "guarded.json"
FORMAT_VERSION = 4  # 4: a files.json manifest; 3: thread counts, one folder per shared model
KIND = "guarded model"


def _load_tvm(directory: str | os.PathLike):
    from slimgraph.backends.tvm import load_compiled

    return load_compiled(directory)


#: Variant kind -> loader; a variant's kind is its model's ``kind`` attribute.
LOADERS: Registry[str, Callable[[str | os.PathLike], Any]] = Registry("variant kind")
LOADERS.register("graph", GraphRunner.load)
LOADERS.register("tvm", _load_tvm)


def register_variant_kind(kind: str, load: Callable[[str | os.PathLike], Any]) -> None:
    """Teach :func:`load_guarded` to load variants whose model has ``kind = <kind>``."""
    LOADERS.register(kind, load)


def _kind_of(model: Any) -> str:
    kind = getattr(model, "kind", None)
    if isinstance(kind, str):
        return kind
    raise GuardError(
        f"cannot save a variant backed by {type(model).__name__}: give it a `kind` attribute and register a "
        f"loader with register_variant_kind"
    )



def save_variants(
    directory: str | os.PathLike,
    name: str,
    budget_ms: float | Mapping[int | None, float] | None,
    config: ControllerConfig,
    variants: Sequence[Variant],
    table: str,
) -> Path:
    """Write every variant's model, the manifest and the guard ``table`` (``guards.txt``) to ``directory``."""
    target = Path(directory)
    budget: Any = budget_ms if isinstance(budget_ms, (int, float, type(None))) else [[k, v] for k, v in budget_ms.items()]
    manifest = {"format": FORMAT_VERSION, "name": name, "budget_ms": budget, "config": asdict(config), "variants": []}
    with staged_directory(target, KIND) as staging:
        folders: dict[int, str] = {}  # one folder per model: thread-count variants share theirs
        for i, v in enumerate(variants):
            kind = _kind_of(v.model)
            if id(v.model) not in folders:
                folders[id(v.model)] = f"v{i}-{_safe(v.name)}"
                v.model.save(staging / folders[id(v.model)])
            manifest["variants"].append({
                "name": v.name, "kind": kind, "dir": folders[id(v.model)], "width": v.width, "batch": v.batch,
                "device": v.device, "inputs": [[t.dtype.value, list(t.shape)] for t in v.inputs],
                "latency_ms": v.latency_ms, "accuracy": v.accuracy, "threads": v.threads, "depth": v.depth,
            })
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        (staging / "guards.txt").write_text(table)
    return target


def read_variants(directory: str | os.PathLike) -> tuple[list[Variant], dict[str, Any]]:
    """The variants saved in ``directory`` and the guard's saved options (budget_ms, config, name).

    Example::

        >>> read_variants("/no/such/dir")
        Traceback (most recent call last):
        ...
        slimgraph.errors.LoadError: /no/such/dir: no such folder
    """
    path = Path(directory)
    verify_folder(path, KIND)
    manifest = read_json(path / MANIFEST, FORMAT_VERSION, "guard manifest")
    try:
        variants = _variants_from(path, manifest)
        budget = manifest["budget_ms"]
        if isinstance(budget, list):
            budget = {k: v for k, v in budget}
        options = {"budget_ms": budget, "config": ControllerConfig(**manifest["config"]), "name": manifest["name"]}
    except LoadError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, SlimgraphError) as exc:
        raise LoadError(f"{path / MANIFEST}: incomplete or inconsistent manifest: {exc!r}") from None
    return variants, options


def _variants_from(path: Path, manifest: dict) -> list[Variant]:
    variants, models = [], {}
    for entry in manifest["variants"]:
        loader = LOADERS.get(entry["kind"])
        if loader is None:
            raise LoadError(
                f"{path / MANIFEST}: variant {entry['name']} has kind {entry['kind']!r}; known kinds: {', '.join(sorted(LOADERS))}"
            )
        if entry["dir"] not in models:
            models[entry["dir"]] = loader(inside(path, entry["dir"], path / MANIFEST))
        variants.append(Variant(
            entry["name"], models[entry["dir"]], width=entry["width"],
            inputs=tuple(TensorType(d, tuple(s)) for d, s in entry["inputs"]), batch=entry["batch"],
            device=entry["device"], latency_ms=entry["latency_ms"], accuracy=entry["accuracy"],
            threads=entry["threads"], depth=entry.get("depth", 1.0),
        ))
    return variants


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

"""The layers of slimgraph and the scan of its imports that checks them.

Every module belongs to one component (the longest prefix in ``LAYERS``); a module
may import its own component and any component of a lower layer, nothing else.
The scan reads every import statement with ``ast`` (function-local ones and
``TYPE_CHECKING`` ones too), so a lazy import cannot hide an upward edge.

``python -m tests.layering`` prints the picture of the layers that
docs/architecture.md shows; ``tests/test_layers.py`` checks the scan and that picture.
``python -m tests.layering --fresh`` imports every module first in a process of its own.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "slimgraph"

#: Lowest first. Components on one layer do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("registry", "arguments", "storage", "metrics"),
    ("ir", "timing"),
    ("analysis", "dynamic", "demo"),
    ("passes",),
    ("frontends", "backends"),
    ("driver", "training"),
    ("runtime", "ledger", "reports"),
    ("api",),
    ("cli", "__init__"),
)

RANK = {component: rank for rank, layer in enumerate(LAYERS) for component in layer}


@dataclass(frozen=True)
class Edge:
    """``importer`` (a module) imports ``imported`` (a module) at ``line``."""

    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def modules() -> list[str]:
    """Every module of the package, dotted (``slimgraph.passes.manager``)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def component(module: str) -> str:
    """The component a module belongs to: its first name under ``slimgraph`` (``__init__`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(module: str) -> list[Edge]:
    """Every slimgraph module ``module`` imports, anywhere in its source."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` may name a submodule: the edge goes to the deepest module that exists
            names = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        edges += [Edge(module, name, node.lineno) for name in names if name.split(".")[0] == "slimgraph"]
    return edges


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations() -> list[Edge]:
    """Every import that points up the layers or sideways into another component of the same layer."""
    bad = []
    for module in modules():
        mine = component(module)
        for edge in imports(module):
            theirs = component(edge.imported)
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                bad.append(edge)
    return bad


def picture() -> str:
    """The layers, top first, each with the components it holds and the lower ones it imports."""
    uses: dict[str, set[str]] = {c: set() for c in RANK}
    for module in modules():
        for edge in imports(module):
            if component(edge.imported) != component(module):
                uses[component(module)].add(component(edge.imported))
    lines = []
    for layer in reversed(LAYERS):
        names = ", ".join("slimgraph (package)" if c == "__init__" else c for c in layer)
        below = sorted({u for c in layer for u in uses[c]}, key=lambda u: (-RANK[u], u))
        lines.append(f"{names:<38} -> {', '.join(below) if below else '(nothing)'}")
    return "\n".join(lines)


#: Third-party packages loaded once before the forks: importing them is most of the time, and
#: none of them imports slimgraph, so each child still meets every slimgraph module for the first time.
PRELOAD = ("numpy", "torch", "tvm", "onnx", "onnxruntime")


def fresh_import_failures() -> list[str]:
    """Import each module in a child process that has loaded no slimgraph module before;
    returns ``module: error`` for each that fails (an import cycle, a missing name).
    Call it from a process that has not imported slimgraph."""
    if any(name.split(".")[0] == "slimgraph" for name in sys.modules):
        raise RuntimeError("fresh_import_failures must run in a process without slimgraph loaded")
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    running: dict[int, tuple[str, int]] = {}  # pid -> (module, read end of its pipe)
    failures = []

    def reap() -> None:
        pid, status = os.wait()
        module, read = running.pop(pid)
        with os.fdopen(read) as pipe:
            message = pipe.read()
        if status != 0:
            failures.append(f"{module}: {message.strip() or f'exit status {status}'}")

    for module in modules():
        if len(running) >= (os.cpu_count() or 1):
            reap()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: import, report, leave without running any exit handler
            os.close(read)
            try:
                importlib.import_module(module)
                os._exit(0)
            except BaseException:  # noqa: BLE001 - everything is reported to the parent
                os.write(write, traceback.format_exc(limit=-3).encode())
                os._exit(1)
        os.close(write)
        running[pid] = (module, read)
    while running:
        reap()
    return failures


if __name__ == "__main__":
    if sys.argv[1:] == ["--fresh"]:
        problems = fresh_import_failures()
        print("\n\n".join(problems) or "every module imports on its own")
        sys.exit(1 if problems else 0)
    print(picture())

"""Dependencies point one way: the import scan of tests/layering.py against the layers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import layering


def test_no_import_points_up_or_sideways():
    bad = layering.violations()
    assert not bad, "imports against the layers (see tests/layering.py):\n" + "\n".join(map(str, bad))


def test_every_component_has_a_layer():
    assert {layering.component(m) for m in layering.modules()} <= set(layering.RANK)


def test_the_scan_sees_function_local_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "slimgraph"
    (pkg / "ir").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text("")
    (pkg / "ir" / "__init__.py").write_text("from . import graph\n")
    (pkg / "ir" / "graph.py").write_text("def f():\n    from slimgraph.api import compile\n    from .. import api\n")
    monkeypatch.setattr(layering, "ROOT", tmp_path)
    monkeypatch.setattr(layering, "PACKAGE", pkg)
    assert [str(e) for e in layering.imports("slimgraph.ir")] == ["slimgraph.ir:1 imports slimgraph.ir.graph"]
    assert [str(e) for e in layering.violations()] == [
        "slimgraph.ir.graph:2 imports slimgraph.api", "slimgraph.ir.graph:3 imports slimgraph.api"]


def test_architecture_doc_shows_the_scanned_picture():
    doc = (layering.ROOT / "docs" / "architecture.md").read_text()
    assert layering.picture() in doc, "regenerate it: python -m tests.layering"


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "tests.layering", "--fresh"], cwd=layering.ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr

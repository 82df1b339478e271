"""The examples of docs/custom-passes.md run, in order, as written."""

from __future__ import annotations

import re
from pathlib import Path

from slimgraph.passes import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "custom-passes.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_custom_passes_walkthrough_runs(capsys):
    with registry.PASSES.scoped():  # the doc's passes vanish afterwards
        _run_walkthrough(capsys)


def _run_walkthrough(capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 7
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "bad value 'big' for option 'min-magnitude' of pass 'zero-small-weights'" in printed
    assert "unknown option 'threshold' for pass 'zero-small-weights'" in printed
    assert {"silu-from-sigmoid", "zero-small-weights"} <= set(registry.registered_passes())

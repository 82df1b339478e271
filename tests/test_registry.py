"""Every extension table is one Registry: the same error on a duplicate, scoped registration."""

from __future__ import annotations

import pytest

from slimgraph.backends.torch.ops import TORCH_OPS
from slimgraph.backends.tvm.lower import LOWERINGS, lowering_table
from slimgraph.backends.tvm.targets import TARGET_KINDS, target_kinds
from slimgraph.errors import RegistrationError
from slimgraph.frontends.onnx.importer import CONVERTERS
from slimgraph.frontends.torch.registry import ATEN, FUNCTIONS, METHODS, MODULES, load_converters
from slimgraph.ir.registry import OPS, all_ops
from slimgraph.passes.pipeline import PIPELINES
from slimgraph.passes.registry import PASSES
from slimgraph.registry import Registry
from slimgraph.runtime.guard_store import LOADERS

all_ops(), lowering_table(), load_converters(), target_kinds()  # fill the lazily loaded tables
REGISTRIES = [OPS, PASSES, PIPELINES, LOWERINGS, CONVERTERS, ATEN, FUNCTIONS, METHODS, MODULES, TORCH_OPS, LOADERS,
              TARGET_KINDS]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.what)
def test_a_duplicate_is_the_same_error_everywhere_and_a_scope_takes_back_its_entries(registry: Registry):
    assert isinstance(registry, Registry) and len(registry) > 0
    key = next(iter(registry))
    entry = registry[key]
    with pytest.raises(RegistrationError, match=f"^{registry.what} .* is already registered$"):
        registry.register(key, entry)
    assert registry[key] is entry  # nothing was replaced
    before = dict(registry)
    with registry.scoped():
        registry.register("scoped-test-entry", entry)
        assert "scoped-test-entry" in registry
    assert dict(registry) == before


def test_coverage_checks_name_what_is_missing():
    lowered = Registry("lowering")
    lowered.register("relu", object())
    assert lowered.missing(["relu", "gelu", "tanh"]) == ["gelu", "tanh"]
    with pytest.raises(RegistrationError, match="no lowering for 'gelu', 'tanh' \\(every op needs one\\)"):
        lowered.check_covers(["relu", "gelu", "tanh"], "every op needs one")
    lowered.check_covers(["relu"])

"""The pass context: handed to every pass and instrument that asks for it; old-style ones still work."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.errors import PassError
from slimgraph.ir import Graph, TensorType
from slimgraph.passes import (
    Instrument,
    Pass,
    PassContext,
    PassFailedError,
    PassManager,
    ReestimateBatchNorms,
    register_pass,
    registered_passes,
    run_pipeline,
)
from slimgraph.passes.registry import PASSES


def _relu_graph() -> Graph:
    g = Graph("ctx")
    x = g.add_input("x", TensorType("f32", ("N", 2)))
    g.set_outputs([g.call("relu", x)])
    return g


class _Seen(Instrument):
    """An instrument with context-aware hooks and one old-style hook."""

    def __init__(self):
        self.contexts = []
        self.passes = []

    def before_pipeline(self, graph, ctx):
        self.contexts.append(ctx)

    def after_pass(self, record, graph):  # no ctx: still called
        self.passes.append(record.name)


def test_passes_and_instruments_get_the_run_context_old_style_ones_still_work():
    seen = []
    with PASSES.scoped():
        @register_pass("ctx-reader")
        class Reader(Pass):
            """Read the context (a test)."""

            def apply(self, graph, ctx):
                seen.append(ctx)

        @register_pass("ctx-ignorer")
        class Ignorer(Pass):
            """Take no context (a test)."""

            def apply(self, graph):
                seen.append("ignored")

        @register_pass("ctx-function")
        def function_pass(graph, ctx):
            """A function pass that reads the context (a test)."""
            seen.append(ctx.options["k"])

        inst, extra = _Seen(), _Seen()
        ctx = PassContext(target="llvm", instruments=[extra], options={"k": 7})
        PassManager("ctx-reader,ctx-ignorer,ctx-function", [inst]).run(_relu_graph(), ctx)
    run_ctx = seen[0]
    assert run_ctx.target == "llvm" and run_ctx.options is ctx.options
    assert seen[1:] == ["ignored", 7]
    # the manager's instruments, then the context's own; both get the context and every pass
    assert list(run_ctx.instruments) == [inst, extra] and list(ctx.instruments) == [extra]
    assert inst.contexts == [run_ctx] and extra.contexts == [run_ctx]
    assert inst.passes == extra.passes == ["ctx-reader", "ctx-ignorer", "ctx-function"]
    assert "ctx-reader" not in registered_passes()  # the scope took its registrations back


def test_a_pass_that_calibrates_names_its_missing_data():
    g = Graph("bn")
    x = g.add_input("x", TensorType("f32", ("N", 1)))
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    g.set_outputs([g.call("batch_norm", x, g.const(one), g.const(zero), g.const(zero), g.const(one))])
    with pytest.raises(PassFailedError, match="reestimate-batch-norms needs input batches"):
        run_pipeline(g, "reestimate-batch-norms")
    assert ReestimateBatchNorms.uses_calibration and not registered_passes()["fuse"].cls.uses_calibration
    batches = [np.array([[1.0], [5.0]], np.float32), np.array([[3.0], [3.0]], np.float32)]
    out, _ = run_pipeline(g, "reestimate-batch-norms", ctx=PassContext(calibration_data=iter(batches)))
    bn = out.nodes[-1]
    assert bn.inputs[3].const_value.tolist() == [3.0] and bn.inputs[4].const_value.tolist() == [2.0]
    assert g.nodes[-1].inputs[3].const_value.tolist() == [0.0]  # the input graph is untouched


def test_the_context_must_be_a_pass_context():
    with pytest.raises(PassError, match="ctx: must be a PassContext, got a dict"):
        PassManager("dce").run(_relu_graph(), {"calibration_data": []})

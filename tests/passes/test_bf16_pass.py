"""The ``bf16`` pass: which ops it converts, what it leaves alone, where ``precision="bf16"`` runs it."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.api import optimize
from slimgraph.errors import PassError
from slimgraph.ir import DType, Graph, TensorType
from slimgraph.passes import ToBf16

RNG = np.random.default_rng(3)


def _graph() -> Graph:
    g = Graph("net")
    x = g.add_input("x", TensorType("f32", (1, 4, 6, 6)))
    y = g.call("conv", x, g.const(RNG.standard_normal((8, 4, 3, 3)).astype(np.float32), name="c1.weight"),
               g.const(RNG.standard_normal(8).astype(np.float32), name="c1.bias"), pads=(1, 1, 1, 1))
    y = g.call("relu", y)
    y = g.call("conv", y, g.const(RNG.standard_normal((8, 1, 3, 3)).astype(np.float32), name="dw.weight"), groups=8)
    y = g.call("reshape", y, shape=(1, 128))
    g.set_outputs([g.call("linear", y, g.const(RNG.standard_normal((5, 128)).astype(np.float32), name="fc.weight"))])
    return g


def test_convs_and_linears_run_on_bf16_operands_depthwise_stays_float32():
    g = _graph()
    converted = ToBf16()(g)
    ops = {n.op: n for n in converted.nodes if n.op in ("conv", "linear")}
    dense = [n for n in converted.nodes if n.op == "conv" and n.attrs["groups"] == 1][0]
    depthwise = [n for n in converted.nodes if n.op == "conv" and n.attrs["groups"] > 1][0]
    assert all(v.type.dtype is DType.bfloat16 for v in dense.inputs)
    assert all(v.type.dtype is DType.float32 for v in depthwise.inputs)
    assert ops["linear"].inputs[1].name == "fc.weight.bf16"
    assert converted.outputs[0].type == g.outputs[0].type  # the graph's interface stays float32
    assert "c1.weight" not in converted.consts()  # the float32 weights are gone, not kept beside
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    want, got = g.run(x)[0], converted.run(x)[0]
    error = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < error < 2e-2


def test_precision_bf16_runs_the_pass_before_fuse():
    optimized = optimize(_graph(), "default", precision="bf16")
    bodies = [n.body for n in optimized.nodes if n.op == "fused"]
    # the casts joined the conv's kernel (before fuse) instead of staying kernels of their own
    assert any("cast" in [m.op for m in b.nodes] and "conv" in [m.op for m in b.nodes] for b in bodies)
    assert not [n for n in optimized.nodes if n.op == "cast"]


def test_unknown_op_option_is_refused():
    with pytest.raises(PassError, match="bad value 'relu' for option 'ops' of pass 'bf16'"):
        ToBf16(ops=("relu",))

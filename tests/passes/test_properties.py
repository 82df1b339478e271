"""Property test: random valid DAGs of registered ops through every built-in pass.

Each graph grows from one image-shaped input (batch static or symbolic) by
drawing ops from the registry's families: unary and binary elementwise ops
(with constants such as 0, 1 and powers of two that trigger the algebraic
rules), conv, linear, batch_norm, pooling, softmax, reshape and transpose
round trips, constant-only subgraphs, duplicates and dead branches. Every
built-in pass, random pipelines of them, and the default pipeline must keep
the verifier green, leave the input graph untouched and keep the
interpreter's results within tolerance.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimgraph.ir import Graph, TensorType, all_ops
from slimgraph.passes import NumericsInstrument, PassManager, VerifyInstrument, parse_pipeline, random_inputs

C, H = 4, 5
BUILTIN = ("canonicalize", "cse", "dce", "fold-constants", "fuse")

#: Unary elementwise float ops that need no attributes and are continuous on all reals:
#: batch-norm folding moves results by float rounding, which a step function
#: (ceil, sign, ...) would turn into a jump of 1.
UNARY = sorted(
    name
    for name, op in all_ops().items()
    if op.category == "elementwise"
    and len(op.inputs) == 1
    and not any(a.required for a in op.attrs)
    and name not in ("cast", "quantize", "dequantize", "logical_not", "log", "sqrt", "reciprocal", "exp")
    and name not in ("ceil", "floor", "round", "sign")
)
BINARY = ("add", "sub", "mul", "max", "min")
SPECIAL = (0.0, 1.0, 2.0, 0.5, -1.0)


class Builder:
    """Draws ops onto a graph; ``images`` are [B,C,H,H] values, ``flats`` are [B,F]."""

    def __init__(self, data, symbolic: bool):
        self.data = data
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
        self.g = Graph("random")
        self.batch = "N" if symbolic else 2
        self.images = [self.g.add_input("x", TensorType("f32", (self.batch, C, H, H)))]
        self.flats = []

    def pick(self, pool):
        return pool[self.data.draw(st.integers(0, len(pool) - 1))]

    def weight(self, *shape, scale=0.3):
        return self.g.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def const_like_channel(self):
        kind = self.data.draw(st.sampled_from(["special", "random", "folded"]))
        if kind == "special":
            return self.g.const(np.float32(self.data.draw(st.sampled_from(SPECIAL))))
        if kind == "random":
            return self.weight(C, 1, 1)
        # a constant-only subgraph for fold-constants
        return self.g.call("tanh", self.g.call("add", self.weight(C, 1, 1), self.weight(1, 1, 1)))

    def step(self) -> None:
        g, op = self.g, self.data.draw(
            st.sampled_from(
                ["unary", "binary", "binary_const", "conv", "batch_norm", "pool", "transposes", "reshapes",
                 "flatten_linear", "softmax", "duplicate", "div_const"]
            )
        )
        x = self.pick(self.images)
        if op == "unary":
            self.images.append(g.call(self.data.draw(st.sampled_from(UNARY)), x))
        elif op == "binary":
            self.images.append(g.call(self.data.draw(st.sampled_from(BINARY)), x, self.pick(self.images)))
        elif op == "binary_const":
            c = self.const_like_channel()
            a, b = (x, c) if self.data.draw(st.booleans()) else (c, x)
            self.images.append(g.call(self.data.draw(st.sampled_from(BINARY)), a, b))
        elif op == "div_const":
            c = g.const(np.float32(self.data.draw(st.sampled_from([1.0, 2.0, 0.25, 3.0]))))
            self.images.append(g.call("div", x, c))
        elif op == "conv":
            k = self.data.draw(st.sampled_from([1, 3]))
            groups = self.data.draw(st.sampled_from([1, C]))
            bias = [self.weight(C)] if self.data.draw(st.booleans()) else []
            p = k // 2
            self.images.append(
                g.call("conv", x, self.weight(C, C // groups, k, k), *bias, pads=(p, p, p, p), groups=groups)
            )
        elif op == "batch_norm":
            params = [
                g.const(self.rng.uniform(0.5, 1.5, C).astype(np.float32)),
                self.weight(C),
                self.weight(C),
                g.const(self.rng.uniform(0.5, 2.0, C).astype(np.float32)),
            ]
            self.images.append(g.call("batch_norm", x, *params))
        elif op == "pool":
            kind = self.data.draw(st.sampled_from(["max_pool", "avg_pool"]))
            self.images.append(g.call(kind, x, kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1)))
        elif op == "transposes":
            t = g.call("transpose", x, perm=(0, 1, 3, 2))
            self.images.append(g.call("transpose", t, perm=self.data.draw(st.sampled_from([(0, 1, 3, 2), (0, 1, 2, 3)]))))
        elif op == "reshapes":
            flat = g.call("reshape", x, shape=(0, C * H * H))
            self.flats.append(flat)
            self.images.append(g.call("reshape", g.call("unsqueeze", flat, axes=(1,)), shape=(0, C, H, H)))
        elif op == "flatten_linear":
            f = g.call("flatten", x, axis=1)
            bias = [self.weight(C * H * H)] if self.data.draw(st.booleans()) else []
            y = g.call("linear", f, self.weight(C * H * H, C * H * H, scale=0.1), *bias)
            if self.data.draw(st.booleans()):
                params = [g.const(self.rng.uniform(0.5, 1.5, C * H * H).astype(np.float32)) for _ in range(2)]
                y = g.call("batch_norm", y, params[0], self.weight(C * H * H), self.weight(C * H * H), params[1])
            self.flats.append(y)
            self.images.append(g.call("reshape", y, shape=(-1, C, H, H)))
        elif op == "softmax":
            self.flats.append(g.call("softmax", g.call("flatten", x, axis=1), axis=-1))
        elif op == "duplicate":
            node = self.pick(self.images).producer
            if node is not None and node.op != "const":
                copy = g.add_node(node.op, node.inputs, node.attrs).outputs[0]
                self.images.append(g.call("add", copy, node.outputs[0]))

    def finish(self) -> Graph:
        outputs = [self.images[-1]]
        if self.flats and self.data.draw(st.booleans()):
            outputs.append(self.flats[-1])
        self.g.set_outputs(outputs)
        return self.g


@st.composite
def graphs(draw):
    data = draw(st.data())
    builder = Builder(data, symbolic=draw(st.booleans()))
    for _ in range(draw(st.integers(1, 10))):
        builder.step()
    return builder.finish()


def snapshot(graph: Graph):
    return str(graph), [id(n) for n in graph.nodes], [[id(u) for u in v.users] for v in graph.values()]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(graphs(), st.lists(st.sampled_from(BUILTIN), min_size=2, max_size=6))
def test_builtin_passes_keep_graphs_valid_and_results_close(graph, random_pipeline):
    graph.verify()
    inputs = random_inputs(graph, seed=5, dim=2)
    before = snapshot(graph)
    pipelines = [[p] for p in BUILTIN] + [random_pipeline, ["default"]]
    for names in pipelines:
        manager = PassManager(parse_pipeline(",".join(names)), [VerifyInstrument(), NumericsInstrument(inputs, rtol=1e-4, atol=1e-4)])
        out = manager.run(graph)
        out.verify()
        assert snapshot(graph) == before, f"{names} changed its input graph"

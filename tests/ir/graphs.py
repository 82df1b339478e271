"""A suite of graphs built directly in the IR, shared by the IR tests."""

from __future__ import annotations

from typing import Callable

import numpy as np

from slimgraph.ir import Graph, TensorType
from slimgraph.ir.interpreter import random_inputs  # noqa: F401  (the suite's tests import it from here)

_rng = np.random.default_rng(1234)


def _w(*shape: int, scale: float = 0.2) -> np.ndarray:
    return (_rng.standard_normal(shape) * scale).astype(np.float32)


def tiny_cnn() -> Graph:
    g = Graph("tiny_cnn")
    x = g.add_input("x", TensorType("f32", ("N", 3, 16, 16)))
    w = g.const(_w(8, 3, 3, 3), name="conv1.weight")
    b = g.const(_w(8), name="conv1.bias")
    y = g.call("conv", x, w, b, pads=(1, 1, 1, 1), loc="model.py:12")
    bn = [g.const(np.abs(_w(8)) + 0.5, name=f"bn1.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
    y = g.call("batch_norm", y, *bn, epsilon=1e-5)
    y = g.call("relu", y)
    y = g.call("max_pool", y, kernel=(2, 2), strides=(2, 2))
    dw = g.const(_w(8, 1, 3, 3), name="dw.weight")
    y = g.call("conv", y, dw, pads=(1, 1, 1, 1), groups=8)
    y = g.call("clip", y, min=0.0, max=6.0)
    y = g.call("global_avg_pool", y)
    y = g.call("flatten", y, axis=1)
    y = g.call("linear", y, g.const(_w(10, 8), name="fc.weight"), g.const(_w(10), name="fc.bias"))
    g.set_outputs([g.call("softmax", y, axis=-1)])
    return g


def mlp() -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", TensorType("f32", ("N", 64)))
    h = g.call("linear", x, g.const(_w(100, 64), name="fc1.weight"), g.const(_w(100), name="fc1.bias"))
    h = g.call("gelu", h, approximate="tanh")
    h = g.call("linear", h, g.const(_w(10, 100), name="fc2.weight"))
    g.set_outputs([g.call("log_softmax", h, axis=1)])
    return g


def residual_multi_output() -> Graph:
    g = Graph("residual")
    x = g.add_input("x", TensorType("f32", ("N", 4, 8)))
    a, b = g.call("split", x, axis=1, sizes=(2, 2))
    s = g.call("add", g.call("sigmoid", a), g.call("tanh", b))
    cat = g.call("concat", s, a, axis=1)
    t = g.call("transpose", cat, perm=(0, 2, 1))
    r = g.call("reshape", t, shape=(0, -1))
    m = g.call("reduce_mean", r, axes=(1,), keepdims=False)
    g.set_outputs([r, m, a])
    return g


def quantized() -> Graph:
    g = Graph("quantized")
    x = g.add_input("x", TensorType("f32", ("N", 8)))
    q = g.call("quantize", x, scale=(0.05,), zero_point=(3,), dtype="u8")
    dq = g.call("dequantize", q, scale=(0.05,), zero_point=(3,))
    wq = g.const(_rng.integers(-7, 8, (4, 8)).astype(np.int8), name="fc.weight_q")
    w = g.call("dequantize", wq, scale=(0.1, 0.2, 0.3, 0.4), zero_point=(0, 0, 0, 0), axis=0)
    y = g.call("linear", dq, w)
    g.set_outputs([y, q])
    return g


def fused_region() -> Graph:
    body = Graph("region0")
    p0 = body.add_input("p0", TensorType("f32", ("N", 6)))
    p1 = body.add_input("p1", TensorType("f32", (5, 6)))
    y = body.call("relu", body.call("linear", p0, p1))
    body.set_outputs([y])
    g = Graph("fused")
    x = g.add_input("x", TensorType("f32", ("N", 6)))
    w = g.const(_w(5, 6), name="w")
    f = g.call("fused", x, w, body=body, anchor="linear")
    g.set_outputs([g.call("exp", f)])
    return g


def elementwise_mix() -> Graph:
    g = Graph("mix")
    x = g.add_input("x", TensorType("f32", ("N", 3, 5)))
    m = g.add_input("m", TensorType("bool", ("N", 1, 5)))
    c = g.const(np.array([0.5, -1.5, 2.0], np.float32).reshape(3, 1))
    y = g.call("mul", x, c)
    y = g.call("where", m, y, g.call("neg", x))
    y = g.call("leaky_relu", y, alpha=0.1)
    y = g.call("hardswish", g.call("pow", y, g.const(np.float32(2.0))))
    y = g.call("cast", g.call("greater", y, g.const(np.float32(0.25))), to="i32")
    g.set_outputs([y])
    return g


GRAPHS: dict[str, Callable[[], Graph]] = {
    "tiny_cnn": tiny_cnn,
    "mlp": mlp,
    "residual_multi_output": residual_multi_output,
    "quantized": quantized,
    "fused_region": fused_region,
    "elementwise_mix": elementwise_mix,
}

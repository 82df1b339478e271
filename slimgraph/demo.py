"""The built-in default model: a small MobileNet-style CNN built directly in the IR.

It is what ``slimgraph demo`` runs end to end, so a fresh install shows the
whole path (build, print, verify, optimize, run) without any model files.

Example::

    >>> from slimgraph.demo import demo_model, demo_inputs
    >>> g = demo_model()
    >>> g.run(*demo_inputs(batch=2))[0].shape
    (2, 10)
"""

from __future__ import annotations

import numpy as np

from slimgraph.ir import Graph, TensorType


def demo_model(seed: int = 0) -> Graph:
    """A 32x32 RGB classifier: conv-bn-relu, a depthwise-separable block with a
    residual add, pooling and a linear head; weights seeded for reproducibility."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> object:
        fan_in = int(np.prod(shape[1:])) or 1
        return g.const((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name=name)

    def bn(x, prefix: str, channels: int):
        params = [
            g.const((1 + 0.1 * rng.standard_normal(channels)).astype(np.float32), name=f"{prefix}.weight"),
            g.const((0.1 * rng.standard_normal(channels)).astype(np.float32), name=f"{prefix}.bias"),
            g.const((0.1 * rng.standard_normal(channels)).astype(np.float32), name=f"{prefix}.running_mean"),
            g.const((1 + 0.1 * rng.random(channels)).astype(np.float32), name=f"{prefix}.running_var"),
        ]
        return g.call("batch_norm", x, *params, loc=prefix)

    g = Graph("demo_cnn")
    x = g.add_input("x", TensorType("f32", ("N", 3, 32, 32)))
    y = g.call("conv", x, weight("stem.conv.weight", 16, 3, 3, 3), strides=(2, 2), pads=(1, 1, 1, 1), loc="stem.conv")
    y = g.call("relu", bn(y, "stem.bn", 16), loc="stem.relu")
    skip = y
    y = g.call("conv", y, weight("block.dw.weight", 16, 1, 3, 3), pads=(1, 1, 1, 1), groups=16, loc="block.dw")
    y = g.call("clip", bn(y, "block.bn1", 16), min=0.0, max=6.0, loc="block.relu6")
    y = g.call("conv", y, weight("block.pw.weight", 16, 16, 1, 1), loc="block.pw")
    y = g.call("add", bn(y, "block.bn2", 16), skip, loc="block.add")
    y = g.call("conv", y, weight("head.conv.weight", 32, 16, 3, 3), strides=(2, 2), pads=(1, 1, 1, 1), loc="head.conv")
    y = g.call("relu", bn(y, "head.bn", 32), loc="head.relu")
    y = g.call("flatten", g.call("global_avg_pool", y, loc="pool"), axis=1)
    y = g.call("linear", y, weight("fc.weight", 10, 32), g.const(np.zeros(10, np.float32), name="fc.bias"), loc="fc")
    g.set_outputs([g.call("softmax", y, axis=-1, loc="softmax")])
    return g


def demo_inputs(batch: int = 1, seed: int = 0) -> list[np.ndarray]:
    """A random image batch for :func:`demo_model`."""
    return [np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)]

"""The prune pass: magnitude and channel pruning, on small graphs, the digits CNN and ResNets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimgraph.analysis import analyze_channels, compare_sizes, size_report
from slimgraph.backends.torch import load_weights
from slimgraph.errors import PassError
from slimgraph.frontends import from_torch
from slimgraph.ir import Graph, TensorType
from slimgraph.passes import OptionValueError, parse_pipeline
from slimgraph.passes.prune import Prune, channel_keep_mask
from slimgraph.analysis.stats import graph_stats
from tests.compression.common import (
    digits_graph,
    fine_tune,
    float_accuracy,
    graph_accuracy,
    light_resnet50,
    random_input,
)
from tests.digits import digits_data
from tests.models import mobilenet_v2, resnet18

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _mlp() -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", TensorType("f32", ("N", 16)))
    h = g.call("relu", g.call("linear", x, g.const(_w(32, 16), name="fc1.weight"), g.const(_w(32), name="fc1.bias")))
    g.set_outputs([g.call("linear", h, g.const(_w(10, 32), name="fc2.weight"))])
    return g


def _branches() -> Graph:
    """Two convs concatenated, a residual add with a third, then a consumer conv (no batch norm),
    so that zeroing a removed channel's filter is the same as removing it."""
    g = Graph("branches")
    x = g.add_input("x", TensorType("f32", (2, 3, 6, 6)))
    pad = {"pads": (1, 1, 1, 1)}
    a = g.call("relu", g.call("conv", x, g.const(_w(4, 3, 3, 3), name="a.weight"), **pad))
    b = g.call("relu", g.call("conv", x, g.const(_w(6, 3, 3, 3), name="b.weight"), **pad))
    cat = g.call("concat", a, b, axis=1)
    c = g.call("conv", x, g.const(_w(10, 3, 1, 1), name="c.weight"))
    d = g.call("conv", cat, g.const(_w(10, 10, 1, 1), name="d.weight"))
    s = g.call("relu", g.call("add", c, d))
    e = g.call("conv", s, g.const(_w(5, 10, 3, 3), name="e.weight"), g.const(_w(5), name="e.bias"), **pad)
    g.set_outputs([g.call("reshape", e, shape=(2, 180))])
    return g


# -- magnitude -------------------------------------------------------------------


def test_magnitude_layer_scope_zeroes_the_smallest_fraction_of_each_weight():
    g = _mlp()
    pruned = Prune(sparsity=0.75)(g)
    pruned.verify()
    for name in ("fc1.weight", "fc2.weight"):
        before, after = g.value(name).const_value, pruned.value(name).const_value
        assert (after == 0).mean() == pytest.approx(0.75)
        kept = after != 0
        assert np.abs(before[kept]).min() >= np.abs(before[~kept]).max()
        np.testing.assert_array_equal(after[kept], before[kept])
    np.testing.assert_array_equal(pruned.value("fc1.bias").const_value, g.value("fc1.bias").const_value)
    assert g.value("fc1.weight").const_value.all()  # the input graph is untouched


def test_magnitude_global_scope_uses_one_threshold():
    g = _mlp()
    pruned = Prune(sparsity=0.5, scope="global")(g)
    weights = [g.value(n).const_value for n in ("fc1.weight", "fc2.weight")]
    kept = [pruned.value(n).const_value != 0 for n in ("fc1.weight", "fc2.weight")]
    assert sum((~k).sum() for k in kept) == sum(w.size for w in weights) // 2
    smallest_kept = min(np.abs(w[k]).min() for w, k in zip(weights, kept))
    largest_cut = max(np.abs(w[~k]).max() for w, k in zip(weights, kept))
    assert smallest_kept >= largest_cut


def test_magnitude_skip_and_overrides():
    pruned = Prune(sparsity=0.5, skip=("fc2",), overrides=("fc1.*:0.25",))(_mlp())
    assert (pruned.value("fc1.weight").const_value == 0).mean() == pytest.approx(0.25)
    assert (pruned.value("fc2.weight").const_value != 0).all()


def test_digits_magnitude_80_percent_with_masked_fine_tune():
    g = digits_graph()
    pruned = Prune(sparsity=0.8, scope="global")(g)
    stats = size_report(pruned)
    assert 1 - stats.nonzero / stats.parameters > 0.75
    tuned = load_weights(pruned, fine_tune(pruned, epochs=3, lr=3e-3, keep_zeros=True))
    for name in ("features.3.weight", "features.7.weight", "classifier.weight"):
        np.testing.assert_array_equal(tuned.value(name).const_value == 0, pruned.value(name).const_value == 0)
    acc = graph_accuracy(tuned)
    print(f"float {float_accuracy():.2f}%  magnitude 80% (global) + fine-tune {acc:.2f}%")
    assert float_accuracy() >= 97.0
    assert float_accuracy() - acc <= 1.0


# -- channel ---------------------------------------------------------------------


def _zeroed(g: Graph, ratio: float) -> Graph:
    """``g`` with the filters that channel pruning at ``ratio`` removes set to zero (no biases here)."""
    out = g.clone()
    for group in analyze_channels(g).groups:
        if group.prunable:
            keep = channel_keep_mask(group, ratio, "l1")
            for name in group.names:
                node = out.value(name).producer
                array = node.attrs["value"].copy()
                array[~keep] = 0
                node.attrs["value"] = node.opdef.attr("value").coerce(array, "const")
    return out


def test_channel_pruning_through_concat_and_residual_equals_zeroed_filters():
    g = _branches()
    pruned = Prune(method="channel", ratio=0.5)(g)
    pruned.verify()
    shapes = {n: pruned.value(n).type.shape for n in ("a.weight", "b.weight", "c.weight", "d.weight", "e.weight")}
    # a and b are concatenated (own groups); c and d are tied by the add; e feeds the output (fixed)
    assert shapes["a.weight"] == (2, 3, 3, 3) and shapes["b.weight"] == (3, 3, 3, 3)
    assert shapes["c.weight"] == (5, 3, 1, 1) and shapes["d.weight"] == (5, 5, 1, 1)
    assert shapes["e.weight"] == (5, 5, 3, 3)
    x = random_input((2, 3, 6, 6))
    np.testing.assert_allclose(pruned.run(x)[0], _zeroed(g, 0.5).run(x)[0], rtol=1e-5, atol=1e-5)


def _kept_rows(before: np.ndarray, after: np.ndarray) -> list[int]:
    return [i for i in range(len(before)) if any(np.array_equal(before[i], row) for row in after)]


def test_residual_group_keeps_the_same_channels_in_every_producer():
    g = _branches()
    tied = [grp for grp in analyze_channels(g).groups if len(grp.producers) == 2]
    assert [sorted(grp.names) for grp in tied] == [["c.weight", "d.weight"]]
    pruned = Prune(method="channel", ratio=0.5)(g)
    kept_c = _kept_rows(g.value("c.weight").const_value, pruned.value("c.weight").const_value)
    kept_a = _kept_rows(g.value("a.weight").const_value, pruned.value("a.weight").const_value)
    kept_b = _kept_rows(g.value("b.weight").const_value, pruned.value("b.weight").const_value)
    assert len(kept_c) == 5 and len(kept_a) == 2 and len(kept_b) == 3
    # d keeps c's output channels, and the inputs the concat still carries
    d = g.value("d.weight").const_value
    expected = d[kept_c][:, kept_a + [4 + i for i in kept_b]]
    np.testing.assert_array_equal(pruned.value("d.weight").const_value, expected)


def test_digits_channel_50_percent_fine_tuned_through_torch():
    g = digits_graph()
    pruned = Prune(method="channel", ratio=0.5, criterion="l1")(g)
    pruned.verify()
    flops_ratio = graph_stats(pruned).flops / graph_stats(g).flops
    module = fine_tune(pruned, epochs=6, lr=3e-3)
    example = torch.from_numpy(digits_data().x_test[:4])
    reimported = from_torch(module, (example,), dynamic_batch=True)
    reimported.verify()
    for v in pruned.consts():
        assert reimported.value(v).type.shape == pruned.value(v).type.shape, v
    acc = graph_accuracy(reimported)
    assert graph_accuracy(load_weights(pruned, module)) == pytest.approx(acc)
    print(f"float {float_accuracy():.2f}%  channel 50% + fine-tune {acc:.2f}%  FLOPs x{flops_ratio:.3f}")
    print(compare_sizes(g, pruned))
    assert float_accuracy() - acc <= 2.0
    assert flops_ratio <= 0.55


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-gamma"])
def test_criteria_pick_the_least_important_channels(criterion):
    g = digits_graph()
    pruned = Prune(method="channel", ratio=0.25, criterion=criterion)(g)
    assert pruned.value("features.0.weight").type.shape == (12, 1, 3, 3)
    w = g.value("features.0.weight").const_value
    if criterion == "bn-gamma":
        score = np.abs(g.value("features.1.weight").const_value)
    else:
        flat = w.reshape(16, -1)
        score = np.abs(flat).sum(1) if criterion == "l1" else np.sqrt((flat**2).sum(1))
    expected = np.sort(np.argsort(score, kind="stable")[4:])
    np.testing.assert_array_equal(pruned.value("features.0.weight").const_value, w[expected])


def _check_pruned_model(g: Graph, x: np.ndarray) -> Graph:
    pruned = Prune(method="channel", ratio=0.5)(g)
    pruned.verify()
    analysis = analyze_channels(g)
    tied = [grp for grp in analysis.groups if len(grp.producers) > 1]
    assert tied, "residual adds should tie channel groups"
    for grp in tied:
        sizes = {pruned.value(n).type.shape[0] for n in grp.names}
        assert sizes == {grp.size - grp.size // 2}, grp.names
    out = pruned.run(x)[0]
    assert out.shape == g.outputs[0].type.shape and np.isfinite(out).all()
    assert graph_stats(pruned).flops < 0.5 * graph_stats(g).flops
    return pruned


def _compiles(pruned: Graph, x: np.ndarray) -> None:
    pytest.importorskip("tvm")
    from slimgraph.api import compile as sg_compile

    compiled = sg_compile(pruned, (x,))
    np.testing.assert_allclose(np.asarray(compiled(x)), pruned.run(x)[0], rtol=1e-3, atol=1e-3)


def test_resnet18_channel_pruning_keeps_every_residual_block_valid():
    module, (example,) = resnet18()
    g = from_torch(module, (example,))
    pruned = _check_pruned_model(g, example.numpy())
    assert pruned.value("layer1.0.conv1.weight").type.shape == (8, 8, 3, 3)
    _compiles(pruned, example.numpy())


def test_onnx_light_resnet50_channel_pruning_keeps_every_residual_block_valid():
    g = light_resnet50()
    x = random_input((1, 3, 224, 224))
    pruned = _check_pruned_model(g, x)
    _compiles(pruned, x)


def test_depthwise_convs_follow_their_producer():
    module, (example,) = mobilenet_v2()
    g = from_torch(module, (example,))
    pruned = Prune(method="channel", ratio=0.5)(g)
    pruned.verify()
    depthwise = [n for n in pruned.nodes if n.op == "conv" and n.attrs["groups"] > 1]
    assert depthwise
    for n in depthwise:
        assert n.attrs["groups"] == n.inputs[0].type.shape[1] == n.output.type.shape[1] == n.inputs[1].type.shape[0]
    assert pruned.run(example.numpy())[0].shape == (2, 10)


# -- options ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["prune{ratio=1.5}", "prune{ratio=-0.1}", "prune{sparsity=1.0}", "prune{method=channel,ratio=2}"])
def test_fractions_outside_0_1_are_rejected(text):
    with pytest.raises(OptionValueError, match="must lie in"):
        parse_pipeline(text)


def test_bad_override_syntax_is_rejected():
    with pytest.raises(OptionValueError, match="pattern:number"):
        Prune(overrides=("fc1",))
    with pytest.raises(OptionValueError, match="must lie in"):
        Prune(overrides=("fc1:3",))


@pytest.mark.parametrize("kwargs", [{"skip": ("nope*",)}, {"overrides": ("layer9.*:0.3",)}])
def test_patterns_that_match_nothing_are_errors(kwargs):
    for method in ("magnitude", "channel"):
        with pytest.raises(PassError, match="matches no prunable weight"):
            Prune(method=method, **kwargs)(_mlp())


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(OptionValueError, match="criterion"):
        parse_pipeline("prune{method=channel,criterion=l3}")

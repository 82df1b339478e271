"""Depth variants: residual blocks found in the IR, skipped exactly, ranked by sensitivity, narrowed
with widths; the guard's ladder over widths x depths and what it reports of calls served in time."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from slimgraph.analysis import residual_blocks
from slimgraph.errors import PassError
from slimgraph.frontends import from_torch
from slimgraph.ir import Graph, TensorType
from slimgraph.passes import SkipBlocks
from slimgraph.runtime import GraphRunner, GuardedModel, GuardError, Variant
from slimgraph.runtime.depth import blocks_to_skip, depth_sensitivity, depth_variant
from slimgraph.runtime.guard import ladder_order
from slimgraph.training import finetune
from tests import tokens
from tests.digits import accuracy, digits_data, trained_digits_resnet
from tests.models import resnet18


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def _resnet_graph() -> Graph:
    return from_torch(trained_digits_resnet(8, 4), (torch.from_numpy(digits_data().x_test[:4]),), dynamic_batch=True)


def _calibration() -> list[np.ndarray]:
    return [digits_data().x_train[i : i + 128] for i in range(0, 512, 128)]


def _accuracy(graph: Graph) -> float:
    return accuracy(lambda x: graph.run(x)[0])


def test_residual_blocks_are_the_identity_shortcut_adds():
    blocks = residual_blocks(_resnet_graph())
    assert [b.layer for b in blocks] == ["stage1.0", "stage1.1", "stage2.1", "stage2.2"]
    # a transformer block has two: attention and MLP
    g = from_torch(tokens.TokenClassifier(depth=2).eval(), (torch.zeros(2, tokens.SEQ, dtype=torch.int64),))
    assert [b.layer for b in residual_blocks(g)] == ["blocks.0", "blocks.0", "blocks.1", "blocks.1"]
    # a projection shortcut (downsample(x) + f(x)) is not one: neither operand is computed from the other
    module, example = resnet18()
    names = [b.layer for b in residual_blocks(from_torch(module, example))]
    assert names and all(not n.endswith(".0") or n.startswith("layer1") for n in names), names


def test_skipping_a_block_is_the_model_with_that_branch_at_zero():
    model = copy.deepcopy(trained_digits_resnet(8, 4))
    with torch.no_grad():  # a branch ending in a batch norm with zero scale and shift adds nothing
        model.stage2[1].bn2.weight.zero_()
        model.stage2[1].bn2.bias.zero_()
    x = digits_data().x_test[:16]
    name = residual_blocks(_resnet_graph())[2].name
    skipped = SkipBlocks(blocks=(name,))(_resnet_graph())
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(skipped.run(x)[0], want, rtol=1e-4, atol=1e-4)
    assert len(skipped.find_nodes("conv")) == len(_resnet_graph().find_nodes("conv")) - 2
    assert skipped.origin is _resnet_graph()
    with pytest.raises(PassError, match="matches no residual block"):
        SkipBlocks(blocks=("nothing",))(_resnet_graph())


@pytest.mark.slow
def test_depth_variants_skip_the_least_sensitive_blocks_and_recover_by_distillation():
    full = _resnet_graph()
    table = depth_sensitivity(full, np.concatenate(_calibration()))
    assert set(table.drops) == {b.name for b in residual_blocks(full)}
    skipped = blocks_to_skip(0.5, table)
    assert len(skipped) == 2 and all(table.drops[s] <= min(table.drops[k] for k in table.drops if k not in skipped)
                                      for s in skipped)
    half = depth_variant(full, 0.5, table, _calibration())
    assert half.origin is full and len(residual_blocks(half)) == 2
    data = digits_data()
    tuned = finetune(half, (data.x_train, data.y_train), epochs=2, lr=3e-3, progress=False)
    print(f"digits ResNet: float {_accuracy(full):.2f}, depth 0.5 {_accuracy(half):.2f}, + KD {_accuracy(tuned):.2f}")
    assert _accuracy(tuned) >= _accuracy(full) - 2.0
    assert depth_variant(full, 1.0, table) is full
    with pytest.raises(Exception, match="fraction of the residual blocks"):
        blocks_to_skip(0.0, table)


@pytest.mark.slow
def test_narrow_builds_widths_times_depths():
    from slimgraph.runtime import narrow

    data = digits_data()
    guarded = narrow(trained_digits_resnet(8, 4), (torch.zeros(8, 1, 8, 8),), [1.0, 0.5], depths=[1.0, 0.5],
                     batches=[8], fallback=False, threads=[None], calibration_data=_calibration(),
                     eval_data=(data.x_test, data.y_test), runs=5)
    by_name = {v.name: v for v in guarded.variants}
    assert set(by_name) == {"w100-b8", "w100-d50-b8", "w50-b8", "w50-d50-b8"}
    assert by_name["w100-d50-b8"].depth == 0.5 and by_name["w50-d50-b8"].width == 0.5
    assert by_name["w100-b8"].model.flops > by_name["w100-d50-b8"].model.flops > by_name["w50-d50-b8"].model.flops
    assert all(v.accuracy is not None and v.latency_ms > 0 for v in guarded.variants)
    assert "depth=0.5" in str(guarded)
    with pytest.raises(GuardError, match="need calibration_data"):
        narrow(trained_digits_resnet(8, 4), (torch.zeros(8, 1, 8, 8),), [1.0], depths=[0.5])


def _runner() -> GraphRunner:
    g = Graph("id")
    g.set_outputs([g.add_input("x", TensorType("f32", (1, 2)))])
    return GraphRunner(g)


def test_the_ladder_keeps_the_variants_no_other_beats_on_latency_and_accuracy():
    r = _runner()
    vs = [Variant("full", r, latency_ms=4.0, accuracy=99.0),
          Variant("w75", r, width=0.75, latency_ms=3.0, accuracy=98.0),
          Variant("d50", r, depth=0.5, latency_ms=2.0, accuracy=98.5),   # beats w75 on both
          Variant("w50", r, width=0.5, latency_ms=1.5, accuracy=96.0)]
    rungs, left_off = ladder_order(vs)
    assert [v.name for v in rungs] == ["full", "d50", "w50"] and [v.name for v in left_off] == ["w75"]
    model = GuardedModel(vs, budget_ms=5.0)
    assert "variant w75 {width=0.75, latency=3.000ms, accuracy=98.00%}  # left off" in str(model)
    # the full model stays even when a narrower variant measured faster and more accurate
    lucky = Variant("lucky", r, width=0.5, latency_ms=1.0, accuracy=99.5)
    assert [v.name for v in ladder_order([*vs, lucky])[0]] == ["full", "lucky"]
    # without measured accuracy: widest first, then deepest
    unmeasured = [Variant(v.name, r, width=v.width, depth=v.depth, latency_ms=v.latency_ms) for v in vs]
    assert [v.name for v in ladder_order(unmeasured)[0]] == ["full", "d50", "w75", "w50"]
    with pytest.raises(GuardError, match="depth=1.5 must be a fraction"):
        Variant("x", r, depth=1.5)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stats_report_slo_attainment_and_effective_accuracy():
    clock = _Clock()
    cost = {"full": 4.0, "half": 1.0}

    def model(name):
        def run(x):
            clock.now += cost[name] / 1e3
            return x
        run.input_types = [TensorType("f32", (1, 2))]
        return run

    guarded = GuardedModel([Variant("full", model("full"), latency_ms=4.0, accuracy=90.0),
                            Variant("half", model("half"), width=0.5, latency_ms=1.0, accuracy=80.0)],
                           budget_ms=3.0, clock=clock, idle_hint=None,
                           policy=lambda cands: "full" if clock.now < 0.0035 else "half")
    x = np.zeros((1, 2), np.float32)
    for _ in range(4):
        guarded(x)  # full (4 ms, late), then half three times (1 ms, in time)
    stats = guarded.stats()
    assert stats.calls == {"full": 1, "half": 3}
    assert stats.slo_attainment == pytest.approx(0.75)
    assert stats.effective_accuracy == pytest.approx((0 + 3 * 80.0) / 4)  # the late answer counts as wrong
    assert stats.full_share == pytest.approx(0.25)
    assert stats.p95_over_budget == pytest.approx(np.percentile([4 / 3, 1 / 3, 1 / 3, 1 / 3], 95))
    assert "SLO attainment: 75.0%" in stats.table() and "effective accuracy: 60.00%" in stats.table()
    assert GuardedModel([Variant("full", model("full"))]).stats().slo_attainment is None


class _Queue:
    """A variant's call lock that another caller holds for ``ms`` on the fake clock."""

    def __init__(self, clock: _Clock, ms: float):
        self.clock, self.ms = clock, ms

    def __enter__(self):
        self.clock.now += self.ms / 1e3

    def __exit__(self, *exc):
        return False


def test_time_queued_for_a_variant_counts_against_the_budget_but_not_as_its_latency():
    clock = _Clock()

    def run(x):
        clock.now += 1e-3
        return x
    run.input_types = [TensorType("f32", (1, 2))]
    guarded = GuardedModel([Variant("full", run, latency_ms=1.0, accuracy=90.0)], budget_ms=3.0, clock=clock,
                           idle_hint=None)
    guarded._call_locks["full"] = _Queue(clock, 4.0)
    guarded(np.zeros((1, 2), np.float32))
    record = guarded.records()[-1]
    assert record.latency_ms == pytest.approx(1.0) and record.waited_ms == pytest.approx(4.0)
    stats = guarded.stats()
    assert stats.latency["full"]["p50"] == pytest.approx(1.0)
    assert stats.slo_attainment == 0.0 and stats.effective_accuracy == 0.0
    assert stats.p95_over_budget == pytest.approx(5.0 / 3.0)


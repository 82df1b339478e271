"""finetune: distillation from the uncompressed origin recovers what compression cost, and keeps
what compression made (pruned zeros, quantization grids) exactly."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import slimgraph
from slimgraph.frontends import from_torch
from slimgraph.ir import Graph, TensorType
from slimgraph.passes import (FoldConstants, PassContext, Prune, ReestimateBatchNorms, SkipBlocks, parse_pipeline,
                              run_pipeline)
from slimgraph.passes.quantize import quantize_graph
from slimgraph.training import FinetuneError, finetune
from tests import tokens
from tests.compression.common import digits_graph, float_accuracy, graph_accuracy
from tests.digits import digits_data


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # seeded training is then repeatable, and leaves a core to the others
    yield
    torch.set_num_threads(threads)


def _calibration() -> list[np.ndarray]:
    return [digits_data().x_train[i : i + 128] for i in range(0, 512, 128)]


@functools.lru_cache(maxsize=1)
def _pruned_digits() -> Graph:
    """The digits CNN with half its channels removed, batch norms re-estimated (costs ~28 points)."""
    return ReestimateBatchNorms()(Prune(method="channel", ratio=0.5)(digits_graph()), PassContext(calibration_data=_calibration()))


@functools.lru_cache(maxsize=1)
def _token_graph() -> Graph:
    data = tokens.token_data()
    return from_torch(tokens.trained_token_classifier(), (torch.from_numpy(data.x_test[:4]),), dynamic_batch=True)


def _token_accuracy(graph: Graph) -> float:
    return tokens.accuracy(lambda x: graph.run(x)[0])


def test_compressing_passes_record_the_uncompressed_origin():
    g = digits_graph()
    pruned = Prune(method="channel", ratio=0.5)(g)
    assert pruned.origin is g
    # a chain of passes keeps the first graph, and a pass that does not compress keeps what it got
    assert SkipBlocks()(Prune(sparsity=0.3)(pruned)).origin is g
    assert FoldConstants()(pruned).origin is g and pruned.clone().origin is g
    assert FoldConstants()(g).origin is None
    optimized, _ = run_pipeline(g, "prune{method=channel,ratio=0.5},fold-constants")
    assert optimized.origin is g


@pytest.mark.slow
def test_kd_recovers_the_pruned_digits_cnn_better_than_ce_at_the_same_budget():
    data = digits_data()
    pruned = _pruned_digits()
    budget = dict(epochs=4, lr=1e-3, progress=False)
    kd = graph_accuracy(finetune(pruned, (data.x_train, data.y_train), loss="kd", **budget))
    ce = graph_accuracy(finetune(pruned, (data.x_train, data.y_train), loss="ce", **budget))
    print(f"digits CNN: float {float_accuracy():.2f}, pruned 50% {graph_accuracy(pruned):.2f}, "
          f"KD {kd:.2f}, CE {ce:.2f}")
    assert graph_accuracy(pruned) < float_accuracy() - 10
    assert kd >= float_accuracy() - 1.0
    assert kd >= ce


def test_kd_needs_no_labels():
    data = digits_data()
    pruned = _pruned_digits()
    tuned = finetune(pruned, data.x_train, loss="kd", epochs=2, lr=3e-3, progress=False)
    assert graph_accuracy(tuned) >= float_accuracy() - 2.0 > graph_accuracy(pruned)


@pytest.mark.slow
def test_kd_recovers_the_pruned_transformer():
    data = tokens.token_data()
    full = _token_graph()
    pruned = Prune(method="channel", ratio=0.5)(full)
    assert sum(a.size for a in pruned.consts().values()) < 0.9 * sum(a.size for a in full.consts().values())
    budget = dict(epochs=2, lr=3e-3, progress=False)
    kd = _token_accuracy(finetune(pruned, (data.x_train, data.y_train), loss="kd", **budget))
    ce = _token_accuracy(finetune(pruned, (data.x_train, data.y_train), loss="ce", **budget))
    print(f"transformer: float {_token_accuracy(full):.2f}, pruned 50% {_token_accuracy(pruned):.2f}, "
          f"KD {kd:.2f}, CE {ce:.2f}")
    assert _token_accuracy(pruned) < _token_accuracy(full) - 5
    assert kd >= _token_accuracy(full) - 1.0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits", "transformer"])
def test_int8_qdq_with_kd_at_least_matches_ptq(model):
    if model == "digits":
        full, data, score = digits_graph(), digits_data(), graph_accuracy
        calibration = _calibration()
    else:
        full, data, score = _token_graph(), tokens.token_data(), _token_accuracy
        calibration = [data.x_train[:256]]
    ptq = quantize_graph(full, calibration, progress=False)
    assert ptq.origin is full
    qat = finetune(ptq, (data.x_train, data.y_train), loss="kd", epochs=1, lr=1e-4, progress=False)
    print(f"{model}: float {score(full):.2f}, PTQ {score(ptq):.2f}, QDQ + KD {score(qat):.2f}")
    assert score(qat) >= score(ptq)


def _weight_grids(graph: Graph) -> dict[str, tuple]:
    """Per integer constant read by dequantize: its dtype and the dequantize parameters."""
    return {
        n.output.name: (n.output.type, tuple(sorted((k, v) for k, v in n.output.users[0].attrs.items())))
        for n in graph.nodes
        if n.op == "const" and not n.output.type.dtype.is_float and n.output.users
        and n.output.users[0].op == "dequantize"
    }


def test_quantization_grids_and_sparsity_survive_fine_tuning_exactly():
    data = digits_data()
    sparse = Prune(sparsity=0.5)(digits_graph())
    qdq = quantize_graph(sparse, _calibration(), progress=False)
    tuned = finetune(qdq, (data.x_train, data.y_train), loss="kd", epochs=1, lr=1e-3, progress=False)
    before, after = _weight_grids(qdq), _weight_grids(tuned)
    assert before == after and len(before) >= 8  # every weight and bias: same dtype, scales, zero points
    changed = 0
    for name in before:
        old, new = qdq.value(name).const_value, tuned.value(name).const_value
        assert new.dtype == old.dtype
        if name.endswith("weight.q"):  # pruned weights stay at zero; a code that rounded to zero may move
            pruned = sparse.value(name.removesuffix(".q")).const_value == 0
            assert pruned.any() and not new[pruned].any()
        changed += int((old != new).sum())
    assert changed > 1000  # the codes did move: training happened on the grid, not beside it
    # activations keep their quantize -> dequantize pairs with the same parameters
    acts = lambda g: sorted(str(sorted(n.attrs.items())) for n in g.nodes if n.op == "quantize")  # noqa: E731
    assert acts(tuned) == acts(qdq)


def test_float_sparsity_survives_fine_tuning_exactly():
    sparse = Prune(sparsity=0.6)(digits_graph())
    tuned = finetune(sparse, digits_data().x_train[:512], epochs=1, lr=1e-3, progress=False)
    for name, array in sparse.consts().items():
        new = tuned.value(name).const_value
        np.testing.assert_array_equal(new == 0, array == 0)
    assert not np.array_equal(tuned.value("features.0.weight").const_value, sparse.value("features.0.weight").const_value)


def test_the_finetune_step_distills_in_a_pipeline_and_compile():
    x = digits_data().x_train[:256]
    text = "prune{method=channel,ratio=0.5},finetune{epochs=2,lr=0.003}"
    pruned = Prune(method="channel", ratio=0.5)(digits_graph())
    out, _ = run_pipeline(digits_graph(), text, ctx=PassContext(calibration_data=[x]))
    assert out.origin is digits_graph()
    assert graph_accuracy(out) > graph_accuracy(pruned) + 10
    compiled = slimgraph.compile(digits_graph(), (x[:8],), pipeline=text + ",default", calibration_data=[x])
    np.testing.assert_allclose(compiled(x[:8]), out.run(x[:8])[0], rtol=1e-4, atol=1e-4)


def test_finetune_refuses_what_it_cannot_do():
    g = Graph("lin")
    x = g.add_input("x", TensorType("f32", ("N", 4)))
    g.set_outputs([g.call("linear", x, g.const(np.ones((3, 4), np.float32), name="fc.weight"))])
    data = np.ones((8, 4), np.float32)
    with pytest.raises(FinetuneError, match="records no origin"):
        finetune(g, data, progress=False)
    with pytest.raises(FinetuneError, match="needs labels"):
        finetune(g, data, loss="ce", progress=False)
    with pytest.raises(FinetuneError, match="valid losses are kd, ce, mse"):
        finetune(g, data, teacher=g, loss="l1", progress=False)
    with pytest.raises(FinetuneError, match="same number of rows"):
        finetune(g, (data, np.zeros(3, np.int64)), teacher=g, progress=False)
    with pytest.raises(slimgraph.SlimgraphError, match="finetune needs training data"):
        parse_pipeline("finetune")[0](g)


def test_a_model_loaded_without_its_graph_says_how_to_keep_it(tmp_path):
    g = _linear(3)
    x = np.ones((2, 64), np.float32)
    slimgraph.compile(g, (x,)).save(tmp_path / "lean")
    with pytest.raises(FinetuneError, match=r"save\(dir, ir=True\)"):
        finetune(slimgraph.load(tmp_path / "lean"), x, teacher=g, progress=False)
    slimgraph.compile(g, (x,)).save(tmp_path / "full", ir=True)
    assert isinstance(finetune(slimgraph.load(tmp_path / "full"), x, teacher=g, epochs=1, progress=False), Graph)


def test_a_compiled_model_is_fine_tuned_through_its_fused_graph():
    data = digits_data()
    compiled = slimgraph.compile(digits_graph(), (data.x_test[:8],), pipeline="prune{method=channel,ratio=0.5},default")
    assert compiled.ir.origin is digits_graph()  # the teacher: the graph before the pipeline pruned it
    tuned = finetune(compiled, (data.x_train, data.y_train), epochs=1, lr=3e-3, progress=False)
    assert any(n.op == "fused" for n in tuned.nodes)
    assert graph_accuracy(tuned) > graph_accuracy(compiled.ir) + 20
    again = slimgraph.compile(tuned, (data.x_test[:8],), pipeline=None)
    np.testing.assert_allclose(again(data.x_test[:8]), tuned.run(data.x_test[:8])[0], rtol=1e-4, atol=1e-4)


def _linear(rows: int = 64, softmax: bool = False) -> Graph:
    g = Graph("lin")
    x = g.add_input("x", TensorType("f32", ("N", 64)))
    w = np.random.default_rng(0).standard_normal((rows, 64)).astype(np.float32)
    y = g.call("linear", x, g.const(w, name="fc.weight"))
    g.set_outputs([g.call("softmax", y, axis=-1) if softmax else y])
    return g


def test_codes_that_rounding_made_zero_train_unless_the_weight_was_pruned():
    calibration = [np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)]
    data = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    for pruned in (False, True):
        g = Prune(sparsity=0.5)(_linear()) if pruned else _linear()
        qdq = quantize_graph(g, calibration, weights="int4", progress=False)
        tuned = finetune(qdq, data, teacher=_linear(), epochs=3, lr=3e-2, progress=False)
        before, after = qdq.value("fc.weight.q").const_value, tuned.value("fc.weight.q").const_value
        zero = before == 0
        assert zero.mean() >= (0.5 if pruned else 0.05)
        if pruned:
            assert not after[zero].any()
        else:
            assert after[zero].any(), "codes that rounding made zero were frozen like pruned ones"


def test_a_trailing_softmax_is_left_off_for_the_losses():
    # KD on a model that ends in probabilities trains exactly as on its logits
    data = np.random.default_rng(2).standard_normal((128, 64)).astype(np.float32)
    tuned = [finetune(Prune(sparsity=0.5)(_linear(10, softmax)), data, epochs=2, lr=1e-2, progress=False)
             for softmax in (False, True)]
    np.testing.assert_allclose(tuned[1].value("fc.weight").const_value, tuned[0].value("fc.weight").const_value,
                               rtol=1e-5, atol=1e-6)
    assert tuned[1].outputs[0].producer.op == "softmax"


def test_a_teacher_compiled_for_one_row_and_a_torch_teacher_are_left_as_they_were():
    g = _linear(3)
    data = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    compiled = slimgraph.compile(g, (data[:1],), target="llvm")
    want = finetune(Prune(sparsity=0.5)(g), data, epochs=1, progress=False)
    got = finetune(Prune(sparsity=0.5)(g), data, teacher=compiled, epochs=1, progress=False)
    np.testing.assert_allclose(got.value("fc.weight").const_value, want.value("fc.weight").const_value, atol=1e-5)
    module = torch.nn.Linear(64, 3, bias=False).train()
    state = torch.random.get_rng_state()
    finetune(Prune(sparsity=0.5)(g), data, teacher=module, epochs=1, progress=False)
    assert module.training, "finetune left the user's teacher in eval mode"
    assert torch.equal(torch.random.get_rng_state(), state), "finetune reseeded the caller's global generator"

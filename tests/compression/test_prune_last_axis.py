"""Channel pruning of linears over [N, T, D] (channels on the last axis): a transformer's MLP
hidden width shrinks; layer norms and residual adds keep the model width whole."""

from __future__ import annotations

import numpy as np
import torch

from slimgraph.analysis import analyze_channels
from slimgraph.frontends import from_torch
from slimgraph.ir import Graph, TensorType
from slimgraph.passes.prune import Prune
from tests import tokens

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _mlp_block(dim: int = 8, hidden: int = 12) -> Graph:
    """``x + fc2(gelu(fc1(layer_norm(x))))`` over [N, 5, dim], fc2 through a [N*5, hidden] view
    (torch.export's form of a 3-d linear), then a 3-d linear head on the last axis."""
    g = Graph("mlp_block")
    x = g.add_input("x", TensorType("f32", ("N", 5, dim)))
    h = g.call("layer_norm", x, g.const(np.ones(dim, np.float32)), g.const(np.zeros(dim, np.float32)))
    h = g.call("linear", h, g.const(_w(hidden, dim), name="fc1.weight"), g.const(_w(hidden), name="fc1.bias"))
    h = g.call("reshape", g.call("gelu", h), shape=(-1, hidden))
    h = g.call("linear", h, g.const(_w(dim, hidden), name="fc2.weight"), g.const(_w(dim), name="fc2.bias"))
    y = g.call("add", x, g.call("reshape", h, shape=(-1, 5, dim)))
    g.set_outputs([g.call("linear", y, g.const(_w(3, dim), name="head.weight"))])
    return g


def test_the_hidden_width_between_last_axis_linears_is_one_prunable_group():
    groups = {tuple(grp.names): grp for grp in analyze_channels(_mlp_block()).groups}
    assert groups[("fc1.weight",)].prunable and groups[("fc1.weight",)].size == 12
    assert [n.inputs[1].name for n in groups[("fc1.weight",)].consumers] == ["fc2.weight"]
    # fc2's output is added to the input (model width, untracked): pinned; the head is an output
    assert "add" in groups[("fc2.weight",)].fixed
    assert groups[("head.weight",)].fixed == "a graph output"


def test_pruning_the_hidden_width_equals_zeroing_its_columns_in_the_reference_interpreter():
    g = _mlp_block()
    pruned = Prune(method="channel", ratio=0.5)(g)
    pruned.verify()
    w1, w2 = g.value("fc1.weight").const_value, g.value("fc2.weight").const_value
    assert pruned.value("fc1.weight").type.shape == (6, 8) and pruned.value("fc1.bias").type.shape == (6,)
    assert pruned.value("fc2.weight").type.shape == (8, 6)
    kept = [i for i in range(12) if any(np.array_equal(w1[i], r) for r in pruned.value("fc1.weight").const_value)]
    zeroed = g.clone()
    columns = w2.copy()
    columns[:, [i for i in range(12) if i not in kept]] = 0
    zeroed.set_const(zeroed.value("fc2.weight"), columns)
    x = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    np.testing.assert_allclose(pruned.run(x)[0], zeroed.run(x)[0], rtol=1e-5, atol=1e-5)


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=16, num_labels=3)
    return BertForSequenceClassification(config).eval()


def test_a_two_layer_bert_loses_half_its_heads_and_ffn_width_and_matches_torch_with_those_zeroed():
    model = _tiny_bert()
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, 40, (3, 8)))
    g = from_torch(model, (ids,))
    layers = [f"bert.encoder.layer.{i}" for i in range(2)]
    groups = {tuple(grp.names): grp for grp in analyze_channels(g).groups}
    for p in layers:
        heads = groups[tuple(f"{p}.attention.self.{x}.weight" for x in ("query", "key", "value"))]
        assert heads.prunable and heads.block == 4  # q, k and v tied, in whole heads of 4 channels
    pruned = Prune(method="channel", ratio=0.5)(g)
    pruned.verify()
    before = {n: a.shape for n, a in g.consts().items() if a.dtype == np.float32}
    after = {n: a.shape for n, a in pruned.consts().items() if a.dtype == np.float32}
    shrunk = {n for n in before if after.get(n) != before[n]}
    # the heads and the FFN hidden width go (and the pooler's, a 2-d linear before the classifier);
    # layer norms and residual adds keep the model width whole
    qkv = [f"{p}.attention.self.{x}.{part}" for p in layers for x in ("query", "key", "value")
           for part in ("weight", "bias")]
    pairs = [(f"{p}.attention.self.query", f"{p}.attention.output.dense") for p in layers]
    pairs += [(f"{p}.intermediate.dense", f"{p}.output.dense") for p in layers]
    pairs += [("bert.pooler.dense", "classifier")]
    assert shrunk == set(qkv) | {f"{a}.{part}" for a, _ in pairs for part in ("weight", "bias")} | {
        f"{b}.weight" for _, b in pairs}
    for p in layers:
        kept_q = _kept(g, pruned, f"{p}.attention.self.query.weight")
        assert len(kept_q) == 8 and all(kept_q[i] % 4 == 0 and kept_q[i: i + 4] == list(range(kept_q[i], kept_q[i] + 4))
                                        for i in range(0, 8, 4))  # two whole heads
        assert _kept(g, pruned, f"{p}.attention.self.value.weight") == kept_q
    for producer, consumer in pairs:
        w, kept = g.consts()[f"{producer}.weight"], _kept(g, pruned, f"{producer}.weight")
        assert len(kept) == len(w) // 2
        with torch.no_grad():
            model.get_submodule(consumer).weight[:, [i for i in range(len(w)) if i not in kept]] = 0
    with torch.no_grad():
        expected = model(ids).logits.numpy()
    np.testing.assert_allclose(pruned.run(ids.numpy())[0], expected, rtol=1e-4, atol=1e-5)


def _kept(g: Graph, pruned: Graph, name: str) -> list[int]:
    """The rows of ``name`` in ``g`` that ``pruned`` kept."""
    w, rows = g.consts()[name], pruned.consts()[name]
    return [i for i in range(len(w)) if any(np.array_equal(w[i], r) for r in rows)]


def test_the_token_classifier_written_with_linears_prunes_its_mlps():
    data = tokens.token_data()
    g = from_torch(tokens.TokenClassifier().eval(), (torch.from_numpy(data.x_test[:4]),), dynamic_batch=True)
    prunable = sorted(n for grp in analyze_channels(g).groups if grp.prunable for n in grp.names)
    assert prunable == ["blocks.0.mlp.fc1.weight", "blocks.1.mlp.fc1.weight", "head.0.weight"]
    pruned = Prune(method="channel", ratio=0.5)(g)
    assert pruned.value("blocks.0.mlp.fc2.weight").type.shape == (16, 8)
    x = data.x_test[:5]
    assert pruned.run(x)[0].shape == (5, tokens.CLASSES)

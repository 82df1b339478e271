"""A BERT-like and a GPT-like model compiled once with ``dynamic=`` serve every batch and
sequence length in their bounds, matching eager PyTorch, without compiling again.

The models are small transformers configs (random weights, nothing downloaded) with 512
positions, so sequence 384 fits. Batch in 1..8 and sequence in 1..384 are torch.export
``Dim``s; every size of the issue (batch 1, 3, 8 x sequence 1, 7, 128, 384) runs on the one
build, whose ``tvm.compile`` calls are counted. Masks hold padding (the last row's tail),
so the padding path is exercised at every size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tvm = pytest.importorskip("tvm")

import slimgraph  # noqa: E402
from slimgraph.errors import ArgumentError, BackendError, FrontendError  # noqa: E402

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
BATCHES = (1, 3, 8)
LENGTHS = (1, 7, 128, 384)
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


class Wrapper(torch.nn.Module):
    """``model(**dict(zip(names, inputs)), return_dict=False)[0]``: the last hidden state."""

    def __init__(self, model: torch.nn.Module, names: list[str], **options):
        super().__init__()
        self.model, self.names, self.options = model.eval(), names, {"return_dict": False, **options}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs)), **self.options)[0]


def _inputs(batch: int, length: int, count: int) -> tuple:
    ids = torch.randint(0, 200, (batch, length), generator=torch.Generator().manual_seed(batch * 1000 + length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2 + 1:] = 0  # padding in the last row (none at length 1)
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, length // 2:] = 1
    return (ids, mask, types)[:count]


def bert() -> tuple[torch.nn.Module, int]:
    config = transformers.BertConfig(vocab_size=200, max_position_embeddings=512, **SMALL)
    model = transformers.BertModel(config, add_pooling_layer=False)
    return Wrapper(model, ["input_ids", "attention_mask", "token_type_ids"]), 3


def gpt2() -> tuple[torch.nn.Module, int]:
    config = transformers.GPT2Config(vocab_size=200, n_positions=512, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    return Wrapper(transformers.GPT2Model(config), ["input_ids", "attention_mask"], use_cache=False), 2


@pytest.fixture
def compile_count(monkeypatch):
    """How many times ``tvm.compile`` ran since the test started."""
    calls = []
    real = tvm.compile

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tvm, "compile", counting)
    return calls


@pytest.mark.parametrize("make", [bert, gpt2], ids=["bert", "gpt2"])
def test_one_build_serves_every_size(make, compile_count):
    torch.manual_seed(0)
    model, count = make()
    batch, length = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("seq", min=1, max=384)
    dynamic = tuple({0: batch, 1: length} for _ in range(count))
    compiled = slimgraph.compile(model, _inputs(2, 8, count), dynamic=dynamic)
    assert len(compile_count) == 1
    assert compiled.dynamic == {"batch": (1, 8), "seq": (1, 384)}
    assert [str(t) for t in compiled.input_types] == ["i64[batch,seq]"] * count
    for b in BATCHES:
        for s in LENGTHS:
            inputs = _inputs(b, s, count)
            with torch.no_grad():
                expected = model(*inputs).numpy()
            got = compiled(*[x.numpy() for x in inputs])
            assert got.shape == (b, s, 64)
            error = float(np.abs(got - expected).max() / np.abs(expected).max())
            assert error < TOLERANCE, f"batch {b}, sequence {s}: relative error {error:.2e}"
    assert len(compile_count) == 1  # every size ran on the one build


def test_sizes_outside_the_bounds_are_refused_naming_input_axis_and_bounds():
    model, count = bert()
    compiled = slimgraph.compile(model, _inputs(2, 8, count),
                                 dynamic={0: {0: ("batch", 1, 4), 1: ("seq", 2, 16)},
                                          1: {0: "batch", 1: "seq"}, 2: {0: "batch", 1: "seq"}})
    assert compiled.dynamic == {"batch": (1, 4), "seq": (2, 16)}
    with pytest.raises(BackendError, match=r"input 0 \(%\w+\): axis 0 has size 5 .*1 <= batch <= 4"):
        compiled(*[x.numpy() for x in _inputs(5, 8, count)])
    with pytest.raises(BackendError, match=r"input 0 \(%\w+\): axis 1 has size 17 .*2 <= seq <= 16"):
        compiled(*[x.numpy() for x in _inputs(2, 17, count)])
    with pytest.raises(BackendError, match=r"axis 1 has size 1 .*2 <= seq <= 16"):
        compiled(*[x.numpy() for x in _inputs(2, 1, count)])
    ids, mask, types = _inputs(2, 8, count)
    with pytest.raises(BackendError, match=r"input 1 \(%\w+\): axis 1 has size 9, which does not fit dim seq"):
        compiled(ids.numpy(), _inputs(2, 9, count)[1].numpy(), types.numpy())


def test_bad_dynamic_arguments_fail_before_any_work():
    model, count = bert()
    inputs = _inputs(2, 8, count)
    with pytest.raises(ArgumentError, match="input 3 does not exist"):
        slimgraph.compile(model, inputs, dynamic={3: {0: "batch"}})
    with pytest.raises(ArgumentError, match="input 0 has 2 axes; no axis 2"):
        slimgraph.compile(model, inputs, dynamic={0: {2: "batch"}})
    with pytest.raises(ArgumentError, match="2 entries for 3 inputs"):
        slimgraph.compile(model, inputs, dynamic=({0: "batch"}, None))
    with pytest.raises(ArgumentError, match="example input 0 axis 1 has size 8, outside the bounds of seq: 1..4"):
        slimgraph.compile(model, inputs, dynamic={i: {1: ("seq", 1, 4)} for i in range(count)})


def test_onnx_symbolic_axis_takes_the_bounds():
    import io

    import onnx

    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    buffer = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(2, 16),), buffer, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    compiled = slimgraph.compile(proto, dynamic={"x": {0: ("batch", 1, 64)}})
    assert compiled.dynamic == {"batch": (1, 64)}
    for rows in (1, 5, 64):
        x = torch.randn(rows, 16)
        np.testing.assert_allclose(compiled(x.numpy()), net(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(BackendError, match=r"input 0 \(%x\): axis 0 has size 65 .*1 <= batch <= 64"):
        compiled(np.zeros((65, 16), np.float32))
    with pytest.raises(ArgumentError, match=r"input 0 \(%x\) axis 1 is 16 in f32\[batch,16\]; only an axis the model "
                                            "leaves symbolic"):
        slimgraph.compile(proto, dynamic={"x": {1: "width"}})


def test_a_size_the_model_fixes_is_named_with_torchs_guard():
    # 64 position embeddings: transformers' code cannot run a sequence past 64, and torch.export
    # says so; the error keeps torch's guard and suggested fix
    config = transformers.BertConfig(vocab_size=200, max_position_embeddings=64, **SMALL)
    model = Wrapper(transformers.BertModel(config, add_pooling_layer=False), ["input_ids", "attention_mask"])
    with pytest.raises(FrontendError, match=r"Constraints violated \(seq\).*<= 64.*Dim\('seq', max=64\)"):
        slimgraph.compile(model, _inputs(2, 8, 2),
                          dynamic={0: {0: "batch", 1: ("seq", 1, 384)}, 1: {0: "batch", 1: "seq"}})

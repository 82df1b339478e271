"""Text transformers built with Hugging Face ``transformers`` from small configs (random
weights, nothing downloaded) import, compile for ``llvm`` and match eager PyTorch.

Each model goes three ways: ``slimgraph.compile`` on the module (from_torch), and on the
ONNX model from ``torch.onnx.export`` with the TorchScript exporter (opset 17) and with the
dynamo exporter. The output must be within 1e-4 of its largest magnitude. Every run prints
one row (model, path, compile seconds, relative error); ``pytest -s`` shows the table.

The models run through a thin wrapper that passes the inputs by keyword with
``return_dict=False`` (and ``use_cache=False`` where there is a cache) and returns the
last hidden state. Inputs hold padding: the int64 ids and masks flow through as they are.
Decoder-only models get an attention mask too: without one, transformers looks for packed
sequences with ``torch.diff``, which the TorchScript exporter cannot export at opset 17.
T5 runs with eager attention: with SDPA, torch's own decomposition in the dynamo
exporter fails on a view of transposed strides. BART covers SDPA in an encoder-decoder.
"""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
import onnx
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tvm")

import slimgraph  # noqa: E402
from slimgraph.backends.tvm.schedules.cpu import FALLBACK_ATTR  # noqa: E402

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
PATHS = ("torch", "onnx-torchscript", "onnx-dynamo")
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


class Wrapper(torch.nn.Module):
    """Calls ``model(**dict(zip(names, inputs)), return_dict=False)`` and returns its first output."""

    def __init__(self, model: torch.nn.Module, names: list[str], cache: bool):
        super().__init__()
        self.model, self.names = model.eval(), names
        self.options = {"return_dict": False, **({"use_cache": False} if cache else {})}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs)), **self.options)[0]


def _ids(vocab: int, shape: tuple, seed: int = 0, low: int = 0) -> torch.Tensor:
    return torch.randint(low, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _padding_mask(batch: int = 2, length: int = 8, valid: int = 6) -> torch.Tensor:
    """All ones but the last row, whose tail is padding."""
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, valid:] = 0
    return mask


def bert():
    config = transformers.BertConfig(vocab_size=200, max_position_embeddings=64, **SMALL)
    token_types = torch.zeros(2, 8, dtype=torch.long)
    token_types[:, 4:] = 1
    model = transformers.BertModel(config, add_pooling_layer=False)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return Wrapper(model, names, cache=False), (_ids(200, (2, 8)), _padding_mask(), token_types)


def distilbert():
    config = transformers.DistilBertConfig(vocab_size=200, max_position_embeddings=64, dim=64, n_layers=2,
                                           n_heads=4, hidden_dim=128)
    model = transformers.DistilBertModel(config)
    return Wrapper(model, ["input_ids", "attention_mask"], cache=False), (_ids(200, (2, 8)), _padding_mask(valid=5))


def roberta():
    # position ids count the non-padding tokens (cumsum), so the padded row holds the pad id 1
    config = transformers.RobertaConfig(vocab_size=200, max_position_embeddings=64, **SMALL)
    ids = _ids(200, (2, 8), low=3)
    ids[1, 6:] = config.pad_token_id
    model = transformers.RobertaModel(config, add_pooling_layer=False)
    return Wrapper(model, ["input_ids", "attention_mask"], cache=False), (ids, _padding_mask())


def gpt2():
    config = transformers.GPT2Config(vocab_size=200, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2Model(config)
    return Wrapper(model, ["input_ids", "attention_mask"], cache=True), (_ids(200, (2, 8)), _padding_mask())


def llama():
    # rotary embeddings, RMSNorm, SwiGLU, and grouped-query attention: 4 query heads share 2 kv heads
    config = transformers.LlamaConfig(vocab_size=200, max_position_embeddings=64, num_key_value_heads=2, **SMALL)
    model = transformers.LlamaModel(config)
    return Wrapper(model, ["input_ids", "attention_mask"], cache=True), (_ids(200, (2, 8)), _padding_mask())


def t5():
    config = transformers.T5Config(vocab_size=200, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                   attn_implementation="eager")
    model = transformers.T5Model(config)
    inputs = (_ids(200, (2, 8)), _padding_mask(), _ids(200, (2, 5), seed=1))
    return Wrapper(model, ["input_ids", "attention_mask", "decoder_input_ids"], cache=True), inputs


def bart():
    config = transformers.BartConfig(vocab_size=200, d_model=64, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                     decoder_ffn_dim=128, max_position_embeddings=64)
    model = transformers.BartModel(config)
    inputs = (_ids(200, (2, 8), low=3), _padding_mask(), _ids(200, (2, 5), seed=1, low=3))
    return Wrapper(model, ["input_ids", "attention_mask", "decoder_input_ids"], cache=True), inputs


MODELS = {"bert": bert, "distilbert": distilbert, "roberta": roberta, "gpt2": gpt2, "llama": llama, "t5": t5,
          "bart": bart}

#: attention ops the torch path keeps, one per SDPA call (BART: 2 encoder, 2 decoder self, 2 cross)
ATTENTION_OPS = {"bert": 2, "distilbert": 2, "roberta": 2, "gpt2": 2, "llama": 2, "t5": 0, "bart": 6}


@pytest.fixture(scope="module")
def built():
    """One build (and one eager run) per model for all three paths."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            module, inputs = MODELS[name]()
            with torch.no_grad():
                expected = module(*inputs).numpy()
            cache[name] = module, inputs, expected
        return cache[name]

    return get


def _count(graph, op: str) -> int:
    """Nodes of ``op`` in ``graph``, inside fused regions too."""
    return sum(_count(n.body, op) if n.op == "fused" else n.op == op for n in graph.nodes)


def _to_onnx(module: torch.nn.Module, inputs: tuple, dynamo: bool) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notices
        torch.onnx.export(module, inputs, buffer, dynamo=dynamo, opset_version=None if dynamo else 17)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(MODELS))
def test_text_model_compiles_and_matches_eager(built, name, path, record_property):
    module, inputs, expected = built(name)
    source = module if path == "torch" else _to_onnx(module, inputs, dynamo=path == "onnx-dynamo")
    start = time.perf_counter()
    compiled = slimgraph.compile(source, inputs, target="llvm")
    seconds = time.perf_counter() - start
    got = compiled(*(x.numpy() for x in inputs))
    assert got.shape == expected.shape and got.dtype == expected.dtype
    # every kernel got its rule: a rule that fails falls back to a generic schedule many times slower
    assert not [k.name for k in compiled.kernels if FALLBACK_ATTR in k.tir]
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    if path == "torch":
        assert _count(compiled.ir, "attention") == ATTENTION_OPS[name]
    record_property("compile_seconds", round(seconds, 1))
    record_property("relative_error", error)
    print(f"\n| {name} | {path} | {seconds:.1f} s | {error:.1e} |")
    assert error <= TOLERANCE, f"{name} via {path}: max error {error:.2e} of the output's largest magnitude"

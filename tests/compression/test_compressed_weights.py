"""Compressed weights in the compiled model: k-means codes, int4 and log2 weights stay
compressed in the saved folder and in memory, and the kernels decode them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

import slimgraph  # noqa: E402
from slimgraph.analysis import size_report  # noqa: E402
from slimgraph.backends.tvm import build, load_compiled  # noqa: E402
from slimgraph.backends.tvm.encoded import Encoding  # noqa: E402
from slimgraph.demo import demo_inputs, demo_model  # noqa: E402
from slimgraph.errors import ArgumentError  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402
from slimgraph.ir.ops.quant import log2_codes  # noqa: E402
from slimgraph.passes import run_pipeline  # noqa: E402
from slimgraph.passes.quantize import quantize_graph  # noqa: E402

#: What np.savez spends per array beyond its bytes: the .npy header and the zip entries.
NPZ_OVERHEAD_PER_ARRAY = 256


def _saved_param_bytes(model, folder: Path) -> int:
    return (model.save(folder) / "params.npz").stat().st_size


def _shared_demo():
    return run_pipeline(demo_model(), "fold-constants,share-weights{bits=4,min-elements=256},fuse")[0]


def test_encodings_round_trip_exactly():
    rng = np.random.default_rng(0)
    book = np.sort(rng.standard_normal(16).astype(np.float32))
    relaid = book[rng.integers(0, 16, (3, 5, 7))]
    cases = [
        (Encoding("codebook", relaid.size, book, 4), relaid),
        (Encoding("int4", 10), rng.integers(-8, 8, (3, 7)).astype(np.int8)),
        (Encoding("log2", 10), (rng.choice([-1, 1], 21) * 2 ** rng.integers(0, 7, 21)).astype(np.int8)),
    ]
    for encoding, array in cases:
        parts = encoding.encode(array)
        assert parts is not None and parts[0][1].nbytes == (array.size * 4 + 7) // 8
    # values outside the encoding, or an array smaller than the weight, stay plain
    assert Encoding("int4", 1).encode(np.array([9], np.int8)) is None
    assert Encoding("codebook", 1, book, 4).encode(np.float32([0.123])) is None
    assert Encoding("int4", 100).encode(np.zeros(4, np.int8)) is None
    assert log2_codes(np.array([3, 4], np.int8)) is None


def test_kmeans_weights_ship_and_stay_compressed(tmp_path):
    graph = _shared_demo()
    x = demo_inputs(batch=2)
    ir_bytes = size_report(graph).weight_bytes
    packed = build(graph, "llvm", {"N": 2}, weights="compressed")
    decoded = build(graph, "llvm", {"N": 2}, weights="decoded")
    # in memory: the codes and codebooks as the IR counts them, plus the dense kernel's panel
    # padding of the 10-class head's codes (N padded to a whole panel of 16)
    assert ir_bytes <= packed.param_bytes <= 1.10 * ir_bytes < decoded.param_bytes / 4
    shipped = _saved_param_bytes(packed, tmp_path / "packed")
    arrays = len(packed._params_np)
    assert shipped <= 1.10 * ir_bytes + NPZ_OVERHEAD_PER_ARRAY * arrays
    assert _saved_param_bytes(decoded, tmp_path / "decoded") > 3 * shipped
    # the kernels read u8 codes and decode them in the compiled code
    big = [a for _, a in packed._params_np if a.size >= 256]
    assert big and all(a.dtype == np.uint8 for a in big)
    assert any("decode_codebook" in k.tir for k in packed.kernels)
    assert not any("decode_codebook" in k.tir for k in decoded.kernels)
    loaded = load_compiled(tmp_path / "packed")
    assert loaded.param_bytes == packed.param_bytes
    ref = graph.run(*x)[0]
    for model in (packed, decoded, loaded):
        np.testing.assert_allclose(model(*x), ref, rtol=1e-5, atol=1e-6)


def test_saved_compressed_models_are_bit_identical_in_a_fresh_process(tmp_path):
    conv, data = _conv_net()
    sparse, xs = _pruned_linear("magnitude", 0.9)
    cases = {
        "kmeans": (_shared_demo(), {"N": 2}, demo_inputs(batch=2)[0]),
        "int4": (run_pipeline(quantize_graph(conv, data, progress=False, weights="int4"), "lower-quantized,fuse")[0],
                 {}, data[0]),
        "sparse": (sparse, {}, xs),
    }
    here = {}
    for name, (graph, bindings, x) in cases.items():
        model = build(graph, "llvm", bindings)
        model.save(tmp_path / name)
        np.save(tmp_path / f"{name}.x.npy", x)
        here[name] = model(x)
    script = (
        "import sys, numpy as np, slimgraph\n"
        "for name in sys.argv[2:]:\n"
        "    m = slimgraph.load(f'{sys.argv[1]}/{name}')\n"
        "    np.save(f'{sys.argv[1]}/{name}.y.npy', m(np.load(f'{sys.argv[1]}/{name}.x.npy')))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path), *cases], check=True,
                   cwd=Path(slimgraph.__file__).parent.parent)
    for name in cases:
        assert np.load(tmp_path / f"{name}.y.npy").tobytes() == here[name].tobytes(), name


def test_the_saved_folder_holds_the_weights_once(tmp_path):
    graph = _shared_demo()
    model = build(graph, "llvm", {"N": 2}, weights="compressed")
    folder = model.save(tmp_path / "m")
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert not [name for name in files if name.startswith("model.sg")]
    # every weight byte in the folder is in params.npz, within 10% of the IR's figure
    ir_bytes = size_report(graph).weight_bytes
    assert files["params.npz"] <= 1.10 * ir_bytes + NPZ_OVERHEAD_PER_ARRAY * len(model._params_np)
    loaded = load_compiled(folder)
    x = demo_inputs(batch=2)
    assert loaded.ir is None and loaded(*x).tobytes() == model(*x).tobytes()
    # the IR with its own weights only when asked for
    kept = load_compiled(model.save(tmp_path / "ir", ir=True))
    assert kept.ir == graph and (tmp_path / "ir" / "model.sg.weights").exists()


def _conv_net(seed: int = 0) -> tuple[Graph, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    g = Graph("qnet")
    x = g.add_input("x", TensorType("f32", (1, 8, 12, 12)))
    w1 = g.const(rng.standard_normal((32, 8, 3, 3)).astype(np.float32) * 0.2, name="c1.weight")
    b1 = g.const(rng.standard_normal(32).astype(np.float32) * 0.1, name="c1.bias")
    h = g.call("relu", g.call("conv", x, w1, b1, pads=(1, 1, 1, 1)))
    w2 = g.const(rng.standard_normal((16, 32 * 12 * 12)).astype(np.float32) * 0.02, name="fc.weight")
    g.set_outputs([g.call("linear", g.call("flatten", h), w2, trans_b=True)])
    data = [rng.standard_normal((1, 8, 12, 12)).astype(np.float32) for _ in range(4)]
    return g, data


@pytest.mark.parametrize("scheme", ["int4", "log2"])
def test_int4_and_log2_compute_in_integers_within_one_step_of_qdq(scheme, tmp_path):
    graph, data = _conv_net()
    qdq = quantize_graph(graph, data, progress=False, weights=scheme, outputs=True)
    lowered = run_pipeline(qdq, "lower-quantized,fuse")[0]
    # no float dequantize of a weight is left: every conv/linear is integer, its weight a constant
    assert not [n for n in lowered.nodes if n.op in ("conv", "linear")]
    assert not [n for n in lowered.nodes if n.op == "dequantize" and n.inputs[0].is_const]
    model = build(lowered, "llvm", {}, weights="compressed")
    decoder = f"decode_{scheme}"
    integer = [k for k in model.kernels if set(k.ops) & {"qconv", "qlinear"}]
    assert integer and all(decoder in k.tir for k in integer)
    # the weights the kernels read are 4-bit codes (two per byte), no float copy of them
    weights = [a for name, a in model._params_np if name.endswith(".codes")]
    assert sum(a.size for a in weights) * 2 >= 32 * 8 * 9 + 16 * 32 * 144
    assert not [a for _, a in model._params_np if a.dtype.kind == "f" and a.size >= 32 * 8 * 9]
    # requantize's per-channel factors are attributes in the IR and int64 parameters in the model
    ir_bytes, per_channel = size_report(lowered).weight_bytes, 3 * 8 * (32 + 16)
    assert model.param_bytes <= 1.10 * ir_bytes + per_channel
    arrays = len(model._params_np)
    assert _saved_param_bytes(model, tmp_path / "m") <= 1.10 * ir_bytes + per_channel + NPZ_OVERHEAD_PER_ARRAY * arrays
    step = qdq.outputs[0].producer.attrs["scale"][0]
    for x in data:
        np.testing.assert_allclose(model(x), qdq.run(x)[0], rtol=0, atol=step * 1.0001)
    decoded = build(lowered, "llvm", {}, weights="decoded")
    assert model.param_bytes < decoded.param_bytes / 1.8
    np.testing.assert_array_equal(model(data[0]), decoded(data[0]))


def test_compile_checks_weights():
    with pytest.raises(ArgumentError, match="weights"):
        slimgraph.compile(demo_model(), demo_inputs(), weights="float")


def test_ledger_measures_the_saved_model():

    book = slimgraph.ledger(demo_model(), demo_inputs(batch=2), "fold-constants;share-weights{bits=4,min-elements=256}",
                  runs=3, warmup=1, weights="compressed")
    before, after = book.rows[1], book.rows[2]
    assert after.artifact_bytes < before.artifact_bytes / 2
    assert after.weight_bytes <= after.resident_bytes <= 1.10 * after.weight_bytes  # + the head's panel padding
    assert "saved" in book.table() and not [w for w in book.warnings if w.kind == "bytes"]
    assert json.loads(json.dumps(book.to_dict()))["rows"][2]["artifact_bytes"] == after.artifact_bytes


# -- sparse weights --------------------------------------------------------------


def _pruned_linear(method: str, sparsity: float, rows: int = 64, k: int = 128, n: int = 96):
    from slimgraph.passes.prune import Prune

    rng = np.random.default_rng(1)
    g = Graph("sparse")
    x = g.add_input("x", TensorType("f32", (2, rows // 2, k)))
    w = g.const(rng.standard_normal((n, k)).astype(np.float32), name="fc.weight")
    b = g.const(rng.standard_normal(n).astype(np.float32), name="fc.bias")
    g.set_outputs([g.call("relu", g.call("linear", x, w, b, trans_b=True))])
    return Prune(method=method, sparsity=sparsity)(g), rng.standard_normal((2, rows // 2, k)).astype(np.float32)


def test_block_pruning_zeroes_aligned_blocks():
    graph, _ = _pruned_linear("block", 0.75)
    w = graph.value("fc.weight").const_value
    blocks = w.reshape(96, 8, 16)
    zero = np.all(blocks == 0, axis=2)
    assert zero.mean() == 0.75 and np.all(np.any(blocks != 0, axis=2) == ~zero)


@pytest.mark.parametrize("method", ["magnitude", "block"])
def test_sparse_linear_stores_and_computes_the_non_zeros(method, tmp_path):
    graph, x = _pruned_linear(method, 0.9)
    sparse = build(graph, "llvm", {}, weights="compressed")
    assert any("sparse_matmul" in k.tir for k in sparse.kernels)
    names = [name for name, _ in sparse._params_np]
    assert any(n.endswith("w_sparse_values") for n in names) and not any(n.endswith("w_packed") for n in names)
    values = next(a for n, a in sparse._params_np if n.endswith("w_sparse_values"))
    assert values.shape[2] == (16 if method == "block" else 1)
    dense_bytes = 96 * 128 * 4
    assert sparse.param_bytes < dense_bytes / 2
    # the IR counts the weight in the form it ships in, so what ships is within 10% of its figure
    report = size_report(graph)
    assert report.tensors[0].encoding.startswith("sparse") and report.weight_bytes < dense_bytes / 2
    assert report.weight_bytes <= sparse.param_bytes <= 1.10 * report.weight_bytes
    # a weight that a fused region reads as an operand counts the same
    assert size_report(run_pipeline(graph, "fuse")[0]).weight_bytes == report.weight_bytes
    arrays = len(sparse._params_np)
    assert _saved_param_bytes(sparse, tmp_path / "m") <= 1.10 * report.weight_bytes + NPZ_OVERHEAD_PER_ARRAY * arrays
    np.testing.assert_allclose(sparse(x), graph.run(x)[0], rtol=1e-5, atol=1e-5)


def test_half_zero_weights_stay_dense():
    graph, x = _pruned_linear("magnitude", 0.5)
    model = build(graph, "llvm", {})
    assert not any("sparse" in k.tir for k in model.kernels)
    assert "sparse" not in size_report(graph).tensors[0].encoding


def test_sparse_1x1_conv_matches_the_reference():
    from slimgraph.passes.prune import Prune

    rng = np.random.default_rng(2)
    g = Graph("pw")
    x = g.add_input("x", TensorType("f32", (2, 64, 4, 8)))
    w = g.const(rng.standard_normal((48, 64, 1, 1)).astype(np.float32), name="pw.weight")
    g.set_outputs([g.call("conv", x, w)])
    pruned = Prune(method="block", sparsity=0.875)(g)
    model = build(pruned, "llvm", {}, weights="compressed")
    assert any("sparse_conv" in k.tir for k in model.kernels)
    assert size_report(pruned).weight_bytes == model.param_bytes < 48 * 64 * 4
    xv = rng.standard_normal((2, 64, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(model(xv), pruned.run(xv)[0], rtol=1e-5, atol=1e-5)


def test_row_scope_balances_rows():
    graph, x = _pruned_linear("magnitude", 0.0)  # unpruned
    from slimgraph.passes.prune import Prune

    balanced = Prune(method="block", sparsity=0.875, scope="row")(graph)
    w = balanced.value("fc.weight").const_value
    assert set(np.count_nonzero(w.reshape(96, 8, 16).any(axis=2), axis=1)) == {1}
    model = build(balanced, "llvm", {}, weights="compressed")
    values = next(a for n, a in model._params_np if n.endswith("w_sparse_values"))
    assert values.shape == (96, 1, 16)  # no padding
    np.testing.assert_allclose(model(x), balanced.run(x)[0], rtol=1e-5, atol=1e-5)


class _PlantedTimes:
    """Planted per-form kernel times: ``slow`` kernels (by node) are faster decoded, the rest compressed."""

    def __init__(self, slow: set[str]):
        self.slow, self.calls = slow, []

    def __call__(self, kernel):
        self.calls.append(kernel.name)
        decoded_ms = 1.0 if kernel.node in self.slow else 2.0
        return {"compressed": 1.5, "decoded": decoded_ms}


def _chooser(tmp_path, times):
    from slimgraph.backends.tvm.targets import parse_target
    from slimgraph.backends.tvm.weight_forms import FormCache, FormChooser

    return FormChooser(parse_target("llvm"), FormCache(tmp_path / "forms.json"), time_forms=times)


def _sparse_mlp():
    """Three 90%-pruned linears of different shapes: three kernels whose sparse and dense forms differ."""
    from slimgraph.passes.prune import Prune

    rng = np.random.default_rng(3)
    g = Graph("mlp")
    h = g.add_input("x", TensorType("f32", (32, 128)))
    for i, n in enumerate((128, 96, 64)):
        w = g.const(rng.standard_normal((n, h.type.shape[1])).astype(np.float32), name=f"fc{i}.weight")
        h = g.call("relu", g.call("linear", h, w, trans_b=True))
    g.set_outputs([h])
    return Prune(sparsity=0.9)(g), rng.standard_normal((32, 128)).astype(np.float32)


def test_auto_measures_each_sparse_kernel_once_per_machine(tmp_path):
    graph, x = _sparse_mlp()
    sparse = build(graph, "llvm", {}, weights="compressed")
    differ = [k for k in sparse.kernels if "sparse_matmul" in k.tir]
    assert len(differ) == 3 and set(sparse.weight_forms) == {k.name for k in differ}
    times = _PlantedTimes({differ[0].node})
    mixed = build(graph, "llvm", {}, chooser=_chooser(tmp_path, times))
    # only the kernels whose two forms differ were timed, each once
    assert sorted(times.calls) == sorted(k.name for k in differ)
    want = {k.name: "decoded" if k is differ[0] else "compressed" for k in differ}
    assert mixed.weight_forms == want
    tir = {k.name: k.tir for k in mixed.kernels}
    assert "sparse_matmul" not in tir[differ[0].name] and all("sparse_matmul" in tir[k.name] for k in differ[1:])
    assert "1 decoded" in repr(mixed) and "2 compressed" in repr(mixed)
    # the second compile reads the cache: no measurement, the same forms
    again = _PlantedTimes(set())
    second = build(graph, "llvm", {}, chooser=_chooser(tmp_path, again))
    assert again.calls == [] and second.weight_forms == want
    loaded = load_compiled(second.save(tmp_path / "m"))
    assert loaded.weight_forms == want
    np.testing.assert_allclose(loaded(x), graph.run(x)[0], rtol=1e-4, atol=1e-4)


def test_auto_keeps_encoded_weights_encoded_and_measures_nothing(tmp_path):
    # a float copy of k-means codes ships only where the user asks for it (weights="decoded")
    def refuse(kernel):
        raise AssertionError(f"{kernel.name} timed")

    graph = _shared_demo()
    model = build(graph, "llvm", {"N": 2}, chooser=_chooser(tmp_path, refuse))
    assert len(model.weight_forms) >= 2 and set(model.weight_forms.values()) == {"compressed"}
    assert all("decode_codebook" in k.tir for k in model.kernels if k.name in model.weight_forms)


def test_each_form_is_built_alone_and_timed_in_pairs():
    from slimgraph.backends.tvm.lower import lower_graph
    from slimgraph.backends.tvm.targets import parse_target
    from slimgraph.backends.tvm.weight_forms import PAIRS, WARMUP, time_kernel_forms
    from slimgraph.timing import TickClock

    graph, _ = _pruned_linear("magnitude", 0.9)
    seen = []
    lower_graph(graph, parse_target("llvm"), {}, weights="auto", choose=lambda k: seen.append(k) or "compressed")
    assert len(seen) == 1 and "sparse_matmul" in seen[0].forms["compressed"].func.script()
    clock = TickClock(tick=0.001)  # every timed call 'takes' one read-to-read tick: 1 ms
    ms = time_kernel_forms(seen[0], parse_target("llvm"), clock=clock)
    assert ms == pytest.approx({"compressed": 1.0, "decoded": 1.0, "ratio": 1.0})
    assert clock.reads >= 2 * 2 * (PAIRS + WARMUP)


def test_a_decoded_form_must_be_clearly_faster(tmp_path):
    from slimgraph.backends.tvm.weight_forms import DECODED_GAIN

    graph, _ = _pruned_linear("magnitude", 0.9)
    close = lambda kernel: {"compressed": DECODED_GAIN * 0.99, "decoded": 1.0}  # noqa: E731
    model = build(graph, "llvm", {}, chooser=_chooser(tmp_path, close))
    assert list(model.weight_forms.values()) == ["compressed"]
    assert any("sparse_matmul" in k.tir for k in model.kernels)


def test_a_graph_without_compressed_weights_measures_nothing(tmp_path):
    def refuse(kernel):
        raise AssertionError(f"{kernel.name} timed")

    model = build(demo_model(), "llvm", {"N": 2}, chooser=_chooser(tmp_path, refuse))
    assert model.weight_forms == {} and not (tmp_path / "forms.json").exists()
    assert "compressed" not in repr(model)


def test_benchmark_table_names_each_kernels_form(tmp_path):
    graph = _shared_demo()
    model = build(graph, "llvm", {"N": 2}, weights="compressed")
    table = model.benchmark(warmup=0, runs=2, kernel_repeat=1).table()
    assert table.count("| compressed |") == 4 and "GFLOP/s | weights |" in table

"""The quantize pass on the digits CNN: accuracy, bytes, schemes, skipping, pipeline text, errors, reports."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.reports.quant_report import quant_report, sensitivity_table
from slimgraph.errors import SlimgraphError
from slimgraph.ir import Graph, TensorType
from slimgraph.passes import OptionValueError, PassContext, PassFailedError, graph_stats, run_pipeline
from slimgraph.passes.calibrate import calibrate
from slimgraph.passes.quantize import Quantize, quantize_graph
from tests.digits import accuracy, digits_data
from tests.quantization.conftest import predictor


@pytest.fixture(scope="module")
def float_accuracy(digits_graph):
    return accuracy(predictor(digits_graph))


def _ops(graph):
    return [n.op for n in graph.nodes if n.op != "const"]


def test_int8_per_channel_minmax_keeps_accuracy_and_shrinks_weights(digits_graph, calibration_batches, float_accuracy):
    q = quantize_graph(digits_graph, calibration_batches, progress=False)
    q.verify()
    assert _ops(q).count("quantize") == 4  # the input of each of the 3 convs and the linear layer
    drop = float_accuracy - accuracy(predictor(q))
    ratio = graph_stats(q).weight_bytes / graph_stats(digits_graph).weight_bytes
    print(f"float {float_accuracy:.2f}%  int8 drop {drop:.2f} points  bytes {ratio:.3f}x")
    assert drop <= 0.5
    assert ratio <= 0.27


def test_int4_weights_are_packed_and_within_two_points(digits_graph, calibration_batches, float_accuracy):
    q = quantize_graph(digits_graph, calibration_batches, weights="int4", progress=False)
    codes = [n.output.type.dtype.value for n in q.nodes if n.op == "const" and n.output.users[0].op == "dequantize"]
    assert codes.count("i4") == 4
    ratio = graph_stats(q).weight_bytes / graph_stats(digits_graph).weight_bytes
    drop = float_accuracy - accuracy(predictor(q))
    print(f"int4 drop {drop:.2f} points  bytes {ratio:.3f}x")
    assert drop <= 2.0
    assert ratio < 0.15


def test_log2_weights_run_end_to_end(digits_graph, calibration_batches, float_accuracy):
    q = quantize_graph(digits_graph, calibration_batches, weights="log2", progress=False)
    schemes = {n.attrs["scheme"] for n in q.nodes if n.op == "dequantize" and n.inputs[0].is_const}
    assert schemes == {"log2"}
    for dq in (n for n in q.nodes if n.op == "dequantize" and n.inputs[0].is_const):
        assert dq.inputs[0].type.dtype.value == "i4"  # exponents -6..0 fit 4-bit codes
        values = np.abs(dq.opdef.impl(dq.inputs[0].const_value, **dq.attrs)).astype(np.float64)
        scale = np.float32(dq.attrs["scale"]).reshape((-1,) + (1,) * (values.ndim - 1))
        exponents = np.log2(values / scale, where=values > 0, out=np.zeros_like(values))
        assert np.all(exponents == np.rint(exponents)) and exponents.min() >= -6 and exponents.max() <= 0
    acc = accuracy(predictor(q))
    print(f"log2 accuracy {acc:.2f}% (float {float_accuracy:.2f}%)")
    assert acc > 90.0


def test_log2_values_are_powers_of_two():
    g = Graph()
    x = g.add_input("x", TensorType("f32", ("N", 4)))
    w = np.array([[1.0, 0.3, -0.26, 0.0], [0.5, -0.01, 0.2, 0.7]], np.float32)
    g.set_outputs([g.call("linear", x, g.const(w, name="fc.weight"))])
    q = quantize_graph(g, None, weights="log2", activations="none", log2_min_exp=-4)
    dq = next(n for n in q.nodes if n.op == "dequantize")
    got = dq.opdef.impl(dq.inputs[0].const_value, **dq.attrs)
    scale = np.abs(w).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        expected = np.sign(w) * scale * 2.0 ** np.clip(np.rint(np.log2(np.abs(w) / scale)), -4, 0)
    np.testing.assert_allclose(got, np.where(w == 0, 0, expected), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["f64", "f16"])
def test_quantized_graph_keeps_its_float_dtype(dtype):
    # Each dequantize gives back the dtype of the value it replaces, so the graph stays valid.
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType(dtype, ("N", 6)))
    w, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    w_v, b_v = g.const(w, name="fc.weight", dtype=dtype), g.const(b, name="fc.bias", dtype=dtype)
    g.set_outputs([g.call("linear", x, w_v, b_v)])
    data = [rng.standard_normal((8, 6)).astype(x.type.dtype.numpy) for _ in range(2)]
    q = quantize_graph(g, data, progress=False)
    lowered = run_pipeline(q, "lower-quantized")[0]
    for graph in (q, lowered):
        graph.verify()
        assert {n.attrs["to"].value for n in graph.nodes if n.op == "dequantize"} == {dtype}
        want = g.run(data[0])[0].astype(np.float64)
        got = graph.run(data[0])[0]
        assert got.dtype == x.type.dtype.numpy
        np.testing.assert_allclose(got.astype(np.float64), want, atol=0.05 * np.abs(want).max())


@pytest.mark.parametrize(
    "options",
    [
        {"granularity": "per-tensor"},
        {"activations": "uint8"},
        {"activations": "uint8", "symmetric": True},
        {"symmetric": True},
        {"observer": "percentile"},
        {"observer": "mse"},
        {"observer": "moving-average"},
        {"observer": "entropy"},
        {"weight_observer": "mse", "weights": "int4"},
    ],
)
def test_schemes_and_observers_keep_accuracy(digits_graph, calibration_batches, float_accuracy, options):
    q = quantize_graph(digits_graph, calibration_batches, progress=False, **options)
    assert float_accuracy - accuracy(predictor(q)) <= 2.0
    dq = [n for n in q.nodes if n.op == "dequantize" and not n.inputs[0].is_const]
    if options.get("activations") == "uint8":
        assert {n.inputs[0].type.dtype.value for n in dq} == {"u8"}
    if options.get("symmetric"):
        assert {n.attrs["zero_point"][0] for n in dq} == ({128} if options.get("activations") == "uint8" else {0})
    if options.get("granularity") == "per-tensor":
        assert all(len(n.attrs["scale"]) == 1 for n in q.nodes if n.op == "dequantize")


def test_ops_list_and_skip_patterns(digits_graph, calibration_batches):
    only_linear = quantize_graph(digits_graph, calibration_batches, ops=("linear",), progress=False)
    assert _ops(only_linear).count("quantize") == 1
    skipped = quantize_graph(digits_graph, calibration_batches, skip=("features.*",), progress=False)
    assert _ops(skipped).count("quantize") == 1
    named = quantize_graph(digits_graph, calibration_batches, skip=("features.0", "classifier"), progress=False)
    assert _ops(named).count("quantize") == 2


def test_pipeline_text_with_a_saved_table(digits_graph, calibration_batches, tmp_path):
    names = Quantize().activation_values(digits_graph)
    table = calibrate(digits_graph, calibration_batches, values=names, progress=False)
    table.save(tmp_path / "calib.json")
    via_text, _ = run_pipeline(digits_graph, f"quantize{{calibration={tmp_path / 'calib.json'},weights=int4}}")
    via_python = quantize_graph(digits_graph, table, weights="int4")
    x = digits_data().x_test[:50]
    np.testing.assert_array_equal(via_text.run(x)[0], via_python.run(x)[0])


def test_pass_calibrates_on_the_context_data_where_it_runs(digits_graph, calibration_batches):
    q, _ = run_pipeline(digits_graph, "fold-constants,quantize{weights=int8}",
                        ctx=PassContext(calibration_data=calibration_batches))
    assert _ops(q).count("quantize") == 4


def test_errors(digits_graph, calibration_batches):
    with pytest.raises(OptionValueError, match="int8.*int4.*log2"):
        quantize_graph(digits_graph, calibration_batches, weights="int3")
    with pytest.raises(OptionValueError) as info:
        run_pipeline(digits_graph, "quantize{weights=fp8}")
    assert info.value.choices == ("int8", "int4", "log2")
    with pytest.raises(PassFailedError, match="needs calibration data"):
        run_pipeline(digits_graph, "quantize")
    with pytest.raises(SlimgraphError, match=r"input %x: got shape \[4,1,7,7\]"):
        quantize_graph(digits_graph, [np.zeros((4, 1, 7, 7), np.float32)], progress=False)


def test_report_lists_layers_bytes_and_sensitivity(digits_graph, calibration_batches):
    names = Quantize().activation_values(digits_graph)
    table = calibrate(digits_graph, calibration_batches, values=names, progress=False)
    q = quantize_graph(digits_graph, table, weights="int4")
    report = quant_report(q, digits_graph)
    assert [r.layer for r in report.layers] == ["features.0", "features.3", "features.7", "classifier"]
    assert all(r.weights == "i4 per-channel symmetric" for r in report.layers)
    assert all(r.bytes_after * 8 == r.bytes_before for r in report.layers)
    assert report.ratio < 0.15
    data = digits_data()
    report.sensitivity = sensitivity_table(digits_graph, table, data.x_test[:200], labels=data.y_test[:200], weights="int4")
    text = str(report)
    print(text)
    assert "features.3" in text and "SQNR" in text
    assert all(row.metric > 90 and row.sqnr_db > 10 for row in report.sensitivity)

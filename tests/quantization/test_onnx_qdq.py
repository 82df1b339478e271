"""Models quantized by onnxruntime.quantization (static QDQ, per-channel) import, run and lower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimgraph.passes.lower_quantized import LowerQuantized
from tests.digits import accuracy, digits_data, trained_digits_cnn

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, batches):
        self._batches = iter([{"x": b} for b in batches])

    def get_next(self):
        return next(self._batches, None)


@pytest.fixture(scope="module")
def ort_qdq_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdq")
    data = digits_data()
    float_path, qdq_path = folder / "digits.onnx", folder / "digits.qdq.onnx"
    torch.onnx.export(
        trained_digits_cnn(), (torch.from_numpy(data.x_test[:1]),), str(float_path),
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False,
    )
    quantization.quantize_static(
        str(float_path), str(qdq_path), _Reader([data.x_train[i : i + 32] for i in range(0, 256, 32)]),
        quant_format=quantization.QuantFormat.QDQ, per_channel=True,
        activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
    )
    return qdq_path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_imports_and_matches_onnxruntime(ort_qdq_model):
    from slimgraph.frontends import from_onnx

    graph = from_onnx(str(ort_qdq_model))
    graph.verify()
    ops = [n.op for n in graph.nodes]
    assert ops.count("quantize") >= 4 and ops.count("dequantize") >= 8
    x = digits_data().x_test[:100]
    session = ort.InferenceSession(str(ort_qdq_model), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    got = graph.run(x)[0]
    # ONNX Runtime runs integer kernels (fixed-point requantization); the reference runs the QDQ
    # arithmetic in float: they may differ by one step of an intermediate tensor
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99
    np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())


def test_ort_model_lowers_to_integer_ops(ort_qdq_model):
    from slimgraph.frontends import from_onnx

    graph = from_onnx(str(ort_qdq_model))
    low = LowerQuantized()(graph)
    low.verify()
    ops = [n.op for n in low.nodes]
    assert ops.count("qconv") == 3 and ops.count("qlinear") == 1
    qdq_acc = accuracy(lambda x: graph.run(x)[0])
    low_acc = accuracy(lambda x: low.run(x)[0])
    print(f"ORT QDQ model: reference {qdq_acc:.2f}%, lowered {low_acc:.2f}%")
    assert abs(qdq_acc - low_acc) <= 0.3 and low_acc >= 99.0

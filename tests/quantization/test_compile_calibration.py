"""slimgraph.compile(..., calibration_data=...) calibrates the pipeline's quantize pass."""

from __future__ import annotations

import numpy as np

from slimgraph.api import compile

from tests.digits import accuracy, digits_data


def test_compile_with_calibration_data_keeps_accuracy(digits_graph, calibration_batches) -> None:
    data = digits_data()
    x = data.x_test
    model = compile(digits_graph, [x], pipeline="quantize,fuse", calibration_data=calibration_batches)
    assert any(n.op == "quantize" for n in model.ir.nodes) or any(
        m.op == "quantize" for n in model.ir.find_nodes("fused") for m in n.body.nodes
    )
    (float_logits,) = digits_graph.run(x)
    quantized = accuracy(lambda batch: model(batch))
    assert quantized >= accuracy(lambda batch: float_logits) - 0.5
    assert np.argmax(model(x), axis=1).shape == (len(x),)

"""ONNX op converters, one small model per case, across the opsets where the
op's signature changed (attributes that became inputs, coerced softmax, ...),
compared with onnxruntime. Also: names and locs, constant folding of shape
arithmetic, symbolic shapes under dynamic_batch, and that the caller's
ModelProto is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimgraph.errors import FrontendError
from slimgraph.frontends.onnx import from_onnx, supported_ops

pytest.importorskip("onnxruntime")
from tests.frontends.test_onnx_models import ort_run  # noqa: E402  (needs onnxruntime)

RTOL, ATOL = 1e-3, 1e-4
_ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
              np.dtype(np.bool_): TensorProto.BOOL, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int32): TensorProto.INT32}  # fmt: skip


def rand(*shape: int, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


@dataclass
class Case:
    """One ONNX node: runtime inputs (fed) and constant inputs (initializers), by position.

    An entry of ``inputs`` is ``("x", array)`` (a graph input), ``("w", array, True)`` (an
    initializer) or ``None`` (an omitted optional input).
    """

    op: str
    opset: int
    inputs: list
    attrs: dict = field(default_factory=dict)
    outputs: int = 1
    domain: str = ""

    def model(self) -> onnx.ModelProto:
        graph_inputs, inits, names = [], [], []
        for i, entry in enumerate(self.inputs):
            if entry is None:
                names.append("")
                continue
            name, array = entry[0], entry[1]
            names.append(name)
            if len(entry) > 2:
                inits.append(numpy_helper.from_array(array, name))
            else:
                graph_inputs.append(helper.make_tensor_value_info(name, _ONNX_TYPE[array.dtype], array.shape))
        outs = [f"y{i}" for i in range(self.outputs)]
        node = helper.make_node(self.op, names, outs, name="the_node", **self.attrs)
        graph = helper.make_graph(
            [node], "case", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outs], inits
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=10)

    def feeds(self) -> dict[str, np.ndarray]:
        return {e[0]: e[1] for e in self.inputs if e is not None and len(e) == 2}


X4 = ("x", rand(2, 3, 5, 6))
X2 = ("x", rand(4, 6))
CASES = {
    # elementwise
    "Relu": Case("Relu", 13, [X4]),
    "LeakyRelu": Case("LeakyRelu", 16, [X4], {"alpha": 0.2}),
    "Elu": Case("Elu", 6, [X4], {"alpha": 0.5}),
    "Selu": Case("Selu", 6, [X4]),
    "HardSigmoid": Case("HardSigmoid", 6, [X4], {"alpha": 0.3, "beta": 0.4}),
    "HardSwish": Case("HardSwish", 14, [X4]),
    "Mish": Case("Mish", 18, [X4]),
    "Gelu-tanh": Case("Gelu", 20, [X4], {"approximate": "tanh"}),
    "Softsign": Case("Softsign", 13, [X4]),
    "Erf": Case("Erf", 13, [X4]),
    "PRelu-9-per-channel": Case("PRelu", 9, [X4, ("slope", rand(3, 1, 1, seed=1), True)]),
    "Pow-int-exponent": Case("Pow", 15, [("x", rand(3, 4, low=0.5)), ("e", i64(2), True)]),
    "Sum-3": Case("Sum", 13, [("a", rand(3, 4)), ("b", rand(4, seed=1)), ("c", rand(3, 1, seed=2))]),
    "Mean-2": Case("Mean", 13, [("a", rand(3, 4)), ("b", rand(3, 4, seed=1))]),
    "Max-3": Case("Max", 13, [("a", rand(3, 4)), ("b", rand(3, 4, seed=1)), ("c", rand(4, seed=2))]),
    "Where": Case("Where", 16, [("c", rand(3, 4) > 0), ("a", rand(3, 4, seed=1)), ("b", rand(3, 4, seed=2))]),
    "Equal-int": Case("Equal", 13, [("a", i64(1, 2, 3)), ("b", i64(1, 5, 3))]),
    "Cast-to-int": Case("Cast", 13, [X2], {"to": TensorProto.INT32}),
    "Clip-6-attrs": Case("Clip", 6, [X4], {"min": -0.5, "max": 1.0}),
    "Clip-11-inputs": Case("Clip", 11, [X4, ("lo", np.float32(-0.5).reshape(()), True), ("hi", np.float32(1.0).reshape(()), True)]),
    "Clip-13-min-only": Case("Clip", 13, [X4, ("lo", np.float32(0.0).reshape(()), True)]),
    # compute
    "Gemm-transA-alpha-beta": Case("Gemm", 13, [("a", rand(6, 4)), ("b", rand(5, 6, seed=1), True), ("c", rand(5, seed=2), True)],
                                   {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}),
    "Gemm-11-no-C": Case("Gemm", 11, [("a", rand(4, 6)), ("b", rand(6, 5, seed=1), True)]),
    "Gemm-C-matrix": Case("Gemm", 9, [("a", rand(4, 6)), ("b", rand(6, 5, seed=1), True), ("c", rand(4, 5, seed=2), True)]),
    "MatMul-batched": Case("MatMul", 13, [("a", rand(2, 3, 4, 6)), ("b", rand(6, 5, seed=1))]),
    "Conv-SAME_UPPER-stride2": Case("Conv", 11, [("x", rand(1, 2, 7, 8)), ("w", rand(4, 2, 3, 3, seed=1), True)],
                                    {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "Conv-SAME_LOWER": Case("Conv", 11, [("x", rand(1, 2, 7, 8)), ("w", rand(4, 2, 2, 2, seed=1), True)],
                            {"auto_pad": "SAME_LOWER"}),
    "Conv-VALID-grouped-bias": Case("Conv", 11, [("x", rand(1, 4, 7, 8)), ("w", rand(4, 2, 3, 3, seed=1), True),
                                                 ("b", rand(4, seed=2), True)], {"auto_pad": "VALID", "group": 2}),
    "ConvTranspose-output_shape": Case("ConvTranspose", 11, [("x", rand(1, 3, 4, 5)), ("w", rand(3, 2, 3, 3, seed=1), True)],
                                       {"strides": [2, 2], "output_shape": [10, 12]}),
    "ConvTranspose-SAME_UPPER": Case("ConvTranspose", 11, [("x", rand(1, 3, 4, 5)), ("w", rand(3, 2, 3, 3, seed=1), True)],
                                     {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "MaxPool-SAME_UPPER": Case("MaxPool", 12, [("x", rand(1, 2, 7, 7))], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "MaxPool-ceil": Case("MaxPool", 12, [("x", rand(1, 2, 8, 8))], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "AveragePool-count_include_pad": Case("AveragePool", 11, [("x", rand(1, 2, 6, 6))],
                                          {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    "GlobalMaxPool": Case("GlobalMaxPool", 13, [X4]),
    "BatchNormalization-15": Case("BatchNormalization", 15, [X4, ("s", rand(3, seed=1), True), ("b", rand(3, seed=2), True),
                                                             ("m", rand(3, seed=3), True), ("v", rand(3, seed=4, low=0.5), True)],
                                  {"epsilon": 1e-3}),
    "InstanceNormalization": Case("InstanceNormalization", 6, [X4, ("s", rand(3, seed=1), True), ("b", rand(3, seed=2), True)]),
    "LayerNormalization-17": Case("LayerNormalization", 17, [X4, ("s", rand(5, 6, seed=1), True), ("b", rand(5, 6, seed=2), True)],
                                  {"axis": -2}),
    "LRN-size3": Case("LRN", 13, [("x", rand(2, 6, 4, 4))], {"size": 3, "alpha": 0.01, "beta": 0.6, "bias": 1.5}),
    "Softmax-11-coerced-2d": Case("Softmax", 11, [X4], {"axis": 1}),
    "Softmax-13-axis1": Case("Softmax", 13, [X4], {"axis": 1}),
    "LogSoftmax-9-axis2": Case("LogSoftmax", 9, [X4], {"axis": 2}),
    "ReduceMean-13-attr": Case("ReduceMean", 13, [X4], {"axes": [1, 3], "keepdims": 0}),
    "ReduceSum-13-input": Case("ReduceSum", 13, [X4, ("axes", i64(-1), True)]),
    "ReduceSum-13-noop": Case("ReduceSum", 13, [X4], {"noop_with_empty_axes": 1}),
    "ReduceMax-18-input": Case("ReduceMax", 18, [X4, ("axes", i64(0, 2), True)], {"keepdims": 0}),
    "ReduceL2-18": Case("ReduceL2", 18, [X4, ("axes", i64(1), True)]),
    "ReduceSumSquare-13": Case("ReduceSumSquare", 13, [X4], {"axes": [2]}),
    "ReduceMin-all": Case("ReduceMin", 13, [X4]),
    "ArgMax": Case("ArgMax", 13, [X4], {"axis": 2, "keepdims": 0}),
    "Dropout-12-ratio-input": Case("Dropout", 12, [X4, ("r", np.float32(0.3).reshape(()), True)]),
    # tensor / shape
    "Reshape-0-and-minus1": Case("Reshape", 13, [X4, ("s", i64(0, -1, 6), True)]),
    "Flatten-axis2": Case("Flatten", 13, [X4], {"axis": 2}),
    "Transpose-default": Case("Transpose", 13, [X4]),
    "Concat-negative-axis": Case("Concat", 13, [("a", rand(2, 3)), ("b", rand(2, 4, seed=1))], {"axis": -1}),
    "Split-11-attr": Case("Split", 11, [X2], {"axis": 1, "split": [2, 4]}, outputs=2),
    "Split-13-input": Case("Split", 13, [X2, ("s", i64(1, 3), True)], {"axis": 0}, outputs=2),
    "Split-18-num_outputs-uneven": Case("Split", 18, [("x", rand(7, 2))], {"num_outputs": 3}, outputs=3),
    "Slice-9-attrs": Case("Slice", 9, [X4], {"starts": [1, -3], "ends": [3, 1000], "axes": [1, 3]}),
    "Slice-13-steps": Case("Slice", 13, [X4, ("st", i64(-1), True), ("en", i64(-(2**63)), True), ("ax", i64(3), True),
                                         ("sp", i64(-2), True)]),
    "Slice-13-int64-max": Case("Slice", 13, [X4, ("st", i64(2), True), ("en", i64(2**63 - 1), True)]),
    "Squeeze-11-attr": Case("Squeeze", 11, [("x", rand(1, 3, 1, 4))], {"axes": [0, -2]}),
    "Squeeze-13-input": Case("Squeeze", 13, [("x", rand(1, 3, 1, 4)), ("a", i64(2), True)]),
    "Unsqueeze-11-attr": Case("Unsqueeze", 11, [X2], {"axes": [0, -1]}),
    "Unsqueeze-13-input": Case("Unsqueeze", 13, [X2, ("a", i64(1), True)]),
    "Gather-negative-indices": Case("Gather", 13, [X4, ("i", i64(-1, 0, 2), True)], {"axis": 3}),
    "Expand": Case("Expand", 13, [("x", rand(3, 1)), ("s", i64(2, 3, 4), True)]),
    "Tile": Case("Tile", 13, [X2, ("r", i64(2, 1), True)]),
    # sequence models
    "And": Case("And", 7, [("a", rand(2, 3) > 0), ("b", rand(3, seed=1) > 0)]),
    "Or": Case("Or", 7, [("a", rand(2, 3) > 0), ("b", rand(2, 3, seed=1) > 0)]),
    "Xor": Case("Xor", 7, [("a", rand(2, 3) > 0), ("b", rand(1, 3, seed=1) > 0)]),
    "CumSum": Case("CumSum", 14, [X4, ("a", i64(2), True)]),
    "CumSum-exclusive-reverse-int": Case("CumSum", 14, [("x", np.arange(12, dtype=np.int64).reshape(3, 4)),
                                                        ("a", i64(-1), True)], {"exclusive": 1, "reverse": 1}),
    "Trilu-upper-k": Case("Trilu", 14, [X4, ("k", i64(1), True)]),
    "Trilu-lower": Case("Trilu", 14, [X4], {"upper": 0}),
    "Einsum": Case("Einsum", 12, [("a", rand(2, 3, 4)), ("b", rand(2, 5, 4, seed=1))], {"equation": "bij,bkj->bik"}),
    "GatherND": Case("GatherND", 13, [X4, ("i", np.array([[[0, 2], [1, -1]]], np.int64), True)]),
    "Pad-9-reflect-attr": Case("Pad", 9, [X4], {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "reflect"}),
    "Pad-11-constant-value": Case("Pad", 11, [X4, ("p", i64(0, 1, 1, 0, 0, 0, 2, 1), True), ("v", np.float32(0.5).reshape(()), True)]),
    "Pad-13-edge": Case("Pad", 13, [X4, ("p", i64(0, 0, 1, 1, 0, 0, 1, 1), True)], {"mode": "edge"}),
    "Pad-18-axes": Case("Pad", 18, [X4, ("p", i64(1, 2, 3, 0), True), None, ("a", i64(-1, 1), True)]),
    "Shape-15-start-end": Case("Shape", 15, [X4], {"start": 1, "end": -1}),
    "Size": Case("Size", 13, [X4]),
    "ConstantOfShape": Case("ConstantOfShape", 9, [("s", i64(2, 3), True)],
                            {"value": numpy_helper.from_array(np.array([7], np.int64))}),
    "Range": Case("Range", 11, [("a", np.int64(1).reshape(()), True), ("b", np.int64(10).reshape(()), True),
                                ("d", np.int64(3).reshape(()), True)]),
    # resize and group norm
    "Resize-10-nearest": Case("Resize", 10, [X4, ("s", f32(1, 1, 2, 1.5), True)]),
    "Upsample-9-linear": Case("Upsample", 9, [X4, ("s", f32(1, 1, 2, 2), True)], {"mode": "linear"}),
    "Resize-13-nearest-sizes": Case("Resize", 13, [X4, None, None, ("z", i64(2, 3, 7, 11), True)],
                                    {"nearest_mode": "round_prefer_ceil"}),
    "Resize-13-nearest-floor-asymmetric": Case("Resize", 13, [X4, None, ("s", f32(1, 1, 2, 2), True)],
                                               {"coordinate_transformation_mode": "asymmetric",
                                                "nearest_mode": "floor"}),
    "Resize-13-nearest-tf-half-pixel": Case("Resize", 13, [X4, None, ("s", f32(1, 1, 1.7, 0.6), True)],
                                            {"coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
    "Resize-13-linear-half-pixel": Case("Resize", 13, [X4, None, ("s", f32(1, 1, 1.5, 2), True)], {"mode": "linear"}),
    "Resize-13-linear-align-corners": Case("Resize", 13, [X4, None, None, ("z", i64(2, 3, 9, 4), True)],
                                           {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    "Resize-13-linear-pytorch-half-pixel": Case("Resize", 13, [X4, None, None, ("z", i64(2, 3, 1, 8), True)],
                                                {"mode": "linear",
                                                 "coordinate_transformation_mode": "pytorch_half_pixel"}),
    "Resize-13-cubic": Case("Resize", 13, [X4, None, ("s", f32(1, 1, 2, 1.25), True)], {"mode": "cubic"}),
    "Resize-13-cubic-exclude-outside": Case("Resize", 13, [X4, None, None, ("z", i64(2, 3, 8, 3), True)],
                                            {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5,
                                             "coordinate_transformation_mode": "asymmetric"}),
    "Resize-19-half-pixel-symmetric-axes": Case("Resize", 19, [X4, None, None, ("z", i64(9, 7), True)],
                                                {"mode": "linear", "axes": [3, 2],
                                                 "coordinate_transformation_mode": "half_pixel_symmetric"}),
    "GroupNormalization-18-per-group": Case("GroupNormalization", 18, [X4, ("s", f32(0.5, 2, 1), True),
                                                                        ("b", f32(0.1, -1, 0), True)],
                                            {"num_groups": 3}),
    "GroupNormalization-21": Case("GroupNormalization", 21, [("x", rand(2, 4, 5)), ("s", f32(0.5, 2, 1, 3), True),
                                                              ("b", f32(0.1, -1, 0, 2), True)], {"num_groups": 2}),
    "TopK-9-attr": Case("TopK", 9, [X4], {"k": 2}, outputs=2),
    "TopK-11-smallest-axis": Case("TopK", 11, [X4, ("k", i64(3), True)], {"axis": 1, "largest": 0}, outputs=2),
    "IsNaN": Case("IsNaN", 13, [("x", np.array([1.0, np.nan, -np.inf, 0.0], np.float32))]),
    # quantization
    "QuantizeLinear-10-default-u8": Case("QuantizeLinear", 10, [X4, ("s", np.float32(0.02).reshape(()), True)]),
    "QuantizeLinear-13-per-axis-i8": Case("QuantizeLinear", 13, [X4, ("s", f32(0.01, 0.02, 0.03), True), ("z", np.array([0, 3, -2], np.int8), True)],
                                          {"axis": 1}),
    "DequantizeLinear-13-per-axis": Case("DequantizeLinear", 13, [("q", np.arange(-6, 6, dtype=np.int8).reshape(3, 4)),
                                                                  ("s", f32(0.5, 0.25, 2.0), True), ("z", np.array([1, 0, -1], np.int8), True)],
                                         {"axis": 0}),
    "DequantizeLinear-21-u8": Case("DequantizeLinear", 21, [("q", np.arange(0, 250, 20, dtype=np.uint8)),
                                                            ("s", np.float32(0.1).reshape(()), True), ("z", np.uint8(128).reshape(()), True)]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_onnxruntime(name: str) -> None:
    case = CASES[name]
    model = case.model()
    graph = from_onnx(model)
    graph.verify()
    feeds = case.feeds()
    expected = ort_run(model, feeds)
    outputs = graph.run(**feeds)
    assert len(outputs) == len(expected)
    for ours, ref in zip(outputs, expected):
        assert ours.dtype == ref.dtype, f"{ours.dtype} vs {ref.dtype}"
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


def test_quantize_dequantize_stay_explicit_nodes() -> None:
    # A dequantized constant weight must not fold away: quantization is explicit in the IR.
    q = numpy_helper.from_array(np.arange(-4, 4, dtype=np.int8).reshape(2, 4), "w_q")
    s = numpy_helper.from_array(np.float32(0.5).reshape(()), "w_scale")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="dq"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], [q, s],
    )  # fmt: skip
    g = from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert [n.op for n in g.nodes] == ["const", "dequantize", "matmul"]
    dq = g.find_nodes("dequantize")[0]
    assert dq.inputs[0].name == "w_q" and dq.attrs["scale"] == (0.5,)


@pytest.mark.parametrize("dtype", [TensorProto.INT4, TensorProto.INT8, TensorProto.UINT8])
def test_quantize_dequantize_round_trip_opset21(dtype: int) -> None:
    zero = helper.make_tensor("z", dtype, [], [1])
    scale = numpy_helper.from_array(np.float32(0.3).reshape(()), "s")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]  # fmt: skip
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 6])],
                              [helper.make_empty_tensor_value_info("y")], [scale, zero])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    g = from_onnx(model)
    assert [n.op for n in g.nodes] == ["quantize", "dequantize"]
    x = X4[1] * 2
    np.testing.assert_array_equal(g.run(x)[0], ort_run(model, {"x": x})[0])


# -- names, locs, folding -----------------------------------------------------------------


def _flatten_model(opset: int = 13, batch: int | str = 2) -> onnx.ModelProto:
    """The pattern torch exports for ``x.view(x.size(0), -1)`` after a conv, then a Gemm."""
    w = numpy_helper.from_array(rand(4, 3, 3, 3, seed=5), "conv.weight")
    fc = numpy_helper.from_array(rand(10, 4 * 6 * 6, seed=6) * 0.1, "fc.weight")
    zero = numpy_helper.from_array(np.int64(0).reshape(()), "zero")
    axes0 = numpy_helper.from_array(i64(0), "axes0")
    minus1 = numpy_helper.from_array(i64(-1), "minus_one")
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv_out"], ["relu_out"]),  # unnamed: loc is Relu_1
        helper.make_node("Shape", ["relu_out"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="unsqueeze"),
        helper.make_node("Concat", ["batch1", "minus_one"], ["new_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["relu_out", "new_shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc.weight"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "flatten_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], [w, fc, zero, axes0, minus1],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def test_names_locs_and_folded_shape_arithmetic() -> None:
    g = from_onnx(_flatten_model())
    assert [n.op for n in g.nodes] == ["const", "conv", "relu", "reshape", "const", "linear"]
    names = {n.outputs[0].name: n for n in g.nodes}
    assert set(names) == {"conv.weight", "conv_out", "relu_out", "flat", "fc.weight", "logits"}
    assert names["conv_out"].loc == "conv" and names["relu_out"].loc == "Relu_1"
    assert names["flat"].attrs["shape"] == (2, -1)
    assert g.outputs[0].name == "logits" and g.outputs[0].type.shape == (2, 10)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_dynamic_batch_folds_symbolic_shape_arithmetic(batch: int) -> None:
    model = _flatten_model(batch="batch_size")
    g = from_onnx(model, dynamic_batch=True)
    g.verify()
    assert g.inputs[0].type.shape == ("N", 3, 6, 6)
    reshape = g.find_nodes("reshape")[0]
    assert reshape.attrs["shape"] == (0, -1)  # the symbolic batch is copied, the rest inferred
    assert all(v.type.shape[0] == "N" for v in g.values() if not v.is_const)
    x = rand(batch, 3, 6, 6, seed=batch)
    np.testing.assert_allclose(g.run(x)[0], ort_run(model, {"input": x})[0], rtol=RTOL, atol=ATOL)


def test_dim_params_become_symbols() -> None:
    g = from_onnx(_flatten_model(batch="batch_size"))
    assert g.inputs[0].type.shape == ("batch_size", 3, 6, 6)
    assert g.outputs[0].type.shape == ("batch_size", 10)


def test_constants_fold_and_keep_their_names() -> None:
    # Constant -> Mul by a Constant -> Add to the input: only the folded product becomes a const.
    nodes = [
        helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Constant", [], ["two"], value_float=2.0),
        helper.make_node("Mul", ["c", "two"], ["c2"], name="scale"),
        helper.make_node("Add", ["x", "c2"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )  # fmt: skip
    g = from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert [(n.op, n.outputs[0].name) for n in g.nodes] == [("const", "c2"), ("add", "y")]
    np.testing.assert_array_equal(g.consts()["c2"], f32(2, 4, 6))


@pytest.mark.parametrize("path_kind", ["proto", "light-model"])
def test_input_model_is_not_modified(path_kind: str) -> None:
    if path_kind == "proto":
        model = _flatten_model(batch="batch_size")
    else:
        data = onnx.__file__.rsplit("/", 1)[0] + "/backend/test/data/light/light_shufflenet.onnx"
        model = onnx.load(data)
    before = model.SerializeToString()
    g = from_onnx(model, dynamic_batch=True)
    assert model.SerializeToString() == before
    # And the graph does not alias the model's buffers: consts are read-only copies.
    assert all(not a.flags.writeable for a in g.consts().values())


def _shape_net(pattern: str) -> onnx.ModelProto:
    """x: [batch, 4, 6] reshaped by a target shape computed from Shape(x) in one of three ways."""
    consts = {
        "zero": np.int64(0).reshape(()), "one": np.int64(1).reshape(()), "two": np.int64(2).reshape(()),
        "axes0": i64(0), "minus1": i64(-1), "six": i64(6), "four": i64(4),
        "s0": i64(0), "s1": i64(1), "two_vec": i64(2),
    }  # fmt: skip
    nodes = [helper.make_node("Shape", ["x"], ["shape"])]
    if pattern == "slice-concat":  # [batch, -1]
        nodes += [helper.make_node("Slice", ["shape", "s0", "s1"], ["lead"]),
                  helper.make_node("Concat", ["lead", "minus1"], ["target"], axis=0)]  # fmt: skip
    elif pattern == "mul-dims":  # [batch * 4, 6]
        nodes += [helper.make_node("Gather", ["shape", "zero"], ["b"]),
                  helper.make_node("Gather", ["shape", "one"], ["c"]),
                  helper.make_node("Mul", ["b", "c"], ["bc"]),
                  helper.make_node("Unsqueeze", ["bc", "axes0"], ["bc1"]),
                  helper.make_node("Concat", ["bc1", "six"], ["target"], axis=0)]  # fmt: skip
    else:  # "div-static": [batch, 4, 2, 6 / 2]
        nodes += [helper.make_node("Gather", ["shape", "two"], ["w"]),
                  helper.make_node("Div", ["w", "two"], ["half"]),
                  helper.make_node("Unsqueeze", ["half", "axes0"], ["half1"]),
                  helper.make_node("Slice", ["shape", "s0", "two_vec"], ["lead"]),
                  helper.make_node("Concat", ["lead", "two_vec", "half1"], ["target"], axis=0)]  # fmt: skip
    nodes.append(helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"))
    graph = helper.make_graph(
        nodes, pattern, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])],
        [helper.make_empty_tensor_value_info("y")], [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)


@pytest.mark.parametrize(
    "pattern, shape_attr",
    [("slice-concat", (0, -1)), ("mul-dims", (-1, 6)), ("div-static", (0, 4, 2, 3))],
)
def test_symbolic_shape_patterns(pattern: str, shape_attr: tuple) -> None:
    model = _shape_net(pattern)
    g = from_onnx(model, dynamic_batch=True)
    assert [n.op for n in g.nodes] == ["reshape"] and g.nodes[0].attrs["shape"] == shape_attr
    for batch in (1, 5):
        x = rand(batch, 4, 6, seed=batch)
        np.testing.assert_array_equal(g.run(x)[0], ort_run(model, {"x": x})[0])


def test_symbolic_shape_used_as_data_is_refused() -> None:
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT, name="to_float")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_empty_tensor_value_info("shape_f")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(FrontendError, match=r"node 'to_float' \(Cast\): cannot cast a shape holding symbolic dims"):
        from_onnx(model, dynamic_batch=True)


def test_converters_are_registered_under_real_onnx_op_names() -> None:
    ops = supported_ops()
    assert len(ops) > 80
    assert [op for op in ops if not onnx.defs.has(op)] == []

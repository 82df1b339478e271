"""What the ONNX frontend says when it cannot import a model: every unsupported
op at once, unreadable files by name and reason, and nodes it cannot convert by
node name; never a bare Python exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimgraph.errors import FrontendError
from slimgraph.frontends.onnx import UnsupportedOpsError, from_onnx

LIGHT_SQUEEZENET = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"


def _model(nodes, inputs, outputs, inits=(), opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tensor(name: str, dtype: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


# -- unsupported ops ---------------------------------------------------------------------------


def test_every_unsupported_op_is_listed_once_with_count_and_first_node() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("NonMaxSuppression", ["a", "k"], ["v1"], name="nms_first"),
        helper.make_node("Det", ["a"], ["e"]),  # unnamed: Det_2
        helper.make_node("NonMaxSuppression", ["e", "k"], ["v2"], name="nms_second"),
        helper.make_node("FusedConv", ["e"], ["f"], name="ms_conv", domain="com.microsoft"),
        helper.make_node("Sigmoid", ["f"], ["y"]),
    ]
    k = numpy_helper.from_array(np.array([1], np.int64), "k")
    model = _model(nodes, [_tensor("x", TensorProto.FLOAT, [2, 3])], [_tensor("y", TensorProto.FLOAT, None)], [k])
    with pytest.raises(UnsupportedOpsError) as info:
        from_onnx(model)
    err = info.value
    assert isinstance(err, FrontendError)
    assert err.ops == {"NonMaxSuppression": (2, "nms_first"), "Det": (1, "Det_2"),
                       "com.microsoft.FusedConv": (1, "ms_conv")}
    message = str(err)
    assert "3 unsupported ONNX op types" in message
    assert "NonMaxSuppression: 2 nodes, first 'nms_first'" in message
    assert "Det: 1 node, first 'Det_2'" in message
    assert "com.microsoft.FusedConv: 1 node, first 'ms_conv'" in message


# -- files -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(FrontendError, match=r"nope\.onnx: no such file"):
        from_onnx(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(FrontendError, match="is a directory"):
        from_onnx(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(FrontendError, match=r"empty\.onnx: the file is empty"):
        from_onnx(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    data = LIGHT_SQUEEZENET.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FrontendError, match=r"cut\.onnx: not a valid ONNX model \(truncated or corrupt"):
        from_onnx(path)


def test_corrupt_bytes(tmp_path: Path) -> None:
    data = bytearray(LIGHT_SQUEEZENET.read_bytes())
    data[10:400] = np.random.default_rng(0).integers(0, 256, 390, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(FrontendError, match=r"corrupt\.onnx: not a valid ONNX model"):
        from_onnx(path)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\nbut a text file\n")
    with pytest.raises(FrontendError, match=r"notes\.onnx: a text file, not an ONNX model"):
        from_onnx(path)


def test_other_protobuf(tmp_path: Path) -> None:
    # A serialized TensorProto parses as a ModelProto with unknown fields; nothing ONNX needs is there.
    path = tmp_path / "tensor.onnx"
    path.write_bytes(numpy_helper.from_array(np.arange(6, dtype=np.int64), "t").SerializeToString())
    with pytest.raises(FrontendError, match=r"tensor\.onnx: not an ONNX model|tensor\.onnx: not a valid ONNX model"):
        from_onnx(path)


def test_wrong_argument_type() -> None:
    with pytest.raises(FrontendError, match="takes an onnx.ModelProto or a path"):
        from_onnx(42)


# -- nodes that cannot be converted ------------------------------------------------------------


def test_runtime_reshape_shape_names_the_node() -> None:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="the_reshape")]
    model = _model(
        nodes, [_tensor("x", TensorProto.FLOAT, [2, 3]), _tensor("s", TensorProto.INT64, [2])],
        [_tensor("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    with pytest.raises(FrontendError, match=r"node 'the_reshape' \(Reshape\): input 1 \('s', the target shape\)"):
        from_onnx(model)


def test_same_padding_on_symbolic_dims_names_the_node() -> None:
    w = numpy_helper.from_array(np.zeros((2, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="c1", auto_pad="SAME_UPPER")]
    model = _model(nodes, [_tensor("x", TensorProto.FLOAT, ["N", 3, "H", "W"])], [_tensor("y", TensorProto.FLOAT, None)], [w])
    with pytest.raises(FrontendError, match=r"node 'c1' \(Conv\): auto_pad=SAME_UPPER needs static spatial dims"):
        from_onnx(model)


def test_unsupported_input_type_is_named() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_tensor("x", TensorProto.COMPLEX64, [2])],
                   [_tensor("y", TensorProto.COMPLEX64, [2])])  # fmt: skip
    with pytest.raises(FrontendError, match=r"graph input 'x' has ONNX type COMPLEX64"):
        from_onnx(model)


def test_undefined_tensor_is_named() -> None:
    model = _model([helper.make_node("Relu", ["ghost"], ["y"], name="r")], [_tensor("x", TensorProto.FLOAT, [2])],
                   [_tensor("y", TensorProto.FLOAT, [2])])  # fmt: skip
    with pytest.raises(FrontendError, match=r"node 'r' \(Relu\) reads 'ghost', which no graph input"):
        from_onnx(model)


def test_bad_op_inputs_name_the_node() -> None:
    model = _model([helper.make_node("Add", ["a", "b"], ["y"], name="add7")],
                   [_tensor("a", TensorProto.FLOAT, [2, 3]), _tensor("b", TensorProto.FLOAT, [4])],
                   [_tensor("y", TensorProto.FLOAT, None)])  # fmt: skip
    with pytest.raises(FrontendError, match=r"node 'add7' \(Add\): add: .*do not broadcast"):
        from_onnx(model)


def test_read_training_outputs_are_refused() -> None:
    model = _model([helper.make_node("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2])],
                   [_tensor("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                   [_tensor("y", TensorProto.FLOAT, None), _tensor("idx", TensorProto.INT64, None)])  # fmt: skip
    with pytest.raises(FrontendError, match=r"node 'mp' \(MaxPool\): output 1 \('idx'\) is not supported"):
        from_onnx(model)


def test_malformed_node_is_a_frontend_error() -> None:
    # Pad-18 with two axes needs four pads; a bare IndexError must not escape.
    pads = numpy_helper.from_array(np.array([1, 1], np.int64), "pads")
    axes = numpy_helper.from_array(np.array([0, 1], np.int64), "axes")
    model = _model([helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad")],
                   [_tensor("x", TensorProto.FLOAT, [2, 3])], [_tensor("y", TensorProto.FLOAT, None)],
                   [pads, axes], opset=18)  # fmt: skip
    with pytest.raises(FrontendError, match=r"node 'pad' \(Pad\): malformed node \(IndexError"):
        from_onnx(model)


def test_too_old_opset() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_tensor("x", TensorProto.FLOAT, [2])],
                   [_tensor("y", TensorProto.FLOAT, [2])], opset=4)  # fmt: skip
    with pytest.raises(FrontendError, match="opset 4 is older than 6"):
        from_onnx(model)


def test_constant_node_without_converter_folds_at_import() -> None:
    """Mod has no converter, but Mod of two constants (as torch's exporter writes for
    attention head checks) folds through onnx.reference instead of failing the import."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from slimgraph.frontends import from_onnx

    a = numpy_helper.from_array(np.array([7, 4], np.int64), "a")
    b = numpy_helper.from_array(np.array([2, 4], np.int64), "b")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    nodes = [
        helper.make_node("Mod", ["a", "b"], ["m"], name="mod"),
        helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("ReduceSum", ["mf"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Add", ["x", "s"], ["y"], name="add"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [a, b]), opset_imports=[helper.make_opsetid("", 17)])
    g = from_onnx(model)
    assert [n.op for n in g.nodes if n.op != "const"] == ["add"]
    out = g.run(np.zeros((2, 8), np.float32))[0]
    np.testing.assert_array_equal(out, np.ones((2, 8), np.float32))  # 7%2 + 4%4 = 1

    runtime = helper.make_model(
        helper.make_graph([helper.make_node("Mod", ["x", "x"], ["y"], fmod=1, name="mod_rt")], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with pytest.raises(FrontendError, match="Mod: 1 node, first 'mod_rt'"):
        from_onnx(runtime)

"""Issue 20: every bad input gets a clear slimgraph error, nothing is silently wrong, nothing is lost.

Each case asserts the exact error type, that the message names the argument (or node, input,
option) at fault, and that the user's model (a torch module's state_dict, an ONNX file's bytes)
is unchanged after the failure.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import slimgraph
from slimgraph.backends.tvm import build
from slimgraph.backends.tvm.targets import TargetError
from slimgraph.cli import main
from slimgraph.errors import (
    ArgumentError,
    BackendError,
    FrontendError,
    GraphError,
    ParseError,
    PassError,
    SlimgraphError,
    SlimgraphWarning,
)
from slimgraph.frontends import from_onnx, from_torch
from slimgraph.ir import Graph, TensorType, parse
from slimgraph.ir.graph import MAX_REGION_DEPTH
from slimgraph.passes import PassManager, parse_pipeline, run_pipeline
from slimgraph.passes.calibrate import CalibrationError, calibrate
from slimgraph.passes.errors import OptionValueError, PassFailedError, UnknownPassError
from slimgraph.runtime import GuardedModel, narrow
from slimgraph.runtime.controller import ControllerConfig
from slimgraph.runtime.guard import GraphRunner, GuardError, Variant

FAST = settings(max_examples=12, deadline=None, derandomize=True)


def expect(error: type, *fragments: str, call: Callable[[], Any]) -> SlimgraphError:
    """Run ``call``; it must raise exactly ``error`` with every fragment in its message."""
    with pytest.raises(SlimgraphError) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {info.value}"
    return info.value


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)

    def forward(self, x):
        return torch.relu(self.bn(self.fc(x)))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same_state(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = module.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def chain_graph(shape=(2, 4), dtype="f32") -> Graph:
    g = Graph("g")
    x = g.add_input("x", TensorType(dtype, shape))
    g.set_outputs([g.call("relu", x)])
    return g


# ---------------------------------------------------------------------------
# ONNX: opsets, attributes, Split as the spec says


def onnx_model(nodes, opset: int, inputs=None, outputs=None, initializers=()) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 2])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def split_model(opset: int, outputs: int = 2, split=None, split_attr=None, num_outputs=None) -> onnx.ModelProto:
    names = [f"y{i}" for i in range(outputs)]
    ins, inits = ["x"], []
    if split is not None:
        ins.append("split")
        inits.append(numpy_helper.from_array(np.array(split, np.int64), "split"))
    attrs = {"axis": 0}
    if split_attr is not None:
        attrs["split"] = split_attr
    if num_outputs is not None:
        attrs["num_outputs"] = num_outputs
    node = helper.make_node("Split", ins, names, name="the_split", **attrs)
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names]
    return onnx_model([node], opset, outputs=outs, initializers=inits)


@pytest.fixture
def onnx_file(tmp_path: Path) -> Callable[[onnx.ModelProto], Path]:
    def write(model: onnx.ModelProto) -> Path:
        path = tmp_path / "model.onnx"
        path.write_bytes(model.SerializeToString())
        return path

    return write


ONNX_BAD = [
    ("opset 99", onnx_model([helper.make_node("Relu", ["x"], ["y"])], 99), FrontendError, ["opset 99", "newest"]),
    ("opset 5", onnx_model([helper.make_node("Relu", ["x"], ["y"])], 5), FrontendError, ["opset 5", "oldest"]),
    ("unknown attr on Relu", onnx_model([helper.make_node("Relu", ["x"], ["y"], name="r", alpha=1.0)], 17),
     FrontendError, ["node 'r' (Relu)", "'alpha'"]),
    ("unknown attr on Transpose", onnx_model([helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[1, 0],
                                                               axes=[0])], 17), FrontendError, ["'axes'", "perm"]),
    ("split attr at opset 18", split_model(18, split_attr=[2, 4]), FrontendError,
     ["node 'the_split' (Split)", "'split'", "num_outputs"]),
    ("split attr at opset 13", split_model(13, split_attr=[2, 4]), FrontendError, ["'split'", "opset 13"]),
    ("opset 18 split input and num_outputs", split_model(18, split=[2, 4], num_outputs=2), FrontendError,
     ["the_split", "exactly one"]),
    ("opset 18 neither split nor num_outputs", split_model(18), FrontendError, ["the_split", "exactly one"]),
    ("num_outputs is not the output count", split_model(18, outputs=2, num_outputs=3), FrontendError,
     ["num_outputs=3", "2 outputs"]),
    ("split sizes count", split_model(13, outputs=2, split=[1, 2, 3]), FrontendError, ["3 parts", "2 outputs"]),
    ("split sizes sum", split_model(13, outputs=2, split=[1, 2]), FrontendError, ["the_split"]),
]


@pytest.mark.parametrize("label, model, error, fragments", ONNX_BAD, ids=[c[0] for c in ONNX_BAD])
def test_bad_onnx_models_are_refused_and_left_alone(label, model, error, fragments, onnx_file) -> None:
    path = onnx_file(model)
    before = digest(path)
    expect(error, str(path), *fragments, call=lambda: slimgraph.compile(path))
    assert digest(path) == before


@given(op=st.sampled_from(["Relu", "Sigmoid", "Add", "Mul", "Softmax", "Flatten", "Identity"]),
       opset=st.integers(13, 20),
       attr=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
@FAST
def test_any_attribute_the_schema_lacks_is_refused(op, opset, attr) -> None:
    if attr in onnx.defs.get_schema(op, opset, "").attributes:
        return  # a real attribute of the op, not a bad input
    inputs = ["x", "x"] if op in ("Add", "Mul") else ["x"]
    model = onnx_model([helper.make_node(op, inputs, ["y"], name="n", **{attr: 1})], opset)
    expect(FrontendError, f"node 'n' ({op})", repr(attr), call=lambda: from_onnx(model))


SPLITS = [
    ("opset 11 split attribute", split_model(11, split_attr=[2, 4])),
    ("opset 11 equal parts", split_model(11, outputs=3)),
    ("opset 13 split input", split_model(13, split=[5, 1])),
    ("opset 13 equal parts", split_model(13, outputs=2)),
    ("opset 18 split input", split_model(18, split=[1, 5])),
    ("opset 18 num_outputs even", split_model(18, outputs=3, num_outputs=3)),
    ("opset 18 num_outputs uneven", split_model(18, outputs=4, num_outputs=4)),
]


@pytest.mark.parametrize("label, model", SPLITS, ids=[c[0] for c in SPLITS])
def test_split_follows_the_spec_at_every_opset(label, model) -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    expected = ReferenceEvaluator(model).run(None, {"x": x})
    got = from_onnx(model).run(x)
    assert [a.shape for a in got] == [a.shape for a in expected]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_a_model_proto_is_only_read(onnx_file) -> None:
    model = split_model(18, split_attr=[2, 4])
    before = model.SerializeToString()
    expect(FrontendError, "'split'", call=lambda: slimgraph.compile(model))
    assert model.SerializeToString() == before


class Unsupported(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(4)

    def forward(self, x):
        return torch.nonzero(self.bn(x))


def test_an_import_failure_leaves_a_training_module_as_it_was() -> None:
    module = Unsupported().train()
    before = snapshot(module)
    expect(FrontendError, "aten.nonzero", call=lambda: slimgraph.compile(module, (torch.randn(3, 4),)))
    assert module.training and module.bn.training and same_state(module, before)


# ---------------------------------------------------------------------------
# slimgraph.compile: every argument checked before the import and the build


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


X = torch.randn(2, 4)

COMPILE_BAD = [
    ("example input is a list", dict(example_inputs=[[1.0, 2.0, 3.0, 4.0]]), ["example_inputs[0]", "list"]),
    ("tuple of lists", dict(example_inputs=([[1.0] * 4] * 2,)), ["example_inputs[0]", "list"]),
    ("dict of inputs", dict(example_inputs={"x": X}), ["example_inputs", "dict"]),
    ("a string", dict(example_inputs="x"), ["example_inputs", "str"]),
    ("nested tuple", dict(example_inputs=((X,),)), ["example_inputs[0]", "tuple"]),
    ("None next to a tensor", dict(example_inputs=(X, None)), ["example_inputs[1]", "NoneType"]),
    ("tune negative", dict(tune=-5), ["tune=-5", ">= 0"]),
    ("tune float", dict(tune=1.5), ["tune=1.5"]),
    ("tune bool", dict(tune=True), ["tune=True"]),
    ("tune string", dict(tune="3"), ["tune='3'"]),
    ("shapes names no symbol", dict(shapes={"Q": 3}), ["shapes", "'Q'", "no symbolic dim"]),
    ("shapes zero", dict(shapes={"N": 0}), ["shapes['N']=0", ">= 1"]),
    ("shapes negative", dict(shapes={"N": -2}), ["shapes['N']=-2"]),
    ("shapes float", dict(shapes={"N": 2.5}), ["shapes['N']=2.5"]),
    ("shapes key not a str", dict(shapes={1: 2}), ["shapes", "key 1"]),
    ("shapes not a mapping", dict(shapes=[("N", 2)]), ["shapes=", "mapping"]),
    ("pipeline not text", dict(pipeline=3), ["pipeline=3"]),
    ("progress not bool", dict(progress="yes"), ["progress='yes'"]),
    ("batches without variants", dict(batches=[1, 2]), ["batches", "variants"]),
    ("budget without variants", dict(budget_ms=5.0), ["budget_ms", "variants"]),
    ("tune with variants", dict(variants=[1.0], tune=3), ["tune", "variants"]),
    ("shapes with variants", dict(variants=[1.0], shapes={"N": 2}), ["shapes", "variants"]),
]


@pytest.mark.parametrize("label, kwargs, fragments", COMPILE_BAD, ids=[c[0] for c in COMPILE_BAD])
def test_bad_compile_arguments(label, kwargs, fragments, net) -> None:
    kwargs = dict(kwargs)
    example = kwargs.pop("example_inputs", (X,))
    before = snapshot(net)
    expect(ArgumentError, *fragments, call=lambda: slimgraph.compile(net, example, **kwargs))
    assert same_state(net, before) and not net.training


def test_dump_ir_and_database_paths(net, tmp_path) -> None:
    before = snapshot(net)
    expect(ArgumentError, "dump_ir=", "does not exist",
           call=lambda: slimgraph.compile(net, (X,), dump_ir=tmp_path / "missing" / "x.sg"))
    expect(ArgumentError, "dump_ir=", "is a folder", call=lambda: slimgraph.compile(net, (X,), dump_ir=tmp_path))
    afile = tmp_path / "records"
    afile.write_text("not a folder")
    expect(ArgumentError, "database=", "is a file", call=lambda: slimgraph.compile(net, (X,), database=afile))
    assert afile.read_text() == "not a folder"
    assert same_state(net, before)


TARGETS_BAD = [
    ("llvm:notacpu", TargetError, ["llvm:notacpu", "notacpu", "valid CPUs", "znver3"]),
    ("bogus", TargetError, ["'bogus'", "valid targets"]),
    ("", TargetError, ["target must be"]),
    ("cuda:90", TargetError, ["cuda:90", "sm_XY"]),
    ("opencl:foo", TargetError, ["opencl takes no architecture"]),
    (3, TargetError, ["target must be"]),
]


@pytest.mark.parametrize("kwargs, error, fragments", [
    (dict(tune=-5), ArgumentError, ["tune=-5"]),
    (dict(target="llvm:notacpu"), TargetError, ["notacpu"]),
    (dict(shapes={"B": 2}), ArgumentError, ["'B'"]),
    (dict(pipeline="fuse{max-ops=0}"), OptionValueError, ["max-ops"]),
    (dict(calibration_data=[np.ones((6, 2), np.float32)]), ArgumentError, ["calibration_data", "no quantize pass"]),
    (dict(calibration_data=3), ArgumentError, ["calibration_data", "int"]),
], ids=["tune", "target", "shapes", "pipeline", "calibration unused", "calibration not batches"])
def test_bad_arguments_leave_an_onnx_file_alone(kwargs, error, fragments, onnx_file) -> None:
    path = onnx_file(onnx_model([helper.make_node("Relu", ["x"], ["y"])], 17))
    before = digest(path)
    expect(error, *fragments, call=lambda: slimgraph.compile(path, **kwargs))
    assert digest(path) == before


@pytest.mark.parametrize("target, error, fragments", TARGETS_BAD, ids=[str(c[0]) for c in TARGETS_BAD])
def test_bad_targets_are_refused_with_the_valid_list(target, error, fragments, net) -> None:
    before = snapshot(net)
    expect(error, *fragments, call=lambda: slimgraph.compile(net, (X,), target=target))
    assert same_state(net, before)


@pytest.mark.parametrize("pipeline, error, fragments", [
    ("nope", UnknownPassError, ["'nope'", "valid:"]),
    ("fuse{max-ops=0}", OptionValueError, ["max-ops"]),
    ("canonicalize{max-iterations=-1}", OptionValueError, ["max-iterations", "at least 1"]),
], ids=["unknown pass", "fuse max-ops", "canonicalize max-iterations"])
def test_bad_pipelines_fail_before_the_import(pipeline, error, fragments, net) -> None:
    before = snapshot(net)
    expect(error, *fragments, call=lambda: slimgraph.compile(net, (X,), pipeline=pipeline))
    assert same_state(net, before)


@given(size=st.integers(max_value=0))
@FAST
def test_shapes_sizes_below_one_are_refused(size) -> None:
    expect(ArgumentError, f"shapes['N']={size}", call=lambda: slimgraph.compile(chain_graph(("N", 4)), shapes={"N": size}))


def test_missing_and_unreadable_model_files_name_the_path(tmp_path) -> None:
    expect(FrontendError, str(tmp_path / "nope.onnx"), "no such file",
           call=lambda: slimgraph.compile(tmp_path / "nope.onnx"))
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    expect(FrontendError, str(folder), "directory", call=lambda: slimgraph.compile(folder))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 40)
    before = digest(garbage)
    expect(FrontendError, str(garbage), call=lambda: slimgraph.compile(garbage))
    assert digest(garbage) == before


# ---------------------------------------------------------------------------
# CompiledModel.__call__


@pytest.fixture(scope="module")
def compiled():
    return build(chain_graph(), "llvm")


GOOD = np.ones((2, 4), np.float32)

CALL_BAD = [
    ("no inputs", (), {}, ["takes 1 inputs", "got 0"]),
    ("two inputs", (GOOD, GOOD), {}, ["takes 1 inputs", "got 2"]),
    ("float64", (GOOD.astype(np.float64),), {}, ["input 0", "float64", "f32[2,4]"]),
    ("int32", (GOOD.astype(np.int32),), {}, ["input 0", "int32"]),
    ("shape", (np.ones((3, 4), np.float32),), {}, ["input 0", "[3, 4]"]),
    ("rank", (np.ones((2, 4, 1), np.float32),), {}, ["input 0", "[2, 4, 1]"]),
    ("list", ([[1.0] * 4] * 2,), {}, ["input 0", "list"]),
    ("torch dtype", (torch.ones(2, 4, dtype=torch.float16),), {}, ["input 0", "float16"]),
    ("threads 0", (GOOD,), {"threads": 0}, ["threads=0"]),
    ("threads bool", (GOOD,), {"threads": True}, ["threads=True"]),
    ("threads text", (GOOD,), {"threads": "2"}, ["threads='2'"]),
]


@pytest.mark.parametrize("label, args, kwargs, fragments", CALL_BAD, ids=[c[0] for c in CALL_BAD])
def test_bad_calls(label, args, kwargs, fragments, compiled) -> None:
    expect(BackendError, *fragments, call=lambda: compiled(*args, **kwargs))


@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=4).filter(lambda s: s != [2, 4]))
@FAST
def test_any_other_shape_is_refused(shape, compiled) -> None:
    expect(BackendError, "input 0", call=lambda: compiled(np.zeros(shape, np.float32)))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(runs=0), "runs=0"), (dict(warmup=-1), "warmup=-1"), (dict(kernel_repeat=0), "kernel_repeat=0"),
    (dict(runs=2.5), "runs=2.5"),
], ids=["runs", "warmup", "kernel_repeat", "float runs"])
def test_bad_benchmark_counts(kwargs, fragment, compiled) -> None:
    expect(BackendError, "benchmark", fragment, call=lambda: compiled.benchmark(**kwargs))


@given(dtype=st.sampled_from([np.float16, np.float64, np.int8, np.uint8, np.int32, np.int64, np.bool_,
                             np.complex64]))
@FAST
def test_any_other_dtype_is_refused(dtype, compiled) -> None:
    expect(BackendError, "input 0", np.dtype(dtype).name, call=lambda: compiled(np.zeros((2, 4), dtype)))


# ---------------------------------------------------------------------------
# Sizes TVM cannot index, and zero sizes it can


@pytest.mark.parametrize("shape", [(2**62,), (2**40, 2**20), (2**70,)], ids=["2^62", "2^60 in two dims", "2^70"])
def test_huge_tensors_are_refused_before_tvm(shape) -> None:
    expect(BackendError, "%x", "2**48", call=lambda: build(chain_graph(shape), "llvm"))


def test_negative_bindings_are_refused_before_tvm() -> None:
    expect(BackendError, "%x", "negative", call=lambda: build(chain_graph(("N", 4)), "llvm", {"N": -3}))


def one_op(op: str, shape, **attrs) -> Graph:
    g = Graph("g")
    g.set_outputs([g.call(op, g.add_input("x", TensorType("f32", shape)), **attrs)])
    return g


@pytest.mark.parametrize("op, shape, attrs", [
    ("relu", (0, 4), {}), ("softmax", (2, 0), {"axis": 1}), ("reduce_sum", (0, 3), {"axes": (1,)}),
    ("max_pool", (0, 2, 4, 4), {"kernel": (2, 2)}),
], ids=["relu", "softmax over nothing", "sum of an empty batch", "pool of an empty batch"])
def test_zero_sized_tensors_compile_and_match_the_reference(op, shape, attrs) -> None:
    graph = one_op(op, shape, **attrs)
    x = np.zeros(shape, np.float32)
    got = build(graph, "llvm")(x)
    np.testing.assert_array_equal(got, graph.run(x)[0])


@pytest.mark.parametrize("op, shape, attrs", [
    ("reduce_sum", (2, 0), {"axes": (1,)}), ("reduce_prod", (2, 0), {"axes": (1,)}),
    ("reduce_mean", (2, 0), {"axes": (1,)}), ("global_avg_pool", (1, 2, 0, 0), {}),
], ids=["sum", "prod", "mean", "global pool"])
def test_reductions_over_nothing_are_refused_not_uninitialised(op, shape, attrs) -> None:
    # TVM never runs a reduction's init when the reduced extent is 0: the result would be garbage
    expect(BackendError, f"= {op}", "empty input %x", call=lambda: build(one_op(op, shape, **attrs), "llvm"))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_linear_without_input_features_is_refused() -> None:
    module = torch.nn.Linear(0, 3)
    before = snapshot(module)
    expect(BackendError, "linear", "empty input", call=lambda: slimgraph.compile(module, (torch.zeros(2, 0),)))
    assert same_state(module, before)


# ---------------------------------------------------------------------------
# Passes: every number option has a range


OPTION_BAD = [
    ("canonicalize{max-iterations=0}", "max-iterations"),
    ("fold-constants{max-elements=-1}", "max-elements"),
    ("fuse{max-ops=-3}", "max-ops"),
    ("prune{sparsity=1.5}", "sparsity"),
    ("prune{ratio=-0.1}", "ratio"),
    ("quantize{percentile=120}", "percentile"),
    ("quantize{percentile=nan}", "percentile"),
    ("quantize{log2-min-exp=5}", "log2-min-exp"),
    ("share-weights{bits=0}", "bits"),
    ("share-weights{iterations=0}", "iterations"),
    ("share-weights{min-elements=-1}", "min-elements"),
    ("share-weights{threshold=2}", "threshold"),
    ("fuse{max-ops=two}", "max-ops"),
]


@pytest.mark.parametrize("text, option", OPTION_BAD, ids=[c[0] for c in OPTION_BAD])
def test_pass_options_out_of_range(text, option) -> None:
    expect(OptionValueError, f"'{option}'", call=lambda: parse_pipeline(text))


@given(value=st.integers(max_value=0))
@FAST
def test_share_weights_iterations_below_one(value) -> None:
    from slimgraph.passes.share_weights import ShareWeights

    expect(OptionValueError, "'iterations'", "at least 1", call=lambda: ShareWeights(iterations=value))


@pytest.mark.parametrize("label, make, fragments", [
    ("pipeline is a number", lambda: run_pipeline(chain_graph(), 3), ["pipeline=3"]),
    ("graph is text", lambda: run_pipeline("graph @g", "dce"), ["graph", "str"]),
    ("a stray in the pass list", lambda: PassManager(["dce"]).run(chain_graph()), ["'dce'", "not a pass"]),
    ("manager on a module", lambda: PassManager("dce").run(torch.nn.ReLU()), ["graph", "ReLU"]),
], ids=lambda c: c if isinstance(c, str) else "")
def test_bad_pass_manager_arguments(label, make, fragments) -> None:
    expect(PassError, *fragments, call=make)


def test_to_torch_needs_a_graph() -> None:
    from slimgraph.backends.torch import to_torch

    expect(BackendError, "to_torch", "Sequential", call=lambda: to_torch(torch.nn.Sequential()))


def test_dump_dir_that_cannot_be_written(tmp_path) -> None:
    afile = tmp_path / "dumps"
    afile.write_text("x")
    expect(PassError, "dump_dir=", "is a file", call=lambda: run_pipeline(chain_graph(), "dce", dump_dir=afile))
    assert afile.read_text() == "x"


# ---------------------------------------------------------------------------
# Calibration


def calib_graph() -> Graph:
    return chain_graph(("N", 4))


CALIBRATION_BAD = [
    ("all NaN", [np.full((2, 4), np.nan, np.float32)], {}, ["input %x", "no finite value"]),
    ("all inf", [np.full((2, 4), np.inf, np.float32)] * 2, {}, ["input %x", "no finite value"]),
    ("all zero", [np.zeros((2, 4), np.float32)] * 3, {}, ["input %x", "constant", "every value is 0"]),
    ("constant", [np.full((1, 4), 7.0, np.float32)], {}, ["input %x", "constant", "7"]),
    ("empty", [], {}, ["empty"]),
    ("wrong shape", [np.ones((2, 5), np.float32)], {}, ["input %x", "[2,5]"]),
    ("wrong dtype", [np.ones((2, 4), np.float64)], {}, ["input %x", "float64"]),
    ("unknown observer", [np.eye(2, 4, dtype=np.float32)], {"observer": "best"}, ["'best'", "minmax"]),
    ("option of another observer", [np.eye(2, 4, dtype=np.float32)], {"momentum": 0.5}, ["'momentum'"]),
    ("percentile out of range", [np.eye(2, 4, dtype=np.float32)], {"observer": "percentile", "percentile": 101},
     ["percentile=101", "50.0 to 100.0"]),
    ("mse grid upside down", [np.eye(2, 4, dtype=np.float32)], {"observer": "mse", "qmin": 10, "qmax": 0},
     ["qmin=10", "qmax=0"]),
]


@pytest.mark.parametrize("label, data, options, fragments", CALIBRATION_BAD, ids=[c[0] for c in CALIBRATION_BAD])
def test_bad_calibration(label, data, options, fragments) -> None:
    expect(CalibrationError, *fragments, call=lambda: calibrate(calib_graph(), data, progress=False, **options))


@pytest.mark.parametrize("label, make, fragments", [
    ("data is a number", lambda: calibrate(calib_graph(), 3, progress=False), ["calibration data", "int"]),
    ("data is text", lambda: calibrate(calib_graph(), "batches", progress=False), ["calibration data", "str"]),
    ("graph is a module", lambda: calibrate(torch.nn.ReLU(), [np.eye(2, 4)], progress=False), ["graph", "ReLU"]),
    ("unknown value", lambda: calibrate(calib_graph(), [np.eye(2, 4, dtype=np.float32)], values=["zz"],
                                        progress=False), ["'zz'"]),
], ids=lambda c: c if isinstance(c, str) else "")
def test_bad_calibration_arguments(label, make, fragments) -> None:
    expect(CalibrationError, *fragments, call=make)


def test_constant_calibration_through_compile(net) -> None:
    before = snapshot(net)
    expect(PassFailedError, "'quantize'", "input %x", "constant",
           call=lambda: slimgraph.compile(net, (X,), pipeline="quantize", calibration_data=[torch.zeros(2, 4)]))
    assert same_state(net, before)


def test_varied_calibration_data_still_calibrates() -> None:
    table = calibrate(calib_graph(), [np.array([[-1, 0, 2, np.nan]], np.float32)], progress=False)
    assert table.ranges["x"] == (-1.0, 2.0)


# ---------------------------------------------------------------------------
# The guard and narrow: constructors and arguments


def runner() -> GraphRunner:
    return GraphRunner(chain_graph((2, 4)))


def variant(**kw) -> Variant:
    return Variant(**{"name": "w100", "model": runner(), **kw})


GUARD_BAD = [
    ("variant width 0", lambda: variant(width=0.0), ["width=0.0"]),
    ("variant width 1.5", lambda: variant(width=1.5), ["width=1.5"]),
    ("variant width text", lambda: variant(width="1"), ["width='1'"]),
    ("variant batch 0", lambda: variant(batch=0), ["batch=0"]),
    ("variant empty name", lambda: variant(name=""), ["name=''"]),
    ("variant model not callable", lambda: variant(model=3), ["model=int"]),
    ("variant threads 0", lambda: variant(threads=0), ["threads=0"]),
    ("guard no variants", lambda: GuardedModel([]), ["at least one variant"]),
    ("guard stray variant", lambda: GuardedModel([runner()]), ["variants", "GraphRunner"]),
    ("guard budget negative", lambda: GuardedModel([variant()], -1.0), ["budget_ms=-1.0"]),
    ("guard budget nan", lambda: GuardedModel([variant()], math.nan), ["budget_ms=nan"]),
    ("guard budget text", lambda: GuardedModel([variant()], "5"), ["budget_ms='5'"]),
    ("guard budget bucket unknown", lambda: GuardedModel([variant()], {16: 5.0}), ["budget_ms", "bucket 16"]),
    ("guard budget bucket zero", lambda: GuardedModel([variant()], {0: 5.0}), ["budget_ms", "key 0"]),
    ("guard policy", lambda: GuardedModel([variant()], policy="widest"), ["policy='widest'"]),
    ("guard clock", lambda: GuardedModel([variant()], clock=1.0), ["clock=1.0"]),
    ("guard config", lambda: GuardedModel([variant()], config={"window": 5}), ["config", "dict"]),
    ("guard history", lambda: GuardedModel([variant()], history=0), ["history=0"]),
    ("guard name", lambda: GuardedModel([variant()], name=""), ["name=''"]),
]


@pytest.mark.parametrize("label, make, fragments", GUARD_BAD, ids=[c[0] for c in GUARD_BAD])
def test_bad_guard_arguments(label, make, fragments) -> None:
    expect(GuardError, *fragments, call=make)


NARROW_BAD = [
    ("widths above 1", dict(variants=[1.0, 1.5]), ["variants=", "(0, 1]"]),
    ("widths text", dict(variants="1.0"), ["variants="]),
    ("width bool", dict(variants=[True]), ["variants="]),
    ("batches zero", dict(batches=[0]), ["batches[0]=0"]),
    ("batches text", dict(batches="8"), ["batches='8'"]),
    ("runs zero", dict(runs=0), ["runs=0"]),
    ("budget negative", dict(budget_ms=-2), ["budget_ms=-2"]),
    ("eval_data not a pair", dict(eval_data=np.zeros(3)), ["eval_data"]),
    ("finetune not callable", dict(finetune="sgd"), ["finetune='sgd'"]),
    ("progress not callable", dict(progress=True), ["progress=True"]),
    ("config not a config", dict(config=3), ["config"]),
    ("threads zero", dict(threads=[0]), ["threads="]),
    ("empty calibration", dict(calibration_data=[]), ["calibration_data"]),
]


@pytest.mark.parametrize("label, kwargs, fragments", NARROW_BAD, ids=[c[0] for c in NARROW_BAD])
def test_bad_narrow_arguments_fail_before_any_build(label, kwargs, fragments, net) -> None:
    kwargs = {"variants": [1.0, 0.5], **kwargs}
    before = snapshot(net)
    expect(GuardError, *fragments, call=lambda: narrow(net, (X,), **kwargs))
    assert same_state(net, before)


def test_narrow_names_a_bad_example_input(net) -> None:
    before = snapshot(net)
    expect(GuardError, "example_inputs[0]", "list", call=lambda: narrow(net, ([[1.0] * 4],), [1.0, 0.5]))
    assert same_state(net, before)


def test_narrow_checks_target_and_pipeline_first(net) -> None:
    expect(TargetError, "notacpu", call=lambda: narrow(net, (X,), [1.0], target="llvm:notacpu"))
    expect(UnknownPassError, "'nope'", call=lambda: narrow(net, (X,), [1.0], pipeline="nope"))


def test_controller_config_is_checked() -> None:
    from slimgraph.runtime.controller import ControllerError

    expect(ControllerError, "quantile=2", call=lambda: ControllerConfig(quantile=2))


# ---------------------------------------------------------------------------
# The command line


CLI_BAD = [
    (["compile", "demo", "--tune", "-5"], "argument --tune"),
    (["bench", "demo", "--runs", "0"], "argument --runs"),
    (["bench", "demo", "--warmup", "-1"], "argument --warmup"),
    (["demo", "--batch", "0"], "argument --batch"),
    (["ledger", "demo", "--runs", "x"], "argument --runs"),
    (["ledger", "demo", "--max-drop", "nan"], "argument --max-drop"),
    (["ledger", "demo", "--batch", "-2"], "argument --batch"),
]


@pytest.mark.parametrize("argv, fragment", CLI_BAD, ids=[" ".join(c[0]) for c in CLI_BAD])
def test_cli_counts_are_checked_by_the_parser(argv, fragment, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["dump", "demo", "-o", "{tmp}/missing/x.sg"], "-o="),
    (["opt", "demo", "-o", "{tmp}"], "is a folder"),
    (["compile", "demo", "-o", "{tmp}/afile"], "is a file"),
    (["ledger", "demo", "--json", "{tmp}/missing/l.json"], "--json="),
    (["ledger", "demo", "--png", "{tmp}"], "--png="),
    (["ledger", "demo", "--data", "{tmp}/none.npz"], "none.npz"),
], ids=["dump -o", "opt -o folder", "compile -o file", "ledger --json", "ledger --png", "ledger --data"])
def test_cli_checks_output_paths_before_the_work(argv, fragment, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("keep")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimgraph: error: ") and fragment in err
    assert (tmp_path / "afile").read_text() == "keep"


def test_cli_reports_paths_and_targets(tmp_path, capsys) -> None:
    assert main(["dump", str(tmp_path / "none.onnx")]) == 2
    assert f"slimgraph: error: {tmp_path / 'none.onnx'}: no such file" in capsys.readouterr().err
    afile = tmp_path / "dumps"
    afile.write_text("x")
    assert main(["opt", "demo", "--dump-dir", str(afile)]) == 2
    assert "dump_dir=" in capsys.readouterr().err
    assert main(["compile", "demo", "--target", "llvm:notacpu"]) == 2
    assert "valid CPUs" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Deep structures: never Python's recursion limit


def nested(depth: int) -> Graph:
    body = chain_graph((2,))
    for i in range(depth):
        outer = Graph(f"level{i + 1}")
        x = outer.add_input("x", TensorType("f32", (2,)))
        outer.set_outputs(list(outer.add_node("fused", [x], {"body": body}).outputs))
        body = outer
    return body


def innermost(graph: Graph) -> Graph:
    while graph.nodes and graph.nodes[0].op == "fused":
        graph = graph.nodes[0].attrs["body"]
    return graph


def test_regions_at_the_limit_work_everywhere() -> None:
    g = nested(MAX_REGION_DEPTH)
    again = parse(str(g))
    again.verify()
    np.testing.assert_array_equal(g.clone().run(np.array([-1, 2], np.float32))[0], [0, 2])


def test_building_deeper_regions_is_a_graph_error() -> None:
    expect(GraphError, "'body'", f"{MAX_REGION_DEPTH + 1} levels", call=lambda: nested(MAX_REGION_DEPTH + 1))


@pytest.mark.parametrize("walk", ["print", "verify", "clone", "run"])
def test_regions_nested_deeper_by_editing_are_caught_by_every_walk(walk) -> None:
    g = nested(MAX_REGION_DEPTH)
    bottom = innermost(g)
    bottom.add_node("fused", [bottom.inputs[0]], {"body": nested(2)})
    calls = {"print": lambda: str(g), "verify": g.verify, "clone": g.clone,
             "run": lambda: g.run(np.ones(2, np.float32))}
    expect(GraphError, f"@{g.name}", "levels deep", call=calls[walk])


@given(depth=st.integers(MAX_REGION_DEPTH + 1, 3000))
@settings(max_examples=5, deadline=None, derandomize=True)
def test_deeply_nested_text_is_a_parse_error(depth) -> None:
    text = "graph @b0(%x: f32[2]) -> (f32[2]) {\n  %0 = relu(%x) : f32[2]\n  return %0\n}"
    for i in range(1, depth + 1):
        text = f"graph @b{i}(%x: f32[2]) -> (f32[2]) {{\n  %0 = fused(%x) {{body=\n{text}}} : f32[2]\n  return %0\n}}"
    expect(ParseError, "regions nest more than", call=lambda: parse(text))


def test_long_chains_stay_iterative() -> None:
    g = Graph("long")
    v = g.add_input("x", TensorType("f32", (2,)))
    for _ in range(5000):
        v = g.call("neg", v)
    g.set_outputs([v])
    again = parse(str(g.clone()))
    again.verify()
    np.testing.assert_array_equal(again.run(np.array([1, -2], np.float32))[0], [1, -2])


# ---------------------------------------------------------------------------
# Accepted but changed: warnings the user can make errors


class Counter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(4))

    def forward(self, x):
        self.calls.add_(1)
        return x + self.calls


@pytest.mark.parametrize("method", ["export", "fx"])
def test_buffer_updated_in_forward_warns_and_is_not_changed(method) -> None:
    module = Counter()
    with pytest.warns(SlimgraphWarning, match="forward updates the buffer calls"):
        graph = from_torch(module, (torch.ones(2, 4),), method=method)
    assert torch.equal(module.calls, torch.zeros(4))
    # both paths keep what the first call of forward sees (eager: x + 1), and keep it
    for _ in range(2):
        np.testing.assert_array_equal(graph.run(np.ones((2, 4), np.float32))[0], np.full((2, 4), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlimgraphWarning)
        with pytest.raises(SlimgraphWarning):
            from_torch(module, (torch.ones(2, 4),), method=method)
    assert torch.equal(module.calls, torch.zeros(4))


def test_float64_module_runs_in_float64_without_a_warning_and_refuses_float32_inputs() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).double().eval()
    before = snapshot(module)
    x = torch.randn(2, 4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlimgraphWarning)  # nothing is narrowed, so nothing is said
        model = slimgraph.compile(module, (x,))
    expected = module(x).detach().numpy()
    for given_ in (x, x.numpy()):
        got = model(given_)
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(BackendError, match=r"input 0: got dtype float32, compiled for f64\[2,4\]"):
        model(x.numpy().astype(np.float32))
    assert same_state(module, before) and module[0].weight.dtype == torch.float64

"""Whole models through the ONNX frontend: the real test data shipped inside the
onnx package, run in the reference interpreter and compared with the shipped
expected outputs (and with onnxruntime on randomized weights).

- ``light/``: nine model-zoo architectures (AlexNet, DenseNet-121, Inception v1/v2,
  ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512). Their weights are stored
  as ConstantOfShape fills, so the shipped outputs are near-uniform; the
  randomized-weight runs against onnxruntime are what make a wrong conv fail.
- ``pytorch-converted/`` and ``pytorch-operator/``: 117 small graphs (opset 6 and 9)
  with inputs and expected outputs, five of them in float64 end to end; every one runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from slimgraph.errors import FrontendError
from slimgraph.frontends.onnx import from_onnx
from slimgraph.ir import DType, parse
from slimgraph.ir.printer import collect_payloads

ort = pytest.importorskip("onnxruntime")

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
LIGHT = sorted(DATA.glob("light/light_*.onnx"))
BACKEND = sorted(DATA.glob("pytorch-converted/test_*")) + sorted(DATA.glob("pytorch-operator/test_*"))
RTOL, ATOL = 1e-3, 1e-4

#: The backend cases that compute in float64 end to end (they were excluded before f64 existed).
FLOAT64_CASES = {
    "test_operator_add_broadcast",
    "test_operator_add_size1_broadcast",
    "test_operator_add_size1_right_broadcast",
    "test_operator_add_size1_singleton_broadcast",
    "test_operator_addconstant",
}


def test_data_is_there() -> None:
    # the tests below run over whatever this onnx release ships (no pinned count: onnx is
    # unpinned); an empty glob would test nothing, and these cases are named elsewhere
    assert {"light_resnet50", "light_squeezenet", "light_shufflenet", "light_inception_v1"} <= {p.stem for p in LIGHT}
    assert {case.parent.name for case in BACKEND} == {"pytorch-converted", "pytorch-operator"}
    assert FLOAT64_CASES <= {case.name for case in BACKEND}


# -- helpers --------------------------------------------------------------------------


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs for ``model`` (the reference)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the light models carry unused initializers ORT warns about
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def light_input(model_path: Path) -> tuple[str, np.ndarray]:
    """The input onnx's backend runner feeds the light models: arange / size, in the input's shape."""
    model = onnx.load(model_path)
    inits = {t.name for t in model.graph.initializer}
    (vi,) = [i for i in model.graph.input if i.name not in inits]
    shape = tuple(d.dim_value or 1 for d in vi.type.tensor_type.shape.dim)
    size = int(np.prod(shape))
    return vi.name, (np.arange(size).reshape(shape) / size).astype(np.float32)


def randomized_weights(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """A copy of a light model whose ConstantOfShape weights are random initializers,
    with the softmax input (the logits) as an extra output."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept = []
    for node in out.graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        if len(shape) >= 2:  # He-scaled weights keep activations in range through deep nets
            array = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        else:  # biases, scales and batch-norm statistics: positive, around 1
            array = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        out.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
    del out.graph.node[:]
    out.graph.node.extend(kept)
    softmax = [n for n in kept if n.op_type == "Softmax"]
    if softmax:
        out.graph.output.append(helper.make_empty_tensor_value_info(softmax[-1].input[0]))
    return out


# -- light models -----------------------------------------------------------------------


@pytest.mark.parametrize("path", LIGHT, ids=lambda p: p.stem)
def test_light_model_matches_shipped_output(path: Path) -> None:
    start = time.perf_counter()
    graph = from_onnx(path)
    imported = time.perf_counter()
    graph.verify()
    assert len(graph.inputs) == 1, "initializers listed as graph inputs must become constants"
    name, x = light_input(path)
    assert graph.inputs[0].name == name
    (out,) = graph.run(x)
    expected = numpy_helper.to_array(onnx.load_tensor(str(path).replace(".onnx", "_output_0.pb")))
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    print(f"{path.stem}: import {imported - start:.2f}s, run {time.perf_counter() - imported:.2f}s")


# VGG-19 is left out here: making and serializing its 140M random weights for
# onnxruntime takes ~20 s, and AlexNet and ZFNet cover each of its layer types.
@pytest.mark.parametrize("path", [p for p in LIGHT if "vgg19" not in p.name], ids=lambda p: p.stem)
def test_light_model_with_random_weights_matches_onnxruntime(path: Path) -> None:
    model = randomized_weights(onnx.load(path), seed=0)
    graph = from_onnx(model)
    name, _ = light_input(path)
    x = np.random.default_rng(1).random(graph.inputs[0].type.shape, dtype=np.float32)
    expected = ort_run(model, {name: x})
    outputs = graph.run(x)
    assert len(outputs) == len(expected)
    for ours, ref in zip(outputs, expected):
        np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)
    assert np.ptp(expected[-1]) > 1e-2, "the logits should not be uniform"


def test_dynamic_batch_runs_at_batch_1_3_16() -> None:
    # ShuffleNet reshapes for its channel shuffle with the batch (1) baked in;
    # with dynamic_batch the reshapes must copy the symbolic batch instead.
    path = DATA / "light" / "light_shufflenet.onnx"
    model = randomized_weights(onnx.load(path), seed=2)
    graph = from_onnx(model, dynamic_batch=True)
    graph.verify()
    assert graph.inputs[0].type.shape == ("N", 3, 224, 224)
    for value in graph.values():
        if not value.is_const:
            assert value.type.shape[0] == "N", f"%{value.name}: {value.type} lost the batch dim"
    name = graph.inputs[0].name
    rng = np.random.default_rng(3)
    for batch in (1, 3, 16):
        x = rng.random((batch, 3, 224, 224), dtype=np.float32)
        probs, logits = graph.run(x)
        assert probs.shape == (batch, 1000) and logits.shape == (batch, 1000)
        for i in (0, batch - 1):  # onnxruntime runs the batch-1 model per sample
            ref_probs, ref_logits = ort_run(model, {name: x[i : i + 1]})
            np.testing.assert_allclose(logits[i : i + 1], ref_logits, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(probs[i : i + 1], ref_probs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["light_squeezenet", "light_inception_v1"])
def test_light_model_text_round_trip(name: str) -> None:
    graph = from_onnx(DATA / "light" / f"{name}.onnx", dynamic_batch=True)
    assert parse(str(graph), collect_payloads(graph)) == graph


# -- the pytorch-converted and pytorch-operator backend tests ---------------------------


def run_backend_case(case: Path) -> None:
    """Import a backend test case and compare every data set with its expected outputs."""
    graph = from_onnx(case / "model.onnx")
    graph.verify()
    assert parse(str(graph), collect_payloads(graph)) == graph  # ONNX names survive the text form
    data_sets = sorted(case.glob("test_data_set_*"))
    assert data_sets
    for data in data_sets:
        inputs = [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in sorted(data.glob("input_*.pb"))]
        expected = [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in sorted(data.glob("output_*.pb"))]
        outputs = graph.run(*inputs)
        assert len(outputs) == len(expected)
        for ours, ref in zip(outputs, expected):
            assert ours.shape == ref.shape and ours.dtype == ref.dtype
            np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", BACKEND, ids=lambda p: p.name)
def test_backend_case(case: Path) -> None:
    run_backend_case(case)


@pytest.mark.parametrize("name", sorted(FLOAT64_CASES))
def test_float64_backend_case_stays_float64(name: str) -> None:
    graph = from_onnx(DATA / "pytorch-operator" / name / "model.onnx")
    assert all(v.type.dtype is DType.float64 for v in [*graph.inputs, *graph.outputs])


def test_backend_summary(capsys: pytest.CaptureFixture) -> None:
    failed = {}
    for case in BACKEND:
        try:
            run_backend_case(case)
        except (FrontendError, AssertionError) as exc:
            failed[case.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    passed = len(BACKEND) - len(failed)
    with capsys.disabled():
        print(f"\nonnx backend: {passed}/{len(BACKEND)} passed")
    assert not failed, failed

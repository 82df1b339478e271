"""benchmarks/compare.py's pieces that need no model build: the table and its ratios, the CPU
description, and each ONNX peer run on a tiny model against numpy (skipped without the peer)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import compare


def test_table_gives_peer_over_slimgraph_ratios_and_their_geometric_means():
    rows = [
        {"model": "a", "ms": {"slimgraph": 10.0, "onnxruntime": 20.0, "openvino f32": 5.0, "openvino": 2.5}},
        {"model": "b", "ms": {"slimgraph": 4.0, "onnxruntime": 2.0, "openvino f32": 4.0}, "errors": {"openvino": "X"}},
        {"model": "c", "error": "did not finish in 10 s"},
    ]
    text = compare.table(rows, 2, ["slimgraph", "onnxruntime", "openvino f32", "openvino"], "median")
    lines = text.splitlines()
    assert "2 threads, median ms" in lines[0]
    assert lines[4] == "| a | 10.00 | 20.00 | 5.00 | 2.50 | 2.00 | 0.50 | 0.25 |"
    assert lines[5] == "| b | 4.00 | 2.00 | 4.00 | failed | 0.50 | 1.00 | - |"
    assert lines[6].startswith("| c | failed |")
    # onnxruntime: sqrt(2.0 * 0.5) = 1; openvino f32: sqrt(0.5 * 1); openvino: model a alone
    assert lines[7].endswith(f"| 1.00 (2) | {math.sqrt(0.5):.2f} (2) | 0.25 (1) |")
    assert "- c: did not finish in 10 s" in text and "- b, openvino: X" in text


def test_cpu_info_names_the_flags_that_pick_kernels():
    info = compare.cpu_info()
    assert info["cores"] >= 1 and set(info["key_flags"]) == set(compare.KEY_FLAGS)
    if "flags" in info:  # Linux
        assert info["key_flags"]["avx2"] == ("avx2" in info["flags"])


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    path = compare.onnx_file(module, None, [x], str(tmp_path_factory.mktemp("onnx")))
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    return path, x, want


@pytest.mark.parametrize("contender, package", [
    ("onnxruntime", "onnxruntime"), ("openvino f32", "openvino"), ("openvino", "openvino"),
])
def test_each_onnx_peer_reads_the_one_file_and_returns_numpy(contender, package, tiny_onnx):
    pytest.importorskip(package)
    path, x, want = tiny_onnx
    call = compare.BUILDERS[contender](None, None, [x], 1, path)
    (got,) = call()
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, rtol=1e-2 if contender == "openvino" else 1e-5, atol=1e-2)
    if contender.startswith("openvino"):
        assert call.precision in ({"f32"} if contender == "openvino f32" else {"f32", "bf16", "f16"})

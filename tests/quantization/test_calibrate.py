"""Observers and calibration: ranges on known data, the table's JSON form, errors for bad data."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.errors import SlimgraphError
from slimgraph.ir import Graph, TensorType
from slimgraph.passes.calibrate import (
    OBSERVERS,
    CalibrationError,
    CalibrationTable,
    calibrate,
    linear_params,
    make_observer,
)


def _relu_graph():
    g = Graph("r")
    x = g.add_input("x", TensorType("f32", ("N", 1000)))
    g.set_outputs([g.call("relu", x, name="y")])
    return g


def _batches(seed=0, n=4):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2, 1000)).astype(np.float32) for _ in range(n)]


def test_minmax_is_the_extremes():
    data = _batches()
    table = calibrate(_relu_graph(), data, "minmax", progress=False)
    everything = np.concatenate(data)
    assert table.ranges["x"] == (float(everything.min()), float(everything.max()))
    assert table.ranges["y"] == (0.0, float(everything.max()))
    assert table.batches == 4


def test_moving_average_weighs_the_past():
    obs = make_observer("moving-average", momentum=0.5)
    obs.update(np.array([-1.0, 1.0], np.float32))
    obs.update(np.array([-3.0, 5.0], np.float32))
    assert obs.range() == (-2.0, 3.0)


def test_percentile_clips_outliers():
    data = _batches()
    data[0][0, 0] = 1000.0
    low, high = calibrate(_relu_graph(), data, "percentile", percentile=99.9, progress=False).ranges["x"]
    assert 2.0 < high < 5.0 and -5.0 < low < -2.0


@pytest.mark.parametrize("name", ["mse", "entropy"])
def test_error_minimizing_observers_clip_a_long_tail(name):
    rng = np.random.default_rng(1)
    data = [rng.laplace(size=(2, 1000)).astype(np.float32) for _ in range(4)]
    table = calibrate(_relu_graph(), data, name, progress=False)
    low, high = table.ranges["x"]
    top = float(np.abs(np.concatenate(data)).max())
    assert 0 < high < top and -top < low < 0


def test_histogram_regrows_across_batches():
    obs = make_observer("percentile", percentile=100.0)
    obs.update(np.linspace(0, 1, 100, dtype=np.float32))
    obs.update(np.linspace(-4, 8, 100, dtype=np.float32))
    low, high = obs.range()
    assert low == pytest.approx(-4.0) and high == pytest.approx(8.0, rel=1e-3)
    assert obs.counts.sum() == 200


def test_linear_params():
    assert linear_params(0.0, 2.55, 0, 255, False) == (pytest.approx(0.01), 0)
    scale, zero = linear_params(-1.0, 1.0, -128, 127, True)
    assert (scale, zero) == (pytest.approx(1 / 127), 0)
    assert linear_params(-1.0, 1.0, 0, 255, True)[1] == 128


def test_table_round_trips_through_json(tmp_path):
    table = calibrate(_relu_graph(), _batches(), progress=False)
    table.save(tmp_path / "t.json")
    assert CalibrationTable.load(tmp_path / "t.json") == table
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CalibrationError, match="bad.json"):
        CalibrationTable.load(tmp_path / "bad.json")


def test_wrong_shape_names_the_input_and_expectation():
    bad = [np.zeros((2, 1000), np.float32), np.zeros((2, 999), np.float32)]
    with pytest.raises(CalibrationError, match=r"batch 1, input %x: got shape \[2,999\], expected f32\[N,1000\]"):
        calibrate(_relu_graph(), bad, progress=False)


def test_wrong_dtype_names_the_input_and_expectation():
    with pytest.raises(CalibrationError, match=r"batch 0, input %x: got dtype float64, expected f32"):
        calibrate(_relu_graph(), [np.zeros((2, 1000))], progress=False)


def test_bad_batches_and_observers():
    with pytest.raises(CalibrationError, match="got 2 arrays"):
        calibrate(_relu_graph(), [(np.zeros((1, 1000), np.float32),) * 2], progress=False)
    with pytest.raises(CalibrationError, match="no input named 'z'"):
        calibrate(_relu_graph(), [{"z": np.zeros((1, 1000), np.float32)}], progress=False)
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(_relu_graph(), [], progress=False)
    with pytest.raises(SlimgraphError, match="valid: " + ", ".join(OBSERVERS)):
        calibrate(_relu_graph(), _batches(), "kl-magic", progress=False)


def test_progress_bar_runs(capsys):
    table = calibrate(_relu_graph(), _batches(), progress=True)
    assert table.batches == 4

"""Per-layer sensitivity tables on the digits CNN."""

from __future__ import annotations

import numpy as np
import pytest

import slimgraph.reports
from slimgraph.errors import SlimgraphError
from slimgraph.reports import sensitivity
from slimgraph.passes.prune import Prune
from tests.compression.common import digits_graph, graph_accuracy
from tests.digits import digits_data


def test_channel_sensitivity_table():
    data = digits_data()
    table = sensitivity(digits_graph(), data.x_test, labels=data.y_test, ratios=(0.25, 0.5, 0.75))
    print(table)
    assert table.baseline == pytest.approx(graph_accuracy(digits_graph()))
    assert [r.layer for r in table.rows] == ["features.0.weight", "features.3.weight", "features.7.weight"]
    assert [r.size for r in table.rows] == [16, 32, 32]
    for row in table.rows:
        assert len(row.drops) == 3
        # pruning one layer alone at a ratio is exactly what the table measures
    pruned = Prune(method="channel", ratio=0.0, overrides=("features.3.weight:0.5",))(digits_graph())
    assert table.rows[1].drops[1] == pytest.approx(table.baseline - graph_accuracy(pruned))
    assert max(table.rows[0].drops) > 1.0  # the first layer is the sensitive one here
    assert "| features.7.weight | 32 |" in str(table)


def test_suggested_ratios_keep_the_drop_small():
    data = digits_data()
    table = sensitivity(digits_graph(), data.x_test, labels=data.y_test, ratios=(0.25, 0.5))
    overrides = table.suggest(max_drop=1.0)
    assert len(overrides) == 3
    for row, item in zip(table.rows, overrides):
        ratio = float(item.rsplit(":", 1)[1])
        assert ratio == 0.0 or row.drops[table.ratios.index(ratio)] <= 1.0
    pruned = Prune(method="channel", ratio=0.0, overrides=overrides)(digits_graph())
    assert table.baseline - graph_accuracy(pruned) <= 2.0


def test_magnitude_sensitivity_by_agreement():
    table = sensitivity(digits_graph(), digits_data().x_test, method="magnitude", ratios=(0.5, 0.9))
    assert table.metric == "top-1 agreement" and table.baseline == 100.0
    assert len(table.rows) == 4
    assert all(r.drops[1] >= r.drops[0] - 0.5 for r in table.rows)


def test_bad_arguments():
    x = digits_data().x_test
    with pytest.raises(SlimgraphError, match="method"):
        sensitivity(digits_graph(), x, method="random")
    with pytest.raises(SlimgraphError, match="must lie in"):
        sensitivity(digits_graph(), x, ratios=(0.5, 1.5))
    with pytest.raises(SlimgraphError, match="labels"):
        sensitivity(digits_graph(), x, labels=np.zeros(3, np.int64))


def test_package_exports_the_function():
    assert callable(slimgraph.reports.sensitivity)

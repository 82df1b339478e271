"""The compression ledger on the digits CNN: rows, figures checked against separate
measurements (latency on a fake clock that counts kernels), caching, warnings for a planted
pass that adds work, JSON and the chart."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

from slimgraph.analysis.size_report import size_report
from slimgraph.api import bind_shapes, import_model
from slimgraph.backends.tvm import CompiledModel, build
from slimgraph.ledger import Ledger, LedgerError, LedgerRow, ledger, load_data
from slimgraph.ledger.record import encodings
from slimgraph.passes import PassContext, PassManager, graph_stats, register_pass, registered_passes
from slimgraph.passes.pipeline import parse_pipeline
from slimgraph.passes.registry import Pass, option
from slimgraph.timing import TickClock
from tests.digits import digits_data, trained_digits_cnn

BATCH = 64
RUNS = dict(runs=20, warmup=3)


if "split-convs" not in registered_passes():

    @register_pass("split-convs")
    class SplitConvs(Pass):
        """Test-only: compute every conv as ``parts`` slices of its output channels, then concat."""

        parts: int = option(2, "slices per conv")

        def apply(self, graph):
            for node in [n for n in graph.nodes if n.op == "conv" and n.inputs[1].is_const]:
                w = node.inputs[1].const_value
                b = node.inputs[2].const_value if len(node.inputs) > 2 else None
                cut = np.array_split(np.arange(w.shape[0]), self.parts)
                with graph.inserting_before(node):
                    pieces = [
                        graph.call("conv", node.inputs[0], graph.const(w[idx]),
                                   *([graph.const(b[idx])] if b is not None else []), **node.attrs)
                        for idx in cut
                    ]
                    joined = graph.call("concat", *pieces, axis=1)
                graph.replace_all_uses(node.output, joined)
                graph.remove_node(node)
                for old in node.inputs[1:]:
                    if not old.users:
                        graph.remove_node(old.producer)
            return graph


@pytest.fixture(scope="module")
def digits():
    model = trained_digits_cnn()
    data = digits_data()
    example = (data.x_test[:BATCH],)
    graph = import_model(model, tuple(torch.from_numpy(x) for x in example))
    return graph, example, data


def _check_against_separate(book, graph, steps, example, data, calibration=None):
    """Each row against the same intermediate model built and measured on its own:
    sizes and accuracy exactly, latency within the noise the harness reports."""
    assert [r.step for r in book.rows] == ["(input)"] + steps
    float_logits = None
    for row, step in zip(book.rows, [None] + steps):
        if step is not None:
            graph = PassManager(parse_pipeline(step)).run(graph, PassContext(calibration_data=calibration))
        model = build(graph, "llvm", bind_shapes(graph, example, None))
        logits = np.concatenate([
            model(np.concatenate([c, np.repeat(c[-1:], BATCH - len(c), axis=0)]))[: len(c)]
            for c in (data.x_test[i : i + BATCH] for i in range(0, len(data.x_test), BATCH))
        ])
        float_logits = logits if float_logits is None else float_logits
        stats, sizes = graph_stats(graph), size_report(graph)
        assert (row.nodes, row.parameters, row.weight_bytes, row.flops) == (
            stats.nodes, sizes.parameters, sizes.weight_bytes, stats.flops)
        assert row.encodings == encodings(sizes) and sum(row.encodings.values()) == row.weight_bytes
        assert row.metric == float((logits.argmax(1) == data.y_test).mean() * 100)
        assert row.agreement == float((logits.argmax(1) == float_logits.argmax(1)).mean() * 100)
        assert row.max_error == pytest.approx(float(np.abs(logits - float_logits).max()), abs=1e-6)
        assert row.mean_error == pytest.approx(float(np.abs(logits - float_logits).mean()), rel=1e-5, abs=1e-7)
        # timed on the kernel-counting clock: the row timed this step's model, not another
        assert row.median_ms == pytest.approx(len(model.kernels)) and row.runs == RUNS["runs"]
        assert row.noise_ms == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(autouse=True)
def kernel_clock(monkeypatch):
    """Every benchmark runs on a fake clock under which a call of a compiled model takes one
    millisecond per kernel it launches: the ledger's latencies (and the warning for a pass that
    adds work) become exact counts, checked without timing anything on a shared machine."""
    real = CompiledModel.benchmark

    def counted(self, *args, **kwargs):
        return real(self, *args, clock=TickClock(tick=len(self.kernels) * 1e-3), **kwargs)

    monkeypatch.setattr(CompiledModel, "benchmark", counted)
    # the package re-exports a function named ``record``: patch the module itself
    monkeypatch.setattr(importlib.import_module("slimgraph.ledger.record"), "WARMUP_S", 0.0)


def test_rows_match_separate_measurements(digits, tmp_path):
    graph, example, data = digits
    pipeline = ["fold-constants", "split-convs{parts=4}", "dce", "fuse"]
    book = ledger(graph, example, ",".join(pipeline), eval_data=(data.x_test, data.y_test), **RUNS)
    _check_against_separate(book, graph, pipeline, example, data)
    assert book.rows[0].metric > 90
    # dce changes nothing here: the compiled model and its figures are reused
    assert book.rows[3].cached and book.rows[3].compile_seconds == 0.0
    assert book.rows[3].median_ms == book.rows[2].median_ms
    assert not any(r.cached for r in book.rows[:3]) and not book.rows[4].cached

    # the planted pass adds work without changing results or bytes: flagged, by name, with figures
    split = book.rows[2]
    assert split.agreement == 100.0 and split.max_error == book.rows[1].max_error
    assert split.weight_bytes == book.rows[1].weight_bytes and split.flops >= book.rows[1].flops
    flagged = {w.step: w.message for w in book.warnings if w.kind == "slower"}
    assert "split-convs{parts=4}" in flagged, str(book)
    assert f"{book.rows[1].median_ms:.3f} -> {split.median_ms:.3f} ms median (+" in flagged["split-convs{parts=4}"]

    text = str(book)
    assert len(text.splitlines()) == 2 + 1 + len(book.rows) + len(book.warnings)
    assert "warning: pass 2 (split-convs{parts=4})" in text

    saved = json.loads(book.save_json(tmp_path / "l.json").read_text())
    assert [r["weight_bytes"] for r in saved["rows"]] == [r.weight_bytes for r in book.rows]
    assert "split-convs{parts=4}" in [w["step"] for w in saved["warnings"]]
    png = book.save_chart(tmp_path / "l.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_compression_pipeline(digits):
    graph, example, data = digits
    steps = ["fold-constants", "prune{method=channel,ratio=0.5}", "share-weights", "quantize", "fuse"]
    calibration = [(data.x_train[i : i + BATCH],) for i in range(0, 4 * BATCH, BATCH)]
    book = ledger(graph, example, ",".join(steps), eval_data=(data.x_test, data.y_test),
                  calibration_data=calibration, **RUNS)
    for row in book.rows:
        assert None not in (row.metric, row.agreement, row.max_error, row.mean_error) and row.median_ms > 0
    assert book.rows[-1].weight_bytes < book.rows[0].weight_bytes / 10
    assert book.rows[2].flops < book.rows[1].flops / 2
    _check_against_separate(book, graph, steps, example, data, calibration)


def test_groups_and_no_labels(digits):
    graph, example, data = digits
    book = ledger(graph, example, "fold-constants,dce;fuse", eval_data=data.x_test[:100], **RUNS)
    assert [r.step for r in book.rows] == ["(input)", "fold-constants,dce", "fuse"]
    assert all(r.metric is None for r in book.rows)
    assert book.rows[0].agreement == 100.0 and book.rows[0].max_error == 0.0
    assert all(r.agreement == 100.0 and r.max_error < 1e-4 for r in book.rows)
    assert "agree %" in book.table() and "accuracy" not in book.table()


def test_accuracy_warning_names_the_pass():
    row = lambda i, step, acc: LedgerRow(i, step, 5, 100, 400, {"dense f32": 400}, 1000, 1.0, 1.1, 10, metric=acc)
    book = Ledger("m", "llvm", "a,b", [row(0, "(input)", 97.0), row(1, "a", 96.5), row(2, "b", 93.0)], max_metric_drop=1.0)
    assert [(w.step, w.kind) for w in book.warnings] == [("b", "metric")]
    assert "costs 3.50 points of accuracy (96.50 -> 93.00)" in book.warnings[0].message


def test_bad_data_is_a_user_error(tmp_path, digits):
    graph, example, data = digits
    with pytest.raises(LedgerError, match="6 examples but 5 labels"):
        ledger(graph, example, "dce", eval_data=(data.x_test[:6], data.y_test[:5]))
    with pytest.raises(LedgerError, match="group 2 .* is empty"):
        ledger(graph, example, "dce;;fuse")
    np.savez(tmp_path / "d.npz", images=data.x_test)
    with pytest.raises(LedgerError, match="no 'x' array \\(found: images\\)"):
        load_data(tmp_path / "d.npz")


def test_cli(digits, tmp_path, capsys):
    from slimgraph import cli

    graph, example, data = digits
    graph.save(tmp_path / "digits.sg")
    np.savez(tmp_path / "d.npz", x=data.x_test[:200], y=data.y_test[:200], calib=data.x_train[:128])
    code = cli.main([
        "ledger", str(tmp_path / "digits.sg"), "--pipeline", "fold-constants,quantize,fuse", "--data",
        str(tmp_path / "d.npz"), "--runs", "5", "--warmup", "1", "--json", str(tmp_path / "l.json"),
        "--png", str(tmp_path / "l.png"),
    ])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = json.loads((tmp_path / "l.json").read_text())["rows"]
    assert [r["step"] for r in rows] == ["(input)", "fold-constants", "quantize", "fuse"]
    assert all(r["metric"] is not None for r in rows) and rows[2]["weight_bytes"] < rows[1]["weight_bytes"] / 3
    assert "quantize" in out.out and "ledger @" in out.err and (tmp_path / "l.png").stat().st_size > 10_000
    assert cli.main(["ledger", str(tmp_path / "digits.sg"), "--data", str(tmp_path / "none.npz")]) == 2
    assert "cannot read data file" in capsys.readouterr().err

"""The pass manager and its instruments; passes never change their input graph."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.errors import SlimgraphError
from slimgraph.timing import TickClock
from slimgraph.ir import Graph, TensorType, load
from slimgraph.passes import (
    DumpInstrument,
    NumericsError,
    NumericsInstrument,
    Pass,
    PassFailedError,
    PassManager,
    StatsInstrument,
    TimingInstrument,
    VerifyInstrument,
    parse_pipeline,
    register_pass,
    registered_passes,
    run_pipeline,
)
from slimgraph.passes import registry as registry_module
from tests.ir.graphs import GRAPHS

RNG = np.random.default_rng(11)


@pytest.fixture
def scratch_registry():
    with registry_module.PASSES.scoped():
        yield


def cnn() -> Graph:
    """conv -> batch_norm -> relu -> conv (+ residual) -> relu, with a big weight for the sidecar."""
    g = Graph("cnn")
    x = g.add_input("x", TensorType("f32", ("N", 8, 6, 6)))
    w1 = g.const(RNG.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, name="conv1.weight")
    bn = [g.const(RNG.uniform(0.5, 1.5, 8).astype(np.float32), name=f"bn1.{k}") for k in ("w", "b", "m", "v")]
    y = g.call("relu", g.call("batch_norm", g.call("conv", x, w1, pads=(1, 1, 1, 1)), *bn))
    y = g.call("mul", y, g.const(np.float32(1)))
    w2 = g.const(RNG.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.2, name="conv2.weight")
    y = g.call("relu", g.call("add", g.call("conv", y, w2), x))
    g.set_outputs([y])
    return g


def snapshot(graph: Graph):
    """Everything a pass could change in place: text, node and value identity, users, constants."""
    return (
        str(graph),
        [id(n) for n in graph.nodes],
        [(id(v), [id(u) for u in v.users]) for v in graph.values()],
        [id(v) for v in graph.outputs],
        {k: a.tobytes() for k, a in graph.consts().items()},
    )


@pytest.mark.parametrize("name", sorted(set(registered_passes()) & {"canonicalize", "cse", "dce", "fold-constants", "fuse"}))
@pytest.mark.parametrize("graph_name", ["cnn"] + sorted(GRAPHS))
def test_running_a_pass_never_changes_its_input(name, graph_name):
    g = cnn() if graph_name == "cnn" else GRAPHS[graph_name]()
    before = snapshot(g)
    (pass_,) = parse_pipeline(name)
    out = pass_(g)
    assert out is not g
    assert snapshot(g) == before
    g.verify()


def test_verify_instrument_names_the_pass_that_broke_the_graph(scratch_registry):
    @register_pass("scramble-example")
    class Scramble(Pass):
        """Reverse the node order (breaks topological order)."""

        def apply(self, graph):
            graph.nodes.reverse()

    manager = PassManager("dce,scramble-example,cse", [VerifyInstrument()])
    with pytest.raises(PassFailedError, match="pass #2 'scramble-example': left an invalid graph") as info:
        manager.run(cnn())
    assert info.value.pass_name == "scramble-example" and info.value.index == 2
    assert isinstance(info.value, SlimgraphError)


def test_errors_inside_a_pass_name_the_pass(scratch_registry):
    @register_pass("explode-example")
    def explode(graph):
        """Fails."""
        graph.value("no-such-value")

    @register_pass("forgetful-example")
    class Forgetful(Pass):
        """Returns the wrong thing."""

        def apply(self, graph):
            return 42

    with pytest.raises(PassFailedError, match="pass #1 'explode-example': graph @cnn has no value %no-such-value"):
        PassManager("explode-example").run(cnn())
    with pytest.raises(PassFailedError, match="'forgetful-example': returned int, not a Graph"):
        PassManager("forgetful-example").run(cnn())


def test_timing_and_stats_instruments_fill_the_records():
    manager = PassManager("canonicalize,fold-constants,fuse", [StatsInstrument(), TimingInstrument(TickClock(tick=0.25))])
    out = manager.run(cnn())
    records = manager.records
    assert [r.name for r in records] == ["canonicalize", "fold-constants", "fuse"]
    assert [r.seconds for r in records] == [0.25, 0.25, 0.25]  # one tick between each pass's two reads
    assert [(r.before.nodes, r.after.nodes) for r in records] == [(7, 6), (6, 5), (5, 2)]
    assert records[1].before.parameters - records[1].after.parameters == 4 * 8 - 8  # bn params became a bias
    assert records[2].after.regions == 2 and records[2].after.flops == records[2].before.flops
    assert records[0].before.diff(records[2].after).nodes == 2 - 7
    assert len(out.nodes) - sum(n.op == "const" for n in out.nodes) == 2


def test_dump_instrument_writes_numbered_files_that_load_back(tmp_path):
    (tmp_path / "07-stale.sg").write_text("old")
    (tmp_path / "keep.txt").write_text("mine")
    g = cnn()
    out = PassManager("fold-constants,fuse", [DumpInstrument(tmp_path)]).run(g)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "00-input.sg", "00-input.sg.weights", "01-fold-constants.sg", "01-fold-constants.sg.weights",
        "02-fuse.sg", "02-fuse.sg.weights", "keep.txt",
    ]
    assert "@conv1.weight" in (tmp_path / "00-input.sg").read_text()  # large constants live in the sidecar
    assert load(tmp_path / "00-input.sg") == g
    assert load(tmp_path / "02-fuse.sg") == out


def test_numerics_instrument_names_the_first_pass_that_changed_the_result(scratch_registry):
    @register_pass("perturb-example")
    class Perturb(Pass):
        """Scale the first output."""

        factor: float = 1.01

        def apply(self, graph):
            (out,) = graph.outputs
            graph.set_outputs([graph.call("mul", out, graph.const(np.float32(self.factor)))])

    x = RNG.standard_normal((2, 8, 6, 6)).astype(np.float32)
    with pytest.raises(NumericsError) as info:
        PassManager("canonicalize,perturb-example,fuse", [NumericsInstrument({"x": x}, rtol=1e-4)]).run(cnn())
    assert info.value.pass_name == "perturb-example" and info.value.index == 2
    assert "pass #2 'perturb-example' changed output" in str(info.value) and info.value.max_error > 0
    manager = PassManager("canonicalize,perturb-example{factor=1.00000001},fuse", [NumericsInstrument([x])])
    manager.run(cnn())
    assert all(r.max_error is not None and r.max_error <= 1e-5 for r in manager.records)


def test_run_pipeline_reports_a_table(tmp_path):
    g = cnn()
    out, report = run_pipeline(g, "default", stats=True, dump_dir=tmp_path, sample_inputs="random")
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["#", "pass", "nodes"] and "ms" in lines[0] and "max |err|" in lines[0]
    assert lines[2].split()[:3] == ["0", "(input)", "7"]
    assert [line.split()[1] for line in lines[3:9]] == ["canonicalize", "fold-constants", "cse", "dce", "merge-linears",
                                                       "fuse"]
    assert lines[-1].split()[0] == "total"
    assert report.pipeline == "canonicalize,fold-constants,cse,dce,merge-linears,fuse"
    assert report.total_seconds == pytest.approx(sum(r.seconds for r in report.records))
    assert (tmp_path / "06-fuse.sg").exists()
    _, plain = run_pipeline(g, "dce")
    assert str(plain).splitlines()[0].split() == ["#", "pass", "ms"]

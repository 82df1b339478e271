"""compile(..., remote=...): a TVM RPC server (and tracker) on 127.0.0.1 in subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.api import compile  # noqa: E402
from slimgraph.backends.tvm.remote import RemoteError, RemoteModel, parse_remote  # noqa: E402
from slimgraph.demo import demo_inputs, demo_model  # noqa: E402
from slimgraph.errors import ArgumentError, SlimgraphError  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(*args: str, port: int) -> subprocess.Popen:
    """A TVM RPC process in its own process group (a server forks a child per session), listening on ``port``."""
    proc = subprocess.Popen([sys.executable, "-m", *args, "--host", "127.0.0.1", "--port", str(port),
                             "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120  # importing TVM takes seconds on a loaded machine
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
            time.sleep(0.3)
    _stop(proc)
    raise RuntimeError(f"{args[0]} did not listen on {port} within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture()
def server():
    port = _free_port()
    proc = _start("tvm.exec.rpc_server", port=port)
    yield proc, f"127.0.0.1:{port}"
    _stop(proc)


@pytest.fixture()
def tracker():
    """A tracker and one server registered to it under a key: yields the key and the tracker's address."""
    pytest.importorskip("tornado")  # TVM's tracker runs on it
    from tvm import rpc

    port, key = _free_port(), "slimgraph-test"
    procs = [_start("tvm.exec.rpc_tracker", port=port)]
    try:
        procs.append(_start("tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", key,
                            port=_free_port()))
        deadline = time.monotonic() + 60  # the server registers after it listens
        while not any(s["key"] == f"server:{key}"
                      for s in rpc.connect_tracker("127.0.0.1", port).summary()["server_info"]):
            assert time.monotonic() < deadline, f"no server registered under {key!r} within 60 s"
            time.sleep(0.3)
        yield key, f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_tracker_hands_out_its_board_and_a_bad_key_is_a_clear_error(tracker, monkeypatch):
    from slimgraph.backends.tvm import remote

    key, address = tracker
    # a hang on the bad key becomes a 'no answer within 20 s' error, which the match below refuses
    monkeypatch.setattr(remote, "CALL_TIMEOUT", 20.0)
    graph = demo_model()
    (x,) = demo_inputs(batch=2)
    model = compile(graph, (x,), remote=f"{key}@{address}")
    assert isinstance(model, RemoteModel) and f"{key}@{address}" in repr(model)
    np.testing.assert_allclose(model(x), compile(graph, (x,))(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(RemoteError, match=f"no-such-board@{address}.*no board registered under 'no-such-board'"):
        compile(graph, (x,), remote=f"no-such-board@{address}")


def test_remote_round_trip_runs_and_benchmarks_on_the_server(server, tmp_path):
    _, address = server
    graph = demo_model()
    (x,) = demo_inputs(batch=2)
    model = compile(graph, (x,), remote=address)
    assert isinstance(model, RemoteModel) and address in repr(model)
    np.testing.assert_allclose(model(x), compile(graph, (x,))(x), rtol=1e-5, atol=1e-6)
    result = model.benchmark(warmup=1, runs=2, kernel_repeat=2)
    assert {n for k in result.kernels for n in k.nodes} == {k.name for k in model.kernels} and result.median_ms > 0
    model.save(tmp_path / "m")  # the library built here
    from slimgraph.backends.tvm import load_compiled

    np.testing.assert_allclose(load_compiled(tmp_path / "m")(x), model(x), rtol=1e-6)


def test_killing_the_server_mid_call_is_a_clear_error_not_a_hang(server):
    proc, address = server
    model = compile(demo_model(), demo_inputs(), remote=address)
    model.timeout = 60.0
    killer = threading.Timer(2.0, _stop, args=(proc,))
    killer.start()
    try:
        # the failed call, not the time limit ("no answer within 60 s"), ends the benchmark
        with pytest.raises(RemoteError, match=f"on {address}.*the RPC call failed"):
            model.benchmark(warmup=0, runs=10**7, kernel_repeat=1)  # far longer than the 2 s before the kill
    finally:
        killer.join()
    with pytest.raises(RemoteError):
        model(*demo_inputs())


def test_a_server_that_is_not_there_is_a_remote_error():
    with pytest.raises(RemoteError, match="connect to 127.0.0.1"):
        compile(demo_model(), remote=f"127.0.0.1:{_free_port()}")


@pytest.mark.parametrize("text", ["nohost", "host:port", "host:0", "@host:9090", 9090])
def test_bad_remote_text_is_refused_before_the_build(text):
    with pytest.raises(SlimgraphError, match="remote="):
        compile(demo_model(), remote=text)


def test_remote_with_variants_is_refused():
    with pytest.raises(ArgumentError, match="variants"):
        compile(demo_model(), demo_inputs(), remote="127.0.0.1:9090", variants=[1.0, 0.5])


def test_parse_remote_forms():
    assert parse_remote("10.0.0.2:9090").key is None
    assert str(parse_remote("rk3588@tracker:9190")) == "rk3588@tracker:9190"


@pytest.mark.slow
def test_tuning_measures_through_the_rpc_runner(server, tmp_path):
    from slimgraph.backends.tvm.tune import database_files
    from slimgraph.ir import Graph, TensorType

    _, address = server
    g = Graph("tiny")
    x = g.add_input("x", TensorType("f32", (8, 16)))
    weight = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    g.set_outputs([g.call("relu", g.call("linear", x, g.const(weight)))])
    model = compile(g, tune=2, database=str(tmp_path), remote=address)
    assert database_files(tmp_path), "the RPC runner measured no candidate"
    records = (tmp_path / "database_tuning_record.json").read_text().splitlines()
    assert records and all("1e+10" not in r for r in records)  # MetaSchedule's cost for a failed run
    feed = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    np.testing.assert_allclose(model(feed), np.maximum(feed @ weight.T, 0), rtol=1e-5, atol=1e-5)

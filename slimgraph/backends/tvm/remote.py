"""Remote devices through TVM's RPC: build here, upload, run and benchmark on an RPC server.

``slimgraph.compile(model, inputs, target="llvm:cortex-a72", remote="host:port")``
builds for the target on this machine, uploads the library to the TVM RPC
server (``python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090`` on the
board) and returns a :class:`RemoteModel`: the :class:`CompiledModel` API
(numpy or torch in, numpy or torch out, ``benchmark()`` with per-kernel
times measured on the board, ``save`` of the library built here) with every
call running there. ``remote="key@host:port"`` asks a TVM RPC tracker for a
board registered under ``key`` instead (the tracker needs the ``tornado``
package). With ``tune=TRIALS`` MetaSchedule measures its candidates through
its RPC runner: on the one server, or spread over the tracker's boards.

Every remote call has a time limit (:data:`CALL_TIMEOUT` seconds, or
``model.timeout``): a server that dies or stops answering mid-call is a
:class:`RemoteError` naming the server, never a hang.

Example::

    >>> parse_remote("127.0.0.1:9090")
    Remote(host='127.0.0.1', port=9090, key=None)
    >>> parse_remote("rasp4@tracker.lan:9190").key
    'rasp4'
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from slimgraph.backends.tvm.compiled import CompiledModel, _flatten, _is_torch
from slimgraph.errors import BackendError

#: Seconds any one remote call (upload, run, benchmark) may take before it is a RemoteError.
CALL_TIMEOUT = 300.0
#: Seconds a tracker is asked again for a board that just dropped out of its summary (re-registering).
REGISTER_GRACE = 5.0


class RemoteError(BackendError):
    """The RPC server could not be reached, or failed, died or stopped answering during a call."""


@dataclass(frozen=True)
class Remote:
    """An RPC endpoint: a server at ``host:port``, or with ``key`` a tracker at ``host:port``."""

    host: str
    port: int
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.key}@{self.host}:{self.port}" if self.key else f"{self.host}:{self.port}"

    def connect(self, timeout: float):
        """An RPC session (the server ends it after ``timeout`` seconds without a call finishing)."""
        from tvm import rpc

        def open_session():
            if self.key is None:
                return rpc.connect(self.host, self.port, session_timeout=0)
            tracker = rpc.connect_tracker(self.host, self.port)
            self._require_board(tracker)
            return tracker.request(self.key, session_timeout=0)

        return guarded(open_session, timeout, f"connect to {self}")

    def check(self, timeout: float) -> None:
        """For a tracker, RemoteError unless a board is registered under ``key``; a server is not asked.

        Run before the build, so a wrong key fails in a second rather than after the build and tuning."""
        if self.key is not None:
            from tvm import rpc

            guarded(lambda: self._require_board(rpc.connect_tracker(self.host, self.port)), timeout,
                    f"ask the tracker at {self}")

    def _require_board(self, tracker) -> None:
        # the tracker queues a request for a key no board has until one registers: a silent wait.
        # A registered board drops out of the summary for a moment while it registers again (after
        # a session, or when its registration goes unmatched), so the key is looked for a few times
        # over REGISTER_GRACE seconds before it counts as missing
        deadline = time.monotonic() + REGISTER_GRACE
        while True:
            keys = set()
            for server in tracker.summary()["server_info"]:
                name = server["key"].removeprefix("server:")
                # an RPC proxy registers as 'proxy[key1,key2]'
                keys.update(name[len("proxy["):-1].split(",") if name.startswith("proxy[") else [name])
            if self.key in keys or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if self.key not in keys:
            raise RemoteError(f"remote={self}: the tracker has no board registered under {self.key!r} "
                              f"(it has: {', '.join(sorted(keys)) or 'none'})")

    def runner(self, timeout: float):
        """MetaSchedule's RPC runner: measurements on the tracker's boards, or on the one server."""
        from tvm.s_tir import meta_schedule as ms

        config = ms.runner.RPCConfig(tracker_host=self.host, tracker_port=self.port,
                                     tracker_key=self.key or "(a server, not a tracker)",
                                     session_timeout_sec=int(timeout))
        if self.key is not None:
            return ms.runner.RPCRunner(rpc_config=config)
        host, port = self.host, self.port

        def connect_server(rpc_config):  # a closure: pickled by value into MetaSchedule's worker processes
            from tvm import rpc

            return rpc.connect(host, port, session_timeout=rpc_config.session_timeout_sec)

        return ms.runner.RPCRunner(rpc_config=config, f_create_session=connect_server)


def parse_remote(text: str) -> Remote:
    """``host:port`` (an RPC server) or ``key@host:port`` (a tracker and a device key)."""
    if not isinstance(text, str) or ":" not in text:
        raise RemoteError(f"remote={text!r}: give 'host:port' of a TVM RPC server or 'key@host:port' of a tracker")
    key, _, address = text.strip().rpartition("@")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or (("@" in text) and not key):
        raise RemoteError(f"remote={text!r}: give 'host:port' of a TVM RPC server or 'key@host:port' of a tracker "
                          "(a port is a number from 1 to 65535)")
    return Remote(host, int(port), key or None)


def guarded(call: Callable[[], Any], timeout: float, what: str):
    """``call()`` in a worker thread: its result, or RemoteError when it fails or outlasts ``timeout``.

    TVM's RPC client blocks in C++ without a timeout of its own, so a server that stops
    answering would hang the caller; the worker is left behind on its dead socket instead."""
    box: dict[str, Any] = {}

    def work():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=work, daemon=True, name=f"slimgraph-rpc: {what}")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise RemoteError(f"{what}: no answer within {timeout:g} s (the server died or is stuck)")
    error = box.get("error")
    if error is not None:
        if isinstance(error, BackendError):
            raise error
        first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise RemoteError(f"{what}: the RPC call failed: {first[:300]}") from error
    return box["value"]


class RemoteModel(CompiledModel):
    """A compiled model whose calls run on an RPC server. See the module docstring."""

    def __init__(self, compiled: CompiledModel, remote: Remote, timeout: float = CALL_TIMEOUT):
        super().__init__(compiled._exec, compiled._meta, compiled._params_np, compiled.ir, compiled.target,
                         library=compiled._library_bytes)
        if compiled._exec is None or compiled._library_bytes is not None:
            raise RemoteError(f"remote={remote}: only a model built in this process can be uploaded")
        if compiled._uses_amx:  # TVM's RPC server never asks Linux for tile data: its first tile op kills it
            raise RemoteError(f"remote={remote}: the model's kernels use AMX tiles (precision='bf16' on an AMX CPU), "
                              "which a TVM RPC server cannot run; compile with precision='fp32' or for a target "
                              "without AMX, e.g. llvm:cooperlake")
        self.remote = remote
        self.timeout = timeout
        self._session = None
        self._remote_lock = threading.Lock()
        self._upload()

    def __repr__(self) -> str:
        return super().__repr__().replace(f"on {self.target.text}:", f"on {self.target.text} at {self.remote}:")

    thread_safe = False  # one RPC session serves one call at a time

    def _upload(self) -> None:
        from tvm import relax

        with tempfile.TemporaryDirectory() as folder:
            paths = {name: os.path.join(folder, name) for name in ("model.so", "kernels.so")}
            self._exec.export_library(paths["model.so"])
            # the kernels alone, for per-kernel timing: RPC's timer looks functions up in one module
            self._exec.mod.imports[0].export_library(paths["kernels.so"])
            session = self.remote.connect(self.timeout)

            def upload():
                for path in paths.values():
                    session.upload(path)
                dev = self._remote_device(session)
                lib = session.load_module("model.so")
                return dev, relax.VirtualMachine(lib, dev), session.load_module("kernels.so")

            self._dev, self._vm, self._kernels_lib = guarded(upload, self.timeout, f"upload to {self.remote}")
        self._session = session
        self._params_dev = guarded(lambda: [self._tensor(a) for _, a in self._params_np], self.timeout,
                                   f"upload the weights to {self.remote}")

    def _remote_device(self, session):
        return session.device(int(self.target.tvm().get_target_device_type()), 0)

    def _tensor(self, array: np.ndarray):
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(array), self._dev)

    def _device(self):
        return self._dev

    def _device_tensor(self, array: np.ndarray, dev, share: bool = True):
        return self._tensor(array)

    def _ensure_vm(self):
        self._local.main = self._vm["main"]
        return self._vm

    def _library(self):
        return self._kernels_lib

    def __call__(self, *inputs: Any, threads: int | None = None):
        """Run the model on the server: numpy in, numpy out; torch in, torch (on the CPU) out."""
        if threads is not None:
            raise BackendError(f"threads={threads}: the server's TVM sizes its own thread pool")
        as_torch = any(_is_torch(x) for x in inputs)
        host = [x.detach().cpu().numpy() if _is_torch(x) else x for x in inputs]

        def run():
            args = self._convert_inputs(host)
            return [o.numpy() for o in _flatten(self._vm["main"](*args, *self._params_dev))]

        with self._remote_lock:
            outs = guarded(run, self.timeout, f"run @{self._meta['name']} on {self.remote}")
        if as_torch:
            import torch

            outs = [torch.from_numpy(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def benchmark(self, *inputs: Any, warmup: int = 5, runs: int = 30, kernel_repeat: int = 10):
        """As :meth:`CompiledModel.benchmark`, measured on the server."""
        host = [x.detach().cpu().numpy() if _is_torch(x) else x for x in inputs]
        with self._remote_lock:
            return guarded(lambda: CompiledModel.benchmark(self, *host, warmup=warmup, runs=runs,
                                                           kernel_repeat=kernel_repeat),
                           self.timeout, f"benchmark @{self._meta['name']} on {self.remote}")

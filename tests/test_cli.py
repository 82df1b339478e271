"""The slimgraph command: help, demo, dump, passes, opt, and its error contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from slimgraph.cli import main
from slimgraph.ir import load

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def test_help_runs_as_a_console_script() -> None:
    out = subprocess.run([sys.executable, "-m", "slimgraph.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "dump", "passes", "opt", "compile", "bench"):
        assert command in out.stdout


def test_demo_runs_end_to_end(capsys) -> None:
    assert main(["demo", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("graph @demo_cnn(%x: f32[N,3,32,32]) -> (f32[N,10]) {")
    for step in ("fold-constants", "fuse", "weight bytes", "max |compiled - interpreter|", "GFLOP/s"):
        assert step in out
    error = float(out.split("max |compiled - interpreter| = ")[1].split(";")[0])
    assert error < 1e-5


def test_dump_onnx_to_file_round_trips(tmp_path, capsys) -> None:
    target = tmp_path / "squeezenet.sg"
    assert main(["dump", str(LIGHT / "light_squeezenet.onnx"), "-o", str(target)]) == 0
    graph = load(target)
    graph.verify()
    assert any(n.op == "conv" for n in graph.nodes)
    assert main(["dump", str(target)]) == 0
    assert capsys.readouterr().out.startswith("graph @")


def test_passes_lists_every_pass_and_option(capsys) -> None:
    from slimgraph.passes import registered_passes

    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name, info in registered_passes().items():
        assert name in out and info.doc in out
        for opt in info.options:
            assert opt.name in out
    assert "default = " in out


def test_opt_writes_dumps_and_stats(tmp_path, capsys) -> None:
    dump_dir = tmp_path / "dumps"
    out_file = tmp_path / "demo.opt.sg"
    assert main(["opt", "demo", "--pipeline", "fold-constants,fuse", "--dump-dir", str(dump_dir),
                 "--stats", "--check-numerics", "-o", str(out_file)]) == 0
    report = capsys.readouterr().err
    assert "fold-constants" in report and "weight bytes" in report
    assert sorted(os.listdir(dump_dir))[:3] == ["00-input.sg", "00-input.sg.weights", "01-fold-constants.sg"]
    optimized = load(out_file)
    assert any(n.op == "fused" for n in optimized.nodes)
    assert not any(n.op == "batch_norm" for n in optimized.nodes)


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["opt", "demo", "--pipeline", "fuse{max-opz=3}"], "unknown option 'max-opz' for pass 'fuse'"),
        (["opt", "demo", "--pipeline", "frobnicate"], "unknown pass 'frobnicate'"),
        (["dump", "missing.onnx"], "missing.onnx"),
        (["dump", "nonsense"], "is not 'demo', a .sg or .onnx file"),
    ],
)
def test_user_errors_exit_2_with_one_message(argv, fragment, capsys, tmp_path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimgraph: error: ") and fragment in err
    assert "Traceback" not in err


def test_compile_then_bench_the_saved_folder(tmp_path, capsys) -> None:
    out_dir = tmp_path / "compiled"
    ir_file = tmp_path / "demo.sg"
    assert main(["compile", "demo", "--dump-ir", str(ir_file), "-o", str(out_dir)]) == 0
    assert load(ir_file).find_nodes("fused")
    assert main(["bench", str(out_dir), "--runs", "3", "--warmup", "1", "--json", str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    assert "| kernel | ops | calls | total ms | mean ms | share | GFLOP/s |" in table
    assert "first call" in table and "p95" in table and "samples/s (batch 1, 1 caller, 3 runs" in table
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["runs"] == 3 and len(saved["times_ms"]) == 3 and saved["kernels"]


def test_compile_weights_option_says_how_compressed_weights_are_held(tmp_path, capsys) -> None:
    shared = "fold-constants,share-weights{bits=4,min-elements=256},fuse"
    sizes = {}
    for form in ("compressed", "decoded"):
        assert main(["compile", "demo", "--pipeline", shared, "--weights", form, "-o", str(tmp_path / form)]) == 0
        sizes[form] = (tmp_path / form / "params.npz").stat().st_size
        assert ("4 compressed" in capsys.readouterr().out) == (form == "compressed")
    assert sizes["compressed"] < sizes["decoded"] / 3
    with pytest.raises(SystemExit):
        main(["compile", "demo", "--weights", "float"])


def test_bench_a_model_at_a_batch_from_concurrent_callers(tmp_path, capsys) -> None:
    argv = ["bench", "demo", "--duration", "0.2", "--batch", "3", "--concurrency", "2", "--kernel-repeat", "1",
            "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    assert "(batch 3, 2 callers," in capsys.readouterr().out
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["batch"] == 3 and saved["concurrency"] == 2 and saved["runs"] >= 1


def test_bf16_on_a_cpu_without_it_is_a_clear_error(capsys) -> None:
    assert main(["compile", "demo", "--target", "llvm:haswell", "--precision", "bf16"]) == 2
    assert "precision='bf16' needs a CPU with AMX or AVX512-BF16" in capsys.readouterr().err


def test_unknown_target_lists_the_valid_ones(capsys) -> None:
    assert main(["compile", "demo", "--target", "vulkan"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'vulkan'" in err and "llvm" in err and "cuda" in err and "opencl" in err

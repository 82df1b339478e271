"""Saving never loses a file, loading never trusts a damaged folder (issue 20, parts 1, 2 and 5).

Every refusal asserts the error type and that nothing on disk changed; every damaged
folder gives one LoadError naming the file; SIGKILL at random moments of a save
always leaves a model that loads; several threads saving into one folder leave one
whole model.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tvm")

import slimgraph  # noqa: E402
from slimgraph.cli import main as cli  # noqa: E402
from slimgraph.demo import demo_inputs, demo_model  # noqa: E402
from slimgraph.errors import GraphError, LoadError, SaveError  # noqa: E402
from slimgraph.storage import MANIFEST  # noqa: E402

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under ``root`` with its mode and content digest."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = (0, "link:" + os.readlink(path))
        elif path.is_dir():
            out[rel] = (path.stat().st_mode, "dir")
        else:
            out[rel] = (path.stat().st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def models():
    """Two compiled demo models with the same shapes and different weights."""
    return [slimgraph.compile(demo_model(seed), demo_inputs(batch=2)) for seed in (0, 1)]


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "model"
    models[0].save(path, ir=True)
    return path


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    """A private copy of the saved folder, free to damage."""
    dst = tmp_path / "model"
    shutil.copytree(saved, dst)
    return dst


def same_outputs(a, b) -> bool:
    (x,) = demo_inputs(batch=2, seed=5)
    return a(x).tobytes() == b(x).tobytes()


# ---------------------------------------------------------------------------
# 1. where save may write


def foreign_layouts(root: Path) -> dict[str, Path]:
    """Targets that are not slimgraph's to replace, each laid out under ``root``."""
    layouts = {}
    (root / "project").mkdir()
    (root / "project" / "train.py").write_text("print('mine')")
    (root / "project" / "metadata.json").write_text("{}")  # the name alone made it 'ours' before
    layouts["folder with the user's files and a metadata.json"] = root / "project"
    (root / "notes.txt").write_text("keep")
    layouts["a file"] = root / "notes.txt"
    (root / "real").mkdir()
    (root / "link").symlink_to(root / "real")
    layouts["a symbolic link"] = root / "link"
    (root / "nested" / "deep").mkdir(parents=True)
    (root / "nested" / "deep" / "data.bin").write_bytes(b"\x00" * 10)
    layouts["a folder holding only a subfolder of the user's"] = root / "nested"
    return layouts


@pytest.mark.parametrize("what", [
    "folder with the user's files and a metadata.json", "a file", "a symbolic link",
    "a folder holding only a subfolder of the user's",
])
def test_save_refuses_what_is_not_ours_and_changes_nothing(models, tmp_path, what):
    target = foreign_layouts(tmp_path)[what]
    before = snapshot(tmp_path)
    with pytest.raises(SaveError, match=str(target.name)):
        models[0].save(target)
    assert snapshot(tmp_path) == before


def test_save_refuses_a_saved_folder_the_user_added_a_file_to(models, tmp_path):
    models[0].save(tmp_path / "m")
    (tmp_path / "m" / "README.md").write_text("my notes")
    before = snapshot(tmp_path)
    with pytest.raises(SaveError, match="README.md"):
        models[1].save(tmp_path / "m")
    assert snapshot(tmp_path) == before


def test_save_refuses_the_current_directory_and_its_parents(models, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    models[0].save(work / "m")  # even a folder of ours is refused when it is where we stand
    monkeypatch.chdir(work / "m")
    before = snapshot(tmp_path)
    for target in (".", "..", str(work / "m")):
        with pytest.raises(SaveError, match="current directory"):
            models[0].save(target)
    assert snapshot(tmp_path) == before


def test_cli_compile_into_the_working_directory_keeps_the_onnx_file(tmp_path, monkeypatch, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert cli(["compile", "model.onnx", "-o", "."]) == 2
    assert "current directory" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_save_replaces_its_own_folder_and_removes_only_its_files(models, tmp_path):
    models[0].save(tmp_path / "m")
    models[1].save(tmp_path / "m")
    assert same_outputs(slimgraph.load(tmp_path / "m"), models[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging or backup left


def test_an_empty_folder_is_a_valid_target(models, tmp_path):
    (tmp_path / "empty").mkdir()
    models[0].save(tmp_path / "empty")
    assert same_outputs(slimgraph.load(tmp_path / "empty"), models[0])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_honour_the_umask(models, tmp_path, umask):
    old = os.umask(umask)
    try:
        models[0].save(tmp_path / "m", ir=True)
    finally:
        os.umask(old)
    folder = tmp_path / "m"
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    for name in ("metadata.json", "params.npz", MANIFEST, "model.sg"):
        assert (folder / name).stat().st_mode & 0o666 == 0o666 & ~umask, name


def test_graph_save_honours_the_umask_and_wraps_os_errors(tmp_path):
    old = os.umask(0o022)
    try:
        demo_model().save(tmp_path / "g.sg")
    finally:
        os.umask(old)
    assert (tmp_path / "g.sg").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "g.sg.weights").stat().st_mode & 0o777 == 0o644
    with pytest.raises(GraphError, match="no/such/folder/g.sg: cannot write"):
        demo_model().save(tmp_path / "no" / "such" / "folder" / "g.sg")
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_loaded_model_saves_again(models, saved, tmp_path):
    loaded = slimgraph.load(saved)
    loaded.save(tmp_path / "again")
    again = slimgraph.load(tmp_path / "again")
    assert same_outputs(again, models[0])
    assert (tmp_path / "again" / "model.so").read_bytes() == (saved / "model.so").read_bytes()


# ---------------------------------------------------------------------------
# 2. what load accepts


def rewrite_manifest(folder: Path, edit) -> None:
    """Apply ``edit`` to the manifest, then re-record every digest so only ``edit`` is wrong."""
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def rehash(folder: Path) -> None:
    """Re-record each listed file's size and digest: the folder is then consistent
    with its manifest, so what load catches next is the content itself."""
    def fix(manifest):
        for name in manifest["files"]:
            data = (folder / name).read_bytes()
            manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    rewrite_manifest(folder, fix)


DAMAGE = {
    "truncated library": (lambda f: os.truncate(f / "model.so", 1000), "model.so: 1000 bytes"),
    "library of zeros, same size": (lambda f: (f / "model.so").write_bytes(b"\0" * (f / "model.so").stat().st_size),
                                    "model.so: its SHA-256 differs"),
    "library removed": (lambda f: (f / "model.so").unlink(), "model.so: missing"),
    "metadata not JSON": (lambda f: (f / "metadata.json").write_text("{oops"), "metadata.json"),
    "manifest not JSON": (lambda f: (f / MANIFEST).write_text("[1,"), "files.json: unreadable manifest"),
    "manifest of another format": (lambda f: rewrite_manifest(f, lambda m: m.update(format=99)), "manifest of format 99"),
    "manifest lists nothing": (lambda f: rewrite_manifest(f, lambda m: m.update(files=[])), "lists no files"),
    "manifest entry without digest": (lambda f: rewrite_manifest(f, lambda m: m["files"].update({"model.so": {}})),
                                      "'model.so' has no size and sha256"),
    "manifest path outside the folder": (
        lambda f: rewrite_manifest(f, lambda m: m["files"].update({"../outside": {"size": 1, "sha256": "0"}})),
        "'../outside' points outside"),
    "manifest absolute path": (
        lambda f: rewrite_manifest(f, lambda m: m["files"].update({"/etc/passwd": {"size": 1, "sha256": "0"}})),
        "'/etc/passwd' points outside"),
    "manifest of a guarded set": (lambda f: rewrite_manifest(f, lambda m: m.update(kind="guarded model")),
                                  "guarded.json: unreadable guard manifest"),
    "metadata without keys, digests redone": (
        lambda f: ((f / "metadata.json").write_text(json.dumps({"format": 2})), rehash(f)),
        "metadata.json: incomplete or malformed metadata: name, target, inputs"),
    "metadata of an old format, digests redone": (
        lambda f: ((f / "metadata.json").write_text(json.dumps({"format": 1})), rehash(f)), "metadata of format 1"),
    "weights not an npz, digests redone": (
        lambda f: ((f / "params.npz").write_bytes(b"PK\x03\x04junk"), rehash(f)), "params.npz"),
    "library not a library, digests redone": (
        lambda f: ((f / "model.so").write_bytes(b"\x7fELF" + b"\0" * 64), rehash(f)), "model.so: cannot load"),
    "IR text garbage, digests redone": (
        lambda f: ((f / "model.sg").write_text("graph @x( {"), rehash(f)), "model.sg"),
    "no manifest at all": (lambda f: (f / MANIFEST).unlink(), "no files.json"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_folder_is_one_load_error_naming_the_file(copy, case):
    damage, message = DAMAGE[case]
    damage(copy)
    before = snapshot(copy.parent)
    with pytest.raises(LoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        slimgraph.load(copy)
    assert snapshot(copy.parent) == before


def test_weights_from_another_model_with_the_same_shapes_are_refused(models, saved, tmp_path):
    models[1].save(tmp_path / "other")
    target = tmp_path / "mixed"
    shutil.copytree(saved, target)
    shutil.copy(tmp_path / "other" / "params.npz", target / "params.npz")
    with pytest.raises(LoadError, match="params.npz: its SHA-256 differs"):
        slimgraph.load(target)


def test_an_ir_sidecar_from_another_graph_is_refused(tmp_path):
    demo_model(0).save(tmp_path / "a.sg")
    demo_model(1).save(tmp_path / "b.sg")
    shutil.copy(tmp_path / "b.sg.weights", tmp_path / "a.sg.weights")
    with pytest.raises(GraphError, match="a.sg.weights: its SHA-256 differs"):
        slimgraph.load(tmp_path / "a.sg")


@given(data=st.data())
@FUZZ
def test_fuzz_any_flipped_byte_in_any_file_is_a_load_error(saved, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("flip") / "m"
    shutil.copytree(saved, folder)
    names = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    name = data.draw(st.sampled_from(names))
    blob = bytearray((folder / name).read_bytes())
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    (folder / name).write_bytes(bytes(blob))
    with pytest.raises(LoadError, match=name):
        slimgraph.load(folder)


@given(data=st.data())
@FUZZ
def test_fuzz_truncating_any_file_is_a_load_error(saved, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("cut") / "m"
    shutil.copytree(saved, folder)
    name = data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir())))
    size = (folder / name).stat().st_size
    os.truncate(folder / name, data.draw(st.integers(0, size - 1)))
    with pytest.raises(LoadError, match=name):
        slimgraph.load(folder)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 10**12) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@given(key=st.sampled_from(["inputs", "params", "outputs", "output_types", "kernels", "steps", "target", "name"]),
       value=JSONISH)
@FUZZ
def test_fuzz_wrong_metadata_values_are_load_errors_or_load(saved, tmp_path_factory, key, value):
    """Any metadata value, with the digests redone, loads or is a LoadError: never a raw error."""
    folder = tmp_path_factory.mktemp("meta") / "m"
    shutil.copytree(saved, folder)
    meta = json.loads((folder / "metadata.json").read_text())
    meta[key] = value
    (folder / "metadata.json").write_text(json.dumps(meta))
    rehash(folder)
    try:
        model = slimgraph.load(folder)
    except LoadError as exc:
        assert "metadata.json" in str(exc) or "params.npz" in str(exc)
    else:  # what loaded must describe itself without a raw error
        repr(model), model.kernels, model.input_types


# ---------------------------------------------------------------------------
# guarded sets


@pytest.fixture(scope="module")
def guarded(models, tmp_path_factory) -> Path:
    from slimgraph.runtime import GuardedModel, Variant

    variants = [Variant("full", models[0], width=1.0, latency_ms=2.0), Variant("half", models[1], width=0.5, latency_ms=1.0)]
    path = tmp_path_factory.mktemp("guarded") / "g"
    GuardedModel(variants, budget_ms=100.0).save(path)
    return path


@pytest.mark.parametrize("where", ["../../outside", "/tmp", "v0-full/../../x", ""])
def test_a_guard_manifest_pointing_outside_the_folder_is_refused(guarded, tmp_path, where):
    folder = tmp_path / "g"
    shutil.copytree(guarded, folder)
    manifest = json.loads((folder / "guarded.json").read_text())
    manifest["variants"][0]["dir"] = where
    (folder / "guarded.json").write_text(json.dumps(manifest))
    rehash(folder)
    with pytest.raises(LoadError, match="guarded.json"):
        slimgraph.load(folder)


def test_a_guarded_set_loads_saves_again_and_checks_its_variants(guarded, models, tmp_path):
    loaded = slimgraph.load(guarded)
    loaded.save(tmp_path / "again")
    assert str(slimgraph.load(tmp_path / "again")) == str(loaded)
    os.truncate(tmp_path / "again" / "v1-half" / "params.npz", 10)
    with pytest.raises(LoadError, match="v1-half/params.npz"):
        slimgraph.load(tmp_path / "again")


# ---------------------------------------------------------------------------
# crashes and concurrency


def test_a_swap_killed_half_way_is_restored_by_the_next_load(models, tmp_path):
    """The window between the two renames: only the backup holds the model."""
    models[0].save(tmp_path / "m")
    backup = tmp_path / ".m.sg-backup-xyz"
    backup.mkdir()
    os.rename(tmp_path / "m", backup / "old")
    staging = tmp_path / ".m.sg-staging-999999999-abc"  # a dead writer's staging folder
    staging.mkdir()
    (staging / "model.so").write_bytes(b"half")
    assert same_outputs(slimgraph.load(tmp_path / "m"), models[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_dead_writers_staging_folder_is_removed_by_the_next_save(models, tmp_path):
    staging = tmp_path / ".m.sg-staging-999999999-abc"
    staging.mkdir()
    (staging / "model.so").write_bytes(b"half")
    models[0].save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


KILLER = textwrap.dedent("""
    import sys
    import slimgraph
    src, dst = sys.argv[1], sys.argv[2]
    models = [slimgraph.load(src + "/a"), slimgraph.load(src + "/b")]
    print("ready", flush=True)
    i = 0
    while True:
        models[i % 2].save(dst)
        i += 1
""")


@pytest.mark.slow
def test_sigkill_during_saves_always_leaves_a_model_that_loads(models, tmp_path):
    """A process saves two models in turn into one folder; it is killed at random
    moments. After each kill the folder loads as one of the two, whole."""
    models[0].save(tmp_path / "src" / "a")
    models[1].save(tmp_path / "src" / "b")
    dst = tmp_path / "work" / "m"
    models[1].save(dst)  # a complete model is there from the start: every kill must leave one
    rng = random.Random(20)
    loaded = 0
    for _ in range(8):  # a fresh process each time, killed at a random moment of its save loop
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(tmp_path / "src"), str(dst)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        model = slimgraph.load(dst)
        assert same_outputs(model, models[0]) or same_outputs(model, models[1])
        loaded += 1
        leftovers = [p.name for p in dst.parent.iterdir() if p.name != "m"]
        assert leftovers == [], leftovers  # the load cleaned up what the kill left
    assert loaded == 8


def test_threads_saving_into_one_folder_leave_one_whole_model(models, tmp_path):
    target = tmp_path / "m"
    errors = []

    def saver(i):
        try:
            for _ in range(3):
                models[i % 2].save(target)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    model = slimgraph.load(target)
    assert same_outputs(model, models[0]) or same_outputs(model, models[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]

"""narrow(): the digits CNN pruned to narrower widths, compiled per batch bucket with TVM, measured, saved."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from slimgraph.backends.tvm.targets import cpu_cores  # noqa: E402
from slimgraph.runtime import GuardError, load_guarded  # noqa: E402
from slimgraph.runtime.narrow import finetune_with, narrow  # noqa: E402
from tests.digits import digits_data, torch_predict, trained_digits_cnn  # noqa: E402


@pytest.fixture(scope="module")
def guarded():
    """The trained digits CNN pruned to 75% and 50% of its channels, fine-tuned, compiled for 1, 8 and 32."""
    data = digits_data()
    return narrow(trained_digits_cnn(16), (torch.zeros(8, 1, 8, 8),), [1.0, 0.75, 0.5], batches=[1, 8, 32],
                  eval_data=(data.x_test, data.y_test), finetune=finetune_with(data.x_train, data.y_train),
                  runs=10)


def test_every_width_is_pruned_compiled_per_bucket_measured_and_evaluated(guarded):
    names = {v.name for v in guarded.variants}
    widths = {f"w{w}-b{b}" for w in (100, 75, 50) for b in (1, 8, 32, "N")}
    # on a CPU with several cores each compiled width also runs single-threaded, on the same model
    serial = {f"w{w}-b{b}-t1" for w in (100, 75, 50) for b in (1, 8, 32)} if cpu_cores() > 1 else set()
    assert names == widths | serial
    by_name = {v.name: v for v in guarded.variants}
    for name in serial:
        assert by_name[name].model is by_name[name.removesuffix("-t1")].model
        assert by_name[name].threads == 1 and by_name[name].accuracy == by_name[name.removesuffix("-t1")].accuracy
    assert all(v.latency_ms > 0 for v in guarded.variants)
    by_width = {v.width: v for v in guarded.variants if v.batch == 32 and v.threads is None}
    # structured pruning really removes channels: fewer FLOPs at each narrower width
    assert by_width[1.0].model.flops > by_width[0.75].model.flops > by_width[0.5].model.flops
    accuracy = {w: v.accuracy for w, v in by_width.items()}
    assert accuracy[1.0] >= 95.0
    assert accuracy[1.0] - accuracy[0.5] <= 5.0, accuracy
    assert "accuracy=" in str(guarded)


def test_buckets_run_their_specialization_and_match_torch(guarded):
    x_all = digits_data().x_test
    full = torch_predict(trained_digits_cnn(16))
    for n, name in [(1, "w100-b1"), (8, "w100-b8"), (32, "w100-b32"), (7, "w100-bN")]:
        x = x_all[:n]
        np.testing.assert_allclose(guarded(x), full(x), rtol=1e-3, atol=1e-3)
        assert guarded.records()[-1].variant == name
    # the fallback for a batch no bucket holds runs compiled code, not the reference interpreter
    fallback = {v.name: v for v in guarded.variants}["w100-bN"].model
    assert type(fallback).__name__ == "CompiledModel" and fallback.dynamic
    for n in (2, 33, 100):
        np.testing.assert_allclose(guarded(x_all[:n]), full(x_all[:n]), rtol=1e-3, atol=1e-3)


def test_save_and_load_the_compiled_set(guarded, tmp_path):
    path = guarded.save(tmp_path / "digits")
    loaded = load_guarded(path)
    assert str(loaded) == str(guarded)
    x = digits_data().x_test[:8]
    np.testing.assert_array_equal(loaded(x), guarded(x))
    assert loaded.records()[-1].variant == "w100-b8"
    # a compiled width is saved once and loaded once, however many thread counts run it
    manifest = json.loads((path / "guarded.json").read_text())
    folders = {e["dir"] for e in manifest["variants"] if e["batch"] is not None}
    assert len(folders) == 3 * 3
    by_name = {v.name: v for v in loaded.variants}
    if cpu_cores() > 1:
        assert by_name["w50-b8-t1"].model is by_name["w50-b8"].model
        np.testing.assert_array_equal(by_name["w50-b8-t1"](x), by_name["w50-b8"](x))


class Head(torch.nn.Module):
    def __init__(self, classes: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = torch.nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


def test_variants_can_be_models_trained_at_each_width():
    example = (torch.zeros(4, 1, 8, 8),)
    model = narrow(None, example, {1.0: Head(10, seed=0), 0.5: Head(10, seed=1)}, threads=[None], runs=3)
    assert sorted(v.name for v in model.variants) == ["w100-b4", "w100-bN", "w50-b4", "w50-bN"]
    x = digits_data().x_test[:4]
    np.testing.assert_allclose(model(x), torch_predict(Head(10, seed=0))(x), rtol=1e-4, atol=1e-4)


def test_bad_thread_counts_are_refused_before_any_work():
    example = (torch.zeros(4, 1, 8, 8),)
    for bad in ([0], [], [1.5], [True]):
        with pytest.raises(GuardError, match="give thread counts"):
            narrow(Head(10), example, [1.0], threads=bad)
    with pytest.raises(GuardError, match="apply to CPU targets, not cuda:sm_90"):
        narrow(Head(10), example, [1.0], target="cuda:sm_90", threads=[None, 1])


def test_a_width_that_breaks_the_contract_is_refused():
    example = (torch.zeros(2, 1, 8, 8),)
    with pytest.raises(GuardError, match="width 0.5 changes the model's contract"):
        narrow(None, example, {1.0: Head(10), 0.5: Head(9)})
    with pytest.raises(GuardError, match="fractions in"):
        narrow(Head(10), example, [1.0, 1.5])


def test_calibration_data_reestimates_the_pruned_widths_batch_norms():
    """Pruning leaves the batch norms after it with training statistics for inputs they no longer get;
    re-estimating them on unlabeled training inputs recovers accuracy (here without fine-tuning)."""
    import slimgraph

    data = digits_data()
    net, example = trained_digits_cnn(16), (torch.zeros(32, 1, 8, 8),)
    options = dict(batches=[32], eval_data=(data.x_test, data.y_test))
    plain = narrow(net, example, [1.0, 0.75, 0.5], **options)
    calibration = [data.x_train[i : i + 64] for i in range(0, 256, 64)]
    calibrated = slimgraph.compile(net, example, variants=[1.0, 0.75, 0.5], calibration_data=calibration, **options)
    before = {v.width: v.accuracy for v in plain.variants}
    after = {v.width: v.accuracy for v in calibrated.variants}
    assert after[1.0] == before[1.0]  # the full model is the user's: left as it is
    assert after[0.75] >= before[0.75] + 10.0, (before, after)
    assert after[0.5] >= before[0.5] + 5.0, (before, after)


def test_calibration_data_must_be_input_batches():
    from slimgraph.passes.calibrate import CalibrationTable

    example = (torch.zeros(2, 1, 8, 8),)
    with pytest.raises(GuardError, match="calibration_data is empty"):
        narrow(Head(10), example, [1.0, 0.5], calibration_data=iter([]))
    with pytest.raises(GuardError, match="CalibrationTable"):
        narrow(Head(10), example, [1.0, 0.5], calibration_data=CalibrationTable())

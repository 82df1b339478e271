"""GuardedModel over interpreter-backed variants: guards, batch buckets, budget, policy, threads, save/load."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from slimgraph.errors import LoadError, SaveError
from slimgraph.ir import Graph, TensorType
from slimgraph.runtime import (
    ControllerConfig,
    GraphRunner,
    GuardedModel,
    GuardError,
    Variant,
    load_guarded,
)

FEATURES, CLASSES = 6, 3
RNG = np.random.default_rng(0)
WEIGHTS = {1.0: RNG.standard_normal((CLASSES, FEATURES)).astype(np.float32),
           0.5: RNG.standard_normal((CLASSES, FEATURES)).astype(np.float32)}


def linear_graph(width: float, batch) -> Graph:
    """relu(x @ W.T) with a width-specific W; ``batch`` is an int bucket or the symbol N."""
    g = Graph(f"lin{int(width * 100)}")
    x = g.add_input("x", TensorType("f32", (batch, FEATURES)))
    g.set_outputs([g.call("relu", g.call("linear", x, g.const(WEIGHTS[width], name="fc.weight")))])
    return g


def expected(width: float, x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ WEIGHTS[width].T, 0)


def bucketed_variants() -> list[Variant]:
    variants = []
    for batch in (1, 8, 32, None):
        for width in (1.0, 0.5):
            tag = f"b{batch}" if batch else "bN"
            graph = linear_graph(width, batch or "N")
            variants.append(Variant(f"w{int(width * 100)}-{tag}", GraphRunner(graph), width=width,
                                    latency_ms=2.0 * width))
    return variants


def batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, FEATURES)).astype(np.float32)


def test_each_batch_bucket_runs_its_own_specialization_and_batch_7_the_fallback():
    model = GuardedModel(bucketed_variants(), name="lin")
    for n, name in [(1, "w100-b1"), (8, "w100-b8"), (32, "w100-b32"), (7, "w100-bN")]:
        x = batch(n)
        np.testing.assert_allclose(model(x), expected(1.0, x), rtol=1e-5, atol=1e-5)
        assert model.records()[-1].variant == name
        assert model.records()[-1].batch == n
        assert model.select(x).name == name
    assert model.stats().calls == {v.name: int(v.width == 1.0) for v in bucketed_variants()}


def test_a_call_no_guard_admits_says_what_was_expected():
    model = GuardedModel([v for v in bucketed_variants() if v.batch is not None], name="lin")
    with pytest.raises(GuardError) as err:
        model(batch(7))
    message = str(err.value)
    assert "f32[7,6] on cpu" in message
    for spec in ("(f32[1,6]) on cpu", "(f32[8,6]) on cpu", "(f32[32,6]) on cpu"):
        assert spec in message
    with pytest.raises(GuardError, match="f64\\[1,6\\]|float64\\[1,6\\]"):
        model(batch(1).astype(np.float64))
    with pytest.raises(GuardError, match="f32\\[1,5\\]"):
        model(np.zeros((1, 5), np.float32))
    with pytest.raises(GuardError, match="no inputs"):
        model()


def test_torch_tensors_pass_the_guards():
    torch = pytest.importorskip("torch")
    model = GuardedModel(bucketed_variants())
    x = batch(8)
    model(torch.from_numpy(x))
    assert model.records()[-1].variant == "w100-b8"
    with pytest.raises(GuardError, match="i64"):
        model(torch.zeros((8, FEATURES), dtype=torch.int64))


class Scripted:
    """A fake variant: each call advances the fake clock by the scripted latency of its width."""

    def __init__(self, clock, width: float, load):
        self.clock, self.width, self.load = clock, width, load
        self.input_types = [TensorType("f32", (1, FEATURES))]

    def __call__(self, x):
        self.clock.now += self.width * 4.0 * self.load(self.clock.now) / 1e3
        return self.width


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def scripted_model(load, **options):
    clock = FakeClock()
    variants = [Variant(f"w{int(w * 100)}", Scripted(clock, w, load), width=w, latency_ms=4.0 * w)
                for w in (0.5, 1.0, 0.75)]  # given out of order on purpose: ladders sort by width
    return GuardedModel(variants, clock=clock, idle_hint=None, **options), clock


def test_budget_steps_down_under_load_and_back_up():
    loaded = lambda t: 2.5 if 1.0 <= t < 3.0 else 1.0  # noqa: E731
    model, clock = scripted_model(loaded, budget_ms=6.0)
    x = batch(1)
    served = []
    while clock.now < 6.0:
        served.append((clock.now, model(x)))
        clock.now += 1e-3
    phase = lambda a, b: [w for t, w in served if a <= t < b]  # noqa: E731
    assert set(phase(0.0, 1.0)) == {1.0}
    # 2.5x load: 10 ms full, 7.5 ms at 75%, 5 ms at 50%; only probes run a wider variant
    under_load = phase(1.5, 3.0)
    assert under_load.count(0.5) / len(under_load) > 0.95
    assert set(phase(5.0, 6.0)) == {1.0}
    stats = model.stats()
    assert stats.switches == 2  # straight down to 50%, straight back up on the first probe that fits
    assert sum(stats.calls.values()) == len(served)
    assert stats.latency["w100"]["p50"] == pytest.approx(4.0)
    assert stats.latency["overall"]["p95"] >= stats.latency["overall"]["p50"]
    assert sum(r.probe for r in model.records()) >= 2


class Threaded:
    """A fake two-core model: on both threads a call takes half the single-thread time, but
    under oversubscription it waits 40 ms at its barriers; on one thread it gets half a core."""

    def __init__(self, clock, width: float, loaded):
        self.clock, self.width, self.loaded = clock, width, loaded
        self.input_types = [TensorType("f32", (1, FEATURES))]
        self.threads_seen: list = []

    def __call__(self, x, threads=None):
        self.threads_seen.append(threads)
        alone = 8.0 * self.width
        if threads is None:
            ms = alone / 2 + (40.0 if self.loaded(self.clock.now) else 0.0)
        else:
            ms = alone * (2.0 if self.loaded(self.clock.now) else 1.0)
        self.clock.now += ms / 1e3
        return self.width, threads


def test_under_load_the_guard_runs_narrow_and_single_threaded():
    clock = FakeClock()
    loaded = lambda t: 1.0 <= t < 4.0  # noqa: E731
    models = {w: Threaded(clock, w, loaded) for w in (1.0, 0.5, 0.25)}
    variants = []
    for w, m in models.items():
        variants.append(Variant(f"w{int(w * 100)}", m, width=w, latency_ms=4.0 * w))
        variants.append(Variant(f"w{int(w * 100)}-t1", m, width=w, latency_ms=8.0 * w, threads=1))
    model = GuardedModel(variants, budget_ms=8.0, clock=clock, name="threaded", idle_hint=None)
    # the ladder: every width on all threads, then every width on one
    ladder = [line.split()[1] for line in str(model).splitlines() if line.strip().startswith("variant")]
    assert ladder == ["w100", "w50", "w25", "w100-t1", "w50-t1", "w25-t1"]
    assert "variant w50-t1 {width=0.5, threads=1, latency=4.000ms}" in str(model)
    served = []
    while clock.now < 6.0:
        served.append((clock.now, model(batch(1))))
        clock.now += 1e-3
    phase = lambda a, b: [r for t, r in served if a <= t < b]  # noqa: E731
    assert set(phase(0.0, 1.0)) == {(1.0, None)}
    # under load 50% on one thread takes 8 ms, at the budget's edge; 25% on one thread (4 ms) fits.
    # No width fits on two threads (40 ms at the barriers)
    steady = phase(1.5, 4.0)
    assert steady.count((0.25, 1)) / len(steady) > 0.9
    assert set(phase(5.0, 6.0)) == {(1.0, None)}
    # one model per width: its thread variants pass the count through, the default passes none
    assert set(models[1.0].threads_seen) == {None} and set(models[0.25].threads_seen) == {1}
    assert model.stats().calls["w25-t1"] > 0
    with pytest.raises(GuardError, match="takes no thread count"):
        Variant("w", GraphRunner(linear_graph(1.0, 1)), threads=1)
    with pytest.raises(GuardError, match="positive number of threads"):
        Variant("w", models[1.0], threads=0)
    with pytest.raises(GuardError, match="applies to CPU variants, not cuda"):
        Variant("w", models[1.0], threads=1, device="cuda")
    with pytest.raises(GuardError, match="positive number of threads"):
        Variant("w", models[1.0], threads=True)
    # a model that takes keywords through **options takes a thread count too
    relay = lambda x, **options: models[1.0](x, **options)  # noqa: E731
    assert Variant("w", relay, inputs=(TensorType("f32", (1, FEATURES)),), threads=1).threads == 1


def test_policy_gets_the_candidates_and_picks():
    seen = []

    def most_accurate_under_3ms(candidates):
        seen.append(candidates)
        fitting = [c for c in candidates if c.latency_ms < 3.0]
        return max(fitting, key=lambda c: c.accuracy).name

    clock = FakeClock()
    variants = [Variant(f"w{int(w * 100)}", Scripted(clock, w, lambda t: 1.0), width=w, latency_ms=4.0 * w,
                        accuracy=90 + 10 * w) for w in (1.0, 0.75, 0.5)]
    model = GuardedModel(variants, policy=most_accurate_under_3ms, clock=clock)
    assert model(batch(1)) == 0.5
    assert [c.name for c in seen[0]] == ["w100", "w75", "w50"]
    assert seen[0][1].accuracy == 97.5 and seen[0][1].recent_ms is None
    model(batch(1))
    assert seen[-1][2].recent_ms == pytest.approx(2.0)
    assert "policy=most_accurate_under_3ms" in str(model)

    bad = GuardedModel(variants, policy=lambda cs: "w33", clock=clock)
    with pytest.raises(GuardError, match="'w33'.*candidates: w100, w75, w50"):
        bad(batch(1))


def test_budget_needs_measured_latencies():
    variants = [Variant(f"w{w}", GraphRunner(linear_graph(w, 1)), width=w) for w in (1.0, 0.5)]
    with pytest.raises(GuardError, match="missing for w1.0, w0.5"):
        GuardedModel(variants, budget_ms=1.0)


def test_concurrent_calls_are_counted_and_correct():
    records = []
    model = GuardedModel(bucketed_variants(), budget_ms=1e6, on_call=records.append)
    errors = []

    def worker(seed: int):
        rng = np.random.default_rng(seed)
        for _ in range(100):
            n = int(rng.choice([1, 7, 8]))
            x = rng.standard_normal((n, FEATURES)).astype(np.float32)
            if not np.allclose(model(x), expected(1.0, x), atol=1e-5):
                errors.append(n)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = model.stats()
    assert sum(stats.calls.values()) == 400 == len(records) == len(model.records())
    assert stats.switches == 0


def test_a_model_that_is_not_thread_safe_serves_one_call_at_a_time():
    class Exclusive:
        """Records whether two calls ever overlap (as they would crash a shared TVM VM)."""

        input_types = [TensorType("f32", (1, FEATURES))]

        def __init__(self):
            self.inside, self.overlaps = 0, 0

        def __call__(self, x):
            self.inside += 1
            self.overlaps += self.inside > 1
            threading.Event().wait(0.001)
            self.inside -= 1
            return x

    model = Exclusive()
    guarded = GuardedModel([Variant("only", model)])
    threads = [threading.Thread(target=lambda: [guarded(batch(1)) for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.overlaps == 0 and guarded.stats().calls == {"only": 80}


def test_save_load_round_trip_and_guard_dump(tmp_path):
    model = GuardedModel(bucketed_variants(), budget_ms={1: 1.5, 8: 2.0, 32: 3.0, None: 4.0},
                         config=ControllerConfig(dwell_s=0.5), name="lin")
    text = str(model)
    assert "guard (f32[8,6]) on cpu  # batch 8" in text
    assert "guard (f32[N,6]) on cpu  # fallback" in text
    assert "variant w50-b32 {width=0.5, latency=1.000ms}" in text
    assert "budget={1: 1.5ms, 8: 2ms, 32: 3ms, fallback: 4ms}" in text
    assert "// variant w50-bN\ngraph @lin50(%x: f32[N,6])" in model.dump()

    saved = model.save(tmp_path / "guarded")
    manifest = json.loads((saved / "guarded.json").read_text())
    assert [v["name"] for v in manifest["variants"]] == [v.name for v in model.variants]
    assert (saved / "guards.txt").read_text() == text

    loaded = load_guarded(saved)
    assert str(loaded) == text
    assert loaded.config.dwell_s == 0.5
    for n in (1, 7, 8, 32):
        x = batch(n)
        np.testing.assert_array_equal(loaded(x), model(x))
        assert loaded.records()[-1].variant == model.records()[-1].variant

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(SaveError, match="did not write.*refusing to replace"):
        model.save(tmp_path / "other")
    with pytest.raises(LoadError, match="no files.json"):
        load_guarded(tmp_path / "other")


def test_bad_variant_sets_are_reported():
    with pytest.raises(GuardError, match="at least one"):
        GuardedModel([])
    v = bucketed_variants()[0]
    with pytest.raises(GuardError, match="repeated: w100-b1"):
        GuardedModel([v, v])
    with pytest.raises(GuardError, match="batch bucket 8"):
        Variant("x", GraphRunner(linear_graph(1.0, 1)), batch=8)

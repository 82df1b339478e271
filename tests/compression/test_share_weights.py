"""share-weights: the codebook_decode op, k-means sharing on the digits CNN, and unit merging."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.analysis import compare_sizes, size_report
from slimgraph.errors import OpError, PassError
from slimgraph.ir import Graph, TensorType
from slimgraph.ir.ops.compress import pack_codes, packed_size, unpack_codes
from slimgraph.passes import OptionValueError, parse_pipeline
from slimgraph.passes.fold_constants import FoldConstants
from slimgraph.passes.prune import Prune
from slimgraph.passes.share_weights import ShareWeights, kmeans_1d
from tests.digits import digits_data
from tests.compression.common import digits_graph, float_accuracy, graph_accuracy, random_input


# -- the op ----------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip(bits):
    codes = np.random.default_rng(bits).integers(0, 2**bits, size=37).astype(np.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(37, bits)
    np.testing.assert_array_equal(unpack_codes(packed, bits, 37), codes)


def test_codebook_decode_in_a_graph():
    codes = np.array([3, 0, 2, 1, 1, 3], np.uint8)
    g = Graph()
    book = np.float32([-1.0, 0.0, 0.5, 2.0])
    w = g.call("codebook_decode", g.const(pack_codes(codes, 2)), g.const(book), bits=2, shape=(2, 3))
    g.set_outputs([w])
    g.verify()
    np.testing.assert_array_equal(g.run()[0], book[codes].reshape(2, 3))
    assert w.type == TensorType("f32", (2, 3))


def test_codebook_decode_rejects_bad_inputs():
    g = Graph()
    book = g.const(np.zeros(4, np.float32))
    with pytest.raises(OpError, match="need 2"):
        g.call("codebook_decode", g.const(np.zeros(3, np.uint8)), book, bits=2, shape=(2, 3))
    with pytest.raises(OpError, match="1..8"):
        g.call("codebook_decode", g.const(np.zeros(3, np.uint8)), book, bits=9, shape=(2, 3))
    with pytest.raises(OpError, match="u8"):
        g.call("codebook_decode", g.const(np.zeros(2, np.int32)), book, bits=2, shape=(2, 3))
    with pytest.raises(OpError, match="codebook"):
        g.call("codebook_decode", g.const(np.zeros(2, np.uint8)), g.const(np.zeros(8, np.float32)), bits=2, shape=(2, 3))


def test_tvm_lowering_matches_the_reference():
    pytest.importorskip("tvm")
    import slimgraph.backends.tvm.ops.compress  # noqa: F401  (registers the lowering until ops/__init__ does)
    from slimgraph.api import compile as sg_compile

    g = Graph("decode")
    x = g.add_input("x", TensorType("f32", (2, 5)))
    for bits in (3, 4):
        rng = np.random.default_rng(bits)
        codes = rng.integers(0, 2**bits, size=35).astype(np.uint8)
        book = rng.standard_normal(2**bits).astype(np.float32)
        w = g.call("codebook_decode", g.const(pack_codes(codes, bits)), g.const(book), bits=bits, shape=(7, 5))
        x = g.call("linear", x, w)
        x = g.call("linear", x, g.call("transpose", w))
    g.set_outputs([x])
    data = random_input((2, 5))
    compiled = sg_compile(g, (data,), pipeline=None)
    np.testing.assert_allclose(np.asarray(compiled(data)), g.run(data)[0], rtol=1e-4, atol=1e-4)


# -- k-means ---------------------------------------------------------------------


def test_kmeans_1d_finds_well_separated_clusters():
    values = np.concatenate([np.full(10, -1.0), np.full(5, 0.25), np.full(7, 3.0)])
    centroids, codes = kmeans_1d(values, 4)
    np.testing.assert_allclose(centroids[codes], values)


def test_digits_4bit_kmeans_keeps_accuracy_and_shrinks_weights():
    g = digits_graph()
    shared = ShareWeights(method="kmeans", bits=4)(g)
    shared.verify()
    for name in ("features.0.weight", "features.3.weight", "features.7.weight", "classifier.weight"):
        node = shared.value(name).producer
        assert node.op == "codebook_decode"
        decoded = node.opdef.impl(*[v.const_value for v in node.inputs], **node.attrs)
        assert decoded.shape == digits_graph().value(name).type.shape
        assert len(np.unique(decoded)) <= 16
    acc = graph_accuracy(shared)
    ratio = size_report(shared).weight_bytes / size_report(g).weight_bytes
    folded = FoldConstants()(g)
    folded_ratio = size_report(ShareWeights(bits=4)(folded)).weight_bytes / size_report(folded).weight_bytes
    print(f"float {float_accuracy():.2f}%  4-bit kmeans {acc:.2f}%  bytes x{ratio:.3f} (batch norms folded first: x{folded_ratio:.3f})")
    print(compare_sizes(g, shared))
    assert float_accuracy() - acc <= 1.0
    assert ratio <= 0.15


def test_kmeans_keeps_pruned_zeros():
    pruned = Prune(sparsity=0.5)(digits_graph())
    shared = ShareWeights(bits=3)(pruned)
    node = shared.value("features.7.weight").producer
    decoded = node.opdef.impl(*[v.const_value for v in node.inputs], **node.attrs)
    np.testing.assert_array_equal(decoded == 0, pruned.value("features.7.weight").const_value == 0)


def test_kmeans_skip_and_min_elements():
    shared = ShareWeights(bits=4, skip=("classifier",), min_elements=200)(digits_graph())
    assert shared.value("classifier.weight").is_const
    assert shared.value("features.0.weight").is_const  # 144 elements < 200
    assert shared.value("features.3.weight").producer.op == "codebook_decode"


@pytest.mark.parametrize("text", ["share-weights{bits=0}", "share-weights{bits=9}", "share-weights{method=merge,threshold=1.5}"])
def test_bad_options_are_rejected(text):
    with pytest.raises(OptionValueError, match="must lie in"):
        parse_pipeline(text)


def test_pattern_matching_nothing_is_an_error():
    with pytest.raises(PassError, match="matches no prunable weight"):
        ShareWeights(skip=("missing.*",))(digits_graph())
    with pytest.raises(OptionValueError, match="1..8"):
        ShareWeights(overrides=("features.0:12",))


# -- merge -----------------------------------------------------------------------


def _planted() -> tuple[Graph, list[int]]:
    """The folded digits CNN with filters 5 and 9 of features.3 made copies of 1 and 2x filter 2."""
    g = FoldConstants()(digits_graph())
    for name in list(g.consts()):
        # fold-constants names the folded weights "<name>_1"; give them back their names
        stem = name.rsplit("_", 1)[0]
        if name.endswith("_1") and not g.has_value(stem):
            g.rename(g.value(name), stem)
    for name in ("features.3.weight", "features.3.bias"):
        node = g.value(name).producer
        array = node.attrs["value"].copy()
        array[5] = array[1]
        array[9] = 2.0 * array[2]
        node.attrs["value"] = node.opdef.attr("value").coerce(array, "const")
    return g, [5, 9]


def test_merge_removes_exactly_the_planted_duplicates():
    g, planted = _planted()
    merged = ShareWeights(method="merge", threshold=0.95)(g)
    merged.verify()
    before = g.value("features.3.weight").const_value
    after = merged.value("features.3.weight").const_value
    keep = [i for i in range(before.shape[0]) if i not in planted]
    np.testing.assert_array_equal(after, before[keep])
    # only the planted layer got narrower
    for name in ("features.0.weight", "features.7.weight", "classifier.weight"):
        assert merged.value(name).type.shape[0] == g.value(name).type.shape[0]
    assert merged.value("features.7.weight").type.shape[1] == before.shape[0] - 2
    x = digits_data().x_test
    reference, result = g.run(x)[0], merged.run(x)[0]
    print(f"merge: max output difference {np.abs(reference - result).max():.2e}")
    np.testing.assert_allclose(result, reference, rtol=0, atol=1e-5)


def test_merge_leaves_layers_behind_batch_norm_alone():
    g = digits_graph()  # batch norms not folded: merging would not be exact, so nothing merges
    assert ShareWeights(method="merge", threshold=0.5)(g).equals(g)


def test_shared_model_round_trips_through_text_and_compiles(tmp_path):
    from slimgraph.ir.serialize import load

    shared = ShareWeights(bits=4)(digits_graph())
    shared.save(tmp_path / "shared.sg")
    assert load(tmp_path / "shared.sg") == shared
    pytest.importorskip("tvm")
    import slimgraph.backends.tvm.ops.compress  # noqa: F401  (registers the lowering until ops/__init__ does)
    from slimgraph.api import compile as sg_compile

    x = digits_data().x_test[:64]
    np.testing.assert_allclose(np.asarray(sg_compile(shared, (x,))(x)), shared.run(x)[0], rtol=1e-4, atol=1e-4)

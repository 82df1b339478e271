"""``share-weights``: k-means weight sharing, or merging of near-identical neurons and filters.

- ``method=kmeans``: each conv/linear weight (at least ``min-elements``
  elements) is clustered into ``2^bits`` centroids by 1-d k-means (linear
  initialization between the min and max, as in Deep Compression). The
  graph then holds ``<name>.codes`` (packed ``u8`` codes), ``<name>.codebook``
  and a ``codebook_decode`` node whose output keeps the weight's name.
  Exact zeros (from magnitude pruning) keep a centroid of their own at 0, so
  sparsity survives.
- ``method=merge``: output channels of a conv or linear whose weight vectors
  (bias included) have cosine similarity ``>= threshold`` are merged: the
  survivor takes over the merged unit's outgoing weights (scaled by the
  ratio of their norms) and the layer gets narrower. Merging is exact for
  duplicates up to a positive scale when the channels reach their consumers
  only through positively homogeneous ops (relu, pooling, reshapes); other
  layers are left alone, so run ``fold-constants`` first to fold batch norms.

Run ``share-weights`` after ``fold-constants`` (which would decode small
codebooks back into floats).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 16)))
    >>> w = g.const(np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32), name="fc.weight")
    >>> g.set_outputs([g.call("linear", x, w)])
    >>> shared = ShareWeights(bits=2, min_elements=1)(g)
    >>> shared.value("fc.weight").producer.op, shared.value("fc.weight.codebook").type.shape
    ('codebook_decode', (4,))
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from slimgraph.analysis.channels import ChannelGroup, analyze_channels, rewrite_channels
from slimgraph.ir.graph import Graph, Value
from slimgraph.ir.ops.compress import pack_codes
from slimgraph.passes.errors import OptionValueError
from slimgraph.passes.prune import LayerSelection, weight_layers
from slimgraph.passes.registry import Pass, option, register_pass

#: Ops through which a channel that is a positive multiple of another stays one (f(a*x) = a*f(x), a > 0).
_HOMOGENEOUS = {
    "relu", "leaky_relu", "identity", "max_pool", "avg_pool", "global_avg_pool", "global_max_pool",
    "reshape", "flatten", "squeeze", "unsqueeze",
}  # fmt: skip


@register_pass("share-weights")
class ShareWeights(Pass):
    """Share weights: per-layer k-means codebooks, or merge near-identical neurons and filters."""

    compresses = True

    method: Literal["kmeans", "merge"] = option("kmeans", "k-means codebooks, or merging similar units")
    bits: int = option(4, "kmeans: bits per code (2^bits centroids), 1..8")
    min_elements: int = option(64, "kmeans: smaller weights stay float", minimum=0)
    iterations: int = option(30, "kmeans: the most Lloyd iterations per layer", minimum=1)
    threshold: float = option(0.95, "merge: cosine similarity at or above which two units merge, in (0, 1]")
    skip: tuple[str, ...] = option((), "weight names or glob patterns left alone")
    overrides: tuple[str, ...] = option((), "kmeans: pattern:bits entries, other bits for matching layers")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bits(self.bits, "bits")
        if not 0.0 < self.threshold <= 1.0:
            raise OptionValueError(
                f"bad value {self.threshold!r} for option 'threshold' of pass '{self.name}': must lie in (0, 1]",
                pass_name=self.name,
                option="threshold",
            )
        self._selection()

    def _selection(self) -> LayerSelection:
        return LayerSelection(self.name, float(self.bits), self.skip, self.overrides, check=_check_bits_override)

    def apply(self, graph: Graph) -> Graph | None:
        return self._kmeans(graph) if self.method == "kmeans" else self._merge(graph)

    def _kmeans(self, graph: Graph) -> None:
        selection = self._selection()
        weights = list({id(w): w for _, w in weight_layers(graph)}.values())
        bits = {w.name: int(selection.amount([w.name])) for w in weights}
        selection.check_used(bits)
        for w in weights:
            if bits[w.name] > 0 and w.type.numel() >= self.min_elements:
                share(graph, w, bits[w.name], self.iterations)
        graph.topo_sort()

    def _merge(self, graph: Graph) -> Graph | None:
        selection = LayerSelection(self.name, 1.0, self.skip, ())
        analysis = analyze_channels(graph)
        candidates = [g for g in analysis.groups if mergeable(g)]
        selection.check_used(n for g in candidates for n in g.names)
        keep, merges = {}, {}
        for group in candidates:
            if selection.amount(group.names) == 0:
                continue
            triples = similar_units(group, self.threshold)
            if triples:
                keep[group.id] = np.ones(group.size, bool)
                keep[group.id][[r for r, _, _ in triples]] = False
                merges[group.id] = triples
        return rewrite_channels(graph, analysis, keep, merges) if keep else None


def _check_bits(bits: int, option_name: str) -> None:
    if not 1 <= bits <= 8:
        raise OptionValueError(
            f"bad value {bits!r} for option '{option_name}' of pass 'share-weights': must lie in 1..8",
            pass_name="share-weights",
            option=option_name,
        )


def _check_bits_override(value: float) -> None:
    if value != int(value) or not 0 <= value <= 8:
        raise OptionValueError(
            f"bad bits {value!r} in option 'overrides' of pass 'share-weights': "
            "must be an integer in 1..8 (0 leaves the layer float)",
            pass_name="share-weights",
            option="overrides",
        )


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(centroids float64 [<=k], codes) of a 1-d k-means with linear initialization."""
    values = values.astype(np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    centroids = np.linspace(lo, hi, k) if hi > lo else np.array([lo])
    codes = np.zeros(values.size, np.int64)
    for _ in range(iterations):
        # Sorted centroids: the nearest one is found by bisecting the midpoints.
        codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
        sums = np.bincount(codes, weights=values, minlength=len(centroids))
        counts = np.bincount(codes, minlength=len(centroids))
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = np.sort(updated)
    codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
    return centroids, codes


def share(graph: Graph, weight: Value, bits: int, iterations: int = 30) -> Value:
    """Replace constant ``weight`` by ``codebook_decode(codes, codebook)`` (same name); returns it."""
    array = weight.const_value
    flat = array.astype(np.float64).ravel()
    zeros = flat == 0
    k = 2**bits
    if zeros.any() and not zeros.all() and k > 1:
        # Pruned zeros keep their own exact centroid, so sparsity survives sharing.
        centroids, codes = kmeans_1d(flat[~zeros], k - 1, iterations)
        codebook = np.concatenate([[0.0], centroids])
        all_codes = np.zeros(flat.size, np.int64)
        all_codes[~zeros] = codes + 1
    else:
        codebook, all_codes = kmeans_1d(flat, k, iterations)
    name = weight.name
    codes_v = graph.const(pack_codes(all_codes, bits), name=f"{name}.codes")
    book_v = graph.const(codebook, name=f"{name}.codebook", dtype=weight.type.dtype)
    decoded = graph.call("codebook_decode", codes_v, book_v, bits=bits, shape=array.shape, name=f"{name}.decoded")
    graph.replace_all_uses(weight, decoded)
    graph.remove_node(weight.producer)
    graph.rename(decoded, name)
    return decoded


def mergeable(group: ChannelGroup) -> bool:
    """One producer, channels reaching only channel-mixing consumers through homogeneous ops."""
    return (
        group.prunable
        and len(group.producers) == 1
        and bool(group.consumers)
        and all(n.op in _HOMOGENEOUS for n in group.carriers)
    )


def similar_units(group: ChannelGroup, threshold: float) -> list[tuple[int, int, float]]:
    """``(removed, survivor, alpha)`` for each unit whose vector is within ``threshold``
    cosine similarity of an earlier survivor; ``alpha`` is its scale relative to it."""
    producer = group.producers[0]
    w = producer.inputs[1].const_value.astype(np.float64)
    axis = 1 if producer.op == "linear" and not producer.attrs["trans_b"] else 0
    vectors = np.moveaxis(w, axis, 0).reshape(group.size, -1)
    if len(producer.inputs) > 2:
        vectors = np.concatenate([vectors, producer.inputs[2].const_value.astype(np.float64).reshape(-1, 1)], axis=1)
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.maximum(norms, 1e-30)[:, None]
    sims = unit @ unit.T
    merged: dict[int, int] = {}
    triples = []
    for i in range(group.size):
        if i in merged or norms[i] == 0:
            continue
        for j in range(i + 1, group.size):
            if j not in merged and sims[i, j] >= threshold - 1e-12:
                merged[j] = i
                triples.append((j, i, float(vectors[j] @ vectors[i] / (norms[i] ** 2))))
    return triples

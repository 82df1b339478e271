"""torch's indexing ops (gather, scatter, scatter_add, scatter_reduce, one_hot, index_select,
tensor indexing) through both import paths and compiled, against torch eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimgraph.errors import FrontendError, IndexOutOfRangeError
from slimgraph.frontends.torch import from_torch


class Indexing(nn.Module):
    def forward(self, x, i, j):
        u = x[:, :2] * 2
        return (
            torch.gather(x, 1, i) + x.gather(0, j[:2]).sum(),
            x.scatter(1, i, u),
            x.scatter(1, i, 2.5),
            torch.scatter_add(x, 1, i, u),
            x.scatter_reduce(0, j, u, "amax"),
            x.scatter_reduce(1, i, u, "prod"),
            torch.scatter_reduce(x, 1, j, u, "amin"),
            F.one_hot(i, 6) * 3,
            x.index_select(1, i[0]),
            x[j[:, 0]],
        )


X = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
I = torch.tensor([[4, 0], [1, 3], [2, 4]])  # distinct per row: plain scatter has no duplicate targets
J = torch.tensor([[2, 0], [2, 2], [0, 1]])  # below 3, with duplicates for the reductions


def _expected():
    with torch.no_grad():
        return [t.numpy() for t in Indexing()(X, I, J)]


@pytest.mark.parametrize("method", ["export", "fx"])
def test_indexing_ops_match_torch(method):
    graph, info = from_torch(Indexing(), (X, I, J), method=method, return_info=True)
    assert info.path == method
    ops = {n.op for n in graph.nodes}
    assert {"gather_elements", "scatter_elements", "gather"} <= ops
    for got, want in zip(graph.run(X.numpy(), I.numpy(), J.numpy()), _expected()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_indexing_ops_compiled_match_torch():
    from slimgraph.api import compile

    model = compile(Indexing(), (X, I, J))
    for got, want in zip(model(X.numpy(), I.numpy(), J.numpy()), _expected()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(IndexOutOfRangeError, match="gather_elements axis 1 of size 5"):
        model(X.numpy(), (I + 5).numpy(), J.numpy())


class IndexPut(nn.Module):
    def forward(self, x, i, v):
        y = x.clone()
        y[i] = v  # aten.index_put: a scatter_nd of the rows
        return y, x.index_put((i, i), v[:, 0], accumulate=True), x.index_put((i,), v[:1], accumulate=True)


def test_index_put_is_scatter_nd_and_checked():
    from slimgraph.api import compile

    x, i, v = X, torch.tensor([0, -1]), torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    graph = from_torch(IndexPut(), (x, i, v), method="export")
    assert [n.op for n in graph.nodes].count("scatter_nd") == 3
    with torch.no_grad():
        want = [t.numpy() for t in IndexPut()(x, i, v)]
    model = compile(IndexPut(), (x, i, v))
    for outs in (graph.run(x.numpy(), i.numpy(), v.numpy()), model(x.numpy(), i.numpy(), v.numpy())):
        for got, expected in zip(outs, want):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(IndexOutOfRangeError, match="scatter_nd coordinates into axes of sizes"):
        model(x.numpy(), np.array([0, 3]), v.numpy())


@pytest.mark.parametrize("method", ["export", "fx"])
def test_unsupported_scatter_forms_say_what_is_supported(method):
    module = type("M", (nn.Module,), {"forward": lambda self, x, i: x.scatter_reduce(1, i, x[:, :2], "mean")})()
    with pytest.raises(FrontendError, match="reduce='mean'.*supported: sum, prod, amax, amin"):
        from_torch(module, (X, I), method=method)

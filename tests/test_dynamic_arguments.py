"""``dynamic=`` parsing (slimgraph.dynamic): both accepted forms, bounds shared by name, and
an ArgumentError naming the entry for each kind of mistake."""

from __future__ import annotations

import pytest

from slimgraph.dynamic import UNBOUNDED, DynamicDim, bounds_of, parse_dynamic
from slimgraph.errors import ArgumentError

NAMES, RANKS = ["ids", "mask"], [2, 2]


def test_mapping_by_position_or_name_and_tuple_form_agree():
    by_position = parse_dynamic({0: {0: ("b", 1, 8), 1: "s"}, 1: {0: "b", -1: "s"}}, 2, NAMES, RANKS)
    by_name = parse_dynamic({"ids": {0: ("b", 1, 8), 1: "s"}, "mask": {0: "b", 1: "s"}}, 2, NAMES, RANKS)
    as_tuple = parse_dynamic(({0: ("b", 1, 8), 1: "s"}, {0: "b", 1: "s"}), 2, NAMES, RANKS)
    assert by_position == by_name == as_tuple
    assert by_position[1] == {0: DynamicDim("b", 1, 8), 1: DynamicDim("s", 1, UNBOUNDED)}
    assert bounds_of(by_position) == {"b": (1, 8), "s": (1, UNBOUNDED)}


def test_torch_export_dims_give_their_names_and_bounds():
    torch = pytest.importorskip("torch")
    seq = torch.export.Dim("seq", min=2, max=384)
    assert parse_dynamic(({1: seq}, None), 2, NAMES, RANKS) == {0: {1: DynamicDim("seq", 2, 384)}}


@pytest.mark.parametrize("dynamic,message", [
    ("batch", "give a mapping"),
    ({0: {0: "b"}}.items(), "give a mapping"),
    ([{0: "b"}], "1 entries for 2 inputs"),
    ({2: {0: "b"}}, "input 2 does not exist"),
    ({"labels": {0: "b"}}, "no input named 'labels'; input names: 'ids', 'mask'"),
    ({0: [0]}, r"dynamic\[0\]=\[0\]: give a mapping"),
    ({0: {2: "b"}}, "input 0 has 2 axes; no axis 2"),
    ({0: {0: "2b"}}, "'2b' is not a valid dim name"),
    ({0: {0: "b*s"}}, "'b\\*s' is not a valid dim name"),
    ({0: {0: ("b", 0, 4)}}, "min=0: must be an integer >= 1"),
    ({0: {0: ("b", 4, 2)}}, "max=2: must be an integer >= 4"),
    ({0: {0: ("b", 1, 4)}, 1: {0: ("b", 1, 8)}}, "b is declared with bounds 1..8 here and 1..4 elsewhere"),
    ({0: {0: 3}}, "give a name, a \\(name, min, max\\) tuple or a torch.export.Dim"),
])
def test_mistakes_name_the_entry(dynamic, message):
    with pytest.raises(ArgumentError, match=message):
        parse_dynamic(dynamic, 2, NAMES, RANKS)

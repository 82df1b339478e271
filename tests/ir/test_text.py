"""The text form: print -> parse -> print is the identity, and malformed text fails with line:col."""

from __future__ import annotations

import os

import numpy as np
import pytest

from slimgraph.errors import ParseError, SlimgraphError
from slimgraph.ir import Graph, TensorType, load, parse, print_graph
from slimgraph.ir.printer import collect_payloads

from tests.ir.graphs import GRAPHS, random_inputs


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_round_trip_text_and_bits(name: str, tmp_path) -> None:
    graph = GRAPHS[name]()
    graph.verify()
    text = print_graph(graph)
    parsed = parse(text, collect_payloads(graph))
    assert print_graph(parsed) == text
    assert parsed == graph
    parsed.verify()
    inputs = random_inputs(graph)
    for a, b in zip(graph.run(*inputs), parsed.run(*inputs)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    # everything inline parses back too, and so does the saved file pair
    assert parse(print_graph(graph, inline_limit=None)) == graph
    graph.save(tmp_path / "g.sg")
    loaded = load(tmp_path / "g.sg")
    assert loaded == graph
    for a, b in zip(graph.run(*inputs), loaded.run(*inputs)):
        assert a.tobytes() == b.tobytes()


def test_special_floats_and_names_round_trip() -> None:
    g = Graph("odd name/with spaces")
    x = g.add_input("in put", TensorType("f32", (5,)))
    c = g.const(np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], np.float32), name="c:1")
    y = g.call("identity", g.call("cast", x, to="f32"), name="y-1", loc='a "quoted" loc')
    g.set_outputs([y, c])
    text = str(g)
    back = parse(text)
    assert str(back) == text
    np.testing.assert_array_equal(back.consts()["c:1"], g.consts()["c:1"])
    assert np.signbit(back.consts()["c:1"][3])


def test_every_dtype_constant_round_trips() -> None:
    import ml_dtypes

    g = Graph("dtypes")
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal(20).astype(np.float32),
        "f64": rng.standard_normal(20),
        "f16": rng.standard_normal(20).astype(np.float16),
        "bf16": rng.standard_normal(20).astype(ml_dtypes.bfloat16),
        "i4": rng.integers(-8, 8, 20).astype(ml_dtypes.int4),
        "i8": rng.integers(-128, 128, 20).astype(np.int8),
        "u8": rng.integers(0, 256, 20).astype(np.uint8),
        "i32": rng.integers(-(2**31), 2**31, 20).astype(np.int32),
        "i64": rng.integers(-(2**62), 2**62, 20).astype(np.int64),
        "bool": rng.integers(0, 2, 20).astype(bool),
    }
    outs = [g.const(a, name=f"c_{k}", dtype=k) for k, a in arrays.items()]
    outs += [g.const(a[:3], name=f"small_{k}", dtype=k) for k, a in arrays.items()]
    g.set_outputs(outs)
    for limit in (None, 16):
        back = parse(print_graph(g, inline_limit=limit), collect_payloads(g, inline_limit=limit))
        assert back == g
        for k, a in arrays.items():
            got = back.consts()[f"c_{k}"]
            assert got.dtype == a.dtype and got.tobytes() == a.tobytes()


def test_save_is_atomic_and_clears_stale_sidecar(tmp_path) -> None:
    g = GRAPHS["mlp"]()
    path = tmp_path / "m.sg"
    g.save(path)
    assert os.path.exists(str(path) + ".weights")
    small = Graph("s")
    x = small.add_input("x", TensorType("f32", (2,)))
    small.set_outputs([small.call("identity", x)])
    small.save(path)
    assert not os.path.exists(str(path) + ".weights")
    assert sorted(os.listdir(tmp_path)) == ["m.sg"]


def test_missing_payload_and_missing_file(tmp_path) -> None:
    g = GRAPHS["mlp"]()
    with pytest.raises(ParseError, match="has no payload"):
        parse(str(g))
    with pytest.raises(SlimgraphError, match="no such file"):
        load(tmp_path / "nope.sg")
    (tmp_path / "bad.sg").write_text("graph @g() -> () {\n  return\n}\n")
    (tmp_path / "bad.sg.weights").write_bytes(b"not a zip")
    with pytest.raises(SlimgraphError, match="bad.sg.weights"):
        load(tmp_path / "bad.sg")


HEADER = "graph @g(%x: f32[N,4], %i: i64[2]) -> (f32[N,4]) {\n"

# (text, line, col, fragment of the message)
MALFORMED = [
    ("", 1, 1, "expected 'graph'"),
    ("grap @g() -> () {\n}", 1, 1, "expected 'graph'"),
    ("graph g() -> () {}", 1, 7, "graph name"),
    ("graph @g(x: f32[1]) -> () {}", 1, 10, "an input such as %x"),
    ("graph @g(%x f32[1]) -> () {}", 1, 13, "expected ':'"),
    ("graph @g(%x: f33[1]) -> () {}", 1, 14, "unknown dtype 'f33'"),
    ("graph @g(%x: f32[1,-3]) -> () {}", 1, 20, "bad dim"),
    ("graph @g(%x: f32[1) -> () {}", 1, 19, "between dims"),
    ("graph @g(%x: f32[1], %x: f32[1]) -> () {}", 1, 22, "defined twice"),
    ("graph @g(%x: f32[1]) -> (f32[1]) {\n  return %x\n", 3, 1, "unterminated graph"),
    ("graph @g(%x: f32[1]) -> (f32[1]) {\n  %y = relu(%x) : f32[1]\n", 3, 1, "unterminated graph"),
    (HEADER + "  %y = frobnicate(%x) : f32[N,4]\n  return %y\n}", 2, 8, "unknown op 'frobnicate'"),
    (HEADER + "  %y = relu(%z) : f32[N,4]\n  return %y\n}", 2, 13, "undefined value %z"),
    (HEADER + "  %x = relu(%x) : f32[N,4]\n  return %x\n}", 2, 3, "defined twice"),
    (HEADER + "  %y = relu(%x) : f32[N,4]\n  %y = relu(%x) : f32[N,4]\n  return %y\n}", 3, 3, "defined twice"),
    (HEADER + "  %y = relu(%x, %x) : f32[N,4]\n  return %y\n}", 2, 8, "takes 1 inputs, got 2"),
    (HEADER + "  %y = add(%x) : f32[N,4]\n  return %y\n}", 2, 8, "takes 2 inputs, got 1"),
    (HEADER + "  %y = cast(%x) {too=f16} : f16[N,4]\n  return %y\n}", 2, 18, "unknown attribute 'too'"),
    (HEADER + "  %y = cast(%x) {to=f17} : f16[N,4]\n  return %y\n}", 2, 21, "unexpected 'f17'"),
    (HEADER + "  %y = cast(%x) : f16[N,4]\n  return %y\n}", 2, 8, "missing required attribute 'to'"),
    (HEADER + "  %y = cast(%x) {to=f16 : f16[N,4]\n  return %y\n}", 2, 25, "between attributes"),
    (HEADER + "  %y = cast(%x) {to=f16, to=f32} : f16[N,4]\n  return %y\n}", 2, 26, "given twice"),
    (HEADER + "  %y = relu(%x) : f32[N,5]\n  return %y\n}", 2, 19, "does not match the inferred f32[N,4]"),
    (HEADER + "  %y = relu(%x) : f32[N,4], f32[N,4]\n  return %y\n}", 2, 19, "1 outputs but 2 types"),
    (HEADER + "  %y = relu(%x)\n  return %y\n}", 3, 3, "expected ':'"),
    (HEADER + "  %y = relu(%x : f32[N,4]\n  return %y\n}", 2, 16, "between inputs"),
    (HEADER + "  %y = relu(%x) : f32[N,4]\n  return %y, %y\n}", 3, 3, "declares 1 results but returns 2"),
    (HEADER + "  %c = const [1.0, 2.0] : f32[3]\n  return %x\n}", 2, 14, "2 elements but its type f32[3] needs 3"),
    (HEADER + "  %c = const [1.0, 2.0 : f32[2]\n  return %x\n}", 2, 24, "between list items"),
    (HEADER + "  %c = const @w9 : f32[300]\n  return %x\n}", 2, 14, "constant @w9 has no payload"),
    (HEADER + "  %c = const : f32[1]\n  return %x\n}", 2, 14, "constant payload"),
    (HEADER + "  %c = const [300] : i8[1]\n  return %x\n}", 2, 14, "do not fit"),
    (HEADER + "  %y = relu(%x) : f32[N,4] loc(here)\n  return %y\n}", 2, 32, "a quoted location"),
    (HEADER + "  %y = relu(%x) : f32[N,4]\n  return %y\n} trailing", 4, 3, "after the end of the graph"),
    (HEADER + "  %y = relu(%x) : f32[N,4]\n  ret %y\n}", 3, 3, "expected a node"),
    (HEADER + "  %y = relu(%x) : f32[N,4] ? \n  return %y\n}", 2, 28, "unexpected character '?'"),
    ("graph @g(%x: f32[1]) -> (f32[2]) {\n  return %x\n}", 1, 26, "declares f32[2]"),
    (HEADER + "  %y = cast(%x) {to=\"f16\n  return %y\n}", 2, 21, "unexpected character"),
    (HEADER + '  %y = leaky_relu(%x) {alpha="big"} : f32[N,4]\n  return %y\n}', 2, 24, "alpha"),
]


@pytest.mark.parametrize("text,line,col,fragment", MALFORMED, ids=[m[3] for m in MALFORMED])
def test_malformed_text_names_line_and_column(text: str, line: int, col: int, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    err = info.value
    assert fragment in str(err), str(err)
    assert (err.line, err.col) == (line, col), str(err)


def test_at_least_25_malformed_cases() -> None:
    assert len(MALFORMED) >= 25


def test_parse_error_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.sg"
    path.write_text("graph @g() -> () {\n  %y = nope() : f32[1]\n  return\n}\n")
    with pytest.raises(ParseError, match=r"broken\.sg:2:8: unknown op 'nope'"):
        load(path)

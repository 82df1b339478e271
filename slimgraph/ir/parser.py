"""Parse the IR's text form (see :mod:`slimgraph.ir.printer`) back into a Graph.

Every error is a :class:`~slimgraph.errors.ParseError` with the line and
column of the offending token: unknown ops, bad types, undefined or twice
defined values, wrong arity, bad attributes, types that disagree with the op's
inference, unterminated blocks.

Example::

    >>> from slimgraph.ir import parse
    >>> g = parse('''
    ... graph @g(%x: f32[N,4]) -> (f32[N,4]) {
    ...   %y = relu(%x) : f32[N,4]
    ...   return %y
    ... }''')
    >>> [n.op for n in g.nodes]
    ['relu']
    >>> parse("graph @g() -> () {\\n  %y = frobnicate() : f32[1]\\n}")
    Traceback (most recent call last):
    ...
    slimgraph.errors.ParseError: <text>:2:8: unknown op 'frobnicate'
"""

from __future__ import annotations

import bisect
import json
import re
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from slimgraph.errors import GraphError, OpError, ParseError
from slimgraph.ir.graph import MAX_REGION_DEPTH, Graph
from slimgraph.ir.registry import has_op, get_op
from slimgraph.ir.types import DType, TensorType, check_dim

_TOKEN = re.compile(
    r"""
    (?:\s+|\#[^\n]*)*  # whitespace and comments ride along with the next token
    (?:(?P<pname>%(?:[A-Za-z0-9_.$/]+|"(?:[^"\\]|\\.)*"))
  | (?P<aname>@(?:[A-Za-z0-9_.$/:]+|"(?:[^"\\]|\\.)*"))
  | (?P<arrow>->)
  | (?P<number>[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?|\d+)(?![A-Za-z_]))
  | (?P<negword>-(?:inf|nan)\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<punct>[(){}\[\],=:<>*])
  | (?P<eof>\Z))
    """,
    re.VERBOSE,
)


class _Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int):
        self.kind = kind
        self.text = text
        self.pos = pos

    def __repr__(self) -> str:
        return f"{self.kind}:{self.text!r}"


def parse(text: str, payloads: Mapping[str, np.ndarray] | None = None, source: str | None = None) -> Graph:
    """Parse one graph. ``payloads`` supplies the arrays of ``@ref`` constants;
    ``source`` names the file in error messages."""
    return _Parser(text, payloads or {}, source).parse_top()


class _Parser:
    def __init__(self, text: str, payloads: Mapping[str, np.ndarray], source: str | None):
        self.text = text
        self.payloads = payloads
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.toks = self._tokenize()
        self.i = 0
        self.type_cache: dict[str | None, TensorType] = {}
        self.depth = 0  # regions open around the current token

    # -- tokens -------------------------------------------------------------

    def _tokenize(self) -> list[_Tok]:
        toks: list[_Tok] = []
        append = toks.append
        expected = 0
        for m in _TOKEN.finditer(self.text):
            if m.start() != expected:
                break
            expected = m.end()
            kind = m.lastgroup
            append(_Tok(kind, m.group(kind), m.start(kind)))
            if kind == "eof":
                return toks
        skipped = re.match(r"(?:\s+|\#[^\n]*)*", self.text[expected:]).end()
        pos = expected + skipped
        raise self.error(f"unexpected character {self.text[pos]!r}", pos)

    def error(self, message: str, pos: int) -> ParseError:
        line = bisect.bisect_right(self.line_starts, pos)
        col = pos - self.line_starts[line - 1] + 1
        return ParseError(message, line=line, col=col, source=self.source)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.toks[self.i]
        return tok.text == text and tok.kind in ("punct", "ident", "arrow")

    def expect(self, text: str, context: str = "") -> _Tok:
        tok = self.next()
        if tok.text != text or tok.kind not in ("punct", "ident", "arrow"):
            found = "end of input" if tok.kind == "eof" else repr(tok.text)
            raise self.error(f"expected {text!r}{context}, found {found}", tok.pos)
        return tok

    def expect_kind(self, kind: str, what: str) -> _Tok:
        tok = self.next()
        if tok.kind != kind:
            found = "end of input" if tok.kind == "eof" else repr(tok.text)
            raise self.error(f"expected {what}, found {found}", tok.pos)
        return tok

    @staticmethod
    def name_of(tok: _Tok) -> str:
        body = tok.text[1:]
        return json.loads(body) if body.startswith('"') else body

    # -- grammar ------------------------------------------------------------

    def parse_top(self) -> Graph:
        graph = self.parse_graph(prefix="")
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error(f"unexpected {tok.text!r} after the end of the graph", tok.pos)
        return graph

    def parse_graph(self, prefix: str) -> Graph:
        start = self.expect("graph")
        graph = Graph(self.name_of(self.expect_kind("aname", "a graph name such as @main")))
        self.expect("(")
        while not self.at(")"):
            tok = self.expect_kind("pname", "an input such as %x")
            self.expect(":")
            ttype = self.parse_type()
            try:
                graph.add_input(self.name_of(tok), ttype)
            except GraphError as exc:
                raise self.error(str(exc), tok.pos) from None
            if not self.at(")"):
                self.expect(",", " between inputs")
        self.expect(")")
        self.expect("->")
        self.expect("(")
        declared_outs: list[tuple[TensorType, _Tok]] = []
        while not self.at(")"):
            tok = self.peek()
            declared_outs.append((self.parse_type(), tok))
            if not self.at(")"):
                self.expect(",", " between result types")
        self.expect(")")
        self.expect("{")
        while True:
            tok = self.peek()
            if tok.kind == "pname":
                self.parse_node(graph, prefix)
            elif tok.kind == "ident" and tok.text == "return":
                break
            elif tok.kind == "eof":
                raise self.error(f"unterminated graph @{graph.name} (opened at {self._where(start.pos)}): expected 'return'", tok.pos)
            else:
                raise self.error(f"expected a node such as '%y = relu(%x) : f32[1]' or 'return', found {tok.text!r}", tok.pos)
        ret = self.next()
        outs = []
        if self.peek().kind == "pname":
            outs.append(self.lookup(graph, self.next()))
            while self.at(","):
                self.next()
                outs.append(self.lookup(graph, self.expect_kind("pname", "a value after ','")))
        end = self.peek()
        if end.kind == "eof":
            raise self.error(f"unterminated graph @{graph.name} (opened at {self._where(start.pos)}): expected '}}'", end.pos)
        self.expect("}", " to close the graph")
        if len(outs) != len(declared_outs):
            raise self.error(f"graph @{graph.name} declares {len(declared_outs)} results but returns {len(outs)}", ret.pos)
        for value, (ttype, tok) in zip(outs, declared_outs):
            if value.type != ttype:
                raise self.error(f"result %{value.name} is {value.type} but the graph declares {ttype}", tok.pos)
        graph.set_outputs(outs)
        return graph

    def _where(self, pos: int) -> str:
        err = self.error("", pos)
        return f"{err.line}:{err.col}"

    def lookup(self, graph: Graph, tok: _Tok):
        name = self.name_of(tok)
        if not graph.has_value(name):
            raise self.error(f"undefined value %{name}", tok.pos)
        return graph.value(name)

    def parse_type(self) -> TensorType:
        # Types repeat a lot in real graphs; parse each spelling once.
        start = self.i
        end = start + 2
        while end < len(self.toks) and self.toks[end].text != "]" and self.toks[end].kind != "eof":
            end += 1
        key = self.text[self.toks[start].pos : self.toks[end].pos + 1] if end < len(self.toks) else None
        cached = self.type_cache.get(key)
        if cached is not None:
            self.i = end + 1
            return cached
        ttype = self._parse_type()
        self.type_cache[key] = ttype
        return ttype

    def _parse_type(self) -> TensorType:
        tok = self.expect_kind("ident", "a type such as f32[1,3]")
        try:
            dtype = DType.of(tok.text)
        except GraphError:
            raise self.error(f"unknown dtype {tok.text!r}; valid: {', '.join(d.value for d in DType)}", tok.pos) from None
        self.expect("[", " after the dtype")
        dims = []
        while not self.at("]"):
            dims.append(self.parse_dim())
            if not self.at("]"):
                self.expect(",", " between dims")
        self.expect("]")
        return TensorType(dtype, tuple(dims))

    def parse_dim(self):
        tok = self.next()
        if tok.kind == "number" and tok.text.isdigit():
            parts = [tok.text]
        elif tok.kind == "ident":
            parts = [tok.text]
        else:
            raise self.error(f"bad dim {tok.text!r}: expected a non-negative int or a symbol such as N", tok.pos)
        while self.at("*"):
            self.next()
            part = self.next()
            if not (part.kind == "ident" or (part.kind == "number" and part.text.isdigit())):
                raise self.error(f"bad dim factor {part.text!r}", part.pos)
            parts.append(part.text)
        try:
            return check_dim(int(parts[0]) if len(parts) == 1 and parts[0].isdigit() else "*".join(parts))
        except GraphError as exc:
            raise self.error(str(exc), tok.pos) from None

    def parse_node(self, graph: Graph, prefix: str) -> None:
        out_toks = [self.next()]
        while self.at(","):
            self.next()
            out_toks.append(self.expect_kind("pname", "an output name such as %y"))
        seen = set()
        for tok in out_toks:
            name = self.name_of(tok)
            if graph.has_value(name) or name in seen:
                raise self.error(f"value %{name} is defined twice", tok.pos)
            seen.add(name)
        self.expect("=", " after the node's outputs")
        op_tok = self.expect_kind("ident", "an op name")
        op = op_tok.text
        if not has_op(op):
            raise self.error(f"unknown op {op!r}", op_tok.pos)
        attrs: dict[str, Any] = {}
        attr_toks: dict[str, _Tok] = {}
        inputs = []
        payload_tok = None
        if op == "const":
            payload_tok = self.peek()
            if payload_tok.kind == "aname":
                self.next()
            elif self.at("["):
                literal = self.parse_literal()
            else:
                raise self.error("expected a constant payload: @ref or a [..] list", payload_tok.pos)
        else:
            self.expect("(", f" after the op name {op!r}")
            while not self.at(")"):
                inputs.append(self.lookup(graph, self.expect_kind("pname", "an input value such as %x")))
                if not self.at(")"):
                    self.expect(",", " between inputs")
            self.expect(")")
        if self.at("{"):
            self.parse_attrs(attrs, attr_toks, op, prefix + self.name_of(out_toks[0]) + "::")
        self.expect(":", " before the result types")
        type_toks = [self.peek()]
        types = [self.parse_type()]
        while self.at(","):
            self.next()
            type_toks.append(self.peek())
            types.append(self.parse_type())
        loc = None
        if self.at("loc"):
            self.next()
            self.expect("(")
            loc = json.loads(self.expect_kind("string", "a quoted location").text)
            self.expect(")")
        if len(types) != len(out_toks):
            raise self.error(f"{len(out_toks)} outputs but {len(types)} types", type_toks[0].pos)
        if op == "const":
            attrs["value"] = self.const_payload(payload_tok, types[0], prefix + self.name_of(out_toks[0]),
                                                None if payload_tok.kind == "aname" else literal)
        opdef = get_op(op)
        where = self.name_of(out_toks[0])
        if not opdef.arity_ok(len(inputs)):
            try:
                opdef.infer_types([v.type for v in inputs], {}, where=f"%{where}")
            except OpError as exc:
                raise self.error(str(exc), op_tok.pos) from None
        try:
            full = opdef.normalize_attrs(attrs, where=f"%{where}")
        except OpError as exc:
            bad = next((attr_toks[k] for k in attrs if k in attr_toks and k in str(exc)), op_tok)
            raise self.error(str(exc), bad.pos) from None
        try:
            inferred = opdef.infer_types([v.type for v in inputs], full, where=f"%{where}")
        except GraphError as exc:
            raise self.error(str(exc), op_tok.pos) from None
        if len(inferred) != len(types):
            raise self.error(f"{op} produces {len(inferred)} outputs here, but {len(types)} are declared", out_toks[0].pos)
        for got, want, tok in zip(types, inferred, type_toks):
            if got != want:
                raise self.error(f"declared type {got} does not match the inferred {want}", tok.pos)
        graph.add_node(op, inputs, full, names=[self.name_of(t) for t in out_toks], types=types, loc=loc)

    def const_payload(self, tok: _Tok, ttype: TensorType, key_default: str, literal) -> np.ndarray:
        if literal is None:
            key = self.name_of(tok)
            if key not in self.payloads:
                raise self.error(f"constant @{key} has no payload (load the file with its .weights sidecar, or pass payloads)", tok.pos)
            raw = np.asarray(self.payloads[key])
            return self.shape_payload(raw, ttype, tok)
        return self.shape_payload(literal, ttype, tok)

    def shape_payload(self, raw: Any, ttype: TensorType, tok: _Tok) -> np.ndarray:
        if not ttype.is_static:
            raise self.error(f"a constant needs a static type, got {ttype}", tok.pos)
        dtype = ttype.dtype.numpy
        count = ttype.numel()
        if isinstance(raw, np.ndarray) and raw.dtype == np.uint8 and raw.ndim == 1 and dtype != np.uint8:
            raw = raw.view(dtype) if raw.size == count * dtype.itemsize else raw
        flat = np.asarray(raw)
        if flat.size != count:
            raise self.error(f"constant has {flat.size} elements but its type {ttype} needs {count}", tok.pos)
        if ttype.dtype.is_int and flat.dtype != dtype and flat.size:
            info = ml_dtypes.iinfo(dtype) if ttype.dtype is DType.int4 else np.iinfo(dtype)
            if flat.dtype.kind not in "iub" or flat.min() < info.min or flat.max() > info.max:
                raise self.error(f"constant values do not fit {ttype.dtype.name} ({info.min}..{info.max})", tok.pos)
        try:
            if flat.dtype != dtype:
                flat = np.asarray(flat, dtype=np.float64 if ttype.dtype.is_float else None).astype(dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            raise self.error(f"constant values do not fit {ttype.dtype.name}: {exc}", tok.pos) from None
        return flat.reshape(tuple(int(d) for d in ttype.shape))

    def parse_attrs(self, attrs: dict, attr_toks: dict, op: str, prefix: str) -> None:
        self.expect("{")
        while not self.at("}"):
            tok = self.expect_kind("ident", "an attribute name")
            if tok.text in attrs:
                raise self.error(f"attribute {tok.text!r} given twice", tok.pos)
            self.expect("=", f" after attribute {tok.text!r}")
            attr_toks[tok.text] = tok
            attrs[tok.text] = self.parse_attr_value(prefix)
            if not self.at("}"):
                if self.peek().kind == "eof":
                    raise self.error("unterminated attribute list: expected '}'", self.peek().pos)
                self.expect(",", " between attributes")
        self.expect("}")

    def parse_attr_value(self, prefix: str) -> Any:
        tok = self.peek()
        if tok.kind == "ident" and tok.text == "graph":
            # counted here, before recursing, so that deep text fails with a ParseError, not a RecursionError
            self.depth += 1
            if self.depth > MAX_REGION_DEPTH:
                raise self.error(f"regions nest more than {MAX_REGION_DEPTH} levels deep", tok.pos)
            try:
                return self.parse_graph(prefix)
            finally:
                self.depth -= 1
        if tok.kind == "ident" and tok.text == "dense":
            self.next()
            self.expect("<")
            ttype = self.parse_type()
            self.expect(">")
            payload = self.peek()
            if payload.kind == "aname":
                self.next()
                return self.const_payload(payload, ttype, "", None)
            return self.shape_payload(self.parse_literal(), ttype, payload)
        if tok.kind == "ident" and tok.text not in ("true", "false", "nan", "inf", "none"):
            self.next()
            try:
                return DType.of(tok.text)
            except GraphError:
                raise self.error(f"unexpected {tok.text!r} as an attribute value", tok.pos) from None
        return self.parse_literal()

    def parse_literal(self) -> Any:
        tok = self.next()
        if tok.kind == "number":
            return float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
        if tok.kind == "negword":
            return float(tok.text)
        if tok.kind == "string":
            return json.loads(tok.text)
        if tok.kind == "ident":
            words = {"true": True, "false": False, "nan": float("nan"), "inf": float("inf"), "none": None}
            if tok.text in words:
                return words[tok.text]
        if tok.kind == "punct" and tok.text == "[":
            items = []
            while not self.at("]"):
                if self.peek().kind == "eof":
                    raise self.error("unterminated list: expected ']'", self.peek().pos)
                items.append(self.parse_literal())
                if not self.at("]"):
                    self.expect(",", " between list items")
            self.next()
            return items
        found = "end of input" if tok.kind == "eof" else repr(tok.text)
        raise self.error(f"expected a value, found {found}", tok.pos)

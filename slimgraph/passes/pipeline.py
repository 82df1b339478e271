"""Pipelines as text, MLIR-style: ``fold-constants,cse,dce,fuse{max-ops=12}``.

Grammar (whitespace is allowed between tokens)::

    pipeline := item ("," item)*  |  ""
    item     := NAME ( "{" [ option ("," option)* ] "}" )?
    option   := KEY "=" VALUE | KEY "=" "[" [ VALUE ("," VALUE)* ] "]"

``NAME`` is a registered pass or a named pipeline (which expands in place).
Option keys are kebab-case (snake_case is accepted too). Errors name the pass
or option, give the column in the text and list the valid choices.

Example::

    >>> from slimgraph.passes.pipeline import parse_pipeline, format_pipeline
    >>> format_pipeline(parse_pipeline("dce, fuse{max-ops=12}"))
    'dce,fuse{max-ops=12}'
    >>> format_pipeline(parse_pipeline("default")) == named_pipelines()["default"][0]
    True
"""

from __future__ import annotations

import re
from typing import Sequence

from slimgraph.registry import Registry
from slimgraph.passes.errors import PipelineError, PipelineSyntaxError
from slimgraph.passes.registry import Pass, get_pass, registered_passes

#: Named pipelines: name -> (text, doc).
PIPELINES: Registry[str, tuple[str, str]] = Registry("pipeline")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_VALUE = re.compile(r"[^\s,{}\[\]=]+")


def register_pipeline(name: str, text: str, doc: str) -> None:
    """Give a pipeline text a name usable wherever a pass name is (``--pipeline default``)."""
    PIPELINES.register(name, (text, doc))


def named_pipelines() -> dict[str, tuple[str, str]]:
    """Named pipelines: name -> (text, doc)."""
    return dict(PIPELINES)


def parse_pipeline(text: str) -> list[Pass]:
    """Parse pipeline text into pass instances, in order; raises a PipelineError subclass."""
    return _Parser(text, ()).pipeline()


def format_pipeline(passes: Sequence[Pass]) -> str:
    """The pipeline text of a list of passes (options that differ from their defaults only)."""
    return ",".join(p.pipeline_text() for p in passes)


class _Parser:
    def __init__(self, text: str, expanding: tuple[str, ...]):
        self.text = text
        self.pos = 0
        self.expanding = expanding  # named pipelines being expanded, to catch recursion

    def pipeline(self) -> list[Pass]:
        self._skip_ws()
        if self.pos == len(self.text):
            return []
        passes = self._item()
        while True:
            self._skip_ws()
            if self.pos == len(self.text):
                return passes
            self._expect(",", "',' between passes or the end of the pipeline")
            passes += self._item()

    def _item(self) -> list[Pass]:
        self._skip_ws()
        start = self.pos
        name = self._match(_NAME, "a pass name", tuple(registered_passes()) + tuple(PIPELINES))
        self._skip_ws()
        if name in PIPELINES:
            if self._peek("{"):
                raise PipelineSyntaxError(f"named pipeline '{name}' takes no options", text=self.text, position=self.pos)
            if name in self.expanding:
                raise PipelineError(f"named pipeline '{name}' includes itself", text=self.text, position=start)
            return _Parser(PIPELINES[name][0], self.expanding + (name,)).pipeline()
        info = get_pass(name, self.text, start)
        options = self._options(tuple(o.name for o in info.options)) if self._peek("{") else []
        values = {}
        for key, key_pos, raw, raw_pos in options:
            opt = info.option(key, self.text, key_pos)
            if opt.field in values:
                raise PipelineSyntaxError(
                    f"option '{opt.name}' of pass '{name}' is given twice", text=self.text, position=key_pos
                )
            values[opt.field] = opt.parse(raw, name, self.text, raw_pos)
        try:
            return [info.cls(**values)]
        except PipelineError as exc:  # a check made by the pass itself: point at the option's value
            if exc.position is not None:
                raise
            where = next((vp for key, _, _, vp in options if exc.option in (key, key.replace("_", "-"))), start)
            raise type(exc)(
                exc.reason, text=self.text, position=where, choices=exc.choices, pass_name=name, option=exc.option
            ) from None

    def _options(self, valid: tuple[str, ...]) -> list[tuple[str, int, str | list[str], int]]:
        return self._sequence("{", "}", lambda: self._option(valid), "after an option")

    def _option(self, valid: tuple[str, ...]) -> tuple[str, int, str | list[str], int]:
        key_pos = self.pos
        key = self._match(_NAME, "an option name", valid)
        self._skip_ws()
        self._expect("=", f"'=' after option '{key}'")
        self._skip_ws()
        value_pos = self.pos
        if self._peek("["):
            value: str | list[str] = self._sequence("[", "]", lambda: self._match(_VALUE, "a list item"), "in a list")
        else:
            value = self._match(_VALUE, f"a value for option '{key}'")
        return key, key_pos, value, value_pos

    def _sequence(self, open_: str, close: str, item, where: str) -> list:
        """``open_ [item ("," item)*] close``, with whitespace anywhere between tokens."""
        self._expect(open_, f"'{open_}'")
        items: list = []
        self._skip_ws()
        if self._peek(close):
            self.pos += 1
            return items
        while True:
            self._skip_ws()
            items.append(item())
            self._skip_ws()
            if self._peek(close):
                self.pos += 1
                return items
            self._expect(",", f"',' or '{close}' {where}")

    def _skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek(self, char: str) -> bool:
        return self.text.startswith(char, self.pos)

    def _expect(self, char: str, what: str) -> None:
        if not self._peek(char):
            self._fail(what)
        self.pos += 1

    def _match(self, pattern: re.Pattern, what: str, choices: tuple[str, ...] = ()) -> str:
        m = pattern.match(self.text, self.pos)
        if not m:
            self._fail(what, choices)
        self.pos = m.end()
        return m.group()

    def _fail(self, what: str, choices: tuple[str, ...] = ()) -> None:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
        raise PipelineSyntaxError(
            f"expected {what}, found {found}", text=self.text, position=self.pos, choices=choices
        )


register_pipeline(
    "default",
    "canonicalize,fold-constants,cse,dce,merge-linears,fuse",
    "Simplify, fold constants and batch norms, merge duplicates, drop dead code, merge linears that share "
    "an input, then fuse.",
)

"""The pass registry: a pass is a frozen dataclass whose fields are its options.

A pass maps a Graph to a new Graph and never mutates its input: calling a
:class:`Pass` clones the graph and hands the clone to :meth:`Pass.apply`,
which edits it in place (or returns another graph). Options are typed
dataclass fields with defaults; in pipeline text they are written in
kebab-case (``max-ops=12`` fills the field ``max_ops``).

Supported option types: ``int``, ``float``, ``bool``, ``str``,
``Literal["a", "b"]`` (a string with fixed choices) and ``tuple[str, ...]``,
``tuple[int, ...]``, ``tuple[float, ...]`` (written ``[a,b]`` in pipeline
text). Built-in passes are registered when ``slimgraph.passes`` is imported.

Example::

    >>> from slimgraph.passes.registry import Pass, option, register_pass, get_pass
    >>> @register_pass("noop-example")
    ... class NoopExample(Pass):
    ...     '''Returns the graph unchanged (an example).'''
    ...     level: int = option(1, "how hard to do nothing")
    ...     def apply(self, graph):
    ...         return graph
    >>> info = get_pass("noop-example")
    >>> info.doc, [(o.name, o.type_name, o.default) for o in info.options]
    ('Returns the graph unchanged (an example).', [('level', 'int', 1)])
    >>> info.create({"level": 3})
    NoopExample(level=3)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Mapping

from slimgraph.errors import PassError
from slimgraph.ir.graph import Graph
from slimgraph.passes.context import PassContext, call_with_context
from slimgraph.passes.errors import OptionValueError, UnknownOptionError, UnknownPassError
from slimgraph.registry import Registry

_DOC = "slimgraph_doc"
_BOUNDS = "slimgraph_bounds"


def option(default: Any, doc: str = "", *, minimum: float | None = None, maximum: float | None = None) -> Any:
    """Declare a pass option: a dataclass field with a default and a one-line doc. A number
    option may give its valid range: ``minimum``/``maximum`` (inclusive; floats must be finite)."""
    return dataclasses.field(default=default, metadata={_DOC: doc, _BOUNDS: (minimum, maximum)})


class Pass:
    """Base of every pass. Subclasses are frozen dataclasses (``register_pass``
    makes them so) and implement :meth:`apply`.

    ``pass_(graph, ctx)`` returns a new graph; ``graph`` is left as it was.
    ``apply`` may take the run's :class:`~slimgraph.passes.context.PassContext`
    as a second parameter named ``ctx``; without it the pass never sees one.
    A pass that reads ``ctx.calibration_data`` sets ``uses_calibration = True``
    so that callers can tell whether calibration data has a reader.
    """

    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    #: whether the pass changes what the model computes to make it smaller (pruning, quantization):
    #: its result then records the graph before it as its ``origin``, the teacher of fine-tuning
    compresses: ClassVar[bool] = False
    uses_calibration: ClassVar[bool] = False

    def __post_init__(self) -> None:
        info = PASSES.get(self.name)
        if info is not None and info.cls is type(self):
            for opt in info.options:
                object.__setattr__(self, opt.field, opt.check(getattr(self, opt.field), self.name))

    def __call__(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        work = graph.clone()
        result = call_with_context(self.apply, ctx if ctx is not None else PassContext(), work)
        result = work if result is None else result
        if self.compresses and isinstance(result, Graph):
            result.origin = graph.origin if graph.origin is not None else graph
        return result

    def apply(self, graph: Graph, ctx: PassContext) -> Graph | None:
        """Transform ``graph`` (a private clone) in place, or return a new graph; ``ctx`` is the run's context."""
        raise NotImplementedError(f"pass {type(self).__name__} does not implement apply()")

    def pipeline_text(self) -> str:
        """This pass as pipeline text, with the options that differ from their defaults."""
        info = get_pass(self.name)
        opts = [
            f"{o.name}={o.format(getattr(self, o.field))}" for o in info.options if getattr(self, o.field) != o.default
        ]
        return self.name + (f"{{{','.join(opts)}}}" if opts else "")


@dataclass(frozen=True)
class PassOption:
    """One option: ``name`` (kebab-case, as in pipeline text), ``field``
    (snake_case, as in Python), its type, default and doc; ``choices`` for
    Literal options."""

    name: str
    field: str
    type: Any
    default: Any
    doc: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def range_text(self) -> str:
        """The valid range in words (``from 1 to 100``, ``at least 0``), for messages and ``passes``."""
        if self.maximum is None:
            return f"at least {self.minimum}"
        if self.minimum is None:
            return f"at most {self.maximum}"
        return f"from {self.minimum} to {self.maximum}"

    @property
    def type_name(self) -> str:
        if self.choices:
            return "|".join(map(str, self.choices))
        item = _tuple_item(self.type)
        return f"list[{item.__name__}]" if item else self.type.__name__

    def check(self, value: Any, pass_name: str) -> Any:
        """Return a Python ``value`` in canonical form or raise OptionValueError."""
        try:
            return self._coerce(value)
        except _Invalid as exc:
            raise self.value_error(value, pass_name, str(exc)) from None

    def parse(self, token: str | list[str], pass_name: str, text: str | None = None, position: int | None = None) -> Any:
        """Convert a pipeline token (a string, or a list of strings for ``[a,b]``) to a value."""
        item = _tuple_item(self.type)
        try:
            if item is not None:
                return self._coerce([_parse_scalar(p, item) for p in (token if isinstance(token, list) else [token])])
            if isinstance(token, list):
                raise _Invalid(f"expected {self.type_name}, got a list")
            return self._coerce(_parse_scalar(token, str if self.choices else self.type))
        except _Invalid as exc:
            raise self.value_error(token, pass_name, str(exc), text, position) from None

    def _coerce(self, value: Any) -> Any:
        item = _tuple_item(self.type)
        if item is not None:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise _Invalid(f"expected {self.type_name}")
            return tuple(_check_scalar(v, item) for v in value)
        out = _check_scalar(value, str if self.choices else self.type)
        if self.choices and out not in self.choices:
            raise _Invalid("not one of the choices")
        if self.type in (int, float) and (self.minimum is not None or self.maximum is not None):
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if not (low <= out <= high and math.isfinite(out)):
                raise _Invalid(f"must be {self.range_text}")
        return out

    def format(self, value: Any) -> str:
        if isinstance(value, tuple):
            return "[" + ",".join(self.format(v) for v in value) + "]"
        return str(value).lower() if isinstance(value, bool) else str(value)

    def value_error(self, value: Any, pass_name: str, why: str, text: str | None = None, position: int | None = None):
        shown = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else repr(value)
        return OptionValueError(
            f"bad value {shown} for option '{self.name}' of pass '{pass_name}': {why}",
            text=text,
            position=position,
            choices=tuple(map(str, self.choices)),
            pass_name=pass_name,
            option=self.name,
        )


def _tuple_item(tp: Any) -> type | None:
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in (str, int, float):
            return args[0]
    return None


class _Invalid(Exception):
    """Why a value does not fit an option; turned into OptionValueError by the caller."""


_SCALAR_OK = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _check_scalar(value: Any, tp: type) -> Any:
    if not _SCALAR_OK[tp](value):
        raise _Invalid(f"expected {tp.__name__}, got {type(value).__name__}")
    return float(value) if tp is float else value


def _parse_scalar(token: str, tp: type) -> Any:
    if tp is bool:
        if token.lower() not in ("true", "false"):
            raise _Invalid("expected true or false")
        return token.lower() == "true"
    if tp in (int, float):
        try:
            return tp(token)
        except ValueError:
            raise _Invalid(f"expected {tp.__name__}") from None
    return token


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: ``name``, one-line ``doc``, its class and ``options``."""

    name: str
    doc: str
    cls: type
    options: tuple[PassOption, ...]

    def option(self, name: str, text: str | None = None, position: int | None = None) -> PassOption:
        """The option called ``name`` (kebab- or snake-case); UnknownOptionError lists the valid ones."""
        for opt in self.options:
            if name in (opt.name, opt.field):
                return opt
        raise UnknownOptionError(
            f"unknown option '{name}' for pass '{self.name}'",
            text=text,
            position=position,
            choices=tuple(o.name for o in self.options) or ("(none: this pass takes no options)",),
            pass_name=self.name,
            option=name,
        )

    def create(self, values: Mapping[str, Any] | None = None) -> Pass:
        """An instance with the given options (Python values, kebab- or snake-case keys)."""
        kwargs = {self.option(k).field: v for k, v in (values or {}).items()}
        return self.cls(**kwargs)


#: Every registered pass, by name (the built-in ones register when ``slimgraph.passes`` is imported).
PASSES: Registry[str, PassInfo] = Registry("pass")


def register_pass(name: str, doc: str | None = None) -> Callable[[Any], Any]:
    """Register a pass class (or a plain ``Graph -> Graph`` function) under ``name``.

    A class must subclass :class:`Pass`; it is made a frozen dataclass, and
    every field is an option that needs a default. ``doc`` defaults to the
    first line of the docstring. A function becomes a pass without options:
    the decorator returns that pass (callable as ``Graph -> Graph``), and the
    function receives a private clone of the graph (and the context, when it
    takes a ``ctx`` parameter).
    """

    def decorate(target: Any) -> Any:
        is_function = isinstance(target, types.FunctionType)
        if is_function:
            cls = _function_pass(target)
        elif isinstance(target, type) and issubclass(target, Pass):
            cls = target
        else:
            raise PassError(f"register_pass('{name}'): expected a Pass subclass or a function, got {target!r}")
        one_line = doc or (cls.__doc__ or "").strip().split("\n")[0]
        if not one_line:
            raise PassError(f"pass '{name}' needs a one-line doc (a docstring or doc=...)")
        if "__dataclass_fields__" not in cls.__dict__:
            cls = dataclass(frozen=True)(cls)
        elif not cls.__dataclass_params__.frozen:
            raise PassError(f"pass '{name}': the dataclass must be frozen (@dataclass(frozen=True))")
        cls.name = name
        cls.doc = one_line
        PASSES.register(name, PassInfo(name, one_line, cls, _options_of(cls, name)))
        return cls() if is_function else cls

    return decorate


def _function_pass(fn: Callable[..., Graph | None]) -> type:
    def apply(self: Pass, graph: Graph, ctx: PassContext) -> Graph | None:
        return call_with_context(fn, ctx, graph)

    return type(fn.__name__, (Pass,), {"apply": apply, "__doc__": fn.__doc__, "__module__": fn.__module__})


def _options_of(cls: type, pass_name: str) -> tuple[PassOption, ...]:
    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.default is dataclasses.MISSING:
            raise PassError(f"option '{f.name}' of pass '{pass_name}' needs a default")
        choices: tuple = ()
        if typing.get_origin(tp) is Literal and all(isinstance(c, str) for c in typing.get_args(tp)):
            choices = typing.get_args(tp)
        elif tp not in (int, float, bool, str) and _tuple_item(tp) is None:
            raise PassError(
                f"option '{f.name}' of pass '{pass_name}' has unsupported type {tp!r}; "
                "valid: int, float, bool, str, Literal of strings, tuple[str, ...], tuple[int, ...], tuple[float, ...]"
            )
        options.append(
            PassOption(f.name.replace("_", "-"), f.name, tp, f.default, f.metadata.get(_DOC, ""), choices,
                       *f.metadata.get(_BOUNDS, (None, None)))
        )
    return tuple(options)


def get_pass(name: str, text: str | None = None, position: int | None = None) -> PassInfo:
    """The registered pass ``name``; UnknownPassError lists the registered ones."""
    try:
        return PASSES[name]
    except KeyError:
        from slimgraph.passes.pipeline import named_pipelines

        raise UnknownPassError(
            f"unknown pass '{name}'",
            text=text,
            position=position,
            choices=tuple(sorted(PASSES)) + tuple(f"{p} (pipeline)" for p in sorted(named_pipelines())),
            pass_name=name,
        ) from None


def registered_passes() -> dict[str, PassInfo]:
    """Every registered pass by name (built-in ones and those users registered)."""
    return dict(sorted(PASSES.items()))

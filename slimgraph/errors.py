"""The one exception family of slimgraph.

Everything a user can get wrong (a malformed file, an op the IR lacks, a bad
option, an inconsistent graph) raises a subclass of :class:`SlimgraphError`, so
``except SlimgraphError`` catches every user-facing failure and nothing else.

Example::

    >>> from slimgraph.errors import ParseError
    >>> str(ParseError("expected ')'", line=3, col=7, source="tiny.sg"))
    "tiny.sg:3:7: expected ')'"
"""

from __future__ import annotations


class SlimgraphError(Exception):
    """Base of every error slimgraph raises for bad input."""


class GraphError(SlimgraphError):
    """A graph was built or edited in a way the IR does not allow."""


class OpError(GraphError):
    """An op was given inputs or attributes its schema rejects.

    ``op`` is the op name and ``where`` names the node (or value) when known.
    """

    def __init__(self, message: str, *, op: str | None = None, where: str | None = None):
        self.op = op
        self.where = where
        prefix = ""
        if where:
            prefix += f"{where}: "
        if op:
            prefix += f"{op}: "
        super().__init__(prefix + message)


class VerifyError(GraphError):
    """The verifier found a broken rule; ``rule`` names it, ``where`` the node."""

    def __init__(self, message: str, *, rule: str, where: str | None = None):
        self.rule = rule
        self.where = where
        super().__init__(f"[{rule}] {where + ': ' if where else ''}{message}")


class ParseError(SlimgraphError):
    """Malformed IR text; carries the 1-based line and column (and the file when known)."""

    def __init__(self, message: str, *, line: int, col: int, source: str | None = None):
        self.line = line
        self.col = col
        self.source = source
        self.reason = message
        super().__init__(f"{source or '<text>'}:{line}:{col}: {message}")


class FrontendError(SlimgraphError):
    """A model could not be imported (unsupported ops, unreadable file, ...)."""


class PassError(SlimgraphError):
    """A pass or pipeline failed or was given bad options."""


class BackendError(SlimgraphError):
    """A graph could not be compiled or run by a backend."""


class RegistrationError(SlimgraphError, ValueError):
    """A second registration under a name a registry already holds, or a registry that lacks
    entries it must have (see :class:`slimgraph.registry.Registry`)."""


class SaveError(SlimgraphError):
    """A model could not be saved: the target is not slimgraph's to replace, or the disk refused."""


class LoadError(SlimgraphError):
    """A saved folder is missing, damaged or foreign; the message names the file and what is wrong."""


class ArgumentError(SlimgraphError, ValueError):
    """A public function was given an argument outside what it accepts; the message
    names the argument and what is valid."""


class InterpreterError(SlimgraphError):
    """The reference interpreter was given inputs that do not fit the graph."""


class IndexOutOfRangeError(SlimgraphError, IndexError):
    """An op that indexes with data (gather, embedding, scatter, ...) met an index
    outside ``[-size, size)`` of its axis; the message names the op and the axis.

    Raised by the reference interpreter, the torch backend and compiled models
    alike, and also an ``IndexError``, as torch and ONNX Runtime raise.
    """


class SlimgraphWarning(UserWarning):
    """Input slimgraph accepts but changes or cannot honour (a buffer that ``forward`` updates,
    frozen at the value one call gives it). ``warnings.simplefilter("error", SlimgraphWarning)``
    makes each one an exception."""

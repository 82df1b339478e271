"""Errors raised by the pass machinery; all are :class:`slimgraph.errors.PassError`.

Pipeline errors carry the pipeline text, the 0-based ``position`` of the
offending token and the valid ``choices``, and render a caret under it.

Example::

    >>> from slimgraph.passes.errors import UnknownPassError
    >>> print(UnknownPassError("unknown pass 'fuze'", text="dce,fuze", position=4, choices=("dce", "fuse")))
    unknown pass 'fuze' at column 5; valid: dce, fuse
      dce,fuze
          ^
"""

from __future__ import annotations

from typing import Sequence

from slimgraph.errors import PassError


class PipelineError(PassError):
    """A pipeline text or a pass option is wrong.

    ``pass_name`` and ``option`` name what is wrong when known; ``text`` and
    ``position`` locate it in the pipeline text (both None for options given
    from Python); ``choices`` lists what would have been valid.
    """

    def __init__(
        self,
        message: str,
        *,
        text: str | None = None,
        position: int | None = None,
        choices: Sequence[str] = (),
        pass_name: str | None = None,
        option: str | None = None,
    ):
        self.reason = message
        self.text = text
        self.position = position
        self.choices = tuple(choices)
        self.pass_name = pass_name
        self.option = option
        rendered = message
        if position is not None:
            rendered += f" at column {position + 1}"
        if self.choices:
            rendered += f"; valid: {', '.join(self.choices)}"
        if text is not None and position is not None:
            rendered += f"\n  {text}\n  {' ' * position}^"
        super().__init__(rendered)


class PipelineSyntaxError(PipelineError):
    """The pipeline text does not follow ``pass{key=value,...},pass,...``."""


class UnknownPassError(PipelineError):
    """A pipeline names a pass (or named pipeline) that is not registered."""


class UnknownOptionError(PipelineError):
    """A pass was given an option it does not declare."""


class OptionValueError(PipelineError):
    """An option was given a value of the wrong type or outside its choices."""


class PassFailedError(PassError):
    """A pass raised, or left a graph the verifier rejects; names the pass and its place."""

    def __init__(self, message: str, *, pass_name: str, index: int):
        self.pass_name = pass_name
        self.index = index
        super().__init__(f"pass #{index} '{pass_name}': {message}")


class NumericsError(PassError):
    """A pass changed the interpreter's result beyond tolerance; names the first such pass."""

    def __init__(self, message: str, *, pass_name: str, index: int, output: str, max_error: float):
        self.pass_name = pass_name
        self.index = index
        self.output = output
        self.max_error = max_error
        super().__init__(f"pass #{index} '{pass_name}' changed output %{output}: {message}")


class RewriteError(PassError):
    """A rewrite rule misbehaved: it returned a value of the wrong type, or the
    rules did not reach a fixed point within the iteration limit."""

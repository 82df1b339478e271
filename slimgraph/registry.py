"""One registry type for every table of slimgraph's extension points.

Ops, passes, named pipelines, TVM lowerings, the ONNX and torch converters,
the torch backend's kernels and the guard's variant kinds are each a
:class:`Registry`: a read-only mapping from name to entry that is written only
through :meth:`Registry.register`. Every registry behaves the same:

- a second registration under a name raises :class:`RegistrationError`,
  naming the registry and the name (nothing is ever silently replaced);
- :meth:`Registry.missing` / :meth:`Registry.check_covers` are the coverage
  checks (every op has a lowering, ...);
- :meth:`Registry.scoped` is for tests: a context manager that takes back
  whatever was registered inside it.

Example::

    >>> colors = Registry("color")
    >>> @colors.decorator("red", "crimson")
    ... def red():
    ...     return "#f00"
    >>> sorted(colors), colors["crimson"] is red
    (['crimson', 'red'], True)
    >>> with colors.scoped():
    ...     _ = colors.register("blue", "#00f")
    ...     "blue" in colors
    True
    >>> "blue" in colors, colors.missing(["red", "green"])
    (False, ['green'])
    >>> colors.register("red", "#e00")
    Traceback (most recent call last):
    ...
    slimgraph.errors.RegistrationError: color 'red' is already registered
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Callable, Generic, Hashable, Iterable, Iterator, TypeVar

from slimgraph.errors import RegistrationError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

__all__ = ["Registry", "RegistrationError"]


class Registry(Mapping, Generic[K, V]):
    """A named table of entries; ``what`` names one entry in messages (``"pass"``, ``"TVM lowering"``)."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[K, V] = {}

    def register(self, key: K, entry: V) -> V:
        """Add ``entry`` under ``key``; RegistrationError when ``key`` is taken. Returns ``entry``."""
        if key in self._entries:
            raise RegistrationError(f"{self.what} {_show(key)} is already registered")
        self._entries[key] = entry
        return entry

    def decorator(self, *keys: K) -> Callable[[V], V]:
        """A decorator registering the decorated object under each of ``keys``."""

        def register(entry: V) -> V:
            for key in keys:
                self.register(key, entry)
            return entry

        return register

    def missing(self, keys: Iterable[K]) -> list[K]:
        """Those of ``keys`` with no entry, in the order given."""
        return [k for k in keys if k not in self._entries]

    def check_covers(self, keys: Iterable[K], why: str = "") -> None:
        """RegistrationError listing every one of ``keys`` that has no entry."""
        absent = self.missing(keys)
        if absent:
            raise RegistrationError(f"no {self.what} for {', '.join(map(_show, absent))}" + (f" ({why})" if why else ""))

    @contextlib.contextmanager
    def scoped(self) -> Iterator["Registry[K, V]"]:
        """Within the block, registrations are allowed as usual; on leaving it, those made in
        the block are removed again (for tests that register throwaway entries)."""
        before = set(self._entries)
        try:
            yield self
        finally:
            for key in [k for k in self._entries if k not in before]:
                del self._entries[key]

    def __getitem__(self, key: K) -> V:
        return self._entries[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {len(self)} entries)"


def _show(key: Any) -> str:
    return f"{key.__module__}.{key.__qualname__}" if isinstance(key, type) else repr(key)

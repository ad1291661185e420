"""The building blocks of extension: documented option fields and registries.

Every part of digitgan that a user can choose by name (an architecture, an objective, a
penalty, a dataset) is an entry in a :class:`Registry`. An entry may declare its own
options as a dataclass of :func:`opt` fields; the configuration then gains a table for
them (``[model.mlp]``, ``[loss.gp]``) with their defaults, help texts and checks, and
``digitgan config --explain`` and the configuration reference list them. Registering
from your own module is the same call digitgan makes for its built-in entries::

    from digitgan.models import ARCHITECTURES
    ARCHITECTURES.register("tiny", build_tiny, options=TinyOptions, doc="...")
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def opt(default, help: str, *, choices=None, min=None, max=None):
    """A documented option field: its default, help text and constraints.

    ``choices`` is a tuple, or a function returning one (for names registered elsewhere).
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered thing: its name, the object itself, its option table (a dataclass of
    :func:`opt` fields, or None) and a one-line description."""

    name: str
    value: T
    options: type | None = None
    doc: str = ""


class Registry(Generic[T]):
    """Named entries of one kind, looked up by the config field ``key`` that chooses them."""

    def __init__(self, kind: str, key: str):
        self.kind = kind
        self.key = key
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, value: T | None = None, *, options: type | None = None, doc: str = ""
    ):
        """Add ``value`` under ``name`` (replacing an entry of that name). Without ``value``,
        a decorator: ``@REGISTRY.register("name", doc=...)``."""
        if value is None:
            return lambda v: self.register(name, v, options=options, doc=doc) or v
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError(f"{self.key}: {name!r} is not a valid name (letters, digits, - _)")
        self._entries[name] = Entry(name, value, options, doc)
        return value

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"{self.key}: unknown {self.kind} {name!r}; known: {', '.join(self._entries)}"
            ) from None

    def __getitem__(self, name: str) -> T:
        return self.entry(name).value

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def values(self) -> Iterator[T]:
        return (e.value for e in self._entries.values())

    def items(self) -> Iterator[tuple[str, T]]:
        return ((name, e.value) for name, e in self._entries.items())

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests and plugins that clean up after themselves)."""
        self._entries.pop(name, None)

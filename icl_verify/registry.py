"""One registry type for everything a user can extend: layers, compositions, architectures,
model types and few-shot tasks.

A :class:`Registry` maps names to frozen records. Every registry behaves the same way:
registering a taken name raises :class:`~icl_verify.errors.DuplicateNameError` unless
``replace=True``, an unknown name raises :class:`~icl_verify.errors.UnknownNameError` listing the
registered names, and :meth:`Registry.names` lists names matching a shell-style wildcard.
A registry may also load plugins from an entry-point group the first time it is read.
"""
from __future__ import annotations

import fnmatch
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from .errors import DuplicateNameError, UnknownNameError

R = TypeVar("R")


class Registry(Generic[R]):
    """Named records of one kind.

    Args:
        kind: what a record is, in words (``"layer"``, ``"composition"``, ...), used in errors.
        entry_point_group: an entry-point group whose modules are imported (and so register
            themselves) the first time the registry is read, or ``None``.
    """

    def __init__(self, kind: str, *, entry_point_group: str | None = None):
        self.kind = kind
        self._records: dict[str, R] = {}
        self._group = entry_point_group
        self._plugins_loaded = entry_point_group is None

    def add(self, name: str, record: R, *, replace: bool = False) -> R:
        """Record ``record`` under ``name`` and return it.

        Raises:
            DuplicateNameError: ``name`` is taken and ``replace`` is false.
        """
        if name in self._records and not replace:
            raise DuplicateNameError(f"a {self.kind} named {name!r} is already registered")
        self._records[name] = record
        return record

    def remove(self, name: str) -> None:
        """Forget ``name``; :class:`UnknownNameError` if it is not registered."""
        self.get(name)
        del self._records[name]

    def get(self, name: str) -> R:
        """The record of ``name``; :class:`UnknownNameError` naming the registered ones."""
        self._load_plugins()
        try:
            return self._records[name]
        except KeyError:
            known = ", ".join(sorted(self._records)) or "none"
            raise UnknownNameError(f"no {self.kind} named {name!r}; registered: {known}") from None

    def names(self, pattern: str = "*", where: Callable[[R], bool] | None = None) -> list[str]:
        """Registered names matching the wildcard ``pattern`` (and ``where(record)``), sorted."""
        self._load_plugins()
        return sorted(n for n, r in self._records.items()
                      if fnmatch.fnmatchcase(n, pattern) and (where is None or where(r)))

    def __getitem__(self, name: str) -> R:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._records)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self._group):
            ep.load()

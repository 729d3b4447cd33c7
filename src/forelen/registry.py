"""One small registry mechanism for sources, splits, engines, models and predictors (HELM-style)."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

from forelen.errors import ForelenError

T = TypeVar("T")


class UnknownName(ForelenError):
    pass


class Registry(Generic[T]):
    """Named entries of one kind; plug-in modules under `package` are discovered with pkgutil."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        self._entries[name] = obj
        return obj

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{self.package}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)

    def get(self, name: str) -> T:
        self._discover()
        if name in self._entries:
            return self._entries[name]
        lowered = {k.lower(): k for k in self._entries}
        if name.lower() in lowered:
            return self._entries[lowered[name.lower()]]
        raise UnknownName(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ";"
        return f"unknown {self.kind} {name!r}{hint} known: {', '.join(known)}"

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._discover()
        for name in sorted(self._entries):
            yield name, self._entries[name]


def describe(obj: Any) -> dict[str, Any]:
    """The metadata an entry declares through its `info` attribute, for `forelen ls`."""
    info = getattr(obj, "info", obj)
    if hasattr(info, "__dataclass_fields__"):
        return {k: getattr(info, k) for k in info.__dataclass_fields__}
    return {"description": (getattr(obj, "__doc__", "") or "").strip().splitlines()[0:1]}

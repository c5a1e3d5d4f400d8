"""A tiny name -> object registry: adding a dataset, backbone or variant is one decorator line
in one new module (modules of a registry's package are imported automatically)."""

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, concept: str, package: str) -> None:
        self.concept = concept
        self._package = package
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.concept} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def _load(self) -> None:
        # Import every module of the package once so their decorators run.
        if not self._loaded:
            self._loaded = True
            package = importlib.import_module(self._package)
            # A registry whose entries all live in one module names that module instead.
            for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
                importlib.import_module(f"{self._package}.{module.name}")

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.concept} {name!r}; expected one of {sorted(self._entries)}"
            ) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

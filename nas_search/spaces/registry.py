"""A registry of search spaces by name: a table of zero-argument factories, each built once
on first use. This module imports no space; whoever owns spaces fills a registry
explicitly (``nas_search.spaces.builtin.BACKBONE_SPACES``,
``nas_search.tasks.detect.space.DETECTION_SPACES``), and ``nas_search.tasks`` looks a
name up across them.

>>> registry = SpaceRegistry()
>>> registry.names()
[]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from nas_search.errors import UserError
from nas_search.spaces.space import SearchSpace

SpaceFactory = Callable[[], SearchSpace]


class SpaceRegistry:
    """Named space factories; :meth:`get` builds a space once and caches it."""

    def __init__(self, factories: Mapping[str, SpaceFactory] | None = None) -> None:
        self._factories: dict[str, SpaceFactory] = {}
        self._built: dict[str, SearchSpace] = {}
        for name, factory in (factories or {}).items():
            self.register(name, factory)

    def register(self, name: str, factory: SpaceFactory) -> SpaceFactory:
        """Add ``factory`` under ``name``; a name is registered once."""
        if name in self._factories:
            raise ValueError(f"space {name!r} is already registered")
        self._factories[name] = factory
        return factory

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> SearchSpace:
        """The space called ``name``; :class:`UserError` listing the names otherwise."""
        if name not in self._factories:
            raise UserError(f"unknown space {name!r}; available: {', '.join(self.names())}")
        if name not in self._built:
            self._built[name] = self._factories[name]()
        return self._built[name]


def find_space(name: str, registries: Iterable[SpaceRegistry]) -> SearchSpace:
    """The space called ``name`` in the first of ``registries`` that has it;
    :class:`UserError` listing every name otherwise."""
    registries = list(registries)
    for registry in registries:
        if name in registry:
            return registry.get(name)
    available = sorted(space for registry in registries for space in registry.names())
    raise UserError(f"unknown space {name!r}; available: {', '.join(available)}")


__all__ = ["SpaceFactory", "SpaceRegistry", "find_space"]

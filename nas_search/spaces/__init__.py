"""Search spaces: a registry of built-in spaces, the elastic supernet, static networks.

>>> from nas_search.spaces import get_space, space_names
>>> space_names()
['cifar', 'detect', 'micro', 'mobile']
"""

from __future__ import annotations

from typing import Callable

from nas_search.errors import UserError
from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace, StageChoices

_REGISTRY: dict[str, Callable[[], SearchSpace]] = {}
_CACHE: dict[str, SearchSpace] = {}


def register_space(name: str) -> Callable[[Callable[[], SearchSpace]], Callable[[], SearchSpace]]:
    """Decorator registering a zero-argument factory of a :class:`SearchSpace`."""

    def decorate(factory: Callable[[], SearchSpace]) -> Callable[[], SearchSpace]:
        if name in _REGISTRY:
            raise ValueError(f"space {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def space_names(task: str | None = None) -> list[str]:
    """Names of the registered spaces, sorted; only those of ``task`` (``classify`` or
    ``detect``) when given."""
    _load_builtin()
    return sorted(name for name in _REGISTRY if task is None or get_space(name).task == task)


def get_space(name: str) -> SearchSpace:
    """The registered space called ``name``; :class:`UserError` listing the names otherwise."""
    _load_builtin()
    if name not in _REGISTRY:
        raise UserError(f"unknown space {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if name not in _CACHE:
        _CACHE[name] = _REGISTRY[name]()
    return _CACHE[name]


def _load_builtin() -> None:
    from nas_search.spaces import builtin  # noqa: F401  (registers on import)
    from nas_search.detection import space as detection_space  # noqa: F401  (registers 'detect')


__all__ = [
    "ResolvedBlock",
    "ResolvedNetwork",
    "SearchSpace",
    "StageChoices",
    "get_space",
    "register_space",
    "space_names",
    "describe_space",
]


def describe_space(name: str) -> dict:
    """Name, task, default input size, and the FLOPs and params of the smallest and largest
    subnets of a space (at its deployment size)."""
    from nas_search.hw_models.flops import count_flops

    space = get_space(name)
    smallest = count_flops(space.smallest(), space)
    largest = count_flops(space.largest(), space)
    return {
        "name": space.name,
        "task": space.task,
        "description": space.description,
        "input_size": space.input_size,
        "train_input_size": space.train_input_size,
        "stages": len(space.stages),
        "flops": {"min": smallest.flops, "max": largest.flops},
        "params": {"min": smallest.params, "max": largest.params},
    }

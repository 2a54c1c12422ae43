"""The tasks: ``classify`` (:mod:`.classify`) and ``detect`` (:mod:`.detect`), each a typed
:class:`~nas_search.tasks.base.Task`. This is the only module that names both: the table
of tasks and the lookup of every space by name.

>>> from nas_search.tasks import get_space, space_names
>>> space_names()
['cifar', 'detect', 'micro', 'mobile']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas_search.errors import UserError
from nas_search.spaces.builtin import BACKBONE_SPACES
from nas_search.spaces.registry import SpaceFactory, find_space
from nas_search.spaces.space import SearchSpace
from nas_search.tasks.base import Task, TaskEvaluation
from nas_search.tasks.classify.task import CLASSIFY
from nas_search.tasks.detect.space import DETECTION_SPACES
from nas_search.tasks.detect.task import DETECT

#: Every task by name.
TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFY, DETECT)}

#: Where each task's spaces are registered.
SPACE_REGISTRIES = {"classify": BACKBONE_SPACES, "detect": DETECTION_SPACES}


def get_task(name: str) -> Task:
    """The task called ``name``; :class:`UserError` listing the tasks otherwise."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; accepted: {', '.join(TASKS)}")
    return TASKS[name]


def get_space(name: str) -> SearchSpace:
    """The space called ``name``, of any task; :class:`UserError` listing them otherwise."""
    return find_space(name, SPACE_REGISTRIES.values())


def space_names(task: str | None = None) -> list[str]:
    """Names of the registered spaces, sorted; only those of ``task`` when given."""
    registries = SPACE_REGISTRIES.values() if task is None else [SPACE_REGISTRIES[task]]
    return sorted(name for registry in registries for name in registry.names())


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator registering a zero-argument factory of a space under ``name``, with the
    spaces of the task it builds for (``space.task``)."""

    def decorate(factory: SpaceFactory) -> SpaceFactory:
        if name in space_names():
            raise ValueError(f"space {name!r} is already registered")
        task = factory().task
        if task not in SPACE_REGISTRIES:
            raise ValueError(f"space {name!r} is for task {task!r}; accepted: {', '.join(SPACE_REGISTRIES)}")
        return SPACE_REGISTRIES[task].register(name, factory)

    return decorate


def describe_space(name: str) -> dict[str, Any]:
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


__all__ = [
    "SPACE_REGISTRIES",
    "TASKS",
    "Task",
    "TaskEvaluation",
    "describe_space",
    "get_space",
    "get_task",
    "register_space",
    "space_names",
]

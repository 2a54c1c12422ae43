"""A search config checked and completed: every option refused with a one-line error
before any work, the typed budgets, the device cost models and the derived defaults."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from nas_search.errors import UserError
from nas_search.hw_models import ParamsModel
from nas_search.search.budgets import Budgets, Constraint, parse_params_budget
from nas_search.search.config import OBJECTIVE_DIRECTIONS, SearchConfig
from nas_search.search.finalists import FinalistSettings
from nas_search.search.samplers import make_sampler
from nas_search.search.sampling import check_budget
from nas_search.search.study import check_study_name, default_storage_url
from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec
from nas_search.tasks import get_space, get_task, space_names
from nas_search.tasks.base import Task, TaskEvaluation
from nas_search.units import (
    check_input_size,
    format_bytes,
    format_count,
    format_flops,
    parse_flops,
    parse_latency_ms,
    parse_memory_bytes,
)


class DeviceModel(Protocol):
    """A device cost model (latency or peak memory): ``spec -> value`` on ``device``."""

    device: str

    def __call__(self, spec: ArchSpec) -> float:
        """The cost of ``spec``."""
        ...


@dataclass
class ResolvedSearch:
    """A checked search config with everything derived from it.

    Attributes:
        config: the options as given (data as an absolute path).
        space: the space searched.
        storage_url: the study's storage.
        budgets: the limits every candidate must meet.
        latency_model, memory_model: device cost models (None without ``--device`` or
            ``--memory``), for the data's class count once the supernet is known.
        input_size: the deployment size (FLOPs are counted there).
        train_input_size: the proxy size subnets are scored at.
        study_dir: the study's folder (supernet, artifacts).
        finalists: re-ranking settings, None when it is off.
    """

    config: SearchConfig
    space: SearchSpace
    storage_url: str
    budgets: Budgets
    latency_model: DeviceModel | None
    memory_model: DeviceModel | None
    input_size: int
    train_input_size: int
    study_dir: Path
    finalists: FinalistSettings | None = None

    @property
    def constraints(self) -> list[Constraint]:
        """The Optuna constraints of :attr:`budgets`."""
        return self.budgets.constraints()

    def device_models(self) -> dict[str, DeviceModel]:
        """The device cost models a trial records, by cost name (``latency``, ``peak_memory``)."""
        models = {"latency": self.latency_model, "peak_memory": self.memory_model}
        return {name: model for name, model in models.items() if model is not None}


def resolve_search(config: SearchConfig) -> ResolvedSearch:
    """Check every option (one-line errors) and derive defaults."""
    task = get_task(config.task)
    space = get_space(config.space or task.default_space)
    if space.task != task.name:
        raise UserError(
            f"space {space.name!r} is a {space.task} space, not a {task.name} one; accepted for --task "
            f"{task.name}: {', '.join(space_names(task=task.name))}"
        )
    check_study_name(config.study)
    check_options(config, task)
    input_size = space.input_size if config.input_size is None else config.input_size
    flops_budget = parse_flops(config.budget) if config.budget else None
    latency_model, memory_model = _device_models(config, space, input_size)
    budgets, inactive_budget = _resolve_budgets(config, space, input_size, flops_budget, latency_model, memory_model)
    if inactive_budget:  # after the checks, so that a refusal stays one line
        print(inactive_budget, file=sys.stderr)
    storage_url = config.storage or default_storage_url(config.study, config.studies_dir)
    train_input_size = (
        config.train_input_size
        if config.train_input_size is not None
        else (min(task.demo.input_size, space.train_input_size) if config.data is None else space.train_input_size)
    )
    return ResolvedSearch(
        config=config,
        space=space,
        storage_url=storage_url,
        budgets=budgets,
        input_size=input_size,
        latency_model=latency_model,
        memory_model=memory_model,
        train_input_size=train_input_size,
        study_dir=Path(config.studies_dir) / config.study,
        finalists=finalist_settings(config, train_input_size),
    )


def check_options(config: SearchConfig, task: Task) -> None:
    """Refuse options that are wrong on their own (one-line errors, in a fixed order)."""
    for name in config.objectives:
        if name not in OBJECTIVE_DIRECTIONS:
            raise UserError(f"unknown objective {name!r}; accepted: {', '.join(OBJECTIVE_DIRECTIONS)} (comma-separated)")
    if "accuracy" not in config.objectives or len(set(config.objectives)) != len(config.objectives):
        raise UserError(
            f"--objectives {','.join(config.objectives) or repr('')}; accepted: accuracy plus any of "
            f"{', '.join(name for name in OBJECTIVE_DIRECTIONS if name != 'accuracy')}, each once, "
            "comma-separated"
        )
    if config.data is not None and not Path(config.data).is_dir():
        problem = "is a file, not a folder" if Path(config.data).exists() else "does not exist"
        raise UserError(f"data folder {config.data} {problem}; accepted: " + task.data_forms)
    if (config.latency or "latency" in config.objectives or config.lut) and not config.device:
        raise UserError("--latency, --lut and the latency objective need --device NAME; see `nas-search devices`")
    if config.trials < 1:
        raise UserError(f"--trials {config.trials}; accepted: 1 or more")
    if not 0 <= config.min_utilization < 1:
        raise UserError(f"--min-utilization {config.min_utilization}; accepted: 0 to below 1")
    for option, value in (("--input-size", config.input_size), ("--train-input-size", config.train_input_size)):
        check_input_size(value, option)
    if config.supernet_epochs is not None and config.supernet_epochs < 1:
        raise UserError(f"--supernet-epochs {config.supernet_epochs}; accepted: 1 or more")
    for option, value in (
        ("--startup-trials", config.startup_trials),
        ("--calibration-images", config.calibration_images),
        ("--max-train", config.max_train),
        ("--max-val", config.max_val),
    ):
        minimum = 0 if option == "--startup-trials" else 1
        if value is not None and value < minimum:
            raise UserError(f"{option} {value}; accepted: {minimum} or more" + ("" if minimum == 0 else " (or leave it out)"))
    if not 0 <= config.seed < 2**32:
        raise UserError(f"--seed {config.seed}; accepted: 0 to {2**32 - 1}")
    make_sampler(config.sampler, seed=config.seed, constrained=True, multi_objective=len(config.objectives) > 1)


def _device_models(config: SearchConfig, space: SearchSpace, input_size: int) -> tuple[Any, Any]:
    """The latency model of ``--device`` and the memory model of ``--memory`` (or None)."""
    latency_model = memory_model = None
    if config.device:
        from nas_search.hw_models.devices import latency_model_for

        latency_model = latency_model_for(
            space, config.device, config.lut, input_size, runtime=config.runtime, threads=config.threads
        )
    if config.memory:
        from nas_search.hw_models.memory import MemoryModel

        memory_model = MemoryModel(space, input_size)
    return latency_model, memory_model


def _resolve_budgets(
    config: SearchConfig, space: SearchSpace, input_size: int, flops_budget: int | None, latency_model: Any, memory_model: Any
) -> tuple[Budgets, str | None]:
    """The typed budgets, each checked against the smallest subnet, and the warning to
    print when the FLOPs budget is above the largest subnet (else None)."""
    flops_binding, inactive_budget = False, None
    if flops_budget is not None:
        limits = check_budget(space, flops_budget, input_size)
        flops_binding = flops_budget < limits.largest
        if not flops_binding:
            inactive_budget = (
                f"warning: budget {format_flops(flops_budget)} is above the largest subnet "
                f"({format_flops(limits.largest)}): the FLOPs constraint is inactive"
            )
    params = latency = memory = None
    if config.params:
        params = parse_params_budget(config.params)
        # a lower bound for any class count (one output); the data's count is known only later
        _check_reachable(space, "--params", ParamsModel(space, 1), float(params), "params", "")
    if config.latency:
        latency = parse_latency_ms(config.latency)
        # one-class networks: a lower bound whatever the data's class count, known only later
        _check_reachable(space, "latency", for_classes(latency_model, 1), latency, "ms", f" on {config.device}")
    if config.memory:
        memory = parse_memory_bytes(config.memory)
        _check_reachable(space, "--memory", for_classes(memory_model, 1), float(memory), "bytes", "")
    budgets = Budgets(
        flops=flops_budget,
        params=params,
        latency_ms=latency,
        memory_bytes=memory,
        min_utilization=config.min_utilization,
        flops_binding=flops_binding,
    )
    return budgets, inactive_budget


def finalist_settings(config: SearchConfig, train_input_size: int) -> FinalistSettings | None:
    """The re-ranking settings (task defaults filled in), or None when it is off."""
    task = get_task(config.task)
    defaults = task.finalists["demo" if config.data is None else "real"]
    settings = FinalistSettings(
        count=defaults.count if config.finalists is None else config.finalists,
        epochs=defaults.epochs if config.finalist_epochs is None else config.finalist_epochs,
        input_size=train_input_size if config.finalist_input_size is None else config.finalist_input_size,
        init=config.finalist_init,
        seeds=config.finalist_seeds,
    )
    if settings.input_size % task.finalist_size_multiple:
        raise UserError(
            f"--finalist-size {settings.input_size}; accepted for {task.name}: a multiple of {task.finalist_size_multiple}"
        )
    return settings if settings.count else None


def for_classes(model, num_classes: int):
    """``model`` for networks with ``num_classes`` outputs (a latency table's model
    estimates the parts that depend on them when the table was profiled for another count)."""
    return model.for_classes(num_classes) if hasattr(model, "for_classes") else model


#: How a budget and the smallest subnet's cost are shown, by unit (others: ``1.23 ms``).
UNIT_FORMATS: dict[str, Callable[[float], str]] = {
    "bytes": format_bytes,
    "params": lambda value: f"{format_count(value)} params",
}


def _check_reachable(space: SearchSpace, name: str, model, limit: float, unit: str, where: str) -> None:
    """Refuse a budget that even the smallest subnet exceeds (exit 2, naming the minimum)."""
    smallest = float(model(space.smallest()))
    if smallest > limit:
        show = UNIT_FORMATS.get(unit, lambda value: f"{value:.2f} {unit}")
        shown, asked = show(smallest), (f"{limit:g} {unit}" if unit == "ms" else show(limit))
        raise UserError(
            f"{name} budget {asked}{where} is below the smallest subnet of space {space.name!r} ({shown}); "
            f"accepted: at least {shown}"
        )


def absolute_path(path: str | None) -> str | None:
    """``path`` as an absolute path (``~`` expanded); None stays None."""
    return None if path is None else str(Path(path).expanduser().resolve())


def adopt_scoring(resolved: ResolvedSearch, evaluation: TaskEvaluation, checkpoint: Path) -> ResolvedSearch:
    """The search as its supernet scores it: at the supernet's training size (a different
    ``--train-input-size`` is refused), with device cost models for the data's class count."""
    config = resolved.config
    if evaluation.train_input_size != resolved.train_input_size:
        if config.train_input_size is not None:
            raise UserError(
                f"--train-input-size {config.train_input_size}: the supernet {checkpoint} was trained at "
                f"{evaluation.train_input_size} px and scores subnets at that size; leave --train-input-size out "
                "or train another supernet"
            )
        resolved = replace(
            resolved,
            train_input_size=evaluation.train_input_size,
            finalists=finalist_settings(config, evaluation.train_input_size),
        )
    return replace(
        resolved,
        **{
            name: for_classes(model, evaluation.num_classes)
            for name, model in (("latency_model", resolved.latency_model), ("memory_model", resolved.memory_model))
            if model is not None
        },
    )


__all__ = [
    "DeviceModel",
    "ResolvedSearch",
    "absolute_path",
    "adopt_scoring",
    "check_options",
    "finalist_settings",
    "for_classes",
    "resolve_search",
]

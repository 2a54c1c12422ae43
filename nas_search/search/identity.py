"""A study's identity: what it searches (task, budgets, sizes, device, data, scoring),
stored as study attributes when it is created and checked on every rerun, so that trials
scored under other rules never mix into one summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from nas_search.config import config_to_dict
from nas_search.errors import UserError
from nas_search.search.resolve import ResolvedSearch, absolute_path
from nas_search.tasks import get_task
from nas_search.tasks.base import TaskEvaluation
from nas_search.units import format_bytes, format_count, format_flops


def study_attributes(resolved: ResolvedSearch, checkpoint: Path, evaluation: TaskEvaluation) -> dict[str, Any]:
    """The user attributes a new study is created with: its identity (:data:`SEARCH_IDENTITY`),
    the scoring supernet with its checksum, and the whole config (what workers read)."""
    from nas_search.training.checkpoint import checkpoint_checksum

    config = resolved.config
    identity = search_identity(resolved)  # task, constraints, input_size, device, data
    # the dashboard pages this table a few rows at a time: what a reviewer looks for first comes first
    return {
        "task": identity.pop("task"),
        "space": resolved.space.name,
        "budget_text": config.budget,
        **identity,
        "budget_flops": resolved.budgets.flops,
        "train_input_size": evaluation.train_input_size,
        "score_name": get_task(config.task).score_name,
        "dataset": evaluation.description,
        "num_classes": evaluation.num_classes,
        "validation_images": evaluation.validation_images,
        "chance_score": evaluation.chance_score,
        "supernet": str(checkpoint.resolve()),
        "supernet_checksum": checkpoint_checksum(checkpoint),
        "config": config_to_dict(config),
    }


def existing_study(resolved: ResolvedSearch, storage, attributes: dict[str, Any] | None) -> optuna.Study | None:
    """The existing study (after checking it is compatible), or None if there is none."""
    config = resolved.config
    names = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    if config.study not in names:
        return None
    study = optuna.load_study(study_name=config.study, storage=storage)
    existing_space = study.user_attrs.get("space")
    if existing_space != resolved.space.name:
        raise UserError(
            f"study {config.study!r} already exists with space {existing_space!r}, not {resolved.space.name!r}; "
            "choose another --study name"
        )
    if attributes is not None and study.user_attrs.get("supernet_checksum") != attributes["supernet_checksum"]:
        raise UserError(
            f"study {config.study!r} was scored with another supernet (sha256 {study.user_attrs.get('supernet_checksum')}); "
            "choose another --study name or pass that --supernet"
        )
    existing_objectives = study.user_attrs.get("config", {}).get("objectives")
    if existing_objectives and list(existing_objectives) != list(config.objectives):
        raise UserError(f"study {config.study!r} has objectives {existing_objectives}, not {list(config.objectives)}")
    current = search_identity(resolved)
    for name, (label, describe) in SEARCH_IDENTITY.items():
        if name in study.user_attrs and _normalised(name, study.user_attrs[name]) != _normalised(name, current[name]):
            raise UserError(
                f"study {config.study!r} was searched with {label} {describe(study.user_attrs[name])}, not "
                f"{describe(current[name])}; its trials were scored under those rules. Choose another --study name "
                f"(or delete {resolved.study_dir} and its storage entry to start over)"
            )
    return study


#: How a constraint's limit is shown, by cost.
COST_FORMATS: dict[str, Callable[[float], str]] = {
    "flops": format_flops,
    "params": format_count,
    "latency": lambda value: f"{value:g} ms",
    "peak_memory": format_bytes,
}


def _describe_constraints(constraints: list[dict[str, Any]]) -> str:
    if not constraints:
        return "no constraint"
    return ", ".join(
        f"{item['cost']} {'>=' if item.get('lower') else '<='} {COST_FORMATS.get(item['cost'], str)(item['limit'])}"
        for item in constraints
    )


#: Study attributes that define what a study searches, with how an error names them. A
#: rerun of ``run`` with another value (a new ``--budget``, ``--data`` ...) would mix
#: trials scored under other rules into the summary, so it is refused.
SEARCH_IDENTITY: dict[str, tuple[str, Callable[[Any], str]]] = {
    "task": ("task", str),
    "constraints": ("budget and constraints", _describe_constraints),
    "input_size": ("deployment size", lambda size: f"{size} px"),
    "device": ("device", str),
    "latency_model": ("latency model", str),
    "data": ("data", lambda data: "the built-in demo" if data is None else str(data)),
    "max_val": ("validation subset", lambda count: "every validation image" if count is None else f"--max-val {count}"),
    "calibration_images": ("batch-norm calibration", lambda count: f"{count} images (--calibration-images)"),
}


def search_identity(resolved: ResolvedSearch) -> dict[str, Any]:
    """This run's values of :data:`SEARCH_IDENTITY`; :func:`study_attributes` stores them."""
    config = resolved.config
    latency_model = resolved.latency_model
    return {
        "task": config.task,
        "constraints": [constraint.__dict__ for constraint in resolved.constraints],
        "input_size": resolved.input_size,
        "device": config.device or "none (FLOPs only)",
        # device/runtime/threads of a profiled table; the device name of an analytic model
        "latency_model": "none" if latency_model is None else latency_model.device,
        "data": absolute_path(config.data),
        "max_val": config.max_val,
        "calibration_images": config.calibration_images or get_task(config.task).calibration_images,
    }


def _normalised(name: str, value: Any) -> Any:
    """A comparable form: data folders as absolute paths, constraints as plain tuples."""
    if name == "data":
        return absolute_path(value)
    if name == "constraints":
        return [(item["name"], item["cost"], float(item["limit"]), bool(item.get("lower"))) for item in value or []]
    return value


__all__ = ["SEARCH_IDENTITY", "existing_study", "search_identity", "study_attributes"]

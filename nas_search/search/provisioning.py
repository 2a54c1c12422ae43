"""Supernet provisioning: the ``--supernet`` checkpoint checked, or one trained (and
resumed) in the study folder, and the task's scorer of subnets loaded from it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna

from nas_search.errors import UserError
from nas_search.search.config import SearchConfig, demo_max_train, scoring_settings
from nas_search.search.resolve import ResolvedSearch
from nas_search.search.supernet_space import SupernetSpace
from nas_search.tasks import get_task
from nas_search.tasks.base import REAL_DATA_EPOCHS, SupernetJob, TaskEvaluation


def load_given_supernet(config: SearchConfig) -> dict[str, Any] | None:
    """The ``--supernet`` checkpoint (read once per run: its data, size, epochs and weights
    are checked from it); None without ``--supernet`` or when the file is missing (the
    later checks name it)."""
    from nas_search.training.checkpoint import load_checkpoint

    if not config.supernet or not Path(config.supernet).is_file():
        return None
    return load_checkpoint(config.supernet, get_task(config.task).checkpoint_format)


def supernet_epochs(config: SearchConfig) -> int:
    """Supernet epochs of a run: ``--supernet-epochs`` or the task's default."""
    if config.supernet_epochs is not None:
        return config.supernet_epochs
    return get_task(config.task).demo.epochs if config.data is None else REAL_DATA_EPOCHS


def check_study_supernet(study: optuna.Study, resolved: ResolvedSearch) -> None:
    """Before any training: the supernet a rerun would use is the one the study's trials
    were scored with (same checksum), and a rerun does not train it further."""
    from nas_search.training.checkpoint import checkpoint_checksum, load_checkpoint

    recorded = study.user_attrs.get("supernet_checksum")
    if recorded is None:
        return
    config = resolved.config
    path = Path(config.supernet) if config.supernet else resolved.study_dir / "supernet.pt"
    advice = "pass that file with --supernet or choose another --study name"
    if not path.is_file():
        raise UserError(
            f"study {config.study!r} was scored with the supernet {study.user_attrs.get('supernet')} "
            f"(sha256 {recorded}), and {path} does not exist; {advice}"
        )
    checksum = checkpoint_checksum(path)
    if checksum != recorded:
        raise UserError(
            f"study {config.study!r} was scored with another supernet (sha256 {recorded}; {path} has {checksum}); {advice}"
        )
    if not config.supernet and config.supernet_epochs is not None:
        trained = load_checkpoint(path, get_task(config.task).checkpoint_format, space=resolved.space.name)["epoch"]
        if config.supernet_epochs > trained:
            raise UserError(
                f"--supernet-epochs {config.supernet_epochs}: study {config.study!r} was scored with its supernet "
                f"trained {trained} epochs, and training it further would invalidate its trials; choose another "
                f"--study name for a longer-trained supernet (or leave --supernet-epochs out)"
            )


def ensure_supernet(resolved: ResolvedSearch, study_exists: bool = False, given: dict[str, Any] | None = None) -> Path:
    """Check the given checkpoint (``given``: it, already loaded), or train one into the
    study folder (resumable). The supernet of an existing study is reused as it is."""
    from nas_search.training.checkpoint import check_checkpoint_space, load_checkpoint

    config = resolved.config
    task = get_task(config.task)
    if config.supernet:
        payload = given if given is not None else load_checkpoint(config.supernet, task.checkpoint_format)
        check_checkpoint_space(payload, config.supernet, resolved.space.name)
        planned = payload.get("epochs")
        if planned is not None and payload["epoch"] < planned:
            print(
                f"warning: supernet {config.supernet} was trained {payload['epoch']} of its {planned} epochs (an "
                f"interrupted run); `nas-search supernet train --resume --out {config.supernet}` with the same "
                "options finishes it",
                file=sys.stderr,
            )
        return Path(config.supernet)
    epochs = supernet_epochs(config)
    path = resolved.study_dir / "supernet.pt"
    if path.exists():
        payload = load_checkpoint(path, task.checkpoint_format, space=resolved.space.name)
        if payload["epoch"] >= epochs or study_exists:  # a study's supernet is never trained further
            print(
                f"reusing supernet {path} (trained {payload['epoch']} epochs at {payload.get('input_size', payload.get('image_size'))} px)"
            )
            return path
    print(
        f"training the supernet of space {resolved.space.name!r}: {epochs} epochs at {resolved.train_input_size} px -> {path}"
    )
    task.train_supernet(
        SupernetJob(
            space=resolved.space.name,
            data=config.data,
            path=path,
            epochs=epochs,
            input_size=resolved.train_input_size,
            batch_size=config.batch_size,
            seed=config.seed,
            workers=config.workers,
            device=config.training_device,
            max_train=demo_max_train(config),
            progress=config.progress,
            max_flops=resolved.budgets.flops,
            flops_input_size=resolved.input_size,
        )
    )
    _report_training(path, task.checkpoint_format)
    return path


def _report_training(path: Path, checkpoint_format: str) -> None:
    """One line on how far the supernet's largest subnet learned in its last epoch,
    against a uniform guess (for checkpoints that record it)."""
    import math

    from nas_search.training.checkpoint import load_checkpoint

    payload = load_checkpoint(path, checkpoint_format)
    last = (payload.get("history") or [{}])[-1]
    if "largest_cross_entropy" not in last or not payload.get("num_classes"):
        return
    chance = math.log(payload["num_classes"])
    print(
        f"supernet trained: the largest subnet's training cross-entropy is {last['largest_cross_entropy']:.3f} "
        f"(a uniform guess: {chance:.3f}), its training top-1 {last['largest_train_accuracy']:.3f} "
        f"(chance {1 / payload['num_classes']:.3f})"
    )


def _build_evaluator(checkpoint: Path, config: SearchConfig) -> TaskEvaluation:
    """The task's scorer of subnets with inherited weights."""
    return get_task(config.task).load_evaluator(checkpoint, scoring_settings(config))


def build_evaluator(checkpoint: Path, config: SearchConfig) -> TaskEvaluation:
    """The task's scorer of subnets with inherited weights."""
    return get_task(config.task).load_evaluator(checkpoint, scoring_settings(config))


def build_candidate_space(resolved: ResolvedSearch, evaluation: TaskEvaluation) -> SupernetSpace:
    """The searched candidates: subnets of the loaded supernet, costed for the data's class
    count (``resolved`` after :func:`~nas_search.search.resolve.adopt_scoring`) and scored
    by ``evaluation``. The only place the search learns its candidates come from a supernet."""
    return SupernetSpace.build(
        resolved.space,
        resolved.input_size,
        evaluation.num_classes,
        resolved.budgets,
        resolved.device_models(),
        evaluation.evaluate,
    )


__all__ = [
    "build_candidate_space",
    "build_evaluator",
    "check_study_supernet",
    "ensure_supernet",
    "load_given_supernet",
    "supernet_epochs",
]

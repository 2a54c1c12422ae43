"""What a task is: the typed contract between the task-agnostic search and one task.

A :class:`Task` holds everything that differs between image classification and object
detection in the main job: its defaults, how its supernet is trained, how a subnet is
scored with inherited weights and how a finalist is trained. The search builds the typed
requests below from its own options and never branches on the task's name.

Studies keep the task's primary score under the objective name ``accuracy`` (so that
samplers, summaries and exports read one key), and record the task's own metric names as
user attributes too; the study attribute ``score_name`` says what the score is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from nas_search.spaces.space import SearchSpace
from nas_search.spec import ArchSpec

#: Supernet epochs on real data (when ``--supernet-epochs`` is not given).
REAL_DATA_EPOCHS = 10


@dataclass(frozen=True)
class DemoDefaults:
    """Defaults used on the task's built-in demo data (no ``--data``): supernet epochs,
    training images and the proxy input size. They keep the main job within its time
    budget on 2 CPU cores."""

    epochs: int
    max_train: int
    input_size: int


@dataclass(frozen=True)
class FinalistDefaults:
    """Finalist re-ranking defaults (``--finalists``, ``--finalist-epochs``)."""

    count: int
    epochs: int


@dataclass(frozen=True)
class SupernetJob:
    """One supernet training the search asks a task for (resumable into ``path``).

    ``max_flops`` makes the training budget-aware: only subnets within that many FLOPs
    (counted at ``flops_input_size``) are trained."""

    space: str
    data: str | None
    path: Path
    epochs: int
    input_size: int
    batch_size: int
    seed: int
    workers: int | None
    device: str
    max_train: int | None
    progress: bool
    max_flops: int | None
    flops_input_size: int


@dataclass(frozen=True)
class ScoringSettings:
    """How subnets are scored and finalists trained: the split seed, the validation and
    training subsets, BN recalibration images and the compute device of training."""

    seed: int
    max_val: int | None
    max_train: int | None
    calibration_images: int
    device: str
    progress: bool


@dataclass(frozen=True)
class FinalistJob:
    """The short training of one finalist: epochs, input size and initialisation
    (``inherited`` supernet weights or ``scratch``)."""

    epochs: int
    input_size: int
    init: str


@dataclass
class TaskEvaluation:
    """A loaded supernet ready to score subnets.

    Attributes:
        evaluate: ``spec -> metrics``; ``metrics["accuracy"]`` is the primary score.
        num_classes: classes of the data (without background for detection).
        train_input_size: the proxy size the supernet was trained and scores at.
        metadata: the checkpoint's metadata.
        description: the dataset, in words.
    """

    evaluate: Callable[[ArchSpec], dict[str, float]]
    num_classes: int
    train_input_size: int
    metadata: dict[str, Any]
    description: str


#: ``(spec, label, run) -> {"accuracy", "loss", "seconds", ...}``: trains one finalist and
#: scores it; ``run`` (0, 1, ...) picks the training seed (seed + run), never the split.
FinalistTrainer = Callable[[ArchSpec, str, int], dict[str, float]]


@dataclass(frozen=True)
class Task:
    """The main job's task-specific parts.

    Attributes:
        name: ``classify`` or ``detect``.
        default_space: the space ``run`` searches when ``--space`` is not given.
        score_name: the primary score in words (``top-1 accuracy``, ``mAP@0.5``).
        checkpoint_format: the format tag of the task's supernet checkpoints.
        data_forms: the accepted ``--data`` folders, in words (for error messages).
        demo: defaults on the built-in demo data.
        calibration_images: BN recalibration images per scored subnet.
        finalists: finalist defaults on real data (``real``) and on the demo (``demo``).
        finalist_size_multiple: a finalist's input size must be a multiple of this.
        train_supernet: trains (or resumes) a supernet for a :class:`SupernetJob`.
        load_evaluator: loads a supernet checkpoint and the search's data once and returns
            a :class:`TaskEvaluation`.
        finalist_trainer: loads the supernet and the search's data once and returns a
            :data:`FinalistTrainer`.
        reference_model: the plain standalone network of an architecture (randomly
            initialised), the module fvcore counts.
    """

    name: str
    default_space: str
    score_name: str
    checkpoint_format: str
    data_forms: str
    demo: DemoDefaults
    calibration_images: int
    finalists: dict[str, FinalistDefaults]
    train_supernet: Callable[[SupernetJob], None]
    load_evaluator: Callable[[Path, ScoringSettings], TaskEvaluation]
    finalist_trainer: Callable[[Path, ScoringSettings, FinalistJob], FinalistTrainer]
    reference_model: Callable[[ArchSpec, SearchSpace, int | None], nn.Module]
    finalist_size_multiple: int = 1


__all__ = [
    "REAL_DATA_EPOCHS",
    "DemoDefaults",
    "FinalistDefaults",
    "FinalistJob",
    "FinalistTrainer",
    "ScoringSettings",
    "SupernetJob",
    "Task",
    "TaskEvaluation",
]

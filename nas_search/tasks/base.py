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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        validation_images: images every subnet is scored on (for the standard error of a
            score); None when unknown.
        chance_score: the primary score of a network that guesses (``1 / classes`` top-1;
            0 mAP); None when unknown.
    """

    evaluate: Callable[[ArchSpec], dict[str, float]]
    num_classes: int
    train_input_size: int
    metadata: dict[str, Any]
    description: str
    validation_images: int | None = None
    chance_score: float | None = None


#: ``(spec, label, run) -> {"accuracy", "loss", "seconds", ...}``: trains one finalist and
#: scores it; ``run`` (0, 1, ...) picks the training seed (seed + run), never the split.
FinalistTrainer = Callable[[ArchSpec, str, int], dict[str, float]]


@dataclass(frozen=True)
class ExportRequest:
    """One trial to export (``nas-search export``).

    Attributes:
        spec: the trial's architecture.
        checkpoint: the study's supernet (its inherited weights are exported).
        study_attributes: the study's user attributes (``input_size``, ``data`` ...).
        trial_attributes: the trial's user attributes (its recorded scores).
        epochs: the epochs written into ``train.yaml``.
    """

    spec: ArchSpec
    checkpoint: Path
    study_attributes: Mapping[str, Any]
    trial_attributes: Mapping[str, Any]
    epochs: int


@dataclass
class ExportedModel:
    """What a task's exporter produces before the files are written.

    Attributes:
        model: the standalone model (``state_dict`` goes to ``model.pt``).
        onnx_module: the module exported to ``model.onnx`` (the classifier; for a detector,
            the network without transform and post-processing).
        output_names: ONNX output names.
        train_config: the contents of ``train.yaml``.
        meta: task-specific entries of ``meta.json``.
        flops, params: analytic costs at the deployment size.
        log_outputs: exp-coded outputs that the ONNX check compares as logs (see
            :func:`nas_search.export.export_onnx`).
        train_notes: task-specific comment lines of ``train.yaml`` (each ending in a newline).
    """

    model: nn.Module
    onnx_module: nn.Module
    output_names: tuple[str, ...]
    train_config: dict[str, Any]
    meta: dict[str, Any]
    flops: int
    params: int
    log_outputs: tuple[str, ...] = ()
    train_notes: str = ""


def training_size(data: str | None, proxy_size: int, deployment_size: int) -> int:
    """The ``input_size`` an exported ``train.yaml`` trains at: the deployment size on real
    data (the network is trained where it will run), the proxy size on a built-in demo
    (its images are rendered small; upsampling them teaches nothing and costs
    ``(deployment / proxy)^2`` times the compute). ``nas-search train --input-size`` overrides."""
    return deployment_size if data is not None else proxy_size


def exported_data_path(attributes: Mapping[str, Any], metadata: Mapping[str, Any]) -> str | None:
    """The training data of an export as an absolute path (the study's, else the
    supernet's), so ``train.yaml`` works from any folder; None for a built-in demo."""
    data = attributes.get("data") or metadata.get("data")
    return None if data is None else str(Path(data).expanduser().resolve())


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
        export_model: builds the exported network and its ``train.yaml`` and ``meta.json``
            entries for an :class:`ExportRequest`.
        load_exported: rebuilds an exported network (weights not loaded) from its
            architecture, its space and its ``meta.json``.
        train_standalone: ``(train.yaml path, *, resume, overrides, progress) -> result``:
            trains an exported architecture on its own (``nas-search train``).
        describe_trained: the one-line summary of a ``train_standalone`` result.
        evaluate_checkpoint: ``(checkpoint, arch, data, *, calibration_images, max_val,
            device) -> result``: scores one architecture with inherited supernet weights
            (``nas-search eval``).
        describe_evaluation: the one-line summary of an ``evaluate_checkpoint`` result.
        score_key: the key of the primary score in a result (``accuracy``, ``map50``).
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
    export_model: Callable[[ExportRequest], ExportedModel]
    load_exported: Callable[[ArchSpec, SearchSpace, dict[str, Any]], nn.Module]
    train_standalone: Callable[..., dict[str, Any]]
    describe_trained: Callable[[dict[str, Any]], str]
    evaluate_checkpoint: Callable[..., dict[str, Any]]
    describe_evaluation: Callable[[dict[str, Any]], str]
    score_key: str = "accuracy"
    finalist_size_multiple: int = 1


__all__ = [
    "REAL_DATA_EPOCHS",
    "DemoDefaults",
    "ExportRequest",
    "ExportedModel",
    "FinalistDefaults",
    "FinalistJob",
    "FinalistTrainer",
    "ScoringSettings",
    "SupernetJob",
    "Task",
    "TaskEvaluation",
    "exported_data_path",
    "training_size",
]

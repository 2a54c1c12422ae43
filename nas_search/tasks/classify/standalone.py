"""``nas-search train train.yaml``: train an exported architecture on its own.

Fine-tunes from the inherited weights (``init: inherited``) or trains from scratch
(``init: scratch``), with progress, an atomic checkpoint per epoch, ``--resume``, and the
final top-1 accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.config import FieldCheck, check_fields, config_from_dict, config_to_dict, load_yaml_file, positive_or_none
from nas_search.errors import UserError
from nas_search.spaces.builtin import BACKBONE_SPACES
from nas_search.spaces.static import build_static_model
from nas_search.spec import ArchSpec
from nas_search.training.checkpoint import (
    MODEL_FORMAT,
    check_steps_per_epoch,
    load_checkpoint,
    refuse_to_overwrite,
    save_checkpoint,
)
from nas_search.training.config import resolve_data_folder
from nas_search.training.distributed import DEVICES
from nas_search.training.loop import (
    EpochLoop,
    EpochTally,
    TrainingState,
    announce_resume,
    build_optimizer,
    check_epochs_left,
    count_steps,
    optimizer_step,
    run_epochs,
    step_schedule,
)
from nas_search.units import INPUT_SIZE_FORMS, valid_input_size
from nas_search.utils import check_output_path

INITIALISATIONS = ("inherited", "scratch")
#: Learning-rate schedules of ``train.yaml`` (warm-up, then this).
SCHEDULES = ("cosine",)
OPTIMIZERS = ("sgd", "adamw")  # as in training.loop.build_optimizer


def _input_size_or_none(value: int | None) -> bool:
    return value is None or valid_input_size(value)


#: Value checks after the type checks: (field, test, what is accepted).
CHECKS: tuple[FieldCheck, ...] = (
    ("arch", bool, "the architecture mapping written by `nas-search export`"),
    ("init", lambda value: value in INITIALISATIONS, ", ".join(INITIALISATIONS)),
    ("optimizer", lambda value: value in OPTIMIZERS, ", ".join(OPTIMIZERS)),
    ("schedule", lambda value: value in SCHEDULES, ", ".join(SCHEDULES)),
    ("device", lambda value: value in DEVICES, ", ".join(DEVICES)),
    ("num_classes", positive_or_none, "1 or more, or null (from the data)"),
    ("input_size", valid_input_size, INPUT_SIZE_FORMS),
    ("deployment_input_size", _input_size_or_none, f"{INPUT_SIZE_FORMS}, or null"),
    ("learning_rate", lambda value: value > 0, "a number > 0"),
    ("weight_decay", lambda value: value >= 0, "0 or more"),
    ("warmup_epochs", lambda value: value >= 0, "0 or more"),
    ("label_smoothing", lambda value: 0 <= value < 1, "0 to below 1"),
    ("epochs", lambda value: value >= 1, "1 or more"),
    ("batch_size", lambda value: value >= 1, "1 or more"),
    ("workers", lambda value: value is None or value >= 0, "0 or more, or null"),
    ("max_train", positive_or_none, "1 or more, or null (all)"),
    ("max_val", positive_or_none, "1 or more, or null (all)"),
)


@dataclass
class StandaloneTrainConfig:
    """The contents of an exported ``train.yaml``; every default in one place."""

    arch: dict = field(default_factory=dict)
    data: str | None = None
    num_classes: int | None = None
    input_size: int = 32
    deployment_input_size: int | None = None
    init: str = "inherited"
    weights: str | None = "model.pt"
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    weight_decay: float = 4e-5
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    epochs: int = 20
    batch_size: int = 64
    seed: int = 0
    out: str = "trained"
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    workers: int | None = None
    max_train: int | None = None
    max_val: int | None = None


def train_epoch(model, loader, optimizer, scheduler, label_smoothing: float, device: torch.device | str = "cpu"):
    """One epoch of plain supervised training; yields (loss, batch size) per step."""
    model.train()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
        optimizer_step(loss, optimizer, scheduler)
        yield loss.item(), labels.size(0)


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[StandaloneTrainConfig, Path]:
    """Parse and check a ``train.yaml`` (paths in it are relative to its folder)."""
    path = Path(path)
    data = load_yaml_file(path, "training config")
    if isinstance(data, dict) and overrides:
        data = {**data, **{key: value for key, value in overrides.items() if value is not None}}
    config = config_from_dict(StandaloneTrainConfig, data, source=str(path))
    check_fields(config, CHECKS, str(path))
    return config, path.parent


def _load_weights(model: torch.nn.Module, weights: Path, source: str | Path, spec: ArchSpec) -> None:
    """Load the exported (inherited) weights into ``model``; one-line errors."""
    if not weights.is_file():
        raise UserError(f"{source}: init is 'inherited' but the weights file {weights} does not exist")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:
        raise UserError(f"{weights} does not fit architecture {spec}: {str(error).splitlines()[0][:160]}") from None


def _resume(
    state: TrainingState, checkpoint_path: Path, spec: ArchSpec, config: StandaloneTrainConfig, steps: int
) -> tuple[int, list[dict]]:
    """Continue from ``checkpoint_path``: checks that it fits this run, restores its states;
    returns its trained epochs and history."""
    payload = load_checkpoint(checkpoint_path, MODEL_FORMAT)
    if payload.get("arch") != spec.key:
        raise UserError(f"checkpoint {checkpoint_path} is for another architecture ({payload.get('arch')})")
    trained_size = (payload.get("config") or {}).get("input_size", config.input_size)
    if trained_size != config.input_size:
        raise UserError(
            f"checkpoint {checkpoint_path} was trained at input_size {trained_size}, not "
            f"{config.input_size}; resume at {trained_size} or train without --resume"
        )
    check_steps_per_epoch(payload, steps, checkpoint_path)
    start_epoch, history = state.restore(payload)
    check_epochs_left(checkpoint_path, start_epoch, config.epochs)
    announce_resume(checkpoint_path, start_epoch, config.epochs)
    return start_epoch, history


def _model_and_data(path: str | Path, config: Any, base: Path) -> tuple[ArchSpec, Any, nn.Module]:
    """The architecture, the data and the model (inherited weights loaded, or fresh) of a
    ``train.yaml``; one-line errors for a bad architecture or a class-count mismatch."""
    from nas_search.tasks.classify.data import load_classification_data

    try:
        spec = ArchSpec.from_dict(config.arch)
    except UserError as error:
        raise UserError(f"{path}: arch: {error}") from None
    space = BACKBONE_SPACES.get(spec.space)
    data_dir = resolve_data_folder(config.data, base)
    torch.manual_seed(config.seed)
    data = load_classification_data(
        data_dir, input_size=config.input_size, seed=config.seed, max_train=config.max_train, max_val=config.max_val
    )
    num_classes = config.num_classes or data.num_classes
    if data.num_classes != num_classes:
        raise UserError(f"{path}: num_classes={num_classes} but the data has {data.num_classes} classes")
    model = build_static_model(space.resolve(spec, num_classes=num_classes))
    if config.init == "inherited":
        _load_weights(model, base / (config.weights or "model.pt"), path, spec)
    return spec, data, model


def train_standalone(
    path: str | Path, *, resume: bool = False, overrides: dict[str, Any] | None = None, progress: bool = True
) -> dict:
    """Train the architecture of a ``train.yaml``; returns the final accuracy and paths."""
    from nas_search.progress import progress_bar
    from nas_search.tasks.classify.data import make_loader
    from nas_search.tasks.classify.evaluate import top1_accuracy
    from nas_search.training.distributed import resolve_device

    config, base = load_train_config(path, overrides)
    device = resolve_device(config.device)
    out_dir, checkpoint_path = base / config.out, base / config.out / "checkpoint.pt"
    check_output_path(out_dir, "out (--out)", kind="folder")
    refuse_to_overwrite(checkpoint_path, resume, "--out DIR")
    spec, data, model = _model_and_data(path, config, base)
    model.to(device)
    optimizer = build_optimizer(
        model,
        SimpleNamespace(
            optimizer=config.optimizer, learning_rate=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay
        ),
    )
    loader = make_loader(
        data.train, batch_size=config.batch_size, shuffle=True, seed=config.seed, num_workers=config.workers, drop_last=True
    )
    val_loader = make_loader(data.val, batch_size=128, shuffle=False, seed=config.seed, num_workers=0)
    steps = count_steps(
        loader, f"batch_size {config.batch_size} is larger than the {len(cast(Sized, data.train))} training images"
    )
    state = TrainingState(model, optimizer, step_schedule(optimizer, steps, config.epochs, config.warmup_epochs))
    start_epoch, history = (
        _resume(state, checkpoint_path, spec, config, steps) if resume and checkpoint_path.exists() else (0, [])
    )
    initial_accuracy = top1_accuracy(model, val_loader, device) if start_epoch == 0 else None

    def train(epoch: int, bar: Any, tally: EpochTally) -> None:
        model.train()
        for loss, count in train_epoch(model, loader, optimizer, state.scheduler, config.label_smoothing, device):
            tally.add(count, loss=loss)
            bar.update(count)
            bar.set_postfix(loss=f"{tally.mean('loss'):.3f}")

    def record(epoch: int, tally: EpochTally) -> dict:
        accuracy = top1_accuracy(model, val_loader, device)
        return {
            "epoch": epoch + 1,
            "loss": tally.mean("loss"),
            "accuracy": accuracy,
            "seconds": time.perf_counter() - tally.started,
        }

    def save(epoch: int) -> None:
        save_checkpoint(
            {
                "format": MODEL_FORMAT,
                "arch": spec.key,
                "epoch": epoch + 1,
                "history": history,
                "steps_per_epoch": steps,
                "config": config_to_dict(config),
                **state.state_dicts(),
            },
            checkpoint_path,
        )

    loop = EpochLoop(loader, config.seed, config.epochs, "train epoch", steps * config.batch_size, progress_bar, progress)
    run_epochs(loop, start_epoch, config.epochs, history, train, record, save)
    final = history[-1]["accuracy"] if history else top1_accuracy(model, val_loader, device)
    torch.save({name: value.cpu() for name, value in model.state_dict().items()}, out_dir / "model.pt.tmp")
    (out_dir / "model.pt.tmp").replace(out_dir / "model.pt")
    return {
        "accuracy": final,
        "initial_accuracy": initial_accuracy,
        "epochs": config.epochs,
        "checkpoint": str(checkpoint_path),
        "weights": str(out_dir / "model.pt"),
        "history": history,
        "arch": str(spec),
    }

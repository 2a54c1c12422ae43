"""``nas-search train train.yaml``: train an exported architecture on its own.

Fine-tunes from the inherited weights (``init: inherited``) or trains from scratch
(``init: scratch``), with progress, an atomic checkpoint per epoch, ``--resume``, and the
final top-1 accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nas_search.config import FieldCheck, check_fields, config_from_dict, config_to_dict, load_yaml_file, positive_or_none
from nas_search.errors import UserError
from nas_search.units import INPUT_SIZE_FORMS, valid_input_size
from nas_search.utils import check_output_path
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
from nas_search.training.distributed import DEVICES

INITIALISATIONS = ("inherited", "scratch")
#: Learning-rate schedules of ``train.yaml`` (warm-up, then this).
SCHEDULES = ("cosine",)
OPTIMIZERS = ("sgd", "adamw")  # as in supernet_training.build_optimizer


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
    device: str = "auto"            # auto (CUDA when present) | cpu | cuda
    workers: int | None = None
    max_train: int | None = None
    max_val: int | None = None


def train_epoch(model, loader, optimizer, scheduler, label_smoothing: float, device: torch.device | str = "cpu"):
    """One epoch of plain supervised training; yields (loss, batch size) per step."""
    model.train()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
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


def train_standalone(path: str | Path, *, resume: bool = False, overrides: dict[str, Any] | None = None, progress: bool = True) -> dict:
    """Train the architecture of a ``train.yaml``; returns the final accuracy and paths."""
    from nas_search.tasks.classify.data import load_classification_data, make_loader
    from nas_search.tasks.classify.evaluate import top1_accuracy
    from nas_search.progress import progress_bar
    from nas_search.training.distributed import resolve_device
    from nas_search.training.loop import build_optimizer, warmup_cosine

    config, base = load_train_config(path, overrides)
    device = resolve_device(config.device)
    check_output_path(base / config.out, "out (--out)", kind="folder")
    refuse_to_overwrite(base / config.out / "checkpoint.pt", resume, "--out DIR")
    try:
        spec = ArchSpec.from_dict(config.arch)
    except UserError as error:
        raise UserError(f"{path}: arch: {error}") from None
    space = BACKBONE_SPACES.get(spec.space)
    data_dir = config.data if config.data is None or Path(config.data).is_absolute() else str((base / config.data).resolve())
    if config.data is not None and not Path(data_dir).exists() and Path(config.data).exists():
        data_dir = config.data
    torch.manual_seed(config.seed)
    data = load_classification_data(data_dir, input_size=config.input_size, seed=config.seed, max_train=config.max_train, max_val=config.max_val)
    num_classes = config.num_classes or data.num_classes
    if data.num_classes != num_classes:
        raise UserError(f"{path}: num_classes={num_classes} but the data has {data.num_classes} classes")
    model = build_static_model(space.resolve(spec, num_classes=num_classes))
    if config.init == "inherited":
        weights = base / (config.weights or "model.pt")
        if not weights.is_file():
            raise UserError(f"{path}: init is 'inherited' but the weights file {weights} does not exist")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as error:
            raise UserError(f"{weights} does not fit architecture {spec}: {str(error).splitlines()[0][:160]}") from None
    model.to(device)
    out_dir = base / config.out
    checkpoint_path = out_dir / "checkpoint.pt"
    optimizer_options = type("Options", (), {
        "optimizer": config.optimizer, "learning_rate": config.learning_rate, "momentum": 0.9,
        "weight_decay": config.weight_decay,
    })()
    optimizer = build_optimizer(model, optimizer_options)
    loader = make_loader(data.train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
                         num_workers=config.workers, drop_last=True)
    val_loader = make_loader(data.val, batch_size=128, shuffle=False, seed=config.seed, num_workers=0)
    steps = len(loader)
    if steps == 0:
        raise UserError(f"batch_size {config.batch_size} is larger than the {len(data.train)} training images")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps * config.epochs, int(config.warmup_epochs * steps)))
    start_epoch, history = 0, []
    if resume and checkpoint_path.exists():
        payload = load_checkpoint(checkpoint_path, MODEL_FORMAT)
        if payload.get("arch") != spec.key:
            raise UserError(f"checkpoint {checkpoint_path} is for another architecture ({payload.get('arch')})")
        trained_size = (payload.get("config") or {}).get("input_size", config.input_size)
        if trained_size != config.input_size:
            raise UserError(f"checkpoint {checkpoint_path} was trained at input_size {trained_size}, not "
                            f"{config.input_size}; resume at {trained_size} or train without --resume")
        check_steps_per_epoch(payload, steps, checkpoint_path)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        start_epoch, history = int(payload["epoch"]), list(payload["history"])
        if start_epoch > config.epochs:
            raise UserError(f"checkpoint {checkpoint_path} holds {start_epoch} trained epochs, more than epochs "
                            f"{config.epochs}; accepted: --epochs {start_epoch} or more")
        print(f"resuming {checkpoint_path} after epoch {start_epoch}/{config.epochs}")
    initial_accuracy = top1_accuracy(model, val_loader, device) if start_epoch == 0 else None
    for epoch in range(start_epoch, config.epochs):
        torch.manual_seed(config.seed + 1000 * epoch)
        if getattr(loader, "generator", None) is not None:
            loader.generator.manual_seed(config.seed + epoch)
        model.train()
        bar = progress_bar(steps * config.batch_size, f"train epoch {epoch + 1}/{config.epochs}", "img", progress)
        started, loss_sum, seen = time.perf_counter(), 0.0, 0
        for loss, count in train_epoch(model, loader, optimizer, scheduler, config.label_smoothing, device):
            loss_sum += loss * count
            seen += count
            bar.update(count)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        bar.close()
        accuracy = top1_accuracy(model, val_loader, device)
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "accuracy": accuracy,
                        "seconds": time.perf_counter() - started})
        save_checkpoint({
            "format": MODEL_FORMAT, "arch": spec.key, "epoch": epoch + 1, "history": history, "steps_per_epoch": steps,
            "config": config_to_dict(config), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        }, checkpoint_path)
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

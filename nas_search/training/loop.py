"""The training loop kit shared by every trainer.

Every trainer of the package (classifier and detector supernets, standalone classifiers
and detectors, search finalists) has the same shape: set-up (optimizer, loader, a
learning-rate schedule counted in optimizer steps), an optional resume from a checkpoint,
an epoch loop (each epoch reseeded, with a progress bar and a checkpoint after it), and a
result. The pieces here are that shape; the trainers supply only what is task specific:
what one epoch does, what its record holds and what the checkpoint holds.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_search.errors import UserError


def build_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW, without weight decay on BN parameters and biases.

    ``config`` has ``optimizer`` (``sgd`` or ``adamw``), ``learning_rate``, ``momentum``
    and ``weight_decay``."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        (no_decay if parameter.dim() <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    factories = {
        "sgd": lambda: torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum, nesterov=True),
        "adamw": lambda: torch.optim.AdamW(groups, lr=config.learning_rate),
    }
    if config.optimizer not in factories:
        raise UserError(f"unknown optimizer {config.optimizer!r}; accepted: {', '.join(factories)}")
    return factories[config.optimizer]()


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up, then cosine decay to zero."""

    def multiplier(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


# ----------------------------------------------------------------------------- set-up


def count_steps(loader: Any, too_few_images: str) -> int:
    """Optimizer steps per epoch (batches of the loader); a one-line :class:`UserError`
    with ``too_few_images`` when the loader holds no full batch."""
    steps = len(loader)
    if steps == 0:
        raise UserError(too_few_images)
    return steps


def step_schedule(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The warm-up-then-cosine schedule over ``epochs`` epochs, counted in optimizer steps
    (``scheduler.step()`` after every optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * epochs, int(warmup_epochs * steps_per_epoch))
    )


# ----------------------------------------------------------------------------- state and resume


@dataclass
class TrainingState:
    """What a checkpoint stores of a run besides its metadata: the model, the optimizer,
    the schedule and (mixed precision on CUDA) the gradient scaler."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None

    def state_dicts(self) -> dict[str, Any]:
        """``model``, ``optimizer``, ``scheduler`` (and ``scaler`` when one is kept) states,
        in that order, for a checkpoint payload."""
        states = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.scaler is not None:
            states["scaler"] = self.scaler.state_dict() if self.scaler.is_enabled() else {}
        return states

    def restore(self, payload: dict[str, Any]) -> tuple[int, list[dict]]:
        """Load the states of a checkpoint payload; returns its trained epochs and history."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        return int(payload["epoch"]), list(payload.get("history", []))


def check_epochs_left(path: str | Path, trained_epochs: int, epochs: int) -> None:
    """Refuse to resume a checkpoint that already holds more epochs than the run's."""
    if trained_epochs > epochs:
        raise UserError(
            f"checkpoint {path} holds {trained_epochs} trained epochs, more than epochs "
            f"{epochs}; accepted: --epochs {trained_epochs} or more"
        )


def announce_resume(path: str | Path, trained_epochs: int, epochs: int, is_main: bool = True) -> None:
    """The one line a resumed run prints (by the main process only)."""
    if is_main:
        print(f"resuming {path} after epoch {trained_epochs}/{epochs}")


# ----------------------------------------------------------------------------- steps


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    scaler: torch.amp.GradScaler | None = None,
    parameters: Iterable[torch.Tensor] | None = None,
    clip_grad_norm: float | None = None,
) -> None:
    """One optimizer step on ``loss``: clear the gradients, back-propagate (through the
    gradient scaler when given), clip the gradient norm of ``parameters`` to
    ``clip_grad_norm`` when set, step the optimizer and then the schedule."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        _clip_gradients(parameters, clip_grad_norm)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        _clip_gradients(parameters, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    if scheduler is not None:
        scheduler.step()


def _clip_gradients(parameters: Iterable[torch.Tensor] | None, clip_grad_norm: float | None) -> None:
    """Clip the gradient norm of ``parameters`` to ``clip_grad_norm`` (nothing when None)."""
    if clip_grad_norm is None:
        return
    if parameters is None:
        raise ValueError("clip_grad_norm needs the parameters to clip")
    nn.utils.clip_grad_norm_(parameters, clip_grad_norm)


@dataclass
class EpochTally:
    """Image-weighted sums of one epoch's values, its images and its timing.

    ``started`` is when the epoch began; ``seconds`` its training time (set by
    :func:`run_epochs` when the epoch's steps end)."""

    started: float = field(default_factory=time.perf_counter)
    sums: dict[str, float] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0

    def add(self, count: int, **values: float) -> None:
        """Add one batch of ``count`` images with its per-image ``values`` (e.g. losses)."""
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * count
        self.images += count

    def count(self, name: str, amount: float) -> None:
        """Add ``amount`` to the unweighted sum ``name`` (e.g. correct predictions)."""
        self.sums[name] = self.sums.get(name, 0.0) + amount

    def mean(self, name: str) -> float:
        """The sum ``name`` per image (0 over no images)."""
        return self.sums.get(name, 0.0) / max(self.images, 1)


def seed_epoch(loader: Any, seed: int, epoch: int, python_random: bool = False) -> None:
    """Seed one epoch: torch's global generator (and Python's ``random`` when asked), the
    distributed sampler's epoch and the loader's shuffling generator, all from ``seed`` and
    the epoch number, so a resumed run repeats an uninterrupted one."""
    torch.manual_seed(seed + 1000 * epoch)
    if python_random:
        random.seed(seed + 1000 * epoch)
    set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed + epoch)


@dataclass
class EpochLoop:
    """How :func:`run_epochs` drives a run's epochs.

    ``epochs`` is the schedule's length (the bar shows ``epoch 3/5``); ``bar_images`` the
    images one epoch's bar counts; ``progress_bar`` a factory like
    :func:`nas_search.progress.progress_bar`. ``world_size`` processes train together
    (throughput counts all of them); only the main process writes checkpoints, then every
    process waits at ``barrier``."""

    loader: Any
    seed: int
    epochs: int
    description: str
    bar_images: int
    progress_bar: Callable[..., Any]
    show_progress: bool = True
    python_random: bool = False
    world_size: int = 1
    is_main: bool = True
    barrier: Callable[[], None] = lambda: None


@dataclass
class Throughput:
    """Images and training seconds over a run's epochs (all processes)."""

    images: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Training images per second; 0 when no epoch ran."""
        return self.images / self.seconds if self.seconds else 0.0


def run_epochs(
    loop: EpochLoop,
    start_epoch: int,
    end_epoch: int,
    history: list[dict],
    train: Callable[[int, Any, EpochTally], None],
    record: Callable[[int, EpochTally], dict],
    save: Callable[[int], None] | None = None,
    before_epoch: Callable[[int], None] | None = None,
) -> Throughput:
    """Run epochs ``start_epoch`` to ``end_epoch - 1``. Each is seeded
    (:func:`seed_epoch`) and prepared (``before_epoch(epoch)``, when given), then
    ``train(epoch, bar, tally)`` runs its steps under a progress
    bar (closed afterwards, even on errors), ``record(epoch, tally)`` makes its history
    record (appended to ``history``), and ``save(epoch)`` writes the checkpoint (main
    process only; no checkpoint without ``save``)."""
    throughput = Throughput()
    for epoch in range(start_epoch, end_epoch):
        seed_epoch(loop.loader, loop.seed, epoch, loop.python_random)
        if before_epoch is not None:
            before_epoch(epoch)
        tally = EpochTally()
        bar = loop.progress_bar(
            total=loop.bar_images,
            description=f"{loop.description} {epoch + 1}/{loop.epochs}",
            unit="img",
            enabled=loop.show_progress,
        )
        try:
            train(epoch, bar, tally)
        finally:
            bar.close()
        tally.seconds = time.perf_counter() - tally.started
        throughput.images += tally.images * loop.world_size
        throughput.seconds += tally.seconds
        history.append(record(epoch, tally))
        if loop.is_main and save is not None:
            save(epoch)
        loop.barrier()
    return throughput


__all__ = [
    "EpochLoop",
    "EpochTally",
    "Throughput",
    "TrainingState",
    "announce_resume",
    "build_optimizer",
    "check_epochs_left",
    "count_steps",
    "optimizer_step",
    "run_epochs",
    "seed_epoch",
    "step_schedule",
    "warmup_cosine",
]

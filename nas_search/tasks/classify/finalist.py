"""Short training of one classifier finalist (see :mod:`nas_search.training.finalist`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sized
from typing import Any, cast

import torch
from torch import nn

from nas_search.training.finalist import FinalistRecipe, finalist_optimizer
from nas_search.training.loop import EpochLoop, EpochTally, optimizer_step, run_epochs


def train_classifier_finalist(
    model: nn.Module,
    data: Any,
    recipe: FinalistRecipe,
    epochs: int,
    seed: int,
    label: str,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Train a standalone classifier ``epochs`` epochs on ``data.train``; returns its top-1
    ``accuracy`` on ``data.val`` with its binomial standard error ``score_error``
    (``sqrt(p (1 - p) / n)``), the last epoch's mean ``loss`` and ``seconds``."""
    import torch.nn.functional as F

    from nas_search.progress import progress_bar
    from nas_search.tasks.classify.data import make_loader
    from nas_search.tasks.classify.evaluate import top1_accuracy

    loader = make_loader(
        data.train,
        batch_size=recipe.batch_size,
        shuffle=True,
        seed=seed,
        num_workers=0,
        drop_last=len(data.train) >= recipe.batch_size,
    )
    val_loader = make_loader(data.val, batch_size=128, shuffle=False, seed=seed, num_workers=0)
    optimizer, scheduler = finalist_optimizer(model, recipe, len(loader), epochs)
    started = time.perf_counter()
    history: list[dict] = []

    def train(epoch: int, bar: Any, tally: EpochTally) -> None:
        model.train()
        for images, labels in loader:
            step_loss = F.cross_entropy(model(images.to(device)), labels.to(device), label_smoothing=recipe.label_smoothing)
            optimizer_step(step_loss, optimizer, scheduler)
            tally.add(labels.size(0), loss=step_loss.item())
            bar.update(labels.size(0))

    loop = EpochLoop(loader, seed, epochs, f"{label} epoch", len(cast(Sized, loader.dataset)), progress_bar, progress)
    run_epochs(loop, 0, epochs, history, train, lambda epoch, tally: {"loss": tally.mean("loss")})
    loss = history[-1]["loss"] if history else float("nan")
    accuracy = top1_accuracy(model, val_loader, device)
    error = math.sqrt(accuracy * (1.0 - accuracy) / max(len(data.val), 1))
    return {"accuracy": accuracy, "score_error": error, "loss": loss, "seconds": time.perf_counter() - started}

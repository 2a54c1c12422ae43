"""Short training of one detector finalist (see :mod:`nas_search.training.finalist`)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from nas_search.training.finalist import DETECTION_BOOTSTRAP_RESAMPLES, FinalistRecipe, finalist_optimizer
from nas_search.training.loop import EpochLoop, EpochTally, run_epochs


def train_detector_finalist(
    model: nn.Module,
    data: Any,
    recipe: FinalistRecipe,
    epochs: int,
    seed: int,
    label: str,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Train a standalone detector ``epochs`` epochs on ``data.train``; returns mAP@0.5 as
    ``accuracy`` (and ``map50``, ``map``) on ``data.val`` with its bootstrap standard error
    ``score_error`` (:data:`DETECTION_BOOTSTRAP_RESAMPLES` resamples of the images), the
    last epoch's ``loss`` and ``seconds``."""
    from nas_search.progress import progress_bar
    from nas_search.tasks.detect.data import make_detection_loader
    from nas_search.tasks.detect.evaluate import mean_average_precision
    from nas_search.tasks.detect.supernet_training import train_detection_epoch

    loader = make_detection_loader(
        data.train, batch_size=recipe.batch_size, shuffle=True, seed=seed, drop_last=len(data.train) >= recipe.batch_size
    )
    val_loader = make_detection_loader(data.val, batch_size=16, shuffle=False, seed=seed)
    optimizer, scheduler = finalist_optimizer(model, recipe, len(loader), epochs)
    started = time.perf_counter()
    history: list[dict] = []

    def train(epoch: int, bar: Any, tally: EpochTally) -> None:
        record = train_detection_epoch(model, loader, optimizer, scheduler, device, bar, clip_grad_norm=recipe.clip_grad_norm)
        tally.sums["loss"] = record["loss"]

    loop = EpochLoop(loader, seed, epochs, f"{label} epoch", len(loader) * recipe.batch_size, progress_bar, progress)
    run_epochs(loop, 0, epochs, history, train, lambda epoch, tally: {"loss": tally.sums["loss"]})
    loss = history[-1]["loss"] if history else float("nan")
    scores = mean_average_precision(model, val_loader, device, bootstrap=DETECTION_BOOTSTRAP_RESAMPLES)
    return {
        "accuracy": float(scores["map50"]),
        "map50": float(scores["map50"]),
        "map": float(scores["map"]),
        "score_error": float(scores.get("map50_error", 0.0)),
        "loss": loss,
        "seconds": time.perf_counter() - started,
    }

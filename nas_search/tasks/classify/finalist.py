"""Short training of one classifier finalist (see :mod:`nas_search.training.finalist`)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from nas_search.training.finalist import FinalistRecipe, finalist_optimizer, seed_epoch

def train_classifier_finalist(model: nn.Module, data: Any, recipe: FinalistRecipe, epochs: int, seed: int,
                              label: str, device: torch.device | str = "cpu", progress: bool = True) -> dict[str, float]:
    """Train a standalone classifier ``epochs`` epochs on ``data.train``; returns its top-1
    ``accuracy`` on ``data.val`` with its binomial standard error ``score_error``
    (``sqrt(p (1 - p) / n)``), the last epoch's mean ``loss`` and ``seconds``."""
    import torch.nn.functional as F

    from nas_search.tasks.classify.data import make_loader
    from nas_search.tasks.classify.evaluate import top1_accuracy
    from nas_search.progress import progress_bar

    loader = make_loader(data.train, batch_size=recipe.batch_size, shuffle=True, seed=seed, num_workers=0,
                         drop_last=len(data.train) >= recipe.batch_size)
    val_loader = make_loader(data.val, batch_size=128, shuffle=False, seed=seed, num_workers=0)
    optimizer, scheduler = finalist_optimizer(model, recipe, len(loader), epochs)
    started, loss = time.perf_counter(), float("nan")
    for epoch in range(epochs):
        seed_epoch(loader, seed, epoch)
        bar = progress_bar(len(loader.dataset), f"{label} epoch {epoch + 1}/{epochs}", "img", progress)
        total, seen = 0.0, 0
        model.train()
        try:
            for images, labels in loader:
                step_loss = F.cross_entropy(model(images.to(device)), labels.to(device),
                                            label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                step_loss.backward()
                optimizer.step()
                scheduler.step()
                total, seen = total + step_loss.item() * labels.size(0), seen + labels.size(0)
                bar.update(labels.size(0))
        finally:
            bar.close()
        loss = total / max(seen, 1)
    accuracy = top1_accuracy(model, val_loader, device)
    error = math.sqrt(accuracy * (1.0 - accuracy) / max(len(data.val), 1))
    return {"accuracy": accuracy, "score_error": error, "loss": loss, "seconds": time.perf_counter() - started}

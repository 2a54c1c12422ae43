"""The training loop kit shared by every trainer: optimizer and learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from nas_search.errors import UserError


def build_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW, without weight decay on BN parameters and biases.

    ``config`` has ``optimizer`` (``sgd`` or ``adamw``), ``learning_rate``, ``momentum``
    and ``weight_decay``."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
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


__all__ = ["build_optimizer", "warmup_cosine"]

"""Every default of one-shot supernet training, in one dataclass, with the defaults that
depend on another option (the learning rate, by optimizer) resolved in the library, and
the data folder a training yaml names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

#: Learning rate of a classifier supernet's optimizer when none is given: SGD with
#: Nesterov momentum at 0.05, AdamW at 2e-3 (``benchmarks/supernet_quality.py``).
SUPERNET_LEARNING_RATES: dict[str, float] = {"sgd": 0.05, "adamw": 2e-3}

Config = TypeVar("Config")


def default_learning_rate(optimizer: str, defaults: Mapping[str, float]) -> float | None:
    """The learning rate ``defaults`` give ``optimizer``; None for an unknown optimizer
    (refused with its own message when the optimizer is built)."""
    return defaults.get(optimizer)


def with_learning_rate(config: Config, defaults: Mapping[str, float]) -> Config:
    """``config`` with ``learning_rate`` set: as given, else its optimizer's default from
    ``defaults`` (a copy; the caller's config is not changed)."""
    options: Any = config
    if options.learning_rate is not None:
        return config
    return cast(Config, replace(options, learning_rate=default_learning_rate(options.optimizer, defaults)))


@dataclass
class SupernetTrainConfig:
    """Options of ``nas-search supernet train`` (and of the training phase of ``run``).

    Sandwich rule: every step trains the largest subnet, the smallest and
    ``random_subnets`` random ones; the smaller ones learn from the largest by in-place
    distillation (``distill``), as in BigNAS and RAPID.
    """

    space: str = "cifar"
    data: str | None = None  # ImageFolder root; None = built-in demo
    epochs: int = 5
    input_size: int | None = None  # proxy training size; None = the space's default
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adamw
    learning_rate: float | None = None  # None = the optimizer's (SUPERNET_LEARNING_RATES: sgd 0.05, adamw 2e-3)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    random_subnets: int = 4  # = the number of block kinds: with fair_operations each kind of each position trains every step
    fair_operations: bool = True  # random subnets take each block kind of each position in turn (FairNAS)
    budget_teacher: str = "widest"  # largest subnet under max_flops: "widest" or "projected" (see training.sandwich)
    distill: bool = True
    distill_temperature: float = 1.0
    full_width_warmup_epochs: int = 0  # train only the largest subnet first, then sort channels (OFA)
    channel_regeneration_epoch: int | None = None
    regeneration_threshold: float = 0.01
    bridgeout_probability: float = 0.0  # 0 disables Batch Bridgeout
    bridgeout_exponent: float = 1.0
    seed: int = 0
    workers: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CPU too: depthwise backward is much faster in channels_last
    max_flops: int | None = None  # budget-aware supernet: train only subnets within this many FLOPs
    flops_input_size: int | None = None  # size max_flops is counted at; None = the space's deployment size
    max_train: int | None = None
    max_val: int | None = None
    out: str = "runs/supernet.pt"
    resume: bool = False
    progress: bool = True


def resolve_data_folder(data: str | None, base: Path) -> str | None:
    """The data folder a training yaml names: absolute as given, else relative to the yaml's
    folder ``base``, else (when only that exists) relative to the working directory."""
    if data is None or Path(data).is_absolute():
        return data
    beside = (base / data).resolve()
    return data if not beside.exists() and Path(data).exists() else str(beside)

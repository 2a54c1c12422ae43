"""Every default of one-shot supernet training, in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SupernetTrainConfig:
    """Options of ``nas-search supernet train`` (and of the training phase of ``run``).

    Sandwich rule: every step trains the largest subnet, the smallest and
    ``random_subnets`` random ones; the smaller ones learn from the largest by in-place
    distillation (``distill``), as in BigNAS and RAPID.
    """

    space: str = "cifar"
    data: str | None = None            # ImageFolder root; None = built-in demo
    epochs: int = 5
    input_size: int | None = None      # proxy training size; None = the space's default
    batch_size: int = 64
    optimizer: str = "sgd"             # sgd | adamw
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    random_subnets: int = 4            # = the number of block kinds: with fair_operations each kind of each position trains every step
    fair_operations: bool = True       # random subnets take each block kind of each position in turn (FairNAS)
    budget_teacher: str = "widest"     # largest subnet under max_flops: "widest" or "projected" (see training.sandwich)
    distill: bool = True
    distill_temperature: float = 1.0
    full_width_warmup_epochs: int = 0  # train only the largest subnet first, then sort channels (OFA)
    channel_regeneration_epoch: int | None = None
    regeneration_threshold: float = 0.01
    bridgeout_probability: float = 0.0  # 0 disables Batch Bridgeout
    bridgeout_exponent: float = 1.0
    seed: int = 0
    workers: int | None = None
    device: str = "auto"               # auto | cpu | cuda
    amp: bool = True                   # CUDA only
    channels_last: bool = True         # CPU too: depthwise backward is much faster in channels_last
    max_flops: int | None = None       # budget-aware supernet: train only subnets within this many FLOPs
    flops_input_size: int | None = None  # size max_flops is counted at; None = the space's deployment size
    max_train: int | None = None
    max_val: int | None = None
    out: str = "runs/supernet.pt"
    resume: bool = False
    progress: bool = True

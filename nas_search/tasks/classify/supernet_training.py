"""One-shot supernet training with the sandwich rule and in-place distillation.

Each step trains the largest subnet on the labels (with label smoothing), and the smallest
plus ``random_subnets`` random subnets on the largest one's soft predictions (in-place
distillation, BigNAS / RAPID). The losses are summed and one optimizer step is taken.
All subnets of a step run inside one ``forward`` of :class:`SandwichStep`, so the whole
step is one DDP iteration under ``torchrun`` (``find_unused_parameters`` covers the
branches no subnet used).

A checkpoint is written atomically after every epoch; ``resume=True`` continues from it.
Subnet sampling, data order and augmentation are seeded per epoch and step, so on CPU a
resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.config import config_to_dict
from nas_search.errors import UserError
from nas_search.spaces.builtin import BACKBONE_SPACES
from nas_search.spaces.supernet import Supernet
from nas_search.spec import ArchSpec
from nas_search.training.checkpoint import (
    FORMAT_VERSIONS,
    SUPERNET_FORMAT,
    check_steps_per_epoch,
    read_supernet_checkpoint,
    refuse_to_overwrite,
    save_checkpoint,
)
from nas_search.training.config import SUPERNET_LEARNING_RATES, SupernetTrainConfig, with_learning_rate
from nas_search.training.distributed import (
    DistributedContext,
    distributed_step_module,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from nas_search.training.loop import (
    EpochLoop,
    EpochTally,
    TrainingState,
    announce_resume,
    build_optimizer,
    count_steps,
    optimizer_step,
    run_epochs,
    step_schedule,
)
from nas_search.training.sandwich import TEACHER_RULES, budget_extremes, budget_flops_model, sandwich_specs
from nas_search.training.techniques import BatchBridgeout, attach_bridgeout, count_collapsed_channels, regenerate_channels
from nas_search.units import INPUT_SIZE_FORMS, valid_input_size


class SandwichStep(nn.Module):
    """The loss of one sandwich-rule step: ``forward(images, labels, specs)``; the first
    spec is the teacher (largest), the rest learn from it by distillation."""

    def __init__(self, supernet: Supernet, label_smoothing: float, distill: bool, temperature: float) -> None:
        super().__init__()
        self.supernet = supernet
        self.label_smoothing, self.distill, self.temperature = label_smoothing, distill, temperature

    def forward(self, images: torch.Tensor, labels: torch.Tensor, specs: list[ArchSpec]) -> tuple[torch.Tensor, torch.Tensor]:
        self.supernet.activate(specs[0])
        teacher = self.supernet(images)
        loss = F.cross_entropy(teacher, labels, label_smoothing=self.label_smoothing)
        soft_targets = F.softmax(teacher.detach().float() / self.temperature, dim=1)
        for spec in specs[1:]:
            self.supernet.activate(spec)
            logits = self.supernet(images)
            if self.distill:
                log_probabilities = F.log_softmax(logits.float() / self.temperature, dim=1)
                loss = loss + F.kl_div(log_probabilities, soft_targets, reduction="batchmean") * self.temperature**2
            else:
                loss = loss + F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, teacher.detach()


@dataclass
class SupernetTrainResult:
    """What a training run produced."""

    checkpoint: Path
    epochs: int
    history: list[dict] = field(default_factory=list)
    images_per_second: float = 0.0
    resumed_from_epoch: int = 0
    collapsed_channels: int = 0


def _validate_config(config: SupernetTrainConfig) -> None:
    checks = [
        (config.epochs >= 1, f"epochs={config.epochs}; accepted: 1 or more"),
        (config.batch_size >= 1, f"batch_size={config.batch_size}; accepted: 1 or more"),
        # None only for an unknown optimizer, which build_optimizer refuses by name
        (config.learning_rate is None or config.learning_rate > 0, f"learning_rate={config.learning_rate}; accepted: > 0"),
        (config.random_subnets >= 0, f"random_subnets={config.random_subnets}; accepted: 0 or more"),
        (
            config.budget_teacher in TEACHER_RULES,
            f"budget_teacher={config.budget_teacher!r}; accepted: {', '.join(TEACHER_RULES)}",
        ),
        (0 <= config.bridgeout_probability < 1, f"bridgeout_probability={config.bridgeout_probability}; accepted: [0, 1)"),
        (
            config.input_size is None or valid_input_size(config.input_size),
            f"input_size={config.input_size}; accepted: {INPUT_SIZE_FORMS}, or None (the space's)",
        ),
        (config.weight_decay >= 0, f"weight_decay={config.weight_decay}; accepted: 0 or more"),
        (config.warmup_epochs >= 0, f"warmup_epochs={config.warmup_epochs}; accepted: 0 or more"),
        (0 <= config.label_smoothing < 1, f"label_smoothing={config.label_smoothing}; accepted: 0 to below 1"),
        (
            0 <= config.full_width_warmup_epochs < config.epochs,
            f"full_width_warmup_epochs={config.full_width_warmup_epochs}; accepted: 0 to {config.epochs - 1} (below epochs)",
        ),
        (
            config.channel_regeneration_epoch is None or 1 <= config.channel_regeneration_epoch < config.epochs,
            f"channel_regeneration_epoch={config.channel_regeneration_epoch}; accepted: 1 to {config.epochs - 1} (an epoch "
            "after the first, before the last), or None",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"bad training option {message}")


def train_supernet(config: SupernetTrainConfig) -> SupernetTrainResult:
    """Train (or resume training) a supernet and write its checkpoint to ``config.out``.

    ``learning_rate=None`` takes the optimizer's default (:data:`SUPERNET_LEARNING_RATES`)."""
    from nas_search.progress import progress_bar
    from nas_search.tasks.classify.data import load_classification_data, make_loader

    config = with_learning_rate(config, SUPERNET_LEARNING_RATES)
    _validate_config(config)
    refuse_to_overwrite(config.out, config.resume, "another --out")
    space = BACKBONE_SPACES.get(config.space)
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    context = init_distributed(device)
    try:
        return _train(config, space, device, context, load_classification_data, make_loader, progress_bar)
    finally:
        shutdown_distributed(context)


@dataclass
class _SupernetRun:
    """One classifier supernet training run: its set-up, and what each epoch does."""

    config: SupernetTrainConfig
    space: Any
    data: Any
    supernet: Supernet
    device: torch.device
    context: DistributedContext
    state: TrainingState
    scaler: torch.amp.GradScaler
    loader: Any
    steps_per_epoch: int
    input_size: int
    step_module: nn.Module
    extremes: Any
    flops_model: Any
    bridgeout: BatchBridgeout | None

    def before_epoch(self, epoch: int) -> None:
        """Seed Batch Bridgeout; at their epochs, sort channels (OFA) or regenerate them."""
        config, supernet = self.config, self.supernet
        if self.bridgeout is not None:
            # the run's Bridgeout is always built with a generator (see _SupernetRun's set-up)
            cast(torch.Generator, self.bridgeout.generator).manual_seed(config.seed + 17 * epoch)
        if config.full_width_warmup_epochs and epoch == config.full_width_warmup_epochs:
            supernet.sort_channels()
            self.state.optimizer.state.clear()  # momentum buffers refer to the old channel order
        if config.channel_regeneration_epoch is not None and epoch == config.channel_regeneration_epoch:
            report = regenerate_channels(supernet, config.regeneration_threshold)
            if self.context.is_main:
                print(f"channel regeneration: {report.regenerated} of {report.channels} BN channels re-initialised")

    def train_epoch(self, epoch: int, bar: Any, tally: EpochTally) -> None:
        """One epoch of sandwich-rule steps (only the largest subnet during full-width warm-up)."""
        config, state, use_cuda = self.config, self.state, self.device.type == "cuda"
        self.supernet.train()
        full_width_only = epoch < config.full_width_warmup_epochs
        for step_in_epoch, (images, labels) in enumerate(self.loader):
            global_step = epoch * self.steps_per_epoch + step_in_epoch
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            specs = (
                [self.extremes[0]]
                if full_width_only
                else sandwich_specs(
                    self.space,
                    config.random_subnets,
                    config.seed,
                    global_step,
                    self.extremes,
                    config.max_flops,
                    self.flops_model,
                    config.fair_operations,
                )
            )
            with torch.autocast(device_type=self.device.type, enabled=use_cuda and config.amp):
                loss, teacher_logits = self.step_module(images, labels, specs)
            optimizer_step(
                loss,
                state.optimizer,
                state.scheduler,
                scaler=self.scaler,
                parameters=self.supernet.parameters(),
                clip_grad_norm=5.0,
            )
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at epoch {epoch + 1} step {step_in_epoch} (loss {loss.item()})")
            largest_loss = F.cross_entropy(teacher_logits.float(), labels).item()
            tally.add(labels.size(0), loss=loss.item(), largest_cross_entropy=largest_loss)
            tally.count("correct", int((teacher_logits.argmax(1) == labels).sum()))
            bar.update(labels.size(0) * self.context.world_size)
            bar.set_postfix(
                loss=f"{tally.mean('loss'):.3f}",
                largest_ce=f"{tally.mean('largest_cross_entropy'):.3f}",
                lr=f"{state.scheduler.get_last_lr()[0]:.4f}",
            )

    def record(self, epoch: int, tally: EpochTally) -> dict:
        """The epoch's history record."""
        return {
            "epoch": epoch + 1,
            "loss": tally.mean("loss"),
            # the largest subnet's own cross-entropy on the labels (no smoothing, no
            # distillation terms): ln(classes) is a uniform guess
            "largest_cross_entropy": tally.mean("largest_cross_entropy"),
            "largest_train_accuracy": tally.mean("correct"),
            "images_per_second": tally.images * self.context.world_size / max(tally.seconds, 1e-9),
            "collapsed_channels": count_collapsed_channels(self.supernet, self.config.regeneration_threshold),
        }

    def save(self, epoch: int, history: list[dict]) -> None:
        """Write the checkpoint after ``epoch`` (atomically)."""
        config, data = self.config, self.data
        save_checkpoint(
            {
                "format": SUPERNET_FORMAT,
                "format_version": FORMAT_VERSIONS[SUPERNET_FORMAT],
                "space": self.space.name,
                "num_classes": data.num_classes,
                "class_names": list(data.class_names),
                "input_size": self.input_size,
                "dataset": data.description,
                "data": config.data,
                "epoch": epoch + 1,
                "epochs": config.epochs,
                "steps_per_epoch": self.steps_per_epoch,
                "config": config_to_dict(config),
                "history": history,
                **self.state.state_dicts(),
            },
            config.out,
        )


def _resume(
    config: SupernetTrainConfig, space: Any, data: Any, state: TrainingState, steps_per_epoch: int, context: DistributedContext
) -> tuple[int, list[dict]]:
    """The epochs done and history of the checkpoint to continue (none: 0 and [])."""
    out = Path(config.out)
    if not (config.resume and out.exists()):
        return 0, []
    checkpoint = read_supernet_checkpoint(out, SUPERNET_FORMAT, space=space.name)
    if checkpoint.num_classes != data.num_classes:
        raise UserError(f"checkpoint {out} has {checkpoint.num_classes} classes, the data has {data.num_classes}")
    check_steps_per_epoch(checkpoint.payload, steps_per_epoch, out)
    start_epoch, history = state.restore(checkpoint.payload)
    announce_resume(out, start_epoch, config.epochs, context.is_main)
    return start_epoch, history


def _attach_bridgeout(config: Any, supernet: Supernet, start_epoch: int) -> BatchBridgeout | None:
    """Batch Bridgeout on the supernet's BNs when asked for (seeded per resumed epoch)."""
    if config.bridgeout_probability <= 0:
        return None
    generator = torch.Generator().manual_seed(config.seed + 17 * start_epoch)
    bridgeout = BatchBridgeout(1 - config.bridgeout_probability, config.bridgeout_exponent, generator)
    attach_bridgeout(supernet, bridgeout)
    return bridgeout


def _epoch_loop(config: Any, loader: Any, steps_per_epoch: int, context: DistributedContext, progress_bar: Any) -> EpochLoop:
    """The epoch driver of a supernet training (progress on the main process only)."""
    images_per_epoch = steps_per_epoch * config.batch_size * context.world_size
    show = context.is_main and config.progress
    return EpochLoop(
        loader,
        config.seed,
        config.epochs,
        "supernet epoch",
        images_per_epoch,
        progress_bar,
        show,
        world_size=context.world_size,
        is_main=context.is_main,
        barrier=context.barrier,
    )


def _train(config, space, device, context: DistributedContext, load_data, make_loader, progress_bar) -> SupernetTrainResult:
    input_size = config.input_size or space.train_input_size
    data = load_data(config.data, input_size=input_size, seed=config.seed, max_train=config.max_train, max_val=config.max_val)
    torch.manual_seed(config.seed)
    supernet = Supernet(space, num_classes=data.num_classes).to(device)
    if config.channels_last:  # also on CPU: depthwise backward is several times faster
        supernet = supernet.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(supernet, config)
    loader = make_loader(
        data.train,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        num_workers=config.workers,
        drop_last=True,
        distributed=context.enabled,
    )
    steps_per_epoch = count_steps(
        loader, f"batch size {config.batch_size} is larger than the {len(data.train)} training images"
    )
    scheduler = step_schedule(optimizer, steps_per_epoch, config.epochs, config.warmup_epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp)
    state = TrainingState(supernet, optimizer, scheduler)  # a classifier checkpoint keeps no scaler state
    start_epoch, history = _resume(config, space, data, state, steps_per_epoch, context)
    bridgeout = _attach_bridgeout(config, supernet, start_epoch)
    flops_model = budget_flops_model(space, config.max_flops, config.flops_input_size, data.num_classes)
    extremes = budget_extremes(space, config.max_flops, flops_model, config.budget_teacher)
    step_module = distributed_step_module(
        SandwichStep(supernet, config.label_smoothing, config.distill, config.distill_temperature), context, device
    )
    run = _SupernetRun(
        config,
        space,
        data,
        supernet,
        device,
        context,
        state,
        scaler,
        loader,
        steps_per_epoch,
        input_size,
        step_module,
        extremes,
        flops_model,
        bridgeout,
    )
    loop = _epoch_loop(config, loader, steps_per_epoch, context, progress_bar)
    throughput = run_epochs(
        loop,
        start_epoch,
        config.epochs,
        history,
        run.train_epoch,
        run.record,
        lambda epoch: run.save(epoch, history),
        run.before_epoch,
    )
    if bridgeout is not None:
        attach_bridgeout(supernet, None)
    return SupernetTrainResult(
        checkpoint=Path(config.out),
        epochs=config.epochs,
        history=history,
        images_per_second=throughput.images_per_second,
        resumed_from_epoch=start_epoch,
        collapsed_channels=history[-1]["collapsed_channels"] if history else 0,
    )


def load_supernet(path: str | Path, space: str | None = None, device: str | torch.device = "cpu") -> tuple[Supernet, dict]:
    """A supernet with weights from a checkpoint, plus the checkpoint's metadata (see
    :meth:`SupernetCheckpoint.metadata`)."""
    checkpoint = read_supernet_checkpoint(path, SUPERNET_FORMAT, space=space)
    supernet = Supernet(BACKBONE_SPACES.get(checkpoint.space), num_classes=checkpoint.num_classes)
    try:
        supernet.load_state_dict(checkpoint.payload["model"])
    except RuntimeError as error:
        raise UserError(f"checkpoint {path} does not match space {checkpoint.space!r}: {str(error).splitlines()[0]}") from None
    return supernet.to(device).eval(), checkpoint.metadata()

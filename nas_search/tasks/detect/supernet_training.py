"""Training of detectors: one standalone epoch, and one-shot training of the detection
supernet with the sandwich rule and in-place distillation of the head outputs.

Sandwich rule (as for classification, :mod:`nas_search.tasks.classify.supernet_training`): each
step trains the largest subnet, the smallest and ``random_subnets`` random ones, all on the
same batch, and takes one optimizer step on the summed losses. Every subnet gets its own
FCOS detection losses (focal classification, GIoU box regression, centerness BCE). With
``distill`` the smaller subnets also learn from the largest one's head outputs (detached),
see :func:`head_distillation_loss` for what is distilled and why.

A checkpoint (format ``nas-search-detection-supernet``, loaded with ``weights_only=True``)
is written atomically after every epoch. It holds ``space``, ``num_classes`` (C, background
excluded), ``classes``, ``image_size`` (the proxy training size), ``resize`` (how images were
fitted to it; older checkpoints without it were trained ``longer-side``), ``dataset``, ``data``,
``epoch``, ``epochs``, ``config``, ``history`` and the ``model``, ``optimizer``,
``scheduler`` (and CUDA ``scaler``) states plus ``random_states`` (torch and Python
generators after the epoch). ``resume=True`` continues from it. Subnet sampling (per
global step), data order and flips (per epoch) are seeded, and every epoch reseeds the
global generators, so on CPU a resumed run reproduces an uninterrupted one bit for bit;
``stop_after_epochs`` ends a run early (a time-limited job) for a later ``resume``. Under ``torchrun`` (gloo on CPU, nccl on CUDA) the step runs
in DistributedDataParallel with a sharded sampler.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.config import config_to_dict
from nas_search.errors import UserError
from nas_search.training.checkpoint import (
    DETECTION_SUPERNET_FORMAT,
    FORMAT_VERSIONS,
    SupernetCheckpoint,
    check_steps_per_epoch,
    read_supernet_checkpoint,
    refuse_to_overwrite,
    save_checkpoint,
)
from nas_search.training.config import with_learning_rate
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

if TYPE_CHECKING:
    from nas_search.tasks.detect.supernet import DetectionSupernet

DETECTION_SUPERNET_FORMAT_VERSION = FORMAT_VERSIONS[DETECTION_SUPERNET_FORMAT]
OPTIMIZERS = ("sgd", "adamw")  # as in training.loop.build_optimizer

#: Learning rate of a detection supernet's optimizer when none is given: SGD at 0.01;
#: AdamW at 5e-4, which trains FCOS from scratch on small data (``benchmarks/RESULTS.md``).
DETECTION_SUPERNET_LEARNING_RATES: dict[str, float] = {"sgd": 0.01, "adamw": 5e-4}


# ----------------------------------------------------------------------------- standalone


def _to_device(
    images: list[torch.Tensor], targets: list[dict[str, Any]], device
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {
            key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in target.items()
        }
        for target in targets
    ]
    return images, targets


def train_detection_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device | str = "cpu",
    progress: Any = None,
    *,
    clip_grad_norm: float | None = None,
) -> dict[str, float]:
    """One epoch of supervised training of a torchvision-style detector (train mode:
    ``model(images, targets) -> dict of losses``; the losses are summed).

    ``loader`` yields ``(images, targets)`` lists; ``scheduler`` (or None) steps after every
    optimizer step; ``progress`` is a bar from :func:`nas_search.progress.progress_bar` (or
    None), advanced by the number of images; ``clip_grad_norm`` clips the gradient norm when
    set. Every batch is used; a non-finite loss raises ``RuntimeError``.

    Returns the image-weighted mean of the total ``loss`` and of each loss term, plus
    ``images``, ``steps``, ``seconds`` and ``images_per_second``.
    """
    model.train()
    tally = EpochTally()
    steps = 0
    for images, targets in loader:
        images, targets = _to_device(images, targets, device)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            terms = ", ".join(f"{name}={value.item():.4g}" for name, value in losses.items())
            raise RuntimeError(f"detection training diverged at step {steps} (loss {loss.item()}: {terms})")
        optimizer_step(loss, optimizer, scheduler, parameters=model.parameters(), clip_grad_norm=clip_grad_norm)
        tally.add(len(images), **{name: value.item() for name, value in [("loss", loss), *losses.items()]})
        steps += 1
        if progress is not None:
            progress.update(len(images))
            progress.set_postfix(loss=f"{tally.mean('loss'):.3f}")
    seconds = time.perf_counter() - tally.started
    record = {name: tally.mean(name) for name in tally.sums}
    record.update(images=tally.images, steps=steps, seconds=seconds, images_per_second=tally.images / max(seconds, 1e-9))
    return record


# ----------------------------------------------------------------------------- distillation


def _binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(student))), >= 0 and
    0 where they agree; its gradient in the student logit is sigmoid(s) - sigmoid(t), the
    same as soft-target BCE, but without BCE's entropy offset."""
    target = teacher_logits.sigmoid()
    kl = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none") - F.binary_cross_entropy_with_logits(
        teacher_logits, target, reduction="none"
    )
    return kl.clamp_min(0.0)


def head_distillation_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """In-place distillation of FCOS head outputs from the largest subnet (``teacher``,
    detached) to a smaller one (``student``); both dicts hold ``cls_logits`` [B, A, K] and
    ``bbox_ctrness`` [B, A, 1] over the same anchors.

    What is distilled, and where:

    * **classification, on every anchor and class**: binary KL between the teacher's and
      the student's sigmoid scores. FCOS's hard assignment labels every anchor outside an
      object's centre region as background; the teacher's soft scores also rank the
      near-positive anchors and similar classes (its "dark knowledge"), and they suppress
      the false positives a small subnet makes. Anchors where both agree cost nothing.
    * **centerness, weighted by the teacher's foreground score** (its highest class
      probability at that anchor): centerness is trained only on positive anchors and only
      matters where an object is scored (it multiplies the class score), so it is distilled
      where the teacher sees an object and nowhere else.
    * **box regression is not distilled**: the student's own GIoU loss already gives exact
      targets on every positive anchor, and the teacher's boxes elsewhere are unsupervised.

    Both terms are summed and divided by the teacher's soft count of foreground anchors
    (at least 1), mirroring FCOS's normalisation by the number of positive anchors.
    """
    student_classes, teacher_classes = student["cls_logits"].float(), teacher["cls_logits"].detach().float()
    if student_classes.shape != teacher_classes.shape:
        raise ValueError(
            f"student and teacher head outputs differ in shape: {tuple(student_classes.shape)} "
            f"vs {tuple(teacher_classes.shape)} (subnets must share image size and strides)"
        )
    foreground = teacher_classes.sigmoid().amax(dim=-1)
    normaliser = foreground.sum().clamp_min(1.0)
    classification = _binary_kl(student_classes, teacher_classes).sum()
    centerness = (
        _binary_kl(student["bbox_ctrness"].float().squeeze(-1), teacher["bbox_ctrness"].detach().float().squeeze(-1))
        * foreground
    ).sum()
    return (classification + centerness) / normaliser


class DetectionSandwichStep(nn.Module):
    """The loss of one sandwich-rule step: ``forward(images, targets, specs)``. The first
    spec is the teacher (largest, trained on the detection losses); the others get their
    detection losses plus ``distill_weight`` times :func:`head_distillation_loss` from it.

    Returns the total loss and a dict of detached parts: ``largest`` (the largest subnet's
    detection loss), ``subnets`` (summed detection losses of the others) and ``distill``
    (summed unweighted distillation terms).
    """

    def __init__(self, supernet: DetectionSupernet, distill: bool, distill_weight: float) -> None:
        super().__init__()
        self.supernet, self.distill, self.distill_weight = supernet, distill, distill_weight

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, Any]], specs: list
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.supernet.activate(specs[0])
        losses, teacher_outputs = self.supernet.forward_with_head_outputs(images, targets)
        total = sum(losses.values())
        teacher_outputs = {name: value.detach() for name, value in teacher_outputs.items()}
        zero = torch.zeros_like(total.detach())
        parts = {"largest": total.detach(), "subnets": zero, "distill": zero}
        for spec in specs[1:]:
            self.supernet.activate(spec)
            losses, student_outputs = self.supernet.forward_with_head_outputs(images, targets)
            detection = sum(losses.values())
            total = total + detection
            parts["subnets"] = parts["subnets"] + detection.detach()
            if self.distill:
                distillation = head_distillation_loss(student_outputs, teacher_outputs)
                total = total + self.distill_weight * distillation
                parts["distill"] = parts["distill"] + distillation.detach()
        return total, parts


# ----------------------------------------------------------------------------- supernet


@dataclass
class DetectionSupernetTrainConfig:
    """Every default of one-shot detection supernet training, in one place.

    ``image_size`` is the proxy training size (images are fitted to it as ``resize`` says:
    stretched to a square by default); deployment FLOPs are counted at 416 elsewhere. A
    resumed run keeps the resize mode its checkpoint was trained with. ``learning_rate``, ``momentum``,
    ``weight_decay`` and ``optimizer`` mean what they mean in ``SupernetTrainConfig``.
    """

    space: str = "detect"
    data: str | None = None  # detection dataset root; None = built-in demo
    epochs: int = 5
    image_size: int | None = None  # proxy training size, a multiple of 32; None = the space's (160 for detect)
    resize: str = "square"  # square | longer-side (detection.static.RESIZE_MODES)
    batch_size: int = 16
    optimizer: str = "sgd"  # sgd | adamw
    learning_rate: float | None = None  # None = the optimizer's (DETECTION_SUPERNET_LEARNING_RATES: sgd 0.01, adamw 5e-4)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 0.5
    clip_grad_norm: float = 10.0
    random_subnets: int = 1
    # Teacher rule and FairNAS op sampling (see training.sandwich): the classification
    # defaults ("widest", fair) are not yet measured on detectors, which keep the old ones.
    fair_operations: bool = False
    budget_teacher: str = "projected"
    distill: bool = True
    distill_weight: float = 1.0
    seed: int = 0
    max_train: int | None = None
    max_val: int | None = None
    workers: int | None = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # CUDA only
    out: str = "runs/detection-supernet.pt"
    resume: bool = False
    max_flops: float | None = None  # budget-aware supernet: train only subnets within this many FLOPs
    flops_input_size: int | None = None  # ... counted at this (deployment) size; None = the space's
    stop_after_epochs: int | None = None  # train at most this many epochs in this run (the schedule
    # still spans ``epochs``); continue later with ``resume``
    progress: bool = True


@dataclass
class DetectionSupernetTrainResult:
    """What a detection supernet training run produced."""

    checkpoint: Path
    epochs: int
    history: list[dict] = field(default_factory=list)
    images_per_second: float = 0.0
    resumed_from_epoch: int = 0
    completed_epochs: int = 0  # epochs in the checkpoint (less than ``epochs`` after stop_after_epochs)


def _validate_config(config: DetectionSupernetTrainConfig) -> None:
    checks = [
        (config.epochs >= 1, f"epochs={config.epochs}; accepted: 1 or more"),
        (config.batch_size >= 1, f"batch_size={config.batch_size}; accepted: 1 or more"),
        (
            config.image_size is None or (config.image_size >= 32 and config.image_size % 32 == 0),
            f"image_size={config.image_size}; accepted: a multiple of 32 (e.g. 160, 320, 416), or None",
        ),
        # None only for an unknown optimizer, refused below by name
        (config.learning_rate is None or config.learning_rate > 0, f"learning_rate={config.learning_rate}; accepted: > 0"),
        (config.random_subnets >= 0, f"random_subnets={config.random_subnets}; accepted: 0 or more"),
        (
            config.budget_teacher in TEACHER_RULES,
            f"budget_teacher={config.budget_teacher!r}; accepted: {', '.join(TEACHER_RULES)}",
        ),
        (config.distill_weight >= 0, f"distill_weight={config.distill_weight}; accepted: 0 or more"),
        (config.clip_grad_norm > 0, f"clip_grad_norm={config.clip_grad_norm}; accepted: > 0"),
        (config.warmup_epochs >= 0, f"warmup_epochs={config.warmup_epochs}; accepted: 0 or more"),
        (config.optimizer in OPTIMIZERS, f"optimizer={config.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}"),
        (
            config.stop_after_epochs is None or config.stop_after_epochs >= 1,
            f"stop_after_epochs={config.stop_after_epochs}; accepted: 1 or more, or None",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"bad detection training option {message}")


def train_detection_supernet(config: DetectionSupernetTrainConfig) -> DetectionSupernetTrainResult:
    """Train (or resume training) a detection supernet and write its checkpoint to
    ``config.out`` after every epoch (see the module docstring). ``learning_rate=None``
    takes the optimizer's default (:data:`DETECTION_SUPERNET_LEARNING_RATES`)."""
    config = with_learning_rate(config, DETECTION_SUPERNET_LEARNING_RATES)
    _validate_config(config)
    refuse_to_overwrite(config.out, config.resume, "another --out")
    from nas_search.progress import progress_bar
    from nas_search.tasks.detect.data import load_detection_data, make_detection_loader

    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    context = init_distributed(device)
    try:
        return _train(config, device, context, load_detection_data, make_detection_loader, progress_bar)
    finally:
        shutdown_distributed(context)


def _random_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(_as_tuple(states["python"]))


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(item) for item in value) if isinstance(value, (list, tuple)) else value


@dataclass
class _DetectionSupernetRun:
    """One detection supernet training run: its set-up, and what each epoch does."""

    config: DetectionSupernetTrainConfig
    space: Any
    data: Any
    supernet: nn.Module
    device: torch.device
    context: DistributedContext
    state: TrainingState
    loader: Any
    steps_per_epoch: int
    image_size: int
    extremes: Any
    flops_model: Any
    step_module: nn.Module

    def train_epoch(self, epoch: int, bar: Any, tally: EpochTally) -> None:
        """One epoch of sandwich-rule steps."""
        config, state, use_cuda = self.config, self.state, self.device.type == "cuda"
        self.supernet.train()
        for name in ("loss", "largest", "subnets", "distill"):
            tally.sums[name] = 0.0
        for step_in_epoch, (images, targets) in enumerate(self.loader):
            global_step = epoch * self.steps_per_epoch + step_in_epoch
            images, targets = _to_device(images, targets, self.device)
            specs = sandwich_specs(
                self.space,
                config.random_subnets,
                config.seed,
                global_step,
                self.extremes,
                config.max_flops,
                self.flops_model,
                config.fair_operations,
            )
            with torch.autocast(device_type=self.device.type, enabled=use_cuda and config.amp):
                loss, parts = self.step_module(images, targets, specs)
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"detection supernet training diverged at epoch {epoch + 1} step {step_in_epoch} (loss {loss.item()})"
                )
            optimizer_step(
                loss,
                state.optimizer,
                state.scheduler,
                scaler=state.scaler,
                parameters=self.supernet.parameters(),
                clip_grad_norm=config.clip_grad_norm,
            )
            tally.add(len(images), loss=loss.item(), **{name: value.item() for name, value in parts.items()})
            bar.update(len(images) * self.context.world_size)
            bar.set_postfix(
                loss=f"{tally.mean('loss'):.3f}",
                largest=f"{tally.mean('largest'):.3f}",
                lr=f"{state.scheduler.get_last_lr()[0]:.4f}",
            )

    def record(self, epoch: int, tally: EpochTally) -> dict:
        """The epoch's history record."""
        return {
            "epoch": epoch + 1,
            **{name: tally.mean(name) for name in tally.sums},
            "images_per_second": tally.images * self.context.world_size / max(tally.seconds, 1e-9),
        }

    def save(self, epoch: int, history: list[dict]) -> None:
        """Write the checkpoint after ``epoch`` (atomically), with the random states."""
        config, data = self.config, self.data
        save_checkpoint(
            {
                "format": DETECTION_SUPERNET_FORMAT,
                "format_version": DETECTION_SUPERNET_FORMAT_VERSION,
                "space": self.space.name,
                "num_classes": len(data.classes),
                "classes": list(data.classes),
                "image_size": self.image_size,
                "resize": self.supernet.resize,
                "dataset": data.description,
                "data": config.data,
                "epoch": epoch + 1,
                "epochs": config.epochs,
                "steps_per_epoch": self.steps_per_epoch,
                "config": config_to_dict(config),
                "history": history,
                **self.state.state_dicts(),
                "random_states": _random_states(),
            },
            config.out,
        )


def _resume(
    checkpoint: SupernetCheckpoint | None,
    out: Path,
    state: TrainingState,
    num_classes: int,
    image_size: int,
    steps_per_epoch: int,
    epochs: int,
    is_main: bool,
) -> tuple[int, list[dict]]:
    """The epochs done and history of the checkpoint to continue (none: 0 and [])."""
    if checkpoint is None:
        return 0, []
    if checkpoint.num_classes != num_classes:
        raise UserError(f"checkpoint {out} has {checkpoint.num_classes} classes, the data has {num_classes}")
    if checkpoint.input_size != image_size:
        raise UserError(f"checkpoint {out} was trained at image_size {checkpoint.input_size}, not {image_size}")
    check_steps_per_epoch(checkpoint.payload, steps_per_epoch, out)
    start_epoch, history = state.restore(checkpoint.payload)
    _set_random_states(checkpoint.payload["random_states"])
    announce_resume(out, start_epoch, epochs, is_main)
    return start_epoch, history


def _training_loader(config: DetectionSupernetTrainConfig, data: Any, context: DistributedContext, make_loader: Any) -> Any:
    """The shuffled training loader (sharded under DDP; the last partial batch dropped)."""
    workers = config.workers or 0
    return make_loader(
        data.train,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        num_workers=workers,
        drop_last=True,
        distributed=context.enabled,
    )


def _detection_epoch_loop(
    config: DetectionSupernetTrainConfig, loader: Any, steps_per_epoch: int, context: DistributedContext, progress_bar: Any
) -> EpochLoop:
    """The epoch driver. Reseeded per epoch, Python's generator too (not carried over), so a
    resumed run repeats an uninterrupted one."""
    images_per_epoch = steps_per_epoch * config.batch_size * context.world_size
    show = context.is_main and config.progress
    return EpochLoop(
        loader,
        config.seed,
        config.epochs,
        "detection supernet epoch",
        images_per_epoch,
        progress_bar,
        show,
        python_random=True,
        world_size=context.world_size,
        is_main=context.is_main,
        barrier=context.barrier,
    )


def _train(
    config: DetectionSupernetTrainConfig,
    device: torch.device,
    context: DistributedContext,
    load_data,
    make_detection_loader,
    progress_bar,
) -> DetectionSupernetTrainResult:
    from nas_search.tasks.detect.space import detection_space
    from nas_search.tasks.detect.static import check_resize
    from nas_search.tasks.detect.supernet import DetectionSupernet

    space = detection_space(config.space)
    if getattr(space, "task", None) != "detect":
        raise UserError(f"space {config.space!r} is not a detection space; use 'detect'")
    image_size = config.image_size or space.train_input_size
    out = Path(config.out)
    checkpoint = (
        read_supernet_checkpoint(out, DETECTION_SUPERNET_FORMAT, space=space.name) if config.resume and out.exists() else None
    )
    # a resumed supernet keeps the resize mode it was trained with
    resize = check_resize(config.resize) if checkpoint is None else checkpoint_resize(checkpoint.payload, out)
    data = load_data(
        config.data, input_size=image_size, seed=config.seed, max_train=config.max_train, max_val=config.max_val, resize=resize
    )
    num_classes = len(data.classes)
    torch.manual_seed(config.seed)
    supernet = DetectionSupernet(space, num_classes, image_size=image_size, resize=resize).to(device)
    flops_model = budget_flops_model(space, config.max_flops, config.flops_input_size, num_classes)
    extremes = budget_extremes(space, config.max_flops, flops_model, config.budget_teacher)
    optimizer = build_optimizer(supernet, config)
    loader = _training_loader(config, data, context, make_detection_loader)
    steps_per_epoch = count_steps(
        loader, f"batch size {config.batch_size} is larger than the {len(data.train)} training images"
    )
    state = TrainingState(
        supernet,
        optimizer,
        step_schedule(optimizer, steps_per_epoch, config.epochs, config.warmup_epochs),
        torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp),
    )
    start_epoch, history = _resume(
        checkpoint, out, state, num_classes, image_size, steps_per_epoch, config.epochs, context.is_main
    )
    step_module = distributed_step_module(
        DetectionSandwichStep(supernet, config.distill, config.distill_weight), context, device
    )
    run = _DetectionSupernetRun(
        config,
        space,
        data,
        supernet,
        device,
        context,
        state,
        loader,
        steps_per_epoch,
        image_size,
        extremes,
        flops_model,
        step_module,
    )
    end_epoch = (
        config.epochs if config.stop_after_epochs is None else min(config.epochs, start_epoch + config.stop_after_epochs)
    )
    loop = _detection_epoch_loop(config, loader, steps_per_epoch, context, progress_bar)
    throughput = run_epochs(
        loop, start_epoch, end_epoch, history, run.train_epoch, run.record, lambda epoch: run.save(epoch, history)
    )
    return DetectionSupernetTrainResult(
        checkpoint=out,
        epochs=config.epochs,
        history=history,
        images_per_second=throughput.images_per_second,
        resumed_from_epoch=start_epoch,
        completed_epochs=history[-1]["epoch"] if history else start_epoch,
    )


def checkpoint_resize(payload: dict, path: str | Path) -> str:
    """The resize mode a detection supernet checkpoint was trained with (checkpoints from
    before resize modes existed were trained ``longer-side``); a damaged value is a
    one-line error naming the checkpoint."""
    from nas_search.tasks.detect.static import LEGACY_RESIZE, RESIZE_MODES

    resize = payload.get("resize", LEGACY_RESIZE)
    if not isinstance(resize, str) or resize not in RESIZE_MODES:
        raise UserError(f"checkpoint {path} holds resize={resize!r}; accepted: {', '.join(RESIZE_MODES)} (a damaged file?)")
    return resize


def load_detection_supernet(path: str | Path, device: str | torch.device = "cpu") -> tuple[DetectionSupernet, dict]:
    """A ``DetectionSupernet`` with weights from a checkpoint (loaded with
    ``weights_only=True``), set to its training image size and in eval mode, plus the
    checkpoint's metadata (everything but the model, optimizer and scheduler states; the
    training size under both ``image_size`` and ``input_size``)."""
    checkpoint = read_supernet_checkpoint(path, DETECTION_SUPERNET_FORMAT)
    from nas_search.tasks.detect.space import detection_space
    from nas_search.tasks.detect.supernet import DetectionSupernet

    supernet = DetectionSupernet(
        detection_space(checkpoint.space),
        checkpoint.num_classes,
        image_size=checkpoint.input_size,
        resize=checkpoint_resize(checkpoint.payload, path),
    )
    try:
        supernet.load_state_dict(checkpoint.payload["model"])
    except RuntimeError as error:
        raise UserError(f"checkpoint {path} does not match space {checkpoint.space!r}: {str(error).splitlines()[0]}") from None
    return supernet.to(device).eval(), checkpoint.metadata()

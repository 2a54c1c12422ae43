"""``nas-search train train.yaml`` for a detector (``task: detect``): train an exported
detection architecture on its own.

The detection counterpart of :mod:`nas_search.tasks.classify.standalone`. It fine-tunes from the
inherited supernet weights (``init: inherited``, the exported ``model.pt``) or trains from
scratch (``init: scratch``), with a progress bar (images per second, ETA), an atomic
checkpoint after every epoch, ``--resume``, and mAP@0.5 and mAP@[.5:.95] on the val split
after every epoch.

The detector is the torchvision FCOS of :func:`nas_search.tasks.detect.static.build_detector`, built
at the training size ``input_size``, fitted as ``resize`` says (``square``: stretched to
``input_size x input_size``, as exports of current supernets write; ``longer-side``: the
longer image side resized to it, the mode of a ``train.yaml`` without ``resize``, as every
one written before resize modes existed), with the data loaded the same way, and with
the post-processing settings of ``postprocess``. ``--resume`` refuses a checkpoint trained
in the other mode. The recipe defaults are those that work for FCOS from scratch on
small data (``benchmarks/RESULTS.md``): AdamW at learning rate 2e-3, one epoch of
linear warm-up, then cosine decay to zero, gradient norm clipped at 10.

Checkpoints (format ``nas-search-detection-model``, ``out/checkpoint.pt``) hold the model,
optimizer and scheduler states and the history. Every epoch reseeds torch's generator and
the loader's shuffle and flip draws from ``seed`` and the epoch number, so on CPU a run
resumed after any epoch ends with the same weights, bit for bit, as an uninterrupted one.
The final weights (a plain ``state_dict``, CPU tensors) are written atomically to
``out/model.pt``.
"""

from __future__ import annotations

import sys
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import torch
from torch import nn

from nas_search.config import FieldCheck, check_fields, config_from_dict, config_to_dict, load_yaml_file, positive_or_none
from nas_search.errors import UserError
from nas_search.spec import ArchSpec
from nas_search.training.checkpoint import check_steps_per_epoch, load_checkpoint, refuse_to_overwrite, save_checkpoint
from nas_search.training.config import resolve_data_folder
from nas_search.training.distributed import DEVICES
from nas_search.training.loop import (
    EpochLoop,
    EpochTally,
    TrainingState,
    announce_resume,
    build_optimizer,
    check_epochs_left,
    count_steps,
    run_epochs,
    step_schedule,
)
from nas_search.utils import check_output_path

#: Format string of the checkpoints written by :func:`train_detection_standalone`.
DETECTION_MODEL_FORMAT = "nas-search-detection-model"

INITIALISATIONS = ("inherited", "scratch")
OPTIMIZERS = ("adamw", "sgd")  # as in training.loop.build_optimizer

#: Batch size of the val loader (evaluation only; does not change the result).
EVALUATION_BATCH_SIZE = 16


@dataclass
class DetectionTrainConfig:
    """The contents of an exported detection ``train.yaml``; every default in one place.

    Paths (``data``, ``weights``, ``out``) are relative to the yaml file's folder.
    ``input_size`` is the training size (a multiple of 32), which images are fitted to as
    ``resize`` says; the deployment size, where FLOPs were counted, is recorded in
    ``deployment_input_size``.
    ``postprocess`` holds FCOS settings (``score_thresh``, ``nms_thresh``,
    ``detections_per_img``, ``topk_candidates``, ``center_sampling_radius``) passed to
    :func:`~nas_search.tasks.detect.static.build_detector`.
    """

    task: str = "detect"
    arch: dict = field(default_factory=dict)
    data: str | None = None  # detection folder; None = the built-in shapes-detect demo
    num_classes: int | None = None  # C, background excluded; None = from the data
    classes: list[str] | None = None  # fixes the class names and their order (label = position + 1)
    input_size: int = 128
    deployment_input_size: int | None = None
    init: str = "inherited"  # inherited | scratch
    weights: str = "model.pt"
    optimizer: str = "adamw"  # adamw | sgd
    learning_rate: float = 2e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    clip_grad_norm: float | None = 10.0
    epochs: int = 20
    batch_size: int = 16
    seed: int = 0
    out: str = "trained"
    workers: int | None = None
    max_train: int | None = None
    max_val: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    postprocess: dict = field(default_factory=dict)
    resize: str = "longer-side"  # square | longer-side (``RESIZE_MODES``); exports write it,
    # older train.yaml files without it were trained longer-side


def _multiple_of_32(value: int | None) -> bool:
    return value is None or (value >= 32 and value % 32 == 0)


def _known_postprocess(value: dict) -> bool:
    from nas_search.tasks.detect.static import DETECTION_DEFAULTS

    return set(value) <= set(DETECTION_DEFAULTS) and all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value.values()
    )


def _postprocess_accepted() -> str:
    from nas_search.tasks.detect.static import DETECTION_DEFAULTS

    return f"a mapping of {', '.join(DETECTION_DEFAULTS)} to numbers"


def _resize_modes() -> tuple[str, ...]:
    from nas_search.tasks.detect.static import RESIZE_MODES

    return tuple(RESIZE_MODES)


#: Value checks after the type checks: (field, test, what is accepted).
CHECKS: tuple[FieldCheck, ...] = (
    ("task", lambda value: value == "detect", "detect"),
    ("arch", bool, "the architecture mapping written by `nas-search export`"),
    ("init", lambda value: value in INITIALISATIONS, ", ".join(INITIALISATIONS)),
    ("optimizer", lambda value: value in OPTIMIZERS, ", ".join(OPTIMIZERS)),
    ("device", lambda value: value in DEVICES, ", ".join(DEVICES)),
    ("num_classes", positive_or_none, "1 or more, or null (from the data)"),
    ("input_size", _multiple_of_32, "a multiple of 32 (e.g. 128, 160, 320)"),
    ("deployment_input_size", _multiple_of_32, "a multiple of 32, or null"),
    ("learning_rate", lambda value: value > 0, "a number > 0"),
    ("momentum", lambda value: 0 <= value < 1, "0 to below 1"),
    ("weight_decay", lambda value: value >= 0, "0 or more"),
    ("warmup_epochs", lambda value: value >= 0, "0 or more"),
    ("clip_grad_norm", lambda value: value is None or value > 0, "a number > 0, or null (no clipping)"),
    ("epochs", lambda value: value >= 1, "1 or more"),
    ("batch_size", lambda value: value >= 1, "1 or more"),
    ("workers", lambda value: value is None or value >= 0, "0 or more, or null"),
    ("max_train", positive_or_none, "1 or more, or null (all)"),
    ("max_val", positive_or_none, "1 or more, or null (all)"),
    ("postprocess", _known_postprocess, _postprocess_accepted),
    ("resize", lambda value: value in _resize_modes(), lambda: ", ".join(_resize_modes())),
)


def load_detection_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[DetectionTrainConfig, Path]:
    """Parse and check a detection ``train.yaml``; returns the config and the yaml's folder
    (which relative paths in it refer to). ``overrides`` replace yaml values (``None``
    values are ignored, as for unset command-line options). Bad values raise a one-line
    :class:`UserError` naming the key, the value and what is accepted."""
    path = Path(path)
    data = load_yaml_file(path, "training config")
    if isinstance(data, dict) and overrides:
        data = {**data, **{key: value for key, value in overrides.items() if value is not None}}
    config = config_from_dict(DetectionTrainConfig, data, source=str(path))
    check_fields(config, CHECKS, str(path))
    if config.classes is not None and not all(isinstance(name, str) and name for name in config.classes):
        raise UserError(f"{path}: classes={list(config.classes)!r}; accepted: a list of class names (strings), or null")
    return config, path.parent


def _load_weights(model: torch.nn.Module, weights: Path, source: Path, spec: ArchSpec) -> None:
    if not weights.is_file():
        raise UserError(
            f"{source}: init is 'inherited' but the weights file {weights} does not exist; "
            "set init: scratch or point weights at an exported model.pt"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # foreign pickles, wrong shapes and missing keys all mean "does not fit"
        first = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise UserError(f"{weights} does not fit architecture {spec}: {first}") from None


def _evaluate(model: torch.nn.Module, loader, device: torch.device) -> dict[str, float]:
    from nas_search.tasks.detect.evaluate import mean_average_precision

    scores = mean_average_precision(model, loader, device)
    return {"map50": float(scores["map50"]), "map": float(scores["map"])}


def _resume(
    state: TrainingState, checkpoint_path: Path, spec: ArchSpec, config: DetectionTrainConfig, num_classes: int, steps: int
) -> tuple[int, list[dict]]:
    """Continue from ``checkpoint_path``: checks that it fits this run, restores its states;
    returns its trained epochs and history."""
    from nas_search.tasks.detect.static import LEGACY_RESIZE

    payload = load_checkpoint(checkpoint_path, DETECTION_MODEL_FORMAT)
    if payload.get("arch") != spec.key:
        raise UserError(
            f"checkpoint {checkpoint_path} is for another architecture ({payload.get('arch')}); "
            "remove it or train without --resume"
        )
    if payload.get("num_classes") != num_classes or payload.get("input_size") != config.input_size:
        raise UserError(
            f"checkpoint {checkpoint_path} was trained with num_classes={payload.get('num_classes')} "
            f"at input_size={payload.get('input_size')}, not {num_classes} at {config.input_size}"
        )
    trained_resize = (payload.get("config") or {}).get("resize", LEGACY_RESIZE)
    if trained_resize != config.resize:
        raise UserError(
            f"checkpoint {checkpoint_path} was trained with resize={trained_resize!r}, not "
            f"{config.resize!r}; accepted: resize: {trained_resize} in the yaml, or another --out"
        )
    check_steps_per_epoch(payload, steps, checkpoint_path)
    start_epoch, history = state.restore(payload)
    check_epochs_left(checkpoint_path, start_epoch, config.epochs)
    announce_resume(checkpoint_path, start_epoch, config.epochs)
    return start_epoch, history


@dataclass
class _DetectorRun:
    """One standalone detector training run: what each epoch does and writes."""

    config: DetectionTrainConfig
    spec: ArchSpec
    classes: list[str]
    num_classes: int
    state: TrainingState
    loader: Any
    val_loader: Any
    device: torch.device
    steps: int
    checkpoint_path: Path
    progress: bool
    history: list[dict] = field(default_factory=list)
    epoch_record: dict = field(default_factory=dict)

    def train(self, epoch: int, bar: Any, tally: EpochTally) -> None:
        """One epoch of supervised training (:func:`train_detection_epoch`)."""
        from nas_search.tasks.detect.supernet_training import train_detection_epoch

        self.epoch_record = train_detection_epoch(
            self.state.model,
            self.loader,
            self.state.optimizer,
            self.state.scheduler,
            self.device,
            bar,
            clip_grad_norm=self.config.clip_grad_norm,
        )

    def record(self, epoch: int, tally: EpochTally) -> dict:
        """The epoch's losses, mAPs on the val split, timing and learning rate."""
        record, scores = self.epoch_record, _evaluate(self.state.model, self.val_loader, self.device)
        if self.progress:
            print(
                f"epoch {epoch + 1}/{self.config.epochs}: loss {record['loss']:.4f}, mAP@0.5 {scores['map50']:.4f}, "
                f"mAP@[.5:.95] {scores['map']:.4f} ({record['images_per_second']:.1f} img/s)",
                file=sys.stderr,
            )
        return {
            "epoch": epoch + 1,
            **{key: value for key, value in record.items() if key not in ("images", "steps")},
            **scores,
            "learning_rate": self.state.scheduler.get_last_lr()[0],
        }

    def save(self, epoch: int) -> None:
        """Write the checkpoint after ``epoch`` (atomically)."""
        config = self.config
        save_checkpoint(
            {
                "format": DETECTION_MODEL_FORMAT,
                "arch": self.spec.key,
                "epoch": epoch + 1,
                "epochs": config.epochs,
                "steps_per_epoch": self.steps,
                "num_classes": self.num_classes,
                "classes": list(self.classes),
                "input_size": config.input_size,
                "history": self.history,
                "config": config_to_dict(config),
                **self.state.state_dicts(),
            },
            self.checkpoint_path,
        )


def _detector_and_data(path: Path, config: Any, base: Path, spec: ArchSpec) -> tuple[Any, int, nn.Module]:
    """The data, its class count and the detector (inherited weights loaded, or fresh) of a
    ``train.yaml``; one line naming the file when the class counts disagree."""
    from nas_search.tasks.detect.build import build_detector
    from nas_search.tasks.detect.data import load_detection_data

    data = load_detection_data(
        resolve_data_folder(config.data, base),
        input_size=config.input_size,
        seed=config.seed,
        max_train=config.max_train,
        max_val=config.max_val,
        classes=list(config.classes) if config.classes else None,
        resize=config.resize,
    )
    num_classes = config.num_classes or data.num_classes
    if data.num_classes != num_classes:
        raise UserError(
            f"{path}: num_classes={num_classes} but the data has {data.num_classes} classes ({', '.join(data.classes)})"
        )
    torch.manual_seed(config.seed)
    model = build_detector(spec, num_classes, config.input_size, resize=config.resize, **config.postprocess)
    if config.init == "inherited":
        _load_weights(model, base / config.weights, path, spec)
    return data, num_classes, model


def _optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """The optimizer the ``train.yaml`` names (no weight decay on BN parameters and biases)."""
    settings = SimpleNamespace(
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    return build_optimizer(model, settings)


def train_detection_standalone(
    path: str | Path, *, resume: bool = False, overrides: dict[str, Any] | None = None, progress: bool = True
) -> dict:
    """Train the detector of a ``train.yaml`` (see the module docstring).

    Returns ``map50`` and ``map`` (final, on the val split), ``initial_map50`` and
    ``initial_map`` (before training; ``None`` when resumed), ``epochs``, ``checkpoint``,
    ``weights`` (paths), ``history`` (one record per epoch: losses, mAPs, seconds, images
    per second), ``arch`` (the compact string), ``task``, ``input_size``,
    ``deployment_input_size``, ``classes`` and ``data`` (the dataset in words).
    """
    from nas_search.progress import progress_bar
    from nas_search.tasks.detect.data import make_detection_loader
    from nas_search.training.distributed import resolve_device

    path = Path(path)
    config, base = load_detection_train_config(path, overrides)
    try:
        spec = ArchSpec.from_dict(config.arch)
    except UserError as error:
        raise UserError(f"{path}: arch: {error}") from None
    device = resolve_device(config.device)
    out_dir, checkpoint_path = base / config.out, base / config.out / "checkpoint.pt"
    check_output_path(out_dir, "out (--out)", kind="folder")
    refuse_to_overwrite(checkpoint_path, resume, "--out DIR")
    data, num_classes, model = _detector_and_data(path, config, base, spec)
    model.to(device)
    optimizer = _optimizer(model, config)
    loader = make_detection_loader(
        data.train,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        num_workers=config.workers or 0,
        drop_last=True,
    )
    val_loader = make_detection_loader(data.val, batch_size=EVALUATION_BATCH_SIZE, shuffle=False, seed=config.seed)
    steps = count_steps(
        loader,
        f"{path}: batch_size={config.batch_size} is larger than the {len(cast(Sized, data.train))} training "
        f"images; accepted: at most {len(cast(Sized, data.train))}",
    )
    state = TrainingState(model, optimizer, step_schedule(optimizer, steps, config.epochs, config.warmup_epochs))
    run = _DetectorRun(
        config, spec, list(data.classes), num_classes, state, loader, val_loader, device, steps, checkpoint_path, progress
    )
    if resume and checkpoint_path.exists():
        start_epoch, run.history = _resume(state, checkpoint_path, spec, config, num_classes, steps)
    else:
        start_epoch = 0
        if resume:
            print(f"no checkpoint at {checkpoint_path}; starting from epoch 1")
    initial = _evaluate(model, val_loader, device) if start_epoch == 0 else None
    loop = EpochLoop(loader, config.seed, config.epochs, "train epoch", steps * config.batch_size, progress_bar, progress)
    run_epochs(loop, start_epoch, config.epochs, run.history, run.train, run.record, run.save)
    final = run.history[-1] if run.history else _evaluate(model, val_loader, device)
    weights_path = out_dir / "model.pt"
    save_checkpoint({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, weights_path)
    return {
        "task": "detect",
        "map50": final["map50"],
        "map": final["map"],
        "initial_map50": None if initial is None else initial["map50"],
        "initial_map": None if initial is None else initial["map"],
        "epochs": config.epochs,
        "checkpoint": str(checkpoint_path),
        "weights": str(weights_path),
        "history": run.history,
        "arch": str(spec),
        "input_size": config.input_size,
        "deployment_input_size": config.deployment_input_size,
        "classes": list(data.classes),
        "data": data.description,
    }


__all__ = ["DETECTION_MODEL_FORMAT", "DetectionTrainConfig", "load_detection_train_config", "train_detection_standalone"]

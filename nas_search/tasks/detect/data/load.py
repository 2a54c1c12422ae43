""":func:`load_detection_data`: splits, subsets, the ``shapes-detect`` demo and the description line."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from nas_search.errors import UserError
from nas_search.tasks.detect import demo_data as demo
from nas_search.tasks.detect.data.annotations import DEMO_SPLIT_NOTE, DetectionAnnotations, _new_counts
from nas_search.tasks.detect.data.dataset import DetectionData, DetectionTensorDataset
from nas_search.tasks.detect.data.decode import DEFAULT_FIT, IMAGE_FITS, _decode_all
from nas_search.tasks.detect.data.formats import FORMAT_READERS, _validate_classes, read_detection_annotations

logger = logging.getLogger(__package__)


def _split_indices(annotations: DetectionAnnotations, val_fraction: float, seed: int) -> tuple[list[int], list[int], str]:
    """Train and val image positions, and a note saying how they were split."""
    splits = [image.split for image in annotations.images]
    if annotations.split_source is not None and "train" in splits and "val" in splits:
        train = [index for index, split in enumerate(splits) if split == "train"]
        val = [index for index, split in enumerate(splits) if split == "val"]
        return train, val, f"split by {annotations.split_source}"
    count = len(splits)
    if count < 2:
        raise UserError(f"folder {annotations.root} holds {count} image; a train/val split needs at least 2")
    order = np.random.default_rng([seed, 0xDE7EC7]).permutation(count)
    val_count = min(max(1, round(count * val_fraction)), count - 1)
    return (
        sorted(order[val_count:].tolist()),
        sorted(order[:val_count].tolist()),
        f"split {1 - val_fraction:.0%}/{val_fraction:.0%} by seed {seed}",
    )


def _capped(indices: list[int], limit: int | None, seed: int, stream: int) -> list[int]:
    if limit is None or limit >= len(indices):
        return indices
    chosen = np.random.default_rng([seed, stream]).permutation(len(indices))[:limit]
    return [indices[position] for position in sorted(chosen.tolist())]


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _count_note(kept: int, total: int) -> str:
    return f"{kept}" if kept == total else f"{kept} of {total}"


def _skipped_note(skipped: dict[str, int]) -> str:
    notes = [f"{count} {key.replace('_', ' ')}" for key, count in skipped.items() if count]
    return "; handled: " + ", ".join(notes) if notes else ""


def _check_options(input_size: int, val_fraction: float, max_train: int | None, max_val: int | None) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 16:
        raise UserError(f"input_size={input_size!r} is invalid; expected an integer of at least 16 pixels")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val_fraction={val_fraction!r} is invalid; expected a number strictly between 0 and 1")
    for name, value in (("max_train", max_train), ("max_val", max_val)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{name}={value!r} is invalid; expected a positive integer or None")


def _demo_split(count: int, split: str, input_size: int, first_id: int, flip: bool, seed: int) -> DetectionTensorDataset:
    rendered = demo.demo_detection_split(count, demo.DETECTION_DEMO_SEED, split)
    images = torch.from_numpy(rendered.images).permute(0, 3, 1, 2)
    size = demo.DETECTION_DEMO_IMAGE_SIZE
    if input_size != size:
        images = v2.functional.resize(images, [input_size, input_size], antialias=True)
    scale = input_size / size
    return DetectionTensorDataset(
        list(images.contiguous().unbind(0)),
        [torch.from_numpy(boxes.copy()) * scale for boxes in rendered.boxes],
        [torch.from_numpy(labels.copy()) for labels in rendered.labels],
        range(first_id, first_id + count),
        flip=flip,
        seed=seed,
    )


def _load_demo(
    input_size: int, seed: int, max_train: int | None, max_val: int | None, augment: bool, classes: tuple[str, ...] | None
) -> DetectionData:
    if classes is not None and classes != demo.DETECTION_SHAPE_CLASSES:
        raise UserError(
            f"classes={list(classes)!r} does not match the {demo.DETECTION_DEMO_NAME} demo's classes "
            f"{list(demo.DETECTION_SHAPE_CLASSES)!r}; pass those or none"
        )
    train_count = min(max_train or demo.DETECTION_DEMO_TRAIN_SIZE, demo.DETECTION_DEMO_TRAIN_SIZE)
    val_count = min(max_val or demo.DETECTION_DEMO_VAL_SIZE, demo.DETECTION_DEMO_VAL_SIZE)
    train = _demo_split(train_count, "train", input_size, 0, augment, seed)
    val = _demo_split(val_count, "val", input_size, demo.DETECTION_DEMO_TRAIN_SIZE, False, seed)
    size = demo.DETECTION_DEMO_IMAGE_SIZE
    resized = f", resized to {input_size}x{input_size}" if input_size != size else ""
    description = (
        f"{demo.DETECTION_DEMO_NAME} ({DEMO_SPLIT_NOTE}): {len(demo.DETECTION_SHAPE_CLASSES)} classes, "
        f"{train_count} train + {val_count} val images ({train.box_count} + {val.box_count} boxes) "
        f"rendered at {size}x{size}{resized}"
    )
    return DetectionData(train, val, demo.DETECTION_SHAPE_CLASSES, description, _new_counts())


def load_detection_data(
    root: str | Path | None,
    *,
    input_size: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    max_train: int | None = None,
    max_val: int | None = None,
    augment: bool = True,
    format: str = "auto",
    classes: Sequence[str] | None = None,
    resize: str = DEFAULT_FIT,
) -> DetectionData:
    """Load a detection folder (or, for ``root=None``, the ``shapes-detect`` demo) as train
    and val datasets of images fitted to ``input_size`` as ``resize`` says
    (:data:`IMAGE_FITS`: pass the detector's resize mode).

    ``format`` and ``classes`` are as in :func:`read_detection_annotations`. ``seed`` draws
    the ``val_fraction`` split when the folder defines none, the ``max_train``/``max_val``
    subsets and the train flips (``augment``). For the demo, whose content is fixed,
    ``max_train``/``max_val`` take the first images of each split. Bad input raises
    :class:`~nas_search.errors.UserError`.
    """
    _check_options(input_size, val_fraction, max_train, max_val)
    if resize not in IMAGE_FITS:
        raise UserError(f"image fit {resize!r} is invalid; allowed: {', '.join(IMAGE_FITS)}")
    fixed_classes = _validate_classes(classes)
    if root is None:
        return _load_demo(input_size, seed, max_train, max_val, augment, fixed_classes)
    annotations = read_detection_annotations(root, format, classes=fixed_classes)
    all_train, all_val, split_note = _split_indices(annotations, float(val_fraction), seed)
    train_indices = _capped(all_train, max_train, seed, 0x7A1)
    val_indices = _capped(all_val, max_val, seed, 0x7A2)
    decoded = _decode_all([annotations.images[index] for index in train_indices + val_indices], input_size, resize)

    def build(indices: list[int], pixels: list[tuple[torch.Tensor, torch.Tensor]], flip: bool) -> DetectionTensorDataset:
        return DetectionTensorDataset(
            [image for image, _ in pixels],
            [boxes for _, boxes in pixels],
            [torch.from_numpy(annotations.images[index].labels.copy()) for index in indices],
            indices,
            flip=flip,
            seed=seed,
            paths=[annotations.images[index].path for index in indices],
        )

    train = build(train_indices, decoded[: len(train_indices)], augment)
    val = build(val_indices, decoded[len(train_indices) :], False)
    title = FORMAT_READERS[annotations.format].title
    description = (
        f"{title} detection data {annotations.root} ({split_note}): "
        f"{_plural(len(annotations.classes), 'class', 'classes')}, "
        f"{_count_note(len(train), len(all_train))} train + {_count_note(len(val), len(all_val))} val images "
        f"({train.box_count} + {val.box_count} boxes), "
        + (f"resized to {input_size}x{input_size}" if resize == "square" else f"longer side resized to {input_size}")
        + f"{_skipped_note(annotations.skipped)}"
    )
    if any(annotations.skipped.values()):
        logger.info("%s", description)
    return DetectionData(train, val, annotations.classes, description, dict(annotations.skipped))

"""Classification data: image folders or the built-in ``shapes10`` demo, and data loaders.

:func:`load_classification_data` accepts two folder layouts:

* a *split* layout, ``ROOT/train/<class>/<image>`` plus ``ROOT/val/<class>/<image>`` (or
  ``ROOT/test/...``; ``val/`` wins when both exist);
* a *single* ImageFolder, ``ROOT/<class>/<image>``, split into train and val per class by a
  seeded, stratified ``val_fraction``.

``data_dir=None`` loads the built-in ``shapes10`` demo (see :mod:`nas_search.tasks.classify.demo_data`).

Images are scanned with torchvision's ``make_dataset`` (files with an image extension;
names and folders that start with a dot are ignored). Unreadable files are **skipped and
counted**, not refused: a real-world folder often holds a few broken downloads, and
refusing the whole dataset for them helps nobody. Which files count as unreadable depends
on ``image_check`` (a table, :data:`IMAGE_CHECKS`): ``"header"`` (the default) opens each
file with PIL and runs ``verify()`` at load time, which catches files that are not images
at all, wrong formats and broken headers in about 30 us per small JPEG; ``"decode"``
decodes every image fully at load time and also catches truncated files; ``"none"``
trusts the extension. A file that passes the check but fails to decode later raises
:class:`~nas_search.errors.UserError` naming it. The count is reported in
:attr:`ClassificationData.skipped_files` and in one logged warning line.

Augmentation (train): inputs of at most :data:`SMALL_INPUT_LIMIT` pixels are resized and
centre-cropped to ``input_size`` (skipped when the source already has that size), then
reflect-padded by an eighth of the size and randomly cropped back (the CIFAR recipe), then
flipped horizontally; larger inputs use ``RandomResizedCrop`` with scale 0.25 to 1 and a
flip. Validation: resize and centre crop (a 0.875 crop ratio above the small-input limit).
Both normalise with the dataset's mean and std: ImageNet statistics for folders, statistics
measured on the training images for the demo. Random augmentation draws from torch's RNG:
inside loader workers that is seeded by :func:`make_loader`'s generator; with
``num_workers=0`` it is the process's global RNG, so seed it (``torch.manual_seed``) for a
reproducible run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import v2

from nas_search.errors import UserError
from nas_search.tasks.classify import demo_data as demo

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMG_EXTENSIONS)
"""File extensions read as images (torchvision's list)."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

SMALL_INPUT_LIMIT = 64
"""Inputs up to this size use pad-and-crop augmentation; larger ones RandomResizedCrop."""

VALIDATION_CROP_RATIO = 0.875
"""Centre-crop ratio for validation above :data:`SMALL_INPUT_LIMIT`."""

TRAIN_FOLDER = "train"
VALIDATION_FOLDERS: tuple[str, ...] = ("val", "test")
"""Folder names accepted for the validation split, in order of preference."""

TINY_DATASET = 512
"""Datasets with at most this many samples load in the main process by default."""

EXPECTED_LAYOUT = (
    "an ImageFolder root with <class>/<image> subfolders, or with train/ and val/ (or test/) subfolders laid out that way"
)

UNREADABLE_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes PIL.UnidentifiedImageError and truncated-file errors
    SyntaxError,  # PIL raises it for some malformed headers
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


# ----------------------------------------------------------------------------------------
# Image checks


def _check_header(path: str) -> None:
    with Image.open(path) as image:
        image.verify()


def _check_decode(path: str) -> None:
    with Image.open(path) as image:
        image.load()


def _check_nothing(path: str) -> None:
    return None


IMAGE_CHECKS: dict[str, Callable[[str], None]] = {"header": _check_header, "decode": _check_decode, "none": _check_nothing}
"""How each ``image_check`` mode tests a file at load time; it raises when the file is unreadable."""
#: (folder, count) of the skipped-files warnings already given in this process.
_WARNED_SKIPS: set[tuple[str, int]] = set()


def _is_readable(path: str, check: Callable[[str], None]) -> bool:
    try:
        check(path)
    except UNREADABLE_IMAGE_ERRORS:
        return False
    return True


# ----------------------------------------------------------------------------------------
# Datasets


def _load_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except UNREADABLE_IMAGE_ERRORS as error:
        raise UserError(
            f"image {path} passed the load-time check but cannot be decoded ({error}); "
            "remove it or load with image_check='decode' to skip such files"
        ) from error


class ImageFileDataset(Dataset):
    """Images read lazily from files: ``(transform(image), label)`` per item."""

    in_memory = False

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        """Label of every item, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(_load_rgb(path)), label

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFileDataset:
        """A dataset holding the given items, with the same transform."""
        return ImageFileDataset([self.samples[index] for index in indices], self.transform)


class ImageTensorDataset(Dataset):
    """Images held in memory as a ``uint8`` tensor ``(N, 3, H, W)``: ``(transform(image), label)``."""

    in_memory = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError("images must be uint8 (N, C, H, W) with one label per image")
        self.images = images
        self.labels = labels
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        """Label of every item, in order."""
        return self.labels.tolist()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageTensorDataset:
        """A dataset holding the given items, with the same transform."""
        index_tensor = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageTensorDataset(self.images[index_tensor], self.labels[index_tensor], self.transform)


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """A train/val pair of classification datasets and what describes them."""

    train: Dataset
    """Training items ``(float tensor (3, input_size, input_size), int label)``, augmented."""
    val: Dataset
    """Validation items, resized and centre-cropped only."""
    num_classes: int
    class_names: tuple[str, ...]
    description: str
    """One line: what the data is and how many images each split holds."""
    skipped_files: int
    """Image files skipped as unreadable at load time."""
    input_size: int
    mean: tuple[float, float, float]
    """Per-channel mean used for normalisation (pixels scaled to [0, 1])."""
    std: tuple[float, float, float]
    """Per-channel standard deviation used for normalisation."""


# ----------------------------------------------------------------------------------------
# Transforms


class ToUint8Tensor:
    """PIL image or tensor to a plain (not ``tv_tensors``) ``uint8`` tensor ``(C, H, W)``;
    plain tensors keep the per-op cost of the steps after it low."""

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            return image.as_subclass(torch.Tensor)
        return v2.functional.pil_to_tensor(image)


class TransformPipeline:
    """Apply transforms in order (a lean ``Compose``)."""

    def __init__(self, steps: Sequence[Callable[[Any], torch.Tensor]]) -> None:
        self.steps = list(steps)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        result: Any = image
        for step in self.steps:
            result = step(result)
        return result

    def __repr__(self) -> str:
        return f"TransformPipeline({', '.join(type(step).__name__ for step in self.steps)})"


class ReflectShiftCrop:
    """Random crop of a ``(C, size, size)`` image out of its reflect-padded version.

    The same result as ``v2.RandomCrop(size, padding, padding_mode="reflect")`` on a square
    image of side ``size``, done with two precomputed index lookups instead of padding
    (much faster on small images, which matters when loading in-process; see
    ``benchmarks/RESULTS.md``).
    """

    def __init__(self, size: int, padding: int) -> None:
        if padding >= size:
            raise ValueError(f"padding {padding} must be smaller than the size {size}")
        self.size = size
        self.padding = padding
        positions = torch.arange(size)[None, :] + torch.arange(-padding, padding + 1)[:, None]
        positions = positions.abs()
        self.index_table = torch.where(positions > size - 1, 2 * (size - 1) - positions, positions)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"expected a {self.size}x{self.size} image, got {tuple(image.shape[-2:])}")
        row_shift, column_shift = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
        return image.index_select(-2, self.index_table[row_shift]).index_select(-1, self.index_table[column_shift])


class RandomFlip:
    """Mirror an image left to right with probability one half."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-1) if bool(torch.rand(()) < 0.5) else image


class NormalizeToFloat:
    """``uint8`` image to a plain float32 tensor, ``(pixel / 255 - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean_tensor = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        std_tensor = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_tensor)
        self.offset = -mean_tensor / std_tensor

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.offset, image.to(torch.float32), self.scale)


def build_transform(
    input_size: int, *, train: bool, mean: Sequence[float], std: Sequence[float], source_size: int | None = None
) -> TransformPipeline:
    """The train or val transform for an image (PIL or ``uint8`` tensor) of side ``source_size``
    (``None`` when unknown or varying). See the module docstring for the recipe."""
    small = input_size <= SMALL_INPUT_LIMIT
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = [ToUint8Tensor()]
    if train and not small:
        steps.append(v2.RandomResizedCrop(input_size, scale=(0.25, 1.0), antialias=True))
    else:
        resize_to = input_size if small else round(input_size / VALIDATION_CROP_RATIO)
        if source_size != resize_to:
            steps.append(v2.Resize(resize_to, antialias=True))
        if source_size != input_size:
            steps.append(v2.CenterCrop(input_size))
        if train:
            steps.append(ReflectShiftCrop(input_size, max(1, round(input_size / 8))))
    if train:
        steps.append(RandomFlip())
    steps.append(NormalizeToFloat(mean, std))
    return TransformPipeline(steps)


# ----------------------------------------------------------------------------------------
# Splits and subsets


def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of item indices into ``(train, val)``, both sorted.

    Each class with at least two items puts ``round(count * val_fraction)`` of them, but at
    least one and at most ``count - 1``, into val; a class with one item stays in train.
    """
    labels = np.asarray(targets, dtype=np.int64)
    generator = np.random.default_rng([seed, 0x5917])
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        val_count = 0 if members.size < 2 else min(max(1, round(members.size * val_fraction)), members.size - 1)
        val_parts.append(members[:val_count])
        train_parts.append(members[val_count:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def balanced_subset(targets: Sequence[int], limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced subset of at most ``limit`` items.

    Items are taken round-robin over the classes, each class in a seeded random order, so
    class counts differ by at most one unless a class runs out (then the others fill in),
    and the subset for ``limit`` contains the one for any smaller limit.
    """
    labels = np.asarray(targets, dtype=np.int64)
    if limit >= labels.size:
        return np.arange(labels.size)
    generator = np.random.default_rng([seed, 0xBA1A])
    rank = np.empty(labels.size, dtype=np.int64)
    classes = np.unique(labels)
    for label in classes:
        members = np.flatnonzero(labels == label)
        rank[members] = generator.permutation(members.size)
    class_position = np.zeros(int(classes.max()) + 1, dtype=np.int64)
    class_position[classes] = generator.permutation(classes.size)
    order = np.lexsort((class_position[labels], rank))
    return np.sort(order[:limit])


# ----------------------------------------------------------------------------------------
# Folder scanning


def _class_folders(folder: Path) -> list[str]:
    """Sorted names of the non-hidden subfolders of ``folder``."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _is_candidate_image(path: str, root: Path) -> bool:
    relative = Path(path).relative_to(root)
    if any(part.startswith(".") for part in relative.parts):
        return False
    return path.lower().endswith(IMAGE_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class _ScannedFolder:
    folder: Path
    class_names: tuple[str, ...]
    samples: list[tuple[str, int]]
    skipped: list[str]


def _scan_folder(folder: Path, check: Callable[[str], None]) -> _ScannedFolder:
    """Class folders and readable images of one ImageFolder root, validated."""
    class_names = _class_folders(folder)
    if not class_names:
        raise UserError(f"no class folders in {folder}; expected {EXPECTED_LAYOUT}")
    if len(class_names) < 2:
        raise UserError(
            f"only one class folder ({class_names[0]}) in {folder}; a classifier needs at least 2 classes ({EXPECTED_LAYOUT})"
        )
    class_to_index = {name: index for index, name in enumerate(class_names)}
    candidates = make_dataset(
        folder, class_to_index, is_valid_file=lambda path: _is_candidate_image(path, folder), allow_empty=True
    )
    if not candidates:
        raise UserError(f"no images in the class folders of {folder}; expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    samples: list[tuple[str, int]] = []
    skipped: list[str] = []
    for path, label in candidates:
        if _is_readable(path, check):
            samples.append((path, label))
        else:
            skipped.append(path)
    present = {label for _, label in samples}
    empty = [name for name in class_names if class_to_index[name] not in present]
    if empty:
        raise UserError(
            f"class folder(s) {', '.join(empty)} in {folder} hold no readable images; every class folder needs at least one"
        )
    return _ScannedFolder(folder, tuple(class_names), samples, skipped)


def _validation_folder(root: Path) -> Path | None:
    """The val (or test) folder of a split layout, or None for a single ImageFolder."""
    if not (root / TRAIN_FOLDER).is_dir():
        return None
    for name in VALIDATION_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return None


def _check_same_classes(train: _ScannedFolder, val: _ScannedFolder) -> None:
    only_train = sorted(set(train.class_names) - set(val.class_names))
    only_val = sorted(set(val.class_names) - set(train.class_names))
    if only_train or only_val:
        raise UserError(
            f"class folders differ between {train.folder} and {val.folder} "
            f"(only in {train.folder.name}/: {', '.join(only_train) or 'none'}; "
            f"only in {val.folder.name}/: {', '.join(only_val) or 'none'}); both splits need the same classes"
        )


# ----------------------------------------------------------------------------------------
# Public entry point


def _check_positive_limit(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"{name}={value!r} is invalid; expected a positive integer or None")


def _validate_options(
    input_size: int, val_fraction: float, max_train: int | None, max_val: int | None, image_check: str
) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8:
        raise UserError(f"input_size={input_size!r} is invalid; expected an integer of at least 8 pixels")
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val_fraction={val_fraction!r} is invalid; expected a number strictly between 0 and 1")
    _check_positive_limit("max_train", max_train)
    _check_positive_limit("max_val", max_val)
    if image_check not in IMAGE_CHECKS:
        raise UserError(f"image_check={image_check!r} is unknown; expected one of {', '.join(IMAGE_CHECKS)}")


def _subset_note(dataset_size: int, full_size: int) -> str:
    return f"{dataset_size}" if dataset_size == full_size else f"{dataset_size} of {full_size}"


def _resolve_data_root(data_dir: str | Path) -> Path:
    """The data folder ``data_dir`` as a path; :class:`UserError` unless it is an existing folder."""
    if not isinstance(data_dir, (str, Path)):
        raise UserError(f"data_dir={data_dir!r} is invalid; expected a folder path or None for the demo dataset")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise UserError(f"data folder {root} does not exist; expected {EXPECTED_LAYOUT}")
    if not root.is_dir():
        raise UserError(f"data path {root} is a file, not a folder; expected {EXPECTED_LAYOUT}")
    return root


def _read_samples(
    root: Path, check: Callable[[str], None], val_fraction: float, seed: int
) -> tuple[_ScannedFolder, list[tuple[str, int]], list[tuple[str, int]], list[str], str]:
    """Scan a data folder in either layout: ``(scan naming the classes, train samples, val
    samples, skipped files, a note on the layout)``."""
    validation_folder = _validation_folder(root)
    if validation_folder is not None:
        train_scan = _scan_folder(root / TRAIN_FOLDER, check)
        val_scan = _scan_folder(validation_folder, check)
        _check_same_classes(train_scan, val_scan)
        train_samples, val_samples = train_scan.samples, val_scan.samples
        skipped = train_scan.skipped + val_scan.skipped
        layout = f"{TRAIN_FOLDER}/ and {validation_folder.name}/"
    elif (root / TRAIN_FOLDER).is_dir():
        raise UserError(
            f"data folder {root} has {TRAIN_FOLDER}/ but no {' or '.join(name + '/' for name in VALIDATION_FOLDERS)}; "
            f"add one, or pass {root / TRAIN_FOLDER} to split it by val_fraction"
        )
    else:
        scan = _scan_folder(root, check)
        train_scan = scan
        train_indices, val_indices = stratified_split([label for _, label in scan.samples], val_fraction, seed)
        train_samples = [scan.samples[index] for index in train_indices]
        val_samples = [scan.samples[index] for index in val_indices]
        skipped = scan.skipped
        layout = f"one folder split {1 - val_fraction:.0%}/{val_fraction:.0%} by seed {seed}"
    return train_scan, train_samples, val_samples, skipped, layout


def load_classification_data(
    data_dir: str | Path | None,
    *,
    input_size: int,
    val_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    max_train: int | None = None,
    max_val: int | None = None,
    image_check: str = "header",
) -> ClassificationData:
    """Load an image-classification dataset as train and val datasets.

    ``data_dir`` is a folder in one of the layouts of the module docstring, or ``None`` for
    the built-in ``shapes10`` demo (5,000 train and 1,000 val images; its content is fixed
    and does not depend on ``seed``). ``val_fraction`` and ``seed`` define the split of a
    single ImageFolder; ``seed`` also picks the class-balanced ``max_train``/``max_val``
    subsets (for the demo these are the first images of each split, which are class-balanced
    by construction). ``augment=False`` gives the train split the val transform.
    ``image_check`` is a key of :data:`IMAGE_CHECKS`. Bad input raises
    :class:`~nas_search.errors.UserError`.
    """
    _validate_options(input_size, val_fraction, max_train, max_val, image_check)
    if data_dir is None:
        return _load_demo(input_size=input_size, augment=augment, max_train=max_train, max_val=max_val)
    root = _resolve_data_root(data_dir)
    train_scan, train_samples, val_samples, skipped, layout = _read_samples(root, IMAGE_CHECKS[image_check], val_fraction, seed)
    if skipped and (str(root), len(skipped)) not in _WARNED_SKIPS:  # once per folder, not per load
        _WARNED_SKIPS.add((str(root), len(skipped)))
        logger.warning(
            "skipped %d unreadable image file(s) under %s (image_check=%s), e.g. %s",
            len(skipped),
            root,
            image_check,
            skipped[0],
        )

    train_transform = build_transform(input_size, train=augment, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    val_transform = build_transform(input_size, train=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    train = ImageFileDataset(train_samples, train_transform)
    val = ImageFileDataset(val_samples, val_transform)
    if max_train is not None:
        train = train.subset(balanced_subset(train.targets, max_train, seed))
    if max_val is not None:
        val = val.subset(balanced_subset(val.targets, max_val, seed + 1))
    class_names = train_scan.class_names
    description = (
        f"image folder {root} ({layout}): {len(class_names)} classes, "
        f"{_subset_note(len(train), len(train_samples))} train + {_subset_note(len(val), len(val_samples))} val images, "
        f"{len(skipped)} unreadable skipped"
    )
    return ClassificationData(
        train=train,
        val=val,
        num_classes=len(class_names),
        class_names=class_names,
        description=description,
        skipped_files=len(skipped),
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def _channel_statistics(images: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of ``uint8`` images ``(N, 3, H, W)``, pixels scaled to [0, 1]."""
    pixels = images.permute(1, 0, 2, 3).reshape(images.shape[1], -1).to(torch.float64) / 255.0
    mean = pixels.mean(dim=1)
    std = pixels.std(dim=1)
    return (
        tuple(round(float(value), 4) for value in mean),  # type: ignore[return-value]
        tuple(round(float(value), 4) for value in std),
    )


def _load_demo(*, input_size: int, augment: bool, max_train: int | None, max_val: int | None) -> ClassificationData:
    render_size = min(input_size, demo.MAX_RENDER_SIZE)
    train_count = min(max_train or demo.DEMO_TRAIN_SIZE, demo.DEMO_TRAIN_SIZE)
    val_count = min(max_val or demo.DEMO_VAL_SIZE, demo.DEMO_VAL_SIZE)
    train_images, train_labels = demo.demo_tensors(train_count, render_size, demo.DEMO_SEED, "train")
    val_images, val_labels = demo.demo_tensors(val_count, render_size, demo.DEMO_SEED, "val")
    mean, std = _channel_statistics(train_images)
    train_transform = build_transform(input_size, train=augment, mean=mean, std=std, source_size=render_size)
    val_transform = build_transform(input_size, train=False, mean=mean, std=std, source_size=render_size)
    rendered = f"rendered at {render_size}x{render_size}" + (
        f", resized to {input_size}x{input_size}" if render_size != input_size else ""
    )
    description = (
        f"{demo.DEMO_NAME} (built-in procedural demo): {len(demo.SHAPE_CLASSES)} shape classes, "
        f"{train_count} train + {val_count} val images {rendered}"
    )
    return ClassificationData(
        train=ImageTensorDataset(train_images, train_labels, train_transform),
        val=ImageTensorDataset(val_images, val_labels, val_transform),
        num_classes=len(demo.SHAPE_CLASSES),
        class_names=demo.SHAPE_CLASSES,
        description=description,
        skipped_files=0,
        input_size=input_size,
        mean=mean,
        std=std,
    )


# ----------------------------------------------------------------------------------------
# Loaders


def _is_in_memory(dataset: Dataset) -> bool:
    """True for datasets (or wrappers such as ``Subset`` around them) held in memory."""
    while not hasattr(dataset, "in_memory") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return bool(getattr(dataset, "in_memory", False))


def default_num_workers(dataset: Dataset) -> int:
    """0 for in-memory or tiny datasets (workers would cost more than they save), else
    ``min(2, cpu count)``."""
    if _is_in_memory(dataset) or len(dataset) <= TINY_DATASET:  # type: ignore[arg-type]
        return 0
    return min(2, os.cpu_count() or 1)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy in a loader worker from the torch seed the loader gave it."""
    np.random.seed(torch.initial_seed() % 2**32)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int | None = None,
    drop_last: bool = False,
    distributed: bool = False,
) -> DataLoader:
    """A reproducible ``DataLoader``.

    Shuffling and worker seeds come from a generator seeded with ``seed``, so two loaders
    built alike yield the same batches epoch after epoch. ``num_workers=None`` picks
    :func:`default_num_workers`; workers persist across epochs. With ``distributed=True``
    (an initialised ``torch.distributed`` process group is required) the loader uses a
    seeded ``DistributedSampler`` that shards the data across ranks; call
    :func:`set_loader_epoch` (or ``loader.sampler.set_epoch(epoch)``) before each epoch so
    every epoch is shuffled differently.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size!r} is invalid; expected a positive integer")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise UserError(f"num_workers={num_workers!r} is invalid; expected a non-negative integer or None")
    workers = default_num_workers(dataset) if num_workers is None else num_workers
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler: torch.utils.data.DistributedSampler[Any] | None = None
    if distributed:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("make_loader(distributed=True) needs an initialised torch.distributed process group")
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=generator,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a distributed loader's sampler which epoch starts (a no-op for other loaders)."""
    set_epoch = getattr(loader.sampler, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)

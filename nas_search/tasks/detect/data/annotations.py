"""Annotation records, the constants every reader shares, and small reading helpers."""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from nas_search.errors import UserError

ANNOTATION_FORMATS: tuple[str, ...] = ("voc", "coco", "yolo")
"""Annotation formats read by :func:`read_detection_annotations`."""

AUTO_FORMAT_ORDER: tuple[str, ...] = ("voc", "yolo", "coco")
"""Order in which ``format="auto"`` tries the layouts."""

SKIP_COUNTS: tuple[str, ...] = (
    "clipped_boxes",
    "dropped_boxes",
    "images_without_boxes",
    "crowd_boxes",
    "unannotated_images",
    "images_not_in_split",
    "label_files_without_image",
    "duplicate_annotation_files",
)
"""Keys of the ``skipped`` counts (see the module docstring); every key is always present."""

EDGE_TOLERANCE = 0.01
"""Pixels by which a box may cross the image border and be clipped without counting."""

SPLITS: tuple[str, ...] = ("train", "val")

DEMO_SPLIT_NOTE = "built-in procedural demo"

EXIF_ORIENTATION_TAG = 0x0112
EXIF_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
"""EXIF orientations that turn the image by 90 degrees (width and height swap)."""

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMG_EXTENSIONS)
"""File extensions read as images (torchvision's list; the same as the classification data's)."""

UNREADABLE_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes PIL.UnidentifiedImageError and truncated-file errors
    SyntaxError,  # PIL raises it for some malformed headers
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
"""What reading a damaged or non-image file raises (the same as the classification data's)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageAnnotation:
    """One image and its boxes, in the image's own pixels."""

    path: Path
    width: int
    """Width of the image (after any EXIF turn), in pixels."""
    height: int
    boxes: np.ndarray
    """``float32 (N, 4)``: ``x1, y1, x2, y2``, clipped to the image, all of positive area."""
    class_names: tuple[str, ...]
    """Class name of each box."""
    labels: np.ndarray
    """``int64 (N,)``: label of each box, 1..C in :attr:`DetectionAnnotations.classes` order."""
    split: str | None
    """``"train"`` or ``"val"`` when the folder defines a split, else ``None``."""
    annotation_file: Path | None
    """File the boxes come from (``None`` for a YOLO image without a label file)."""
    exif_transpose: bool = False
    """Whether the image must be turned by its EXIF orientation to match the boxes."""


@dataclasses.dataclass(frozen=True, eq=False)
class DetectionAnnotations:
    """The annotations of a detection folder, read without decoding pixels."""

    root: Path
    format: str
    """One of :data:`ANNOTATION_FORMATS`."""
    classes: tuple[str, ...]
    """Class names; label ``k`` is ``classes[k - 1]``."""
    images: tuple[ImageAnnotation, ...]
    skipped: dict[str, int]
    """Counts of degenerate or ignored input, keyed by :data:`SKIP_COUNTS`."""
    split_source: str | None
    """What defines the train/val split (``None``: no split, a seeded one is drawn)."""

    @property
    def box_count(self) -> int:
        """Total number of boxes."""
        return sum(len(image.labels) for image in self.images)


@dataclasses.dataclass
class _RawImage:
    """An image as a reader found it, before sizes, labels and box checks."""

    path: Path
    annotation_file: Path | None
    split: str | None
    names: list[str]
    boxes: list[tuple[float, float, float, float]]
    declared_size: tuple[int, int] | None = None
    normalised: bool = False
    """Whether boxes are fractions of the image size (YOLO)."""
    follow_exif: bool = False
    """Whether the boxes refer to the EXIF-oriented image whatever the declared size (YOLO)."""


@dataclasses.dataclass
class _RawFolder:
    images: list[_RawImage]
    default_classes: tuple[str, ...]
    split_source: str | None
    skipped: dict[str, int]


def _new_counts() -> dict[str, int]:
    return {key: 0 for key in SKIP_COUNTS}


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden names skipped), sorted."""
    found: list[Path] = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found.extend(Path(directory) / name for name in files if _is_image_file(Path(name)))
    return sorted(found)


def _number(text: object, what: str, source: Path | str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{source}: {what} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{source}: {what} is {text!r}, not a finite number")
    return value

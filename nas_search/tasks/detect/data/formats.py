"""Format detection and :func:`read_detection_annotations`: the format table, image sizes, labels and box checks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nas_search.errors import UserError
from nas_search.tasks.detect.data.annotations import (
    ANNOTATION_FORMATS,
    AUTO_FORMAT_ORDER,
    EDGE_TOLERANCE,
    EXIF_ORIENTATION_TAG,
    EXIF_SWAPPING_ORIENTATIONS,
    IMAGE_EXTENSIONS,
    UNREADABLE_IMAGE_ERRORS,
    DetectionAnnotations,
    ImageAnnotation,
    _RawFolder,
    _RawImage,
)
from nas_search.tasks.detect.data.coco import COCO_EXPECTED, _looks_like_coco, _read_coco
from nas_search.tasks.detect.data.voc import VOC_EXPECTED, _looks_like_voc, _read_voc
from nas_search.tasks.detect.data.yolo import YOLO_EXPECTED, _looks_like_yolo, _read_yolo


@dataclasses.dataclass(frozen=True)
class _FormatReader:
    title: str
    expected: str
    looks_like: Callable[[Path], bool]
    read: Callable[[Path, tuple[str, ...] | None], _RawFolder]


FORMAT_READERS: dict[str, _FormatReader] = {
    "voc": _FormatReader("Pascal VOC", VOC_EXPECTED, _looks_like_voc, _read_voc),
    "coco": _FormatReader("COCO", COCO_EXPECTED, _looks_like_coco, _read_coco),
    "yolo": _FormatReader("YOLO", YOLO_EXPECTED, _looks_like_yolo, _read_yolo),
}
"""Each format's title, expected layout, layout test and reader."""


def _accepted_layouts() -> str:
    return "; ".join(FORMAT_READERS[name].expected for name in AUTO_FORMAT_ORDER)


def _image_size(raw: _RawImage) -> tuple[int, int, bool]:
    """``(width, height, exif_transpose)`` of an image in the frame its boxes refer to."""
    try:
        with Image.open(raw.path) as image:
            width, height = image.size
            orientation = 1
            if raw.follow_exif or (raw.declared_size is not None and raw.declared_size != (width, height)):
                orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise UserError(
            f"image {raw.path} cannot be read ({error}); expected an image file ({', '.join(IMAGE_EXTENSIONS)})"
        ) from None
    turned = (height, width) if orientation in EXIF_SWAPPING_ORIENTATIONS else (width, height)
    if raw.follow_exif:
        return turned[0], turned[1], orientation != 1
    if raw.declared_size is None or raw.declared_size == (width, height):
        return width, height, False
    if raw.declared_size == turned and orientation != 1:
        return turned[0], turned[1], True
    raise UserError(
        f"{raw.annotation_file} declares image {raw.path.name} as {raw.declared_size[0]}x{raw.declared_size[1]} "
        f"but the file is {width}x{height}; fix the declared size or the image"
    )


def _clean_boxes(boxes: np.ndarray, width: int, height: int, counts: dict[str, int]) -> np.ndarray:
    """Boolean mask of boxes kept; clips ``boxes`` in place (see the module docstring)."""
    if boxes.size == 0:
        return np.zeros(0, dtype=bool)
    limits = np.array([width, height, width, height], dtype=np.float64)
    clipped = np.clip(boxes, 0.0, limits)
    moved = np.abs(clipped - boxes).max(axis=1) > EDGE_TOLERANCE
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    counts["clipped_boxes"] += int((moved & keep).sum())
    counts["dropped_boxes"] += int((~keep).sum())
    boxes[:] = clipped
    return keep


def _validate_classes(classes: Sequence[str] | None) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not all(isinstance(name, str) and name.strip() for name in classes):
        raise UserError(f"classes={classes!r} is invalid; expected a list of non-empty class names")
    names = tuple(name.strip() for name in classes)
    if not names or len(set(names)) != len(names):
        raise UserError(f"classes={list(classes)!r} is invalid; expected at least one name, each once")
    return names


def _resolve_root(root: str | Path) -> Path:
    if not isinstance(root, (str, Path)):
        raise UserError(f"data root {root!r} is invalid; expected a folder path, or None for the demo")
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"data folder {path} does not exist; expected one of: {_accepted_layouts()}")
    if not path.is_dir():
        raise UserError(f"data path {path} is a file, not a folder; expected one of: {_accepted_layouts()}")
    with os.scandir(path) as entries:
        empty = not any(not entry.name.startswith(".") for entry in entries)
    if empty:
        raise UserError(f"data folder {path} is empty; expected one of: {_accepted_layouts()}")
    return path


def _detect_format(root: Path, format: str) -> str:
    accepted = ("auto", *ANNOTATION_FORMATS)
    if format not in accepted:
        raise UserError(f"format={format!r} is unknown; expected one of {', '.join(accepted)}")
    if format != "auto":
        reader = FORMAT_READERS[format]
        if not reader.looks_like(root):
            raise UserError(f"folder {root} has no {reader.title} layout; format={format!r} expects {reader.expected}")
        return format
    for name in AUTO_FORMAT_ORDER:
        if FORMAT_READERS[name].looks_like(root):
            return name
    raise UserError(f"folder {root} has no known detection layout; expected one of: {_accepted_layouts()}")


def read_detection_annotations(
    root: str | Path, format: str = "auto", *, classes: Sequence[str] | None = None
) -> DetectionAnnotations:
    """Read a detection folder's annotations without decoding pixels.

    ``format`` is ``"auto"`` or one of :data:`ANNOTATION_FORMATS`; layouts, splits, class
    order and the handling of degenerate input are in the module docstring. Image sizes are
    read from the files' headers. Bad input raises :class:`~nas_search.errors.UserError`.
    """
    fixed_classes = _validate_classes(classes)
    path = _resolve_root(root)
    chosen = _detect_format(path, format)
    raw = FORMAT_READERS[chosen].read(path, fixed_classes)
    class_names = fixed_classes if fixed_classes is not None else raw.default_classes
    label_of = {name: index + 1 for index, name in enumerate(class_names)}
    counts = raw.skipped
    images: list[ImageAnnotation] = []
    for item in raw.images:
        for name in item.names:
            if name not in label_of:
                raise UserError(
                    f"class {name!r} in {item.annotation_file} is not in classes={list(class_names)!r}; "
                    "add it to classes or remove the box"
                )
        width, height, transpose = _image_size(item)
        boxes = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4)
        if item.normalised:
            boxes = boxes * np.array([width, height, width, height], dtype=np.float64)
        keep = _clean_boxes(boxes, width, height, counts)
        names = tuple(name for name, kept in zip(item.names, keep) if kept)
        if not names:
            counts["images_without_boxes"] += 1
        images.append(
            ImageAnnotation(
                path=item.path,
                width=width,
                height=height,
                boxes=boxes[keep].astype(np.float32),
                class_names=names,
                labels=np.array([label_of[name] for name in names], dtype=np.int64),
                split=item.split,
                annotation_file=item.annotation_file,
                exif_transpose=transpose,
            )
        )
    if not images:
        raise UserError(f"folder {path} holds no annotated images; expected one of: {_accepted_layouts()}")
    if not class_names:
        raise UserError(f"folder {path} names no classes (no boxes and no class list); a detector needs at least one")
    return DetectionAnnotations(path, chosen, tuple(class_names), tuple(images), counts, raw.split_source)

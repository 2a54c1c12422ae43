"""YOLO txt reader: ``images/`` + ``labels/``, class names from ``data.yaml`` or ``classes.txt``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

from nas_search.errors import UserError
from nas_search.tasks.detect.data.annotations import (
    IMAGE_EXTENSIONS,
    SPLITS,
    _image_files,
    _new_counts,
    _number,
    _RawFolder,
    _RawImage,
)

logger = logging.getLogger(__package__)

YOLO_EXPECTED = "images/[<split>/] + labels/[<split>/]*.txt with 'class cx cy w h' lines (YOLO)"
YOLO_CONFIG_FILES: tuple[str, ...] = ("data.yaml", "config.yaml", "dataset.yaml")
"""Files read for YOLO class names, in order."""
YOLO_CLASS_LIST_FILES: tuple[str, ...] = ("classes.txt", "labels/classes.txt")
YOLO_SPLIT_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (("train", ("train",)), ("val", ("val", "test")))
"""Per split, the folder-name prefixes under ``images/`` that mark it, in order of preference."""


def _looks_like_yolo(root: Path) -> bool:
    labels = root / "labels"
    if not (labels.is_dir() and (root / "images").is_dir()):
        return False
    return any(name.endswith(".txt") for _, _, files in os.walk(labels) for name in files)


def _yolo_names(root: Path) -> tuple[dict[int, str] | None, Path | None]:
    """Index-to-name mapping from the YAML config or classes.txt, or ``None`` when absent."""
    for name in YOLO_CONFIG_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"YOLO config {path} is not valid YAML ({reason}); expected a mapping with 'names'") from None
        if not isinstance(config, dict):
            raise UserError(f"YOLO config {path} is not a mapping; expected keys such as 'names' (a list or index: name)")
        names = config.get("names")
        if isinstance(names, list):
            return {index: str(value) for index, value in enumerate(names)}, path
        if isinstance(names, dict):
            mapping: dict[int, str] = {}
            for key, value in names.items():
                try:
                    mapping[int(key)] = str(value)
                except (TypeError, ValueError):
                    raise UserError(
                        f"YOLO config {path}: names key {key!r} is not a class index; expected index: name"
                    ) from None
            return mapping, path
        if names is not None:
            raise UserError(f"YOLO config {path}: names is a {type(names).__name__}; expected a list or an index: name mapping")
        count = config.get("nc")
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return {index: str(index) for index in range(count)}, path
    for name in YOLO_CLASS_LIST_FILES:
        path = root / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            return dict(enumerate(lines)), path
    return None, None


def _yolo_split_folders(images_folder: Path) -> dict[str, Path] | None:
    subfolders = sorted(path for path in images_folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    chosen: dict[str, Path] = {}
    for split, prefixes in YOLO_SPLIT_PREFIXES:
        for prefix in prefixes:
            matches = [path for path in subfolders if path.name.lower().startswith(prefix)]
            if matches:
                chosen[split] = matches[0]
                break
    return chosen if len(chosen) == len(SPLITS) else None


def _parse_yolo_labels(
    path: Path, names: dict[int, str] | None, classes: tuple[str, ...] | None, image: Path
) -> tuple[list[str], list[tuple[float, float, float, float]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"label file {path} cannot be read ({error}); expected {YOLO_EXPECTED}") from None
    found_names: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"label file {path} line {line_number}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise UserError(
                f"{where} has {len(fields)} fields ({line.strip()!r}); expected 'class cx cy w h' "
                "or 'class x1 y1 x2 y2 x3 y3 ...'"
            )
        index_value = _number(fields[0], "the class index", where)
        if index_value != int(index_value) or index_value < 0:
            raise UserError(f"{where}: class index {fields[0]!r} is not a non-negative integer")
        index = int(index_value)
        values = [_number(field, "a coordinate", where) for field in fields[1:]]
        if names is not None:
            if index not in names:
                raise UserError(
                    f"{where}: class index {index} is out of range of the {len(names)} class names "
                    f"(0..{max(names) if names else -1}) in the YOLO config"
                )
            name = names[index]
        elif classes is not None:
            if index >= len(classes):
                raise UserError(f"{where}: class index {index} is out of range of the {len(classes)} classes passed")
            name = classes[index]
        else:
            name = str(index)
        if len(values) == 4:
            centre_x, centre_y, width, height = values
            box = (centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2)
        else:
            xs, ys = values[0::2], values[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
        found_names.append(name)
        boxes.append(box)
    return found_names, boxes


def _read_yolo(root: Path, classes: tuple[str, ...] | None) -> _RawFolder:
    images_folder, labels_folder = root / "images", root / "labels"
    if not (images_folder.is_dir() and labels_folder.is_dir()):
        raise UserError(f"folder {root} has no images/ and labels/ folders; expected {YOLO_EXPECTED}")
    counts = _new_counts()
    names, names_file = _yolo_names(root)
    all_images = _image_files(images_folder)
    if not all_images:
        raise UserError(f"no images under {images_folder}; expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    split_folders = _yolo_split_folders(images_folder)
    expected_labels = {labels_folder / path.relative_to(images_folder).with_suffix(".txt") for path in all_images}
    label_files = {
        Path(directory) / name
        for directory, _, files in os.walk(labels_folder)
        for name in files
        if name.endswith(".txt") and not name.startswith(".")
    }
    class_list = root / YOLO_CLASS_LIST_FILES[1]
    counts["label_files_without_image"] = len(label_files - expected_labels - {class_list})
    images: list[_RawImage] = []
    for path in all_images:
        split = None
        if split_folders is not None:
            split = next((name for name, folder in split_folders.items() if folder in path.parents), None)
            if split is None:
                counts["images_not_in_split"] += 1
                continue
        label_path = labels_folder / path.relative_to(images_folder).with_suffix(".txt")
        if label_path.is_file():
            found_names, boxes = _parse_yolo_labels(label_path, names, classes, path)
            images.append(_RawImage(path, label_path, split, found_names, boxes, normalised=True, follow_exif=True))
        else:
            images.append(_RawImage(path, None, split, [], [], normalised=True, follow_exif=True))
    if names is not None:
        default_classes = tuple(names[index] for index in sorted(names))
    elif classes is not None:
        default_classes = classes
    else:
        used = sorted({int(name) for image in images for name in image.names})
        default_classes = tuple(str(index) for index in range(used[-1] + 1)) if used else ()
    split_source = None
    if split_folders is not None:
        split_source = " and ".join(f"images/{split_folders[split].name}" for split in SPLITS)
    if names_file is not None:
        logger.debug("YOLO class names from %s", names_file)
    return _RawFolder(images, default_classes, split_source, counts)

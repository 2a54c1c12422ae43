"""COCO instances JSON reader."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from nas_search.errors import UserError
from nas_search.tasks.detect.data.annotations import SPLITS, _new_counts, _number, _RawFolder, _RawImage

logger = logging.getLogger(__package__)

COCO_EXPECTED = "annotations/*.json in COCO instances format (images, annotations, categories) + the image folder"
COCO_SPLIT_WORDS: tuple[tuple[str, str], ...] = (("train", "train"), ("val", "val"), ("test", "val"))
"""Words in a JSON file's name that mark its split, in order of precedence."""


def _coco_json_files(root: Path) -> list[Path]:
    folder = root / "annotations"
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix.lower() == ".json" and not path.name.startswith("."))


def _looks_like_coco(root: Path) -> bool:
    return bool(_coco_json_files(root))


def _coco_split(path: Path) -> str | None:
    stem = path.stem.lower()
    for word, split in COCO_SPLIT_WORDS:
        if word in stem:
            return split
    return None


def _coco_image_folder(root: Path, json_path: Path, file_names: list[str]) -> Path:
    """The folder holding (all of) a JSON's images; see the module docstring."""
    name = json_path.stem.removeprefix("instances_")
    candidates = [root / "images" / name, root / name, root / "images", root]
    if (root / "images").is_dir():
        candidates += sorted(path for path in (root / "images").iterdir() if path.is_dir())
    unique: list[Path] = []
    for candidate in candidates:
        if candidate.is_dir() and candidate not in unique:
            unique.append(candidate)
    best, best_found = None, 0
    for candidate in unique:
        found = sum(1 for file_name in file_names if (candidate / file_name).is_file())
        if found > best_found:
            best, best_found = candidate, found
    if best is None:
        searched = ", ".join(str(path) for path in unique) or str(root)
        raise UserError(
            f"none of the {len(file_names)} images listed in {json_path} exist (searched {searched}); expected {COCO_EXPECTED}"
        )
    if best_found < len(file_names):
        missing = next(file_name for file_name in file_names if not (best / file_name).is_file())
        raise UserError(
            f"image {best / missing} listed in {json_path} does not exist "
            f"({len(file_names) - best_found} of {len(file_names)} missing from {best})"
        )
    return best


def _coco_field(record: object, key: str, types: type | tuple[type, ...], path: Path, what: str) -> Any:
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, types) or isinstance(value, bool):
        raise UserError(f"annotation file {path}: {what} has no valid {key!r}; expected {COCO_EXPECTED}")
    return value


def _read_coco_json(path: Path) -> dict | None:
    """A parsed COCO instances JSON, or ``None`` for a JSON that is not one (no categories)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"annotation file {path} is not valid JSON ({error}); expected {COCO_EXPECTED}") from None
    if not isinstance(content, dict):
        raise UserError(f"annotation file {path} holds a {type(content).__name__}, not an object; expected {COCO_EXPECTED}")
    if "categories" not in content:
        return None
    for key in ("images", "annotations", "categories"):
        if not isinstance(content.get(key), list):
            raise UserError(f"annotation file {path} has no {key!r} list; expected {COCO_EXPECTED}")
    return content


def _merge_coco_categories(content: dict, json_path: Path, categories: dict[int, str]) -> None:
    """Add a JSON's categories to ``categories`` (id to name); ids must agree across files."""
    for category in content["categories"]:
        identifier = int(_coco_field(category, "id", int, json_path, "a category"))
        name = str(_coco_field(category, "name", str, json_path, f"category {identifier}")).strip()
        if categories.get(identifier, name) != name:
            raise UserError(
                f"annotation file {json_path}: category {identifier} is {name!r} here but "
                f"{categories[identifier]!r} in an earlier file; category ids must agree"
            )
        categories[identifier] = name


def _coco_image_records(content: dict, json_path: Path) -> dict[int, dict]:
    """A JSON's image records by id, each checked for an ``id`` and a ``file_name``."""
    records: dict[int, dict] = {}
    for record in content["images"]:
        identifier = int(_coco_field(record, "id", int, json_path, "an image"))
        _coco_field(record, "file_name", str, json_path, f"image {identifier}")
        records[identifier] = record
    return records


def _coco_raw_images(
    records: dict[int, dict], paths: dict[int, Path], json_path: Path, split: str | None
) -> dict[int, _RawImage]:
    """One :class:`_RawImage` per image record (no boxes yet), with its declared size when valid."""
    by_image: dict[int, _RawImage] = {}
    for identifier, record in records.items():
        width, height = record.get("width"), record.get("height")
        declared = None
        if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
            declared = (int(width), int(height))
        by_image[identifier] = _RawImage(paths[identifier], json_path, split, [], [], declared)
    return by_image


def _add_coco_boxes(
    content: dict, json_path: Path, categories: dict[int, str], by_image: dict[int, _RawImage], counts: dict[str, int]
) -> None:
    """Add a JSON's annotations to their images as named boxes; crowd annotations are counted."""
    for annotation in content["annotations"]:
        identifier = annotation.get("id", "?") if isinstance(annotation, dict) else "?"
        what = f"annotation {identifier}"
        image_id = _coco_field(annotation, "image_id", int, json_path, what)
        category_id = _coco_field(annotation, "category_id", int, json_path, what)
        bbox = _coco_field(annotation, "bbox", list, json_path, what)
        if image_id not in by_image:
            raise UserError(f"annotation file {json_path}: {what} refers to image {image_id}, which it does not list")
        if category_id not in categories:
            raise UserError(f"annotation file {json_path}: {what} refers to category {category_id}, which it does not list")
        if annotation.get("iscrowd", 0):
            counts["crowd_boxes"] += 1
            continue
        if len(bbox) != 4:
            raise UserError(f"annotation file {json_path}: {what} has bbox {bbox!r}; expected [x, y, width, height]")
        x, y, width, height = (_number(value, f"{what} bbox", json_path) for value in bbox)
        target = by_image[image_id]
        target.names.append(categories[category_id])
        target.boxes.append((x, y, x + width, y + height))


def _coco_class_names(root: Path, categories: dict[int, str]) -> list[str]:
    """Category names in id order; a repeated name is an error."""
    names = [categories[identifier] for identifier in sorted(categories)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(
            f"COCO categories in {root / 'annotations'} repeat the name(s) {', '.join(duplicates)}; names must be unique"
        )
    return names


def _coco_split_source(images: list[_RawImage], splits_found: list[tuple[str | None, Path]]) -> str | None:
    """What defines the split (a train and a val JSON, and no unsplit one); else clears the images' splits."""
    split_files = {split: path for split, path in splits_found if split is not None}
    if set(split_files) == set(SPLITS) and all(split is not None for split, _ in splits_found):
        return f"{split_files['train'].name} and {split_files['val'].name}"
    for image in images:
        image.split = None
    return None


def _read_coco(root: Path, classes: tuple[str, ...] | None) -> _RawFolder:
    json_files = _coco_json_files(root)
    if not json_files:
        raise UserError(f"folder {root} has no annotations/*.json; expected {COCO_EXPECTED}")
    counts = _new_counts()
    categories: dict[int, str] = {}
    images: list[_RawImage] = []
    seen_images: dict[Path, Path] = {}
    read_sets: list[frozenset[Path]] = []
    splits_found: list[tuple[str | None, Path]] = []
    for json_path in json_files:
        content = _read_coco_json(json_path)
        if content is None:
            logger.info("ignoring %s: not a COCO instances file (no categories)", json_path)
            continue
        _merge_coco_categories(content, json_path, categories)
        records = _coco_image_records(content, json_path)
        if not records:
            logger.info("ignoring %s: it lists no images", json_path)
            continue
        folder = _coco_image_folder(root, json_path, [record["file_name"] for record in records.values()])
        paths = {identifier: folder / record["file_name"] for identifier, record in records.items()}
        path_set = frozenset(path.resolve() for path in paths.values())
        if path_set in read_sets:
            counts["duplicate_annotation_files"] += 1
            logger.info("ignoring %s: it lists the same images as an earlier annotation file", json_path)
            continue
        for path in path_set:
            if path in seen_images:
                raise UserError(
                    f"image {path} is listed in both {seen_images[path]} and {json_path}; "
                    "each image may appear in one annotation file"
                )
            seen_images[path] = json_path
        read_sets.append(path_set)
        split = _coco_split(json_path)
        splits_found.append((split, json_path))
        by_image = _coco_raw_images(records, paths, json_path, split)
        images.extend(by_image.values())
        _add_coco_boxes(content, json_path, categories, by_image, counts)
    if not images:
        raise UserError(f"no COCO instances file with images in {root / 'annotations'}; expected {COCO_EXPECTED}")
    names = _coco_class_names(root, categories)
    split_source = _coco_split_source(images, splits_found)
    return _RawFolder(images, tuple(names), split_source, counts)

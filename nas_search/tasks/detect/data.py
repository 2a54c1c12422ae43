"""Detection data: Pascal VOC, COCO and YOLO folders or the built-in ``shapes-detect`` demo.

:func:`read_detection_annotations` reads a folder's annotations (no pixels) into
:class:`DetectionAnnotations`; :func:`load_detection_data` turns them into train and val
datasets of ``(image, target)`` items; :func:`make_detection_loader` batches them with
:func:`detection_collate`. ``root=None`` loads ``shapes-detect`` (see
:mod:`nas_search.tasks.detect.demo_data`).

Formats and layouts (``format="auto"`` tries them in the order voc, yolo, coco and takes the
first whose layout is present; coco128, which ships YOLO labels and a COCO JSON, thus reads
as YOLO unless ``format="coco"`` is passed):

* ``voc``: Pascal VOC XML, either ``images/`` + ``annotations/*.xml`` (the raccoon layout)
  or the standard ``JPEGImages/`` + ``Annotations/*.xml``. The image of an XML file is its
  ``<filename>`` in the image folder, or else the image with the XML file's stem. Box
  coordinates are taken as written (no 1-based shift; the difference is under a pixel);
  ``difficult`` objects are kept. Image files without an XML file are left out (counted).
* ``coco``: COCO instances JSON files in ``annotations/`` (JSON files without a
  ``categories`` list, such as captions, are ignored). The image folder of
  ``annotations/instances_<name>.json`` is whichever of ``images/<name>``, ``<name>``,
  ``images``, the root and the other subfolders of ``images/`` holds most of the JSON's
  ``file_name`` entries; it must hold all of them. A JSON that lists exactly the images of
  an earlier one is a duplicate and is ignored (counted; coco128's
  ``instances_val2017.json`` is a copy of its train JSON). Category names are the class
  names, with labels 1..C in order of category id. ``iscrowd`` annotations are ignored
  (counted), as in COCO training practice and in YOLO exports of COCO.
* ``yolo``: ``images/[<split>/]<image>`` with ``labels/[<split>/]<stem>.txt`` holding one
  ``class cx cy w h`` line per box (normalised to [0, 1]; a line ``class x1 y1 x2 y2 ...``
  of 3 or more points is a segment, and its box is the points' extent). Class names come
  from ``data.yaml``, ``config.yaml`` or ``dataset.yaml`` in the root (key ``names``, a list
  or an index-to-name mapping, or only ``nc``), else from a ``classes.txt`` (one name per
  line, in the root or in ``labels/``), else they are the indices ``"0"``, ``"1"``, ...;
  label = index + 1. An image without a label file is a background image. Images are
  oriented by their EXIF tag first, as YOLO tools do.

Splits: VOC folders use raccoon's ``data/train_labels.csv`` with ``data/test_labels.csv``
(or ``val_labels.csv``), images named in their ``filename`` column, or the standard
``ImageSets/Main/train.txt`` with ``val.txt`` (or ``trainval.txt`` with ``test.txt``). YOLO
folders use ``images/`` subfolders named ``train*`` and ``val*`` (or ``test*`` when there is
no ``val*``) when both exist. COCO folders use a ``*train*`` and a ``*val*`` (or ``*test*``)
JSON when both remain. Annotated images that a split does not list are left out (counted).
Without a predefined split all images are split by a seeded ``val_fraction`` (20% by
default), so that changing ``seed`` changes the split.

Classes: by default VOC classes are the sorted object names, COCO and YOLO classes are in
category-id or index order. ``classes=`` fixes the names and their order (label = position +
1); then a box of any other class is an error. Image sizes come from the image files; a VOC
or COCO declared size that disagrees with the file is an error, unless it matches the file
turned by its EXIF orientation, in which case the image is turned.

Degenerate input, handled as follows (counts in :attr:`DetectionAnnotations.skipped` and
:attr:`DetectionData.skipped`, over the whole folder before any ``max_train``/``max_val``
cap, and in the description when not zero):

* a box partly outside its image is clipped to the image (``clipped_boxes``; coordinates
  within :data:`EDGE_TOLERANCE` pixels of the border are clipped without counting); a box
  entirely outside, or of zero or negative width or height after clipping, is dropped
  (``dropped_boxes``);
* an empty annotation file (empty XML or txt), an image without objects, a YOLO image
  without a label file, or an image whose boxes were all dropped is kept as a
  background-only image (``images_without_boxes``);
* ignored and left-out items are counted as ``crowd_boxes`` (COCO ``iscrowd``),
  ``unannotated_images`` (VOC image files without an XML file), ``images_not_in_split``,
  ``label_files_without_image`` (YOLO) and ``duplicate_annotation_files`` (COCO);
* raised as :class:`~nas_search.errors.UserError` (one line naming the path and what is
  accepted): a class not in an explicit ``classes=`` (naming the class and the file), a
  YOLO class index outside the class names (naming the file and the index), a malformed
  XML/JSON/YAML file or txt line, a missing or unreadable image file, a folder that is
  missing, empty or of no known layout.

Loading: each image is decoded once (JPEG through PIL's draft mode when it shrinks) and
resized as ``resize`` says (:data:`IMAGE_FITS`): to ``input_size x input_size`` (``square``,
for detectors that stretch images to a square input, so none of the image's detail is
lost to a second resize) or so that its longer side equals ``input_size`` (``longer-side``,
aspect ratio kept); boxes are scaled by the exact per-axis factors. Each image is held in
memory as a ``uint8`` tensor; items convert it to
float in [0, 1]. Items are ``(image, {"boxes", "labels", "image_id"})`` with ``image_id``
the image's position in :attr:`DetectionAnnotations.images` (unique over both splits).
With ``augment=True`` the train split flips images (and boxes) horizontally with
probability one half. The flip is seeded: indexing a dataset directly flips by a hash of
``(seed, index)``, and :func:`make_detection_loader` draws a fresh key per item and epoch
from its seeded generator, so two loaders built alike yield the same batches, epochs
differ, and ``set_epoch`` pins an epoch's draws for resumed runs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import yaml
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torchvision.transforms import v2

from nas_search.tasks.detect import demo_data as demo
from nas_search.tasks.classify.data import IMAGE_EXTENSIONS, UNREADABLE_IMAGE_ERRORS
from nas_search.errors import UserError

logger = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------------
# Annotations


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


# ----------------------------------------------------------------------------------------
# Pascal VOC


@dataclasses.dataclass(frozen=True)
class _VocLayout:
    images: str
    annotations: str


VOC_LAYOUTS: tuple[_VocLayout, ...] = (_VocLayout("images", "annotations"), _VocLayout("JPEGImages", "Annotations"))
VOC_EXPECTED = "images/ + annotations/*.xml, or JPEGImages/ + Annotations/*.xml (Pascal VOC)"
VOC_SPLIT_FILES: tuple[tuple[str, str, str], ...] = (
    ("data/train_labels.csv", "data/test_labels.csv", "csv"),
    ("data/train_labels.csv", "data/val_labels.csv", "csv"),
    ("ImageSets/Main/train.txt", "ImageSets/Main/val.txt", "ids"),
    ("ImageSets/Main/trainval.txt", "ImageSets/Main/test.txt", "ids"),
)
"""Pairs of (train, val) list files, relative to the root, and how each lists images."""

VOC_XML_EXPECTED = "expected <annotation> with <object> entries holding <name> and <bndbox> xmin/ymin/xmax/ymax"


def _voc_layout(root: Path) -> _VocLayout | None:
    for layout in VOC_LAYOUTS:
        folder = root / layout.annotations
        if folder.is_dir() and any(path.suffix.lower() == ".xml" for path in folder.iterdir()):
            return layout
    return None


def _looks_like_voc(root: Path) -> bool:
    return _voc_layout(root) is not None


def _image_for_stem(folder: Path, stem: str) -> Path | None:
    for extension in IMAGE_EXTENSIONS:
        for candidate in (folder / (stem + extension), folder / (stem + extension.upper())):
            if candidate.is_file():
                return candidate
    return None


def _parse_voc_xml(path: Path, image_folder: Path) -> _RawImage:
    content = path.read_bytes()
    if not content.strip():
        image = _image_for_stem(image_folder, path.stem)
        if image is None:
            raise UserError(f"annotation file {path} is empty and no image {image_folder / path.stem}.* exists")
        return _RawImage(image, path, None, [], [])
    try:
        element = ElementTree.fromstring(content)
    except ElementTree.ParseError as error:
        raise UserError(f"annotation file {path} is not valid XML ({error}); {VOC_XML_EXPECTED}") from None
    if element.tag != "annotation":
        raise UserError(f"annotation file {path} has root <{element.tag}>, not <annotation>; {VOC_XML_EXPECTED}")
    filename = (element.findtext("filename") or "").strip()
    image = image_folder / filename if filename else None
    if image is None or not image.is_file():
        image = _image_for_stem(image_folder, path.stem)
    if image is None:
        named = image_folder / filename if filename else image_folder / f"{path.stem}.*"
        raise UserError(f"image {named} of annotation file {path} does not exist; expected it in {image_folder}")
    declared = None
    width_text, height_text = element.findtext("size/width"), element.findtext("size/height")
    if width_text is not None and height_text is not None:
        width = int(_number(width_text, "<size><width>", path))
        height = int(_number(height_text, "<size><height>", path))
        declared = (width, height) if width > 0 and height > 0 else None
    names: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []
    for index, item in enumerate(element.findall("object")):
        name = (item.findtext("name") or "").strip()
        if not name:
            raise UserError(f"annotation file {path}: object {index + 1} has no <name>; {VOC_XML_EXPECTED}")
        box_element = item.find("bndbox")
        if box_element is None:
            raise UserError(f"annotation file {path}: object {index + 1} ({name}) has no <bndbox>; {VOC_XML_EXPECTED}")
        box = tuple(
            _number(box_element.findtext(field), f"object {index + 1} <bndbox><{field}>", path)
            for field in ("xmin", "ymin", "xmax", "ymax")
        )
        names.append(name)
        boxes.append(box)  # type: ignore[arg-type]
    return _RawImage(image, path, None, names, boxes, declared)


def _read_split_list(path: Path, kind: str) -> list[str]:
    """Image keys listed by a split file: file names (csv) or ids (ImageSets)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"split file {path} cannot be read ({error})") from None
    if kind == "ids":
        return [line.split()[0] for line in text.splitlines() if line.strip()]
    rows = csv.DictReader(text.splitlines())
    if rows.fieldnames is None or "filename" not in rows.fieldnames:
        raise UserError(f"split file {path} has no 'filename' column; expected a CSV with a header naming it")
    return [row["filename"].strip() for row in rows if row.get("filename")]


def _voc_split_key(image: _RawImage, kind: str) -> str:
    """How split files name an image: its file name (csv) or its annotation id (ImageSets)."""
    return image.path.name if kind == "csv" or image.annotation_file is None else image.annotation_file.stem


def _voc_split(root: Path, images: list[_RawImage], counts: dict[str, int]) -> tuple[list[_RawImage], str | None]:
    for train_name, val_name, kind in VOC_SPLIT_FILES:
        train_file, val_file = root / train_name, root / val_name
        if not (train_file.is_file() and val_file.is_file()):
            continue
        by_key = {_voc_split_key(image, kind): image for image in images}
        assigned: dict[str, str] = {}
        for split, list_file in (("train", train_file), ("val", val_file)):
            for key in _read_split_list(list_file, kind):
                if key not in by_key:
                    raise UserError(
                        f"split file {list_file} lists {key!r}, which has no annotation file; "
                        f"expected {'image file names' if kind == 'csv' else 'annotation ids'} of annotated images"
                    )
                if assigned.get(key, split) != split:
                    raise UserError(f"{key!r} is listed in both {train_file} and {val_file}; a split needs each image once")
                assigned[key] = split
        kept = []
        for key, image in by_key.items():
            if key in assigned:
                image.split = assigned[key]
                kept.append(image)
        counts["images_not_in_split"] += len(images) - len(kept)
        return kept, f"{train_name} and {val_name}"
    return images, None


def _read_voc(root: Path, classes: tuple[str, ...] | None) -> _RawFolder:
    layout = _voc_layout(root)
    if layout is None:
        raise UserError(f"folder {root} has no Pascal VOC layout; expected {VOC_EXPECTED}")
    image_folder = root / layout.images
    if not image_folder.is_dir():
        raise UserError(
            f"folder {root} has {layout.annotations}/*.xml but no {layout.images}/ folder; expected {VOC_EXPECTED}"
        )
    counts = _new_counts()
    xml_files = sorted(path for path in (root / layout.annotations).iterdir() if path.suffix.lower() == ".xml")
    images = [_parse_voc_xml(path, image_folder) for path in xml_files]
    annotated = {image.path.resolve() for image in images}
    counts["unannotated_images"] = sum(1 for path in _image_files(image_folder) if path.resolve() not in annotated)
    images, split_source = _voc_split(root, images, counts)
    default_classes = tuple(sorted({name for image in images for name in image.names}))
    return _RawFolder(images, default_classes, split_source, counts)


# ----------------------------------------------------------------------------------------
# COCO


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
            f"none of the {len(file_names)} images listed in {json_path} exist (searched {searched}); "
            f"expected {COCO_EXPECTED}"
        )
    if best_found < len(file_names):
        missing = next(file_name for file_name in file_names if not (best / file_name).is_file())
        raise UserError(
            f"image {best / missing} listed in {json_path} does not exist "
            f"({len(file_names) - best_found} of {len(file_names)} missing from {best})"
        )
    return best


def _coco_field(record: object, key: str, types: type | tuple[type, ...], path: Path, what: str) -> object:
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
        for category in content["categories"]:
            identifier = int(_coco_field(category, "id", int, json_path, "a category"))  # type: ignore[arg-type]
            name = str(_coco_field(category, "name", str, json_path, f"category {identifier}")).strip()
            if categories.get(identifier, name) != name:
                raise UserError(
                    f"annotation file {json_path}: category {identifier} is {name!r} here but "
                    f"{categories[identifier]!r} in an earlier file; category ids must agree"
                )
            categories[identifier] = name
        records: dict[int, dict] = {}
        for record in content["images"]:
            identifier = int(_coco_field(record, "id", int, json_path, "an image"))  # type: ignore[arg-type]
            _coco_field(record, "file_name", str, json_path, f"image {identifier}")
            records[identifier] = record
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
        by_image: dict[int, _RawImage] = {}
        for identifier, record in records.items():
            width, height = record.get("width"), record.get("height")
            declared = None
            if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
                declared = (int(width), int(height))
            by_image[identifier] = _RawImage(paths[identifier], json_path, split, [], [], declared)
            images.append(by_image[identifier])
        for annotation in content["annotations"]:
            identifier = annotation.get("id", "?") if isinstance(annotation, dict) else "?"
            what = f"annotation {identifier}"
            image_id = _coco_field(annotation, "image_id", int, json_path, what)
            category_id = _coco_field(annotation, "category_id", int, json_path, what)
            bbox = _coco_field(annotation, "bbox", list, json_path, what)
            if image_id not in by_image:
                raise UserError(f"annotation file {json_path}: {what} refers to image {image_id}, which it does not list")
            if category_id not in categories:
                raise UserError(
                    f"annotation file {json_path}: {what} refers to category {category_id}, which it does not list"
                )
            if annotation.get("iscrowd", 0):
                counts["crowd_boxes"] += 1
                continue
            if len(bbox) != 4:  # type: ignore[arg-type]
                raise UserError(f"annotation file {json_path}: {what} has bbox {bbox!r}; expected [x, y, width, height]")
            x, y, width, height = (_number(value, f"{what} bbox", json_path) for value in bbox)  # type: ignore[union-attr]
            target = by_image[image_id]  # type: ignore[index]
            target.names.append(categories[category_id])  # type: ignore[index]
            target.boxes.append((x, y, x + width, y + height))
    if not images:
        raise UserError(f"no COCO instances file with images in {root / 'annotations'}; expected {COCO_EXPECTED}")
    names = [categories[identifier] for identifier in sorted(categories)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(
            f"COCO categories in {root / 'annotations'} repeat the name(s) {', '.join(duplicates)}; names must be unique"
        )
    split_files = {split: path for split, path in splits_found if split is not None}
    split_source = None
    if set(split_files) == set(SPLITS) and all(split is not None for split, _ in splits_found):
        split_source = f"{split_files['train'].name} and {split_files['val'].name}"
    else:
        for image in images:
            image.split = None
    return _RawFolder(images, tuple(names), split_source, counts)


# ----------------------------------------------------------------------------------------
# YOLO


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
            raise UserError(
                f"YOLO config {path}: names is a {type(names).__name__}; expected a list or an index: name mapping"
            )
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


def _parse_yolo_labels(path: Path, names: dict[int, str] | None, classes: tuple[str, ...] | None,
                       image: Path) -> tuple[list[str], list[tuple[float, float, float, float]]]:
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


# ----------------------------------------------------------------------------------------
# Reading: format table, sizes, labels and box checks


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


# ----------------------------------------------------------------------------------------
# Datasets


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps), for seeded per-item decisions."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state


class DetectionTensorDataset(Dataset):
    """Detection images held in memory as ``uint8`` tensors ``(3, H, W)``.

    Items are ``(float image in [0, 1], {"boxes", "labels", "image_id"})``. With
    ``flip=True`` an item is mirrored left to right (boxes too) with probability one half:
    ``dataset[index]`` decides by a hash of ``(seed, index)``; ``dataset[(index, key)]``, as
    :func:`make_detection_loader` asks, by the random ``key``.
    """

    in_memory = True

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        image_ids: Sequence[int],
        *,
        flip: bool = False,
        seed: int = 0,
        paths: Sequence[Path | None] | None = None,
    ) -> None:
        if not (len(images) == len(boxes) == len(labels) == len(image_ids)):
            raise ValueError("images, boxes, labels and image_ids must have the same length")
        for image in images:
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError("images must be uint8 tensors (3, H, W)")
        self.images = list(images)
        self.boxes = list(boxes)
        self.labels = list(labels)
        self.image_ids = [int(identifier) for identifier in image_ids]
        self.flip = flip
        self.seed = seed
        self.paths = list(paths) if paths is not None else [None] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        if isinstance(item, tuple):
            index, key = int(item[0]), int(item[1])
            flip = self.flip and bool(key & 1)
        else:
            index = int(item)
            flip = self.flip and bool(_mix(self.seed, index) & 1)
        image = self.images[index].to(torch.float32).div_(255.0)
        boxes = self.boxes[index].clone()
        if flip:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": self.labels[index].clone(), "image_id": self.image_ids[index]}

    @property
    def box_count(self) -> int:
        """Total number of boxes."""
        return sum(int(labels.numel()) for labels in self.labels)

    def subset(self, indices: Sequence[int]) -> "DetectionTensorDataset":
        """A dataset holding the given items, with the same flip setting and seed."""
        chosen = [int(index) for index in indices]
        return DetectionTensorDataset(
            [self.images[index] for index in chosen],
            [self.boxes[index] for index in chosen],
            [self.labels[index] for index in chosen],
            [self.image_ids[index] for index in chosen],
            flip=self.flip,
            seed=self.seed,
            paths=[self.paths[index] for index in chosen],
        )


@dataclasses.dataclass(frozen=True)
class DetectionData:
    """A train/val pair of detection datasets and what describes them."""

    train: Dataset
    """Training items ``(float image (3, H, W) in [0, 1], target)``, flipped when augmented."""
    val: Dataset
    """Validation items, never augmented."""
    classes: tuple[str, ...]
    """Class names; label ``k`` is ``classes[k - 1]`` (``num_classes`` for torchvision is
    ``len(classes) + 1``)."""
    description: str
    """One line: what the data is, its split, sizes and any degenerate input handled."""
    skipped: dict[str, int]
    """Counts of degenerate or ignored input, keyed by :data:`SKIP_COUNTS`."""

    @property
    def num_classes(self) -> int:
        """Number of object classes (background not included)."""
        return len(self.classes)


def _longer_side_size(width: int, height: int, input_size: int) -> tuple[int, int]:
    scale = input_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _square_size(width: int, height: int, input_size: int) -> tuple[int, int]:
    return input_size, input_size


#: How images are fitted to ``input_size`` when loaded, by name: ``(width, height, size) ->
#: (target width, target height)``. The names are the detectors' resize modes
#: (``nas_search.tasks.detect.static.RESIZE_MODES``).
IMAGE_FITS: dict[str, Callable[[int, int, int], tuple[int, int]]] = {
    "square": _square_size,
    "longer-side": _longer_side_size,
}
#: The loaders' default fit (the images of every loader before fits existed).
DEFAULT_FIT = "longer-side"


def _decode_resized(annotation: ImageAnnotation, input_size: int, resize: str = DEFAULT_FIT) -> tuple[torch.Tensor, torch.Tensor]:
    """The image fitted to ``input_size`` as ``resize`` says, as ``uint8 (3, h, w)``, and its boxes scaled."""
    target_width, target_height = IMAGE_FITS[resize](annotation.width, annotation.height, input_size)
    try:
        with Image.open(annotation.path) as image:
            if image.format == "JPEG":
                draft_size = (target_height, target_width) if annotation.exif_transpose and image.size != (
                    annotation.width, annotation.height) else (target_width, target_height)
                image.draft("RGB", draft_size)
            picture = image.convert("RGB")
    except UNREADABLE_IMAGE_ERRORS as error:
        raise UserError(f"image {annotation.path} cannot be decoded ({error}); replace or remove it") from None
    if annotation.exif_transpose:
        picture = ImageOps.exif_transpose(picture)
    if picture.size != (target_width, target_height):
        picture = picture.resize((target_width, target_height), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    scale = torch.tensor(
        [target_width / annotation.width, target_height / annotation.height] * 2, dtype=torch.float32
    )
    return pixels, torch.from_numpy(annotation.boxes.copy()).reshape(-1, 4) * scale


def _decode_all(annotations: Sequence[ImageAnnotation], input_size: int, resize: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    workers = max(1, min(4, os.cpu_count() or 1))
    if workers == 1 or len(annotations) < 8:
        return [_decode_resized(annotation, input_size, resize) for annotation in annotations]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda annotation: _decode_resized(annotation, input_size, resize), annotations))


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


def _load_demo(input_size: int, seed: int, max_train: int | None, max_val: int | None, augment: bool,
               classes: tuple[str, ...] | None) -> DetectionData:
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
    val = build(val_indices, decoded[len(train_indices):], False)
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


# ----------------------------------------------------------------------------------------
# Batching


def detection_collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch detection items as ``(list of images, list of targets)`` (images may differ in size)."""
    return [image for image, _ in batch], [target for _, target in batch]


class AugmentationKeySampler(Sampler):
    """Wrap a sampler to yield ``(index, key)`` pairs, ``key`` a random 62-bit integer that
    decides the item's augmentation (see :class:`DetectionTensorDataset`).

    The keys of an epoch come from a generator seeded by ``(seed, epoch, rank)``, where the
    epoch counts the passes over the sampler unless :meth:`set_epoch` fixes it, so loaders
    built alike draw the same keys, every epoch draws new ones, and a resumed run that calls
    ``set_epoch`` repeats an uninterrupted one. ``set_epoch`` is passed on to the wrapped
    sampler (a ``DistributedSampler`` needs it).
    """

    def __init__(self, sampler: Sampler, seed: int, rank: int = 0) -> None:
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator()
        generator.manual_seed(_mix(self.seed, self.epoch, self.rank) & 0x7FFFFFFFFFFFFFFF)
        self.epoch += 1
        indices = list(self.sampler)
        keys = torch.randint(0, 2**62, (len(indices),), generator=generator).tolist()
        return iter(zip(indices, keys))


def make_detection_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    distributed: bool = False,
) -> DataLoader:
    """A reproducible detection ``DataLoader`` batching with :func:`detection_collate`.

    Shuffling uses a generator seeded with ``seed`` (the loader's ``generator``; reseed it to
    replay an epoch), so two loaders built alike yield the same batches epoch after epoch,
    with a new order each epoch. For a flipping :class:`DetectionTensorDataset` the sampler
    also draws each item's flip (see :class:`AugmentationKeySampler`). With
    ``distributed=True`` (an initialised ``torch.distributed`` process group is required) a
    seeded ``DistributedSampler`` shards the data across ranks; call
    ``loader.sampler.set_epoch(epoch)`` (or :func:`~nas_search.tasks.classify.data.set_loader_epoch`)
    before each epoch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size!r} is invalid; expected a positive integer")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise UserError(f"num_workers={num_workers!r} is invalid; expected a non-negative integer")
    generator = torch.Generator()
    generator.manual_seed(seed)
    rank = 0
    sampler: Sampler
    if distributed:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError(
                "make_detection_loader(distributed=True) needs an initialised torch.distributed process group"
            )
        rank = torch.distributed.get_rank()
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    if isinstance(dataset, DetectionTensorDataset) and dataset.flip:
        sampler = AugmentationKeySampler(sampler, seed, rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=detection_collate,
        persistent_workers=num_workers > 0,
        generator=generator,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )

"""Pascal VOC reader: ``images/`` + ``annotations/*.xml`` or ``JPEGImages/`` + ``Annotations/``."""

from __future__ import annotations

import csv
import dataclasses
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from nas_search.errors import UserError
from nas_search.tasks.detect.data.annotations import IMAGE_EXTENSIONS, _image_files, _new_counts, _number, _RawFolder, _RawImage


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
        raise UserError(f"folder {root} has {layout.annotations}/*.xml but no {layout.images}/ folder; expected {VOC_EXPECTED}")
    counts = _new_counts()
    xml_files = sorted(path for path in (root / layout.annotations).iterdir() if path.suffix.lower() == ".xml")
    images = [_parse_voc_xml(path, image_folder) for path in xml_files]
    annotated = {image.path.resolve() for image in images}
    counts["unannotated_images"] = sum(1 for path in _image_files(image_folder) if path.resolve() not in annotated)
    images, split_source = _voc_split(root, images, counts)
    default_classes = tuple(sorted({name for image in images for name in image.names}))
    return _RawFolder(images, default_classes, split_source, counts)

"""Detection data: VOC, COCO and YOLO readers on the shared raccoon and coco128 data and on
small folders written here, the handling of degenerate input, the ``shapes-detect`` demo,
and the loader (collate, reproducibility, horizontal flip)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas_search.errors import UserError
from nas_search.tasks.detect import demo_data as demo
from nas_search.tasks.detect.data import (
    SKIP_COUNTS,
    detection_collate,
    load_detection_data,
    make_detection_loader,
    read_detection_annotations,
)

from support import shared_data_path

# ----------------------------------------------------------------------------------------
# Helpers: tiny images with a white rectangle, and annotation files written by hand.


def write_image(
    path: Path, width: int, height: int, rectangle: tuple[int, int, int, int] | None = None, exif_orientation: int | None = None
) -> Path:
    """A dark image with an optional white ``(x1, y1, x2, y2)`` rectangle (pixel edges)."""
    pixels = np.full((height, width, 3), 20, dtype=np.uint8)
    if rectangle is not None:
        x1, y1, x2, y2 = rectangle
        pixels[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif.tobytes(), quality=95)
    else:
        image.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, tuple[float, float, float, float]]]) -> str:
    parts = [
        f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
        "<depth>3</depth></size>"
    ]
    for name, (x1, y1, x2, y2) in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def write_voc(root: Path, name: str, width: int, height: int, objects, rectangle=None) -> None:
    write_image(root / "images" / f"{name}.jpg", width, height, rectangle)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.jpg", width, height, objects))


def counts(**nonzero: int) -> dict[str, int]:
    return {key: nonzero.get(key, 0) for key in SKIP_COUNTS}


def by_name(annotations) -> dict[str, object]:
    return {image.path.name: image for image in annotations.images}


# ----------------------------------------------------------------------------------------
# Shared real data


def match_boxes(first, second) -> float:
    """Pair boxes of the same class greedily by distance; return the largest coordinate gap."""
    assert sorted(first.class_names) == sorted(second.class_names)
    used: set[int] = set()
    worst = 0.0
    for box, name in zip(first.boxes, first.class_names):
        gaps = [
            (float(np.abs(other - box).max()), index)
            for index, (other, other_name) in enumerate(zip(second.boxes, second.class_names))
            if other_name == name and index not in used
        ]
        gap, index = min(gaps)
        used.add(index)
        worst = max(worst, gap)
    return worst


def test_coco128_yolo_and_coco_formats_agree() -> None:
    root = shared_data_path("coco128")
    yolo = read_detection_annotations(root, "yolo")
    coco = read_detection_annotations(root, "coco")
    assert read_detection_annotations(root).format == "yolo"  # auto: yolo before coco
    assert yolo.classes == coco.classes and len(coco.classes) == 80
    assert coco.classes[:3] == ("person", "bicycle", "car") and coco.classes[-1] == "toothbrush"

    # YOLO: both split folders, 256 images; the two train images without labels are background.
    assert len(yolo.images) == 256 and yolo.split_source == "images/train2017 and images/val2017"
    assert sum(image.split == "val" for image in yolo.images) == 128
    assert yolo.skipped["images_without_boxes"] == 2 and yolo.skipped["label_files_without_image"] == 2

    # COCO: the train JSON; the val JSON is a byte copy of it and is ignored; crowd boxes are left out.
    assert len(coco.images) == 128 and coco.split_source is None
    assert coco.skipped == counts(images_without_boxes=2, crowd_boxes=10, duplicate_annotation_files=1)
    assert all(image.path.parent.name == "train2017" for image in coco.images)

    yolo_images = {image.path.resolve(): image for image in yolo.images}
    covered = [yolo_images[image.path.resolve()] for image in coco.images]
    assert sum(len(image.labels) for image in covered) == coco.box_count == 929
    worst = 0.0
    for coco_image, yolo_image in zip(coco.images, covered):
        assert (coco_image.width, coco_image.height) == (yolo_image.width, yolo_image.height)
        assert len(coco_image.labels) == len(yolo_image.labels), coco_image.path
        worst = max(worst, match_boxes(coco_image, yolo_image))
        label_names = [coco.classes[label - 1] for label in coco_image.labels]
        assert label_names == list(coco_image.class_names)
    assert worst <= 1.0


def test_raccoon_reads_as_voc_with_its_csv_split() -> None:
    root = shared_data_path("raccoon")
    annotations = read_detection_annotations(root)
    assert annotations.format == "voc" and annotations.classes == ("raccoon",)
    assert len(annotations.images) == 200 and annotations.box_count == 217
    assert annotations.skipped == counts()
    train_names = {line.split(",")[0] for line in (root / "data" / "train_labels.csv").read_text().splitlines()[1:]}
    splits = {image.path.name: image.split for image in annotations.images}
    assert {name for name, split in splits.items() if split == "train"} == train_names
    assert sum(split == "val" for split in splits.values()) == 40

    data = load_detection_data(root, input_size=64, augment=False)
    assert (len(data.train), len(data.val)) == (160, 40) and data.classes == ("raccoon",)
    assert data.train.box_count + data.val.box_count == 217
    for dataset in (data.train, data.val):
        for index in range(0, len(dataset), 7):
            image, target = dataset[index]
            assert max(image.shape[1:]) == 64 and image.dtype == torch.float32
            assert target["labels"].tolist() == [1] * len(target["labels"])
            boxes = target["boxes"]
            assert bool(
                (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= image.shape[1]).all()
            )
    assert "160 train + 40 val" in data.description and "train_labels.csv" in data.description


# ----------------------------------------------------------------------------------------
# Degenerate input, one format at a time


def test_voc_clips_drops_and_keeps_background_images(tmp_path: Path) -> None:
    write_voc(
        tmp_path,
        "a",
        40,
        30,
        [
            ("cat", (10, 5, 20, 15)),  # inside
            ("cat", (-5, 2, 12, 40)),  # partly outside: clipped
            ("dog", (45, 2, 60, 10)),  # entirely outside: dropped
            ("dog", (20, 10, 12, 20)),  # inverted: dropped
            ("dog", (5, 5, 5, 9)),  # zero width: dropped
        ],
    )
    write_voc(tmp_path, "b", 40, 30, [])  # no objects: background
    write_image(tmp_path / "images" / "c.png", 30, 40)
    (tmp_path / "annotations" / "c.xml").write_text("  \n")  # empty file: background
    write_image(tmp_path / "images" / "unannotated.jpg", 10, 10)
    for name in ("d", "e"):
        write_voc(tmp_path, name, 40, 30, [("dog", (1, 1, 39, 29))])

    annotations = read_detection_annotations(tmp_path, "voc")
    assert annotations.classes == ("cat", "dog")  # sorted names of the kept boxes
    assert annotations.skipped == counts(clipped_boxes=1, dropped_boxes=3, images_without_boxes=2, unannotated_images=1)
    images = by_name(annotations)
    np.testing.assert_allclose(images["a.jpg"].boxes, [[10, 5, 20, 15], [0, 2, 12, 30]])
    assert images["a.jpg"].class_names == ("cat", "cat") and images["a.jpg"].labels.tolist() == [1, 1]
    assert len(images["b.jpg"].boxes) == 0 and len(images["c.png"].boxes) == 0
    assert (images["c.png"].width, images["c.png"].height) == (30, 40)

    data = load_detection_data(tmp_path, input_size=32, augment=False)
    assert (len(data.train), len(data.val)) == (4, 1)  # 5 annotated images, seeded 80/20
    assert data.skipped == annotations.skipped
    assert "1 clipped boxes" in data.description and "3 dropped boxes" in data.description
    assert "2 images without boxes" in data.description


def test_voc_boxes_scale_with_the_resized_pixels(tmp_path: Path) -> None:
    write_voc(tmp_path, "wide", 80, 40, [("box", (20, 8, 60, 28))], rectangle=(20, 8, 60, 28))
    write_voc(tmp_path, "tall", 30, 60, [("box", (3, 30, 21, 57))], rectangle=(3, 30, 21, 57))
    data = load_detection_data(tmp_path, input_size=120, augment=False, val_fraction=0.5)
    for dataset in (data.train, data.val):
        image, target = dataset[0]
        assert max(image.shape[1:]) == 120
        bright = (image.mean(dim=0) > 0.5).nonzero()
        found = torch.tensor(
            [bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1], dtype=torch.float32
        )
        assert torch.allclose(found, target["boxes"][0], atol=1.5), (found, target["boxes"])
    shapes = sorted(tuple(dataset[0][0].shape) for dataset in (data.train, data.val))
    assert shapes == [(3, 60, 120), (3, 120, 60)]


def test_square_fit_stretches_pixels_and_boxes_per_axis(tmp_path: Path) -> None:
    """``resize="square"`` (for detectors that stretch to a square input) loads every image
    at S x S directly, boxes scaled per axis, so the short side keeps its own detail."""
    write_voc(tmp_path, "wide", 80, 40, [("box", (20, 8, 60, 28))], rectangle=(20, 8, 60, 28))
    write_voc(tmp_path, "tall", 30, 60, [("box", (3, 30, 21, 57))], rectangle=(3, 30, 21, 57))
    data = load_detection_data(tmp_path, input_size=120, augment=False, val_fraction=0.5, resize="square")
    for dataset in (data.train, data.val):
        image, target = dataset[0]
        assert tuple(image.shape) == (3, 120, 120)
        bright = (image.mean(dim=0) > 0.5).nonzero()
        found = torch.tensor(
            [bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1], dtype=torch.float32
        )
        assert torch.allclose(found, target["boxes"][0], atol=2.5), (found, target["boxes"])
    expected = sorted([[30.0, 24.0, 90.0, 84.0], [12.0, 60.0, 84.0, 114.0]])
    assert sorted(dataset[0][1]["boxes"][0].tolist() for dataset in (data.train, data.val)) == expected
    assert data.description.endswith("resized to 120x120")
    with pytest.raises(UserError, match="image fit 'letterbox' is invalid; allowed: square, longer-side"):
        load_detection_data(tmp_path, input_size=120, resize="letterbox")


def test_image_fits_are_the_detectors_resize_modes() -> None:
    from nas_search.tasks.detect.data import IMAGE_FITS
    from nas_search.tasks.detect.static import RESIZE_MODES

    assert set(IMAGE_FITS) == set(RESIZE_MODES)


def test_voc_standard_layout_with_image_sets(tmp_path: Path) -> None:
    for index in range(4):
        write_image(tmp_path / "JPEGImages" / f"00{index}.jpg", 20, 20)
        (tmp_path / "Annotations").mkdir(exist_ok=True)
        (tmp_path / "Annotations" / f"00{index}.xml").write_text(voc_xml(f"00{index}.jpg", 20, 20, [("car", (2, 2, 9, 9))]))
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("000\n001\n")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("002\n")
    annotations = read_detection_annotations(tmp_path)
    assert annotations.split_source == "ImageSets/Main/train.txt and ImageSets/Main/val.txt"
    assert annotations.skipped == counts(images_not_in_split=1)
    data = load_detection_data(tmp_path, input_size=20)
    assert (len(data.train), len(data.val)) == (2, 1)


def test_unknown_class_with_explicit_classes_names_class_and_file(tmp_path: Path) -> None:
    write_voc(tmp_path, "a", 20, 20, [("cat", (1, 1, 5, 5)), ("zebra", (2, 2, 8, 8))])
    with pytest.raises(UserError, match=r"'zebra'.*a\.xml"):
        read_detection_annotations(tmp_path, classes=["cat", "dog"])
    annotations = read_detection_annotations(tmp_path, classes=["zebra", "dog", "cat"])
    assert annotations.classes == ("zebra", "dog", "cat")
    assert annotations.images[0].labels.tolist() == [3, 1]


def test_coco_degenerate_boxes_crowd_and_background(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "one.jpg", 50, 40)
    write_image(tmp_path / "images" / "two.jpg", 50, 40)
    write_image(tmp_path / "images" / "three.jpg", 50, 40)
    content = {
        "images": [
            {"id": 7, "file_name": "one.jpg", "width": 50, "height": 40},
            {"id": 8, "file_name": "two.jpg", "width": 50, "height": 40},
            {"id": 9, "file_name": "three.jpg", "width": 50, "height": 40},
        ],
        "categories": [{"id": 12, "name": "zebra"}, {"id": 3, "name": "apple"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 12, "bbox": [10, 10, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [40, 30, 20, 20], "iscrowd": 0},  # clipped
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [60, 5, 5, 5], "iscrowd": 0},  # outside
            {"id": 4, "image_id": 7, "category_id": 3, "bbox": [5, 5, 0, 5], "iscrowd": 0},  # zero width
            {"id": 5, "image_id": 8, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},  # crowd
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_default.json").write_text(json.dumps(content))
    annotations = read_detection_annotations(tmp_path)
    assert annotations.format == "coco" and annotations.classes == ("apple", "zebra")  # by category id
    assert annotations.skipped == counts(clipped_boxes=1, dropped_boxes=2, crowd_boxes=1, images_without_boxes=2)
    one = by_name(annotations)["one.jpg"]
    np.testing.assert_allclose(one.boxes, [[10, 10, 20, 20], [40, 30, 50, 40]])
    assert one.labels.tolist() == [2, 1] and one.class_names == ("zebra", "apple")


def test_coco_train_and_val_files_give_the_split(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    for split, names in (("train", ["a.jpg", "b.jpg", "c.jpg"]), ("val", ["d.jpg"])):
        for name in names:
            write_image(tmp_path / "images" / f"{split}2017" / name, 16, 16)
        content = {
            "images": [{"id": index, "file_name": name, "width": 16, "height": 16} for index, name in enumerate(names)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 4, 4]}],
        }
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(content))
    data = load_detection_data(tmp_path, input_size=16)
    assert (len(data.train), len(data.val)) == (3, 1)
    assert "instances_train2017.json and instances_val2017.json" in data.description


def write_yolo_dataset(root: Path) -> None:
    (root / "data.yaml").write_text("names:\n  0: circle\n  1: square\n")
    write_image(root / "images" / "train" / "a.jpg", 40, 20)
    write_image(root / "images" / "train" / "b.png", 40, 20)
    write_image(root / "images" / "train" / "c.jpg", 40, 20)
    write_image(root / "images" / "val" / "d.jpg", 40, 20)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.5 0.5\n"
        "\n"
        "1 0.95 0.5 0.2 0.4\n"  # right edge at 1.05: clipped
        "1 1.5 0.5 0.2 0.2\n"  # entirely outside: dropped
        "1 0 0 0 0.5 0.5 0.5\n"  # a segment: box (0, 0)-(0.5, 0.5)
    )
    (root / "labels" / "train" / "b.txt").write_text("")  # empty: background
    # c.jpg has no label file: background
    (root / "labels" / "val" / "d.txt").write_text("1 0.25 0.25 0.5 0.5\n")
    (root / "labels" / "val" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")


def test_yolo_degenerate_boxes_and_split_folders(tmp_path: Path) -> None:
    write_yolo_dataset(tmp_path)
    annotations = read_detection_annotations(tmp_path)
    assert annotations.format == "yolo" and annotations.classes == ("circle", "square")
    assert annotations.split_source == "images/train and images/val"
    assert annotations.skipped == counts(clipped_boxes=1, dropped_boxes=1, images_without_boxes=2, label_files_without_image=1)
    a = by_name(annotations)["a.jpg"]
    np.testing.assert_allclose(a.boxes, [[10, 5, 30, 15], [34, 6, 40, 14], [0, 0, 20, 10]], atol=1e-4)
    assert a.labels.tolist() == [1, 2, 2]
    data = load_detection_data(tmp_path, input_size=40)
    assert (len(data.train), len(data.val)) == (3, 1)


def test_yolo_bad_class_index_and_bad_lines_name_the_file(tmp_path: Path) -> None:
    write_yolo_dataset(tmp_path)
    label = tmp_path / "labels" / "train" / "a.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"a\.txt line 2: class index 2 is out of range"):
        read_detection_annotations(tmp_path)
    label.write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(UserError, match=r"a\.txt line 1 has 4 fields"):
        read_detection_annotations(tmp_path)
    label.write_text("0 0.5 nan 0.2 0.2\n")
    with pytest.raises(UserError, match=r"a\.txt line 1.*not a finite number"):
        read_detection_annotations(tmp_path)
    label.write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [unclosed\n")
    with pytest.raises(UserError, match=r"data\.yaml is not valid YAML"):
        read_detection_annotations(tmp_path)


def test_yolo_without_names_uses_indices_or_the_classes_passed(tmp_path: Path) -> None:
    write_yolo_dataset(tmp_path)
    (tmp_path / "data.yaml").unlink()
    assert read_detection_annotations(tmp_path).classes == ("0", "1")
    assert read_detection_annotations(tmp_path, classes=["red", "blue"]).classes == ("red", "blue")
    with pytest.raises(UserError, match=r"a\.txt line 3: class index 1 is out of range of the 1 classes"):
        read_detection_annotations(tmp_path, classes=["red"])


def test_yolo_follows_exif_orientation(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, EXIF 6 (turn 90 degrees clockwise): seen 20 wide x 40 high.
    write_image(tmp_path / "images" / "turned.jpg", 40, 20, rectangle=(0, 0, 10, 20), exif_orientation=6)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "turned.txt").write_text("0 0.5 0.125 1.0 0.25\n")  # the top quarter once turned
    write_image(tmp_path / "images" / "plain.jpg", 40, 20)
    annotations = read_detection_annotations(tmp_path)
    turned = by_name(annotations)["turned.jpg"]
    assert (turned.width, turned.height, turned.exif_transpose) == (20, 40, True)
    data = load_detection_data(tmp_path, input_size=40, augment=False, val_fraction=0.5)
    dataset = next(d for d in (data.train, data.val) if d.paths[0].name == "turned.jpg")
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 40, 20)
    assert image[:, :9].mean() > 0.9 and image[:, 11:].mean() < 0.2  # the white band is on top
    np.testing.assert_allclose(target["boxes"].numpy(), [[0, 0, 20, 10]], atol=1e-4)


@pytest.mark.parametrize(
    ("files", "pattern"),
    [
        ({"annotations/a.xml": "<annotation><object>"}, r"a\.xml is not valid XML"),
        ({"annotations/a.xml": "<root/>"}, r"a\.xml has root <root>"),
        (
            {"annotations/a.xml": voc_xml("a.jpg", 8, 8, [("x", (1, 1, 4, 4))]).replace("<ymax>4</ymax>", "<ymax>four</ymax>")},
            r"a\.xml: object 1 <bndbox><ymax> is 'four', not a number",
        ),
        (
            {"annotations/b.xml": voc_xml("missing.jpg", 8, 8, [])},
            r"image .*missing\.jpg of annotation file .*b\.xml does not exist",
        ),
        ({"annotations/instances.json": "{not json"}, r"instances\.json is not valid JSON"),
        (
            {
                "annotations/instances.json": json.dumps(
                    {
                        "images": [{"id": 1, "file_name": "a.jpg"}],
                        "categories": [],
                        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
                    }
                )
            },
            r"instances\.json: annotation 5 refers to category 1",
        ),
        (
            {
                "annotations/instances.json": json.dumps(
                    {"images": [{"id": 1, "file_name": "nope.jpg"}], "categories": [], "annotations": []}
                )
            },
            r"none of the 1 images listed in .*instances\.json exist",
        ),
    ],
)
def test_malformed_files_raise_one_line_errors_naming_them(tmp_path: Path, files: dict[str, str], pattern: str) -> None:
    write_image(tmp_path / "images" / "a.jpg", 8, 8)
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    with pytest.raises(UserError, match=pattern) as caught:
        read_detection_annotations(tmp_path)
    assert "\n" not in str(caught.value)


def test_unreadable_and_undecodable_images_name_the_file(tmp_path: Path) -> None:
    write_voc(tmp_path, "a", 8, 8, [("x", (1, 1, 4, 4))])
    write_voc(tmp_path, "b", 8, 8, [("x", (1, 1, 4, 4))])
    (tmp_path / "images" / "a.jpg").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match=r"image .*a\.jpg cannot be read"):
        read_detection_annotations(tmp_path)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "images" / "a.jpg", quality=95)
    (tmp_path / "annotations" / "a.xml").write_text(voc_xml("a.jpg", 64, 64, [("x", (1, 1, 4, 4))]))
    content = (tmp_path / "images" / "a.jpg").read_bytes()
    (tmp_path / "images" / "a.jpg").write_bytes(content[: len(content) // 2])  # header fine, data truncated
    assert len(read_detection_annotations(tmp_path).images) == 2
    with pytest.raises(UserError, match=r"image .*a\.jpg cannot be decoded"):
        load_detection_data(tmp_path, input_size=64)


def test_declared_size_must_match_the_image(tmp_path: Path) -> None:
    write_voc(tmp_path, "a", 8, 8, [("x", (1, 1, 4, 4))])
    (tmp_path / "annotations" / "a.xml").write_text(voc_xml("a.jpg", 16, 8, [("x", (1, 1, 4, 4))]))
    with pytest.raises(UserError, match=r"declares image a\.jpg as 16x8 but the file is 8x8"):
        read_detection_annotations(tmp_path)


def test_voc_size_declared_for_the_exif_turned_image_turns_it(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high with EXIF 8 (turn 90 degrees counter-clockwise); the XML
    # declares the turned 20x40, so its boxes refer to the turned image.
    write_image(tmp_path / "images" / "a.jpg", 40, 20, rectangle=(30, 0, 40, 20), exif_orientation=8)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(voc_xml("a.jpg", 20, 40, [("x", (0, 0, 20, 10))]))
    write_voc(tmp_path, "b", 20, 40, [("x", (1, 1, 5, 5))])
    image = by_name(read_detection_annotations(tmp_path))["a.jpg"]
    assert (image.width, image.height, image.exif_transpose) == (20, 40, True)
    data = load_detection_data(tmp_path, input_size=40, augment=False, val_fraction=0.5)
    dataset = next(d for d in (data.train, data.val) if d.paths[0].name == "a.jpg")
    pixels, target = dataset[0]
    assert tuple(pixels.shape) == (3, 40, 20)
    assert pixels[:, :9].mean() > 0.9 and pixels[:, 11:].mean() < 0.2  # the stored right band is now on top


def test_bad_folders_and_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"does not exist; expected one of: images/ \+ annotations/\*\.xml"):
        read_detection_annotations(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty\b.*is empty"):
        read_detection_annotations(tmp_path / "empty")
    (tmp_path / "other" / "pictures").mkdir(parents=True)
    with pytest.raises(UserError, match=r"has no known detection layout; expected one of: .*JPEGImages"):
        read_detection_annotations(tmp_path / "other")
    write_voc(tmp_path / "voc", "a", 8, 8, [("x", (1, 1, 4, 4))])
    with pytest.raises(UserError, match=r"format='yaml' is unknown; expected one of auto, voc, coco, yolo"):
        read_detection_annotations(tmp_path / "voc", "yaml")
    with pytest.raises(UserError, match=r"has no COCO layout"):
        read_detection_annotations(tmp_path / "voc", "coco")
    with pytest.raises(UserError, match=r"holds 1 image; a train/val split needs at least 2"):
        load_detection_data(tmp_path / "voc", input_size=32)
    with pytest.raises(UserError, match=r"input_size=8"):
        load_detection_data(None, input_size=8)
    with pytest.raises(UserError, match=r"classes=.*does not match the shapes-detect demo"):
        load_detection_data(None, input_size=32, classes=["a"])


# ----------------------------------------------------------------------------------------
# The shapes-detect demo


def test_demo_is_deterministic_and_prefix_stable() -> None:
    first = demo.render_detection_shapes(12, seed=3)
    again = demo.render_detection_shapes(12, seed=3)
    prefix = demo.render_detection_shapes(5, seed=3)
    other = demo.render_detection_shapes(12, seed=4)
    val = demo.render_detection_shapes(12, seed=3, split="val")
    assert np.array_equal(first.images, again.images)
    assert all(np.array_equal(a, b) for a, b in zip(first.boxes, again.boxes))
    assert np.array_equal(first.images[:5], prefix.images)
    assert not np.array_equal(first.images, other.images) and not np.array_equal(first.images, val.images)


def test_demo_boxes_are_valid_and_varied() -> None:
    rendered = demo.render_detection_shapes(200, seed=0)
    size = demo.DETECTION_DEMO_IMAGE_SIZE
    counts_per_image = [len(labels) for labels in rendered.labels]
    assert min(counts_per_image) >= 1 and max(counts_per_image) == 4
    labels = np.concatenate(rendered.labels)
    assert set(labels.tolist()) == {1, 2, 3}
    boxes = np.concatenate(rendered.boxes)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / size
    assert 0.079 <= sides.min() < 0.12 and 0.4 < sides.max() <= 0.501


def test_demo_shapes_sit_exactly_in_their_boxes() -> None:
    # Without clutter, gradient and noise, every pixel off the background belongs to an object.
    rendered = demo.render_detection_shapes(60, seed=1, nuisances=demo.CLEAN_DETECTION_NUISANCES)
    for image, boxes, background in zip(rendered.images, rendered.boxes, rendered.backgrounds):
        difference = np.abs(image.astype(np.float32) / 255.0 - background).max(axis=2)
        changed = difference > 0.02
        near_any = np.zeros_like(changed)
        for x1, y1, x2, y2 in boxes:
            near_any[max(0, int(y1) - 1) : int(np.ceil(y2)) + 1, max(0, int(x1) - 1) : int(np.ceil(x2)) + 1] = True
            region = changed[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))]
            rows, columns = np.nonzero(region)
            # The visible shape reaches each side of its box (within a pixel and a half).
            assert columns.min() + int(x1) <= x1 + 1.5 and columns.max() + int(x1) + 1 >= x2 - 1.5
            assert rows.min() + int(y1) <= y1 + 1.5 and rows.max() + int(y1) + 1 >= y2 - 1.5
        assert not (changed & ~near_any).any()  # nothing beyond a pixel outside the boxes


def test_demo_objects_stand_out_from_the_local_background() -> None:
    rendered = demo.render_detection_shapes(100, seed=0)
    gaps = []
    for image, boxes in zip(rendered.images, rendered.boxes):
        pixels = image.astype(np.float32) / 255.0
        for x1, y1, x2, y2 in boxes:
            centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
            quarter_x, quarter_y = max(1.0, (x2 - x1) / 6), max(1.0, (y2 - y1) / 6)
            core = (
                pixels[
                    int(centre_y - quarter_y) : int(centre_y + quarter_y) + 1,
                    int(centre_x - quarter_x) : int(centre_x + quarter_x) + 1,
                ]
                .reshape(-1, 3)
                .mean(axis=0)
            )
            top, left = max(0, int(y1) - 3), max(0, int(x1) - 3)
            bottom, right = min(image.shape[0], int(y2) + 4), min(image.shape[1], int(x2) + 4)
            ring = np.ones((bottom - top, right - left), dtype=bool)
            ring[int(y1) - top + 1 : int(y2) - top, int(x1) - left + 1 : int(x2) - left] = False
            surround = np.median(pixels[top:bottom, left:right][ring], axis=0)
            gaps.append(float(np.linalg.norm(core - surround)))
    assert np.median(gaps) > 0.4 and np.mean(np.array(gaps) > 0.2) > 0.95


def test_demo_loads_with_default_sizes_and_resizes() -> None:
    data = load_detection_data(None, input_size=160)
    assert (len(data.train), len(data.val)) == (demo.DETECTION_DEMO_TRAIN_SIZE, demo.DETECTION_DEMO_VAL_SIZE) == (800, 200)
    assert data.classes == ("circle", "square", "triangle") and data.num_classes == 3
    assert data.skipped == counts() and data.description.startswith("shapes-detect")
    small = load_detection_data(None, input_size=80, max_train=10, max_val=5, augment=False)
    assert (len(small.train), len(small.val)) == (10, 5)
    image, target = small.train[3]
    _, reference = data.train[(3, 0)]  # key 0: not flipped
    assert tuple(image.shape) == (3, 80, 80)
    assert torch.allclose(target["boxes"], reference["boxes"] / 2)
    assert target["labels"].dtype == torch.int64 and 1 <= int(target["labels"].min()) and int(target["labels"].max()) <= 3
    assert {small.train[index][1]["image_id"] for index in range(10)}.isdisjoint(
        {small.val[index][1]["image_id"] for index in range(5)}
    )


# ----------------------------------------------------------------------------------------
# Loader, collate and the horizontal flip


def test_loader_batches_are_lists_and_reproducible() -> None:
    data = load_detection_data(None, input_size=64, max_train=40, max_val=10)
    loader = make_detection_loader(data.train, batch_size=8, shuffle=True, seed=5)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and len(images) == 8 and len(targets) == 8
    assert all(tuple(image.shape) == (3, 64, 64) and image.dtype == torch.float32 for image in images)
    assert all(set(target) == {"boxes", "labels", "image_id"} and target["boxes"].shape[1] == 4 for target in targets)

    def epochs(seed: int) -> list[list[tuple[int, tuple[float, ...]]]]:
        loader = make_detection_loader(data.train, batch_size=8, shuffle=True, seed=seed)
        return [
            [(target["image_id"], tuple(target["boxes"][0].tolist())) for _, batch in loader for target in batch]
            for _ in range(2)
        ]

    first, again, other = epochs(5), epochs(5), epochs(6)
    assert first == again and first != other
    assert first[0] != first[1]  # a new order and new flips each epoch
    assert sorted(item[0] for item in first[0]) == sorted(item[0] for item in first[1])

    validation = make_detection_loader(data.val, batch_size=4, shuffle=False, seed=0)
    assert [target["image_id"] for _, batch in validation for target in batch] == data.val.image_ids
    assert detection_collate([(images[0], targets[0])]) == ([images[0]], [targets[0]])


def test_loader_workers_give_the_same_batches() -> None:
    data = load_detection_data(None, input_size=48, max_train=16, max_val=2)

    def items(workers: int) -> list:
        loader = make_detection_loader(data.train, batch_size=4, shuffle=True, seed=2, num_workers=workers)
        return [
            (target["image_id"], target["boxes"].sum().item(), image.sum().item())
            for images, batch in loader
            for image, target in zip(images, batch)
        ]

    assert items(0) == items(1)


def test_set_epoch_replays_an_epoch() -> None:
    data = load_detection_data(None, input_size=64, max_train=24, max_val=4)
    loader = make_detection_loader(data.train, batch_size=6, shuffle=True, seed=1)

    def run(epoch: int) -> list:
        loader.sampler.set_epoch(epoch)
        loader.generator.manual_seed(100 + epoch)
        return [(target["image_id"], target["boxes"].sum().item()) for _, batch in loader for target in batch]

    assert run(3) == run(3) and run(3) != run(4)


def test_horizontal_flip_moves_boxes_with_the_pixels() -> None:
    data = load_detection_data(None, input_size=96, max_train=30, max_val=2)
    train = data.train
    assert train.flip and not data.val.flip
    for index in range(5):
        plain_image, plain = train[(index, 0)]
        flipped_image, flipped = train[(index, 1)]
        width = plain_image.shape[-1]
        assert torch.equal(flipped_image, plain_image.flip(-1))
        expected = plain["boxes"].clone()
        expected[:, 0], expected[:, 2] = width - plain["boxes"][:, 2], width - plain["boxes"][:, 0]
        assert torch.allclose(flipped["boxes"], expected)
        assert torch.equal(flipped["labels"], plain["labels"])
    # Direct indexing flips about half of the items, the same way every time.
    decisions = [not torch.equal(train[index][0], train[(index, 0)][0]) for index in range(30)]
    assert 8 <= sum(decisions) <= 22
    assert decisions == [not torch.equal(train[index][0], train[(index, 0)][0]) for index in range(30)]
    # Validation items are never flipped.
    assert torch.equal(data.val[0][0], data.val[(0, 1)][0])

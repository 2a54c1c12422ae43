"""``shapes-detect``: a built-in, procedurally rendered object-detection demo that needs no download.

``shapes-detect`` is rendered in memory from a seed: 160x160 images, each holding 1 to 4
filled shapes of 3 classes (circle, square, triangle) with exact boxes, drawn over
cluttered gradient backgrounds with pixel noise. The default split is 800 train and
200 val images, and rendering it is quick on one CPU core (timing in
``benchmarks/RESULTS.md``).

=====  ============  ==========================================================
label  class         what it looks like
=====  ============  ==========================================================
1      ``circle``    a filled disk
2      ``square``    a filled square, rotated by any angle (a diamond at 45 degrees)
3      ``triangle``  a filled equilateral triangle, rotated by any angle
=====  ============  ==========================================================

Labels follow the detection conventions (1..C, 0 is background). Each image gets the
following, all drawn per image (ranges in :class:`DetectionNuisances`):

* a background: a random middle colour with a linear gradient of up to 0.35 in a random
  direction, plus clutter drawn behind the objects, made of 0 to 6 thin strokes (1 to 2.5 px
  wide) and 0 to 8 small dots (at most 5 px across, well under the smallest object), in
  random colours;
* 1 to 4 objects with uniformly drawn classes. Each object's box side (its larger one for
  triangles) is log-uniform between 8% and 50% of the image side, so small and large
  objects are equally common. Each object has a random position fully inside the image and
  a colour at RGB distance 0.35 to 0.8 from the background's middle colour. Objects are
  drawn largest first, and a new object whose box overlaps an earlier one with an IoU
  above 0.25 is placed again (or left out after a few tries), so no object is hidden;
* Gaussian pixel noise with a standard deviation of 0.01 to 0.05 (pixels in [0, 1]), read
  from a random window of a block of noise drawn once per seed.

Boxes are exact: they are the axis-aligned extent of the geometric shape (a circle's centre
plus or minus its radius, the extreme vertices of a rotated square or triangle) in
continuous pixel coordinates, where pixel ``(row, column)`` covers ``[column, column + 1]``
horizontally. Shapes are rendered with analytic anti-aliasing from signed distances, so
the visible edge of a shape lies within a pixel of its box. Colour carries no information
about the class, only geometry does.

Determinism: image ``i`` of a split comes from its own numpy generator seeded by
``(seed, split, i)``, (and a block of noise seeded by ``seed``), so it depends only on
``(seed, split, i, size, nuisances)``. The
first ``k`` images of a split are the same whatever the total count, and train and val
never share an image.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from nas_search.errors import UserError

DETECTION_DEMO_NAME = "shapes-detect"
"""Name of the built-in detection demo, as shown in descriptions and logs."""

DETECTION_SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
"""Class names of ``shapes-detect``; class ``k`` (0-based here) has label ``k + 1``."""

DETECTION_DEMO_SEED = 0
"""Seed of the shipped ``shapes-detect`` (fixed, so that mAPs are comparable between runs)."""

DETECTION_DEMO_IMAGE_SIZE = 160
"""Side of the rendered images, in pixels (the loader then resizes them to ``input_size``)."""

DETECTION_DEMO_TRAIN_SIZE = 800
"""Default number of training images."""

DETECTION_DEMO_VAL_SIZE = 200
"""Default number of validation images."""

DETECTION_SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
"""Seed component of each split, so that train and val images never coincide."""

NOISE_BANK_IMAGES = 8
"""Images' worth of Gaussian noise drawn once per seed and size (see :func:`_noise_bank`)."""

_DEMO_STREAM = 0x5D37
"""Seed component that keeps this demo's streams apart from ``shapes10``'s."""


@dataclasses.dataclass(frozen=True)
class DetectionNuisances:
    """Ranges of what varies between images; :data:`DEFAULT_DETECTION_NUISANCES` defines
    ``shapes-detect``, and :data:`CLEAN_DETECTION_NUISANCES` turns off everything that is not
    an object (useful to check boxes against pixels)."""

    objects: tuple[int, int] = (1, 4)
    """Smallest and largest number of objects per image (inclusive)."""
    object_size: tuple[float, float] = (0.08, 0.5)
    """Range of an object's box side (the larger side), as a fraction of the image side;
    drawn log-uniformly."""
    contrast: tuple[float, float] = (0.35, 0.8)
    """Range of the RGB distance (channels in [0, 1]) between an object's colour and the
    background's middle colour."""
    background_gradient: float = 0.35
    """Largest colour change across the background gradient."""
    strokes: tuple[int, int] = (0, 6)
    """Range of the number of clutter strokes (inclusive)."""
    stroke_width: tuple[float, float] = (1.0, 2.5)
    """Range of a stroke's width, in pixels."""
    dots: tuple[int, int] = (0, 8)
    """Range of the number of clutter dots (inclusive)."""
    dot_radius: tuple[float, float] = (0.75, 2.5)
    """Range of a dot's radius, in pixels."""
    noise: tuple[float, float] = (0.01, 0.05)
    """Range of the per-image standard deviation of the Gaussian pixel noise."""
    largest_overlap: float = 0.25
    """Largest IoU allowed between two objects' boxes."""
    placement_tries: int = 8
    """Attempts to place an object before it is left out."""


DEFAULT_DETECTION_NUISANCES = DetectionNuisances()
CLEAN_DETECTION_NUISANCES = DetectionNuisances(background_gradient=0.0, strokes=(0, 0), dots=(0, 0), noise=(0.0, 0.0))


@dataclasses.dataclass(frozen=True)
class RenderedDetection:
    """Rendered demo images with their objects."""

    images: np.ndarray
    """``uint8`` array ``(count, size, size, 3)``."""
    boxes: tuple[np.ndarray, ...]
    """Per image, ``float32`` boxes ``(N, 4)`` as ``x1, y1, x2, y2`` in pixels."""
    labels: tuple[np.ndarray, ...]
    """Per image, ``int64`` labels ``(N,)`` in 1..3 (see :data:`DETECTION_SHAPE_CLASSES`)."""
    backgrounds: np.ndarray
    """``float32`` array ``(count, 3)``: each image's background middle colour in [0, 1]."""


# ----------------------------------------------------------------------------------------
# Shapes: each returns the polygon's vertices (or None for a circle) for a box side.


def _polygon(sides: int, angle: float, box_side: float) -> np.ndarray:
    """Vertices ``(sides, 2)`` of a regular polygon centred on its box's centre, rotated by
    ``angle`` and scaled so that its box's larger side equals ``box_side``."""
    turns = angle + 2.0 * math.pi * np.arange(sides) / sides
    vertices = np.stack([np.cos(turns), np.sin(turns)], axis=1)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    vertices = vertices - (low + high) / 2.0
    return vertices * (box_side / float((high - low).max()))


def _polygon_distance(vertices: np.ndarray, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Signed distance to a convex polygon (exact inside and along edges, a close lower
    bound near outside corners); vertices in counter-clockwise order of angle."""
    distance = np.full(np.broadcast(columns, rows).shape, -np.inf, dtype=np.float32)
    for start, end in zip(vertices, np.roll(vertices, -1, axis=0)):
        edge = end - start
        normal = np.array([edge[1], -edge[0]]) / math.hypot(edge[0], edge[1])  # outward for CCW in y-down
        distance = np.maximum(distance, (columns - start[0]) * normal[0] + (rows - start[1]) * normal[1])
    return distance


def _circle_distance(columns: np.ndarray, rows: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance of pixel centres to a circle (negative inside)."""
    return np.hypot(columns - centre[0], rows - centre[1]) - radius


def _circle_shape(rng: np.random.Generator, box_side: float) -> np.ndarray | None:
    return None


def _square_shape(rng: np.random.Generator, box_side: float) -> np.ndarray | None:
    return _polygon(4, rng.uniform(0.0, math.pi / 2.0), box_side)


def _triangle_shape(rng: np.random.Generator, box_side: float) -> np.ndarray | None:
    return _polygon(3, rng.uniform(0.0, 2.0 * math.pi), box_side)


SHAPE_OUTLINES = {"circle": _circle_shape, "square": _square_shape, "triangle": _triangle_shape}
"""Per class: a function ``(rng, box_side) -> vertices`` centred on the box centre, or
``None`` for a circle of diameter ``box_side``."""


# ----------------------------------------------------------------------------------------
# Drawing


def _contrasting_colour(rng: np.random.Generator, reference: np.ndarray, contrast: tuple[float, float]) -> np.ndarray:
    """A colour at a random distance in ``contrast`` from ``reference``, mirroring any channel
    that would leave [0, 1] so that clipping does not eat the contrast."""
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction) + 1e-6
    step = direction * rng.uniform(*contrast)
    step = np.where((reference + step < 0.0) | (reference + step > 1.0), -step, step)
    return np.clip(reference + step, 0.0, 1.0)


def _blend(canvas: np.ndarray, box: tuple[float, float, float, float], distance_function, colour: np.ndarray) -> None:
    """Anti-aliased fill of the pixels near ``box`` where ``distance_function(columns, rows)``
    (signed distance in pixels, negative inside) is negative."""
    size = canvas.shape[0]
    left, top = max(0, int(math.floor(box[0])) - 1), max(0, int(math.floor(box[1])) - 1)
    right, bottom = min(size, int(math.ceil(box[2])) + 1), min(size, int(math.ceil(box[3])) + 1)
    if right <= left or bottom <= top:
        return
    columns = np.arange(left, right, dtype=np.float32)[None, :] + 0.5
    rows = np.arange(top, bottom, dtype=np.float32)[:, None] + 0.5
    coverage = np.clip(0.5 - distance_function(columns, rows), 0.0, 1.0)[..., None]
    patch = canvas[top:bottom, left:right]
    patch *= 1.0 - coverage
    patch += coverage * colour


def _box_iou(box: np.ndarray, others: list[np.ndarray]) -> float:
    if not others:
        return 0.0
    stacked = np.stack(others)
    width = np.clip(np.minimum(box[2], stacked[:, 2]) - np.maximum(box[0], stacked[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], stacked[:, 3]) - np.maximum(box[1], stacked[:, 1]), 0.0, None)
    intersection = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (stacked[:, 2] - stacked[:, 0]) * (stacked[:, 3] - stacked[:, 1])
    return float((intersection / (area + areas - intersection)).max())


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray, nuisances: DetectionNuisances) -> None:
    size = canvas.shape[0]
    for _ in range(int(rng.integers(nuisances.strokes[0], nuisances.strokes[1] + 1))):
        start = rng.uniform(0.0, size, 2)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        length = rng.uniform(0.1, 0.6) * size
        end = start + length * np.array([math.cos(angle), math.sin(angle)])
        half_width = rng.uniform(*nuisances.stroke_width) / 2.0
        colour = rng.uniform(0.0, 1.0, 3)
        direction = (end - start) / length

        def stroke(
            columns: np.ndarray, rows: np.ndarray, start=start, direction=direction, length=length, half_width=half_width
        ) -> np.ndarray:
            along = np.clip((columns - start[0]) * direction[0] + (rows - start[1]) * direction[1], 0.0, length)
            return np.hypot(columns - start[0] - along * direction[0], rows - start[1] - along * direction[1]) - half_width

        low, high = np.minimum(start, end) - half_width, np.maximum(start, end) + half_width
        _blend(canvas, (low[0], low[1], high[0], high[1]), stroke, colour)
    for _ in range(int(rng.integers(nuisances.dots[0], nuisances.dots[1] + 1))):
        centre = rng.uniform(0.0, size, 2)
        radius = rng.uniform(*nuisances.dot_radius)
        colour = rng.uniform(0.0, 1.0, 3)

        def dot(columns: np.ndarray, rows: np.ndarray, centre=centre, radius=radius) -> np.ndarray:
            return np.hypot(columns - centre[0], rows - centre[1]) - radius

        _blend(canvas, (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius), dot, colour)


def _render_image(
    rng: np.random.Generator, size: int, nuisances: DetectionNuisances, noise_bank: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image: ``(uint8 (size, size, 3), boxes (N, 4), labels (N,), background (3,))``.
    The pixel noise is a random window of ``noise_bank`` (standard normal values)."""
    background = rng.uniform(0.1, 0.9, 3)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction) + 1e-6
    strength = rng.uniform(0.0, nuisances.background_gradient)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5  # -0.5 .. 0.5
    ramp = math.cos(angle) * axis[None, :] + math.sin(angle) * axis[:, None]  # about -0.7 .. 0.7
    canvas = background.astype(np.float32) + ramp[..., None] * (strength * direction).astype(np.float32)

    _draw_clutter(rng, canvas, nuisances)

    count = int(rng.integers(nuisances.objects[0], nuisances.objects[1] + 1))
    classes = rng.integers(0, len(DETECTION_SHAPE_CLASSES), count)
    low, high = (math.log(fraction * size) for fraction in nuisances.object_size)
    sides = np.sort(np.exp(rng.uniform(low, high, count)))[::-1]  # largest first
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for class_index, side in zip(classes, sides):
        name = DETECTION_SHAPE_CLASSES[int(class_index)]
        vertices = SHAPE_OUTLINES[name](rng, float(side))
        half = np.full(2, side / 2.0) if vertices is None else (vertices.max(axis=0) - vertices.min(axis=0)) / 2.0
        colour = _contrasting_colour(rng, background, nuisances.contrast)
        for _ in range(nuisances.placement_tries):
            centre = np.array([rng.uniform(half[0], size - half[0]), rng.uniform(half[1], size - half[1])])
            box = np.concatenate([centre - half, centre + half])
            if _box_iou(box, boxes) <= nuisances.largest_overlap:
                break
        else:
            continue
        distance: Callable[[np.ndarray, np.ndarray], np.ndarray]
        if vertices is None:
            distance = functools.partial(_circle_distance, centre=centre, radius=side / 2.0)
        else:
            distance = functools.partial(_polygon_distance, vertices + centre)
        _blend(canvas, tuple(box), distance, colour)
        boxes.append(box)
        labels.append(int(class_index) + 1)

    noise = rng.uniform(*nuisances.noise)
    if noise > 0.0:
        start = int(rng.integers(0, noise_bank.size - canvas.size + 1))
        canvas += noise_bank[start : start + canvas.size].reshape(canvas.shape) * np.float32(noise)
    canvas *= np.float32(255.0)
    canvas += np.float32(0.5)
    image = np.clip(canvas, 0.0, 255.0, out=canvas).astype(np.uint8)
    box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return image, box_array, np.asarray(labels, dtype=np.int64), background.astype(np.float32)


@functools.lru_cache(maxsize=2)
def _noise_bank(seed: int, size: int) -> np.ndarray:
    """Standard normal values shared by a seed's images, each image reading its own random
    window (drawing fresh noise per image would take most of the rendering time)."""
    length = NOISE_BANK_IMAGES * size * size * 3
    return np.random.default_rng([seed, _DEMO_STREAM, 0xA015E]).standard_normal(length, dtype=np.float32)


def render_detection_shapes(
    count: int,
    *,
    size: int = DETECTION_DEMO_IMAGE_SIZE,
    seed: int = DETECTION_DEMO_SEED,
    split: str = "train",
    nuisances: DetectionNuisances = DEFAULT_DETECTION_NUISANCES,
) -> RenderedDetection:
    """Render ``count`` images of ``shapes-detect`` (see the module docstring).

    The result depends only on the arguments; image ``i`` is the same for any ``count > i``.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"demo image count {count!r} is invalid; expected a positive integer")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise UserError(f"demo image size {size!r} is invalid; expected an integer of at least 32 pixels")
    if split not in DETECTION_SPLIT_CODES:
        raise UserError(f"demo split {split!r} is unknown; expected one of {', '.join(DETECTION_SPLIT_CODES)}")
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    boxes: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    backgrounds = np.empty((count, 3), dtype=np.float32)
    noise_bank = _noise_bank(seed, size)
    for index in range(count):
        rng = np.random.default_rng([seed, _DEMO_STREAM, DETECTION_SPLIT_CODES[split], index])
        images[index], image_boxes, image_labels, backgrounds[index] = _render_image(rng, size, nuisances, noise_bank)
        boxes.append(image_boxes)
        labels.append(image_labels)
    return RenderedDetection(images, tuple(boxes), tuple(labels), backgrounds)


@functools.lru_cache(maxsize=4)
def demo_detection_split(count: int, seed: int, split: str) -> RenderedDetection:
    """Cached :func:`render_detection_shapes` at the demo size. Callers must not modify the
    returned arrays (they are shared)."""
    return render_detection_shapes(count, size=DETECTION_DEMO_IMAGE_SIZE, seed=seed, split=split)

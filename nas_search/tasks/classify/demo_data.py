"""``shapes10``: a built-in, procedurally rendered demo dataset that needs no download.

Each image shows one large foreground shape from ten classes, drawn at a random position,
scale, rotation and mild stretch, over a cluttered background:

=====  ================  ==========================================================
label  class             what it looks like (before the nuisances below)
=====  ================  ==========================================================
0      ``disk``          a filled circle
1      ``ring``          an annulus (a circle with a hole)
2      ``square``        a filled square
3      ``frame``         a hollow square outline
4      ``triangle``      a filled equilateral triangle
5      ``cross``         a plus sign made of two bars
6      ``star``          a five-pointed star
7      ``crescent``      a disk with an off-centre bite taken out
8      ``hexagon``       a filled regular hexagon (a fine-grained neighbour of ``disk``)
9      ``ell``           an L made of two bars at a right angle
=====  ================  ==========================================================

Nuisance factors, all drawn per image (ranges in :class:`Nuisances`): the shape's centre (up
to 0.4 of the half-width from the middle), radius (0.35 to 0.75 of the half-width), rotation
(any angle), anisotropic stretch (0.85 to 1.15); the background, a random colour with a
linear gradient of up to 0.3 in a random direction; the foreground colour, a random colour at
RGB distance 0.4 to 0.8 from the background (30% of the shapes are filled with stripes of two
colours instead); up to four distractors (thin strokes, small blobs, small squares) in random
colours, three slots behind the shape and one over it (occluding it), each filled with
probability 0.4; and Gaussian pixel noise with a standard deviation of 0.02 to 0.08. Colour
carries no information about the class, only geometry does, so a network has to learn shape.

How hard it is (chance is 10%): small CNNs learn it within a few CPU epochs without
saturating it, and networks of different sizes reach clearly different accuracies; the
figures are in ``benchmarks/RESULTS.md``.

Rendering uses signed distance functions on the pixel grid with analytic anti-aliasing, so
images are rendered natively at the requested size (up to :data:`MAX_RENDER_SIZE`; larger
inputs are rendered at that size and resized by the transforms). Rendering is vectorised with
numpy, fast enough to render a demo split on the fly (timing in ``benchmarks/RESULTS.md``).

Determinism: every random quantity comes from its own numpy stream seeded by
``(seed, split, quantity)`` and is drawn with the image index as the leading axis, so image
``i`` of a split depends only on ``(seed, split, i, size)``. In particular the first ``k``
images of a split are the same whatever the total count, and labels are assigned in blocks
of ten that each hold every class once, so any prefix is class-balanced to within one image.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections.abc import Callable

import numpy as np
import torch

from nas_search.errors import UserError

DEMO_NAME = "shapes10"
"""Name of the built-in demo dataset, as shown in descriptions and logs."""

SHAPE_CLASSES: tuple[str, ...] = ("disk", "ring", "square", "frame", "triangle", "cross", "star", "crescent", "hexagon", "ell")
"""Class names of ``shapes10``, in label order."""

DEMO_SEED = 0
"""Seed of the shipped ``shapes10`` (fixed, so that accuracies are comparable between runs)."""

DEMO_TRAIN_SIZE = 5000
"""Default number of training images."""

DEMO_VAL_SIZE = 1000
"""Default number of validation images."""

MAX_RENDER_SIZE = 64
"""Largest size rendered natively; larger input sizes are resized from this."""

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
"""Seed component of each split, so that train and val images never coincide."""


@dataclasses.dataclass(frozen=True)
class Nuisances:
    """Ranges of the nuisance factors; :data:`DEFAULT_NUISANCES` defines ``shapes10``."""

    shape_offset: float = 0.4
    """Largest offset of the shape's centre from the image centre (the half-width is 1)."""
    scale: tuple[float, float] = (0.35, 0.75)
    """Shape radius range, as a fraction of the half-width."""
    rotation: float = 180.0
    """Largest rotation of the shape away from upright, in degrees either way."""
    stretch: tuple[float, float] = (0.85, 1.15)
    """Anisotropic stretch range."""
    contrast: tuple[float, float] = (0.4, 0.8)
    """Range of the distance (in RGB, channels in [0, 1]) between the shape colour and the
    background's middle colour."""
    background_gradient: float = 0.3
    """Largest colour change across the background gradient."""
    striped_probability: float = 0.3
    """Share of shapes filled with two-colour stripes."""
    distractors_behind: int = 3
    """Distractor slots drawn behind the shape."""
    distractors_in_front: int = 1
    """Distractor slots drawn over the shape."""
    distractor_probability: float = 0.4
    """Chance that each distractor slot is filled."""
    distractor_scale: tuple[float, float] = (0.15, 0.35)
    """Distractor size range."""
    noise: tuple[float, float] = (0.02, 0.08)
    """Range of the per-image standard deviation of the Gaussian pixel noise (pixels in [0, 1])."""


DEFAULT_NUISANCES = Nuisances()

SignedDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------
# Signed distance functions in shape-local coordinates (the shape's radius is about 1).
# Negative inside, positive outside, in the same units as the coordinates.


def _box(horizontal: np.ndarray, vertical: np.ndarray, half_width: float, half_height: float) -> np.ndarray:
    """Exact signed distance to an axis-aligned box centred on the origin."""
    outside_horizontal = np.abs(horizontal) - half_width
    outside_vertical = np.abs(vertical) - half_height
    outside = np.hypot(np.maximum(outside_horizontal, 0.0), np.maximum(outside_vertical, 0.0))
    inside = np.minimum(np.maximum(outside_horizontal, outside_vertical), 0.0)
    return outside + inside


def _regular_polygon(horizontal: np.ndarray, vertical: np.ndarray, sides: int) -> np.ndarray:
    """Signed distance (exact inside, a close bound outside) to a regular polygon of circumradius 1."""
    apothem = math.cos(math.pi / sides)
    distance = np.full(horizontal.shape, -np.inf, dtype=horizontal.dtype)
    for side in range(sides):
        angle = 2.0 * math.pi * side / sides
        distance = np.maximum(distance, horizontal * math.cos(angle) + vertical * math.sin(angle))
    return distance - apothem


def _disk(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return np.hypot(horizontal, vertical) - 1.0


def _ring(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return np.abs(np.hypot(horizontal, vertical) - 0.74) - 0.26


def _square(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return _box(horizontal, vertical, 0.78, 0.78)


def _frame(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return np.abs(_box(horizontal, vertical, 0.62, 0.62)) - 0.2


def _triangle(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    # Shifted so that the triangle's area is centred like the other shapes.
    return _regular_polygon(horizontal + 0.1, vertical, 3) * 1.15


def _cross(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return np.minimum(_box(horizontal, vertical, 1.0, 0.27), _box(horizontal, vertical, 0.27, 1.0))


def _star(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    points = 5
    inner_radius = 0.45
    angle = np.arctan2(vertical, horizontal)
    phase = angle * (points / (2.0 * math.pi))
    tip_closeness = np.abs(phase - np.floor(phase) - 0.5) * 2.0  # 1 at a tip, 0 between tips
    boundary = inner_radius + (1.0 - inner_radius) * tip_closeness
    return (np.hypot(horizontal, vertical) - boundary) * 0.55


def _crescent(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    bite = np.hypot(horizontal - 0.5, vertical) - 0.8
    return np.maximum(np.hypot(horizontal, vertical) - 1.0, -bite)


def _hexagon(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return _regular_polygon(horizontal, vertical, 6)


def _ell(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    upright = _box(horizontal + 0.45, vertical, 0.27, 0.95)
    foot = _box(horizontal - 0.05, vertical - 0.68, 0.77, 0.27)
    return np.minimum(upright, foot)


SHAPE_DISTANCES: dict[str, SignedDistance] = {
    "disk": _disk,
    "ring": _ring,
    "square": _square,
    "frame": _frame,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
    "crescent": _crescent,
    "hexagon": _hexagon,
    "ell": _ell,
}
"""Signed distance function of each class, in shape-local coordinates."""


# Distractors are defined in image coordinates relative to their own centre, scaled by size.
def _stroke(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return _box(horizontal, vertical, 1.0, 0.06)


def _blob(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return np.hypot(horizontal, vertical) - 0.3


def _speck(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    return _box(horizontal, vertical, 0.25, 0.25)


DISTRACTOR_DISTANCES: tuple[SignedDistance, ...] = (_stroke, _stroke, _blob, _speck)
"""Distractor kinds, drawn uniformly (strokes twice as often as the others)."""


# ----------------------------------------------------------------------------------------
# Rendering


class _Streams:
    """Independent, prefix-stable random streams, one per named quantity."""

    def __init__(self, seed: int, split: str, count: int) -> None:
        self.seed = seed
        self.split_code = SPLIT_CODES[split]
        self.count = count

    def generator(self, quantity: str) -> np.random.Generator:
        """The stream of one quantity; a stable hash of its name keeps it independent of the
        order in which quantities are drawn."""
        return np.random.default_rng([self.seed, self.split_code, zlib.crc32(quantity.encode("utf-8"))])

    def uniform(self, quantity: str, *shape: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """Uniform floats of shape ``(count, *shape)`` in ``[low, high)``."""
        values = self.generator(quantity).random((self.count, *shape), dtype=np.float64)
        return (low + (high - low) * values).astype(np.float32)

    def normal(self, quantity: str, *shape: int) -> np.ndarray:
        """Standard normal floats of shape ``(count, *shape)``."""
        return self.generator(quantity).standard_normal((self.count, *shape), dtype=np.float32)

    def choice(self, quantity: str, options: int, *shape: int) -> np.ndarray:
        """Uniform integers in ``[0, options)`` of shape ``(count, *shape)``."""
        values = self.generator(quantity).random((self.count, *shape))
        return np.minimum((values * options).astype(np.int64), options - 1)


def _balanced_labels(streams: _Streams, count: int) -> np.ndarray:
    """Labels in blocks of ten, each block a random permutation of all classes."""
    class_count = len(SHAPE_CLASSES)
    blocks = -(-count // class_count)
    keys = streams.generator("labels").random((blocks, class_count))
    return np.argsort(keys, axis=1).reshape(-1)[:count].astype(np.int64)


def _coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance measured in image units."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)


def _composite(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Blend ``colour`` (broadcastable to the canvas) into ``canvas`` with coverage ``alpha`` in place."""
    alpha = alpha[..., None]
    canvas *= 1.0 - alpha
    canvas += alpha * colour


def _unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length."""
    return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-6)


def _contrasting_colour(reference: np.ndarray, direction: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """A colour at distance ``contrast`` from ``reference`` along ``direction``, mirroring any
    channel that would leave [0, 1] so that clipping does not eat the contrast."""
    step = direction * contrast[:, None]
    mirrored = np.where((reference + step < 0.0) | (reference + step > 1.0), -step, step)
    return np.clip(reference + mirrored, 0.0, 1.0)


def _local_coordinates(
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    centre_x: np.ndarray,
    centre_y: np.ndarray,
    angle: np.ndarray,
    scale: np.ndarray,
    stretch: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate, scale and stretch the pixel grid into per-image local coordinates."""
    offset_x = grid_x[None] - centre_x[:, None, None]
    offset_y = grid_y[None] - centre_y[:, None, None]
    cosine = np.cos(angle)[:, None, None]
    sine = np.sin(angle)[:, None, None]
    horizontal = (cosine * offset_x + sine * offset_y) / scale[:, None, None]
    vertical = (cosine * offset_y - sine * offset_x) / scale[:, None, None]
    if not np.isscalar(stretch):
        stretch = np.asarray(stretch)[:, None, None]
    return horizontal * stretch, vertical / stretch


def _check_render_options(count: int, size: int, split: str) -> None:
    if not isinstance(count, int) or count < 1:
        raise UserError(f"demo image count {count!r} is invalid; expected a positive integer")
    if not isinstance(size, int) or size < 8:
        raise UserError(f"demo image size {size!r} is invalid; expected an integer of at least 8 pixels")
    if split not in SPLIT_CODES:
        raise UserError(f"demo split {split!r} is unknown; expected one of {', '.join(SPLIT_CODES)}")


def _background(
    streams: _Streams, nuisances: Nuisances, grid_x: np.ndarray, grid_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(canvas, middle colour)``: a linear gradient across a random middle colour, in a random direction."""
    background_middle = streams.uniform("background_middle", 3, low=0.15, high=0.85)
    gradient_direction = _unit_vectors(streams.normal("background_gradient_direction", 3))
    gradient_strength = streams.uniform("background_gradient_strength", high=nuisances.background_gradient)
    gradient_angle = streams.uniform("background_angle", high=2.0 * math.pi)
    ramp = (
        np.cos(gradient_angle)[:, None, None] * grid_x[None] + np.sin(gradient_angle)[:, None, None] * grid_y[None]
    )  # -1.4 .. 1.4 across the image
    gradient = gradient_direction * gradient_strength[:, None]
    canvas = background_middle[:, None, None, :] + ramp[..., None] * (0.5 * gradient)[:, None, None, :]
    return canvas, background_middle


def _draw_distractors(
    canvas: np.ndarray,
    streams: _Streams,
    nuisances: Nuisances,
    group: str,
    slots: int,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    pixel: float,
) -> None:
    """Draw up to ``slots`` distractors per image onto ``canvas`` (in place)."""
    present = streams.uniform(f"{group}_present", slots) < nuisances.distractor_probability
    kinds = streams.choice(f"{group}_kind", len(DISTRACTOR_DISTANCES), slots)
    centres_x = streams.uniform(f"{group}_x", slots, low=-1.0, high=1.0)
    centres_y = streams.uniform(f"{group}_y", slots, low=-1.0, high=1.0)
    angles = streams.uniform(f"{group}_angle", slots, high=2.0 * math.pi)
    scales = streams.uniform(f"{group}_scale", slots, low=nuisances.distractor_scale[0], high=nuisances.distractor_scale[1])
    colours = streams.uniform(f"{group}_colour", slots, 3)
    for slot in range(slots):
        for kind, distance_function in enumerate(DISTRACTOR_DISTANCES):
            chosen = np.flatnonzero(present[:, slot] & (kinds[:, slot] == kind))
            if chosen.size == 0:
                continue
            horizontal, vertical = _local_coordinates(
                grid_x, grid_y, centres_x[chosen, slot], centres_y[chosen, slot], angles[chosen, slot], scales[chosen, slot]
            )
            distance = distance_function(horizontal, vertical) * scales[chosen, slot][:, None, None]
            blended = canvas[chosen]
            _composite(blended, _coverage(distance, pixel), colours[chosen, slot][:, None, None, :])
            canvas[chosen] = blended


def _draw_shapes(
    canvas: np.ndarray,
    streams: _Streams,
    nuisances: Nuisances,
    labels: np.ndarray,
    background_middle: np.ndarray,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    pixel: float,
) -> None:
    """Draw each image's foreground shape of class ``labels[i]`` onto ``canvas`` (in place)."""
    offset = nuisances.shape_offset
    centre_x = streams.uniform("shape_x", low=-offset, high=offset)
    centre_y = streams.uniform("shape_y", low=-offset, high=offset)
    largest_angle = math.radians(nuisances.rotation)
    angle = streams.uniform("shape_angle", low=-largest_angle, high=largest_angle)
    scale = streams.uniform("shape_scale", low=nuisances.scale[0], high=nuisances.scale[1])
    stretch = streams.uniform("shape_stretch", low=nuisances.stretch[0], high=nuisances.stretch[1])
    direction = _unit_vectors(streams.normal("shape_colour_direction", 3))
    contrast = streams.uniform("shape_contrast", low=nuisances.contrast[0], high=nuisances.contrast[1])
    colour = _contrasting_colour(background_middle, direction, contrast)
    striped = streams.uniform("shape_striped") < nuisances.striped_probability
    stripe_colour = streams.uniform("shape_stripe_colour", 3)
    stripe_angle = streams.uniform("shape_stripe_angle", high=2.0 * math.pi)
    stripe_frequency = streams.uniform("shape_stripe_frequency", low=2.0, high=5.0)

    horizontal, vertical = _local_coordinates(grid_x, grid_y, centre_x, centre_y, angle, scale, stretch)
    for label, name in enumerate(SHAPE_CLASSES):
        chosen = np.flatnonzero(labels == label)
        if chosen.size == 0:
            continue
        distance = SHAPE_DISTANCES[name](horizontal[chosen], vertical[chosen]) * scale[chosen, None, None]
        alpha = _coverage(distance, pixel)
        stripes = (
            np.cos(
                (
                    np.cos(stripe_angle[chosen])[:, None, None] * horizontal[chosen]
                    + np.sin(stripe_angle[chosen])[:, None, None] * vertical[chosen]
                )
                * (math.pi * stripe_frequency[chosen])[:, None, None]
            )
            > 0.0
        )
        use_stripe = (stripes & striped[chosen, None, None])[..., None]
        fill = np.where(use_stripe, stripe_colour[chosen, None, None, :], colour[chosen, None, None, :])
        blended = canvas[chosen]
        _composite(blended, alpha, fill)
        canvas[chosen] = blended


def render_shapes(
    count: int, *, size: int, seed: int = 0, split: str = "train", nuisances: Nuisances = DEFAULT_NUISANCES
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``count`` images of ``shapes10``.

    Returns ``(images, labels)``: images are ``uint8`` of shape ``(count, size, size, 3)``
    and labels ``int64`` of shape ``(count,)`` indexing :data:`SHAPE_CLASSES`. The result
    depends only on the arguments; image ``i`` is the same for any ``count > i``.
    """
    _check_render_options(count, size, split)
    streams = _Streams(seed, split, count)
    labels = _balanced_labels(streams, count)

    pixel = 2.0 / size
    axis = (np.arange(size, dtype=np.float32) + 0.5) * pixel - 1.0
    grid_y, grid_x = np.meshgrid(axis, axis, indexing="ij")

    canvas, background_middle = _background(streams, nuisances, grid_x, grid_y)
    _draw_distractors(canvas, streams, nuisances, "behind", nuisances.distractors_behind, grid_x, grid_y, pixel)
    _draw_shapes(canvas, streams, nuisances, labels, background_middle, grid_x, grid_y, pixel)
    _draw_distractors(canvas, streams, nuisances, "front", nuisances.distractors_in_front, grid_x, grid_y, pixel)

    noise_strength = streams.uniform("noise_strength", low=nuisances.noise[0], high=nuisances.noise[1])
    canvas += streams.normal("noise", size, size, 3) * noise_strength[:, None, None, None]
    images = np.clip(canvas * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return images, labels


@functools.lru_cache(maxsize=8)
def demo_tensors(count: int, size: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached :func:`render_shapes` as tensors: ``uint8`` images ``(count, 3, size, size)`` and
    ``int64`` labels. Callers must not modify the returned tensors (they are shared)."""
    images, labels = render_shapes(count, size=size, seed=seed, split=split)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), torch.from_numpy(labels)

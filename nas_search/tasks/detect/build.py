"""A standalone detector from an architecture of a registered detection space."""

from __future__ import annotations

from typing import Any

from nas_search.spec import ArchSpec
from nas_search.tasks.detect.space import detection_space
from nas_search.tasks.detect.static import DEFAULT_RESIZE, StaticDetector, initialise_detector


def build_detector(
    spec: ArchSpec, num_classes: int, image_size: int | None = None, *, resize: str = DEFAULT_RESIZE, **options: Any
) -> StaticDetector:
    """A randomly initialised standalone detector for ``spec`` (C = ``num_classes``,
    background excluded), resizing inputs to ``image_size`` (default: the space's
    deployment size) as ``resize`` says (:data:`RESIZE_MODES`)."""
    space = detection_space(spec.space)
    detector = space.resolve(spec, num_classes=num_classes)
    model = StaticDetector(detector, space.input_size if image_size is None else image_size, resize=resize, **options)
    initialise_detector(model)
    return model


__all__ = ["build_detector"]

"""Compact detectors with a searchable backbone, neck and head (the ``detect`` space).

Light modules are imported eagerly (importing this package registers the ``detect``
space's cost counter with ``nas_search.hw_models.flops``); the torchvision-based models
load on first use:

* ``nas_search.detection.space``: :class:`DetectionSpace`, :class:`DetectorChoices`,
  :class:`ResolvedDetector` and the registered ``detect`` space.
* ``nas_search.detection.cost``: :func:`count_detector` (analytic FLOPs and params, equal
  to fvcore on :class:`DetectorCore`).
* ``nas_search.detection.hardware``: :func:`detector_program` (peak activation memory)
  and :func:`detector_layers` (analytic latency devices).
* ``nas_search.detection.latency``: the neck and head parts of latency tables
  (``nas-search profile --space detect``).
* ``nas_search.detection.supernet``: :class:`DetectionSupernet`.
* ``nas_search.detection.static``: :class:`StaticDetector`, :class:`DetectorCore`,
  :func:`build_detector`.
"""

from __future__ import annotations

import importlib
from typing import Any

from nas_search.detection.space import DetectionSpace, DetectorChoices, ResolvedDetector, ResolvedHead, ResolvedNeck
from nas_search.detection.cost import count_detection, count_detector  # (importing registers the counter)
from nas_search.detection.hardware import detector_layers, detector_program  # (registers memory and latency)
from nas_search.detection import latency as _latency  # noqa: F401  (registers the latency-table parts)

_LAZY = {
    "DetectionSupernet": "nas_search.detection.supernet",
    "StaticDetector": "nas_search.detection.static",
    "DetectorCore": "nas_search.detection.static",
    "build_detector": "nas_search.detection.static",
    "run_with_head_outputs": "nas_search.detection.static",
    "EXP_CODED_OUTPUTS": "nas_search.detection.static",
    "HEAD_OUTPUTS": "nas_search.detection.static",
    "DETECTION_DEFAULTS": "nas_search.detection.static",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas_search.detection' has no attribute {name!r}")


__all__ = [
    "DetectionSpace",
    "DetectorChoices",
    "ResolvedDetector",
    "ResolvedHead",
    "ResolvedNeck",
    "count_detection",
    "count_detector",
    "detector_layers",
    "detector_program",
    *_LAZY,
]

"""Data for supernet training, search and final training.

:func:`load_classification_data` reads an ImageFolder (or the built-in ``shapes10`` demo when
given ``None``) into train and val datasets; :func:`make_loader` wraps one in a reproducible
``DataLoader``.
"""

from nas_search.data.classification import (
    IMAGE_CHECKS,
    IMAGE_EXTENSIONS,
    ClassificationData,
    ImageFileDataset,
    ImageTensorDataset,
    balanced_subset,
    build_transform,
    default_num_workers,
    load_classification_data,
    make_loader,
    set_loader_epoch,
    stratified_split,
)
from nas_search.data.demo import DEMO_NAME, SHAPE_CLASSES, Nuisances, render_shapes
from nas_search.data.detection import (
    ANNOTATION_FORMATS,
    SKIP_COUNTS,
    DetectionAnnotations,
    DetectionData,
    DetectionTensorDataset,
    ImageAnnotation,
    detection_collate,
    load_detection_data,
    make_detection_loader,
    read_detection_annotations,
)
from nas_search.data.detection_demo import (
    DETECTION_DEMO_NAME,
    DETECTION_SHAPE_CLASSES,
    DetectionNuisances,
    render_detection_shapes,
)

__all__ = [
    "IMAGE_CHECKS",
    "IMAGE_EXTENSIONS",
    "ClassificationData",
    "ImageFileDataset",
    "ImageTensorDataset",
    "balanced_subset",
    "build_transform",
    "default_num_workers",
    "load_classification_data",
    "make_loader",
    "set_loader_epoch",
    "stratified_split",
    "DEMO_NAME",
    "SHAPE_CLASSES",
    "Nuisances",
    "render_shapes",
    "ANNOTATION_FORMATS",
    "SKIP_COUNTS",
    "DetectionAnnotations",
    "DetectionData",
    "DetectionTensorDataset",
    "ImageAnnotation",
    "detection_collate",
    "load_detection_data",
    "make_detection_loader",
    "read_detection_annotations",
    "DETECTION_DEMO_NAME",
    "DETECTION_SHAPE_CLASSES",
    "DetectionNuisances",
    "render_detection_shapes",
]

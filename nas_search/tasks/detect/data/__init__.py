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

The package, one module per concern: :mod:`.annotations` (the records and shared
constants), one reader per format (:mod:`.voc`, :mod:`.coco`, :mod:`.yolo`), :mod:`.formats`
(format detection and :func:`read_detection_annotations`), :mod:`.decode` (decoding and
resizing), :mod:`.dataset` (the in-memory dataset), :mod:`.load`
(:func:`load_detection_data`: splits, subsets, the demo) and :mod:`.batching` (collate,
flip keys, :func:`make_detection_loader`). Import the public names from here.
"""

from __future__ import annotations

from nas_search.tasks.detect.data.annotations import (
    ANNOTATION_FORMATS,
    AUTO_FORMAT_ORDER,
    DEMO_SPLIT_NOTE,
    EDGE_TOLERANCE,
    EXIF_ORIENTATION_TAG,
    EXIF_SWAPPING_ORIENTATIONS,
    IMAGE_EXTENSIONS,
    SKIP_COUNTS,
    SPLITS,
    UNREADABLE_IMAGE_ERRORS,
    DetectionAnnotations,
    ImageAnnotation,
)
from nas_search.tasks.detect.data.batching import AugmentationKeySampler, detection_collate, make_detection_loader
from nas_search.tasks.detect.data.coco import COCO_EXPECTED, COCO_SPLIT_WORDS
from nas_search.tasks.detect.data.dataset import DetectionData, DetectionTensorDataset
from nas_search.tasks.detect.data.decode import DEFAULT_FIT, IMAGE_FITS
from nas_search.tasks.detect.data.formats import FORMAT_READERS, read_detection_annotations
from nas_search.tasks.detect.data.load import load_detection_data
from nas_search.tasks.detect.data.voc import VOC_EXPECTED, VOC_LAYOUTS, VOC_SPLIT_FILES, VOC_XML_EXPECTED
from nas_search.tasks.detect.data.yolo import YOLO_CLASS_LIST_FILES, YOLO_CONFIG_FILES, YOLO_EXPECTED, YOLO_SPLIT_PREFIXES

__all__ = [
    "ANNOTATION_FORMATS",
    "AUTO_FORMAT_ORDER",
    "AugmentationKeySampler",
    "COCO_EXPECTED",
    "COCO_SPLIT_WORDS",
    "DEFAULT_FIT",
    "DEMO_SPLIT_NOTE",
    "DetectionAnnotations",
    "DetectionData",
    "DetectionTensorDataset",
    "EDGE_TOLERANCE",
    "EXIF_ORIENTATION_TAG",
    "EXIF_SWAPPING_ORIENTATIONS",
    "FORMAT_READERS",
    "IMAGE_EXTENSIONS",
    "IMAGE_FITS",
    "ImageAnnotation",
    "SKIP_COUNTS",
    "SPLITS",
    "UNREADABLE_IMAGE_ERRORS",
    "VOC_EXPECTED",
    "VOC_LAYOUTS",
    "VOC_SPLIT_FILES",
    "VOC_XML_EXPECTED",
    "YOLO_CLASS_LIST_FILES",
    "YOLO_CONFIG_FILES",
    "YOLO_EXPECTED",
    "YOLO_SPLIT_PREFIXES",
    "detection_collate",
    "load_detection_data",
    "make_detection_loader",
    "read_detection_annotations",
]

"""Decoding and resizing images as the detectors' resize modes say (:data:`IMAGE_FITS`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps

from nas_search.errors import UserError
from nas_search.tasks.detect.data.annotations import UNREADABLE_IMAGE_ERRORS, ImageAnnotation


def _longer_side_size(width: int, height: int, input_size: int) -> tuple[int, int]:
    scale = input_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _square_size(width: int, height: int, input_size: int) -> tuple[int, int]:
    return input_size, input_size


#: How images are fitted to ``input_size`` when loaded, by name: ``(width, height, size) ->
#: (target width, target height)``. The names are the detectors' resize modes
#: (``nas_search.tasks.detect.static.RESIZE_MODES``).
IMAGE_FITS: dict[str, Callable[[int, int, int], tuple[int, int]]] = {"square": _square_size, "longer-side": _longer_side_size}
#: The loaders' default fit (the images of every loader before fits existed).
DEFAULT_FIT = "longer-side"


def _decode_resized(
    annotation: ImageAnnotation, input_size: int, resize: str = DEFAULT_FIT
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image fitted to ``input_size`` as ``resize`` says, as ``uint8 (3, h, w)``, and its boxes scaled."""
    target_width, target_height = IMAGE_FITS[resize](annotation.width, annotation.height, input_size)
    try:
        with Image.open(annotation.path) as image:
            if image.format == "JPEG":
                draft_size = (
                    (target_height, target_width)
                    if annotation.exif_transpose and image.size != (annotation.width, annotation.height)
                    else (target_width, target_height)
                )
                image.draft("RGB", draft_size)
            picture = image.convert("RGB")
    except UNREADABLE_IMAGE_ERRORS as error:
        raise UserError(f"image {annotation.path} cannot be decoded ({error}); replace or remove it") from None
    if annotation.exif_transpose:
        picture = ImageOps.exif_transpose(picture)
    if picture.size != (target_width, target_height):
        picture = picture.resize((target_width, target_height), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    scale = torch.tensor([target_width / annotation.width, target_height / annotation.height] * 2, dtype=torch.float32)
    return pixels, torch.from_numpy(annotation.boxes.copy()).reshape(-1, 4) * scale


def _decode_all(
    annotations: Sequence[ImageAnnotation], input_size: int, resize: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    workers = max(1, min(4, os.cpu_count() or 1))
    if workers == 1 or len(annotations) < 8:
        return [_decode_resized(annotation, input_size, resize) for annotation in annotations]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda annotation: _decode_resized(annotation, input_size, resize), annotations))

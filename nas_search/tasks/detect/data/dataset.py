"""The in-memory detection dataset (:class:`DetectionTensorDataset`) and :class:`DetectionData`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset


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

    def subset(self, indices: Sequence[int]) -> DetectionTensorDataset:
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

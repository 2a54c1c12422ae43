"""Batching: :func:`detection_collate`, the seeded flip keys and :func:`make_detection_loader`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from nas_search.errors import UserError
from nas_search.tasks.detect.data.dataset import DetectionTensorDataset, _mix


def detection_collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch detection items as ``(list of images, list of targets)`` (images may differ in size)."""
    return [image for image, _ in batch], [target for _, target in batch]


class AugmentationKeySampler(Sampler):
    """Wrap a sampler to yield ``(index, key)`` pairs, ``key`` a random 62-bit integer that
    decides the item's augmentation (see :class:`DetectionTensorDataset`).

    The keys of an epoch come from a generator seeded by ``(seed, epoch, rank)``, where the
    epoch counts the passes over the sampler unless :meth:`set_epoch` fixes it, so loaders
    built alike draw the same keys, every epoch draws new ones, and a resumed run that calls
    ``set_epoch`` repeats an uninterrupted one. ``set_epoch`` is passed on to the wrapped
    sampler (a ``DistributedSampler`` needs it).
    """

    def __init__(self, sampler: Sampler, seed: int, rank: int = 0) -> None:
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator()
        generator.manual_seed(_mix(self.seed, self.epoch, self.rank) & 0x7FFFFFFFFFFFFFFF)
        self.epoch += 1
        indices = list(self.sampler)
        keys = torch.randint(0, 2**62, (len(indices),), generator=generator).tolist()
        return iter(zip(indices, keys))


def make_detection_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    distributed: bool = False,
) -> DataLoader:
    """A reproducible detection ``DataLoader`` batching with :func:`detection_collate`.

    Shuffling uses a generator seeded with ``seed`` (the loader's ``generator``; reseed it to
    replay an epoch), so two loaders built alike yield the same batches epoch after epoch,
    with a new order each epoch. For a flipping :class:`DetectionTensorDataset` the sampler
    also draws each item's flip (see :class:`AugmentationKeySampler`). With
    ``distributed=True`` (an initialised ``torch.distributed`` process group is required) a
    seeded ``DistributedSampler`` shards the data across ranks; call
    ``loader.sampler.set_epoch(epoch)`` (or :func:`~nas_search.tasks.classify.data.set_loader_epoch`)
    before each epoch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size!r} is invalid; expected a positive integer")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise UserError(f"num_workers={num_workers!r} is invalid; expected a non-negative integer")
    generator = torch.Generator()
    generator.manual_seed(seed)
    rank = 0
    sampler: Sampler
    if distributed:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("make_detection_loader(distributed=True) needs an initialised torch.distributed process group")
        rank = torch.distributed.get_rank()
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = RandomSampler(cast(Sized, dataset), generator=generator)
    else:
        sampler = SequentialSampler(cast(Sized, dataset))
    if isinstance(dataset, DetectionTensorDataset) and dataset.flip:
        sampler = AugmentationKeySampler(sampler, seed, rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=detection_collate,
        persistent_workers=num_workers > 0,
        generator=generator,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )

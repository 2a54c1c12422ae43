"""Tests for nas_search.tasks.classify.data: image folders, the shapes10 demo and loaders."""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from nas_search.errors import UserError
from nas_search.tasks.classify.data import (
    ImageFileDataset,
    ReflectShiftCrop,
    balanced_subset,
    default_num_workers,
    load_classification_data,
    make_loader,
    set_loader_epoch,
    stratified_split,
)
from nas_search.tasks.classify.demo_data import SHAPE_CLASSES, render_shapes

from support import shared_data_path

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ----------------------------------------------------------------------------------------
# Helpers


def _jpeg_bytes(seed: int, side: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_image_folder(root: Path, counts: dict[str, int], start_seed: int = 0) -> Path:
    """An ImageFolder with ``counts[class]`` small JPEGs per class."""
    seed = start_seed
    for class_name, count in counts.items():
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            (folder / f"{index:03d}.jpg").write_bytes(_jpeg_bytes(seed))
            seed += 1
    return root


def _file_names(dataset: ImageFileDataset) -> list[str]:
    return [str(Path(path).relative_to(Path(path).parents[1])) for path, _ in dataset.samples]


# ----------------------------------------------------------------------------------------
# The real CIFAR-10 subset


@pytest.fixture(scope="module")
def cifar_root() -> Path:
    return shared_data_path("cifar10-subset")


@pytest.mark.parametrize("input_size", [32, 64])
def test_cifar_subset_loads_with_counts_and_shapes(cifar_root: Path, input_size: int) -> None:
    data = load_classification_data(cifar_root, input_size=input_size)
    assert data.num_classes == 10
    assert data.class_names == CIFAR_CLASSES
    assert (len(data.train), len(data.val)) == (5000, 2000)
    assert data.skipped_files == 0
    assert Counter(data.train.targets) == {label: 500 for label in range(10)}
    assert Counter(data.val.targets) == {label: 200 for label in range(10)}
    assert "5000 train + 2000 val" in data.description and "test/" in data.description
    for dataset in (data.train, data.val):
        image, label = dataset[123]
        assert image.shape == (3, input_size, input_size)
        assert image.dtype == torch.float32 and type(image) is torch.Tensor
        assert isinstance(label, int) and 0 <= label < 10
    # Validation is deterministic; training is augmented (random crops and flips).
    assert torch.equal(data.val[5][0], data.val[5][0])
    torch.manual_seed(0)
    augmented = torch.stack([data.train[7][0] for _ in range(8)])
    assert (augmented - augmented[0]).abs().amax() > 0.1
    # Normalised: roughly zero mean, unit spread over a few validation images.
    batch = torch.stack([data.val[index][0] for index in range(0, 2000, 40)])
    assert abs(float(batch.mean())) < 0.5 and 0.5 < float(batch.std()) < 1.5


def test_cifar_subset_max_train_and_max_val_are_balanced_and_seeded(cifar_root: Path) -> None:
    first = load_classification_data(cifar_root, input_size=32, max_train=105, max_val=40, seed=3)
    again = load_classification_data(cifar_root, input_size=32, max_train=105, max_val=40, seed=3)
    other = load_classification_data(cifar_root, input_size=32, max_train=105, max_val=40, seed=4)
    assert (len(first.train), len(first.val)) == (105, 40)
    assert sorted(Counter(first.train.targets).values()) == [10] * 5 + [11] * 5
    assert set(Counter(first.val.targets).values()) == {4}
    assert first.train.samples == again.train.samples
    assert first.train.samples != other.train.samples
    assert "105 of 5000 train + 40 of 2000 val" in first.description


# ----------------------------------------------------------------------------------------
# Splits and subsets


def test_single_folder_split_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    root = _write_image_folder(tmp_path / "folder", {"alpha": 10, "beta": 20, "gamma": 5})
    data = load_classification_data(root, input_size=16, val_fraction=0.2, seed=1)
    assert data.class_names == ("alpha", "beta", "gamma")
    assert Counter(data.val.targets) == {0: 2, 1: 4, 2: 1}
    assert Counter(data.train.targets) == {0: 8, 1: 16, 2: 4}
    train_files, val_files = set(_file_names(data.train)), set(_file_names(data.val))
    assert not train_files & val_files and len(train_files | val_files) == 35
    assert data.train[0][0].shape == (3, 16, 16)

    same = load_classification_data(root, input_size=16, val_fraction=0.2, seed=1)
    assert _file_names(same.val) == _file_names(data.val)
    other_val_sets = {
        tuple(_file_names(load_classification_data(root, input_size=16, val_fraction=0.2, seed=seed).val)) for seed in (2, 3, 4)
    }
    assert tuple(_file_names(data.val)) not in other_val_sets


def test_stratified_split_keeps_a_singleton_class_in_train() -> None:
    targets = [0] * 9 + [1] * 3 + [2]
    train, val = stratified_split(targets, 0.5, seed=0)
    labels = np.asarray(targets)
    assert Counter(labels[val].tolist()) == {0: 4, 1: 2}  # round(4.5) = 4 (banker's), round(1.5) = 2
    assert 12 in train.tolist() and sorted(train.tolist() + val.tolist()) == list(range(13))


def test_balanced_subset_grows_by_prefix_and_lets_other_classes_fill_in() -> None:
    targets = [0] * 50 + [1] * 50 + [2] * 3
    small = balanced_subset(targets, 12, seed=5)
    large = balanced_subset(targets, 30, seed=5)
    assert set(small.tolist()) <= set(large.tolist())
    counts = Counter(np.asarray(targets)[large].tolist())
    assert counts[2] == 3 and abs(counts[0] - counts[1]) <= 1 and sum(counts.values()) == 30
    assert balanced_subset(targets, 500, seed=5).tolist() == list(range(103))


# ----------------------------------------------------------------------------------------
# Bad input


def _bad_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each bad layout with the path and a word its error must contain."""
    file_path = tmp_path / "images.zip"
    file_path.write_bytes(b"zip")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = tmp_path / "no_images"
    for class_name in ("cat", "dog"):
        (no_images / class_name).mkdir(parents=True)
        (no_images / class_name / "notes.txt").write_text("not an image")
    one_class = _write_image_folder(tmp_path / "one_class", {"cat": 3})
    mismatched = tmp_path / "mismatched"
    _write_image_folder(mismatched / "train", {"cat": 2, "dog": 2})
    _write_image_folder(mismatched / "val", {"cat": 2, "bird": 2})
    train_only = tmp_path / "train_only"
    _write_image_folder(train_only / "train", {"cat": 2, "dog": 2})
    empty_class = _write_image_folder(tmp_path / "empty_class", {"cat": 2, "dog": 2})
    (empty_class / "cow").mkdir()
    all_corrupt = _write_image_folder(tmp_path / "all_corrupt", {"cat": 2})
    (all_corrupt / "dog").mkdir()
    (all_corrupt / "dog" / "broken.jpg").write_bytes(b"garbage" * 20)
    return {
        "missing": (tmp_path / "does_not_exist", "does not exist"),
        "file": (file_path, "is a file"),
        "no class folders": (empty, "no class folders"),
        "no images": (no_images, "no images"),
        "one class": (one_class, "at least 2 classes"),
        "classes differ": (mismatched / "train", "differ"),
        "train without val": (train_only, "no val/ or test/"),
        "empty class": (empty_class, "cow"),
        "only corrupt images": (all_corrupt, "dog"),
    }


def test_bad_folders_raise_user_error_naming_the_path(tmp_path: Path) -> None:
    for case, (path, expected_word) in _bad_folders(tmp_path).items():
        target = path.parent if case == "classes differ" else path
        with pytest.raises(UserError) as raised:
            load_classification_data(target, input_size=32)
        message = str(raised.value)
        assert str(path) in message, (case, message)
        assert expected_word in message, (case, message)
        assert "\n" not in message, case


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"val_fraction": 0.0}, "val_fraction=0.0"),
        ({"val_fraction": 1.5}, "val_fraction=1.5"),
        ({"max_train": 0}, "max_train=0"),
        ({"max_val": -3}, "max_val=-3"),
        ({"input_size": 4}, "input_size=4"),
        ({"image_check": "paranoid"}, "image_check='paranoid'"),
    ],
)
def test_bad_options_raise_user_error_naming_the_value(options: dict[str, object], named: str) -> None:
    arguments: dict[str, object] = {"input_size": 32, **options}
    with pytest.raises(UserError, match=named):
        load_classification_data(None, **arguments)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# Unreadable images


def test_corrupt_jpeg_is_skipped_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _write_image_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    (root / "dog" / "zz_garbage.jpg").write_bytes(b"this is not a jpeg" * 30)
    (root / "cat" / ".hidden.jpg").write_bytes(b"macOS resource fork")  # hidden: ignored, not counted
    (root / "cat" / "readme.txt").write_text("not an image")  # other extension: ignored
    with caplog.at_level(logging.WARNING, logger="nas_search.tasks.classify.data"):
        data = load_classification_data(root, input_size=16, val_fraction=0.5)
    assert data.skipped_files == 1
    assert len(data.train) + len(data.val) == 12
    assert all("zz_garbage" not in path for path, _ in data.train.samples + data.val.samples)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 1 unreadable" in warnings[0] and "zz_garbage.jpg" in warnings[0]


def test_truncated_jpeg_passes_header_check_but_not_decode_check(tmp_path: Path) -> None:
    root = _write_image_folder(tmp_path / "photos", {"cat": 4, "dog": 4})
    full = _jpeg_bytes(99, side=64)
    (root / "cat" / "truncated.jpg").write_bytes(full[: int(len(full) * 0.6)])

    header_checked = load_classification_data(root, input_size=16, val_fraction=0.25, image_check="header")
    assert header_checked.skipped_files == 0
    everything = header_checked.train.samples + header_checked.val.samples
    position = [Path(path).name for path, _ in everything].index("truncated.jpg")
    dataset = header_checked.train if position < len(header_checked.train) else header_checked.val
    index = position if dataset is header_checked.train else position - len(header_checked.train)
    with pytest.raises(UserError, match="truncated.jpg"):
        dataset[index]

    decode_checked = load_classification_data(root, input_size=16, val_fraction=0.25, image_check="decode")
    assert decode_checked.skipped_files == 1
    assert len(decode_checked.train) + len(decode_checked.val) == 8


# ----------------------------------------------------------------------------------------
# The shapes10 demo


def test_demo_rendering_is_deterministic_prefix_stable_and_seed_dependent() -> None:
    images, labels = render_shapes(60, size=32, seed=7)
    again_images, again_labels = render_shapes(60, size=32, seed=7)
    assert images.dtype == np.uint8 and images.shape == (60, 32, 32, 3)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    prefix_images, prefix_labels = render_shapes(25, size=32, seed=7)
    assert np.array_equal(prefix_images, images[:25]) and np.array_equal(prefix_labels, labels[:25])
    other_images, _ = render_shapes(60, size=32, seed=8)
    assert not np.array_equal(other_images, images)
    val_images, _ = render_shapes(60, size=32, seed=7, split="val")
    assert not np.array_equal(val_images, images)
    # Images vary: no two are the same and they use the full intensity range.
    flat = images.reshape(60, -1)
    assert len({row.tobytes() for row in flat}) == 60
    assert images.min() < 40 and images.max() > 215


def test_demo_dataset_is_class_balanced_with_expected_shapes() -> None:
    data = load_classification_data(None, input_size=32)
    assert data.num_classes == 10 and data.class_names == SHAPE_CLASSES
    assert (len(data.train), len(data.val)) == (5000, 1000)
    assert Counter(data.train.targets) == {label: 500 for label in range(10)}
    assert Counter(data.val.targets) == {label: 100 for label in range(10)}
    assert "shapes10" in data.description and data.skipped_files == 0
    image, label = data.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)
    statistics = torch.stack([data.val[index][0] for index in range(200)])
    assert abs(float(statistics.mean())) < 0.2 and 0.8 < float(statistics.std()) < 1.2

    subset = load_classification_data(None, input_size=96, max_train=45, max_val=20)
    assert (len(subset.train), len(subset.val)) == (45, 20)
    assert set(Counter(subset.train.targets).values()) <= {4, 5}
    assert subset.train[3][0].shape == (3, 96, 96) and subset.val[3][0].shape == (3, 96, 96)
    assert "rendered at 64x64, resized to 96x96" in subset.description

    plain = load_classification_data(None, input_size=32, augment=False, max_train=20, max_val=10)
    assert torch.equal(plain.train[4][0], plain.train[4][0])
    assert torch.equal(plain.train[4][0], plain.val.transform(plain.train.images[4]))


def test_reflect_shift_crop_matches_reflect_padding_then_cropping() -> None:
    image = torch.randint(0, 256, (3, 10, 10), dtype=torch.uint8)
    padded = F.pad(image[None].float(), (2, 2, 2, 2), mode="reflect")[0].to(torch.uint8)
    every_crop = {padded[:, top : top + 10, left : left + 10].numpy().tobytes() for top in range(5) for left in range(5)}
    crop = ReflectShiftCrop(10, 2)
    torch.manual_seed(0)
    produced = {crop(image).numpy().tobytes() for _ in range(300)}
    assert produced == every_crop


def _tiny_cnn(classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels_in = 3
    for channels_out in (16, 32, 64, 128):
        layers += [
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        channels_in = channels_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels_in, classes))


def test_demo_is_learnable_by_a_tiny_cnn() -> None:
    """Four epochs (about 12 s of one CPU core) lift a tiny CNN well above chance (to about 40%)."""
    epochs = 4
    data = load_classification_data(None, input_size=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI runner and dev boxes share two cores; one thread is faster
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = _tiny_cnn(data.num_classes)
            train_loader = make_loader(data.train, batch_size=64, shuffle=True, seed=0)
            val_loader = make_loader(data.val, batch_size=250, shuffle=False, seed=0)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=5e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=epochs * len(train_loader))
            started, started_cpu = time.perf_counter(), time.process_time()
            model.train()
            for _ in range(epochs):
                for images, labels in train_loader:
                    loss = F.cross_entropy(model(images), labels)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
            model.eval()
            correct = 0
            with torch.no_grad():
                for images, labels in val_loader:
                    correct += int((model(images).argmax(dim=1) == labels).sum())
    finally:
        torch.set_num_threads(threads)
    accuracy = correct / len(data.val)
    print(f"tiny CNN on shapes10: {accuracy:.1%} val accuracy after {epochs} epochs ({seconds:.1f} s, {cpu_seconds:.1f} s CPU)")
    assert accuracy >= 2.5 / data.num_classes


# ----------------------------------------------------------------------------------------
# Loaders


def _order(loader: torch.utils.data.DataLoader) -> list[int]:
    return torch.cat([batch[0] for batch in loader]).tolist()


def test_make_loader_shuffles_reproducibly_per_seed() -> None:
    dataset = TensorDataset(torch.arange(100))
    first = make_loader(dataset, batch_size=16, shuffle=True, seed=11)
    second = make_loader(dataset, batch_size=16, shuffle=True, seed=11)
    other = make_loader(dataset, batch_size=16, shuffle=True, seed=12)
    epochs_first = [_order(first), _order(first)]
    assert epochs_first == [_order(second), _order(second)]
    assert epochs_first[0] != epochs_first[1]
    assert sorted(epochs_first[0]) == list(range(100))
    assert _order(other) != epochs_first[0]
    assert _order(make_loader(dataset, batch_size=16, shuffle=False, seed=0)) == list(range(100))
    assert len(make_loader(dataset, batch_size=16, shuffle=True, seed=0, drop_last=True)) == 6


def test_default_workers_depend_on_where_the_data_lives(tmp_path: Path) -> None:
    demo = load_classification_data(None, input_size=32, max_train=600, max_val=10)
    assert default_num_workers(demo.train) == 0
    files = ImageFileDataset([(f"image{index}.jpg", 0) for index in range(600)], transform=lambda image: image)
    assert default_num_workers(files) >= 1
    assert default_num_workers(files.subset(range(20))) == 0
    with pytest.raises(UserError, match="batch_size=0"):
        make_loader(files, batch_size=0, shuffle=True, seed=0)


def test_worker_augmentation_is_reproducible(cifar_root: Path) -> None:
    data = load_classification_data(cifar_root, input_size=32, max_train=64, image_check="none")

    def first_batches() -> list[torch.Tensor]:
        loader = make_loader(data.train, batch_size=16, shuffle=True, seed=5, num_workers=2)
        assert loader.persistent_workers
        return [images for images, _ in loader]

    first, second = first_batches(), first_batches()
    assert all(torch.equal(left, right) for left, right in zip(first, second))


def test_distributed_loader_shards_and_reshuffles_per_epoch(tmp_path: Path) -> None:
    dataset = TensorDataset(torch.arange(40))
    with pytest.raises(RuntimeError, match="process group"):
        make_loader(dataset, batch_size=8, shuffle=True, seed=0, distributed=True)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        loader = make_loader(dataset, batch_size=8, shuffle=True, seed=3, distributed=True)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        set_loader_epoch(loader, 0)
        epoch_zero = _order(loader)
        assert epoch_zero == _order(loader)  # the same epoch replays the same order
        set_loader_epoch(loader, 1)
        epoch_one = _order(loader)
        assert epoch_one != epoch_zero and sorted(epoch_one) == list(range(40))
    finally:
        torch.distributed.destroy_process_group()

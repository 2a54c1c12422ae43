"""Detection evaluation and training: mAP, BN recalibration, standalone epochs, and the
detection supernet's sandwich training (checkpoint, resume, evaluator cache, distillation).

The first tests use torchvision's own FCOS with a tiny backbone and a tiny in-test dataset
of coloured rectangles; the supernet tests use ``nas_search.tasks.detect`` and
``nas_search.tasks.detect.data``.
"""

from __future__ import annotations

import copy
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead

from nas_search.tasks.detect.evaluate import (
    detection_calibration_batches,
    mean_average_precision,
    recalibrate_detection_batch_norm,
)
from nas_search.tasks.detect.supernet_training import head_distillation_loss, train_detection_epoch

IMAGE_SIZE = 96
CLASSES = 3  # one per colour channel


def rectangles_dataset(count: int, seed: int, size: int = IMAGE_SIZE) -> list[tuple[torch.Tensor, dict]]:
    """Images of up to three solid rectangles, one per colour channel (label = channel + 1),
    on a dark background; targets follow the shared detection conventions."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for index in range(count):
        image = torch.rand(3, size, size, generator=generator) * 0.2
        boxes, labels = [], []
        for channel in range(CLASSES):
            if torch.rand(1, generator=generator).item() < 0.3 and boxes:
                continue
            width, height = (int(value) for value in torch.randint(12, size // 2, (2,), generator=generator))
            left = int(torch.randint(0, size - width, (1,), generator=generator))
            top = int(torch.randint(0, size - height, (1,), generator=generator))
            image[channel, top : top + height, left : left + width] = 1.0
            boxes.append([left, top, left + width, top + height])
            labels.append(channel + 1)
        items.append(
            (image, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels), "image_id": index})
        )
    return items


def batches_of(items: list, batch_size: int) -> list[tuple[list[torch.Tensor], list[dict]]]:
    return [
        ([image for image, _ in items[start : start + batch_size]], [target for _, target in items[start : start + batch_size]])
        for start in range(0, len(items), batch_size)
    ]


class ChannelThresholdDetector(nn.Module):
    """A real (if trivial) detector for :func:`rectangles_dataset`: in each colour channel,
    the bounding box of the pixels above one half is an object of that channel's class.
    ``shift`` moves every box right by its own width (so it misses)."""

    def __init__(self, shift: bool = False) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            boxes, labels = [], []
            for channel in range(image.shape[0]):
                rows, columns = torch.nonzero(image[channel] > 0.5, as_tuple=True)
                if rows.numel() == 0:
                    continue
                box = [columns.min().item(), rows.min().item(), columns.max().item() + 1, rows.max().item() + 1]
                if self.shift:
                    width = box[2] - box[0]
                    box = [box[0] + width, box[1], box[2] + width, box[3]]
                boxes.append(box)
                labels.append(channel + 1)
            outputs.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.ones(len(boxes)),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                }
            )
        return outputs


class TinyBackbone(nn.Module):
    """Three stride-2 conv-BN-ReLU stages and a stride-2 stem: features at strides 8, 16, 32."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(stage(3, 16), stage(16, channels))
        self.stages = nn.ModuleList([stage(channels, channels) for _ in range(3)])
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        x = self.stem(x)
        features = OrderedDict()
        for index, stage in enumerate(self.stages):
            x = stage(x)
            features[str(index)] = x
        return features


def tiny_fcos(seed: int = 0) -> FCOS:
    torch.manual_seed(seed)
    backbone = TinyBackbone()
    anchors = AnchorGenerator(((16,), (32,), (64,)), ((1.0,),) * 3)
    head = FCOSHead(backbone.out_channels, 1, CLASSES + 1, num_convs=1)
    return FCOS(
        backbone, CLASSES + 1, min_size=IMAGE_SIZE, max_size=IMAGE_SIZE, anchor_generator=anchors, head=head, score_thresh=0.05
    )


# ----------------------------------------------------------------------------- mAP


def test_map_is_one_for_ground_truth_and_zero_for_shifted_boxes():
    items = rectangles_dataset(12, seed=1)
    loader = batches_of(items, 4)
    perfect = mean_average_precision(ChannelThresholdDetector(), loader)
    assert perfect["map"] == pytest.approx(1.0) and perfect["map50"] == pytest.approx(1.0)
    assert perfect["images"] == 12
    shifted = mean_average_precision(ChannelThresholdDetector(shift=True), loader)
    assert shifted["map50"] == pytest.approx(0.0, abs=1e-6) and shifted["map"] == pytest.approx(0.0, abs=1e-6)


def test_map_restores_the_model_mode():
    model = tiny_fcos()
    model.train()
    model.backbone.stem.eval()
    result = mean_average_precision(model, batches_of(rectangles_dataset(4, seed=2), 2))
    assert 0.0 <= result["map"] <= 1.0
    assert model.training and model.head.training and not model.backbone.stem.training


# ----------------------------------------------------------------------------- BN recalibration


def test_recalibration_changes_only_running_statistics():
    model = tiny_fcos()
    model.eval()
    model.head.train()  # a mixed mode must come back as it was
    untouched = copy.deepcopy(model)  # an identical module, to compare every tensor with
    momenta = {name: module.momentum for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)}
    modes = {name: module.training for name, module in model.named_modules()}
    calibration = detection_calibration_batches(rectangles_dataset(16, seed=3), count=16, batch_size=4, seed=0)
    assert recalibrate_detection_batch_norm(model, calibration) == 4
    after = {name: value.clone() for name, value in model.state_dict().items()}
    reference = untouched.state_dict()
    changed = {name for name in reference if not torch.equal(reference[name], after[name])}
    running = {name for name in reference if name.endswith(("running_mean", "running_var"))}
    assert running and changed == running  # every BN's statistics, and nothing else (not num_batches_tracked)
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert {name: module.momentum for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)} == momenta
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())
    assert recalibrate_detection_batch_norm(model, []) == 0
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in after.items())


def test_recalibration_matches_the_batch_statistics():
    """With one calibration batch, the first BN's running stats equal that batch's stats."""
    model = tiny_fcos()
    images = [image for image, _ in rectangles_dataset(4, seed=4)]
    recalibrate_detection_batch_norm(model, [images])
    image_list, _ = model.transform(images)
    first_conv = model.backbone.stem[0][0]
    with torch.no_grad():
        x = first_conv(image_list.tensors)
    norm = model.backbone.stem[0][1]
    torch.testing.assert_close(norm.running_mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, x.var((0, 2, 3), unbiased=True))


# ----------------------------------------------------------------------------- standalone training


def test_a_few_standalone_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_fcos()
    batch = batches_of(rectangles_dataset(4, seed=5), 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def mean_loss() -> float:
        model.train()
        with torch.no_grad():
            torch.manual_seed(0)
            return sum(model(*batch[0]).values()).item()

    initial = mean_loss()
    records = [train_detection_epoch(model, batch, optimizer, None, clip_grad_norm=10.0) for _ in range(15)]
    assert records[0]["images"] == 4 and records[0]["steps"] == 1
    assert {"loss", "classification", "bbox_regression", "bbox_ctrness", "images_per_second"} <= set(records[0])
    assert mean_loss() < 0.8 * initial


def test_standalone_training_refuses_a_non_finite_loss():
    model = tiny_fcos()
    items = rectangles_dataset(2, seed=6)
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(float("nan"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(RuntimeError, match="diverged"):
        train_detection_epoch(model, batches_of(items, 2), optimizer, None)


# ----------------------------------------------------------------------------- distillation


def test_head_distillation_is_zero_for_identical_outputs_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    teacher = {
        "cls_logits": torch.randn(2, 50, CLASSES, generator=generator),
        "bbox_ctrness": torch.randn(2, 50, 1, generator=generator),
    }
    assert head_distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = {
        name: (value + 0.5 * torch.randn(value.shape, generator=generator)).requires_grad_() for name, value in teacher.items()
    }
    loss = head_distillation_loss(student, teacher)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert student["cls_logits"].grad.abs().sum() > 0 and student["bbox_ctrness"].grad.abs().sum() > 0


# ----------------------------------------------------------------------------- evaluator


class TinyFcosFamily:
    """Stands in for a detection supernet: ``extract(spec)`` returns a copy of a tiny FCOS
    (a different one per spec key) and counts its calls."""

    def __init__(self) -> None:
        self.models: dict[str, FCOS] = {}
        self.extractions = 0

    def extract(self, spec) -> FCOS:
        self.extractions += 1
        if spec.key not in self.models:
            self.models[spec.key] = tiny_fcos(seed=len(self.models))
        return copy.deepcopy(self.models[spec.key])


def test_evaluator_scores_recalibrated_copies_and_caches_by_spec_key():
    from nas_search.tasks import get_space
    from nas_search.tasks.detect.evaluate import DetectionEvaluator, DetectionResult

    space = get_space("micro")
    items = rectangles_dataset(12, seed=7)
    family = TinyFcosFamily()
    evaluator = DetectionEvaluator(family, detection_calibration_batches(items, 8, 4), batches_of(items[8:], 2))
    largest, smallest = space.largest(), space.smallest()
    first = evaluator(largest)
    assert isinstance(first, DetectionResult) and first.images == 4 and 0.0 <= first.map <= first.map50 <= 1.0
    assert evaluator(largest) is first and family.extractions == 1
    evaluator(smallest)
    assert family.extractions == 2 and set(evaluator.cache) == {largest.key, smallest.key}
    original = family.models[largest.key]
    calibrated = evaluator.extract_calibrated(largest)
    assert not calibrated.training
    norm, original_norm = calibrated.backbone.stem[0][1], original.backbone.stem[0][1]
    assert not torch.equal(norm.running_mean, original_norm.running_mean)  # recalibrated copy ...
    assert torch.equal(original_norm.running_mean, torch.zeros_like(original_norm.running_mean))  # ... original untouched


# ----------------------------------------------------------------------------- checkpoints and options


def test_detection_supernet_loader_refuses_other_files(tmp_path):
    from nas_search.errors import UserError
    from nas_search.tasks.detect.supernet_training import load_detection_supernet
    from nas_search.training.checkpoint import SUPERNET_FORMAT

    classification = tmp_path / "classification.pt"
    torch.save({"format": SUPERNET_FORMAT, "space": "micro"}, classification)
    with pytest.raises(UserError, match="nas-search-detection-supernet"):
        load_detection_supernet(classification)
    with pytest.raises(UserError, match="not found"):
        load_detection_supernet(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "option",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"learning_rate": 0.0},
        {"random_subnets": -1},
        {"distill_weight": -1.0},
        {"optimizer": "lamb"},
        {"image_size": 8},
    ],
)
def test_bad_detection_training_options_are_user_errors(option, tmp_path):
    from nas_search.errors import UserError
    from nas_search.tasks.detect.supernet_training import DetectionSupernetTrainConfig, train_detection_supernet

    name = next(iter(option))
    config = DetectionSupernetTrainConfig(out=str(tmp_path / "x.pt"), device="cpu", progress=False, **option)
    with pytest.raises(UserError, match=name):
        train_detection_supernet(config)


# ----------------------------------------------------------------------------- the detection supernet

MICRO_DETECT = "detect-micro-test"


def micro_detection_space():
    """A tiny detection space for fast tests (the ``micro`` backbone, 16-channel neck and
    head), registered once under ``detect-micro-test``; the built-in ``detect`` supernet has
    about 10^8 parameters, too many for a unit test."""
    from nas_search.tasks import get_space, register_space, space_names
    from nas_search.tasks.detect.space import DetectionSpace, DetectorChoices

    if MICRO_DETECT not in space_names():

        @register_space(MICRO_DETECT)
        def build() -> DetectionSpace:
            return DetectionSpace.from_backbone(
                get_space("micro"),
                name=MICRO_DETECT,
                description="micro detector for tests",
                input_size=IMAGE_SIZE,
                train_input_size=IMAGE_SIZE,
                num_classes=CLASSES,
                detector=DetectorChoices(neck_channels=16, head_channels=16, neck_depths=(0, 1), head_depths=(1, 2)),
            )

    return get_space(MICRO_DETECT)


def micro_supernet(seed: int = 0):
    from nas_search.tasks.detect.supernet import DetectionSupernet

    torch.manual_seed(seed)
    return DetectionSupernet(micro_detection_space(), CLASSES, image_size=IMAGE_SIZE)


def test_distillation_from_the_largest_is_finite_and_positive_for_the_smallest_subnet():
    from nas_search.tasks.detect.supernet_training import DetectionSandwichStep

    supernet = micro_supernet()
    space = supernet.space
    images, targets = batches_of(rectangles_dataset(4, seed=8), 4)[0]
    supernet.train()
    supernet.activate(space.largest())
    _, teacher = supernet.forward_with_head_outputs(images, targets)
    supernet.activate(space.smallest())
    _, student = supernet.forward_with_head_outputs(images, targets)
    distillation = head_distillation_loss(student, {name: value.detach() for name, value in teacher.items()})
    assert torch.isfinite(distillation) and distillation.item() > 0
    # Through the sandwich step: the distillation part is reported and enters the loss.
    step = DetectionSandwichStep(supernet, distill=True, distill_weight=1.0)
    loss, parts = step(images, targets, [space.largest(), space.smallest()])
    assert parts["distill"].item() > 0
    torch.testing.assert_close(loss.detach(), parts["largest"] + parts["subnets"] + parts["distill"])
    loss.backward()
    without = DetectionSandwichStep(supernet, distill=False, distill_weight=1.0)
    _, parts_without = without(images, targets, [space.largest(), space.smallest()])
    assert parts_without["distill"].item() == 0.0


def test_sandwich_steps_lower_the_loss_of_largest_and_smallest():
    from nas_search.tasks.detect.supernet_training import DetectionSandwichStep
    from nas_search.training.sandwich import sandwich_specs

    supernet = micro_supernet()
    space = supernet.space
    images, targets = batches_of(rectangles_dataset(8, seed=9), 8)[0]
    step = DetectionSandwichStep(supernet, distill=True, distill_weight=1.0)
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=3e-3)
    specs = sandwich_specs(space, 1, seed=0, step=0)
    assert specs[0] == space.largest() and specs[1] == space.smallest() and len(specs) == 3
    assert sandwich_specs(space, 1, seed=0, step=0) == specs
    supernet.train()

    def smallest_loss() -> float:
        supernet.activate(space.smallest())
        with torch.no_grad():
            return sum(supernet(images, targets).values()).item()

    smallest_before = smallest_loss()
    history = []
    for index in range(12):
        loss, parts = step(images, targets, sandwich_specs(space, 1, seed=0, step=index))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(supernet.parameters(), 10.0)
        optimizer.step()
        history.append(parts)
    assert history[-1]["largest"] < 0.9 * history[0]["largest"]
    assert smallest_loss() < 0.98 * smallest_before  # it learns more slowly (shared, narrower weights)


def test_evaluator_on_the_supernet_caches_and_leaves_the_supernet_unchanged():
    from nas_search.tasks.detect.evaluate import DetectionEvaluator

    supernet = micro_supernet()
    space = supernet.space
    before = {name: value.clone() for name, value in supernet.state_dict().items()}

    class CountingSupernet:
        def __init__(self, inner) -> None:
            self.inner, self.calls = inner, 0

        def extract(self, spec):
            self.calls += 1
            return self.inner.extract(spec)

    counting = CountingSupernet(supernet)
    items = rectangles_dataset(10, seed=10)
    evaluator = DetectionEvaluator(counting, detection_calibration_batches(items, 6, 3), batches_of(items[6:], 2))
    spec = space.sample(random.Random(3))
    first = evaluator(spec)
    assert 0.0 <= first.map <= first.map50 <= 1.0 and first.images == 4 and first.arch == spec.key
    assert evaluator(spec) is first and counting.calls == 1
    evaluator(space.smallest())
    assert counting.calls == 2
    assert all(torch.equal(value, supernet.state_dict()[name]) for name, value in before.items())


# ----------------------------------------------------------------------------- train_detection_supernet


def _train_config(out, **overrides):
    from nas_search.tasks.detect.supernet_training import DetectionSupernetTrainConfig

    micro_detection_space()
    options = dict(
        space=MICRO_DETECT,
        data=None,
        epochs=2,
        image_size=IMAGE_SIZE,
        batch_size=4,
        max_train=8,
        max_val=8,
        random_subnets=1,
        learning_rate=0.02,
        warmup_epochs=0.5,
        seed=3,
        workers=0,
        device="cpu",
        progress=False,
        out=str(out),
    )
    options.update(overrides)
    return DetectionSupernetTrainConfig(**options)


def test_supernet_training_checkpoints_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    from nas_search.tasks.detect.supernet_training import (
        DETECTION_SUPERNET_FORMAT,
        load_detection_supernet,
        train_detection_supernet,
    )
    from nas_search.training.checkpoint import load_checkpoint

    uninterrupted = train_detection_supernet(_train_config(tmp_path / "whole.pt"))
    assert uninterrupted.completed_epochs == 2 and len(uninterrupted.history) == 2
    assert all(record["distill"] > 0 and record["images_per_second"] > 0 for record in uninterrupted.history)
    first = train_detection_supernet(_train_config(tmp_path / "parts.pt", stop_after_epochs=1))
    assert first.completed_epochs == 1
    resumed = train_detection_supernet(_train_config(tmp_path / "parts.pt", resume=True))
    assert resumed.resumed_from_epoch == 1 and resumed.completed_epochs == 2
    whole = load_checkpoint(tmp_path / "whole.pt", DETECTION_SUPERNET_FORMAT)
    parts = load_checkpoint(tmp_path / "parts.pt", DETECTION_SUPERNET_FORMAT)
    assert whole["model"].keys() == parts["model"].keys()
    assert all(torch.equal(whole["model"][name], parts["model"][name]) for name in whole["model"])
    assert whole["history"][1]["loss"] == parts["history"][1]["loss"]
    assert (whole["space"], whole["image_size"], whole["epoch"]) == (MICRO_DETECT, IMAGE_SIZE, 2)
    assert whole["num_classes"] == len(whole["classes"]) and whole["format_version"] == 2
    supernet, metadata = load_detection_supernet(tmp_path / "whole.pt")
    assert not supernet.training and supernet.image_size == IMAGE_SIZE
    assert "model" not in metadata and metadata["config"]["seed"] == 3
    assert all(torch.equal(value, whole["model"][name]) for name, value in supernet.state_dict().items())
    # the resize mode is recorded; a checkpoint from before resize modes was trained longer-side
    assert whole["resize"] == parts["resize"] == supernet.resize == "square"
    legacy = {key: value for key, value in whole.items() if key != "resize"}
    torch.save(legacy, tmp_path / "legacy.pt")
    assert load_detection_supernet(tmp_path / "legacy.pt")[0].resize == "longer-side"
    from nas_search.errors import UserError

    torch.save({**whole, "resize": ["square"]}, tmp_path / "damaged.pt")
    with pytest.raises(UserError, match=r"damaged.pt holds resize=\['square'\]; accepted: square, longer-side"):
        load_detection_supernet(tmp_path / "damaged.pt")


def test_a_trained_supernet_checkpoint_evaluates_on_the_demo_data(tmp_path):
    from nas_search.tasks.detect.evaluate import evaluate_detector_checkpoint
    from nas_search.tasks.detect.supernet_training import train_detection_supernet

    train_detection_supernet(_train_config(tmp_path / "supernet.pt", epochs=1))
    space = micro_detection_space()
    result = evaluate_detector_checkpoint(
        str(tmp_path / "supernet.pt"), space.smallest(), calibration_images=8, max_val=8, batch_size=4
    )
    assert result["images"] == 8 and 0.0 <= result["map"] <= result["map50"] <= 1.0
    assert result["flops"] > 0 and result["params"] > 0 and result["eval_input_size"] == IMAGE_SIZE


def test_torchrun_ddp_two_processes_on_cpu(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from nas_search.tasks.detect.supernet_training import load_detection_supernet

    micro_detection_space()  # registered here too, for loading the checkpoint
    tests = Path(__file__).resolve().parent
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(tests)!r}, {str(tests.parent)!r}]\n"
        "from test_detection_training import _train_config\n"
        "from nas_search.tasks.detect.supernet_training import train_detection_supernet\n"
        "result = train_detection_supernet(_train_config(sys.argv[1], epochs=1, max_train=16))\n"
        "import os\n"
        "print(f\"rank{os.environ['RANK']}-epochs{len(result.history)}\", flush=True)\n"
    )
    out = tmp_path / "ddp.pt"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank0-epochs1" in result.stdout and "rank1-epochs1" in result.stdout
    _, metadata = load_detection_supernet(out)
    assert metadata["epoch"] == 1 and metadata["history"][0]["images_per_second"] > 0

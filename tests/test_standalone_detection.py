"""``nas-search train`` for detectors: a hand-written detection train.yaml on the built-in
demo data, scratch and inherited initialisation, exact resume, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import nas_search.tasks.detect.standalone as standalone_detection
from nas_search.errors import UserError
from nas_search.tasks import get_space
from nas_search.tasks.detect.build import build_detector
from nas_search.tasks.detect.standalone import (
    DETECTION_MODEL_FORMAT,
    DetectionTrainConfig,
    load_detection_train_config,
    train_detection_standalone,
)
from nas_search.training.checkpoint import load_checkpoint

INPUT_SIZE = 64
DEMO_CLASSES = 3


@pytest.fixture(scope="module")
def spec():
    return get_space("detect").smallest()


def write_train_yaml(folder: Path, spec, **options) -> Path:
    """A detection train.yaml as `nas-search export` writes one, on capped demo data."""
    config = {
        "task": "detect",
        "arch": spec.to_dict(),
        "data": None,
        "num_classes": DEMO_CLASSES,
        "input_size": INPUT_SIZE,
        "deployment_input_size": 416,
        "init": "scratch",
        "weights": "model.pt",
        "epochs": 2,
        "batch_size": 8,
        "max_train": 32,
        "max_val": 16,
        "workers": 0,
        "device": "cpu",
        "postprocess": {"score_thresh": 0.05, "nms_thresh": 0.6, "detections_per_img": 100, "topk_candidates": 1000},
    }
    config.update(options)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_defaults_are_the_measured_fcos_recipe():
    config = DetectionTrainConfig()
    assert (config.task, config.optimizer, config.learning_rate, config.init) == ("detect", "adamw", 2e-3, "inherited")
    assert (config.input_size, config.epochs, config.batch_size, config.warmup_epochs) == (128, 20, 16, 1.0)


def test_scratch_training_records_map_every_epoch(tmp_path, spec):
    path = write_train_yaml(tmp_path, spec, epochs=3)
    result = train_detection_standalone(path, progress=False)
    assert [record["epoch"] for record in result["history"]] == [1, 2, 3]
    for record in result["history"]:
        assert 0.0 <= record["map50"] <= 1.0 and 0.0 <= record["map"] <= record["map50"]
        assert record["images_per_second"] > 0
        assert {"classification", "bbox_regression", "bbox_ctrness"} <= set(record)
    assert result["map50"] == result["history"][-1]["map50"]
    assert result["initial_map50"] is not None
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]  # it learns
    assert result["classes"] == ["circle", "square", "triangle"]
    checkpoint = load_checkpoint(result["checkpoint"], DETECTION_MODEL_FORMAT)
    assert checkpoint["epoch"] == 3 and checkpoint["arch"] == spec.key
    weights = torch.load(result["weights"], map_location="cpu", weights_only=True)
    fresh = build_detector(spec, DEMO_CLASSES, INPUT_SIZE)
    fresh.load_state_dict(weights)  # the final weights rebuild the detector
    assert Path(result["weights"]) == tmp_path / "trained" / "model.pt"


def test_resume_after_epoch_one_matches_an_uninterrupted_run(tmp_path, spec, monkeypatch):
    reference = train_detection_standalone(write_train_yaml(tmp_path / "reference", spec), progress=False)

    interrupted = write_train_yaml(tmp_path / "interrupted", spec)
    real_save = standalone_detection.save_checkpoint

    def save_then_die(payload, path):
        real_save(payload, path)
        raise KeyboardInterrupt("killed after the first epoch's checkpoint")

    monkeypatch.setattr(standalone_detection, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_detection_standalone(interrupted, progress=False)
    monkeypatch.setattr(standalone_detection, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "interrupted" / "trained" / "checkpoint.pt", DETECTION_MODEL_FORMAT)["epoch"] == 1
    assert not (tmp_path / "interrupted" / "trained" / "model.pt").exists()

    resumed = train_detection_standalone(interrupted, resume=True, progress=False)
    assert resumed["initial_map50"] is None and len(resumed["history"]) == 2
    expected = torch.load(reference["weights"], weights_only=True)
    actual = torch.load(resumed["weights"], weights_only=True)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert resumed["map50"] == reference["map50"]


def test_resume_with_another_number_of_steps_per_epoch_is_refused(tmp_path, spec):
    """The learning-rate schedule counts optimizer steps: a resumed run with another
    training-set size (here --max-train) would jump along it, so it is refused."""
    path = write_train_yaml(tmp_path, spec, epochs=1, max_train=16, batch_size=8)
    train_detection_standalone(path, progress=False)
    checkpoint = tmp_path / "trained" / "checkpoint.pt"
    assert load_checkpoint(checkpoint, DETECTION_MODEL_FORMAT)["steps_per_epoch"] == 2
    before = checkpoint.read_bytes()
    with pytest.raises(UserError, match="2 steps per epoch, not 1") as error:
        train_detection_standalone(path, resume=True, progress=False, overrides={"max_train": 8, "epochs": 2})
    assert "--max-train" in str(error.value) and "\n" not in str(error.value)
    assert checkpoint.read_bytes() == before
    resumed = train_detection_standalone(path, resume=True, progress=False, overrides={"epochs": 2})
    assert len(resumed["history"]) == 2


def test_inherited_init_loads_the_weights_file(tmp_path, spec):
    torch.manual_seed(123)  # weights unlike the seed-0 initialisation of the trainer
    saved = build_detector(spec, DEMO_CLASSES, INPUT_SIZE).state_dict()
    torch.save(saved, tmp_path / "model.pt")
    # one step at a negligible learning rate: the parameters stay those loaded
    options = dict(epochs=1, max_train=8, batch_size=8, learning_rate=1e-12, warmup_epochs=0.0)
    inherited = train_detection_standalone(write_train_yaml(tmp_path, spec, init="inherited", **options), progress=False)
    scratch = train_detection_standalone(write_train_yaml(tmp_path / "scratch", spec, **options), progress=False)
    inherited_weights = torch.load(inherited["weights"], weights_only=True)
    scratch_weights = torch.load(scratch["weights"], weights_only=True)
    name = "head.cls_logits.weight"
    assert torch.allclose(inherited_weights[name], saved[name], atol=1e-6)
    assert not torch.allclose(scratch_weights[name], saved[name], atol=1e-6)
    convolution = next(key for key in saved if key.startswith("backbone.body.stem") and key.endswith("weight"))
    assert torch.allclose(inherited_weights[convolution], saved[convolution], atol=1e-6)


def test_inherited_weights_of_another_architecture_are_refused(tmp_path, spec):
    other = get_space("detect").largest()
    torch.save(build_detector(other, DEMO_CLASSES, INPUT_SIZE).state_dict(), tmp_path / "model.pt")
    with pytest.raises(UserError, match="does not fit architecture") as error:
        train_detection_standalone(write_train_yaml(tmp_path, spec, init="inherited"), progress=False)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rte": 0.001}, "unknown option(s) learning_rte"),
        ({"init": "pretrained"}, "init='pretrained'; accepted: inherited, scratch"),
        ({"optimizer": "adam"}, "optimizer='adam'; accepted: adamw, sgd"),
        ({"input_size": 100}, "input_size=100; accepted: a multiple of 32"),
        ({"epochs": 0}, "epochs=0; accepted: 1 or more"),
        ({"epochs": "ten"}, "option epochs='ten' has the wrong type"),
        ({"task": "classify"}, "task='classify'; accepted: detect"),
        ({"postprocess": {"iou": 0.5}}, "postprocess={'iou': 0.5}; accepted: a mapping of score_thresh"),
        ({"arch": {}}, "arch={}; accepted"),
        ({"resize": "letterbox"}, "resize='letterbox'; accepted: square, longer-side"),
    ],
)
def test_bad_values_give_one_line_errors(tmp_path, spec, options, message):
    path = write_train_yaml(tmp_path, spec, **options)
    with pytest.raises(UserError) as error:
        load_detection_train_config(path)
    assert message in str(error.value)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_weights_file_is_a_one_line_error(tmp_path, spec):
    path = write_train_yaml(tmp_path, spec, init="inherited", weights="nowhere.pt")
    with pytest.raises(UserError, match=r"init is 'inherited' but the weights file .*nowhere\.pt does not exist") as error:
        train_detection_standalone(path, progress=False)
    assert "\n" not in str(error.value)


def test_overrides_replace_yaml_values_and_none_is_ignored(tmp_path, spec):
    path = write_train_yaml(tmp_path, spec, init="inherited")
    config, base = load_detection_train_config(path, {"init": "scratch", "epochs": 5, "data": None, "max_train": None})
    assert (config.init, config.epochs, config.data, config.max_train, base) == ("scratch", 5, None, 32, tmp_path)


def test_wrong_class_count_is_refused(tmp_path, spec):
    with pytest.raises(UserError, match="num_classes=5 but the data has 3 classes"):
        train_detection_standalone(write_train_yaml(tmp_path, spec, num_classes=5), progress=False)

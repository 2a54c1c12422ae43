"""The detection main job end to end through the real CLI: ``run --task detect`` on the
built-in demo (tiny settings), the summary and study, ``export`` (ONNX without
post-processing, settings in the config) and ``train`` of the exported detector."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import CliRunner

from nas_search.export import load_exported
from nas_search.hw_models.devices import latency_model_for
from nas_search.hw_models.flops import count_flops
from nas_search.hw_models.memory import peak_of_program
from nas_search.search.sampling import flops_range
from nas_search.spec import ArchSpec
from nas_search.tasks import get_space
from nas_search.tasks.detect.hardware import detector_program
from nas_search.tasks.detect.static import HEAD_OUTPUTS

pytestmark = pytest.mark.slow

BUDGET = 1_500_000_000  # 1.5 GFLOPs at 416 px: binds (the space reaches 23.8 G)


@pytest.fixture(scope="module")
def detect_study(tmp_path_factory: pytest.TempPathFactory, nas_cli: CliRunner) -> Path:
    directory = tmp_path_factory.mktemp("detect-study")
    result = nas_cli(
        directory,
        "run",
        "--task",
        "detect",
        "--budget",
        str(BUDGET),
        "--study",
        "det",
        "--trials",
        "3",
        "--startup-trials",
        "2",
        "--supernet-epochs",
        "1",
        "--max-train",
        "32",
        "--max-val",
        "16",
        "--train-input-size",
        "64",
        "--calibration-images",
        "16",
        "--quiet",
        "--json-summary",
        "summary.json",
        "--finalists",
        "2",
        "--finalist-epochs",
        "1",
        "--finalist-init",
        "scratch",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mAP@0.5" in result.stdout
    return directory


def test_detect_run_meets_the_budget_band_and_records_map(detect_study: Path) -> None:
    summary = json.loads((detect_study / "summary.json").read_text())
    assert summary["task"] == "detect" and summary["score_name"] == "mAP@0.5"
    assert summary["space"] == "detect" and summary["input_size"] == 416
    best = summary["best"]
    assert best is not None
    assert 0.8 * BUDGET <= best["flops"] <= BUDGET
    study = optuna.load_study(study_name="det", storage=f"sqlite:///{detect_study / 'studies' / 'det.db'}")
    assert study.user_attrs["task"] == "detect" and study.user_attrs["train_input_size"] == 64
    for trial in study.trials:
        if trial.user_attrs.get("feasible"):
            assert 0.0 <= trial.user_attrs["map50"] <= 1.0 and trial.user_attrs["accuracy"] == trial.user_attrs["map50"]
            assert "neck" in trial.user_attrs["arch"] and "dethead" in trial.user_attrs["arch"]
    smallest = flops_range(get_space("detect"), 416).smallest
    assert smallest < BUDGET
    # the two best trials were trained from scratch (1 epoch at 64 px) and re-ranked by mAP@0.5
    finalists = study.user_attrs["finalists"]
    assert finalists["settings"] == {"count": 2, "epochs": 1, "input_size": 64, "init": "scratch"}
    records = {int(number): record for number, record in finalists["records"].items()}
    assert len(records) == min(2, len({trial.user_attrs["arch"] for trial in study.trials if trial.user_attrs.get("feasible")}))
    for record in records.values():
        assert 0.0 <= record["map50"] <= 1.0 and record["score"] == record["map50"] and 0.0 <= record["map"] <= record["map50"]
        assert record["score_error"] >= 0.0  # bootstrap over the validation images
    # the pick: the cheapest finalist within one standard error of the best mAP@0.5
    top = max(records.values(), key=lambda record: record["score"])
    within = [number for number, record in records.items() if record["score"] >= top["score"] - top["score_error"]]
    assert best["trial"] in within
    assert best["flops"] == min(study.trials[number].user_attrs["flops"] for number in within)


@pytest.fixture(scope="module")
def detect_export(detect_study: Path, nas_cli: CliRunner) -> Path:
    out = detect_study / "exported"
    result = nas_cli(
        detect_study, "export", "--study", "det", "--trial", "best", "-o", str(out), "--epochs", "1", "--json", timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_detect_export_onnx_and_config(detect_export: Path) -> None:
    out = detect_export
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "detect" and meta["onnx_max_abs_difference"] < 1e-3
    assert set(meta["postprocess"]) >= {"score_thresh", "nms_thresh", "detections_per_img"}
    config = yaml.safe_load((out / "train.yaml").read_text())
    assert config["task"] == "detect" and config["postprocess"] == meta["postprocess"]
    # the supernet was trained with the default resize mode; the export and train.yaml say so
    assert meta["resize"] == config["resize"] == "square"
    assert "stretched to 416 x 416" in meta["onnx"]["input"]
    # the ONNX file is the network without post-processing: three raw outputs per anchor point
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == list(HEAD_OUTPUTS)
    image = np.random.default_rng(0).standard_normal((1, 3, 416, 416), dtype=np.float32)
    outputs = session.run(None, {"images": image})
    anchors = sum(math.ceil(416 / stride) ** 2 for stride in (8, 16, 32, 64, 128))  # with the two extra levels
    assert "strides 8, 16, 32, 64, 128 (maps of 52, 26, 13, 7, 4 cells a side)" in meta["onnx"]["anchor_points"]
    assert outputs[0].shape == (1, anchors, meta["num_classes"] + 1)
    assert outputs[1].shape == (1, anchors, 4) and outputs[2].shape == (1, anchors, 1)
    model = load_exported(out)
    with torch.no_grad():
        expected = model.core()(torch.from_numpy(image))
    from nas_search.tasks.detect.static import EXP_CODED_OUTPUTS

    for name, actual, reference in zip(HEAD_OUTPUTS, outputs, expected):
        # as the exporter's own check: relative to the output's scale, and box distances
        # (exp of the raw output, where float32 rounding of a raw value near the e^10 clamp
        # becomes a large linear difference) compared as logs
        reference = reference.numpy()
        if name in EXP_CODED_OUTPUTS:
            actual, reference = np.log(np.maximum(actual, 1e-6)), np.log(np.maximum(reference, 1e-6))
        scale = max(1.0, float(np.abs(reference).max()))
        assert np.abs(actual - reference).max() / scale < 1e-3, name
    # and the rebuilt detector detects (torchvision post-processing with the exported settings)
    assert model.resize == "square" and model.transform.fixed_size == (416, 416)
    with torch.no_grad():
        detections = model([torch.rand(3, 300, 400)])
    assert set(detections[0]) == {"boxes", "scores", "labels"}
    # an export from before resize modes (no "resize" in meta.json) was trained longer-side
    legacy = out.parent / "exported-legacy"
    shutil.copytree(out, legacy)
    legacy_meta = {key: value for key, value in meta.items() if key != "resize"}
    (legacy / "meta.json").write_text(json.dumps(legacy_meta))
    assert load_exported(legacy).resize == "longer-side"


def test_detect_train_exported(detect_study: Path, detect_export: Path, nas_cli: CliRunner) -> None:
    out = detect_export
    result = nas_cli(
        detect_study, "train", str(out / "train.yaml"), "--epochs", "1", "--max-train", "16", "--json", timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert 0.0 <= report["map50"] <= 1.0 and Path(report["weights"]).is_file()


def test_detect_run_under_latency_and_memory_budgets(detect_study: Path, nas_cli: CliRunner, tmp_path: Path) -> None:
    """A detector search under an analytic device's latency budget and a peak-memory budget
    (both binding in the FLOPs band: about half the band's detectors exceed each)."""
    supernet = str(detect_study / json.loads((detect_study / "summary.json").read_text())["files"]["supernet"])
    result = nas_cli(
        tmp_path,
        "run",
        "--task",
        "detect",
        "--budget",
        str(BUDGET),
        "--latency",
        "600ms",
        "--device",
        "pixel2",
        "--memory",
        "25MB",
        "--supernet",
        supernet,
        "--study",
        "det-device",
        "--trials",
        "3",
        "--startup-trials",
        "3",
        "--max-val",
        "16",
        "--train-input-size",
        "64",
        "--calibration-images",
        "16",
        "--finalists",
        "0",
        "--quiet",
        "--json-summary",
        "summary.json",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="det-device", storage=f"sqlite:///{tmp_path / 'studies' / 'det-device.db'}")
    space = get_space("detect")
    for trial in study.trials:
        spec = ArchSpec.from_dict(json.loads(trial.user_attrs["arch_json"]))
        detector = space.resolve(spec, num_classes=3)
        assert trial.user_attrs["peak_memory"] == peak_of_program(detector_program(detector, 416)).peak_bytes
        assert trial.user_attrs["latency"] == pytest.approx(
            latency_model_for(space, "pixel2", input_size=416).for_classes(3)(spec)
        )
    best = json.loads((tmp_path / "summary.json").read_text())["best"]
    assert best is not None and best["latency"] <= 600 and best["peak_memory"] <= 25e6
    assert 0.8 * BUDGET <= best["flops"] <= BUDGET


def test_detect_run_under_a_profiled_cpu_latency_budget(
    detect_study: Path, detect_latency_table, nas_cli: CliRunner, tmp_path: Path
) -> None:
    """A detector search under a latency budget on this CPU (a profiled table, PyTorch
    eager): every trial's latency is the table model's for the data's 3 classes, the best
    meets the budget, and the chosen detector is measured at the end."""
    table, _ = detect_latency_table
    space = get_space("detect")
    model = latency_model_for(space, "cpu", lut_path=table).for_classes(3)
    rng = random.Random(0)
    band = []
    while len(band) < 40:
        spec = space.sample(rng, bias=rng.random())
        if 0.8 * BUDGET <= count_flops(spec, space, 416, 3).flops <= BUDGET:
            band.append(model(spec))
    limit = float(np.median(band))  # binds: half the band's detectors exceed it
    supernet = str(detect_study / json.loads((detect_study / "summary.json").read_text())["files"]["supernet"])
    result = nas_cli(
        tmp_path,
        "run",
        "--task",
        "detect",
        "--budget",
        str(BUDGET),
        "--latency",
        f"{limit:.3f}ms",
        "--device",
        "cpu",
        "--lut",
        str(table),
        "--supernet",
        supernet,
        "--study",
        "det-cpu",
        "--trials",
        "3",
        "--startup-trials",
        "3",
        "--max-val",
        "16",
        "--train-input-size",
        "64",
        "--calibration-images",
        "16",
        "--finalists",
        "0",
        "--quiet",
        "--json-summary",
        "summary.json",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="det-cpu", storage=f"sqlite:///{tmp_path / 'studies' / 'det-cpu.db'}")
    assert study.user_attrs["device"] == "cpu"
    for trial in study.trials:
        spec = ArchSpec.from_dict(json.loads(trial.user_attrs["arch_json"]))
        assert trial.user_attrs["latency"] == pytest.approx(model(spec))
    summary = json.loads((tmp_path / "summary.json").read_text())
    best = summary["best"]
    assert best is not None and best["latency"] <= float(f"{limit:.3f}")
    check = summary["latency_check"]
    assert check["predicted_ms"] == pytest.approx(best["latency"]) and check["measured_ms"] > 0
    assert "best architecture measured on cpu/torch/1thread" in result.stdout


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (
            ["--latency", "50ms", "--device", "cpu"],
            ["no latency table for space 'detect'", "nas-search profile --space detect"],
        ),
        (["--space", "mobile"], ["mobile"]),
    ],
)
def test_detect_run_refuses_what_it_cannot_do(
    extra: list[str], fragments: list[str], nas_cli: CliRunner, tmp_path: Path
) -> None:
    result = nas_cli(tmp_path, "run", "--task", "detect", "--budget", "4.5GFLOPs", *extra, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert not (tmp_path / "studies").exists() or not any((tmp_path / "studies").iterdir())

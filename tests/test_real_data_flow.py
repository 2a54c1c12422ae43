"""The typical flow on real data (../shared/data/cifar10-subset): supernet, search, export,
train. On real data the exported ``train.yaml`` trains at the deployment size, not at the
supernet's proxy size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import MICRO_BUDGET_TEXT, CliRunner

from nas_search.export import load_exported

from support import shared_data_path

pytestmark = pytest.mark.slow

PROXY_SIZE = 16  # the micro space deploys at 32 px


def test_real_data_export_trains_at_the_deployment_size(nas_cli: CliRunner, tmp_path: Path) -> None:
    data = str(shared_data_path("cifar10-subset"))
    supernet = tmp_path / "supernet.pt"
    trained = nas_cli(
        tmp_path,
        "supernet",
        "train",
        "--space",
        "micro",
        "--data",
        data,
        "--epochs",
        "1",
        "--max-train",
        "128",
        "--input-size",
        str(PROXY_SIZE),
        "--batch-size",
        "32",
        "--random-subnets",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(supernet),
        "--quiet",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    searched = nas_cli(
        tmp_path,
        "run",
        "--space",
        "micro",
        "--budget",
        MICRO_BUDGET_TEXT,
        "--data",
        data,
        "--supernet",
        str(supernet),
        "--train-input-size",
        str(PROXY_SIZE),
        "--trials",
        "3",
        "--startup-trials",
        "3",
        "--max-val",
        "100",
        "--finalists",
        "0",
        "--study",
        "real",
        "--quiet",
        "--json",
    )
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert json.loads(searched.stdout)["study"] == "real"  # --json: stdout is the document alone
    # the same folder given relative to the working folder is the same study (stored absolute)
    rerun = nas_cli(
        tmp_path,
        "run",
        "--space",
        "micro",
        "--budget",
        MICRO_BUDGET_TEXT,
        "--data",
        os.path.relpath(data, tmp_path),
        "--supernet",
        str(supernet),
        "--train-input-size",
        str(PROXY_SIZE),
        "--trials",
        "3",
        "--startup-trials",
        "3",
        "--max-val",
        "100",
        "--finalists",
        "0",
        "--study",
        "real",
        "--quiet",
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = optuna.load_study(study_name="real", storage=f"sqlite:///{tmp_path / 'studies' / 'real.db'}")
    assert study.user_attrs["data"] == str(Path(data).resolve()) and len(study.trials) == 3
    exported = nas_cli(tmp_path, "export", "--study", "real", "-o", str(tmp_path / "exported"), "--epochs", "1", "--json")
    assert exported.returncode == 0, exported.stderr[-3000:]
    config_path = tmp_path / "exported" / "train.yaml"
    config = yaml.safe_load(config_path.read_text())
    assert config["data"] == data and config["device"] == "auto"
    assert config["input_size"] == config["deployment_input_size"] == 32  # not the 16 px proxy

    result = nas_cli(tmp_path, "train", str(config_path), "--max-train", "128", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert len(report["history"]) == 1 and 0.0 <= report["accuracy"] <= 1.0
    model = load_exported(tmp_path / "exported")
    model.load_state_dict(torch.load(report["weights"], weights_only=True))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    # the training size and device can be overridden; a bad value is one line and exit code 2
    for option, value, fragment in (("--input-size", "4", "8 to 4096"), ("--device", "tpu", "auto, cpu, cuda")):
        bad = nas_cli(tmp_path, "train", str(config_path), option, value)
        assert bad.returncode == 2 and fragment in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

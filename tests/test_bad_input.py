"""Bad values for every command's options: one line on stderr naming the value and what
is accepted, exit status 2, no traceback, and nothing written or left half-written.

Each case runs the real ``nas-search`` entry point in-process (``cli.main``); the checks
all happen before any training, so the cases are fast. Found by an audit of every option
that takes a value (session 10).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SearchedStudy, micro_run_arguments

from nas_search.cli.main import main
from nas_search.tasks import get_space


def assert_one_line_error(arguments: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(arguments)
    error = capsys.readouterr().err
    lines = error.strip().splitlines()
    assert code == 2, error
    assert len(lines) == 1 and "Traceback" not in error, error
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def micro_arch(tmp_path: Path) -> Path:
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(get_space("micro").largest().to_dict()))
    return path


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--input-size", "0"], "--input-size 0 is out of range; accepted: 8 to 4096"),
        (["--input-size", "-5"], "--input-size -5 is out of range"),
        (["--num-classes", "-3", "--check-fvcore"], "--num-classes -3; accepted: 1 or more"),
        (["--num-classes", "0"], "--num-classes 0; accepted: 1 or more"),
    ],
)
def test_cost_options(micro_arch: Path, options: list[str], expected: str, capsys) -> None:
    assert_one_line_error(["cost", str(micro_arch), *options], expected, capsys)


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--device", "tpu"], "unknown device 'tpu'; accepted: auto, cpu, cuda"),
        (["--calibration-images", "0"], "--calibration-images 0; accepted: 1 or more"),
        (["--calibration-images", "-1"], "--calibration-images -1; accepted: 1 or more"),
    ],
)
def test_eval_options(micro_supernet: Path, micro_arch: Path, options: list[str], expected: str, capsys) -> None:
    assert_one_line_error(["eval", "--checkpoint", str(micro_supernet), "--arch", str(micro_arch), *options], expected, capsys)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda payload: payload.pop("model"), "its 'model' entry is missing, not a dict"),
        (lambda payload: payload.update(num_classes="ten"), "its 'num_classes' entry is a str, not a int"),
    ],
)
def test_a_damaged_checkpoint_is_refused_by_eval_and_run(
    micro_supernet: Path, micro_arch: Path, tmp_path: Path, damage, expected: str, capsys, monkeypatch
) -> None:
    payload = torch.load(micro_supernet, map_location="cpu", weights_only=True)
    damage(payload)
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    assert_one_line_error(["eval", "--checkpoint", str(damaged), "--arch", str(micro_arch)], expected, capsys)
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(list(micro_run_arguments("damaged", damaged)), expected, capsys)


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--seed", "-1"], "--seed -1; accepted: 0 to 4294967295"),
        (["--seed", "4294967296"], "--seed 4294967296; accepted: 0 to 4294967295"),
        (["--startup-trials", "-1"], "--startup-trials -1; accepted: 0 or more"),
        (["--calibration-images", "0"], "--calibration-images 0; accepted: 1 or more"),
        (["--max-train", "0"], "--max-train 0; accepted: 1 or more"),
        (["--max-val", "0"], "--max-val 0; accepted: 1 or more"),
        (["--objectives", "accuracy,accuracy"], "--objectives accuracy,accuracy; accepted: accuracy plus any of"),
        (["--objectives", ","], "--objectives ''; accepted: accuracy plus any of"),
        (["--json-summary", "taken"], "--json-summary taken is a folder; accepted: a file path"),
    ],
)
def test_run_options_are_refused_before_a_study_exists(
    micro_supernet: Path, tmp_path: Path, options: list[str], expected: str, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    assert_one_line_error([*micro_run_arguments("refused", micro_supernet), *options], expected, capsys)
    assert not (tmp_path / "studies").exists()  # no database, no study folder


def test_export_refuses_a_file_as_its_folder_and_bad_epochs(
    micro_study: SearchedStudy, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(micro_study.directory)
    taken = tmp_path / "notes.txt"
    taken.write_text("kept")
    assert_one_line_error(
        ["export", "--study", micro_study.name, "-o", str(taken)], f"--out {taken} is a file; accepted: a folder", capsys
    )
    assert taken.read_text() == "kept"
    for epochs in ("0", "-3"):
        assert_one_line_error(
            ["export", "--study", micro_study.name, "-o", str(tmp_path / "export"), "--epochs", epochs],
            f"--epochs {epochs}; accepted: 1 or more",
            capsys,
        )
    assert not (tmp_path / "export").exists()


@pytest.fixture(scope="module")
def exported_train_yaml(micro_study: SearchedStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad-input-export") / "export"
    storage = micro_study.storage_url
    assert main(["export", "--study", micro_study.name, "--storage", storage, "-o", str(folder), "--epochs", "1"]) == 0
    return folder / "train.yaml"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("learning_rate", -0.1, "learning_rate=-0.1; accepted: a number > 0"),
        ("label_smoothing", 2.0, "label_smoothing=2.0; accepted: 0 to below 1"),
        ("weight_decay", -1.0, "weight_decay=-1.0; accepted: 0 or more"),
        ("warmup_epochs", -1.0, "warmup_epochs=-1.0; accepted: 0 or more"),
        ("deployment_input_size", 0, "deployment_input_size=0; accepted: 8 to 4096 pixels, or null"),
        ("num_classes", 0, "num_classes=0; accepted: 1 or more, or null"),
        ("optimizer", "adam", "optimizer='adam'; accepted: sgd, adamw"),
        ("batch_size", 0, "batch_size=0; accepted: 1 or more"),
    ],
)
def test_classifier_train_yaml_values(
    exported_train_yaml: Path, tmp_path: Path, key: str, value, expected: str, capsys
) -> None:
    folder = tmp_path / "export"
    shutil.copytree(exported_train_yaml.parent, folder)
    config = yaml.safe_load((folder / "train.yaml").read_text())
    (folder / "train.yaml").write_text(yaml.safe_dump({**config, key: value}))
    assert_one_line_error(["train", str(folder / "train.yaml"), "--quiet"], expected, capsys)
    assert not (folder / config["out"]).exists()


def test_train_refuses_an_out_that_is_a_file_or_unwritable(exported_train_yaml: Path, tmp_path: Path, capsys) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("kept")
    assert_one_line_error(
        ["train", str(exported_train_yaml), "--out", str(taken), "--quiet"], "is a file; accepted: a folder", capsys
    )
    assert taken.read_text() == "kept"
    assert_one_line_error(
        ["train", str(exported_train_yaml), "--out", str(taken / "inside"), "--quiet"],
        "is a file, so nothing can be written there",
        capsys,
    )


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--input-size", "0"], "input_size=0; accepted: 8 to 4096 pixels"),
        (["--epochs", "3", "--channel-regeneration-epoch", "99"], "channel_regeneration_epoch=99; accepted: 1 to 2"),
        (["--epochs", "3", "--channel-regeneration-epoch", "-2"], "channel_regeneration_epoch=-2; accepted: 1 to 2"),
        (["--epochs", "3", "--full-width-warmup-epochs", "-1"], "full_width_warmup_epochs=-1; accepted: 0 to 2"),
    ],
)
def test_supernet_train_options(tmp_path: Path, options: list[str], expected: str, capsys) -> None:
    out = tmp_path / "supernet.pt"
    assert_one_line_error(["supernet", "train", "--space", "micro", "--out", str(out), "--quiet", *options], expected, capsys)
    assert not out.exists()


def test_supernet_train_refuses_a_folder_as_its_checkpoint(tmp_path: Path, capsys) -> None:
    assert_one_line_error(
        ["supernet", "train", "--space", "micro", "--out", str(tmp_path), "--quiet"],
        f"--out {tmp_path} is a folder; accepted: a file path",
        capsys,
    )


def test_dashboard_checks_its_host_port_and_artifact_folder_before_starting(
    micro_study: SearchedStudy, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(micro_study.directory)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(
            ["dashboard", "--study", micro_study.name, "--port", str(port)],
            f"--port {port} on 127.0.0.1: Address already in use; accepted: a free port",
            capsys,
        )
    assert_one_line_error(
        ["dashboard", "--study", micro_study.name, "--host", "999.1.1.1"], "--host '999.1.1.1' does not resolve", capsys
    )
    taken = tmp_path / "artifacts.txt"
    taken.write_text("kept")
    assert_one_line_error(
        ["dashboard", "--study", micro_study.name, "--artifact-dir", str(taken)], f"--artifact-dir {taken} is a file", capsys
    )


def test_profile_refuses_an_unwritable_table_path_before_profiling(tmp_path: Path, capsys) -> None:
    blocked = tmp_path / "file.txt"
    blocked.write_text("kept")
    assert_one_line_error(
        ["profile", "--space", "micro", "--device", "cpu", "--runtime", "torch", "--out", str(blocked / "table.json")],
        "is a file, so nothing can be written there",
        capsys,
    )
    assert_one_line_error(
        ["profile", "--space", "micro", "--device", "cpu", "--runtime", "torch", "--out", str(tmp_path)],
        "is a folder; accepted: a file path",
        capsys,
    )


def test_worker_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path, capsys) -> None:
    database = tmp_path / "nowhere.db"
    assert_one_line_error(["worker", "--storage", f"sqlite:///{database}", "--study", "e2e"], "no study database there", capsys)
    assert not database.exists()


def test_a_folder_given_for_a_file_is_called_a_folder(micro_arch: Path, tmp_path: Path, capsys) -> None:
    assert_one_line_error(["cost", str(tmp_path)], f"architecture file is a folder, not a file: {tmp_path}", capsys)
    assert_one_line_error(
        ["eval", "--checkpoint", str(tmp_path), "--arch", str(micro_arch)],
        f"checkpoint is a folder, not a file: {tmp_path}",
        capsys,
    )
    assert_one_line_error(["train", str(tmp_path)], f"training config file is a folder, not a file: {tmp_path}", capsys)
    assert_one_line_error(["cost", str(tmp_path / "missing.yaml")], "architecture file not found", capsys)


def test_json_summary_never_overwrites_a_file_the_run_needs(
    micro_study: SearchedStudy, micro_supernet: Path, capsys, monkeypatch
) -> None:
    """``--json-summary`` pointed at the study's own database or its supernet is refused in
    one line before any work, and both files stay as they were (they used to be replaced by
    the JSON summary, destroying the study)."""
    monkeypatch.chdir(micro_study.directory)
    database = micro_study.directory / "studies" / f"{micro_study.name}.db"
    kept = {database: database.read_bytes(), micro_supernet: micro_supernet.read_bytes()}
    arguments = list(micro_run_arguments(micro_study.name, micro_supernet))
    for target, what in ((f"studies/{micro_study.name}.db", "the study database"), (str(micro_supernet), "the supernet")):
        assert_one_line_error([*arguments, "--json-summary", target], f"--json-summary {target} is {what}", capsys)
    assert all(path.read_bytes() == content for path, content in kept.items())
    assert database.read_bytes()[:16] == b"SQLite format 3\x00"

"""The foundation CLI commands: spaces, sample, cost, and their bad-input behaviour."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas_search.cli.main import main
from nas_search.spec import save_arch
from nas_search.tasks import get_space

REPOSITORY = Path(__file__).resolve().parent.parent


def run_cli(*arguments: str, cwd: Path = REPOSITORY) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas_search.cli", *arguments], cwd=cwd, capture_output=True, text=True)


def test_spaces_json_lists_ranges(capsys):
    assert main(["spaces", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["mobile"]["input_size"] == 224 and rows["cifar"]["input_size"] == 32
    assert rows["mobile"]["flops"]["min"] < 0.1e9 and rows["mobile"]["flops"]["max"] > 6e9
    assert rows["cifar"]["flops"]["min"] <= 5e6 and rows["cifar"]["flops"]["max"] >= 450e6


def test_sample_spreads_over_the_mobile_range(capsys):
    assert main(["sample", "--space", "mobile", "--n", "200", "--seed", "0", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    flops = [line["flops"] for line in lines]
    assert len(lines) == 200 and len({line["arch_string"] for line in lines}) == 200
    assert min(flops) < 0.15e9 and max(flops) > 5e9


def test_sample_with_budget_stays_inside_and_spreads(capsys):
    assert main(["sample", "--space", "mobile", "--n", "40", "--seed", "1", "--budget", "2GFLOPs", "--json"]) == 0
    flops = sorted(json.loads(line)["flops"] for line in capsys.readouterr().out.splitlines())
    assert flops[-1] <= 2e9 and flops[-1] > 1e9  # reaches the top of the feasible range
    assert sum(f > 0.5e9 for f in flops) >= 8  # not crowded at the small end


def test_cost_with_fvcore_check(tmp_path, capsys):
    space = get_space("cifar")
    path = save_arch(space.largest(), tmp_path / "arch.yaml")
    assert main(["cost", str(path), "--check-fvcore", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flops"] == report["fvcore_flops"] and report["params"] > 0
    assert set(report["breakdown"]) == {"stem", "stage0", "stage1", "stage2", "stage3", "head"}
    assert sum(part["flops"] for part in report["breakdown"].values()) == report["flops"]


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["sample", "--space", "nope"], "unknown space 'nope'"),
        (["sample", "--budget", "4.5GB"], "accepted forms"),
        (["sample", "--space", "mobile", "--budget", "1MFLOPs"], "below the smallest subnet"),
        (["cost", "missing.yaml"], "not found"),
        (["supernet", "train", "--space", "micro", "--budget", "1000", "--out", "never.pt"], "below the smallest subnet"),
        (["supernet", "train", "--space", "micro", "--budget", "lots", "--out", "never.pt"], "accepted forms"),
        (["supernet", "train", "--space", "micro", "--teacher", "tallest", "--out", "never.pt"], "invalid choice: 'tallest'"),
        (["supernet", "train", "--space", "micro", "--teacher", "widest", "--out", "never.pt"], "give a --budget too"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(arguments, expected):
    result = run_cli(*arguments)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr


def test_supernet_sampling_options_reach_both_training_configs():
    from nas_search.cli.commands import detection_training_config_from_arguments, training_config_from_arguments
    from nas_search.cli.main import build_parser

    parser = build_parser()
    defaults = training_config_from_arguments(parser.parse_args(["supernet", "train"]))
    assert defaults.fair_operations and defaults.budget_teacher == "widest"
    chosen = training_config_from_arguments(
        parser.parse_args(["supernet", "train", "--no-fair-operations", "--teacher", "projected", "--budget", "50MFLOPs"])
    )
    assert not chosen.fair_operations and chosen.budget_teacher == "projected"
    detection = detection_training_config_from_arguments(parser.parse_args(["supernet", "train", "--space", "detect"]))
    assert not detection.fair_operations and detection.budget_teacher == "projected"
    detection = detection_training_config_from_arguments(
        parser.parse_args(
            ["supernet", "train", "--space", "detect", "--fair-operations", "--teacher", "widest", "--budget", "2GFLOPs"]
        )
    )
    assert detection.fair_operations and detection.budget_teacher == "widest"


def test_malformed_and_out_of_space_spec_files(tmp_path):
    malformed = tmp_path / "bad.yaml"
    malformed.write_text("space: cifar\nstages: [[\n")
    outside = tmp_path / "outside.yaml"
    data = get_space("cifar").largest().to_dict()
    data["stages"][0]["blocks"][0]["width"] = 0.3
    outside.write_text(json.dumps(data))
    for path, expected in ((malformed, "not valid YAML"), (outside, "outside the space")):
        result = run_cli("cost", str(path))
        assert result.returncode == 2 and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_ctrl_c_swallowed_in_a_finaliser_is_still_seen():
    """Python drops a KeyboardInterrupt raised inside a finaliser ("Exception ignored in"),
    as happened inside SQLAlchemy's cleanup during a search; the watch remembers the signal
    so the search loop stops at its next check, and the previous handler comes back."""
    import gc
    import os
    import signal
    import time

    from nas_search.search.study import interrupt_watch, raise_if_interrupted

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside the finaliser, and its exception is dropped

    # a process that handles Ctrl-C (one started as a background job of a script ignores it,
    # and then the watch rightly installs nothing)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupt_watch() as interrupted:
            instance = Finalised()
            del instance
            gc.collect()
            assert interrupted.is_set()
            with pytest.raises(KeyboardInterrupt):
                raise_if_interrupted(interrupted)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


@pytest.mark.parametrize("command", [["cost"], ["train"], ["eval", "--checkpoint", "none.pt", "--arch"]])
def test_a_binary_file_given_as_a_config_is_one_line_and_exit_code_2(command, tmp_path):
    """Handing over model.pt or model.onnx instead of arch.yaml or train.yaml is an easy slip."""
    binary = tmp_path / "model.onnx"
    binary.write_bytes(bytes(range(256)) * 4)
    result = run_cli(*command, str(binary))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(binary) in lines[0] and "Traceback" not in result.stderr

"""End-to-end tests of the main job through the CLI: ``run``, the study it leaves,
continuing it, Ctrl-C, ``export``, ``train`` and one-line errors for bad input.

Every command runs as ``python -m nas_search.cli`` in a temporary working directory (so
``studies/`` lands there), on the ``micro`` space with one supernet per session.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import (
    MICRO_BUDGET_FLOPS,
    MICRO_BUDGET_TEXT,
    MICRO_TRIALS,
    REPOSITORY_ROOT,
    CliRunner,
    SearchedStudy,
    cli_command,
    cli_environment,
    micro_run_arguments,
)
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.trial import TrialState

from nas_search.hw_models import ParamsModel
from nas_search.search.sampling import flops_range
from nas_search.spec import ArchSpec
from nas_search.tasks import get_space

from support import shared_data_path

pytestmark = pytest.mark.slow


def load_study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def copy_study(study: SearchedStudy, destination: Path) -> Path:
    """A private copy of the searched study's working directory."""
    target = destination / "work"
    shutil.copytree(study.directory, target)
    return target


def tree_digest(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``directory``."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, exactly one line on stderr, no traceback; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def trial_states(url: str, name: str) -> list[TrialState]:
    return [trial.state for trial in load_study(url, name).get_trials(deepcopy=False)]


# ---------------------------------------------------------------------------- run
def test_run_prints_summary_and_writes_json(micro_study: SearchedStudy) -> None:
    summary = micro_study.summary
    assert summary["study"] == micro_study.name
    assert summary["storage"] == f"sqlite:///studies/{micro_study.name}.db"
    assert summary["trials"] == MICRO_TRIALS
    assert 0 < summary["feasible_fraction"] <= 1
    best = summary["best"]
    assert {"flops", "accuracy", "arch", "trial"} <= set(best)
    assert 0.8 * MICRO_BUDGET_FLOPS <= best["flops"] <= MICRO_BUDGET_FLOPS
    assert 0.0 <= best["accuracy"] <= 1.0
    spec = ArchSpec.from_dict(best["arch"])
    assert spec.space == "micro"
    # the summary table and the feasible fraction are printed
    assert f"{summary['feasible_fraction']:.0%} feasible" in micro_study.stdout
    assert "accuracy" in micro_study.stdout and "architecture" in micro_study.stdout
    # each architecture in its short form, with its share of the budget; the full form is in the JSON
    assert spec.brief() in micro_study.stdout and str(spec) not in micro_study.stdout
    assert f"({best['flops'] / MICRO_BUDGET_FLOPS:.0%})" in micro_study.stdout
    assert all(len(line) <= 160 for line in micro_study.stdout.splitlines() if line.strip().startswith(str(best["trial"])))
    assert summary["search_seconds"] > 0 and f"{summary['trials']} trials in " in micro_study.stdout
    assert f"nas-search export --study {micro_study.name} --trial {best['trial']}" in micro_study.stdout
    # every row of the table is a feasible trial inside the band
    for row in summary["top"]:
        assert 0.8 * MICRO_BUDGET_FLOPS <= row["flops"] <= MICRO_BUDGET_FLOPS
    assert [row["accuracy"] for row in summary["top"]] == sorted((row["accuracy"] for row in summary["top"]), reverse=True)


def test_study_database_holds_review_material(micro_study: SearchedStudy) -> None:
    from optuna_dashboard import get_note

    study = load_study(micro_study.storage_url, micro_study.name)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == MICRO_TRIALS
    # feasible trials are complete with their score; infeasible ones pruned, with no made-up score
    assert all(trial.state == (TrialState.COMPLETE if trial.user_attrs["feasible"] else TrialState.PRUNED) for trial in trials)
    feasible_count = 0
    for trial in trials:
        attributes = trial.user_attrs
        assert {"arch", "arch_json", "flops", "params", "feasible", "constraint:flops", "constraint:flops_utilization"} <= set(
            attributes
        )
        spec = ArchSpec.from_json(attributes["arch_json"])
        assert str(spec) == attributes["arch"]
        # the constraints Optuna's samplers read agree with the mirrored attributes
        assert trial.constraints == {
            "flops": attributes["constraint:flops"],
            "flops_utilization": attributes["constraint:flops_utilization"],
        }
        assert trial.constraints["flops"] == pytest.approx((attributes["flops"] - MICRO_BUDGET_FLOPS) / MICRO_BUDGET_FLOPS)
        feasible = all(value <= 0 for value in trial.constraints.values())
        assert attributes["feasible"] is feasible
        assert (0.8 * MICRO_BUDGET_FLOPS <= attributes["flops"] <= MICRO_BUDGET_FLOPS) is feasible
        feasible_count += feasible
        if feasible:
            assert 0.0 <= attributes["accuracy"] <= 1.0
            assert trial.value == attributes["accuracy"]
    assert micro_study.summary["feasible_fraction"] == pytest.approx(feasible_count / len(trials))

    attributes = study.user_attrs
    assert attributes["space"] == "micro"
    assert attributes["budget_flops"] == MICRO_BUDGET_FLOPS and attributes["budget_text"] == "8MFLOPs"
    assert attributes["input_size"] == 32 and attributes["train_input_size"] == 32
    assert attributes["device"] and attributes["dataset"]
    supernet = Path(attributes["supernet"])
    assert attributes["supernet_checksum"] and supernet.is_file()

    note = get_note(study)
    assert f"nas-search study `{micro_study.name}`" in note and "Best feasible architectures" in note
    best = micro_study.summary["best"]
    assert best["arch_brief"].replace("|", "\\|") in note  # short form, escaped for the markdown table
    assert f"{len(trials)} finished" in note
    study_system_attributes = study._storage.get_study_system_attrs(study._study_id)  # where the dashboard keeps graphs
    graphs = [key for key in study_system_attributes if key.startswith("dashboard:plot_data:")]
    assert graphs, "no plotly graph saved for the dashboard"
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    figure = json.loads(next(iter(get_plotly_graph_objects(study_system_attributes).values())))
    assert "FLOPs" in json.dumps(figure["layout"])
    # the band is shaded, the Pareto front drawn, and only evaluated trials carry a score
    assert "budget band" in json.dumps(figure["layout"])
    traces = {trace["name"]: trace for trace in figure["data"]}
    evaluated = [trial for trial in trials if trial.user_attrs["feasible"]]
    assert len(traces["evaluated trials"]["y"]) == len(evaluated) and 0.0 not in traces["evaluated trials"]["y"]
    assert max(traces["Pareto front"]["y"]) == max(trial.value for trial in evaluated)

    artifact_dir = micro_study.directory / "studies" / micro_study.name / "artifacts"
    store = FileSystemArtifactStore(str(artifact_dir))
    for trial in trials:
        metas = {meta.filename: meta for meta in get_all_artifact_meta(trial, storage=study._storage)}
        if not trial.user_attrs["feasible"]:
            assert not metas
            continue
        assert set(metas) == {f"trial-{trial.number}-arch.json", f"trial-{trial.number}-widths.svg"}
        downloaded = micro_study.directory / f"download-{trial.number}.json"
        download_artifact(
            artifact_store=store, file_path=str(downloaded), artifact_id=metas[f"trial-{trial.number}-arch.json"].artifact_id
        )
        assert ArchSpec.from_dict(json.loads(downloaded.read_text())) == ArchSpec.from_json(trial.user_attrs["arch_json"])
        downloaded.unlink()
        chart = artifact_dir / metas[f"trial-{trial.number}-widths.svg"].artifact_id
        assert chart.read_text().startswith("<svg")


def test_rerun_of_a_finished_study_adds_no_trial(micro_study: SearchedStudy, nas_cli: CliRunner, tmp_path: Path) -> None:
    work = copy_study(micro_study, tmp_path)
    url = f"sqlite:///{work / 'studies' / (micro_study.name + '.db')}"
    before = [(trial.number, trial.user_attrs["arch"]) for trial in load_study(url, micro_study.name).trials]
    result = nas_cli(work, *micro_study.arguments)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{MICRO_TRIALS} planned trials (0 new)" in result.stdout
    after = [(trial.number, trial.user_attrs["arch"]) for trial in load_study(url, micro_study.name).trials]
    assert after == before
    assert json.loads((work / "summary.json").read_text())["best"] == micro_study.summary["best"]


def test_a_rerun_names_trials_still_running(micro_study: SearchedStudy, nas_cli: CliRunner, tmp_path: Path) -> None:
    """A trial RUNNING in the storage (another worker's, or left by a killed run) is named
    in the summary, not silently left out of the count."""
    work = copy_study(micro_study, tmp_path)
    study = load_study(f"sqlite:///{work / 'studies' / f'{micro_study.name}.db'}", micro_study.name)
    study.ask()  # a trial some process is (or was) on
    rerun = nas_cli(work, *micro_study.arguments)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "note: 1 trial(s) still RUNNING" in rerun.stdout and "the same command retries them" in rerun.stdout


def test_requeue_is_idempotent_and_completes_a_half_done_requeue(tmp_path: Path) -> None:
    """requeue fails a RUNNING trial and enqueues its parameters once; called again (a retry
    after the storage refused a write), it neither duplicates the copy nor loses a trial that
    was failed but not yet enqueued."""
    from nas_search.search.study import requeue

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'q.db'}", study_name="q")
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    requeue(study, first)
    requeue(study, first)
    copies = [trial for trial in study.trials if trial.user_attrs.get("requeued_from") == first.number]
    assert study.trials[first.number].state == TrialState.FAIL and len(copies) == 1
    assert copies[0].state == TrialState.WAITING and copies[0].system_attrs["fixed_params"] == {"x": first.params["x"]}
    second = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(second, state=TrialState.FAIL)  # failed, and the write that enqueues it never happened
    requeue(study, second)
    assert [trial.user_attrs.get("requeued_from") for trial in study.trials].count(second.number) == 1


def test_ctrl_c_requeues_the_running_trial_and_a_rerun_finishes(
    micro_study: SearchedStudy, nas_cli: CliRunner, tmp_path: Path
) -> None:
    """SIGINT mid-search leaves no RUNNING trial (the interrupted one is failed and requeued);
    the same command again completes every planned trial and adds none."""
    work = tmp_path
    name = "interrupted"
    database = work / "studies" / f"{name}.db"
    url = f"sqlite:///{database}"
    # enough queued work, each trial scoring 1,000 images, that the signal lands mid-search and
    # not after the last trial (on a quiet machine 20 trials on 100 images took about 2 s); a
    # study of its own, since the validation subset is part of a study's identity
    added = 40
    trials = added
    arguments = micro_run_arguments(name, Path(micro_study.summary["files"]["supernet"]), trials, "--max-val", "1000")
    # the child handles Ctrl-C even when this test runs as a script's background job (which
    # starts with SIGINT ignored, and Python then never raises KeyboardInterrupt)
    process = subprocess.Popen(
        cli_command(*arguments),
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # interrupt once the search is under way (two of the new trials done) with work still
        # queued; waiting for a RUNNING row raced on a quiet machine, where a micro trial is
        # RUNNING for a small share of the loop and the poll saw it only near the end
        deadline = time.monotonic() + 240
        under_way = False
        while time.monotonic() < deadline and process.poll() is None and not under_way:
            counts = {}
            if database.exists():
                try:
                    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
                        counts = dict(connection.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
                except sqlite3.OperationalError:  # the study's tables are not there yet
                    pass
            under_way = counts.get("COMPLETE", 0) >= 2 and counts.get("WAITING", 0) >= 5
            time.sleep(0.05)
        assert under_way, "the search did not get under way"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert f"{trials} planned trials ({added} new)" in stdout
    states = trial_states(url, name)
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.WAITING) >= 1
    interrupted = [trial for trial in load_study(url, name).trials if trial.state == TrialState.FAIL]
    requeued = [trial for trial in load_study(url, name).trials if "requeued_from" in trial.user_attrs]
    assert [trial.user_attrs["requeued_from"] for trial in requeued] == [trial.number for trial in interrupted]

    rerun = nas_cli(work, *arguments)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{trials} planned trials (0 new)" in rerun.stdout
    states = trial_states(url, name)
    assert states.count(TrialState.COMPLETE) == trials
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states


# ---------------------------------------------------------------------------- export / train
@pytest.fixture(scope="module")
def exported(micro_study: SearchedStudy, nas_cli: CliRunner, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "exported"
    result = nas_cli(micro_study.directory, "export", "--study", micro_study.name, "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["trial"] == micro_study.summary["best"]["trial"]
    return out


def test_export_writes_loadable_files(exported: Path, micro_study: SearchedStudy) -> None:
    import onnxruntime

    from nas_search.export import load_exported
    from nas_search.hw_models.flops import count_flops
    from nas_search.spec import load_arch

    assert sorted(path.name for path in exported.iterdir()) == sorted(
        ["arch.yaml", "train.yaml", "model.pt", "model.onnx", "meta.json"]
    )
    spec = load_arch(exported / "arch.yaml")
    best = micro_study.summary["best"]
    assert spec == ArchSpec.from_dict(best["arch"])
    train_config = yaml.safe_load((exported / "train.yaml").read_text())
    assert ArchSpec.from_dict(train_config["arch"]) == spec and train_config["init"] == "inherited"

    meta = json.loads((exported / "meta.json").read_text())
    assert meta["study"] == micro_study.name and meta["trial"] == best["trial"]
    assert meta["flops"] == best["flops"] == count_flops(spec, get_space("micro"), 32, meta["num_classes"]).flops
    assert meta["params"] == best["params"]
    assert meta["accuracy"] == best["accuracy"]
    assert meta["latency_ms"]["cpu-onnxruntime-2threads"] > 0
    study = load_study(micro_study.storage_url, micro_study.name)
    assert meta["supernet_checksum"] == study.user_attrs["supernet_checksum"]
    # how to feed the ONNX file: shape, scaling, the normalisation the network was scored with
    assert meta["onnx"]["input"].startswith("input: float32 [batch, 3, 32, 32], RGB pixels / 255 normalised with mean [")
    assert train_config["data"] is None  # the built-in demo

    state = torch.load(exported / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(tensor, torch.Tensor) for tensor in state.values())
    model = load_exported(exported)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images).numpy()
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    assert actual.shape == (3, meta["num_classes"])
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


def test_export_refuses_a_changed_supernet(micro_study: SearchedStudy, nas_cli: CliRunner, tmp_path: Path) -> None:
    """The exported weights must be the ones the study scored: a supernet file changed since
    (retrained, replaced) is a one-line error, and the target folder stays as it was."""
    work = tmp_path / "work"
    supernet = tmp_path / "supernet.pt"
    shutil.copy(micro_study.summary["files"]["supernet"], supernet)
    database = tmp_path / "study.db"
    shutil.copy(micro_study.directory / "studies" / f"{micro_study.name}.db", database)
    study = load_study(f"sqlite:///{database}", micro_study.name)
    study.set_user_attr("supernet", str(supernet))
    with supernet.open("ab") as handle:
        handle.write(b"changed")
    work.mkdir()
    result = nas_cli(work, "export", "--study", micro_study.name, "--storage", f"sqlite:///{database}", "-o", "out")
    assert_one_line_error(result, str(supernet), "changed since study", study.user_attrs["supernet_checksum"])
    assert not (work / "out").exists() or not any((work / "out").iterdir())


def test_train_resume_and_scratch(exported: Path, nas_cli: CliRunner, tmp_path: Path) -> None:
    from nas_search.export import load_exported

    work = tmp_path / "exported"
    shutil.copytree(exported, work)
    config = work / "train.yaml"
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "max_val": 100, "batch_size": 32}, sort_keys=False))  # a user's edit
    quick = ("--max-train", "64", "--json", "--quiet")
    first = nas_cli(tmp_path, "train", str(config), "--epochs", "1", *quick)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads(first.stdout)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["initial_accuracy"] is not None
    assert result["epochs"] == 1 and len(result["history"]) == 1
    checkpoint = Path(result["checkpoint"])
    checkpoint = checkpoint if checkpoint.is_absolute() else tmp_path / checkpoint
    assert checkpoint.is_file()
    weights = work / "trained" / "model.pt"
    model = load_exported(work)
    model.load_state_dict(torch.load(weights, weights_only=True))  # the trained weights fit the architecture

    resumed = nas_cli(tmp_path, "train", str(config), "--epochs", "2", "--resume", *quick)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr  # with --json, stdout holds the JSON document alone
    resumed_result = json.loads(resumed.stdout)
    assert len(resumed_result["history"]) == 2
    assert resumed_result["history"][0] == result["history"][0]  # epoch 1 was not trained again
    assert resumed_result["initial_accuracy"] is None
    assert resumed_result["accuracy"] == resumed_result["history"][1]["accuracy"]
    fewer = nas_cli(tmp_path, "train", str(config), "--epochs", "1", "--resume", *quick)
    assert_one_line_error(fewer, "holds 2 trained epochs", "--epochs 2 or more")
    other_size = nas_cli(tmp_path, "train", str(config), "--epochs", "3", "--resume", "--input-size", "16", *quick)
    assert_one_line_error(other_size, "input_size", "16")  # a checkpoint continues only at its own size
    other_steps = nas_cli(
        tmp_path, "train", str(config), "--epochs", "3", "--resume", "--json", "--quiet", "--max-train", "32"
    )  # 1 step per epoch of 32 images, not 2: the schedule would jump
    assert_one_line_error(other_steps, "2 steps per epoch, not 1", "--max-train")

    # a rerun without --resume does not overwrite the finished run's checkpoint
    checkpoint = config.parent / "trained" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    overwrite = nas_cli(tmp_path, "train", str(config), "--epochs", "1", "--init", "scratch", *quick)
    assert_one_line_error(overwrite, str(checkpoint), "already exists", "--resume", "--out DIR")
    assert checkpoint.read_bytes() == before
    scratch = nas_cli(tmp_path, "train", str(config), "--epochs", "1", "--init", "scratch", "--out", "scratch", *quick)
    assert scratch.returncode == 0, scratch.stderr[-2000:]
    assert (tmp_path / "scratch" / "checkpoint.pt").is_file()  # --out is relative to the working folder
    scratch_result = json.loads(scratch.stdout)
    assert 0.0 <= scratch_result["accuracy"] <= 1.0 and len(scratch_result["history"]) == 1
    bad_init = nas_cli(tmp_path, "train", str(config), "--init", "pretrained")
    assert_one_line_error(bad_init, "pretrained", "inherited, scratch")


# ---------------------------------------------------------------------------- bad input
BAD_RUN_ARGUMENTS = {
    "budget with a memory unit": (["--budget", "4.5GB"], ["4.5GB", "4.5GFLOPs"]),
    "budget in words": (["--budget", "lots"], ["lots", "4.5GMACs"]),
    "negative budget": (["--budget", "-1G"], ["'-1G'", "4.5GFLOPs"]),
    "unknown sampler": (["--sampler", "annealing"], ["annealing", "tpe"]),
    "unknown space": (["--space", "huge"], ["huge", "micro"]),
    "unknown objective": (["--objectives", "accuracy,speed"], ["speed", "accuracy"]),
    "unreachable storage": (["--storage", "postgresql://nobody@127.0.0.1:1/x"], ["postgresql://nobody@127.0.0.1:1/x"]),
    "parameter budget in words": (["--params", "lots"], ["parameter budget", "lots", "5M"]),
    "parameter budget below every subnet": (["--params", "1K"], ["--params budget 1.00K params", "smallest subnet"]),
    "bad study name": (["--study", "../escape"], ["../escape"]),
    "missing data folder": (["--data", "/nonexistent-nas-search-data"], ["/nonexistent-nas-search-data", "ImageFolder"]),
    "negative finalists": (["--finalists", "-1"], ["--finalists -1", "0 (off)"]),
    "unknown finalist init": (["--finalist-init", "pretrained"], ["pretrained", "inherited, scratch"]),
    "zero deployment size": (["--input-size", "0"], ["--input-size 0", "8 to 4096"]),
    "zero supernet epochs": (["--supernet-epochs", "0"], ["--supernet-epochs 0", "1 or more"]),
    "zero finalist size": (["--finalists", "1", "--finalist-size", "0"], ["--finalist-size 0", "positive image size"]),
    "zero finalist seeds": (["--finalists", "1", "--finalist-seeds", "0"], ["--finalist-seeds 0", "1 or more"]),
}


@pytest.mark.parametrize("case", list(BAD_RUN_ARGUMENTS), ids=list(BAD_RUN_ARGUMENTS))
def test_bad_run_input_is_one_line_and_overwrites_nothing(
    case: str, nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path
) -> None:
    replacement, fragments = BAD_RUN_ARGUMENTS[case]
    summary = tmp_path / "summary.json"
    summary.write_text('{"kept": true}\n')
    arguments = list(micro_run_arguments("bad", micro_supernet, 2, "--json-summary", str(summary)))
    for index in range(0, len(replacement), 2):  # the bad value replaces the default one
        option = replacement[index]
        if option in arguments:
            arguments[arguments.index(option) + 1] = replacement[index + 1]
        else:
            arguments += replacement[index : index + 2]
    result = nas_cli(tmp_path, *arguments, timeout=120)
    assert_one_line_error(result, *fragments)
    assert summary.read_text() == '{"kept": true}\n'
    assert not (tmp_path / "studies" / "bad.db").exists()


def test_bad_data_leaves_no_empty_study_database(nas_cli: CliRunner, tmp_path: Path) -> None:
    """Data is read when the supernet's training starts; a folder that is not a data set
    stops the run there, and the database and folders it had opened are removed again."""
    (tmp_path / "empty").mkdir()
    result = nas_cli(tmp_path, "run", "--space", "micro", "--budget", "10MFLOPs", "--data", "empty", "--quiet", timeout=120)
    assert_one_line_error(result, "no class folders", "empty")
    assert not (tmp_path / "studies").exists()
    # an existing database (another study in it) is left as it was
    database = tmp_path / "shared.db"
    optuna.create_study(study_name="other", storage=f"sqlite:///{database}")
    before = database.read_bytes()
    result = nas_cli(
        tmp_path,
        "run",
        "--space",
        "micro",
        "--budget",
        "10MFLOPs",
        "--data",
        "empty",
        "--quiet",
        "--storage",
        f"sqlite:///{database}",
        timeout=120,
    )
    assert_one_line_error(result, "no class folders", "empty")
    assert database.read_bytes() == before
    assert [summary.study_name for summary in optuna.get_all_study_summaries(f"sqlite:///{database}")] == ["other"]


def test_budget_below_the_smallest_subnet_names_the_minimum(nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path) -> None:
    smallest = flops_range(get_space("micro"), 32).smallest
    arguments = list(micro_run_arguments("small", micro_supernet, 2))
    arguments[arguments.index("--budget") + 1] = str(smallest - 1)
    line = assert_one_line_error(nas_cli(tmp_path, *arguments, timeout=120), "smallest subnet")
    assert str(smallest) in line


def test_existing_study_with_another_space_is_refused(micro_study: SearchedStudy, nas_cli: CliRunner, tmp_path: Path) -> None:
    work = copy_study(micro_study, tmp_path)
    before = tree_digest(work)
    arguments = list(micro_study.arguments)
    arguments[arguments.index("--space") + 1] = "cifar"
    arguments[arguments.index("--budget") + 1] = "100MFLOPs"
    line = assert_one_line_error(nas_cli(work, *arguments, timeout=120), micro_study.name, "micro", "cifar")
    assert "already exists" in line
    assert tree_digest(work) == before


@pytest.mark.parametrize(
    "option, value, fragments",
    [
        ("--budget", "9MFLOPs", ["budget", "flops <= 8.0 MFLOPs", "flops <= 9.0 MFLOPs"]),
        ("--input-size", "64", ["deployment size", "32 px", "64 px"]),
        ("--data", str(REPOSITORY_ROOT / "tests"), ["data", "the built-in demo"]),
        ("--max-val", "50", ["validation subset", "--max-val 100", "--max-val 50"]),
        ("--calibration-images", "8", ["batch-norm calibration", "256 images", "8 images"]),
    ],
)
def test_a_rerun_that_changes_what_the_study_searches_is_refused(
    option: str, value: str, fragments: list[str], micro_study: SearchedStudy, nas_cli: CliRunner, tmp_path: Path
) -> None:
    """Same study name, another budget, size or data: the old trials were scored under other
    rules, so the run stops before any training and leaves everything as it was."""
    work = copy_study(micro_study, tmp_path)
    before = tree_digest(work)
    arguments = list(micro_study.arguments)
    if option in arguments:
        arguments[arguments.index(option) + 1] = value
    else:
        arguments += [option, value]
    line = assert_one_line_error(nas_cli(work, *arguments, timeout=120), micro_study.name, "--study", *fragments)
    assert "was searched with" in line
    assert tree_digest(work) == before


def test_a_studys_own_supernet_is_never_trained_further(nas_cli: CliRunner, tmp_path: Path) -> None:
    """More --supernet-epochs under an existing study would resume its supernet in place and
    invalidate its trials: refused before any training, the supernet unchanged; another
    --supernet is refused too; the original command still continues the study."""
    arguments = [
        "run",
        "--space",
        "micro",
        "--budget",
        MICRO_BUDGET_TEXT,
        "--supernet-epochs",
        "1",
        "--max-train",
        "64",
        "--max-val",
        "50",
        "--trials",
        "2",
        "--startup-trials",
        "2",
        "--finalists",
        "0",
        "--study",
        "own",
        "--quiet",
    ]
    first = nas_cli(tmp_path, *arguments)
    assert first.returncode == 0, first.stderr[-2000:]
    supernet = tmp_path / "studies" / "own" / "supernet.pt"
    before = hashlib.sha256(supernet.read_bytes()).hexdigest()
    longer = list(arguments)
    longer[longer.index("--supernet-epochs") + 1] = "2"
    assert_one_line_error(nas_cli(tmp_path, *longer), "--supernet-epochs 2", "trained 1 epochs", "--study")
    other = tmp_path / "other.pt"
    other.write_bytes(supernet.read_bytes() + b"\0")
    assert_one_line_error(nas_cli(tmp_path, *arguments, "--supernet", str(other)), "another supernet", str(other))
    assert hashlib.sha256(supernet.read_bytes()).hexdigest() == before
    again = list(arguments)
    again[again.index("--trials") + 1] = "3"
    rerun = nas_cli(tmp_path, *again)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "reusing supernet" in rerun.stdout and "3 planned trials (1 new)" in rerun.stdout


def test_a_partly_trained_supernet_is_named(nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path) -> None:
    payload = torch.load(micro_supernet, weights_only=True)
    payload["epochs"] = payload["epoch"] + 2  # as an interrupted run leaves it
    partial = tmp_path / "partial.pt"
    torch.save(payload, partial)
    result = nas_cli(tmp_path, *micro_run_arguments("partial", partial, 2), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"was trained {payload['epoch']} of its {payload['epochs']} epochs" in result.stderr
    assert f"supernet train --resume --out {partial}" in result.stderr


def test_data_is_the_supernets(nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path) -> None:
    """Subnets are scored on the data their supernet was trained on: --data naming other data
    than a reused supernet's is refused, not recorded while the demo is scored."""
    other = shared_data_path("cifar10-subset")
    arguments = micro_run_arguments("other-data", micro_supernet, 2, "--data", str(other))
    assert_one_line_error(nas_cli(tmp_path, *arguments, timeout=120), f"--data {other}", "the built-in demo")


def test_scoring_size_is_the_supernets(nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path) -> None:
    """Subnets are scored at the size their supernet was trained at (32 px here): another
    --train-input-size with --supernet is refused, not silently ignored."""
    arguments = list(micro_run_arguments("size", micro_supernet, 2, "--train-input-size", "16"))
    assert_one_line_error(nas_cli(tmp_path, *arguments, timeout=120), "--train-input-size 16", "32 px")


def test_budget_above_the_largest_warns_and_an_infeasible_study_cannot_be_exported(
    nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path
) -> None:
    """A FLOPs budget above the largest subnet warns that the constraint is inactive; a
    parameter budget that only a one-class network could meet (checked up front, before the
    data's 10 classes are known) leaves no feasible trial, and exporting from that study is
    a one-line error that leaves the target folder alone."""
    space, smallest = get_space("micro"), get_space("micro").smallest()
    one_class, ten_classes = ParamsModel(space, 1)(smallest), ParamsModel(space, 10)(smallest)
    arguments = list(micro_run_arguments("infeasible", micro_supernet, 2, "--params", str(int(one_class + ten_classes) // 2)))
    arguments[arguments.index("--budget") + 1] = "1GFLOPs"
    result = nas_cli(tmp_path, *arguments)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "above the largest subnet" in result.stderr and "inactive" in result.stderr
    assert "no feasible trial yet" in result.stdout
    study = load_study(f"sqlite:///{tmp_path / 'studies' / 'infeasible.db'}", "infeasible")
    assert [trial.user_attrs["feasible"] for trial in study.trials] == [False, False]
    assert all(trial.constraints["params"] > 0 for trial in study.trials)
    assert "flops_utilization" not in study.trials[0].constraints  # inactive budget: no lower bound either

    out = tmp_path / "exported"
    out.mkdir()
    (out / "meta.json").write_text("previous export\n")
    before = tree_digest(out)
    export = nas_cli(tmp_path, "export", "--study", "infeasible", "-o", str(out), timeout=120)
    assert_one_line_error(export, "infeasible", "no feasible")
    assert tree_digest(out) == before
    missing = nas_cli(tmp_path, "export", "--study", "never-run", "-o", str(out), timeout=120)
    assert_one_line_error(missing, "never-run")
    assert tree_digest(out) == before

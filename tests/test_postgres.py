"""Search workers sharing one study on a real, throwaway PostgreSQL server.

``run --plan-only`` creates the study and its planned trials once; ``worker`` processes
then share the queue. Killed workers' trials are failed by the next worker once their
heartbeat is stale and re-queued (``NAS_SEARCH_HEARTBEAT_SECONDS`` /
``NAS_SEARCH_GRACE_SECONDS`` shorten the wait here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from conftest import CliRunner, cli_command, cli_environment, micro_run_arguments
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from optuna_dashboard._note import get_note_from_system_attrs

from nas_search.search.study import driver_url

from postgres_fixture import PostgresServer, missing_requirement, running_postgres
from support import skip_or_fail

pytestmark = [
    pytest.mark.slow,
    # RetryHeartbeatStaleTrialCallback.retried_trial_number is flagged experimental by Optuna
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

HEARTBEAT_SECONDS = 1
GRACE_SECONDS = 3


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    reason = missing_requirement()
    if reason:
        skip_or_fail(reason)
    with running_postgres() as server:
        yield server


def plan_study(nas_cli: CliRunner, cwd: Path, server: PostgresServer, supernet: Path, study: str, trials: int) -> None:
    arguments = (*micro_run_arguments(study, supernet, trials), "--storage", server.url, "--plan-only", "--json")
    result = nas_cli(cwd, *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads(result.stdout)
    assert plan == {"study": study, "storage": server.url, "planned": trials, "added": trials}


def start_worker(cwd: Path, server: PostgresServer, study: str, **environment: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command("worker", "--storage", server.url, "--study", study, "--quiet", "--json"),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(**environment),
    )


def running_trial_numbers(server: PostgresServer, study: str) -> list[int]:
    """Numbers of the study's RUNNING trials, read straight from the database."""
    import psycopg2

    with psycopg2.connect(
        host="127.0.0.1", port=server.port, user="postgres", dbname=server.url.rsplit("/", 1)[1]
    ) as connection:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT trials.number FROM trials JOIN studies ON trials.study_id = studies.study_id "
                "WHERE studies.study_name = %s AND trials.state::text = 'RUNNING'",
                (study,),
            )
            numbers = [row[0] for row in cursor.fetchall()]
    connection.close()
    return numbers


def load(server: PostgresServer, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=driver_url(server.url))


def test_three_workers_complete_the_planned_trials_exactly_once(
    postgres: PostgresServer, nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path
) -> None:
    trials = 6
    plan_study(nas_cli, tmp_path, postgres, micro_supernet, "shared", trials)
    workers = [start_worker(tmp_path, postgres, "shared") for _ in range(3)]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=400)
        assert worker.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout))
    assert sum(report["ran"] for report in reports) == trials
    study = load(postgres, "shared")
    frozen = study.get_trials(deepcopy=False)
    assert len(frozen) == trials
    assert sorted(trial.number for trial in frozen) == list(range(trials))
    assert all(trial.state == TrialState.COMPLETE for trial in frozen)
    assert all("arch" in trial.user_attrs and "feasible" in trial.user_attrs for trial in frozen)
    # the planned startup architectures ran as planned, each once
    fixed = [trial.system_attrs["fixed_params"] for trial in frozen if trial.system_attrs.get("fixed_params")]
    assert len(fixed) == 3 and all(
        trial.params == trial.system_attrs["fixed_params"] for trial in frozen if trial.system_attrs.get("fixed_params")
    )
    assert study.user_attrs["space"] == "micro"


def test_a_killed_workers_trial_is_failed_and_retried(
    postgres: PostgresServer, nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path
) -> None:
    trials = 3
    plan_study(nas_cli, tmp_path, postgres, micro_supernet, "killed", trials)
    short_heartbeat = {"NAS_SEARCH_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS), "NAS_SEARCH_GRACE_SECONDS": str(GRACE_SECONDS)}
    victim = start_worker(tmp_path, postgres, "killed", **short_heartbeat)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and victim.poll() is None and not running_trial_numbers(postgres, "killed"):
            time.sleep(0.1)
        assert victim.poll() is None, "the worker finished before it could be killed"
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = datetime.now()
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate()
    stuck = running_trial_numbers(postgres, "killed")
    assert len(stuck) == 1, stuck  # the killed worker's trial, still marked RUNNING
    time.sleep(GRACE_SECONDS + 1)  # its heartbeat is now stale

    rescuer = start_worker(tmp_path, postgres, "killed", **short_heartbeat)
    stdout, stderr = rescuer.communicate(timeout=400)
    assert rescuer.returncode == 0, stderr[-3000:]
    study = load(postgres, "killed")
    frozen = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    states = [trial.state for trial in frozen.values()]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert frozen[stuck[0]].state == TrialState.FAIL
    assert states.count(TrialState.COMPLETE) == trials
    retries = [trial for trial in frozen.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) == stuck[0]]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    if frozen[stuck[0]].system_attrs.get("fixed_params"):
        assert retries[0].params == frozen[stuck[0]].system_attrs["fixed_params"]
    finished_before_the_kill = sum(
        1 for trial in frozen.values() if trial.state == TrialState.COMPLETE and trial.datetime_complete < killed_at
    )
    assert json.loads(stdout)["ran"] == trials - finished_before_the_kill


def test_bad_heartbeat_setting_is_one_line(postgres: PostgresServer, nas_cli: CliRunner, tmp_path: Path) -> None:
    result = nas_cli(
        tmp_path,
        "worker",
        "--storage",
        postgres.url,
        "--study",
        "absent",
        env=cli_environment(NAS_SEARCH_HEARTBEAT_SECONDS="soon"),
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "NAS_SEARCH_HEARTBEAT_SECONDS" in result.stderr
    missing = nas_cli(tmp_path, "worker", "--storage", postgres.url, "--study", "absent")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1, missing.stderr
    assert "no study 'absent'" in missing.stderr


def test_a_claimed_trial_without_a_live_worker_goes_stale(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that dies right after claiming (before its heartbeat thread runs) must
    not leave the trial RUNNING for ever: the claim itself records the first heartbeat."""
    from nas_search.search.study import claim_waiting_trial, fail_stale, open_storage

    monkeypatch.setenv("NAS_SEARCH_HEARTBEAT_SECONDS", str(HEARTBEAT_SECONDS))
    monkeypatch.setenv("NAS_SEARCH_GRACE_SECONDS", "2")
    study = optuna.create_study(study_name="claimed", storage=open_storage(postgres.url))
    study.enqueue_trial({"x": 1.0})
    claimed = claim_waiting_trial(study)
    assert claimed is not None and running_trial_numbers(postgres, "claimed") == [claimed.number]
    assert claim_waiting_trial(study) is None  # nothing else to claim, and nothing created
    time.sleep(3.5)  # no heartbeat thread: the first heartbeat goes stale
    fail_stale(study)
    frozen = study.get_trials(deepcopy=False)
    assert [trial.state for trial in frozen] == [TrialState.FAIL, TrialState.WAITING]
    assert frozen[1].system_attrs["failed_trial"] == claimed.number
    assert frozen[1].system_attrs["fixed_params"] == {"x": 1.0}  # the retry runs the planned parameters


def test_dashboard_serves_a_postgres_study(postgres: PostgresServer, tmp_path: Path) -> None:
    """``nas-search dashboard --storage postgresql://...`` (a bare URL: psycopg2 is the driver)."""
    import urllib.error
    import urllib.request

    from postgres_fixture import free_port

    optuna.create_study(study_name="reviewed", storage=driver_url(postgres.url))
    port = free_port()
    process = subprocess.Popen(
        cli_command("dashboard", "--study", "reviewed", "--storage", postgres.url, "--port", str(port)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(),
    )
    try:
        deadline, names = time.monotonic() + 90, None
        while time.monotonic() < deadline and process.poll() is None and names is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    names = [summary["study_name"] for summary in json.loads(response.read())["study_summaries"]]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert names is not None and "reviewed" in names
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_a_worker_out_of_work_waits_for_a_dead_workers_trial_and_finishes_the_study(
    postgres: PostgresServer, nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path
) -> None:
    """A survivor that runs out of queued trials while a killed worker's trial is still
    RUNNING (not yet stale) waits for it to go stale, runs its retry, and then runs the
    finish step (the study note), instead of exiting and leaving the trial RUNNING."""
    trials = 3
    plan_study(nas_cli, tmp_path, postgres, micro_supernet, "survivor", trials)
    # a grace period long enough that the survivor finishes the other trials first
    slow_grace = {"NAS_SEARCH_HEARTBEAT_SECONDS": "1", "NAS_SEARCH_GRACE_SECONDS": "25"}
    victim = start_worker(tmp_path, postgres, "survivor", **slow_grace)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and victim.poll() is None and not running_trial_numbers(postgres, "survivor"):
            time.sleep(0.05)
        assert victim.poll() is None, "the worker finished before it could be killed"
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate()
    stuck = running_trial_numbers(postgres, "survivor")
    assert len(stuck) == 1, stuck
    survivor = start_worker(tmp_path, postgres, "survivor", **slow_grace)
    stdout, stderr = survivor.communicate(timeout=400)
    assert survivor.returncode == 0, stderr[-3000:]
    study = load(postgres, "survivor")
    frozen = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    states = [trial.state for trial in frozen.values()]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert frozen[stuck[0]].state == TrialState.FAIL
    retries = [trial for trial in frozen.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) == stuck[0]]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert states.count(TrialState.COMPLETE) == trials
    # the survivor ran every trial the victim did not finish, the retry included
    assert json.loads(stdout)["ran"] == trials
    # the finish step ran: optuna-dashboard's study note (the summary) is saved in the study
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    note = get_note_from_system_attrs(system_attrs, None)
    assert "survivor" in note["body"] and note["version"] >= 1, note

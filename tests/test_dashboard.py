"""``nas-search dashboard`` on a searched study, driven in headless Chromium: the study,
its trials, each trial's architecture attributes and artifacts, the trade-off chart and
the study note show."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MICRO_TRIALS, SearchedStudy, cli_command, cli_environment

from postgres_fixture import free_port
from support import skip_or_fail

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000


def wait_for_studies(base_url: str, process: subprocess.Popen, seconds: float = 90) -> list[dict]:
    """The dashboard's study summaries once it answers (fails if the process exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the dashboard exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/api/studies", timeout=5) as response:
                return json.loads(response.read())["study_summaries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise AssertionError("the dashboard did not answer in time")


@pytest.fixture(scope="module")
def dashboard(micro_study: SearchedStudy) -> Iterator[tuple[str, int]]:
    """(base URL, study id) of ``nas-search dashboard`` serving the searched study."""
    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("Python playwright is not installed (pip install -e '.[dev]')")
    port = free_port()
    process = subprocess.Popen(
        cli_command("dashboard", "--study", micro_study.name, "--port", str(port), "--json"),
        cwd=micro_study.directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        summaries = wait_for_studies(base_url, process)
        # --json: the URL and study as the first line, before optuna-dashboard's own output
        assert json.loads(process.stdout.readline()) == {"url": f"{base_url}/", "study": micro_study.name}
        [study_id] = [summary["study_id"] for summary in summaries if summary["study_name"] == micro_study.name]
        yield base_url, study_id
    finally:
        process.send_signal(signal.SIGTERM)  # nas-search execs optuna-dashboard: this pid is the server
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    assert process.returncode is not None


@pytest.fixture(scope="module")
def page(dashboard: tuple[str, int]):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGUMENTS, headless=True)
        try:
            browser_page = browser.new_page()
            browser_page.set_default_timeout(TIMEOUT_MS)
            yield browser_page
        finally:
            browser.close()


def test_study_list_and_study_page(page, dashboard: tuple[str, int], micro_study: SearchedStudy) -> None:
    base_url, study_id = dashboard
    page.goto(f"{base_url}/dashboard")
    link = page.locator(f"a[href='/dashboard/studies/{study_id}']")
    link.wait_for()
    assert micro_study.name in link.inner_text()
    link.click()
    # the trade-off chart saved with save_plotly_graph_object, and the study's attributes
    page.get_by_text("Accuracy vs FLOPs (inherited weights").first.wait_for()
    # the chart shades the budget band and draws the Pareto front
    page.get_by_text("budget band").first.wait_for()
    page.get_by_text("Pareto front").first.wait_for()
    page.get_by_text("Study User Attributes").first.wait_for()
    # the attribute table fills in after its heading renders: wait for its rows, not just the heading
    page.wait_for_function(
        "() => document.body.innerText.includes('space') && document.body.innerText.includes('micro')", timeout=TIMEOUT_MS
    )
    body = page.inner_text("body")
    assert "space" in body and "micro" in body


def test_trials_and_their_architecture_attributes(page, dashboard: tuple[str, int], micro_study: SearchedStudy) -> None:
    base_url, study_id = dashboard
    page.goto(f"{base_url}/dashboard/studies/{study_id}/trials")
    page.get_by_text(f"{MICRO_TRIALS} Trials").first.wait_for()
    for number in range(MICRO_TRIALS):
        assert page.get_by_text(f"Trial {number}", exact=True).count() >= 1, number
    best = micro_study.summary["best"]
    page.goto(f"{base_url}/dashboard/studies/{study_id}/trials?numbers={best['trial']}")
    page.get_by_text(f"Trial {best['trial']} (trial_id=").first.wait_for()
    page.get_by_text("User Attributes").first.wait_for()
    page.get_by_text(best["arch_string"]).first.wait_for()
    body = page.inner_text("body")
    for key in ("arch", "arch_json", "flops", "params", "feasible", "constraint:flops"):
        assert f"\n{key} " in body or f"\n{key}\t" in body, key
    assert f"trial-{best['trial']}-arch.json" in body and f"trial-{best['trial']}-widths.svg" in body


def test_the_best_trials_parameters_are_those_of_the_exported_network(
    page, dashboard: tuple[str, int], micro_study: SearchedStudy, tmp_path: Path
) -> None:
    """The dashboard shows, as the best trial's parameters, exactly the network that was
    costed, scored and exported (not the sampler's unprojected proposal)."""
    from nas_search.search.parameters import spec_to_params
    from nas_search.spec import load_arch

    base_url, study_id = dashboard
    best = micro_study.summary["best"]["trial"]
    exported = subprocess.run(
        cli_command("export", "--study", micro_study.name, "--trial", str(best), "-o", str(tmp_path / "export")),
        cwd=micro_study.directory,
        capture_output=True,
        text=True,
        env=cli_environment(),
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    expected = {name: str(value) for name, value in spec_to_params(load_arch(tmp_path / "export" / "arch.yaml")).items()}
    page.goto(f"{base_url}/dashboard/studies/{study_id}/trials?numbers={best}")
    page.get_by_text(f"Trial {best} (trial_id=").first.wait_for()
    page.get_by_text("Parameter").first.wait_for()
    body = page.inner_text("body")
    # the trial's "Parameter" section lists one "name value" line per parameter
    section = body.split("\nParameter\n", 1)[1].split("User Attributes", 1)[0]
    pairs = [line.split() for line in section.splitlines()]
    shown = {pair[0]: pair[1] for pair in pairs if len(pair) == 2 and re.fullmatch(r"[a-z][a-z0-9_]*", pair[0])}
    assert shown == expected


def test_the_study_names_its_metric_and_draws_no_made_up_scores(micro_study: SearchedStudy) -> None:
    import optuna

    study = optuna.load_study(study_name=micro_study.name, storage=micro_study.storage_url)
    assert study.metric_names == ["top-1 accuracy"]
    for trial in study.trials:  # an infeasible trial has no value at all, never a score of 0
        feasible = trial.user_attrs.get("feasible")
        assert (trial.values is not None) == bool(feasible), trial.number


def test_study_note(page, dashboard: tuple[str, int], micro_study: SearchedStudy) -> None:
    base_url, study_id = dashboard
    page.goto(f"{base_url}/dashboard/studies/{study_id}/note")
    page.get_by_text(f"nas-search study {micro_study.name}").first.wait_for()
    page.get_by_text("Best feasible architectures").first.wait_for()
    # each architecture sits whole in its table cell, in its short form (its "|"
    # separators are escaped), with the FLOPs and their share of the budget
    for row in micro_study.summary["top"]:
        cell = page.get_by_role("cell", name=row["arch_brief"], exact=True)
        assert cell.count() >= 1, row["arch_brief"]
        assert page.get_by_role("cell", name=f"({row['budget_use']:.0%})").count() >= 1
    page.get_by_text("finished,").first.wait_for()  # trial count, feasible share and elapsed time


def test_dashboard_refuses_a_missing_study(tmp_path: Path) -> None:
    result = subprocess.run(
        cli_command("dashboard", "--study", "never-run", "--port", "1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_environment(),
        timeout=120,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "never-run" in result.stderr
    assert not (tmp_path / "studies").exists()

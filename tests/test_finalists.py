"""Finalist re-ranking through the real CLI: the best trials by inherited-weight score are
trained briefly and re-ranked; the summary, the study, ``export --trial best`` and a
resumed run follow the re-ranking."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import optuna
import pytest
from conftest import CliRunner, micro_run_arguments

from nas_search.search.finalists import FINALISTS_ATTRIBUTE

pytestmark = pytest.mark.slow

FINALISTS = 2
TRIALS = 5


def finalist_arguments(study: str, supernet: Path) -> tuple[str, ...]:
    return micro_run_arguments(
        study,
        supernet,
        TRIALS,
        "--finalists",
        str(FINALISTS),
        "--finalist-epochs",
        "1",
        "--max-train",
        "256",
        "--json-summary",
        "summary.json",
    )


@pytest.fixture(scope="module")
def reranked(tmp_path_factory: pytest.TempPathFactory, nas_cli: CliRunner, micro_supernet: Path) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("finalists")
    result = nas_cli(directory, *finalist_arguments("fin", micro_supernet))
    assert result.returncode == 0, result.stderr[-3000:]
    return directory, result.stdout


def load(directory: Path) -> optuna.Study:
    return optuna.load_study(study_name="fin", storage=f"sqlite:///{directory / 'studies' / 'fin.db'}")


def proxy_top(study: optuna.Study, count: int) -> list[int]:
    """The best feasible trials by inherited-weight score, one per architecture."""
    feasible = [
        trial for trial in study.trials if trial.user_attrs.get("feasible") and trial.user_attrs.get("accuracy") is not None
    ]
    feasible.sort(key=lambda trial: (-trial.user_attrs["accuracy"], trial.user_attrs["flops"]))
    chosen, seen = [], set()
    for trial in feasible:
        if trial.user_attrs["arch"] not in seen:
            seen.add(trial.user_attrs["arch"])
            chosen.append(trial.number)
    return chosen[:count]


def test_best_trials_are_trained_and_reranked(reranked: tuple[Path, str]) -> None:
    directory, stdout = reranked
    study = load(directory)
    stored = study.user_attrs[FINALISTS_ATTRIBUTE]
    assert stored["settings"] == {"count": FINALISTS, "epochs": 1, "input_size": 32, "init": "inherited"}
    records = {int(number): record for number, record in stored["records"].items()}
    # exactly the best distinct trials by inherited-weight score were trained
    assert sorted(records) == sorted(proxy_top(study, FINALISTS))
    for number, record in records.items():
        assert 0.0 <= record["score"] <= 1.0 and record["seconds"] > 0
        assert record["proxy"] == study.trials[number].user_attrs["accuracy"]
        # top-1 on the 100 validation images (--max-val 100) and its binomial standard error
        assert record["score"] * 100 == pytest.approx(round(record["score"] * 100))
        assert record["score_error"] == pytest.approx(math.sqrt(record["score"] * (1 - record["score"]) / 100))
    # the summary's best is the cheapest finalist within one standard error of the best
    # score; the other finalists follow by score (ties: better inherited score)
    summary = json.loads((directory / "summary.json").read_text())
    by_score = sorted(
        records,
        key=lambda number: (-records[number]["score"], -records[number]["proxy"], study.trials[number].user_attrs["flops"]),
    )
    top = records[by_score[0]]
    within = [number for number in by_score if records[number]["score"] >= top["score"] - top["score_error"]]
    expected = min(within, key=lambda number: (study.trials[number].user_attrs["flops"], -records[number]["score"]))
    assert summary["best"]["trial"] == expected
    assert summary["best"]["finalist_score"] == records[expected]["score"]
    assert summary["best"]["finalist_error"] == records[expected]["score_error"]
    assert [row["trial"] for row in summary["top"][:FINALISTS]] == [expected] + [n for n in by_score if n != expected]
    assert all("finalist_score" not in row for row in summary["top"][FINALISTS:])
    assert "trained" in stdout and f"--trial {expected}" in stdout
    from optuna_dashboard import get_note

    note = get_note(study)
    assert "finalists: the 2 best trials re-ranked by 1 epoch(s)" in note
    assert (
        f"| {expected} | {study.trials[expected].user_attrs['accuracy']:.4f} | "
        f"{records[expected]['score']:.4f}+-{records[expected]['score_error']:.3f} |"
    ) in note


def test_export_best_follows_the_finalists(reranked: tuple[Path, str], nas_cli: CliRunner) -> None:
    directory, _ = reranked
    summary = json.loads((directory / "summary.json").read_text())
    result = nas_cli(directory, "export", "--study", "fin", "-o", str(directory / "exported"), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["trial"] == summary["best"]["trial"]


def test_a_rerun_trains_only_missing_finalists_and_reproduces_scores(
    reranked: tuple[Path, str], nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path
) -> None:
    directory, _ = reranked
    work = tmp_path / "work"
    shutil.copytree(directory, work, ignore=shutil.ignore_patterns("exported"))
    study = load(work)
    stored = study.user_attrs[FINALISTS_ATTRIBUTE]
    dropped, kept = sorted(stored["records"])[:1], sorted(stored["records"])[1:]
    original = dict(stored["records"])
    study.set_user_attr(
        FINALISTS_ATTRIBUTE, {"settings": stored["settings"], "records": {number: original[number] for number in kept}}
    )
    result = nas_cli(work, *finalist_arguments("fin", micro_supernet)[:-2], "--json-summary", "again.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 new" in result.stdout
    assert result.stdout.count("finalist trial ") == 1  # only the dropped one was trained again
    records = load(work).user_attrs[FINALISTS_ATTRIBUTE]["records"]
    assert sorted(records) == sorted(original)
    for number in kept:
        assert records[number] == original[number]
    # training is deterministic on CPU under the seed: the retrained finalist scores the same
    assert records[dropped[0]]["score"] == original[dropped[0]]["score"]
    assert records[dropped[0]]["loss"] == pytest.approx(original[dropped[0]]["loss"], rel=1e-5)
    # Another --finalists count keeps the trained records (they depend on how, not how many)
    fewer = nas_cli(work, *finalist_arguments("fin", micro_supernet)[:-2], "--json-summary", "fewer.json", "--finalists", "1")
    assert fewer.returncode == 0, fewer.stderr[-2000:]
    assert "finalist trial " not in fewer.stdout
    stored = load(work).user_attrs[FINALISTS_ATTRIBUTE]
    assert stored["records"] == records and stored["settings"]["count"] == 1  # all kept for reuse
    top_one = proxy_top(load(work), 1)[0]
    fewer_summary = json.loads((work / "fewer.json").read_text())
    assert [row["trial"] for row in fewer_summary["top"] if "finalist_score" in row] == [top_one]  # one finalist now
    assert fewer_summary["best"]["trial"] == top_one


def test_finalist_seeds_average_runs_and_resume_by_run(
    reranked: tuple[Path, str], nas_cli: CliRunner, micro_supernet: Path, tmp_path: Path
) -> None:
    """--finalist-seeds 2: every finalist trains twice (seeds --seed and --seed + 1, the same
    split); the record is the mean with error sqrt(s^2/2 + e^2); its first run reproduces the
    one-run score; a record missing its second run trains only that run again."""
    directory, _ = reranked
    work = tmp_path / "work"
    shutil.copytree(directory, work, ignore=shutil.ignore_patterns("exported"))
    single = {int(number): record for number, record in load(work).user_attrs[FINALISTS_ATTRIBUTE]["records"].items()}
    arguments = (*finalist_arguments("fin", micro_supernet)[:-2], "--json-summary", "seeds.json", "--finalist-seeds", "2")
    result = nas_cli(work, *arguments)
    assert result.returncode == 0, result.stderr[-2000:]
    stored = load(work).user_attrs[FINALISTS_ATTRIBUTE]
    assert stored["settings"]["seeds"] == 2
    records = {int(number): record for number, record in stored["records"].items()}
    assert sorted(records) == sorted(single)
    for number, record in records.items():
        runs = record["runs"]
        assert len(runs) == 2
        assert runs[0]["score"] == single[number]["score"]  # seed --seed: deterministic on CPU
        scores = [run["score"] for run in runs]
        assert record["score"] == pytest.approx(sum(scores) / 2)
        spread = (scores[0] - scores[1]) ** 2 / 2  # sample variance of two
        validation = (runs[0]["score_error"] + runs[1]["score_error"]) / 2
        assert record["score_error"] == pytest.approx(math.sqrt(spread / 2 + validation**2))
    from optuna_dashboard import get_note

    assert "mean of 2 training runs" in get_note(load(work))

    study = load(work)
    partial = dict(stored["records"])
    first = sorted(partial)[0]
    partial[first] = {**partial[first], "runs": partial[first]["runs"][:1]}
    study.set_user_attr(FINALISTS_ATTRIBUTE, {"settings": stored["settings"], "records": partial})
    again = nas_cli(work, *arguments)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finalist trial ") == 1 and f"finalist trial {first}:" in again.stdout

    def without_time(runs: list[dict]) -> list[dict]:
        return [{key: value for key, value in run.items() if key != "seconds"} for run in runs]

    retrained = load(work).user_attrs[FINALISTS_ATTRIBUTE]["records"][first]["runs"]
    assert without_time(retrained) == without_time(stored["records"][first]["runs"])  # the same second run

"""Re-ranking the search's best trials by short training ("finalists").

After the trials, the ``count`` best distinct architectures by inherited-weight score are
trained for a few epochs on the search's training split (from their inherited weights, or
from scratch) and scored on its validation split, with the score's standard error. The
best trial becomes the cheapest finalist whose score is within one standard error of the
best finalist's (:func:`nas_search.search.report.finalist_order`). Inherited-weight
scores of a supernet trained on a CPU budget rank subnets poorly
(``benchmarks/RESULTS.md``), so the trials narrow the field and short training picks
among the few.

Results live in the study (user attribute :data:`FINALISTS_ATTRIBUTE`: the settings and
one record per trial), so ``nas-search export --trial best``, the dashboard note and the
summary all follow them, and a run stopped during the finalists resumes with the ones not
yet trained. Records made with other settings are discarded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from nas_search.errors import UserError
from nas_search.search.config import SearchConfig, scoring_settings
from nas_search.search.ranking import feasible_trials, proxy_rank
from nas_search.search.records import TrialRecord
from nas_search.search.study import interrupt_watch, raise_if_interrupted
from nas_search.spec import ArchSpec
from nas_search.tasks import get_task
from nas_search.tasks.base import FinalistJob
from nas_search.training.finalist import FINALIST_INITIALISATIONS

#: Study user attribute holding ``{"settings": ..., "records": {trial number: record}}``.
FINALISTS_ATTRIBUTE = "finalists"


@dataclass(frozen=True)
class FinalistSettings:
    """How the best trials are re-ranked.

    Attributes:
        count: how many of the best distinct trials are trained (0: no re-ranking).
        epochs: training epochs of each finalist.
        input_size: training and scoring size.
        init: ``inherited`` (fine-tune the supernet's weights) or ``scratch``.
        seeds: training runs per finalist (training seeds ``--seed``, ``--seed + 1``, ...;
            the split stays the same), averaged: see :func:`combine_runs`.
    """

    count: int
    epochs: int
    input_size: int
    init: str
    seeds: int = 1

    def key(self) -> dict[str, Any]:
        """What records are valid for (stored with them): how each finalist is trained, not
        how many there are (a rerun with another ``--finalists`` keeps the trained ones).
        One seed is stored as before seeds existed, so older studies' records stay valid."""
        settings = asdict(self)
        del settings["count"]
        if settings["seeds"] == 1:
            del settings["seeds"]
        return settings

    def matches(self, stored: Any) -> bool:
        """Whether records stored with the settings ``stored`` were trained this way
        (studies before this rule stored the finalist count too; it does not matter)."""
        return isinstance(stored, dict) and {name: value for name, value in stored.items() if name != "count"} == self.key()

    def __post_init__(self) -> None:
        if self.count < 0:
            raise UserError(f"--finalists {self.count}; accepted: 0 (off) or more")
        if self.epochs < 1:
            raise UserError(f"--finalist-epochs {self.epochs}; accepted: 1 or more")
        if self.input_size < 1:
            raise UserError(f"--finalist-size {self.input_size}; accepted: a positive image size")
        if self.init not in FINALIST_INITIALISATIONS:
            raise UserError(f"--finalist-init {self.init!r}; accepted: {', '.join(FINALIST_INITIALISATIONS)}")
        if self.seeds < 1:
            raise UserError(f"--finalist-seeds {self.seeds}; accepted: 1 or more")


#: Per-run values of a finalist record that are averaged over its runs.
AVERAGED_RESULTS: tuple[str, ...] = ("loss", "map50", "map")


def combine_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """One record from a finalist's training runs: the mean score, with the standard error
    ``sqrt(s^2 / k + e^2)``: ``s`` the spread of the k runs' scores (training-seed noise,
    which averaging reduces) and ``e`` the mean of their validation errors (the sampling
    of one shared validation set, which it does not). One run: its own score and error."""
    scores = [run["score"] for run in runs]
    count = len(scores)
    mean = sum(scores) / count
    spread = sum((score - mean) ** 2 for score in scores) / (count - 1) if count > 1 else 0.0
    validation = sum(run["score_error"] for run in runs) / count
    record = {
        "score": mean,
        "score_error": (spread / count + validation**2) ** 0.5,
        "seconds": sum(run["seconds"] for run in runs),
    }
    for name in AVERAGED_RESULTS:
        if all(name in run for run in runs):
            record[name] = sum(run[name] for run in runs) / count
    return record


def finalist_records(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The study's finalists by trial number (empty without re-ranking): the records of the
    current ``--finalists`` best trials. Records of trials outside them (a rerun with fewer
    finalists, or better trials found since) stay stored for reuse but are not finalists."""
    stored = study.user_attrs.get(FINALISTS_ATTRIBUTE) or {}
    records = _records_of(stored)
    count = (stored.get("settings") or {}).get("count")
    if count is None:
        return records
    current = {trial.number for trial in proxy_ranked_trials(study, count)}
    return {number: record for number, record in records.items() if number in current}


def _store(study: optuna.Study, settings: FinalistSettings, records: dict[int, dict[str, Any]]) -> None:
    study.set_user_attr(
        FINALISTS_ATTRIBUTE,
        {
            "settings": {"count": settings.count, **settings.key()},
            "records": {str(number): record for number, record in records.items()},
        },
    )


def _records_of(stored: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(number): record for number, record in (stored.get("records") or {}).items()}


def _runs_of(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The training runs a record holds (a record made before runs were stored is one)."""
    return [] if record is None else list(record.get("runs") or [record])


def proxy_ranked_trials(study: optuna.Study, count: int) -> list[optuna.trial.FrozenTrial]:
    """The ``count`` best feasible trials by inherited-weight score, one per architecture."""
    ranked = sorted(feasible_trials(study), key=proxy_rank)
    chosen, seen = [], set()
    for trial in ranked:
        key = TrialRecord.from_trial(trial).identity
        if key not in seen:
            seen.add(key)
            chosen.append(trial)
        if len(chosen) == count:
            break
    return chosen


def rerank_finalists(
    study: optuna.Study, settings: FinalistSettings | None, config: SearchConfig, checkpoint: Path, progress: bool = True
) -> dict[int, dict[str, Any]]:
    """Train and score the finalists not yet recorded with ``settings`` (None: no
    re-ranking) on the data and split of the search ``config``; returns the finalists'
    records (:func:`finalist_records`). Each record is saved as soon as its finalist is
    scored."""
    if settings is None or settings.count == 0:
        return finalist_records(study)
    stored = study.user_attrs.get(FINALISTS_ATTRIBUTE) or {}
    records = _records_of(stored) if settings.matches(stored.get("settings")) else {}
    candidates = [
        trial
        for trial in proxy_ranked_trials(study, settings.count)
        if len(_runs_of(records.get(trial.number))) < settings.seeds
    ]
    if not candidates:
        if (stored.get("settings") or {}).get("count") != settings.count:  # another --finalists, nothing to train
            _store(study, settings, records)
        return finalist_records(study)
    runs = f", {settings.seeds} training runs each" if settings.seeds > 1 else ""
    print(
        f"re-ranking the {settings.count} best trials by {settings.epochs} epoch(s) of training "
        f"({settings.init} weights, {settings.input_size} px{runs}) on the search's training split",
        flush=True,
    )
    job = FinalistJob(epochs=settings.epochs, input_size=settings.input_size, init=settings.init)
    train = get_task(config.task).finalist_trainer(checkpoint, scoring_settings(config), job)
    with interrupt_watch() as interrupted:
        for index, trial in enumerate(candidates, 1):
            raise_if_interrupted(interrupted)  # a Ctrl-C swallowed in a finaliser stops here
            _train_one(study, settings, records, train, trial, f"finalist {index}/{len(candidates)} (trial {trial.number})")
    return finalist_records(study)


def _train_one(
    study: optuna.Study,
    settings: FinalistSettings,
    records: dict[int, dict[str, Any]],
    train,
    trial: optuna.trial.FrozenTrial,
    label: str,
) -> None:
    """Train and score one finalist and save its record in the study at once."""
    proxy = TrialRecord.from_trial(trial)
    spec = ArchSpec.from_dict(proxy.arch_dict)
    runs = _runs_of(records.get(trial.number))
    for run in range(len(runs), settings.seeds):  # each run is saved as it ends: a stop loses at most one
        result = train(spec, label if settings.seeds == 1 else f"{label} run {run + 1}/{settings.seeds}", run)
        runs.append(
            {
                "score": float(result["accuracy"]),
                "score_error": float(result.get("score_error", 0.0)),
                "seconds": float(result["seconds"]),
                "loss": float(result["loss"]),
                **{name: float(result[name]) for name in ("map50", "map") if name in result},
            }
        )
        records[trial.number] = {**combine_runs(runs), "proxy": proxy.score, "runs": runs}
        _store(study, settings, records)
    record = records[trial.number]
    print(
        f"finalist trial {trial.number}: {record['score']:.4f} +- {record['score_error']:.4f} after training"
        f"{f' (mean of {len(runs)} runs)' if len(runs) > 1 else ''} "
        f"(inherited-weight score {proxy.score:.4f}), {record['seconds']:.0f} s",
        flush=True,
    )


__all__ = [
    "AVERAGED_RESULTS",
    "FINALISTS_ATTRIBUTE",
    "FinalistSettings",
    "combine_runs",
    "finalist_records",
    "proxy_ranked_trials",
    "rerank_finalists",
]

"""What a search leaves for review: the best feasible trials, a markdown study note, a
trade-off chart for optuna-dashboard and a per-layer width chart per trial."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_search.search.finalists import finalist_records
from nas_search.search.ranking import cost_rank, feasible_trials, proxy_rank
from nas_search.search.records import PROPOSED_ARCH_ATTRIBUTE, TrialRecord
from nas_search.units import format_bytes, format_count, format_duration, format_flops

logger = logging.getLogger("nas_search")


def finalist_order(trials: list[FrozenTrial], records: dict[int, dict[str, Any]]) -> list[FrozenTrial]:
    """Re-ranked finalists in report order: the pick first, then the others by trained score
    (ties broken by :func:`proxy_rank`).

    The pick follows the one-standard-error rule of model selection (Breiman et al. 1984;
    Hastie et al., *Elements of Statistical Learning*, 7.10): of the finalists whose score
    is within one standard error of the best score, the cheapest (:func:`cost_rank`). On a
    small validation split two detectors 0.0003 mAP apart cannot be told apart, and the
    cheaper one is then the better choice. Records without a ``score_error`` count as exact.
    """
    by_score = sorted(trials, key=lambda trial: (-records[trial.number]["score"], *proxy_rank(trial)))
    if not by_score:
        return []
    best = records[by_score[0].number]
    threshold = best["score"] - best.get("score_error", 0.0)
    pick = min(
        (trial for trial in by_score if records[trial.number]["score"] >= threshold),
        key=lambda trial: (*cost_rank(trial), -records[trial.number]["score"]),
    )
    return [pick] + [trial for trial in by_score if trial is not pick]


def best_trials(study: optuna.Study, count: int = 5, records: dict[int, dict[str, Any]] | None = None) -> list[FrozenTrial]:
    """The best feasible trials: re-ranked finalists first (:mod:`nas_search.search.finalists`,
    in :func:`finalist_order`: the pick by the one-standard-error rule, then by score after
    short training), then the others by :func:`proxy_rank`. ``records`` are the study's
    finalist records (read from the study when not given)."""
    from nas_search.search.finalists import finalist_records

    records = finalist_records(study) if records is None else records
    feasible = feasible_trials(study)
    finalists = finalist_order([trial for trial in feasible if trial.number in records], records)
    others = sorted((trial for trial in feasible if trial.number not in records), key=proxy_rank)
    return (finalists + others)[:count]


def summary_rows(study: optuna.Study, count: int = 5) -> list[dict[str, Any]]:
    """JSON-ready rows of the best feasible trials. ``accuracy`` is the inherited-weight
    score; re-ranked finalists also carry ``finalist_score`` (after short training)."""
    records = finalist_records(study)
    budget = study.user_attrs.get("budget_flops")
    return [_summary_row(TrialRecord.from_trial(trial), records, budget) for trial in best_trials(study, count, records)]


def brief_arch(record: TrialRecord) -> str:
    """The trial's architecture in a form that fits a terminal row (:meth:`ArchSpec.brief`);
    the one-line form when the trial recorded no JSON."""
    from nas_search.spec import ArchSpec

    try:
        return ArchSpec.from_dict(record.arch_dict).brief()
    except (KeyError, ValueError, TypeError):
        return record.arch or "?"


def _summary_row(record: TrialRecord, finalists: dict[int, dict[str, Any]], budget: float | None) -> dict[str, Any]:
    """One row of :func:`summary_rows` (keys in the order the JSON summary shows them)."""
    finalist = finalists.get(record.number)
    return {
        "trial": record.number,
        "accuracy": record.accuracy,
        **(
            {"finalist_score": finalist["score"], "finalist_error": finalist.get("score_error", 0.0)}
            if finalist is not None
            else {}
        ),
        "flops": record.flops,
        **({"budget_use": record.flops / budget} if budget else {}),
        "params": record.params,
        **{name: record.cost(name) for name in DEVICE_COSTS if record.cost(name) is not None},
        "arch_brief": brief_arch(record),
        "arch": record.arch,
    }


#: Device costs a trial may record, with their table header and format.
DEVICE_COSTS: dict[str, tuple[str, Any]] = {
    "latency": ("latency ms", lambda value: f"{value:.2f}"),
    "peak_memory": ("peak mem", lambda value: format_bytes(value)),
}


#: States of the trials a search ran to the end: feasible ones are COMPLETE, infeasible
#: ones PRUNED (recorded with their costs and constraints, never scored).
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials the search ran to the end (:data:`FINISHED_STATES`), feasible or not."""
    return study.get_trials(deepcopy=False, states=FINISHED_STATES)


def feasible_fraction(study: optuna.Study) -> float:
    """Share of finished trials that met every constraint."""
    finished = finished_trials(study)
    return sum(1 for trial in finished if TrialRecord.from_trial(trial).feasible) / len(finished) if finished else 0.0


def band_floor(study: optuna.Study, budget: float) -> float:
    """The lower FLOPs bound of the study's budget band (``min_utilization x budget``)."""
    return budget * float((study.user_attrs.get("config") or {}).get("min_utilization", 0.0))


def band_fraction(study: optuna.Study) -> dict[str, float] | None:
    """How the sampler's proposals met the FLOPs band: ``proposed_outside`` is the share of
    sampled (not enqueued) trials whose proposal had to be moved onto the band,
    ``evaluated_outside`` the share of finished trials whose network is outside it. None
    without a FLOPs budget."""
    budget = study.user_attrs.get("budget_flops")
    if not budget:
        return None
    floor = band_floor(study, budget)
    finished = finished_trials(study)
    sampled = [trial for trial in finished if not trial.system_attrs.get("fixed_params")]  # not a startup candidate
    moved = sum(1 for trial in sampled if TrialRecord.from_trial(trial).attributes.get(PROPOSED_ARCH_ATTRIBUTE))
    outside = sum(1 for trial in finished if not floor <= TrialRecord.from_trial(trial).flops <= budget)
    return {
        "proposed_outside": moved / len(sampled) if sampled else 0.0,
        "evaluated_outside": outside / len(finished) if finished else 0.0,
        "sampled_trials": len(sampled),
    }


def search_seconds(study: optuna.Study) -> float:
    """Wall time from the first trial's start to the last trial's end (all workers)."""
    finished = [trial for trial in finished_trials(study) if trial.datetime_start and trial.datetime_complete]
    if not finished:
        return 0.0
    start = min(trial.datetime_start for trial in finished if trial.datetime_start is not None)
    end = max(trial.datetime_complete for trial in finished if trial.datetime_complete is not None)
    return (end - start).total_seconds()


#: Standard errors between the best score and chance below which a study's scores are
#: called chance-level.
CHANCE_STANDARD_ERRORS = 3.0


def chance_note(study: optuna.Study, rows: list[dict[str, Any]]) -> str | None:
    """One line when the best inherited score is within :data:`CHANCE_STANDARD_ERRORS`
    binomial standard errors of chance (the study's ``chance_score`` on its
    ``validation_images``), else None."""
    chance = study.user_attrs.get("chance_score")
    images = study.user_attrs.get("validation_images")
    if chance is None or not images or not rows:
        return None
    best = max(float(row["accuracy"]) for row in rows)
    spread = max(chance * (1 - chance), best * (1 - best)) ** 0.5 / images**0.5
    if best - chance >= CHANCE_STANDARD_ERRORS * spread:
        return None
    return (
        f"warning: the best score {best:.3f} is within {CHANCE_STANDARD_ERRORS:g} standard errors ({spread:.3f} each, "
        f"{images} validation images) of chance ({chance:.3f}): the ranking is noise; train the supernet longer "
        "(--supernet-epochs) or on more data"
    )


def format_table(rows: list[dict[str, Any]], score_name: str = "accuracy") -> str:
    """Plain-text table of summary rows (``score_name`` heads the score column)."""
    extra = [name for name in DEVICE_COSTS if any(name in row for row in rows)]
    header = "".join(f"  {DEVICE_COSTS[name][0]:>10}" for name in extra)
    label = SHORT_SCORE_NAMES.get(score_name, score_name)
    trained = any("finalist_score" in row for row in rows)
    trained_header = f"  {'trained':>14}" if trained else ""
    lines = [f"{'trial':>5}  {label:>8}{trained_header}  {'FLOPs (budget)':>20}  {'params':>8}{header}  architecture"]
    for row in rows:
        cells = "".join(f"  {DEVICE_COSTS[name][1](row[name]) if name in row else '-':>10}" for name in extra)
        finalist = f"  {trained_cell(row):>14}" if trained else ""
        lines.append(
            f"{row['trial']:>5}  {row['accuracy']:>8.4f}{finalist}  {flops_cell(row):>20}  "
            f"{format_count(row['params']):>8}{cells}  {row.get('arch_brief') or row['arch']}"
        )
    if trained:
        lines.append(
            f"({label}: inherited weights; trained: after the finalists' short training, +- one standard "
            "error; the first row is the cheapest finalist within one standard error of the best)"
        )
    return "\n".join(lines)


def flops_cell(row: dict[str, Any]) -> str:
    """FLOPs with the share of the budget they use, e.g. ``3.61 GFLOPs (80%)``."""
    use = row.get("budget_use")
    return format_flops(row["flops"]) + ("" if use is None else f" ({use:.0%})")


def trained_cell(row: dict[str, Any]) -> str:
    """A summary row's score after the finalists' training, with its standard error."""
    if "finalist_score" not in row:
        return "-"
    return f"{row['finalist_score']:.4f}+-{row.get('finalist_error', 0.0):.3f}"


#: Column headers for the task scores (``score_name`` study attribute).
SHORT_SCORE_NAMES = {"top-1 accuracy": "accuracy", "mAP@0.5": "mAP@0.5"}


def study_note(study: optuna.Study, rows: list[dict[str, Any]]) -> str:
    """Markdown summary saved as the study's note in optuna-dashboard."""
    attributes = study.user_attrs
    lines = [
        f"# nas-search study `{study.study_name}`",
        "",
        f"- space: **{attributes.get('space')}**, task: {attributes.get('task')}",
        f"- FLOPs budget: {attributes.get('budget_text') or 'none'} at {attributes.get('input_size')} px "
        f"(1 multiply-add = 1 FLOP); proxy size {attributes.get('train_input_size')} px",
        f"- dataset: {attributes.get('dataset')}",
        f"- supernet: `{attributes.get('supernet')}` (sha256 {attributes.get('supernet_checksum')})",
        f"- trials: {len(finished_trials(study))} finished, {feasible_fraction(study):.0%} feasible, in "
        f"{format_duration(search_seconds(study))}",
    ]
    band = band_fraction(study)
    if band is not None:
        lines.append(
            f"- budget band: {band['proposed_outside']:.0%} of the sampler's proposals were moved onto it; "
            f"{band['evaluated_outside']:.0%} of the trials are outside it"
        )
    warning = chance_note(study, rows)
    if warning:
        lines.append(f"- **{warning}**")
    finalists = (attributes.get("finalists") or {}).get("settings")
    if finalists:
        runs = finalists.get("seeds", 1)
        averaged = f", mean of {runs} training runs" if runs > 1 else ""
        lines.append(
            f"- finalists: the {finalists['count']} best trials re-ranked by {finalists['epochs']} epoch(s) of training "
            f"({finalists['init']} weights, {finalists['input_size']} px{averaged}); the table lists them first, the "
            "cheapest finalist within one standard error of the best score on top"
        )
    score_name = attributes.get("score_name", "accuracy")
    lines += [
        "",
        "## Best feasible architectures",
        "",
        f"| trial | {score_name} (inherited) | after training | FLOPs (budget) | params | architecture |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        # the architecture views separate stages with "|", which would end the table cell
        # even inside a code span (GitHub-flavoured markdown); escaped, it renders as "|"
        architecture = (row.get("arch_brief") or row["arch"]).replace("|", "\\|")
        trained = trained_cell(row)
        lines.append(
            f"| {row['trial']} | {row['accuracy']:.4f} | {trained} | {flops_cell(row)} | "
            f"{format_count(row['params'])} | `{architecture}` |"
        )
    lines += ["", "Export one with `nas-search export --study NAME --trial N -o DIR`."]
    return "\n".join(lines)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ``(flops, score)`` points no other point beats on both (fewer or equal FLOPs
    and a higher or equal score), by increasing FLOPs."""
    front: list[tuple[float, float]] = []
    for flops, score in sorted(points, key=lambda point: (point[0], -point[1])):
        if not front or score > front[-1][1]:
            front.append((flops, score))
    return front


def tradeoff_figure(study: optuna.Study):
    """Plotly scatter of the evaluated trials' score against FLOPs, with the budget band
    shaded and the Pareto front drawn. Infeasible trials have no score and are counted in
    the title instead of being drawn at a made-up one."""
    import plotly.graph_objects as go

    records = [TrialRecord.from_trial(trial) for trial in finished_trials(study)]
    evaluated = [record for record in records if record.evaluated]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[record.flops / 1e9 for record in evaluated],
            y=[record.score for record in evaluated],
            mode="markers",
            name="evaluated trials",
            marker={"color": "#1f77b4"},
            text=[f"trial {record.number}: {brief_arch(record)}" for record in evaluated],
        )
    )
    front = pareto_front([(record.flops, record.score) for record in evaluated])
    figure.add_trace(
        go.Scatter(
            x=[flops / 1e9 for flops, _ in front],
            y=[score for _, score in front],
            mode="lines+markers",
            line={"shape": "hv", "color": "#d62728"},
            name="Pareto front",
        )
    )
    budget = study.user_attrs.get("budget_flops")
    if budget:
        floor = band_floor(study, budget)
        figure.add_vrect(
            x0=floor / 1e9, x1=budget / 1e9, fillcolor="#2ca02c", opacity=0.12, line_width=0, annotation_text="budget band"
        )
        figure.add_vline(x=budget / 1e9, line_dash="dash", annotation_text="budget")
    score_name = study.user_attrs.get("score_name", "top-1 accuracy")
    infeasible = len(records) - len(evaluated)
    figure.update_layout(
        title=f"{score_name} vs FLOPs (inherited weights; {infeasible} infeasible trial(s) not drawn)",
        xaxis_title="GFLOPs at the deployment size",
        yaxis_title=score_name,
    )
    return figure


def summary_payload(study: optuna.Study, storage_url: str, files: dict[str, str]) -> dict[str, Any]:
    """The ``--json-summary`` document."""
    rows = summary_rows(study)
    best = rows[0] if rows else None
    best_payload = None
    if best is not None:
        record = TrialRecord.from_trial(study.trials[best["trial"]])
        best_payload = {**best, "arch": record.arch_dict, "arch_string": best["arch"]}
    return {
        "study": study.study_name,
        "storage": storage_url,
        "space": study.user_attrs.get("space"),
        "budget_flops": study.user_attrs.get("budget_flops"),
        "input_size": study.user_attrs.get("input_size"),
        "task": study.user_attrs.get("task", "classify"),
        "score_name": study.user_attrs.get("score_name", "top-1 accuracy"),
        "trials": len(finished_trials(study)),
        "feasible_fraction": feasible_fraction(study),
        "band": band_fraction(study),
        "search_seconds": search_seconds(study),
        "chance_warning": chance_note(study, rows),
        # trials another worker is on, or that a killed run left (retried after the heartbeat grace period)
        "running_trials": len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))),
        "best": best_payload,
        "top": rows,
        "files": files,
    }


def save_review(study: optuna.Study, storage_url: str, artifact_dir: Path, study_dir: Path) -> dict[str, Any]:
    """Save the study note and the trade-off chart in the study (for optuna-dashboard) and
    return the summary (:func:`summary_payload`)."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    rows = summary_rows(study)
    save_note(study, study_note(study, rows))
    try:
        save_plotly_graph_object(study, tradeoff_figure(study))
    except Exception as error:  # the chart is a convenience; the study stays usable without it
        logger.warning("could not save the trade-off chart: %s", error)
    files = {"storage": storage_url, "artifacts": str(artifact_dir), "study_dir": str(study_dir)}
    return summary_payload(study, storage_url, files)

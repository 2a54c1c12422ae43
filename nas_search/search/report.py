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
from nas_search.search.records import TrialRecord
from nas_search.units import format_bytes, format_count, format_flops

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
    return [_summary_row(TrialRecord.from_trial(trial), records) for trial in best_trials(study, count, records)]


def _summary_row(record: TrialRecord, finalists: dict[int, dict[str, Any]]) -> dict[str, Any]:
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
        "params": record.params,
        **{name: record.cost(name) for name in DEVICE_COSTS if record.cost(name) is not None},
        "arch": record.arch,
    }


#: Device costs a trial may record, with their table header and format.
DEVICE_COSTS: dict[str, tuple[str, Any]] = {
    "latency": ("latency ms", lambda value: f"{value:.2f}"),
    "peak_memory": ("peak mem", lambda value: format_bytes(value)),
}


def feasible_fraction(study: optuna.Study) -> float:
    """Share of complete trials that met every constraint."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sum(1 for trial in complete if TrialRecord.from_trial(trial).feasible) / len(complete) if complete else 0.0


def format_table(rows: list[dict[str, Any]], score_name: str = "accuracy") -> str:
    """Plain-text table of summary rows (``score_name`` heads the score column)."""
    extra = [name for name in DEVICE_COSTS if any(name in row for row in rows)]
    header = "".join(f"  {DEVICE_COSTS[name][0]:>10}" for name in extra)
    label = SHORT_SCORE_NAMES.get(score_name, score_name)
    trained = any("finalist_score" in row for row in rows)
    trained_header = f"  {'trained':>14}" if trained else ""
    lines = [f"{'trial':>5}  {label:>8}{trained_header}  {'FLOPs':>13}  {'params':>8}{header}  architecture"]
    for row in rows:
        cells = "".join(f"  {DEVICE_COSTS[name][1](row[name]) if name in row else '-':>10}" for name in extra)
        finalist = f"  {trained_cell(row):>14}" if trained else ""
        lines.append(
            f"{row['trial']:>5}  {row['accuracy']:>8.4f}{finalist}  {format_flops(row['flops']):>13}  "
            f"{format_count(row['params']):>8}{cells}  {row['arch']}"
        )
    if trained:
        lines.append(
            f"({label}: inherited weights; trained: after the finalists' short training, +- one standard "
            "error; the first row is the cheapest finalist within one standard error of the best)"
        )
    return "\n".join(lines)


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
        f"- feasible trials: {feasible_fraction(study):.0%}",
    ]
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
        f"| trial | {score_name} (inherited) | after training | FLOPs | params | architecture |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        # the architecture view separates stages with "|", which would end the table cell
        # even inside a code span (GitHub-flavoured markdown); escaped, it renders as "|"
        architecture = row["arch"].replace("|", "\\|")
        trained = trained_cell(row)
        lines.append(
            f"| {row['trial']} | {row['accuracy']:.4f} | {trained} | {format_flops(row['flops'])} | "
            f"{format_count(row['params'])} | `{architecture}` |"
        )
    lines += ["", "Export one with `nas-search export --study NAME --trial N -o DIR`."]
    return "\n".join(lines)


def tradeoff_figure(study: optuna.Study):
    """Plotly scatter of accuracy against FLOPs, feasible and infeasible trials apart,
    with the budget as a vertical line."""
    import plotly.graph_objects as go

    complete = [TrialRecord.from_trial(trial) for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    figure = go.Figure()
    for feasible, name, colour in ((True, "feasible", "#1f77b4"), (False, "infeasible", "#bbbbbb")):
        records = [record for record in complete if record.feasible == feasible]
        figure.add_trace(
            go.Scatter(
                x=[(record.cost("flops") or 0) / 1e9 for record in records],
                y=[record.accuracy or 0.0 for record in records],
                mode="markers",
                name=name,
                marker={"color": colour},
                text=[f"trial {record.number}: {record.arch}" for record in records],
            )
        )
    budget = study.user_attrs.get("budget_flops")
    if budget:
        figure.add_vline(x=budget / 1e9, line_dash="dash", annotation_text="budget")
    score_name = study.user_attrs.get("score_name", "top-1 accuracy")
    figure.update_layout(title=f"{score_name} vs FLOPs (inherited weights)", xaxis_title="GFLOPs", yaxis_title=score_name)
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
        "trials": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        "feasible_fraction": feasible_fraction(study),
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

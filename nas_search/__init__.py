"""nas-search: hardware-aware neural architecture search.

The public API, one function per job of the command line (``nas-search run``, ``export``,
``train``, ``cost``, ``spaces``)::

    import nas_search

    nas_search.space_names()                       # ['cifar', 'detect', 'micro', 'mobile']
    nas_search.cost_report(nas_search.get_space("micro").largest())  # FLOPs, params, per stage
    summary = nas_search.run(space="micro", trials=4, supernet_epochs=1, max_train=256)
    nas_search.export_trial(study="nas-search", out="exported/")
    nas_search.train("exported/train.yaml", epochs=1)

* :func:`run` runs the main job (supernet, budget-aware Optuna search, finalists,
  summary) from the keyword options of :class:`nas_search.search.config.SearchConfig`;
* :func:`export_trial` writes one trial of a study as ``arch.yaml``, ``train.yaml``,
  ``model.pt``, ``model.onnx`` and ``meta.json``;
* :func:`train` trains an exported architecture from its ``train.yaml``;
* :func:`cost_report` reports an architecture's FLOPs, params and, with ``device``,
  latency and peak memory;
* :func:`get_space` and :func:`space_names` look up the registered search spaces.

The names differ from the submodules on purpose: importing a submodule sets an attribute of
the package, so a function called ``search``, ``export`` or ``cost`` would be replaced by the
module ``nas_search.search``, ``nas_search.export`` or ``nas_search.cost`` as soon as anything
imported it.

Bad input raises :class:`nas_search.errors.UserError` (a ``ValueError``) with a one-line
message naming the value and what is accepted, as the command line prints it.

Import cost: ``import nas_search`` imports nothing but :mod:`os`. Every submodule import
(``import nas_search.spec``) runs this file first, so it must stay cheap and import none of
the package's layers at module level: the verbs are thin wrappers whose bodies import their
implementation when called. This deferred import is allowed in the root package only (the
layers below import each other at module level, as ``lint-imports`` checks); no module of
the package imports the root package.
"""

from __future__ import annotations

import os as _os

# PyTorch's CPU kernels run on OpenMP, whose idle threads spin by default. On a machine
# shared with other work (a laptop, CI, several search workers on one box) spinning threads
# steal the cores the busy ones need and slow training several-fold (see
# benchmarks/RESULTS.md). Passive waiting costs little on an idle machine. Only effective
# when nas_search is imported before torch (as the CLI does);
# a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from nas_search.spaces.space import SearchSpace
    from nas_search.spec import ArchSpec

__version__ = "0.1.0"

__all__ = ["__version__", "cost_report", "export_trial", "get_space", "run", "space_names", "train"]


def run(**options: Any) -> dict[str, Any]:
    """Run the main job (``nas-search run``): train or load the supernet, search under the
    budgets, rank the finalists, and return the summary (a JSON-ready dict: ``best``,
    ``top``, ``trials``, ``files``, ...).

    ``options`` are the fields of :class:`~nas_search.search.config.SearchConfig`, with the
    same defaults as the command line (e.g. ``task="classify"``, ``space="micro"``,
    ``budget="4.5GFLOPs"``, ``trials=30``, ``study="nas-search"``, ``data=None`` for the
    built-in demo, ``progress=True``); ``objectives`` may be a comma-separated string. An
    unknown option or a value of the wrong type raises :class:`~nas_search.errors.UserError`.
    Studies and supernets are written under ``studies_dir`` (``studies/`` in the working
    folder); running the same ``study`` again continues it.
    """
    from nas_search.config import config_from_dict
    from nas_search.search.config import SearchConfig
    from nas_search.search.runner import public_summary, run_search

    if isinstance(options.get("objectives"), str):
        options["objectives"] = tuple(name.strip() for name in options["objectives"].split(",") if name.strip())
    config = config_from_dict(SearchConfig, options, source="nas_search.run()")
    return public_summary(run_search(config))


def export_trial(
    study: str = "nas-search",
    out: str | Path = "exported",
    *,
    trial: str | int = "best",
    storage: str | None = None,
    epochs: int = 20,
) -> dict[str, Any]:
    """Export one trial of a study (``nas-search export``) into the folder ``out``:
    ``arch.yaml``, ``train.yaml`` (``epochs`` epochs), ``model.pt``, ``model.onnx`` and
    ``meta.json``. ``trial`` is a trial number or ``"best"``; ``storage`` defaults to the
    study's SQLite file ``studies/<study>.db`` in the working folder. Returns the export's
    metadata (files, FLOPs, params, score, ONNX latency)."""
    from pathlib import Path

    from nas_search.errors import UserError
    from nas_search.export import export_trial as export
    from nas_search.search.study import check_study_name, default_storage_url

    check_study_name(study)
    url = storage or default_storage_url(study)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise UserError(f"no study database at {url}; run a search first or pass storage=")
    return export(study, url, trial, out, epochs=epochs)


def train(config: str | Path, *, resume: bool = False, progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Train an exported architecture from its ``train.yaml`` (``nas-search train``), a
    classifier or a detector as the file's ``task`` says. ``overrides`` replace values of
    the file: ``epochs``, ``init`` (``inherited`` or ``scratch``), ``data``, ``max_train``,
    ``max_val``, ``input_size``, ``device``, ``out`` (relative to the working folder).
    ``resume=True`` continues from the last checkpoint. Returns the final score and the
    paths of the weights and the checkpoint."""
    from pathlib import Path

    from nas_search.config import load_yaml_file
    from nas_search.errors import UserError
    from nas_search.tasks import TASKS

    accepted = ("epochs", "init", "data", "max_train", "max_val", "input_size", "device", "out")
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise UserError(f"train(): unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    if overrides.get("out") is not None:
        overrides["out"] = str(Path(overrides["out"]).resolve())
    data = load_yaml_file(config, "training config")
    task = data.get("task", "classify") if isinstance(data, dict) else "classify"
    if task not in TASKS:
        raise UserError(f"{config}: task={task!r}; accepted: {', '.join(TASKS)}")
    return TASKS[task].train_standalone(config, resume=resume, overrides=overrides, progress=progress)


def cost_report(
    arch: str | Path | ArchSpec,
    *,
    space_name: str | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    check_fvcore: bool = False,
    device: str | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    lut: str | Path | None = None,
) -> dict[str, Any]:
    """Cost of an architecture (``nas-search cost``): FLOPs (fvcore's convention, one
    multiply-add = one FLOP), params and the per-stage breakdown at ``input_size`` (default:
    the space's deployment size). ``arch`` is an :class:`~nas_search.spec.ArchSpec`, an
    ``arch.yaml``/JSON file or a compact architecture string. ``check_fvcore`` adds fvcore's
    count of the extracted model; ``device`` (``nas-search devices``) adds the predicted
    latency and peak activation memory."""
    from nas_search.cost import cost_report as report_cost

    report: dict[str, Any] = report_cost(
        arch,
        space_name=space_name,
        input_size=input_size,
        num_classes=num_classes,
        check_fvcore=check_fvcore,
        device=device,
        runtime=runtime,
        threads=threads,
        lut=lut,
    )
    return report


def get_space(name: str) -> SearchSpace:
    """The registered search space called ``name`` (of any task: ``mobile``, ``cifar``,
    ``micro``, ``detect``, or one added with :func:`nas_search.tasks.register_space`)."""
    from nas_search.tasks import get_space as find

    return find(name)


def space_names(task: str | None = None) -> list[str]:
    """Names of the registered search spaces, sorted; only those of ``task``
    (``classify`` or ``detect``) when given."""
    from nas_search.tasks import space_names as names

    return names(task)

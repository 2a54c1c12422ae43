"""CLI commands beyond the foundation ones: supernet training and evaluation.

Each command parses its arguments and calls one public function.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nas_search.cli.base import Command, emit


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--space",
        default="cifar",
        help="search space (see `nas-search spaces`); a detection space (detect) trains a detection supernet",
    )
    parser.add_argument(
        "--data",
        help="ImageFolder root (train/ + val/ or test/), or a VOC/COCO/YOLO folder for a "
        "detection space; default: the built-in demo of the task",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--input-size", type=int, help="proxy training size (default: the space's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="sgd", help="sgd or adamw")
    parser.add_argument("--learning-rate", "--lr", type=float, default=None)
    parser.add_argument(
        "--random-subnets",
        type=int,
        default=None,
        help="random subnets per sandwich step (default: 4 for classifiers, one per block kind; 1 for detectors)",
    )
    parser.add_argument(
        "--fair-operations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="FairNAS sampling: the random subnets of a step take each block kind of each position "
        "in turn (default: on for classifiers, off for detectors)",
    )
    parser.add_argument(
        "--teacher",
        choices=("widest", "projected"),
        default=None,
        help="largest subnet under --budget: the one covering the most weights (widest) or the "
        "space's largest narrowed into it (projected); default: widest for classifiers, "
        "projected for detectors",
    )
    parser.add_argument("--no-distill", action="store_true", help="train the smaller subnets on labels instead")
    parser.add_argument(
        "--resize",
        choices=("square", "longer-side"),
        help="detection spaces: how images are fitted to the input size, stretched to a square "
        "(default) or longer side kept with padding (torchvision FCOS's way)",
    )
    parser.add_argument("--channel-regeneration-epoch", type=int, help="re-initialise collapsed BN channels at this epoch")
    parser.add_argument("--bridgeout", type=float, default=0.0, help="Batch Bridgeout drop probability (0 = off)")
    parser.add_argument("--full-width-warmup-epochs", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, help="DataLoader workers")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--max-train", type=int, help="use at most this many training images")
    parser.add_argument(
        "--budget",
        help="budget-aware supernet: train only subnets within this many FLOPs at the "
        "deployment size (4.5GFLOPs, 450MFLOPs, ...); default: the whole space",
    )
    parser.add_argument("--out", default="runs/supernet.pt", help="checkpoint path")
    parser.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="machine-readable summary")


def _budget_flops(arguments: argparse.Namespace) -> int | None:
    """``--budget`` in FLOPs (None: the whole space)."""
    from nas_search.units import parse_flops

    return None if arguments.budget is None else parse_flops(arguments.budget)


def _absolute_data(data: str | None) -> str | None:
    """A data folder as an absolute path: the checkpoint records it, and later commands
    (``run --supernet``, export, workers) read it from other folders."""
    return None if data is None else str(Path(data).expanduser().resolve())


def training_config_from_arguments(arguments: argparse.Namespace):
    """A ``SupernetTrainConfig`` from parsed CLI arguments."""
    from nas_search.training.config import SupernetTrainConfig

    if arguments.resize is not None:
        from nas_search.errors import UserError

        raise UserError(f"--resize applies to detection supernets only; space {arguments.space!r} is a classification space")

    config = SupernetTrainConfig(
        space=arguments.space,
        data=_absolute_data(arguments.data),
        epochs=arguments.epochs,
        input_size=arguments.input_size,
        batch_size=arguments.batch_size,
        optimizer=arguments.optimizer,
        learning_rate=arguments.learning_rate,
        distill=not arguments.no_distill,
        channel_regeneration_epoch=arguments.channel_regeneration_epoch,
        bridgeout_probability=arguments.bridgeout,
        full_width_warmup_epochs=arguments.full_width_warmup_epochs,
        seed=arguments.seed,
        workers=arguments.workers,
        device=arguments.device,
        max_train=arguments.max_train,
        out=arguments.out,
        resume=arguments.resume,
        progress=not arguments.quiet,
        max_flops=_budget_flops(arguments),
    )
    _apply_sampling_arguments(config, arguments)
    return config


def _apply_sampling_arguments(config, arguments: argparse.Namespace) -> None:
    """``--random-subnets``, ``--fair-operations`` and ``--teacher`` where given; the task's
    defaults otherwise."""
    if arguments.random_subnets is not None:
        config.random_subnets = arguments.random_subnets
    if arguments.fair_operations is not None:
        config.fair_operations = arguments.fair_operations
    if arguments.teacher is not None:
        if arguments.budget is None:
            from nas_search.errors import UserError

            raise UserError(f"--teacher {arguments.teacher} chooses the largest subnet under --budget; give a --budget too")
        config.budget_teacher = arguments.teacher


def _supernet_arguments(parser: argparse.ArgumentParser) -> None:
    from nas_search.cli.base import OneLineParser

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=OneLineParser)
    train = actions.add_parser("train", help="one-shot supernet training (sandwich rule + in-place distillation)")
    _add_training_arguments(train)


def detection_training_config_from_arguments(arguments: argparse.Namespace):
    """A ``DetectionSupernetTrainConfig`` from parsed CLI arguments (a detection space)."""
    from nas_search.errors import UserError
    from nas_search.tasks.detect.supernet_training import DetectionSupernetTrainConfig

    unsupported = [
        name
        for name, value in (
            ("--channel-regeneration-epoch", arguments.channel_regeneration_epoch),
            ("--bridgeout", arguments.bridgeout or None),
            ("--full-width-warmup-epochs", arguments.full_width_warmup_epochs or None),
        )
        if value is not None
    ]
    if unsupported:
        raise UserError(
            f"{', '.join(unsupported)} apply to classification supernets only; space {arguments.space!r} is a detection space"
        )
    config = DetectionSupernetTrainConfig(
        space=arguments.space,
        data=_absolute_data(arguments.data),
        epochs=arguments.epochs,
        image_size=arguments.input_size,
        batch_size=arguments.batch_size,
        optimizer=arguments.optimizer,
        learning_rate=arguments.learning_rate,
        distill=not arguments.no_distill,
        seed=arguments.seed,
        workers=arguments.workers or 0,
        device=arguments.device,
        max_train=arguments.max_train,
        out=arguments.out,
        resume=arguments.resume,
        progress=not arguments.quiet,
        max_flops=_budget_flops(arguments),
    )
    if arguments.resize is not None:
        config.resize = arguments.resize
    _apply_sampling_arguments(config, arguments)
    return config


def _train_detection_supernet(arguments: argparse.Namespace) -> None:
    from nas_search.tasks.detect.supernet_training import train_detection_supernet

    result = train_detection_supernet(detection_training_config_from_arguments(arguments))
    summary = {
        "checkpoint": str(result.checkpoint),
        "epochs": result.epochs,
        "resumed_from_epoch": result.resumed_from_epoch,
        "images_per_second": result.images_per_second,
        "history": result.history,
    }
    emit(
        arguments,
        summary,
        f"detection supernet checkpoint: {result.checkpoint} (epoch {result.epochs}), {result.images_per_second:.1f} img/s",
    )


def _supernet_run(arguments: argparse.Namespace) -> None:
    from nas_search.tasks import get_space
    from nas_search.tasks.classify.supernet_training import train_supernet

    if get_space(arguments.space).task == "detect":
        _train_detection_supernet(arguments)
        return
    result = train_supernet(training_config_from_arguments(arguments))
    summary = {
        "checkpoint": str(result.checkpoint),
        "epochs": result.epochs,
        "resumed_from_epoch": result.resumed_from_epoch,
        "images_per_second": result.images_per_second,
        "history": result.history,
    }

    def human() -> None:
        last = result.history[-1] if result.history else {}
        print(f"supernet checkpoint: {result.checkpoint} (epoch {result.epochs})")
        if last:
            print(
                f"last epoch: loss {last['loss']:.3f}, largest-subnet train accuracy {last['largest_train_accuracy']:.3f}, "
                f"{last['images_per_second']:.1f} img/s"
            )

    emit(arguments, summary, human)


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="supernet checkpoint")
    parser.add_argument("--arch", required=True, help="architecture file (.yaml or .json)")
    parser.add_argument(
        "--data",
        help="an ImageFolder root for a classifier supernet, a Pascal VOC, COCO JSON or "
        "YOLO folder for a detector one (default: the data the supernet was trained on)",
    )
    parser.add_argument(
        "--calibration-images", type=int, default=512, help="BN recalibration images (default 512; at most 256 for detectors)"
    )
    parser.add_argument("--max-val", type=int, help="validation images scored (default: all)")
    parser.add_argument("--device", default="cpu", help="where to compute: cpu (default), cuda or auto")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _eval_run(arguments: argparse.Namespace) -> None:
    from nas_search.errors import UserError
    from nas_search.spec import load_arch
    from nas_search.tasks import get_space, get_task
    from nas_search.training.distributed import resolve_device

    if arguments.calibration_images < 1:
        raise UserError(f"--calibration-images {arguments.calibration_images}; accepted: 1 or more")
    resolve_device(arguments.device)  # an unknown device, or cuda without a GPU: one line before any work
    task = get_task(get_space(load_arch(arguments.arch).space).task)
    result = task.evaluate_checkpoint(
        arguments.checkpoint,
        arguments.arch,
        arguments.data,
        calibration_images=arguments.calibration_images,
        max_val=arguments.max_val,
        device=arguments.device,
    )
    emit(arguments, result, task.describe_evaluation(result))


# ---------------------------------------------------------------------------- run / worker
def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", help="FLOPs budget: 4.5GFLOPs, 4.5G, 450MFLOPs, 4.5GMACs or 4500000000")
    parser.add_argument("--task", default="classify", help="classify (score: top-1 accuracy) or detect (score: mAP@0.5)")
    parser.add_argument("--space", help="search space (default: mobile for classify, detect for detect)")
    parser.add_argument(
        "--data",
        help="classify: ImageFolder root; detect: a Pascal VOC, COCO JSON or YOLO folder; "
        "default: the built-in demo dataset of the task",
    )
    parser.add_argument("--input-size", type=int, help="deployment input size, at which FLOPs are counted")
    parser.add_argument("--train-input-size", type=int, help="proxy size for supernet training and scoring")
    parser.add_argument("--params", help="parameter budget, e.g. 5M")
    parser.add_argument("--latency", help="latency budget, e.g. 15ms (needs --device)")
    parser.add_argument(
        "--device",
        help="latency device, e.g. cpu-onnxruntime or pixel2 (`nas-search devices`); "
        "its predicted latency is recorded on every trial",
    )
    parser.add_argument("--lut", help="latency table of your own device (with --device NAME)")
    parser.add_argument("--runtime", help="runtime of a local device: onnxruntime or torch")
    parser.add_argument("--threads", type=int, help="thread count of a local device's table (default 1)")
    parser.add_argument("--memory", help="peak activation memory budget (fp32, batch 1), e.g. 20MB")
    parser.add_argument(
        "--min-utilization",
        type=float,
        default=0.8,
        help="lower bound on FLOPs as a fraction of --budget (0 disables; default 0.8)",
    )
    parser.add_argument(
        "--trials", type=int, default=30, help="planned trials in the study (a re-run continues up to this; default 30)"
    )
    parser.add_argument("--startup-trials", type=int, default=10, help="budget-aware random trials first (default 10)")
    parser.add_argument(
        "--study",
        default="nas-search",
        help="study name (default nas-search); a re-run with the same name continues it, and one with "
        "another budget, task, data, size or device is refused",
    )
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/STUDY.db)")
    parser.add_argument("--sampler", default="tpe", help="Optuna sampler: tpe, nsga2, random, qmc or gp (default tpe)")
    parser.add_argument("--objectives", default="accuracy", help="accuracy, or accuracy,flops for a Pareto front")
    parser.add_argument("--supernet", help="reuse this supernet checkpoint instead of training one")
    parser.add_argument(
        "--supernet-epochs",
        type=int,
        help="supernet training epochs (default 3 on the classification demo, 4 on the detection demo, 10 with --data)",
    )
    parser.add_argument("--max-train", type=int, help="supernet training images (default: 1500 on the demo)")
    parser.add_argument("--max-val", type=int, default=300, help="validation images per trial (default 300)")
    parser.add_argument(
        "--calibration-images", type=int, help="BN recalibration images per trial (default 256 for classify, 96 for detect)"
    )
    parser.add_argument(
        "--finalists",
        type=int,
        help="re-rank this many best trials by short training (0: off; default 3 with --data, 0 on the demo)",
    )
    parser.add_argument("--finalist-epochs", type=int, help="training epochs per finalist (default 2 classify, 3 detect)")
    parser.add_argument("--finalist-size", type=int, help="finalists' training and scoring size (default: the proxy size)")
    parser.add_argument(
        "--finalist-seeds",
        type=int,
        default=1,
        help="training runs per finalist with different seeds, averaged; the score's error then "
        "includes the seed-to-seed spread (default 1)",
    )
    parser.add_argument(
        "--finalist-init",
        default="inherited",
        help="finalists start from their inherited weights (inherited) or from scratch (scratch)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-summary", help="also write the summary as JSON to this file")
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="create the study and its planned trials, then exit (start `nas-search worker`s next)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def search_config_from_arguments(arguments: argparse.Namespace):
    """A ``SearchConfig`` from parsed ``run`` arguments."""
    from nas_search.search.config import SearchConfig

    return SearchConfig(
        task=arguments.task,
        space=arguments.space,
        data=arguments.data,
        input_size=arguments.input_size,
        train_input_size=arguments.train_input_size,
        budget=arguments.budget,
        params=arguments.params,
        latency=arguments.latency,
        device=arguments.device,
        memory=arguments.memory,
        lut=arguments.lut,
        runtime=arguments.runtime,
        threads=arguments.threads,
        min_utilization=arguments.min_utilization,
        trials=arguments.trials,
        startup_trials=arguments.startup_trials,
        study=arguments.study,
        storage=arguments.storage,
        sampler=arguments.sampler,
        objectives=tuple(name.strip() for name in arguments.objectives.split(",") if name.strip()),
        supernet=arguments.supernet,
        supernet_epochs=arguments.supernet_epochs,
        max_train=arguments.max_train,
        max_val=arguments.max_val,
        seed=arguments.seed,
        progress=not arguments.quiet,
        calibration_images=arguments.calibration_images,
        finalists=arguments.finalists,
        finalist_epochs=arguments.finalist_epochs,
        finalist_input_size=arguments.finalist_size,
        finalist_init=arguments.finalist_init,
        finalist_seeds=arguments.finalist_seeds,
    )


def _run_run(arguments: argparse.Namespace) -> None:
    from nas_search.search.runner import create_study_for_workers, print_summary, public_summary, run_search

    config = search_config_from_arguments(arguments)
    if arguments.plan_only:
        result = create_study_for_workers(config)
        emit(
            arguments,
            result,
            f"study {result['study']} in {result['storage']}: {result['planned']} planned trials "
            f"({result['added']} new); start workers with: nas-search worker --storage "
            f"{result['storage']} --study {result['study']}",
        )
        return
    summary = public_summary(run_search(config, json_summary=arguments.json_summary))  # stdout is often logged
    emit(arguments, summary, lambda: print_summary(summary))


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", required=True, help="storage URL of the shared study, e.g. postgresql://...")
    parser.add_argument("--study", required=True, help="name of an existing study (create it with run --plan-only)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true")


def _worker_run(arguments: argparse.Namespace) -> None:
    from nas_search.search.runner import run_worker

    result = run_worker(arguments.storage, arguments.study, progress=not arguments.quiet)
    emit(arguments, result, f"worker ran {result['ran']} trials of study {result['study']}")


# ---------------------------------------------------------------------------- dashboard
def _dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", default="nas-search", help="study name (its default storage and artifacts)")
    parser.add_argument("--storage", help="storage URL (default sqlite:///studies/STUDY.db)")
    parser.add_argument("--artifact-dir", help="artifact folder (default studies/STUDY/artifacts)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--json", action="store_true", help="print the URL and study as one JSON line (before the server starts)"
    )


def _dashboard_run(arguments: argparse.Namespace) -> int:
    from nas_search.cli.base import json_stream
    from nas_search.dashboard import launch_dashboard

    return launch_dashboard(
        arguments.study,
        arguments.storage,
        arguments.artifact_dir,
        arguments.host,
        arguments.port,
        json_output=arguments.json,
        stream=json_stream(),
    )


# ---------------------------------------------------------------------------- export / train
def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", default="nas-search")
    parser.add_argument("--storage", help="storage URL (default sqlite:///studies/STUDY.db)")
    parser.add_argument("--trial", default="best", help="trial number or best")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--epochs", type=int, default=20, help="epochs written into train.yaml")
    parser.add_argument("--json", action="store_true")


def _export_run(arguments: argparse.Namespace) -> None:
    from nas_search.export import export_trial
    from nas_search.search.study import check_study_name, default_storage_url
    from nas_search.tasks import get_task
    from nas_search.units import format_count, format_flops

    check_study_name(arguments.study)
    storage = arguments.storage or default_storage_url(arguments.study)
    if storage.startswith("sqlite:///") and not __import__("pathlib").Path(storage[len("sqlite:///") :]).exists():
        from nas_search.errors import UserError

        raise UserError(f"no study database at {storage}; run `nas-search run` first or pass --storage")
    result = export_trial(arguments.study, storage, arguments.trial, arguments.out, epochs=arguments.epochs)

    def human() -> None:
        task = get_task(result.get("task", "classify"))
        score = f"{'accuracy' if task.score_key == 'accuracy' else task.score_name} {result[task.score_key]:.4f}"
        print(
            f"exported trial {result['trial']} of study {result['study']}: {score}, "
            f"{format_flops(result['flops'])}, {format_count(result['params'])} params, "
            f"{result['latency_ms']['cpu-onnxruntime-2threads']:.2f} ms (onnxruntime, 2 threads)"
        )
        for path in result["files"]:
            print(f"  {path}")
        print(f"train it: nas-search train {result['out']}/train.yaml")

    emit(arguments, result, human)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="train.yaml written by `nas-search export`")
    parser.add_argument("--epochs", type=int, help="override epochs")
    parser.add_argument("--init", help="override init: inherited or scratch")
    parser.add_argument("--data", help="override the data folder")
    parser.add_argument("--max-train", type=int, help="override max_train (training images used)")
    parser.add_argument("--max-val", type=int, help="override max_val (validation images scored)")
    parser.add_argument(
        "--input-size",
        type=int,
        help="override the training size (export writes the deployment size on real data and the "
        "proxy size on a built-in demo)",
    )
    parser.add_argument("--device", help="override the training device: auto (CUDA when present), cpu or cuda")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--out",
        help="output folder (default: train.yaml's out, next to the yaml); a folder holding an "
        "earlier run's checkpoint needs --resume",
    )
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true")


def _train_run(arguments: argparse.Namespace) -> None:
    from nas_search.config import load_yaml_file
    from nas_search.errors import UserError
    from nas_search.tasks import TASKS

    data = load_yaml_file(arguments.config, "training config")
    task_name = data.get("task", "classify") if isinstance(data, dict) else "classify"
    if task_name not in TASKS:
        raise UserError(f"{arguments.config}: task={task_name!r}; accepted: {', '.join(TASKS)}")
    task = TASKS[task_name]
    overrides = {
        "epochs": arguments.epochs,
        "init": arguments.init,
        "data": arguments.data,
        "max_train": arguments.max_train,
        "max_val": arguments.max_val,
        "input_size": arguments.input_size,
        "device": arguments.device,
        # given on the command line, relative to the working folder
        "out": None if arguments.out is None else str(Path(arguments.out).resolve()),
    }
    result = task.train_standalone(arguments.config, resume=arguments.resume, overrides=overrides, progress=not arguments.quiet)
    emit(arguments, result, task.describe_trained(result))


#: The commands of this module, in the order ``--help`` lists them.
COMMANDS: list[Command] = [
    Command("supernet", "train the weight-sharing supernet (`supernet train`)", _supernet_arguments, _supernet_run),
    Command(
        "eval",
        "score of an architecture with inherited supernet weights (top-1, or mAP for detectors)",
        _eval_arguments,
        _eval_run,
    ),
    Command("run", "the main job: train the supernet, search under budgets, summarise", _run_arguments, _run_run),
    Command("worker", "join an existing study (e.g. on PostgreSQL) and run its queued trials", _worker_arguments, _worker_run),
    Command("dashboard", "review a study in optuna-dashboard (127.0.0.1)", _dashboard_arguments, _dashboard_run),
    Command("export", "export a trial: arch.yaml, train.yaml, model.pt, model.onnx, meta.json", _export_arguments, _export_run),
    Command("train", "train an exported architecture on its own (train.yaml)", _train_arguments, _train_run),
]

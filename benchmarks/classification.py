"""Classification under "no more FLOPs than ResNet-20": our searched CIFAR classifier vs
random architectures of the same FLOPs band and two hand designs, side by side in one run.

1. The budget: the FLOPs of ResNet-20 (He et al. 2016, the CIFAR network: 3 stages of 3
   basic blocks, 16/32/64 channels; here with 1x1 conv + BN projection shortcuts, option
   B), counted with fvcore (1 multiply-add = 1 FLOP, BN counted) at 32 x 32, batch 1.
2. Ours: the pick of the full pipeline, ``run_search(SearchConfig(space="cifar",
   budget=<ResNet-20's FLOPs>, ...))`` with its default settings for real data (supernet,
   Optuna trials in the band [0.8, 1.0] x budget, finalists). The search sees only the
   train folder (which it splits 80/20 itself, seeded); the test folder stays untouched
   until the final scoring. Its wall time (supernet + trials + finalists, summed over the
   sessions of a resumed run) is reported.
3. Random: ``--random`` architectures drawn by the search's own budget-aware sampler
   (``sample_specs``) in the same band [0.8, 1.0] x budget: what a user gets without the
   search.
4. Hand designs (``benchmarks/lib/hand_designs.py``): ResNet-20 itself, and torchvision's
   MobileNetV2 in its common CIFAR form (stride 1 in the stem and in the first 24-channel
   block), at the width multiplier that puts it just under the budget; no dropout.
5. Every model is trained from scratch with one recipe (SGD Nesterov momentum 0.9, lr 0.1
   at batch 128, weight decay 5e-4 not on BN or biases, warm-up + cosine, label smoothing
   0.1, random crop from a 4 px reflect padding + horizontal flip, 32 px) on the train
   folder (5,000 images), ``--seeds`` times (the seed sets initialisation, data order and
   augmentation), and scored by top-1 on the test folder (2,000 images). Means come with
   standard errors over the seeds; differences with Welch standard errors.
6. Costs: fvcore FLOPs (and our analytic count for ours and random, which must agree),
   params, latency at batch 1, 32 x 32, one thread, in torch eager and onnxruntime.

    python benchmarks/classification.py [--quick] [--json OUT] [--data DIR] [--workdir DIR]
                                        [--seeds K] [--epochs E] [--random K] [--threads N]

Resumable: ``--workdir`` (default ``benchmarks/work/classification``) holds the study, a
record of the search (``search.json``), and one JSON file per finished (model, seed)
training run (``runs/``), plus a per-epoch checkpoint of the run in progress; a rerun with
the same options skips what is finished; a full run (10 epochs, 3 seeds, 6 models) takes
about 8 hours on 2 cores, split over as many sessions as needed. ``--quick`` (about five
minutes on 2 cores) checks the pipeline with a tiny search, 1 epoch on 1,000 images, 1
seed and 1 random architecture; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from benchmarks.lib.hand_designs import mobilenetv2_at_budget, parameter_count, resnet20  # noqa: E402
from nas_search.hw_models.flops import count_flops  # noqa: E402
from nas_search.hw_models.fvcore_count import fvcore_flops  # noqa: E402
from nas_search.hw_models.latency import TimingOptions, local_hardware, measure_modules  # noqa: E402
from nas_search.progress import progress_bar  # noqa: E402
from nas_search.search.config import SearchConfig  # noqa: E402
from nas_search.search.runner import run_search  # noqa: E402
from nas_search.search.sampling import sample_specs  # noqa: E402
from nas_search.spaces.static import build_static_model  # noqa: E402
from nas_search.spec import ArchSpec  # noqa: E402
from nas_search.tasks import get_space  # noqa: E402
from nas_search.tasks.classify.data import load_classification_data, make_loader  # noqa: E402
from nas_search.tasks.classify.evaluate import top1_accuracy  # noqa: E402
from nas_search.tasks.classify.standalone import train_epoch  # noqa: E402
from nas_search.training.loop import (  # noqa: E402
    EpochLoop,
    EpochTally,
    TrainingState,
    announce_resume,
    build_optimizer,
    count_steps,
    run_epochs,
    step_schedule,
)
from nas_search.units import format_flops  # noqa: E402
from nas_search.utils import atomic_torch_save, atomic_write_text  # noqa: E402

#: Deployment (and training) input side: CIFAR's 32 x 32.
INPUT_SIZE = 32
#: The search space of ours.
SPACE = "cifar"
#: The lower end of the FLOPs band, as a fraction of the budget (the search's default
#: ``--min-utilization``); the random architectures are drawn in the same band.
MIN_FRACTION = 0.8
#: The target: ours beats random and the best hand design by at least this many points of
#: top-1, each difference larger than its standard error.
TARGET_POINTS = 1.0
GROUPS = ("ours", "random", "resnet20", "mobilenetv2")


@dataclass(frozen=True)
class Recipe:
    """The from-scratch training recipe shared by every model."""

    epochs: int
    batch_size: int = 128
    optimizer: str = "sgd"  # Nesterov (build_optimizer)
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not on BN parameters and biases (build_optimizer)
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    input_size: int = INPUT_SIZE
    max_train: int | None = None  # a class-balanced subset of the train folder (None: all)
    seed: int = 0


@dataclass(frozen=True)
class SearchBudget:
    """Overrides of the search's settings; None keeps its default for real data."""

    supernet_epochs: int | None = None
    trials: int | None = None
    startup_trials: int | None = None
    finalists: int | None = None
    max_train: int | None = None


#: Default from-scratch epochs. Measured on the 2-core CPU (1 torch thread, load average
#: about 3), one epoch of the 5,000 training images takes about 185 s for ours, 135 s for a
#: random architecture, 30 s for ResNet-20 and 175 s for MobileNetV2 (depthwise and
#: sliding-channel convs train far slower per FLOP than dense 3x3 convs): about 40 minutes
#: per epoch for 6 models x 3 seeds, so 10 epochs take about 7 hours (15 would take 10),
#: plus about an hour of search. ResNet-20 reaches 46% test top-1 after 3 epochs.
FULL_EPOCHS = 10
QUICK = (
    SearchBudget(supernet_epochs=1, trials=8, startup_trials=8, finalists=0, max_train=1000),
    Recipe(epochs=1, warmup_epochs=0.2, max_train=1000),
)
FULL = (SearchBudget(), Recipe(epochs=FULL_EPOCHS))


@dataclass
class Candidate:
    """One model of the comparison: its group, a unique name, a printable architecture and
    a builder of a randomly initialised instance (seeded by the caller)."""

    group: str
    name: str
    arch: str
    build: Callable[[], nn.Module]
    spec: ArchSpec | None = None
    details: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ search
def search_ours(train_folder: Path, budget_flops: int, budget: SearchBudget, workdir: Path, seed: int) -> tuple[dict, float]:
    """Our real search under the FLOPs budget on the train folder only; returns the parts
    of its summary this benchmark reports, and the search's wall time. ``search.json`` in
    the work folder records the time spent (summed over interrupted sessions) and, once
    the search has finished, its summary, which a rerun with the same settings reuses."""
    overrides = {key: value for key, value in asdict(budget).items() if value is not None}
    config = SearchConfig(
        space=SPACE,
        data=str(train_folder),
        budget=str(budget_flops),
        input_size=INPUT_SIZE,
        studies_dir=str(workdir / "studies"),
        study="classification",
        seed=seed,
        progress=True,
        **overrides,
    )
    path = workdir / "search.json"
    key = json.dumps(asdict(config), sort_keys=True, default=str)
    record = json.loads(path.read_text()) if path.is_file() else {}
    if record.get("key") != key:
        record = {"key": key, "seconds": 0.0}
    if record.get("summary"):
        print(f"reusing the finished search recorded in {path} ({record['seconds']:.0f} s)")
        return record["summary"], record["seconds"]
    started = time.perf_counter()
    try:
        summary = run_search(config)
    finally:
        record["seconds"] += time.perf_counter() - started
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    if not summary.get("best"):
        raise RuntimeError(f"the search found no feasible architecture in {summary.get('trials')} trials")
    kept = ("best", "trials", "feasible_fraction", "band", "search_seconds", "chance_warning")
    record["summary"] = {**{name: summary.get(name) for name in kept}, "top": summary.get("top", [])[:5]}
    record["settings"] = {**overrides, "budget": config.budget, "space": SPACE, "data": config.data}
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return record["summary"], record["seconds"]


# ------------------------------------------------------------------------------ models
def build_searched(spec: ArchSpec, num_classes: int) -> nn.Module:
    return build_static_model(get_space(SPACE).resolve(spec, num_classes=num_classes))


def make_candidates(ours: ArchSpec, budget_flops: int, random_count: int, seed: int, num_classes: int) -> list[Candidate]:
    """Ours, ``random_count`` random architectures of the band, ResNet-20 and MobileNetV2."""
    candidates = [Candidate("ours", "ours", str(ours), lambda: build_searched(ours, num_classes), ours)]
    drawn = sample_specs(
        get_space(SPACE), random_count, seed=seed, max_flops=budget_flops, input_size=INPUT_SIZE, min_fraction=MIN_FRACTION
    )
    for index, (spec, _) in enumerate(drawn):
        candidates.append(
            Candidate("random", f"random-{index + 1}", str(spec), lambda spec=spec: build_searched(spec, num_classes), spec)
        )
    mobilenet = mobilenetv2_at_budget(budget_flops, num_classes)
    candidates.append(
        Candidate("resnet20", "resnet20", "ResNet-20, option-B (1x1 conv + BN) shortcuts", lambda: resnet20(num_classes))
    )
    candidates.append(
        Candidate(
            "mobilenetv2",
            "mobilenetv2",
            f"MobileNetV2-CIFAR width {mobilenet.width_mult:.4f} (channels to multiples of {mobilenet.round_nearest})",
            lambda: mobilenet.build(num_classes),
            details={"width_mult": mobilenet.width_mult, "round_nearest": mobilenet.round_nearest},
        )
    )
    return candidates


# ------------------------------------------------------------------------------ training
class FinishedRuns:
    """Finished from-scratch runs in the work folder, one JSON file each under ``runs/``
    (named by model, seed and a hash of everything that defines the run: architecture,
    recipe with its seed, data), written atomically; plus the per-epoch checkpoint of a run
    in progress (``.partial.pt``), removed when the run ends."""

    def __init__(self, workdir: Path) -> None:
        self.folder = workdir / "runs"

    def path(self, candidate: Candidate, recipe: Recipe, data_description: str) -> Path:
        key = json.dumps([candidate.group, candidate.arch, asdict(recipe), data_description], sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.folder / f"{candidate.name}-seed{recipe.seed}-{digest}.json"

    def load(self, path: Path) -> dict | None:
        return json.loads(path.read_text())["result"] if path.is_file() else None

    def store(self, path: Path, candidate: Candidate, recipe: Recipe, result: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {"name": candidate.name, "arch": candidate.arch, "recipe": asdict(recipe), "result": result}
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
        path.with_suffix(".partial.pt").unlink(missing_ok=True)


def train_from_scratch(label: str, model: nn.Module, data: Any, recipe: Recipe, checkpoint: Path) -> dict:
    """Train ``model`` with the shared recipe on ``data.train`` (a checkpoint after every
    epoch; an interrupted run resumes from it and repeats an uninterrupted one: every epoch
    is reseeded and the data load in this process), then score top-1 on ``data.val``."""
    loader = make_loader(
        data.train, batch_size=recipe.batch_size, shuffle=True, seed=recipe.seed, num_workers=0, drop_last=True
    )
    test_loader = make_loader(data.val, batch_size=250, shuffle=False, seed=recipe.seed, num_workers=0)
    steps = count_steps(loader, f"fewer training images than one batch of {recipe.batch_size}")
    optimizer = build_optimizer(model, recipe)
    state = TrainingState(model, optimizer, step_schedule(optimizer, steps, recipe.epochs, recipe.warmup_epochs))
    start, history = 0, []
    if checkpoint.is_file():
        start, history = state.restore(torch.load(checkpoint, map_location="cpu", weights_only=True))
        announce_resume(checkpoint, start, recipe.epochs)

    def train(epoch: int, bar: Any, tally: EpochTally) -> None:
        model.train()
        for loss, count in train_epoch(model, loader, optimizer, state.scheduler, recipe.label_smoothing):
            tally.add(count, loss=loss)
            bar.update(count)

    def record(epoch: int, tally: EpochTally) -> dict:
        return {"epoch": epoch + 1, "loss": tally.mean("loss"), "seconds": tally.seconds}

    def save(epoch: int) -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({**state.state_dicts(), "epoch": epoch + 1, "history": history}, checkpoint)

    loop = EpochLoop(loader, recipe.seed, recipe.epochs, f"{label} epoch", steps * recipe.batch_size, progress_bar)
    run_epochs(loop, start, recipe.epochs, history, train, record, save)
    top1 = top1_accuracy(model, test_loader)
    return {
        "top1": top1,
        "test_images": len(data.val),
        "loss": history[-1]["loss"],
        "history": history,
        "train_seconds": sum(entry["seconds"] for entry in history),
    }


def train_all(candidates: list[Candidate], data: Any, recipe: Recipe, seeds: int, workdir: Path) -> dict[str, list[float]]:
    """Top-1 per seed of every candidate (seeds outermost, so that a stopped run has every
    model's first seed first); finished runs are reused."""
    finished = FinishedRuns(workdir)
    top1: dict[str, list[float]] = {candidate.name: [] for candidate in candidates}
    seconds: dict[str, list[float]] = {candidate.name: [] for candidate in candidates}
    total = seeds * len(candidates)
    for offset in range(seeds):
        seeded = replace(recipe, seed=recipe.seed + offset)
        for index, candidate in enumerate(candidates):
            path = finished.path(candidate, seeded, data.description)
            label = f"[{offset * len(candidates) + index + 1}/{total}] {candidate.name} (seed {seeded.seed})"
            run = finished.load(path)
            if run is None:
                torch.manual_seed(seeded.seed)
                run = train_from_scratch(label, candidate.build(), data, seeded, path.with_suffix(".partial.pt"))
                finished.store(path, candidate, seeded, run)
                print(f"{label}: test top-1 {100 * run['top1']:.2f}% ({run['train_seconds']:.0f} s)", flush=True)
            else:
                print(f"{label}: reusing {path.name} (test top-1 {100 * run['top1']:.2f}%)", flush=True)
            top1[candidate.name].append(run["top1"])
            seconds[candidate.name].append(run["train_seconds"])
    return {"top1": top1, "train_seconds": seconds}


# ------------------------------------------------------------------------------ costs
def measure_costs(candidates: list[Candidate], num_classes: int, repeats: int) -> dict[str, dict]:
    """FLOPs (fvcore, and analytic for searched architectures), params and batch-1 latency
    at 32 x 32 on one thread (torch eager, interleaved; onnxruntime) of every candidate."""
    torch.manual_seed(0)
    models = {candidate.name: candidate.build().eval() for candidate in candidates}
    costs: dict[str, dict] = {}
    for candidate in candidates:
        model = models[candidate.name]
        entry: dict[str, Any] = {"flops": fvcore_flops(model, INPUT_SIZE), "params": parameter_count(model)}
        if candidate.spec is not None:
            analytic = count_flops(candidate.spec, get_space(SPACE), INPUT_SIZE, num_classes)
            entry.update(flops_analytic=analytic.flops, params_analytic=analytic.params)
            entry["flops_match"] = analytic.flops == entry["flops"]
        costs[candidate.name] = entry
    example = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(0))
    options = TimingOptions(warmup=3, repeats=repeats)
    timings = measure_modules([(models[name], example) for name in models], "torch", 1, options)
    for name, timing in zip(models, timings):
        costs[name]["latency_ms"] = timing.median_ms
    for name, model in models.items():
        try:
            costs[name]["latency_onnxruntime_ms"] = measure_modules([(model, example)], "onnxruntime", 1, options)[0].median_ms
        except Exception as error:  # an exporter failure is reported, not fatal
            print(f"onnxruntime latency of {name} not measured: {str(error).splitlines()[0][:160]}")
            costs[name]["latency_onnxruntime_ms"] = None
    return costs


# ------------------------------------------------------------------------------ statistics
def mean_and_error(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample standard deviation over sqrt(n); None for n < 2)."""
    if len(values) < 2:
        return statistics.mean(values), None
    return statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values))


def seed_difference(ours: list[float], other: list[float]) -> dict | None:
    """Difference of two means with its Welch standard error (each side's variance over
    its count); None with fewer than two values a side. (As in benchmarks/detection.py.)"""
    if len(ours) < 2 or len(other) < 2:
        return None
    error = math.sqrt(statistics.variance(ours) / len(ours) + statistics.variance(other) / len(other))
    return {"value": statistics.mean(ours) - statistics.mean(other), "standard_error": error}


def mean_of(entries: list[dict], key: str) -> float | None:
    values = [entry.get(key) for entry in entries]
    return None if any(value is None for value in values) else statistics.mean(values)


def group_results(candidates: list[Candidate], runs: dict, costs: dict[str, dict]) -> dict[str, dict]:
    """One entry per group: top-1 mean and standard error over its seeds, costs, and for
    random the mean over its architectures and seeds (its values pooled, so that its
    standard error covers the spread between architectures too) with one entry each."""
    entries: dict[str, dict] = {}
    for candidate in candidates:
        per_seed = runs["top1"][candidate.name]
        top1, error = mean_and_error(per_seed)
        entries[candidate.name] = {
            "top1": top1,
            "top1_se": error,
            **costs[candidate.name],
            "arch": candidate.arch,
            **({"arch_spec": candidate.spec.to_dict()} if candidate.spec is not None else {}),
            **candidate.details,
            "top1_per_seed": per_seed,
            "train_seconds": statistics.mean(runs["train_seconds"][candidate.name]),
        }
    result = {candidate.group: entries[candidate.name] for candidate in candidates if candidate.group != "random"}
    drawn = [entries[candidate.name] for candidate in candidates if candidate.group == "random"]
    pooled = [value for entry in drawn for value in entry["top1_per_seed"]]
    top1, error = mean_and_error(pooled)
    result["random"] = {
        "top1": top1,
        "top1_se": error,
        **{key: mean_of(drawn, key) for key in ("flops", "params", "latency_ms", "latency_onnxruntime_ms", "train_seconds")},
        "flops_analytic": mean_of(drawn, "flops_analytic"),
        "flops_match": all(entry["flops_match"] for entry in drawn),
        "top1_values": pooled,
        "architectures": drawn,
    }
    return {group: result[group] for group in GROUPS}


def compare(result: dict) -> dict:
    """Ours - random and ours - the best hand design (higher mean top-1), with Welch
    standard errors, and whether the target is met."""
    best_hand = max(("resnet20", "mobilenetv2"), key=lambda name: result[name]["top1"])
    ours = result["ours"]["top1_per_seed"]
    differences = {
        "ours_minus_random": seed_difference(ours, result["random"]["top1_values"]),
        "ours_minus_best_hand": seed_difference(ours, result[best_hand]["top1_per_seed"]),
    }
    if any(difference is None for difference in differences.values()):
        met = None  # not testable with one seed
    else:
        met = all(
            difference["value"] >= TARGET_POINTS / 100 and difference["value"] > difference["standard_error"]
            for difference in differences.values()
        )
    return {
        **differences,
        "best_hand_design": best_hand,
        "target": f"ours beats random and the best hand design by >= {TARGET_POINTS:g} point of top-1, each difference "
        "larger than its standard error",
        "target_met": met,
    }


# ------------------------------------------------------------------------------ report
def show(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def print_table(result: dict) -> None:
    rows = [
        ("test top-1 % (mean over seeds)", lambda entry: show(100 * entry["top1"], ".2f")),
        ("  standard error (points)", lambda entry: show(None if entry["top1_se"] is None else 100 * entry["top1_se"], ".2f")),
        (f"MFLOPs @{INPUT_SIZE} (fvcore)", lambda entry: show(entry["flops"] / 1e6, ".2f")),
        ("MFLOPs analytic", lambda entry: show(entry.get("flops_analytic") and entry["flops_analytic"] / 1e6, ".2f")),
        ("params (M)", lambda entry: show(entry["params"] / 1e6, ".3f")),
        ("latency torch 1 thread (ms)", lambda entry: show(entry["latency_ms"], ".3f")),
        ("latency onnxruntime 1 thread (ms)", lambda entry: show(entry["latency_onnxruntime_ms"], ".3f")),
        ("training seconds per run", lambda entry: show(entry["train_seconds"], ".0f")),
    ]
    print(f"\n{'':34}" + "".join(f"{name:>13}" for name in GROUPS))
    for label, cell in rows:
        print(f"{label:34}" + "".join(f"{cell(result[name]):>13}" for name in GROUPS))
    print("\nrandom architectures (top-1 % per seed):")
    for entry in result["random"]["architectures"]:
        seeds = ", ".join(f"{100 * value:.2f}" for value in entry["top1_per_seed"])
        print(f"  {entry['arch']}: {entry['flops'] / 1e6:.2f} MFLOPs, top-1 {seeds}")
    for name in ("ours", "resnet20", "mobilenetv2"):
        seeds = ", ".join(f"{100 * value:.2f}" for value in result[name]["top1_per_seed"])
        print(f"{name} top-1 % per seed: {seeds}")
    comparison = result["comparison"]
    for key, label in (("ours_minus_random", "random"), ("ours_minus_best_hand", comparison["best_hand_design"])):
        difference = comparison[key]
        text = "not estimated (needs 2 seeds or more)"
        if difference is not None:
            text = f"{100 * difference['value']:+.2f} +- {100 * difference['standard_error']:.2f} points (Welch standard error)"
        print(f"top-1 ours - {label}: {text}")
    met = comparison["target_met"]
    verdict = "not testable with one seed" if met is None else ("MET" if met else "NOT met")
    print(f"target: {comparison['target']}: {verdict}")


def print_setup(result: dict) -> None:
    recipe, search = result["recipe"], result["search"]
    print(f"\nours: {result['ours']['arch']}")
    print(
        f"budget: ResNet-20's {search['budget_flops']:,} FLOPs at {INPUT_SIZE} px (fvcore, 1 multiply-add = 1 FLOP); "
        f"MobileNetV2 width {result['mobilenetv2']['width_mult']:.4f} has {result['mobilenetv2']['flops']:,}"
    )
    print(
        f"search: {search['seconds']:.0f} s wall time, {search['trials_completed']} trials, settings "
        f"{search['settings'] or 'the defaults for real data'}; recipe: {recipe['epochs']} epochs, batch "
        f"{recipe['batch_size']}, SGD Nesterov lr {recipe['learning_rate']}, wd {recipe['weight_decay']}, warm-up "
        f"{recipe['warmup_epochs']} epoch + cosine, label smoothing {recipe['label_smoothing']}; {result['seeds']} seed(s); "
        f"total {result['seconds'] / 60:.1f} min; {result['machine']}; load average {result['load_average'][0]:.2f}"
    )


# ------------------------------------------------------------------------------ main
def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny search and training (about 5 minutes): checks the pipeline")
    parser.add_argument("--json", help="write results as JSON")
    parser.add_argument(
        "--data",
        default=str(REPOSITORY.parent / "shared" / "data" / "cifar10-subset"),
        help="an ImageFolder root with train/ and test/ (the search sees train/ only)",
    )
    parser.add_argument("--workdir", default=str(REPOSITORY / "benchmarks" / "work" / "classification"))
    parser.add_argument("--seeds", type=int, help="from-scratch trainings per model (default 3, --quick 1)")
    parser.add_argument("--epochs", type=int, help=f"from-scratch training epochs (default {FULL_EPOCHS}, --quick 1)")
    parser.add_argument("--random", type=int, help="random architectures of the band (default 3, --quick 1)")
    parser.add_argument("--threads", type=int, help="torch threads for training (default: torch's; latency always uses 1)")
    parser.add_argument("--repeats", type=int, default=15, help="latency samples per model")
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    started = time.perf_counter()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    search_budget, recipe = QUICK if arguments.quick else FULL
    recipe = replace(recipe, epochs=arguments.epochs or recipe.epochs)
    seeds = arguments.seeds or (1 if arguments.quick else 3)
    random_count = arguments.random or (1 if arguments.quick else 3)
    data_dir, workdir = Path(arguments.data).resolve(), Path(arguments.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); work folder {workdir}"
    )
    data = load_classification_data(data_dir, input_size=INPUT_SIZE, seed=recipe.seed, max_train=recipe.max_train)
    print(data.description)

    budget_flops = fvcore_flops(resnet20(data.num_classes), INPUT_SIZE)
    print(
        f"ResNet-20 (option-B shortcuts): {budget_flops:,} FLOPs = {format_flops(budget_flops)} at {INPUT_SIZE} px: the budget"
    )
    summary, search_seconds = search_ours(data_dir / "train", budget_flops, search_budget, workdir, recipe.seed)
    spec = ArchSpec.from_dict(summary["best"]["arch"])
    print(f"search: {search_seconds:.0f} s; picked {spec} (proxy top-1 {summary['best']['accuracy']:.4f})")

    candidates = make_candidates(spec, budget_flops, random_count, recipe.seed, data.num_classes)
    print(
        f"from scratch: {len(candidates)} models ({', '.join(candidate.name for candidate in candidates)}) x {seeds} seed(s) "
        f"x {recipe.epochs} epoch(s) on {len(data.train)} images; finished runs are kept in {workdir / 'runs'}"
    )
    runs = train_all(candidates, data, recipe, seeds, workdir)
    costs = measure_costs(candidates, data.num_classes, arguments.repeats)
    result: dict[str, Any] = group_results(candidates, runs, costs)
    result["ours"].update(proxy_top1=summary["best"]["accuracy"], finalist_top1=summary["best"].get("finalist_score"))
    result["comparison"] = compare(result)
    result["search_seconds"] = search_seconds
    result.update(
        search={
            "budget_flops": budget_flops,
            "budget_text": str(budget_flops),
            "seconds": search_seconds,
            "trials_completed": summary["trials"],
            "feasible_fraction": summary["feasible_fraction"],
            "settings": {key: value for key, value in asdict(search_budget).items() if value is not None},
            "top": summary["top"],
            "search_data": f"{data_dir / 'train'} only (the search splits it 80/20 itself)",
        },
        recipe=asdict(recipe),
        seeds=seeds,
        data=data.description,
        flops_convention=f"fvcore at {INPUT_SIZE}x{INPUT_SIZE}, batch 1; 1 multiply-add = 1 FLOP; BN counted",
        latency=f"batch 1, {INPUT_SIZE}x{INPUT_SIZE}, 1 thread, median of {arguments.repeats} samples (thread CPU time)",
        top1_unit="fraction of the test images",
        machine=local_hardware(),
        platform=platform.platform(),
        load_average=list(os.getloadavg()),
        date=date.today().isoformat(),
        seconds=time.perf_counter() - started,
        quick=arguments.quick,
        workdir=str(workdir),
    )
    print_table(result)
    print_setup(result)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

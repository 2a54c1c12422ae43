"""Detection under "no more FLOPs than SSDlite": our searched detector vs torchvision's
``ssdlite320_mobilenet_v3_large``, side by side in one run.

1. The anchor: ``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
   num_classes=C + 1)``. Its FLOPs are counted with fvcore (1 multiply-add = 1 FLOP) on the
   raw network (backbone + head on a ``[1, 3, 320, 320]`` tensor, no transform, no
   post-processing).
2. Ours: the best architecture of the real search, ``run_search(SearchConfig(task="detect",
   budget=<SSDlite's FLOPs>, input_size=320, ...))``: a budget-aware detection supernet is
   trained at a proxy size, then Optuna searches subnets of at most SSDlite's FLOPs at 320
   px. The search never sees the reported val split: it runs on a copy of the train split
   (which it splits 80/20 itself, seeded). Our FLOPs are counted the same way (fvcore on
   ``build_detector(...).core()`` at 320) and by our analytic counter, which must agree.
3. Both are trained from scratch with the same recipe (AdamW, warm-up + cosine, gradient
   clipping, same epochs, batch size, input size, data order and flips) with
   ``train_detection_epoch``; SSDlite's transform is set to the same input size. Both
   stretch every image to the full 320 x 320 square their FLOPs are counted on (SSDlite's
   ``fixed_size``; ours the default resize mode ``square``). Both are
   scored with the same post-processing score threshold (SSDlite's 0.001) by COCO mAP on the
   val split (raccoon: its 40 test images). Each is trained ``--seeds`` times (3; the seed
   sets initialisation, data order and flips) and the mAPs are averaged: on 40 test images a
   single run's mAP@0.5 moves by several points from seed to seed.
4. Latency: batch 1, raw network at 320, torch eager with one thread (thread CPU time,
   interleaved, median of repeats), and onnxruntime with one thread; the whole detector
   (transform + network + post-processing, torch eager) on a val image as well.

    python benchmarks/detection.py [--quick] [--json OUT] [--data DIR]

``--data`` is any Pascal VOC folder (default ../shared/data/raccoon relative to the
repository root); without a split file the loader makes a seeded 80/20 split. ``--quick``
(a few minutes) checks the pipeline; its figures mean little.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from nas_search.hw_models.flops import count_flops  # noqa: E402
from nas_search.hw_models.fvcore_count import fvcore_flops  # noqa: E402
from nas_search.hw_models.latency import TimingOptions, local_hardware, measure_modules  # noqa: E402
from nas_search.progress import progress_bar  # noqa: E402
from nas_search.search.config import SearchConfig  # noqa: E402
from nas_search.search.runner import run_search  # noqa: E402
from nas_search.spec import ArchSpec  # noqa: E402
from nas_search.tasks import get_space  # noqa: E402
from nas_search.tasks.detect.build import build_detector  # noqa: E402
from nas_search.tasks.detect.data import load_detection_data, make_detection_loader, read_detection_annotations  # noqa: E402
from nas_search.tasks.detect.evaluate import mean_average_precision  # noqa: E402
from nas_search.tasks.detect.supernet_training import train_detection_epoch  # noqa: E402
from nas_search.training.distributed import resolve_device  # noqa: E402
from nas_search.training.loop import build_optimizer, warmup_cosine  # noqa: E402
from nas_search.utils import atomic_torch_save, atomic_write_text  # noqa: E402

#: Deployment size of the comparison: SSDlite's own 320 x 320.
DEPLOYMENT_SIZE = 320
#: Post-processing score threshold of both detectors when scored (SSDlite's default).
SCORE_THRESHOLD = 0.001


@dataclass(frozen=True)
class Recipe:
    """The from-scratch training recipe shared by both detectors."""

    epochs: int
    input_size: int
    batch_size: int = 16
    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    clip_grad_norm: float = 10.0
    seed: int = 0
    eval_every: int = 5


@dataclass(frozen=True)
class SearchBudget:
    """How much search: supernet epochs at the proxy size, Optuna trials, and the
    finalists (the best trials re-ranked by training on the search's own split)."""

    proxy_size: int
    supernet_epochs: int
    trials: int
    startup_trials: int
    finalists: int
    finalist_epochs: int
    finalist_size: int
    finalist_init: str
    finalist_seeds: int = 1


QUICK = (
    SearchBudget(
        proxy_size=96,
        supernet_epochs=1,
        trials=4,
        startup_trials=4,
        finalists=2,
        finalist_epochs=1,
        finalist_size=128,
        finalist_init="scratch",
    ),
    Recipe(epochs=3, input_size=128, eval_every=3),
)
#: Sized for about 50 minutes on the 2-core CPU: a from-scratch FCOS needs some 80 steps
#: before its box loss leaves 1.0, so supernet epochs are bought with a small proxy size.
#: The finalists replay the final recipe (from scratch, 12 epochs at 320 px) on the
#: search's split: the supernet's proxy mAPs at 96 px did not pick well (RESULTS.md).
FULL = (
    SearchBudget(
        proxy_size=96,
        supernet_epochs=10,
        trials=12,
        startup_trials=6,
        finalists=4,
        finalist_epochs=12,
        finalist_size=320,
        finalist_init="scratch",
    ),
    Recipe(epochs=12, input_size=320, eval_every=4),
)


# ------------------------------------------------------------------------------ models
class SSDCore(nn.Module):
    """SSDlite's raw network: backbone + head on normalised ``[B, 3, S, S]`` images,
    returning ``(cls_logits, bbox_regression)``; no transform, no post-processing."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.head(list(self.backbone(images).values()))
        return outputs["cls_logits"], outputs["bbox_regression"]


def build_ssdlite(num_classes: int, input_size: int) -> nn.Module:
    """Randomly initialised SSDlite (C + 1 outputs) whose transform resizes to ``input_size``."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    set_ssdlite_size(model, input_size)
    return model


def set_ssdlite_size(model: nn.Module, size: int) -> None:
    """SSDlite stretches images to a fixed square (``fixed_size``), as ours does by default."""
    model.transform.min_size = (size,)
    model.transform.max_size = size
    model.transform.fixed_size = (size, size)


def build_ours(spec: ArchSpec, num_classes: int, input_size: int) -> nn.Module:
    return build_detector(spec, num_classes, input_size, score_thresh=SCORE_THRESHOLD)


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


# ------------------------------------------------------------------------------ search
def train_split_copy(data_dir: Path, seed: int, out: Path) -> Path:
    """A VOC folder holding only the train split of ``data_dir`` (images + XML copied), so
    that the search never scores on the images the final mAP is measured on."""
    annotations = read_detection_annotations(data_dir, "voc")
    xml_of = {image.path.resolve(): image.annotation_file for image in annotations.images}
    train = load_detection_data(data_dir, input_size=32, seed=seed, augment=False).train
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for path in train.paths:
        shutil.copy2(path, out / "images" / path.name)
        xml = xml_of[Path(path).resolve()]
        shutil.copy2(xml, out / "annotations" / xml.name)
    return out


def search_ours(search_data: Path, budget_flops: int, budget: SearchBudget, workdir: Path, device: str, seed: int) -> dict:
    """Our real search under the FLOPs budget; returns its summary."""
    config = SearchConfig(
        task="detect",
        data=str(search_data),
        budget=str(budget_flops),
        input_size=DEPLOYMENT_SIZE,
        train_input_size=budget.proxy_size,
        trials=budget.trials,
        startup_trials=budget.startup_trials,
        supernet_epochs=budget.supernet_epochs,
        study="detection-benchmark",
        finalists=budget.finalists,
        finalist_epochs=budget.finalist_epochs,
        finalist_input_size=budget.finalist_size,
        finalist_init=budget.finalist_init,
        finalist_seeds=budget.finalist_seeds,
        storage=f"sqlite:///{workdir / 'detection-benchmark.db'}",
        studies_dir=str(workdir),
        seed=seed,
        training_device=device,
        progress=True,
    )
    summary = run_search(config)
    if not summary.get("best"):
        raise RuntimeError(f"the search found no feasible architecture in {budget.trials} trials")
    return summary


# ------------------------------------------------------------------------------ training
def train_from_scratch(name: str, model: nn.Module, data, recipe: Recipe, device: torch.device) -> dict:
    """Train ``model`` with the shared recipe; mAP on the val split every ``eval_every``
    epochs and at the end."""
    model.to(device)
    optimizer = build_optimizer(
        model,
        SimpleNamespace(
            optimizer=recipe.optimizer, learning_rate=recipe.learning_rate, momentum=0.9, weight_decay=recipe.weight_decay
        ),
    )
    loader = make_detection_loader(data.train, batch_size=recipe.batch_size, shuffle=True, seed=recipe.seed, drop_last=True)
    val_loader = make_detection_loader(data.val, batch_size=16, shuffle=False, seed=recipe.seed)
    steps = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps * recipe.epochs, int(recipe.warmup_epochs * steps))
    )
    history, started = [], time.perf_counter()
    for epoch in range(recipe.epochs):
        torch.manual_seed(recipe.seed + 1000 * epoch)
        loader.generator.manual_seed(recipe.seed + epoch)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        bar = progress_bar(steps * recipe.batch_size, f"{name} epoch {epoch + 1}/{recipe.epochs}", "img")
        try:
            record = train_detection_epoch(
                model, loader, optimizer, scheduler, device, bar, clip_grad_norm=recipe.clip_grad_norm
            )
        finally:
            bar.close()
        entry = {"epoch": epoch + 1, "loss": record["loss"], "images_per_second": record["images_per_second"]}
        if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
            scores = mean_average_precision(model, val_loader, device)
            entry.update(map50=scores["map50"], map=scores["map"])
            print(f"{name} epoch {epoch + 1}: loss {record['loss']:.4f}, mAP@0.5 {scores['map50']:.4f}", flush=True)
        history.append(entry)
    return {
        "map50": history[-1]["map50"],
        "map": history[-1]["map"],
        "history": history,
        "train_seconds": time.perf_counter() - started,
    }


class FinishedRuns:
    """From-scratch runs already finished in the work folder (``from-scratch-runs.json``,
    plus the weights of each run), so that a benchmark restarted with the same
    ``--workdir`` after Ctrl-C or a crash reuses them instead of training again. A run is
    keyed by detector, architecture, recipe (seed included) and data description; weights
    load with ``weights_only=True``."""

    def __init__(self, workdir: Path) -> None:
        self.folder = workdir / "from-scratch"
        self.index = self.folder / "runs.json"
        self.runs: dict[str, dict] = json.loads(self.index.read_text()) if self.index.is_file() else {}

    @staticmethod
    def key(name: str, arch: str, recipe: Recipe, data_description: str, resize: str) -> str:
        return json.dumps([name, arch, asdict(recipe), data_description, resize], sort_keys=True)

    def load(self, key: str, model: nn.Module) -> dict | None:
        """The stored result of run ``key`` with its weights loaded into ``model``, or None."""
        entry = self.runs.get(key)
        if entry is None or not (self.folder / entry["weights"]).is_file():
            return None
        model.load_state_dict(torch.load(self.folder / entry["weights"], map_location="cpu", weights_only=True))
        return entry["result"]

    def store(self, key: str, model: nn.Module, result: dict) -> None:
        weights = f"run-{len(self.runs):03d}.pt"
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({name: value.detach().cpu() for name, value in model.state_dict().items()}, self.folder / weights)
        self.runs[key] = {"weights": weights, "result": result}
        atomic_write_text(self.index, json.dumps(self.runs, indent=1) + "\n")


# ------------------------------------------------------------------------------ costs
def latencies(cores: dict[str, nn.Module], detectors: dict[str, nn.Module], image: torch.Tensor, repeats: int) -> dict:
    """Batch-1 latency (ms, median) of each raw network at 320 (torch eager and onnxruntime,
    one thread) and of each whole detector on ``image`` (torch eager, one thread)."""
    example = torch.randn(1, 3, DEPLOYMENT_SIZE, DEPLOYMENT_SIZE, generator=torch.Generator().manual_seed(0))
    options = TimingOptions(warmup=3, repeats=repeats)
    names = list(cores)
    result = {name: {} for name in names}
    for name, timing in zip(names, measure_modules([(cores[name].eval(), example) for name in names], "torch", 1, options)):
        result[name]["latency_ms"] = timing.median_ms
    for name in names:
        try:
            timing = measure_modules([(cores[name], example)], "onnxruntime", 1, options)[0]
            result[name]["latency_onnxruntime_ms"] = timing.median_ms
        except Exception as error:  # an exporter failure is reported, not fatal
            print(f"onnxruntime latency of {name} not measured: {str(error).splitlines()[0][:160]}")
            result[name]["latency_onnxruntime_ms"] = None
    pipelines = [(detectors[name].eval(), [image]) for name in names]
    for name, timing in zip(names, measure_modules(pipelines, "torch", 1, options)):
        result[name]["latency_pipeline_ms"] = timing.median_ms
    return result


def average_runs(runs: list[dict]) -> dict:
    """Mean mAPs over seeded training runs, with the per-seed values and histories."""
    return {
        "map50": sum(run["map50"] for run in runs) / len(runs),
        "map": sum(run["map"] for run in runs) / len(runs),
        "map50_per_seed": [run["map50"] for run in runs],
        "map_per_seed": [run["map"] for run in runs],
        "history": [run["history"] for run in runs],
        "train_seconds": sum(run["train_seconds"] for run in runs) / len(runs),
    }


def seed_difference(ours: list[float], anchor: list[float]) -> dict | None:
    """Difference of the two seed means with its standard error (Welch: each side's seed
    variance over its seed count), so that a ratio is read against the seed noise. None
    with fewer than two seeds a side."""
    if len(ours) < 2 or len(anchor) < 2:
        return None
    error = math.sqrt(statistics.variance(ours) / len(ours) + statistics.variance(anchor) / len(anchor))
    return {"value": statistics.mean(ours) - statistics.mean(anchor), "standard_error": error}


def ratio(ours: float | None, anchor: float | None) -> float | None:
    return None if ours is None or anchor in (None, 0) else ours / anchor


def print_table(result: dict) -> None:
    rows = [
        ("mAP@0.5 (mean over seeds)", "map50", lambda value: f"{value:.4f}"),
        ("mAP@[.5:.95] (mean over seeds)", "map", lambda value: f"{value:.4f}"),
        (f"MFLOPs @{DEPLOYMENT_SIZE} (fvcore)", "flops", lambda value: f"{value / 1e6:.1f}"),
        ("params (M)", "params", lambda value: f"{value / 1e6:.3f}"),
        ("latency torch 1 thread (ms)", "latency_ms", lambda value: f"{value:.2f}"),
        ("latency onnxruntime 1 thread (ms)", "latency_onnxruntime_ms", lambda value: f"{value:.2f}"),
        ("whole detector, torch (ms)", "latency_pipeline_ms", lambda value: f"{value:.2f}"),
        ("training seconds per run", "train_seconds", lambda value: f"{value:.0f}"),
    ]
    print(f"\n{'':36} {'ours':>10} {'ssdlite':>10} {'ours/ssdlite':>13}")
    for label, key, show in rows:
        ours, anchor = result["ours"].get(key), result["ssdlite"].get(key)
        quotient = ratio(ours, anchor)
        print(
            f"{label:36} {show(ours) if ours is not None else '-':>10} {show(anchor) if anchor is not None else '-':>10} "
            f"{f'{quotient:.2f}x' if quotient is not None else '-':>13}"
        )


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny search and training (minutes): checks the pipeline")
    parser.add_argument("--json", help="write results as JSON")
    parser.add_argument("--data", default=str(REPOSITORY.parent / "shared" / "data" / "raccoon"), help="a Pascal VOC folder")
    parser.add_argument("--epochs", type=int, help="from-scratch training epochs (both detectors)")
    parser.add_argument("--train-size", type=int, help="from-scratch training and scoring size (multiple of 32)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--trials", type=int, help="search trials")
    parser.add_argument("--supernet-epochs", type=int)
    parser.add_argument("--proxy-size", type=int, help="supernet training and scoring size of the search")
    parser.add_argument("--finalists", type=int, help="best trials re-ranked by training (0: off; default 4, quick 2)")
    parser.add_argument("--finalist-epochs", type=int, help="training epochs per finalist (default: the recipe's)")
    parser.add_argument(
        "--finalist-init",
        choices=("scratch", "inherited"),
        help="finalists start from scratch (default) or from their supernet weights",
    )
    parser.add_argument(
        "--finalist-seeds", type=int, help="training runs per finalist, averaged (the search's --finalist-seeds; default 1)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (latency always uses 1)")
    parser.add_argument("--device", default="cpu", help="training device: cpu, cuda or auto (latency is always CPU)")
    parser.add_argument("--workdir", help="folder for the study and the supernet (default: a new temporary folder)")
    parser.add_argument("--repeats", type=int, default=15, help="latency samples per model")
    parser.add_argument("--seeds", type=int, help="from-scratch trainings per detector, mAPs averaged (default: 3, --quick 1)")
    arguments = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(arguments.threads)
    budget, recipe = QUICK if arguments.quick else FULL
    arguments.seeds = arguments.seeds or (1 if arguments.quick else 3)
    budget = SearchBudget(
        proxy_size=arguments.proxy_size or budget.proxy_size,
        supernet_epochs=arguments.supernet_epochs or budget.supernet_epochs,
        trials=arguments.trials or budget.trials,
        startup_trials=min(budget.startup_trials, arguments.trials or budget.trials),
        finalists=budget.finalists if arguments.finalists is None else arguments.finalists,
        finalist_epochs=arguments.finalist_epochs or arguments.epochs or budget.finalist_epochs,
        finalist_size=arguments.train_size or budget.finalist_size,
        finalist_init=arguments.finalist_init or budget.finalist_init,
        finalist_seeds=arguments.finalist_seeds or budget.finalist_seeds,
    )
    recipe = Recipe(
        **{
            **asdict(recipe),
            **{
                key: value
                for key, value in (
                    ("epochs", arguments.epochs),
                    ("input_size", arguments.train_size),
                    ("batch_size", arguments.batch_size),
                )
                if value
            },
        }
    )
    device = resolve_device(arguments.device)
    data_dir = Path(arguments.data)
    workdir = Path(arguments.workdir) if arguments.workdir else Path(tempfile.mkdtemp(prefix="detection-benchmark-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"torch threads: {torch.get_num_threads()} for training (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
        f"1 for latency; training device {device}; work folder {workdir}"
    )

    # both detectors stretch images to the square input: load them at that square directly
    data = load_detection_data(data_dir, input_size=recipe.input_size, seed=recipe.seed, resize="square")
    num_classes = data.num_classes
    print(data.description)

    torch.manual_seed(recipe.seed)
    ssdlite_flops = fvcore_flops(SSDCore(build_ssdlite(num_classes, DEPLOYMENT_SIZE)), DEPLOYMENT_SIZE)
    print(
        f"SSDlite320-MobileNetV3-large ({num_classes + 1} outputs): {ssdlite_flops / 1e6:.1f} MFLOPs at "
        f"{DEPLOYMENT_SIZE} (fvcore, 1 multiply-add = 1 FLOP): the search budget"
    )

    search_started = time.perf_counter()
    search_data = train_split_copy(data_dir, recipe.seed, workdir / "search-data")
    summary = search_ours(search_data, ssdlite_flops, budget, workdir, arguments.device, recipe.seed)
    search_seconds = time.perf_counter() - search_started
    spec = ArchSpec.from_dict(summary["best"]["arch"])
    trained = summary["best"].get("finalist_score")
    print(
        f"searched in {search_seconds:.0f} s; best: {spec} (proxy mAP@0.5 {summary['best']['accuracy']:.4f}"
        + (f", {trained:.4f} after the finalists' training on the search split)" if trained is not None else ")")
    )

    space = get_space(spec.space)
    analytic = count_flops(spec, space, DEPLOYMENT_SIZE, num_classes)
    ours_core_flops = fvcore_flops(build_ours(spec, num_classes, DEPLOYMENT_SIZE).core(), DEPLOYMENT_SIZE)
    if analytic.flops != ours_core_flops:
        print(f"WARNING: analytic FLOPs {analytic.flops} differ from fvcore {ours_core_flops}")

    # Each detector is trained `seeds` times (initialisation, data order and flips change with
    # the seed); mAPs are averaged, because on a 40-image test split one run's mAP@0.5 moves by
    # several points from seed to seed. The models of the first seed are timed.
    runs: dict[str, list[dict]] = {"ours": [], "ssdlite": []}
    models: dict[str, nn.Module] = {}
    finished = FinishedRuns(workdir)
    for offset in range(arguments.seeds):
        seeded = replace(recipe, seed=recipe.seed + offset)
        for name, build in (
            ("ours", lambda: build_ours(spec, num_classes, recipe.input_size)),
            ("ssdlite", lambda: build_ssdlite(num_classes, recipe.input_size)),
        ):
            torch.manual_seed(seeded.seed)
            model = build()
            key = finished.key(
                name,
                str(spec) if name == "ours" else "ssdlite320_mobilenet_v3_large",
                seeded,
                data.description,
                getattr(model, "resize", "fixed_size"),
            )
            run = finished.load(key, model)
            if run is None:
                run = train_from_scratch(f"{name} (seed {seeded.seed})", model, data, seeded, device)
                finished.store(key, model, run)
            else:
                print(
                    f"{name} (seed {seeded.seed}): reusing the finished run in {finished.folder} (mAP@0.5 {run['map50']:.4f})",
                    flush=True,
                )
            runs[name].append(run)
            models.setdefault(name, model)
    ours, ssdlite = models["ours"], models["ssdlite"]
    ours_result, ssdlite_result = (average_runs(runs[name]) for name in ("ours", "ssdlite"))

    ours.cpu().set_image_size(DEPLOYMENT_SIZE)
    set_ssdlite_size(ssdlite.cpu(), DEPLOYMENT_SIZE)
    image = load_detection_data(
        data_dir, input_size=DEPLOYMENT_SIZE, seed=recipe.seed, augment=False, max_val=1, resize="square"
    ).val[0][0]
    timings = latencies(
        {"ours": ours.core(), "ssdlite": SSDCore(ssdlite)}, {"ours": ours, "ssdlite": ssdlite}, image, arguments.repeats
    )
    result = {
        "ours": {
            "map50": ours_result["map50"],
            "flops": ours_core_flops,
            "params": parameter_count(ours),
            **timings["ours"],
            "map": ours_result["map"],
            "flops_analytic": analytic.flops,
            "params_analytic": analytic.params,
            "flops_match": analytic.flops == ours_core_flops,
            "arch": str(spec),
            "arch_spec": spec.to_dict(),
            "resize": ours.resize,
            "proxy_map50": summary["best"]["accuracy"],
            "finalist_map50": summary["best"].get("finalist_score"),
            "search_top": summary["top"],
            "train_seconds": ours_result["train_seconds"],
            "history": ours_result["history"],
            "map50_per_seed": ours_result["map50_per_seed"],
            "map_per_seed": ours_result["map_per_seed"],
        },
        "ssdlite": {
            "map50": ssdlite_result["map50"],
            "flops": ssdlite_flops,
            "params": parameter_count(ssdlite),
            **timings["ssdlite"],
            "map": ssdlite_result["map"],
            "arch": "ssdlite320_mobilenet_v3_large",
            "train_seconds": ssdlite_result["train_seconds"],
            "history": ssdlite_result["history"],
            "map50_per_seed": ssdlite_result["map50_per_seed"],
            "map_per_seed": ssdlite_result["map_per_seed"],
        },
    }
    result["ratios"] = {
        key: ratio(result["ours"].get(key), result["ssdlite"].get(key))
        for key in ("map50", "map", "flops", "params", "latency_ms", "latency_onnxruntime_ms", "latency_pipeline_ms")
    }
    result["map50_difference"] = seed_difference(result["ours"]["map50_per_seed"], result["ssdlite"]["map50_per_seed"])
    result.update(
        {
            "recipe": asdict(recipe),
            "seeds": arguments.seeds,
            "search": {
                **asdict(budget),
                "budget_flops": ssdlite_flops,
                "deployment_size": DEPLOYMENT_SIZE,
                "trials_completed": summary["trials"],
                "feasible_fraction": summary["feasible_fraction"],
                "seconds": search_seconds,
                "search_data": "train split only (the search splits it 80/20 itself)",
            },
            "data": data.description,
            "postprocess": {
                "score_thresh": SCORE_THRESHOLD,
                "ours": "FCOS nms 0.6, 100 detections",
                "ssdlite": "nms 0.55, 300 detections (COCO mAP keeps the 100 best)",
            },
            "flops_convention": "fvcore on the raw network at 320x320, no transform or post-processing; 1 multiply-add = 1 FLOP",
            "latency": f"batch 1, {DEPLOYMENT_SIZE}x{DEPLOYMENT_SIZE}, 1 thread, median of {arguments.repeats} interleaved samples "
            "(thread CPU time); whole detector = transform + network + post-processing on one val image",
            "machine": local_hardware(),
            "platform": platform.platform(),
            "threads": arguments.threads,
            "load_average": list(os.getloadavg()),
            "date": date.today().isoformat(),
            "seconds": time.perf_counter() - started,
            "quick": arguments.quick,
            "workdir": str(workdir),
        }
    )
    print_table(result)
    for name in ("ours", "ssdlite"):
        print(f"{name} mAP@0.5 per seed: {', '.join(f'{value:.4f}' for value in result[name]['map50_per_seed'])}")
    difference = result["map50_difference"]
    if difference is not None:
        print(
            f"mAP@0.5 ours - ssdlite: {difference['value']:+.4f} +- {difference['standard_error']:.4f} "
            "(standard error over the seeds; a difference within about two of them is seed noise)"
        )
    print(f"\nours: {spec}")
    print(
        f"FLOPs of ours: analytic {analytic.flops:,} vs fvcore {ours_core_flops:,} ({'equal' if result['ours']['flops_match'] else 'DIFFERENT'})"
    )
    print(
        f"recipe: {recipe.epochs} epochs at {recipe.input_size} px, batch {recipe.batch_size}, {recipe.optimizer} lr "
        f"{recipe.learning_rate}, warm-up {recipe.warmup_epochs} epoch + cosine; search: {budget.supernet_epochs} supernet "
        f"epochs at {budget.proxy_size} px, {budget.trials} trials; {arguments.seeds} seed(s); total {result['seconds'] / 60:.1f} min; "
        f"{result['machine']}; load average {result['load_average'][0]:.2f}"
    )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

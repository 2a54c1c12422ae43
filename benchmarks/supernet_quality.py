"""Ranking fidelity of the one-shot supernet, and the forward overhead of weight sharing.

Trains a `cifar` supernet on a real ImageFolder (default ../shared/data/cifar10-subset),
picks subnets spread over the FLOPs range, and measures for each (a) top-1 accuracy with
inherited weights after BN recalibration and (b) top-1 accuracy of the same architecture
trained alone from scratch with the same recipe and number of epochs. Prints both, the
Kendall tau between the two rankings (target >= 0.6) and the mean gap. It also times a
training step through the supernet with a subnet active against the extracted static
subnet (target <= 1.2x). With ``--finetune-epochs N`` (default 2, quick 0) it also scores
each subnet after N epochs of fine-tuning from its inherited weights, with the recipe of the
search's finalists (``nas_search.training.finalist``), and prints the Kendall tau of
that ranking too: it is the ranking ``nas-search run`` uses to pick among its best trials.

    python benchmarks/supernet_quality.py [--quick] [--json OUT] [--data DIR] [--budget 60MFLOPs]

With ``--budget`` the supernet is budget-aware (only subnets within the budget are trained,
as in ``nas-search run``) and the compared subnets are spread over the range up to it; on a
CPU this is what makes a meaningful number of epochs affordable.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import kendalltau

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from nas_search.hw_models.flops import count_flops  # noqa: E402
from nas_search.search.sampling import sample_specs  # noqa: E402
from nas_search.spaces.static import build_static_model  # noqa: E402
from nas_search.tasks import get_space  # noqa: E402
from nas_search.tasks.classify.data import load_classification_data, make_loader  # noqa: E402
from nas_search.tasks.classify.evaluate import AccuracyEvaluator, calibration_tensor, top1_accuracy  # noqa: E402
from nas_search.tasks.classify.finalist import train_classifier_finalist  # noqa: E402
from nas_search.tasks.classify.standalone import train_epoch  # noqa: E402
from nas_search.tasks.classify.supernet_training import load_supernet, train_supernet  # noqa: E402
from nas_search.training.config import SupernetTrainConfig  # noqa: E402
from nas_search.training.finalist import FINALIST_RECIPES  # noqa: E402
from nas_search.training.loop import build_optimizer, warmup_cosine  # noqa: E402
from nas_search.units import parse_flops  # noqa: E402


def pick_subnets(space, count: int, seed: int, max_flops: int | None = None):
    """``count`` specs spread over the FLOPs range (up to ``max_flops`` when given): the
    smallest, the largest and evenly spaced (in log FLOPs) samples between."""
    pool = sample_specs(space, 400, seed=seed, max_flops=max_flops)
    pool.sort(key=lambda item: item[1])
    chosen = [pool[round(index * (len(pool) - 1) / (count - 1))] for index in range(count)]
    return [spec for spec, _ in chosen]


def train_from_scratch(spec, space, data, config: SupernetTrainConfig) -> float:
    """Train the architecture alone with the supernet's recipe; top-1 on the val split."""
    torch.manual_seed(config.seed)
    model = build_static_model(space.resolve(spec, num_classes=data.num_classes), dropout=space.dropout)
    optimizer = build_optimizer(model, config)
    loader = make_loader(
        data.train, batch_size=config.batch_size, shuffle=True, seed=config.seed, num_workers=config.workers, drop_last=True
    )
    steps = len(loader) * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, int(config.warmup_epochs * len(loader))))
    for epoch in range(config.epochs):
        torch.manual_seed(config.seed + 1000 * epoch)
        for _ in train_epoch(model, loader, optimizer, scheduler, config.label_smoothing):
            pass
    val_loader = make_loader(data.val, batch_size=256, shuffle=False, seed=0, num_workers=0)
    return top1_accuracy(model, val_loader)


def fine_tuned_accuracy(supernet, spec, data, epochs: int, seed: int = 0) -> float:
    """Top-1 on the val split after ``epochs`` epochs of fine-tuning from the inherited
    weights, with the finalists' recipe (as ``nas-search run`` re-ranks its best trials)."""
    torch.manual_seed(seed)
    model = supernet.extract(spec)
    result = train_classifier_finalist(
        model, data, FINALIST_RECIPES[("classify", "inherited")], epochs, seed, f"fine-tune {spec.key[:12]}", progress=False
    )
    return result["accuracy"]


def step_time_ratio(supernet, specs, batch_size: int = 64, size: int = 32, repeats: int = 7) -> list[float]:
    """Median time of a training step (forward, backward, SGD step) through the supernet
    with each subnet active, over that of the extracted static subnet, interleaved."""
    images = torch.randn(batch_size, 3, size, size)
    labels = torch.randint(0, 10, (batch_size,))
    ratios = []
    for spec in specs:
        supernet.train()
        supernet.activate(spec)
        static = supernet.extract(spec).train()
        shared_optimizer = torch.optim.SGD([p for p in supernet.parameters()], lr=1e-6)
        static_optimizer = torch.optim.SGD(static.parameters(), lr=1e-6)

        def shared_step():
            shared_optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(supernet(images), labels).backward()
            shared_optimizer.step()

        def static_step():
            static_optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(static(images), labels).backward()
            static_optimizer.step()

        for step in (shared_step, static_step, shared_step, static_step):
            step()
        shared_times, static_times = [], []
        for _ in range(repeats):
            for step, times in ((shared_step, shared_times), (static_step, static_times)):
                started = time.perf_counter()
                step()
                times.append(time.perf_counter() - started)
        ratios.append(statistics.median(shared_times) / statistics.median(static_times))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget (minutes): checks the pipeline, not the figures")
    parser.add_argument("--json", help="write results as JSON")
    parser.add_argument("--data", default=str(REPOSITORY.parent / "shared" / "data" / "cifar10-subset"))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--subnets", type=int, default=None)
    parser.add_argument("--checkpoint", help="reuse a trained supernet checkpoint")
    parser.add_argument(
        "--budget",
        help="budget-aware supernet: train and compare only subnets within this many "
        "FLOPs (e.g. 60MFLOPs); default: the whole cifar space (5 to 500 MFLOPs)",
    )
    parser.add_argument("--optimizer", default="sgd", help="sgd (lr 0.05) or adamw (lr 2e-3), for both sides")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 leaves a core free on a 2-core machine)")
    parser.add_argument(
        "--random-subnets", type=int, default=None, help="random subnets per sandwich step (default: the training default)"
    )
    parser.add_argument(
        "--teacher",
        choices=("widest", "projected"),
        default=None,
        help="largest subnet under --budget (default: the training default, widest)",
    )
    parser.add_argument(
        "--fair-operations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="FairNAS op sampling of the random subnets (default: the training default, on)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=None,
        help="also score each subnet after this many epochs of fine-tuning from its inherited weights "
        "(the search's finalist ranking; default 2, quick 0; 0 skips)",
    )
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    epochs = arguments.epochs or (1 if arguments.quick else 6)
    max_train = arguments.max_train or (640 if arguments.quick else None)
    count = arguments.subnets or (4 if arguments.quick else 8)
    finetune_epochs = arguments.finetune_epochs if arguments.finetune_epochs is not None else (0 if arguments.quick else 2)
    space = get_space("cifar")
    workdir = Path(tempfile.mkdtemp(prefix="supernet-quality-"))
    max_flops = parse_flops(arguments.budget) if arguments.budget else None
    config = SupernetTrainConfig(
        space="cifar",
        data=arguments.data,
        epochs=epochs,
        batch_size=64,
        max_train=max_train,
        workers=2,
        device="cpu",
        out=str(workdir / "supernet.pt"),
        progress=True,
        seed=0,
        max_flops=max_flops,
        optimizer=arguments.optimizer,
        learning_rate=2e-3 if arguments.optimizer == "adamw" else 0.05,
    )
    for name, value in (
        ("random_subnets", arguments.random_subnets),
        ("budget_teacher", arguments.teacher),
        ("fair_operations", arguments.fair_operations),
    ):
        if value is not None:
            setattr(config, name, value)
    started = time.perf_counter()
    checkpoint = arguments.checkpoint or str(train_supernet(config).checkpoint)
    supernet_seconds = time.perf_counter() - started
    supernet, metadata = load_supernet(checkpoint)
    trained = metadata.get("config", {})
    if arguments.checkpoint and (trained.get("epochs"), trained.get("max_flops")) != (epochs, max_flops):
        raise SystemExit(
            f"--checkpoint {checkpoint} was trained for {trained.get('epochs')} epochs under budget "
            f"{trained.get('max_flops')}; pass the same --epochs and --budget so both sides match"
        )
    for name in ("random_subnets", "budget_teacher", "fair_operations"):  # report what the supernet was trained with
        setattr(config, name, trained.get(name, getattr(config, name)))
    data = load_classification_data(arguments.data, input_size=32, seed=0, max_train=max_train)
    plain = load_classification_data(arguments.data, input_size=32, seed=0, augment=False, max_train=max_train)
    evaluator = AccuracyEvaluator(
        supernet,
        calibration_tensor(plain.train, 512),
        make_loader(plain.val, batch_size=256, shuffle=False, seed=0, num_workers=0),
    )
    specs = pick_subnets(space, count, seed=1, max_flops=max_flops)
    rows = []
    for index, spec in enumerate(specs):
        inherited = evaluator(spec).accuracy
        fine_tuned = fine_tuned_accuracy(supernet, spec, data, finetune_epochs) if finetune_epochs else None
        started = time.perf_counter()
        scratch = train_from_scratch(spec, space, data, config)
        cost = count_flops(spec, space)
        rows.append(
            {
                "arch": str(spec),
                "flops": cost.flops,
                "params": cost.params,
                "inherited": inherited,
                "fine_tuned": fine_tuned,
                "scratch": scratch,
                "scratch_seconds": time.perf_counter() - started,
            }
        )
        tuned_text = f"  fine-tuned {fine_tuned:.4f}" if fine_tuned is not None else ""
        print(
            f"[{index + 1}/{len(specs)}] {cost.flops / 1e6:8.1f} MFLOPs  inherited {inherited:.4f}{tuned_text}  "
            f"scratch {scratch:.4f}",
            flush=True,
        )
    tau = float(kendalltau([row["inherited"] for row in rows], [row["scratch"] for row in rows]).statistic)
    tuned_tau = (
        float(kendalltau([row["fine_tuned"] for row in rows], [row["scratch"] for row in rows]).statistic)
        if finetune_epochs
        else None
    )
    gap = statistics.mean(row["scratch"] - row["inherited"] for row in rows)
    ratios = step_time_ratio(supernet, specs)
    for row, ratio in zip(rows, ratios):
        row["step_time_ratio"] = ratio
    result = {
        "kendall_tau": tau,
        "mean_gap": gap,
        "finetune_epochs": finetune_epochs,
        "finetuned_kendall_tau": tuned_tau,
        "step_time_ratio": statistics.median(ratios),
        "subnets": rows,
        "epochs": epochs,
        "budget_flops": max_flops,
        "optimizer": arguments.optimizer,
        "random_subnets": config.random_subnets,
        "teacher": config.budget_teacher,
        "fair_operations": config.fair_operations,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "supernet_seconds": None if arguments.checkpoint else supernet_seconds,
        "checkpoint": arguments.checkpoint,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "date": date.today().isoformat(),
        "quick": arguments.quick,
    }
    print()
    print(f"{'MFLOPs':>9} {'inherited':>9} {'tuned':>8} {'scratch':>8} {'step x':>7}  architecture")
    for row in rows:
        tuned_cell = f"{row['fine_tuned']:8.4f}" if row["fine_tuned"] is not None else f"{'-':>8}"
        print(
            f"{row['flops'] / 1e6:9.1f} {row['inherited']:9.4f} {tuned_cell} {row['scratch']:8.4f} "
            f"{row['step_time_ratio']:7.2f}  {row['arch']}"
        )
    print(f"\nKendall tau (inherited vs scratch ranking): {tau:.3f}   (target >= 0.6)")
    if tuned_tau is not None:
        print(f"Kendall tau (after {finetune_epochs} fine-tuning epochs, the finalists' ranking, vs scratch): {tuned_tau:.3f}")
    print(f"mean gap (scratch - inherited): {gap:+.4f}")
    print(f"training step, supernet / static subnet: median {result['step_time_ratio']:.2f}x   (target <= 1.2x)")
    scope = f"subnets within {arguments.budget}" if max_flops else "the whole space"
    sampling = (
        f"{config.random_subnets} random subnets/step, {'fair' if config.fair_operations else 'independent'} ops, "
        f"{config.budget_teacher} teacher"
    )
    trained_how = (
        f"supernet from {arguments.checkpoint}" if arguments.checkpoint else f"supernet training took {supernet_seconds:.0f} s"
    )
    print(
        f"{epochs} epochs on {len(data.train)} images ({scope}, {arguments.optimizer}, {sampling}); {trained_how}; "
        f"{result['machine']}"
    )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

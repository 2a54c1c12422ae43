"""Supernet training: sandwich steps, checkpoints, resume after SIGKILL, DDP, techniques."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas_search.errors import UserError
from nas_search.spaces.supernet import Supernet
from nas_search.tasks import get_space
from nas_search.tasks.classify.supernet_training import load_supernet, train_supernet
from nas_search.tasks.detect.supernet_training import DetectionSupernetTrainConfig, train_detection_supernet
from nas_search.training.checkpoint import load_checkpoint
from nas_search.training.config import SupernetTrainConfig
from nas_search.training.techniques import BatchBridgeout, count_collapsed_channels, regenerate_channels

REPOSITORY = Path(__file__).resolve().parent.parent


def tiny_config(tmp_path, **overrides) -> SupernetTrainConfig:
    options = dict(
        space="micro",
        epochs=1,
        batch_size=32,
        max_train=256,
        max_val=64,
        workers=0,
        device="cpu",
        out=str(tmp_path / "supernet.pt"),
        progress=False,
        random_subnets=1,
    )
    options.update(overrides)
    return SupernetTrainConfig(**options)


def test_training_writes_a_safe_checkpoint_and_is_deterministic(tmp_path):
    first = train_supernet(tiny_config(tmp_path / "a"))
    second = train_supernet(tiny_config(tmp_path / "b"))
    payload = load_checkpoint(first.checkpoint, space="micro")
    assert payload["epoch"] == 1 and payload["num_classes"] == 10
    a, _ = load_supernet(first.checkpoint)
    b, _ = load_supernet(second.checkpoint)
    for (name, tensor_a), tensor_b in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(tensor_a, tensor_b), name
    assert first.history[0]["images_per_second"] > 0


def test_budget_aware_sandwich_trains_only_subnets_within_the_budget():
    from nas_search.hw_models import FlopsModel
    from nas_search.training.sandwich import budget_extremes, sandwich_specs

    space = get_space("micro")
    flops = FlopsModel(space, space.input_size, 10)
    smallest, largest = flops(space.smallest()), flops(space.largest())
    budget = int((smallest * largest) ** 0.5)
    extremes = budget_extremes(space, budget, flops)
    assert smallest < flops(extremes[0]) <= budget < largest
    seen = set()
    for step in range(30):
        specs = sandwich_specs(space, 2, seed=3, step=step, extremes=extremes, max_flops=budget, flops=flops)
        assert specs[:2] == list(extremes) and len(specs) == 4
        assert all(flops(spec) <= budget for spec in specs)
        assert specs == sandwich_specs(space, 2, seed=3, step=step, extremes=extremes, max_flops=budget, flops=flops)
        seen.update(str(spec) for spec in specs[2:])
    assert len(seen) > 30  # random subnets differ from step to step
    unconstrained = sandwich_specs(space, 2, seed=3, step=0)
    assert unconstrained[0] == space.largest()
    with pytest.raises(UserError, match="below the smallest subnet"):
        budget_extremes(space, smallest - 1, flops)


def test_fair_operations_train_every_block_kind_of_every_position_each_step():
    from collections import Counter

    from nas_search.hw_models import FlopsModel
    from nas_search.training.sandwich import budget_extremes, fair_operation_plans, sandwich_specs

    space = get_space("cifar")
    kinds = len(space.stages[0].operations)
    plans = fair_operation_plans(space, kinds + 2, __import__("random").Random(0))
    for position in plans[0]:
        assert sorted(plan[position] for plan in plans[:kinds]) == sorted(space.stages[position[0]].operations)
        assert plans[kinds][position] != plans[kinds + 1][position]  # the next group starts a new permutation
    flops = FlopsModel(space, 32, 10)
    budget = 50_000_000
    extremes = budget_extremes(space, budget, flops, "widest")
    counts: Counter = Counter()
    for step in range(40):
        specs = sandwich_specs(
            space, kinds, seed=1, step=step, extremes=extremes, max_flops=budget, flops=flops, fair_operations=True
        )
        assert all(flops(spec) <= budget for spec in specs)
        for stage_index, stage in enumerate(space.stages):
            for block_index in range(stage.max_depth):
                ops = [
                    spec.stages[stage_index].blocks[block_index].op
                    for spec in specs[2:]
                    if block_index < spec.stages[stage_index].depth
                ]
                assert len(ops) == len(set(ops))  # no kind twice at one position within a step
                counts.update((stage_index, block_index, op) for op in ops)
    first_blocks = [counts[(stage, 0, op)] for stage in range(len(space.stages)) for op in space.stages[stage].operations]
    assert min(first_blocks) == max(first_blocks) == 40  # every kind of every first block: once per step
    unfair: Counter = Counter()
    for step in range(40):
        for spec in sandwich_specs(space, kinds, seed=1, step=step, extremes=extremes, max_flops=budget, flops=flops)[2:]:
            unfair.update((stage_index, spec.stages[stage_index].blocks[0].op) for stage_index in range(len(space.stages)))
    assert max(unfair.values()) > 40 + 20  # independent draws under a budget crowd on the cheap kinds


def test_widest_teacher_keeps_more_weights_than_narrowing_the_largest():
    from nas_search.hw_models import FlopsModel, ParamsModel
    from nas_search.training.sandwich import budget_extremes, projected_largest, widest_within_budget

    space = get_space("cifar")
    flops, params = FlopsModel(space, 32, 10), ParamsModel(space, 10)
    for budget in (20e6, 50e6, 200e6):
        widest, narrowed = widest_within_budget(space, budget, flops), projected_largest(space, budget, flops)
        assert flops(widest) <= budget and flops(narrowed) <= budget
        assert params(widest) > 1.3 * params(narrowed)
        widest_widths = [block.width for stage in widest.stages for block in stage.blocks]
        narrowed_widths = [block.width for stage in narrowed.stages for block in stage.blocks]
        assert min(widest_widths) > min(narrowed_widths)
    assert widest_within_budget(space, 1e12, flops) == budget_extremes(space, 1e12, flops, "widest")[0]
    assert flops(widest_within_budget(space, 1e12, flops)) == flops(space.largest())
    with pytest.raises(UserError, match="unknown teacher rule 'tallest'; accepted: projected, widest"):
        budget_extremes(space, 50e6, flops, "tallest")


def test_budget_aware_training_records_the_budget_and_never_activates_above_it(tmp_path, monkeypatch):
    from nas_search.hw_models import FlopsModel
    from nas_search.tasks.classify.supernet_training import SandwichStep

    space = get_space("micro")
    flops = FlopsModel(space, space.input_size, 10)
    budget = int((flops(space.smallest()) * flops(space.largest())) ** 0.5)
    trained = []
    original = SandwichStep.forward

    def recording_forward(self, images, labels, specs):  # records what each step trains, then trains it
        trained.extend(flops(spec) for spec in specs)
        return original(self, images, labels, specs)

    monkeypatch.setattr(SandwichStep, "forward", recording_forward)
    result = train_supernet(tiny_config(tmp_path, max_flops=budget, max_train=128))
    assert len(trained) == 4 * 3 and max(trained) <= budget  # 4 steps of 128 / 32 images, 3 subnets each
    payload = load_checkpoint(result.checkpoint, space="micro")
    assert payload["config"]["max_flops"] == budget


def test_bad_checkpoints_are_refused(tmp_path):
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(UserError, match="not a nas-search checkpoint"):
        load_supernet(not_a_checkpoint)
    result = train_supernet(tiny_config(tmp_path))
    with pytest.raises(UserError, match="space 'micro', not 'mobile'"):
        load_supernet(result.checkpoint, space="mobile")
    older = torch.load(result.checkpoint, weights_only=True)
    older["format_version"] = 1  # the layout before scc blocks shared the dsc weights
    torch.save(older, tmp_path / "older.pt")
    for load in (
        lambda: load_supernet(tmp_path / "older.pt"),
        lambda: train_supernet(tiny_config(tmp_path, out=str(tmp_path / "older.pt"), resume=True)),
    ):
        with pytest.raises(UserError, match="format_version 1, written by another nas-search version; this one reads 2"):
            load()
    # a rerun without resume does not replace a finished (or interrupted) run's checkpoint
    finished = result.checkpoint.read_bytes()
    with pytest.raises(UserError, match="already exists .* pass --resume to continue it, or another --out"):
        train_supernet(tiny_config(tmp_path))
    assert result.checkpoint.read_bytes() == finished
    detection = DetectionSupernetTrainConfig(space="detect", out=str(result.checkpoint), device="cpu")
    with pytest.raises(UserError, match="already exists"):
        train_detection_supernet(detection)
    # resuming with another number of steps per epoch (8 of 256 images, not 4 of 128) is refused
    assert load_checkpoint(result.checkpoint, space="micro")["steps_per_epoch"] == 8
    with pytest.raises(UserError, match="8 steps per epoch, not 4"):
        train_supernet(tiny_config(tmp_path, max_train=128, epochs=2, resume=True))
    assert result.checkpoint.read_bytes() == finished


def _train_command(out: Path, epochs: int, resume: bool) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "nas_search.cli",
        "supernet",
        "train",
        "--space",
        "micro",
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--max-train",
        "256",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--random-subnets",
        "1",
        "--quiet",
    ]
    return command + (["--resume"] if resume else [])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    interrupted = tmp_path / "interrupted.pt"
    process = subprocess.Popen(_train_command(interrupted, 3, False), cwd=REPOSITORY)
    deadline = time.time() + 300
    while not interrupted.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert interrupted.exists(), "no checkpoint after the first epoch"
    time.sleep(0.3)  # inside the second epoch
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert load_checkpoint(interrupted)["epoch"] in (1, 2)
    resumed = subprocess.run(_train_command(interrupted, 3, True), cwd=REPOSITORY, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    reference = tmp_path / "reference.pt"
    subprocess.run(_train_command(reference, 3, False), cwd=REPOSITORY, check=True, capture_output=True)
    a, b = load_checkpoint(interrupted), load_checkpoint(reference)
    assert a["epoch"] == b["epoch"] == 3
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor.float(), b["model"][name].float(), atol=1e-5), name


@pytest.mark.slow
def test_torchrun_ddp_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp.pt"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "nas_search.cli",
        "supernet",
        "train",
        "--space",
        "micro",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-train",
        "128",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--random-subnets",
        "1",
        "--quiet",
        "--json",
    ]
    result = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = load_checkpoint(out)
    assert payload["epoch"] == 1
    # both ranks took 128/2/16 = 4 steps each: the scheduler saw 4 steps, the rate counts both ranks' images
    assert payload["scheduler"]["last_epoch"] == 4
    supernet, _ = load_supernet(out)
    assert all(torch.isfinite(p).all() for p in supernet.parameters())


def test_channel_regeneration_revives_collapsed_channels():
    torch.manual_seed(0)
    net = Supernet(get_space("cifar"))
    norm = net.stages[1][0]["mbconv"].project.norm
    with torch.no_grad():
        norm.weight[:10] = 1e-4
    before = count_collapsed_channels(net, 0.01)
    report = regenerate_channels(net, 0.01)
    assert before >= 10 and report.regenerated == before
    assert count_collapsed_channels(net, 0.01) == 0
    assert torch.all(norm.weight[:10].abs() > 0.1)


def test_batch_bridgeout_is_unbiased_and_scales_with_weight_magnitude():
    generator = torch.Generator().manual_seed(0)
    bridgeout = BatchBridgeout(keep_probability=0.8, exponent=1.0, generator=generator)
    weight = torch.linspace(-2, 2, 64).repeat(64, 1).T.contiguous().reshape(64, 64, 1, 1)
    samples = torch.stack([bridgeout(weight) for _ in range(4000)])
    assert torch.allclose(samples.mean(0), weight, atol=0.06)
    spread = samples.std(0).flatten()
    magnitude = weight.abs().flatten()
    big, small = spread[magnitude > 1.5].mean(), spread[magnitude < 0.2].mean()
    assert big > 2.5 * small  # variance grows with |w|^q: large weights are perturbed more
    # one mask per output channel and batch: all weights of a channel move together
    single = bridgeout(weight) - weight
    ratios = single[:, :, 0, 0] / weight.abs().pow(0.5)[:, :, 0, 0].clamp_min(1e-6)
    assert torch.allclose(ratios.std(1), torch.zeros(64), atol=1e-4)

"""Evaluation with inherited weights, BN recalibration, the eval CLI and the predictor."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas_search.evaluators.predictor import AccuracyPredictor
from nas_search.spec import save_arch
from nas_search.tasks import get_space
from nas_search.tasks.classify.data import load_classification_data, make_loader
from nas_search.tasks.classify.evaluate import AccuracyEvaluator, calibration_tensor, recalibrate_batch_norm
from nas_search.tasks.classify.supernet_training import load_supernet, train_supernet
from nas_search.training.config import SupernetTrainConfig

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("supernet") / "supernet.pt"
    config = SupernetTrainConfig(
        space="micro",
        epochs=1,
        batch_size=32,
        max_train=256,
        workers=0,
        device="cpu",
        out=str(out),
        progress=False,
        random_subnets=1,
    )
    return train_supernet(config).checkpoint


def test_recalibration_changes_nothing_outside_the_extracted_copy(checkpoint):
    supernet, _ = load_supernet(checkpoint)
    before = {name: tensor.clone() for name, tensor in supernet.state_dict().items()}
    data = load_classification_data(None, input_size=32, augment=False, max_train=128, max_val=64)
    evaluator = AccuracyEvaluator(
        supernet,
        calibration_tensor(data.train, 128),
        make_loader(data.val, batch_size=64, shuffle=False, seed=0, num_workers=0),
    )
    space = get_space("micro")
    spec = space.sample(random.Random(0))
    result = evaluator(spec)
    assert 0.0 <= result.accuracy <= 1.0 and result.images == 64
    assert evaluator(spec) is result  # cached by architecture key
    after = supernet.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not supernet.training


def test_recalibrated_statistics_equal_the_average_batch_statistics():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    model[1].momentum = 0.3
    batches = [torch.randn(8, 3, 5, 5) * (index + 1) + index for index in range(3)]
    recalibrate_batch_norm(model, batches)
    with torch.no_grad():
        outputs = [model[0](batch) for batch in batches]
    expected_mean = torch.stack([out.mean((0, 2, 3)) for out in outputs]).mean(0)
    expected_var = torch.stack([out.var((0, 2, 3), unbiased=True) for out in outputs]).mean(0)
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(model[1].running_var, expected_var, atol=1e-4)
    assert not model.training and model[1].momentum == 0.3
    assert not model[1]._forward_hooks


def test_eval_cli_prints_accuracy_flops_params(checkpoint, tmp_path):
    arch = save_arch(get_space("micro").smallest(), tmp_path / "arch.yaml")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas_search.cli",
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--arch",
            str(arch),
            "--calibration-images",
            "64",
            "--max-val",
            "64",
            "--json",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert {"accuracy", "flops", "params"} <= set(payload) and payload["flops"] > 0


@pytest.mark.parametrize("case", ["missing data", "no images", "other space", "not a checkpoint"])
def test_bad_input_exit_code_2(case, checkpoint, tmp_path):
    empty = tmp_path / "empty"
    (empty / "train" / "cat").mkdir(parents=True)
    (empty / "val" / "cat").mkdir(parents=True)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    mobile_arch = save_arch(get_space("mobile").smallest(), tmp_path / "mobile.yaml")
    micro_arch = save_arch(get_space("micro").smallest(), tmp_path / "micro.yaml")
    commands = {
        "missing data": [
            "supernet",
            "train",
            "--space",
            "micro",
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "x.pt"),
        ],
        "no images": ["supernet", "train", "--space", "micro", "--data", str(empty), "--out", str(tmp_path / "x.pt")],
        "other space": ["eval", "--checkpoint", str(checkpoint), "--arch", str(mobile_arch)],
        "not a checkpoint": ["eval", "--checkpoint", str(junk), "--arch", str(micro_arch)],
    }
    result = subprocess.run(
        [sys.executable, "-m", "nas_search.cli", *commands[case]], cwd=REPOSITORY, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "x.pt").exists()


def test_accuracy_predictor_ranks_held_out_specs():
    space = get_space("cifar")
    rng = random.Random(0)
    specs = [space.sample(rng, bias=rng.random()) for _ in range(120)]
    # A known, smooth accuracy-like function of the architecture (log FLOPs and depth),
    # plus noise: the predictor must recover its ranking from the features.
    from nas_search.hw_models.flops import count_flops

    def target(spec):
        return 0.5 + 0.04 * torch.tensor(count_flops(spec, space).flops).log().item() + 0.01 * len(spec.blocks)

    noise = random.Random(1)
    accuracies = [target(spec) + noise.gauss(0, 0.005) for spec in specs]
    predictor = AccuracyPredictor(space).fit(specs[:80], accuracies[:80])
    quality = predictor.quality(specs[80:], accuracies[80:])
    assert quality.kendall_tau > 0.7 and quality.count == 40

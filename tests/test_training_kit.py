"""The shared training kit (training/loop.py), the typed supernet checkpoint view, the
optimizer-dependent learning-rate defaults and the one precise-BN routine."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nas_search.errors import UserError
from nas_search.evaluators.batchnorm import precise_batch_norm
from nas_search.training.checkpoint import (
    DETECTION_SUPERNET_FORMAT,
    FORMAT_VERSIONS,
    SUPERNET_FORMAT,
    SupernetCheckpoint,
    read_supernet_checkpoint,
    save_checkpoint,
)
from nas_search.training.config import SUPERNET_LEARNING_RATES, SupernetTrainConfig, resolve_data_folder, with_learning_rate
from nas_search.training.loop import (
    EpochLoop,
    EpochTally,
    TrainingState,
    build_optimizer,
    check_epochs_left,
    count_steps,
    optimizer_step,
    run_epochs,
    seed_epoch,
    step_schedule,
)


class _Bar:
    """A progress bar that remembers what it was told."""

    def __init__(self, log: list, total: int, description: str) -> None:
        self.log, self.total, self.description, self.images = log, total, description, 0
        log.append(("open", description, total))

    def update(self, count: int) -> None:
        self.images += count

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        self.log.append(("close", self.description, self.images))


def _state(learning_rate: float = 0.1) -> TrainingState:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    optimizer = build_optimizer(model, SupernetTrainConfig(optimizer="sgd", learning_rate=learning_rate))
    return TrainingState(model, optimizer, step_schedule(optimizer, steps_per_epoch=4, epochs=3, warmup_epochs=0.5))


def test_step_schedule_warms_up_then_decays_to_zero_over_every_optimizer_step():
    state = _state()
    rates = []
    for _ in range(12):
        rates.append(state.scheduler.get_last_lr()[0])
        state.optimizer.step()
        state.scheduler.step()
    assert rates[0] == pytest.approx(0.05) and rates[1] == pytest.approx(0.1)  # two warm-up steps
    assert all(later <= earlier for earlier, later in zip(rates[1:], rates[2:]))
    assert state.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_count_steps_refuses_a_loader_without_a_full_batch():
    assert count_steps([1, 2, 3], "unused") == 3
    with pytest.raises(UserError, match="too few images"):
        count_steps([], "too few images")


def test_optimizer_step_clips_steps_and_advances_the_schedule():
    state = _state()
    before = [parameter.clone() for parameter in state.model.parameters()]
    loss = state.model(torch.randn(8, 4)).pow(2).sum() * 1e6
    optimizer_step(loss, state.optimizer, state.scheduler, parameters=state.model.parameters(), clip_grad_norm=1.0)
    change = torch.cat([(after - first).flatten() for first, after in zip(before, state.model.parameters())])
    # first warm-up learning rate x (1 + momentum) for Nesterov's first step x the clipped norm
    assert 0 < change.norm() <= 0.05 * 1.9 * 1.0 + 1e-6
    assert state.scheduler.last_epoch == 1


def test_training_state_round_trips_through_a_checkpoint(tmp_path):
    state = _state()
    optimizer_step(state.model(torch.randn(8, 4)).sum(), state.optimizer, state.scheduler)
    save_checkpoint(
        {"format": "test", "epoch": 2, "history": [{"epoch": 1}, {"epoch": 2}], **state.state_dicts()}, tmp_path / "state.pt"
    )
    payload = torch.load(tmp_path / "state.pt", weights_only=True)
    assert list(payload)[-3:] == ["model", "optimizer", "scheduler"]  # no scaler entry unless one is kept
    other = _state(learning_rate=0.5)
    assert other.restore(payload) == (2, [{"epoch": 1}, {"epoch": 2}])
    assert all(torch.equal(a, b) for a, b in zip(state.model.state_dict().values(), other.model.state_dict().values()))
    assert other.scheduler.last_epoch == 1 and other.optimizer.param_groups[0]["lr"] == state.optimizer.param_groups[0]["lr"]
    with pytest.raises(UserError, match="holds 2 trained epochs, more than epochs 1"):
        check_epochs_left("state.pt", 2, 1)


def test_seed_epoch_makes_every_epoch_reproducible():
    generator = torch.Generator()
    loader = type("Loader", (), {"generator": generator})()
    seed_epoch(loader, seed=5, epoch=3, python_random=True)
    first = (torch.rand(2), random.random(), torch.rand(2, generator=generator))
    seed_epoch(loader, seed=5, epoch=3, python_random=True)
    assert torch.equal(first[0], torch.rand(2)) and first[1] == random.random()
    assert torch.equal(first[2], torch.rand(2, generator=generator))
    seed_epoch(loader, seed=5, epoch=4)
    assert not torch.equal(first[0], torch.rand(2))


def test_run_epochs_drives_seeding_bars_records_and_checkpoints():
    log: list = []
    history = [{"epoch": 1, "loss": 9.0}]
    loop = EpochLoop(
        loader=[0, 1],
        seed=0,
        epochs=3,
        description="test epoch",
        bar_images=8,
        progress_bar=lambda total, description, unit, enabled: _Bar(log, total, description),
        world_size=2,
    )

    def train(epoch: int, bar, tally: EpochTally) -> None:
        log.append(("train", epoch))
        for value in (1.0, 3.0):
            tally.add(4, loss=value)
            bar.update(4)

    throughput = run_epochs(
        loop,
        1,
        3,
        history,
        train,
        lambda epoch, tally: {"epoch": epoch + 1, "loss": tally.mean("loss")},
        save=lambda epoch: log.append(("save", epoch)),
        before_epoch=lambda epoch: log.append(("before", epoch)),
    )
    assert history == [{"epoch": 1, "loss": 9.0}, {"epoch": 2, "loss": 2.0}, {"epoch": 3, "loss": 2.0}]
    assert log[:5] == [("before", 1), ("open", "test epoch 2/3", 8), ("train", 1), ("close", "test epoch 2/3", 8), ("save", 1)]
    assert throughput.images == 2 * 8 * 2 and throughput.images_per_second > 0


def test_run_epochs_closes_the_bar_when_an_epoch_fails_and_writes_no_checkpoint():
    log: list = []
    loop = EpochLoop([0], 0, 1, "failing", 1, lambda total, description, unit, enabled: _Bar(log, total, description))

    def train(epoch, bar, tally):
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        run_epochs(loop, 0, 1, [], train, lambda epoch, tally: {}, save=lambda epoch: log.append("save"))
    assert log == [("open", "failing 1/1", 1), ("close", "failing 1/1", 0)]


def test_the_learning_rate_default_depends_on_the_optimizer():
    assert SupernetTrainConfig().learning_rate is None
    assert with_learning_rate(SupernetTrainConfig(), SUPERNET_LEARNING_RATES).learning_rate == 0.05
    adamw = with_learning_rate(SupernetTrainConfig(optimizer="adamw"), SUPERNET_LEARNING_RATES)
    assert adamw.learning_rate == 2e-3
    assert (
        with_learning_rate(SupernetTrainConfig(optimizer="adamw", learning_rate=0.1), SUPERNET_LEARNING_RATES).learning_rate
        == 0.1
    )
    from nas_search.tasks.detect.supernet_training import DETECTION_SUPERNET_LEARNING_RATES, DetectionSupernetTrainConfig

    assert DETECTION_SUPERNET_LEARNING_RATES == {"sgd": 0.01, "adamw": 5e-4}
    detection = with_learning_rate(DetectionSupernetTrainConfig(optimizer="adamw"), DETECTION_SUPERNET_LEARNING_RATES)
    assert detection.learning_rate == 5e-4


def test_resolve_data_folder_prefers_the_yaml_folder(tmp_path, monkeypatch):
    (tmp_path / "yaml" / "images").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_data_folder(None, tmp_path / "yaml") is None
    assert resolve_data_folder("images", tmp_path / "yaml") == str((tmp_path / "yaml" / "images").resolve())
    assert resolve_data_folder("elsewhere", tmp_path / "yaml") == "elsewhere"
    assert resolve_data_folder(str(tmp_path / "x"), tmp_path / "yaml") == str(tmp_path / "x")


def _supernet_payload(**entries) -> dict:
    return {"format_version": 2, "space": "micro", "num_classes": 3, "epoch": 1, "model": {}, **entries}


def test_the_typed_checkpoint_view_reads_both_names_of_the_training_size(tmp_path):
    classifier = _supernet_payload(format=SUPERNET_FORMAT, input_size=32, class_names=["a", "b", "c"])
    detector = _supernet_payload(
        format=DETECTION_SUPERNET_FORMAT,
        image_size=160,
        classes=["a", "b", "c"],
        resize="square",
        optimizer={},
        random_states={},
    )
    save_checkpoint(classifier, tmp_path / "classifier.pt")
    save_checkpoint(detector, tmp_path / "detector.pt")
    first = read_supernet_checkpoint(tmp_path / "classifier.pt", SUPERNET_FORMAT, space="micro")
    second = read_supernet_checkpoint(tmp_path / "detector.pt", DETECTION_SUPERNET_FORMAT)
    assert isinstance(first, SupernetCheckpoint) and (first.input_size, second.input_size) == (32, 160)
    assert first.class_names == second.class_names == ("a", "b", "c") and second.resize == "square"
    metadata = second.metadata()
    assert metadata["image_size"] == metadata["input_size"] == 160  # the on-disk key stays, the typed name is added
    assert not {"model", "optimizer", "random_states"} & set(metadata)
    assert FORMAT_VERSIONS[DETECTION_SUPERNET_FORMAT] == 2
    with pytest.raises(UserError, match="is for space 'micro', not 'other'"):
        read_supernet_checkpoint(tmp_path / "classifier.pt", SUPERNET_FORMAT, space="other")


def _norm_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5)
    )


def test_precise_batch_norm_sets_the_average_batch_statistics_and_restores_everything_else():
    model = _norm_network()
    model.eval()
    model[5].train()  # a module whose own mode differs from its parent's
    batches = [torch.randn(6, 3, 8, 8) + index for index in range(3)]
    tracked = [norm.num_batches_tracked.clone() for norm in (model[1], model[5])]
    assert precise_batch_norm(model, batches) == 3
    features = [model[0](batch) for batch in batches]
    expected_mean = torch.stack([feature.mean((0, 2, 3)) for feature in features]).mean(0)
    expected_var = torch.stack([feature.var((0, 2, 3), unbiased=True) for feature in features]).mean(0)
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(model[1].running_var, expected_var, atol=1e-5)
    assert [module.training for module in model] == [False] * 5 + [True]
    assert model[1].momentum == 0.3 and not model[1]._forward_hooks
    assert [norm.num_batches_tracked for norm in (model[1], model[5])] == tracked


def test_precise_batch_norm_leaves_the_model_as_it_was_without_batches_or_when_a_forward_fails():
    model = _norm_network()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert precise_batch_norm(model, []) == 0

    def failing(network, batch):
        network(batch)
        raise RuntimeError("forward failed")

    with pytest.raises(RuntimeError, match="forward failed"):
        precise_batch_norm(model, [torch.randn(6, 3, 8, 8)], failing)
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in before.items())
    assert model.training and not model[1]._forward_hooks

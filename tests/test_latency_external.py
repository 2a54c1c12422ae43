"""Latency predictors for external devices, checked on the real HELP measurements."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from benchmarks.lib.external import (
    LatencyTable,
    RegressionTree,
    TransferOptions,
    TransferPredictor,
    fit_flops_baseline,
    fit_transfer_predictor,
    hardware_of,
    load_latency_table,
    same_hardware_devices,
)
from nas_search.errors import UserError
from nas_search.hw_models import features

from support import shared_data_path

FBNET_FILE = "fbnet_cifar100_latency_ms.csv"
OFA_FILE = "ofa_mbv3_imagenet_latency_ms.csv"
NB201_FILE = "nb201_cifar10_latency_ms.csv"


@pytest.fixture(autouse=True)
def single_blas_thread() -> Iterator[None]:
    """Small eigen-decompositions run far faster on one thread of a shared 2-core machine."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def fbnet_table() -> LatencyTable:
    return load_latency_table(shared_data_path("latency", FBNET_FILE))


@pytest.fixture(scope="module")
def ofa_table() -> LatencyTable:
    return load_latency_table(shared_data_path("latency", OFA_FILE))


@pytest.fixture(scope="module")
def nb201_table() -> LatencyTable:
    return load_latency_table(shared_data_path("latency", NB201_FILE))


# ------------------------------------------------------------------ loading


def test_fbnet_table_loads(fbnet_table: LatencyTable) -> None:
    assert fbnet_table.space == "fbnet"
    assert len(fbnet_table) == 5000
    assert {"gold_6226", "pixel2", "eyeriss", "titan_rtx_64"} <= set(fbnet_table.devices)
    assert fbnet_table.latency_ms.shape == (5000, len(fbnet_table.devices))
    assert (fbnet_table.latency_ms > 0).all()
    assert fbnet_table.features.positional.shape == (5000, 22 * 9)
    # every row has exactly one operation per layer
    assert np.array_equal(fbnet_table.features.positional.sum(axis=1), np.full(5000, 22.0))
    assert fbnet_table.features.aggregate.shape == (5000, len(fbnet_table.features.aggregate_names))


def test_ofa_table_loads(ofa_table: LatencyTable) -> None:
    assert ofa_table.space == "ofa_mbv3"
    assert len(ofa_table) == 5000
    assert ofa_table.devices[:3] == ("2080ti_1", "2080ti_32", "2080ti_64")
    assert ofa_table.features.positional.shape == (5000, len(features.OFA_POSITIONAL_NAMES))
    resolution = ofa_table.features.positional[:, -1]
    assert resolution.min() >= 128 and resolution.max() <= 224


def test_nb201_table_loads(nb201_table: LatencyTable) -> None:
    assert nb201_table.space == "nb201"
    assert len(nb201_table) == 15625
    assert "gold_6226" in nb201_table.devices and "lat_gold_6226" not in nb201_table.devices
    assert set(nb201_table.extra_columns) == {"acc_cifar10_test", "acc_cifar100_test", "acc_imagenet16_test"}
    assert nb201_table.features.positional.shape == (15625, 6 * 5)
    # the 15,625 cells are all 5^6 distinct edge assignments
    assert len(np.unique(nb201_table.features.positional, axis=0)) == 15625


def test_unknown_header_names_file_and_formats(tmp_path: Path) -> None:
    path = tmp_path / "mystery.csv"
    path.write_text("id,network,phone_ms\n0,resnet,12.5\n")
    with pytest.raises(UserError, match="mystery.csv") as caught:
        load_latency_table(path)
    assert "fbnet" in str(caught.value) and "nb201" in str(caught.value) and "ofa_mbv3" in str(caught.value)
    with pytest.raises(UserError, match="does not exist"):
        load_latency_table(tmp_path / "absent.csv")


def test_bad_values_are_refused(tmp_path: Path) -> None:
    operations = "-".join(["skip"] * 22)
    path = tmp_path / "fbnet.csv"
    path.write_text(f"arch_id,layers,cpu\n0,{operations},fast\n")
    with pytest.raises(UserError, match="'cpu'"):
        load_latency_table(path)
    path.write_text(f"arch_id,layers,cpu\n0,{operations.replace('skip', 'k9_e9', 1)},3.0\n")
    with pytest.raises(UserError, match="k9_e9"):
        load_latency_table(path)


def test_small_csv_in_each_format_loads(tmp_path: Path) -> None:
    """Any CSV of the same layout works, not only the shipped files."""
    path = tmp_path / "nb201_small.csv"
    cells = ["|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"] * 2
    path.write_text(
        "nb201_idx,arch_str,lat_board_1,acc_x\n" + "".join(f"{i},{cell},{1.5 + i},90\n" for i, cell in enumerate(cells))
    )
    table = load_latency_table(path)
    assert table.devices == ("board_1",)
    assert table.latency("board_1").tolist() == [1.5, 2.5]
    with pytest.raises(UserError, match="known devices: board_1"):
        table.latency("board_2")


# ------------------------------------------------------------------ featurisation


def test_fbnet_all_skip_flops_by_hand() -> None:
    # All 22 layers "skip": identity where the shape is kept, else a 1x1 conv (stride of the stage).
    # stem 3x3 3->16 at 32x32:                 16*3*9*32*32  =   442,368
    # layer 2  16->24, stride 1, 32x32:        24*16*32*32   =   393,216
    # layer 6  24->32, stride 2, out 16x16:    32*24*16*16   =   196,608
    # layer 10 32->64, stride 2, out 8x8:      64*32*8*8     =   131,072
    # layer 14 64->112, stride 1, 8x8:         112*64*8*8    =   458,752
    # layer 18 112->184, stride 2, out 4x4:    184*112*4*4   =   329,728
    # layer 22 184->352, stride 1, 4x4:        352*184*4*4   = 1,036,288
    # head 1x1 352->1504 at 4x4:               352*1504*4*4  = 8,470,528
    # classifier 1504->100:                    1504*100      =   150,400
    # total                                                  = 11,608,960
    layers = features.fbnet_layers(features.parse_fbnet("-".join(["skip"] * 22)))
    assert features.total_macs(layers) == 11_608_960
    assert len(layers) == 1 + 6 + 3  # stem, six projecting skips, head conv + pool + classifier


def test_fbnet_block_macs_by_hand() -> None:
    # k5_e6 as layer 3 (24->24, stride 1, 32x32): expand 24*144*1024 = 3,538,944; depthwise
    # 144*25*1024 = 3,686,400; project 144*24*1024 = 3,538,944 -> 10,764,288 more than "skip".
    skip = features.fbnet_layers(features.parse_fbnet("-".join(["skip"] * 22)))
    with_block = features.fbnet_layers(features.parse_fbnet("-".join(["skip"] * 2 + ["k5_e6"] + ["skip"] * 19)))
    assert features.total_macs(with_block) - features.total_macs(skip) == 10_764_288
    # k3_e1_g2 at the same place: grouped 1x1s halve the dense cost: 24*12*1024 * 2 + 24*9*1024
    grouped = features.fbnet_layers(features.parse_fbnet("-".join(["skip"] * 2 + ["k3_e1_g2"] + ["skip"] * 19)))
    assert features.total_macs(grouped) - features.total_macs(skip) == 24 * 12 * 1024 * 2 + 24 * 9 * 1024
    assert any(layer.kind == "shuffle" for layer in grouped)


def test_ofa_smallest_flops_by_hand() -> None:
    # kernel 3, expansion 3 everywhere, depth 2 per stage, resolution 128 (w1.2 widths
    # 24 | 32 48 96 136 192 | 1152 1536; hidden = make_divisible(in * 3); SE squeeze =
    # make_divisible(hidden // 4)).  Spatial: 128 -> 64 (stem) -> 32 -> 16 -> 8 -> 8 -> 4.
    terms = [
        24 * 3 * 9 * 64 * 64,  # stem 3x3 s2
        24 * 9 * 64 * 64,
        24 * 24 * 64 * 64,  # first block: depthwise 3x3, 1x1
        24 * 72 * 64 * 64,
        72 * 9 * 32 * 32,
        72 * 32 * 32 * 32,  # stage 1 block 1 (s2)
        32 * 96 * 32 * 32,
        96 * 9 * 32 * 32,
        96 * 32 * 32 * 32,  # stage 1 block 2
        32 * 96 * 32 * 32,
        96 * 9 * 16 * 16,
        96 * 24 * 2,
        96 * 48 * 16 * 16,  # stage 2 block 1 (s2, SE 24)
        48 * 144 * 16 * 16,
        144 * 9 * 16 * 16,
        144 * 40 * 2,
        144 * 48 * 16 * 16,  # stage 2 block 2 (SE 40)
        48 * 144 * 16 * 16,
        144 * 9 * 8 * 8,
        144 * 96 * 8 * 8,  # stage 3 block 1 (s2)
        96 * 288 * 8 * 8,
        288 * 9 * 8 * 8,
        288 * 96 * 8 * 8,  # stage 3 block 2
        96 * 288 * 8 * 8,
        288 * 9 * 8 * 8,
        288 * 72 * 2,
        288 * 136 * 8 * 8,  # stage 4 block 1 (s1, SE 72)
        136 * 408 * 8 * 8,
        408 * 9 * 8 * 8,
        408 * 104 * 2,
        408 * 136 * 8 * 8,  # stage 4 block 2 (SE 104)
        136 * 408 * 8 * 8,
        408 * 9 * 4 * 4,
        408 * 104 * 2,
        408 * 192 * 4 * 4,  # stage 5 block 1 (s2, SE 104)
        192 * 576 * 4 * 4,
        576 * 9 * 4 * 4,
        576 * 144 * 2,
        576 * 192 * 4 * 4,  # stage 5 block 2 (SE 144)
        192 * 1152 * 4 * 4,
        1152 * 1536,
        1536 * 1000,  # final 1x1, feature mix, classifier
    ]
    architecture = features.parse_ofa("-".join(["3"] * 20), "-".join(["3"] * 20), "2-2-2-2-2", "128")
    assert features.total_macs(features.ofa_layers(architecture)) == sum(terms) == 65_536_896


def test_nb201_flops_by_hand() -> None:
    # Fixed part: stem 16*3*9*32*32 = 442,368; two reduction blocks, each conv_a 3x3 s2
    # (1,179,648), conv_b 3x3 (2,359,296), 1x1 shortcut (131,072); classifier 64*10 = 640.
    # 442,368 + 2 * 3,670,016 + 640 = 7,783,040.  A 3x3 edge costs C*C*9*H*W = 2,359,296 in
    # every stage (16ch@32, 32ch@16, 64ch@8), a 1x1 edge 262,144; each stage has 5 cells.
    empty = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert features.total_macs(features.nb201_layers(features.parse_nb201(empty))) == 7_783_040
    full = empty.replace("none", "nor_conv_3x3")
    assert features.total_macs(features.nb201_layers(features.parse_nb201(full))) == 7_783_040 + 15 * 6 * 2_359_296
    mixed = "|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_3x3~0|none~1|none~2|"
    assert features.total_macs(features.nb201_layers(features.parse_nb201(mixed))) == 7_783_040 + 15 * (2_359_296 + 262_144)


def test_table_flops_column_matches_layers(nb201_table: LatencyTable, fbnet_table: LatencyTable) -> None:
    first_cell = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert nb201_table.features.flops[0] == 7_783_040 + 15 * 2 * 262_144
    assert nb201_table.features.flops[0] == features.total_macs(features.nb201_layers(features.parse_nb201(first_cell)))
    names = fbnet_table.features.aggregate_names
    kinds = [names.index(f"{kind}_macs") for kind in features.LAYER_KINDS]
    assert np.allclose(fbnet_table.features.aggregate[:, kinds].sum(axis=1), fbnet_table.features.flops)


def test_hardware_names() -> None:
    assert hardware_of("titan_rtx_256") == "titan_rtx"
    assert hardware_of("1080ti_1") == "1080ti"
    assert hardware_of("gold_6226") == "gold_6226"
    assert hardware_of("samsung_a50") == "samsung_a50"


# ------------------------------------------------------------------ predictors


def _draw(table: LatencyTable, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(table))
    return order[:count], order[count:]


@pytest.mark.parametrize(
    "settings",
    [
        {"use_other_devices": True},
        {"use_other_devices": False},
        {"use_other_devices": True, "exclude_same_hardware": True},
        {"use_other_devices": True, "options": TransferOptions(tree_min_samples=30, tree_count=10)},
    ],
    ids=["signatures", "layer-only", "other-hardware", "boosted"],
)
def test_target_values_outside_samples_are_never_read(fbnet_table: LatencyTable, settings: dict) -> None:
    target = "titan_rtx_32"
    samples, held_out = _draw(fbnet_table, 40, seed=1)
    column = fbnet_table.device_index(target)
    corrupted = fbnet_table.latency_ms.copy()
    corrupted[held_out, column] = np.random.default_rng(7).uniform(1.0, 500.0, len(held_out))
    corrupted_table = fbnet_table.with_latency(corrupted)
    everything = np.arange(len(fbnet_table))
    clean = fit_transfer_predictor(fbnet_table, target, samples, **settings).predict(everything)
    dirty = fit_transfer_predictor(corrupted_table, target, samples, **settings).predict(everything)
    assert np.allclose(clean, dirty, rtol=1e-9, atol=0.0)
    # ...while changing a sampled value does change the fit
    corrupted[samples[0], column] *= 3.0
    moved = fit_transfer_predictor(fbnet_table.with_latency(corrupted), target, samples, **settings).predict(everything)
    assert not np.allclose(clean, moved)


def test_other_hardware_variant_has_no_same_hardware_reference(fbnet_table: LatencyTable) -> None:
    samples, _held_out = _draw(fbnet_table, 20, seed=2)
    predictor = fit_transfer_predictor(fbnet_table, "titan_rtx_32", samples, exclude_same_hardware=True)
    banned = set(same_hardware_devices(fbnet_table, "titan_rtx_32"))
    assert banned == {"titan_rtx_1", "titan_rtx_64"}
    for _name, _weight, model in predictor.components:
        assert not banned & set(getattr(model, "device_weights", {}))
    layer_only = fit_transfer_predictor(fbnet_table, "titan_rtx_32", samples, use_other_devices=False)
    for _name, _weight, model in layer_only.components:
        assert not getattr(model, "device_weights", {})


def test_quality_floor_nb201_gold_6226_with_10_samples(nb201_table: LatencyTable) -> None:
    measured = nb201_table.latency("gold_6226")
    ours, flops = [], []
    for seed in range(3):
        samples, held_out = _draw(nb201_table, 10, seed)
        predicted = fit_transfer_predictor(nb201_table, "gold_6226", samples).predict(held_out)
        ours.append(spearmanr(predicted, measured[held_out]).correlation)
        baseline = fit_flops_baseline(nb201_table, "gold_6226", samples).predict(held_out)
        flops.append(spearmanr(baseline, measured[held_out]).correlation)
    assert np.mean(ours) >= 0.9
    assert np.mean(ours) > np.mean(flops) + 0.03


def test_quality_floor_layer_only_fbnet_eyeriss(fbnet_table: LatencyTable) -> None:
    samples, held_out = _draw(fbnet_table, 20, seed=3)
    predicted = fit_transfer_predictor(fbnet_table, "eyeriss", samples, use_other_devices=False).predict(held_out)
    measured = fbnet_table.latency("eyeriss")[held_out]
    assert spearmanr(predicted, measured).correlation >= 0.95
    assert np.mean(np.abs(predicted / measured - 1.0) <= 0.10) >= 0.8


def test_predictor_round_trips_through_plain_data(ofa_table: LatencyTable) -> None:
    samples, held_out = _draw(ofa_table, 40, seed=4)
    options = TransferOptions(tree_min_samples=30, tree_count=5)
    predictor = fit_transfer_predictor(ofa_table, "v100_32", samples, options=options)
    data = json.loads(json.dumps(predictor.to_dict()))
    rebuilt = TransferPredictor.from_dict(data, ofa_table)
    assert np.allclose(rebuilt.predict(held_out), predictor.predict(held_out), rtol=1e-12)
    assert abs(sum(weight for _name, weight, _model in predictor.components) - 1.0) < 1e-9


def test_regression_tree_arrays_match_scikit_learn() -> None:
    from sklearn.tree import DecisionTreeRegressor

    generator = np.random.default_rng(0)
    inputs = generator.normal(size=(300, 5))
    targets = np.sin(inputs[:, 0]) + inputs[:, 1] * inputs[:, 2]
    fitted = DecisionTreeRegressor(max_depth=4, random_state=0).fit(inputs, targets).tree_
    tree = RegressionTree(fitted.children_left, fitted.children_right, fitted.feature, fitted.threshold, fitted.value[:, 0, 0])
    probe = generator.normal(size=(200, 5))
    expected = DecisionTreeRegressor(max_depth=4, random_state=0).fit(inputs, targets).predict(probe)
    assert np.allclose(tree.predict(probe), expected)


def test_bad_predictor_input_is_refused(fbnet_table: LatencyTable) -> None:
    with pytest.raises(UserError, match="not in"):
        fit_transfer_predictor(fbnet_table, "toaster", [1, 2, 3])
    with pytest.raises(UserError, match="sample_indices"):
        fit_transfer_predictor(fbnet_table, "pixel2", [1, 2])
    with pytest.raises(UserError, match="sample_indices"):
        fit_transfer_predictor(fbnet_table, "pixel2", [1, 2, 10**6])
    with pytest.raises(UserError, match="repeat"):
        fit_transfer_predictor(fbnet_table, "pixel2", [1, 2, 2, 3])

import random

import pytest

from nas_search.errors import UserError
from nas_search.spec import ArchSpec, BlockSpec, StageSpec, load_arch, save_arch
from nas_search.tasks import get_space, space_names


@pytest.mark.parametrize("space_name", space_names())
def test_round_trip_json_and_yaml_for_random_specs(space_name):
    space = get_space(space_name)
    rng = random.Random(1)
    for _ in range(50):
        spec = space.sample(rng, bias=rng.random())
        assert ArchSpec.from_json(spec.to_json()) == spec
        assert ArchSpec.from_yaml(spec.to_yaml()) == spec
        assert ArchSpec.from_dict(spec.to_dict()).key == spec.key


def test_string_view_is_compact_and_distinguishes_choices():
    block = BlockSpec("scc", kernel=5, width=0.5, groups=4, overlap=0.33)
    assert str(block) == "scc_k5_g4_o0.33_w0.5"
    assert str(BlockSpec("mbconv", 3, 1.0, expansion=6, squeeze_excite=True)) == "mbconv_k3_e6_se_w1"
    spec = ArchSpec("cifar", (StageSpec((block,)),) * 4)
    assert "\n" not in str(spec) and str(spec).startswith("cifar:")
    assert ArchSpec("cifar", (StageSpec((block,)),) * 4, channel_divisor=16).key != spec.key


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(op="conv"), "op"),
        (dict(op="dsc", kernel=4), "kernel"),
        (dict(op="dsc", width=1.5), "width"),
        (dict(op="dsc", expansion=4), "expansion"),
        (dict(op="scc", groups=3, overlap=0.5), "groups"),
        (dict(op="scc", groups=4, overlap=0.4), "overlap"),
        (dict(op="dsc", squeeze_excite=True), "squeeze_excite"),
    ],
)
def test_invalid_block_names_field_and_allowed_values(kwargs, field):
    with pytest.raises(UserError) as error:
        BlockSpec(**kwargs)
    message = str(error.value)
    assert f"BlockSpec.{field}=" in message and "allowed" in message


def test_spec_outside_space_choices_is_refused():
    space = get_space("cifar")
    spec = space.largest()
    stages = list(spec.stages)
    stages[0] = StageSpec((BlockSpec("dsc", 3, 0.3),))
    with pytest.raises(UserError, match="width=0.3 is outside the space"):
        space.resolve(ArchSpec("cifar", tuple(stages)))
    with pytest.raises(UserError, match="not 'cifar'"):
        space.validate(ArchSpec("mobile", spec.stages))


def test_unknown_fields_and_malformed_files(tmp_path):
    data = get_space("cifar").largest().to_dict()
    data["colour"] = "red"
    with pytest.raises(UserError, match="unknown field"):
        ArchSpec.from_dict(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml"):
        load_arch(bad)
    with pytest.raises(UserError, match="not found"):
        load_arch(tmp_path / "missing.yaml")


def test_save_arch_is_atomic_and_loads_back(tmp_path):
    spec = get_space("mobile").smallest()
    for name in ("arch.yaml", "arch.json"):
        path = save_arch(spec, tmp_path / name)
        assert load_arch(path) == spec
    assert not list(tmp_path.glob(".*.tmp"))

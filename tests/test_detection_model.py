"""The detection model side: spec, ``detect`` space, supernet, extraction, costs, ONNX,
and the search plumbing (sampling, projection, Optuna parameters) on the detect space."""

import io
import math
import random

import numpy as np
import optuna
import pytest
import torch

from nas_search.errors import UserError
from nas_search.hw_models import FlopsModel, ParamsModel
from nas_search.hw_models.flops import count_flops
from nas_search.hw_models.fvcore_count import fvcore_flops
from nas_search.search.parameters import spec_to_params, suggest_spec
from nas_search.search.sampling import check_budget, flops_range, sample_specs
from nas_search.spaces.projection import project_to_band
from nas_search.spec import ArchSpec, BlockSpec, DetectorSpec, StageSpec
from nas_search.tasks import get_space, space_names
from nas_search.tasks.detect.build import build_detector
from nas_search.tasks.detect.space import DetectionSpace
from nas_search.tasks.detect.static import HEAD_OUTPUTS, StaticDetector
from nas_search.tasks.detect.supernet import DetectionSupernet

SIZE = 128
CLASSES = 3


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, and predictor weights large
    enough that the raw outputs vary, so that copying wrong channels shows up."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                count = module.num_features
                module.running_mean.copy_(torch.randn(count, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(count, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(count, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(count, generator=generator) * 0.1)
        for name in ("cls_logits", "bbox_reg", "bbox_ctrness"):
            layer = getattr(model.head, name)
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.3)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.3)


@pytest.fixture(scope="module")
def space() -> DetectionSpace:
    return get_space("detect")


@pytest.fixture(scope="module")
def supernet(space) -> DetectionSupernet:
    torch.manual_seed(0)
    net = DetectionSupernet(space, num_classes=CLASSES, image_size=SIZE)
    randomise(net)
    return net


def batch() -> tuple[list[torch.Tensor], list[dict]]:
    generator = torch.Generator().manual_seed(5)
    images = [torch.rand(3, SIZE, 96, generator=generator), torch.rand(3, 100, SIZE, generator=generator)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 12.0, 70.0, 60.0], [4.0, 5.0, 20.0, 30.0]]),
            "labels": torch.tensor([1, 3]),
            "image_id": 0,
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 1},
    ]
    return images, targets


def random_specs(space, count: int, seed: int) -> list[ArchSpec]:
    rng = random.Random(seed)
    return [space.sample(rng, bias=rng.random()) for _ in range(count)]


# ---------------------------------------------------------------------------- spec
def test_detector_spec_round_trips_and_string_view(space):
    detector = DetectorSpec(neck_width=0.75, neck_depth=1, head_width=0.5, head_depth=3)
    assert str(detector) == "neck0.75x1|dethead0.5x3"
    for spec in random_specs(space, 30, seed=1):
        assert spec.detector is not None
        assert ArchSpec.from_json(spec.to_json()) == spec
        assert ArchSpec.from_yaml(spec.to_yaml()) == spec
        assert ArchSpec.from_dict(spec.to_dict()).key == spec.key
        assert f"|head1|{spec.detector}" in str(spec)
    spec = ArchSpec("detect", space.largest().stages, detector=detector, channel_divisor=16)
    assert str(spec).endswith("|head1|neck0.75x1|dethead0.5x3|div16")
    assert spec.to_dict()["detector"] == {"neck_width": 0.75, "neck_depth": 1, "head_width": 0.5, "head_depth": 3}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(neck_width=0.0), "neck_width"),
        (dict(head_width=1.5), "head_width"),
        (dict(neck_depth=-1), "neck_depth"),
        (dict(head_depth=0), "head_depth"),
        (dict(head_depth=True), "head_depth"),
    ],
)
def test_invalid_detector_spec_names_field_and_allowed_values(kwargs, field):
    values = {"neck_width": 1.0, "neck_depth": 1, "head_width": 1.0, "head_depth": 2, **kwargs}
    with pytest.raises(UserError) as error:
        DetectorSpec(**values)
    assert f"DetectorSpec.{field}=" in str(error.value) and "allowed" in str(error.value)


def test_detector_dict_errors(space):
    data = space.largest().to_dict()
    data["detector"] = {"neck_width": 1.0, "neck_depth": 1, "head_width": 1.0}
    with pytest.raises(UserError, match="missing head_depth"):
        ArchSpec.from_dict(data)
    data["detector"] = {"neck_width": 1.0, "neck_depth": 1, "head_width": 1.0, "head_depth": 1, "colour": 1}
    with pytest.raises(UserError, match="unknown field"):
        ArchSpec.from_dict(data)


def test_classification_spec_forms_are_unchanged():
    """A mobile spec's string, JSON and YAML, as produced before detectors existed."""
    first = BlockSpec("mbconv", 5, 0.75, expansion=4, squeeze_excite=True)
    stages = (
        StageSpec((first, BlockSpec("scc", 3, 0.5, groups=4, overlap=0.33))),
        StageSpec((BlockSpec("slim", 7, 1.0),)),
        StageSpec((BlockSpec("dsc", 3, 0.25), first, BlockSpec("slim", 7, 1.0))),
    )
    spec = ArchSpec("mobile", stages, stem_width=0.75, head_width=0.5, channel_divisor=16)
    assert str(spec) == (
        "mobile:stem0.75|mbconv_k5_e4_se_w0.75+scc_k3_g4_o0.33_w0.5|slim_k7_w1|"
        "dsc_k3_w0.25+mbconv_k5_e4_se_w0.75+slim_k7_w1|head0.5|div16"
    )
    assert spec.to_json() == (
        '{"format_version": 1, "space": "mobile", "stem_width": 0.75, "head_width": 0.5, "channel_divisor": 16, '
        '"stages": [{"blocks": [{"op": "mbconv", "kernel": 5, "width": 0.75, "expansion": 4.0, "squeeze_excite": true}, '
        '{"op": "scc", "kernel": 3, "width": 0.5, "groups": 4, "overlap": 0.33}]}, {"blocks": [{"op": "slim", '
        '"kernel": 7, "width": 1.0}]}, {"blocks": [{"op": "dsc", "kernel": 3, "width": 0.25}, {"op": "mbconv", '
        '"kernel": 5, "width": 0.75, "expansion": 4.0, "squeeze_excite": true}, {"op": "slim", "kernel": 7, "width": 1.0}]}]}'
    )
    assert spec.to_yaml() == (
        "format_version: 1\nspace: mobile\nstem_width: 0.75\nhead_width: 0.5\nchannel_divisor: 16\nstages:\n"
        "- blocks:\n  - op: mbconv\n    kernel: 5\n    width: 0.75\n    expansion: 4.0\n    squeeze_excite: true\n"
        "  - op: scc\n    kernel: 3\n    width: 0.5\n    groups: 4\n    overlap: 0.33\n- blocks:\n  - op: slim\n"
        "    kernel: 7\n    width: 1.0\n- blocks:\n  - op: dsc\n    kernel: 3\n    width: 0.25\n  - op: mbconv\n"
        "    kernel: 5\n    width: 0.75\n    expansion: 4.0\n    squeeze_excite: true\n  - op: slim\n    kernel: 7\n"
        "    width: 1.0\n"
    )
    assert spec.detector is None and "detector" not in spec.to_dict()


# ---------------------------------------------------------------------------- space
def test_detect_space_is_registered_and_validates(space):
    assert "detect" in space_names()
    assert space.task == "detect" and space.input_size == 416 and space.train_input_size < space.input_size
    mobile = get_space("mobile")
    assert space.stages == mobile.stages and space.feature_strides() == (8, 16, 32)
    assert space.level_strides() == (8, 16, 32, 64, 128)  # two extra levels, as FCOS's P6/P7
    for spec in (space.largest(), space.smallest(), *random_specs(space, 20, seed=2)):
        space.validate(spec)
    with pytest.raises(UserError, match="needs a detector"):
        space.validate(ArchSpec("detect", space.largest().stages))
    outside = ArchSpec("detect", space.largest().stages, detector=DetectorSpec(1.0, 5, 1.0, 1))
    with pytest.raises(UserError, match="neck_depth=5 is outside the space"):
        space.resolve(outside)
    with pytest.raises(UserError, match="head_width=0.5 is outside"):
        space.validate(ArchSpec("detect", space.largest().stages, head_width=0.5, detector=DetectorSpec(1.0, 1, 1.0, 1)))


def test_flops_range_at_deployment_size_covers_the_budgets(space):
    limits = flops_range(space)
    assert limits.smallest <= 0.5e9 and limits.largest >= 8e9, limits
    assert check_budget(space, 4_500_000_000).smallest == limits.smallest
    with pytest.raises(UserError, match="below the smallest subnet"):
        check_budget(space, limits.smallest - 1)


def test_fresh_head_predicts_positive_boxes_of_the_distance_prior(space):
    """A fresh head predicts box distances near BOX_DISTANCE_PRIOR strides on every side
    (the exp parametrisation), never the zero-size boxes where GIoU has no size gradient;
    huge raw outputs are clamped, not overflowed."""
    from nas_search.tasks.detect.static import BOX_DISTANCE_PRIOR, box_distances

    torch.manual_seed(0)
    detector = build_detector(random_specs(space, 1, seed=11)[0], CLASSES, SIZE).eval()
    with torch.no_grad():
        outputs = dict(zip(HEAD_OUTPUTS, detector.core()(torch.randn(2, 3, SIZE, SIZE))))
    boxes = outputs["bbox_regression"]
    assert boxes.shape[1] == sum(math.ceil(SIZE / stride) ** 2 for stride in space.level_strides())
    assert bool((boxes > 0).all())
    assert abs(float(boxes.median()) - BOX_DISTANCE_PRIOR) < 0.5, float(boxes.median())
    assert torch.isfinite(box_distances(torch.tensor([1e4, -1e4]))).all()


# ---------------------------------------------------------------------------- supernet
def test_train_mode_losses_are_finite_and_backpropagate(supernet, space):
    supernet.train()
    images, targets = batch()
    anchors = sum(math.ceil(SIZE / stride) ** 2 for stride in space.level_strides())
    for spec in (space.largest(), space.smallest(), *random_specs(space, 2, seed=3)):
        supernet.activate(spec)
        supernet.zero_grad(set_to_none=True)
        losses, head_outputs = supernet.forward_with_head_outputs(images, targets)
        assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
        assert all(torch.isfinite(value) for value in losses.values()), (losses, str(spec))
        assert head_outputs["cls_logits"].shape == (2, anchors, CLASSES + 1)
        assert head_outputs["bbox_regression"].shape == (2, anchors, 4)
        assert head_outputs["bbox_ctrness"].shape == (2, anchors, 1)
        assert head_outputs["cls_logits"].requires_grad
        sum(losses.values()).backward()
        stem_gradient = supernet.backbone.body.stem.conv.weight.grad
        assert stem_gradient is not None and stem_gradient.abs().sum() > 0
        unused_op = next(op for op in supernet.backbone.body.stages[0][0] if op != spec.stages[0].blocks[0].op)
        assert all(p.grad is None for p in supernet.backbone.body.stages[0][0][unused_op].parameters())
    supernet.eval()


def test_eval_mode_returns_detections(supernet, space):
    supernet.eval()
    supernet.activate(random_specs(space, 1, seed=4)[0])
    images, _ = batch()
    with torch.no_grad():
        detections = supernet(images)
    assert len(detections) == 2
    for image, detection in zip(images, detections):
        assert set(detection) == {"boxes", "scores", "labels"}
        boxes = detection["boxes"]
        assert boxes.shape[0] > 0 and boxes.shape[1] == 4
        assert boxes[:, 2].max() <= image.shape[2] + 1e-3 and boxes[:, 3].max() <= image.shape[1] + 1e-3
        assert detection["labels"].max() <= CLASSES and detection["scores"].min() >= 0.05


def test_supernet_and_extracted_agree_and_costs_are_exact(supernet, space):
    supernet.eval()
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    specs = [space.largest(), space.smallest(), *random_specs(space, 8, seed=6)]
    for spec in specs:
        supernet.activate(spec)
        model = supernet.extract(spec)
        assert isinstance(model, StaticDetector) and not model.training
        assert not any(isinstance(module, DetectionSupernet) for module in model.modules())
        with torch.no_grad():
            expected, actual = supernet.core()(images), model.core()(images)
        difference = max((a - b).abs().max().item() for a, b in zip(expected, actual))
        assert difference <= 1e-4, (difference, str(spec))
        assert expected[0].std() > 0.01  # outputs vary, so a wrong copy would show
        analytic = count_flops(spec, space, input_size=SIZE, num_classes=CLASSES)
        assert analytic.params == sum(p.numel() for p in model.parameters()), str(spec)
        assert analytic.flops == fvcore_flops(model.core(), SIZE), str(spec)
        assert not model.training  # counting leaves the mode alone
    ops = {block.op for spec in specs for block in spec.blocks}
    assert ops == {"mbconv", "dsc", "scc", "slim"}


def test_extracted_detections_equal_supernet_detections(supernet, space):
    supernet.eval()
    spec = random_specs(space, 1, seed=8)[0]
    supernet.activate(spec)
    model = supernet.extract()
    images, _ = batch()
    with torch.no_grad():
        expected, actual = supernet(images), model(images)
    for one, other in zip(expected, actual):
        assert torch.allclose(one["boxes"], other["boxes"], atol=1e-3)
        assert torch.equal(one["labels"], other["labels"])


def test_flops_at_deployment_size_equal_fvcore(supernet, space):
    spec = random_specs(space, 1, seed=9)[0]
    model = supernet.extract(spec)
    assert count_flops(spec, space, num_classes=CLASSES).flops == fvcore_flops(model.core(), space.input_size)
    assert FlopsModel(space, num_classes=CLASSES)(spec) == count_flops(spec, space, num_classes=CLASSES).flops
    assert ParamsModel(space, num_classes=CLASSES)(spec) == sum(p.numel() for p in model.parameters())


def test_onnx_export_of_core_matches_torch(supernet, space):
    onnxruntime = pytest.importorskip("onnxruntime")
    supernet.eval()
    model = supernet.extract(random_specs(space, 1, seed=10)[0])
    core = model.core()
    example = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    buffer = io.BytesIO()
    names = list(core.output_names)
    torch.onnx.export(
        core,
        (example,),
        buffer,
        input_names=["images"],
        output_names=names,
        dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
        opset_version=17,
        dynamo=False,
    )
    assert not model.training and not core.training
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    outputs = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = core(images)
    assert [output.shape for output in outputs] == [tuple(tensor.shape) for tensor in expected]
    for name, output, tensor in zip(HEAD_OUTPUTS, outputs, expected):
        assert np.abs(output - tensor.numpy()).max() <= 1e-4, name


def test_build_detector_from_scratch_matches_extracted_layout(supernet, space):
    spec = random_specs(space, 1, seed=11)[0]
    model = build_detector(spec, CLASSES, image_size=SIZE)
    assert model.state_dict().keys() == supernet.extract(spec).state_dict().keys()
    assert model.spec == spec and model.num_classes == CLASSES
    model.train()
    images, targets = batch()
    losses = model(images, targets)
    assert all(torch.isfinite(value) for value in losses.values())
    model.set_image_size(160)
    assert model.transform.min_size == (160,) and model.transform.max_size == 160
    with pytest.raises(UserError, match="multiple of 32"):
        model.set_image_size(100)
    with pytest.raises(UserError, match="not a detection space"):
        build_detector(get_space("mobile").largest(), CLASSES)


def test_resize_modes_fill_the_input_or_keep_the_aspect_ratio(space):
    """``square`` stretches a 4:3 image to the full S x S input, ``longer-side`` keeps its
    aspect ratio (160 x 120 of content padded to 160 x 128); both return boxes in the image's own pixels."""
    spec = random_specs(space, 1, seed=5)[0]
    image = torch.rand(3, 120, 160)
    shapes = {}
    for mode in ("square", "longer-side"):
        model = build_detector(spec, CLASSES, image_size=160, resize=mode, score_thresh=0.0).eval()
        assert model.resize == mode
        with torch.no_grad():
            batch_images, _ = model.transform([image])
            detections = model([image])[0]
        shapes[mode] = (tuple(batch_images.tensors.shape[-2:]), tuple(batch_images.image_sizes[0]))
        boxes = detections["boxes"]
        assert len(boxes) > 0
        assert boxes[:, 2].max() <= 160 + 1e-3 and boxes[:, 3].max() <= 120 + 1e-3
    # (input tensor, image content inside it): a quarter of the longer-side input is padding
    assert shapes == {"square": ((160, 160), (160, 160)), "longer-side": ((128, 160), (120, 160))}
    model.set_resize("square")
    assert model.transform.fixed_size == (160, 160)
    model.set_image_size(128)  # the mode survives a size change
    assert model.transform.fixed_size == (128, 128)
    with pytest.raises(UserError, match="resize mode 'letterbox' is invalid; allowed: square, longer-side"):
        build_detector(spec, CLASSES, image_size=160, resize="letterbox")


def test_supernet_extracts_detectors_with_its_resize_mode(space):
    supernet = DetectionSupernet(space, num_classes=CLASSES, image_size=SIZE, resize="longer-side")
    assert supernet.transform.fixed_size is None
    assert supernet.extract(space.smallest()).resize == "longer-side"
    assert DetectionSupernet(space, num_classes=CLASSES, image_size=SIZE).extract(space.smallest()).resize == "square"


# ---------------------------------------------------------------------------- search plumbing
def test_sample_specs_within_budget(space):
    budget = 4_500_000_000
    samples = sample_specs(space, 6, seed=0, max_flops=budget)
    assert len({spec.key for spec, _ in samples}) == len(samples) == 6
    for spec, flops in samples:
        assert spec.detector is not None
        assert flops == count_flops(spec, space).flops <= budget


def test_projection_moves_detectors_into_the_band(space):
    flops = FlopsModel(space, num_classes=CLASSES)
    lower, upper = 3.5e9, 4.5e9
    for spec in (space.largest(), *random_specs(space, 3, seed=12)):
        projected = project_to_band(spec, space, flops, lower, upper)
        space.validate(projected)
        assert flops(projected) <= upper or flops(projected) < flops(spec)
    projected = project_to_band(space.largest(), space, flops, lower, upper)
    assert lower <= flops(projected) <= upper


def test_optuna_parameters_round_trip(space):
    for spec in random_specs(space, 10, seed=13):
        params = spec_to_params(spec)
        assert {"neck_width", "neck_depth", "det_head_width", "det_head_depth"} <= set(params)
        assert "head_width" not in params
        assert suggest_spec(optuna.trial.FixedTrial(params), space) == spec
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    spec = suggest_spec(trial, space)
    space.validate(spec)
    assert trial.params["det_head_depth"] == spec.detector.head_depth
    mobile_spec = get_space("mobile").sample(random.Random(0))
    assert "head_width" in spec_to_params(mobile_spec) and "neck_width" not in spec_to_params(mobile_spec)

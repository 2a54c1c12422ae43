"""The architecture spec: the single currency of nas-search.

The search produces an :class:`ArchSpec`, cost models and evaluators consume it, ``export``
writes it and ``train`` reads it back.  Specs are frozen dataclasses that validate
themselves on construction, round-trip through plain dicts (hence JSON and YAML), and have
a compact one-line string view for logs and lookup-table keys.  The string is only a view:
the dataclass is the truth.

Example::

    >>> block = BlockSpec(op="mbconv", kernel=5, width=0.75, expansion=4)
    >>> str(block)
    'mbconv_k5_e4_w0.75'

A detector adds a :class:`DetectorSpec` (neck and head choices) to the backbone's choices::

    >>> str(DetectorSpec(neck_width=0.75, neck_depth=1, head_width=0.5, head_depth=3))
    'neck0.75x1|dethead0.5x3'

A spec only says *which* choices were taken; the space (``nas_search.spaces``) holds the
maximum channel counts, strides and the allowed choices, and checks a spec against them
with ``SearchSpace.validate``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from nas_search.errors import UserError, missing_file

SPEC_FORMAT_VERSION = 1

KERNEL_SIZES = (3, 5, 7)
SCC_GROUPS = (2, 4, 8)
SCC_OVERLAPS = (0.25, 0.33, 0.5)


@dataclass(frozen=True)
class OpField:
    """A :class:`BlockSpec` field beyond ``op``, ``kernel`` and ``width`` that only one op uses.

    Attributes:
        name: the ``BlockSpec`` attribute.
        unused: the value every other op must hold (the dataclass default).
        unused_text: that value as the error message shows it (``1``, ``0``, ``false``).
        unused_reason: why other ops must hold it, e.g. ``only mbconv expands``.
        allowed: whether a value is valid for the op that uses the field.
        allowed_text: the valid values, as the error message shows them.
        token: the field's part of the string view (``e4``), or ``None`` to show nothing.
        well_typed: whether a value has the field's type, checked for every op (a bad
            type fails with ``allowed_text``).
    """

    name: str
    unused: Any
    unused_text: str
    unused_reason: str
    allowed: Callable[[Any], bool]
    allowed_text: str
    token: Callable[[Any], str | None]
    well_typed: Callable[[Any], bool] = lambda value: True


@dataclass(frozen=True)
class BlockRules:
    """The spec-level rules of one block op: its name, meaning and own fields.

    One row per op, in :data:`BLOCK_RULES`. The rest of what an op is (channels, modules,
    costs, search parameters) lives in its ``BlockKind`` (``nas_search.spaces.ops``),
    which holds this row; this module is below ``spaces`` and so keeps only the rules a
    :class:`BlockSpec` needs to validate itself and to print and serialise itself.

    Attributes:
        name: the op's token in specs, strings and dicts (``mbconv``).
        description: one line saying what the block computes.
        fields: the :class:`OpField` s this op uses, in string-view order; they appear in
            ``to_dict`` and the string view, and every other op must leave them unused.
    """

    name: str
    description: str
    fields: tuple[OpField, ...] = ()


EXPANSION_FIELD = OpField(
    "expansion",
    1.0,
    "1",
    "only mbconv expands",
    lambda value: 1 <= value <= 8,
    "1 to 8 for mbconv",
    lambda value: f"e{_format_number(value)}",
)
SQUEEZE_EXCITE_FIELD = OpField(
    "squeeze_excite",
    False,
    "false",
    "only mbconv",
    lambda value: True,
    "true or false",
    lambda value: "se" if value else None,
    well_typed=lambda value: isinstance(value, bool),
)
GROUPS_FIELD = OpField(
    "groups",
    1,
    "1",
    "only scc has channel groups",
    lambda value: value in SCC_GROUPS,
    ", ".join(map(str, SCC_GROUPS)),
    lambda value: f"g{value}",
)
OVERLAP_FIELD = OpField(
    "overlap",
    0.0,
    "0",
    "only scc has overlap",
    lambda value: value in SCC_OVERLAPS,
    ", ".join(map(str, SCC_OVERLAPS)),
    lambda value: f"o{_format_number(value)}",
)

#: The spec-level rules of every block op, by name (see :class:`BlockRules`).
BLOCK_RULES: dict[str, BlockRules] = {
    rules.name: rules
    for rules in (
        BlockRules(
            "mbconv",
            "inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, optional squeeze-excite",
            (EXPANSION_FIELD, SQUEEZE_EXCITE_FIELD),
        ),
        BlockRules("dsc", "depthwise-separable: depthwise kxk -> pointwise 1x1"),
        BlockRules(
            "scc",
            "depthwise kxk -> sliding-channel pointwise (DSXplore), cg channel groups, co overlap",
            (GROUPS_FIELD, OVERLAP_FIELD),
        ),
        BlockRules("slim", "Slim-CNN slim module: two SSE blocks with a projected skip, then a depthwise-separable conv"),
    )
}
#: Every op field, in ``BlockSpec`` order (the order they are validated in).
OP_FIELDS: tuple[OpField, ...] = (EXPANSION_FIELD, GROUPS_FIELD, OVERLAP_FIELD, SQUEEZE_EXCITE_FIELD)


class _Descriptions(Mapping[str, str]):
    """Live view of :data:`BLOCK_RULES`: op name -> description."""

    def __getitem__(self, name: str) -> str:
        return BLOCK_RULES[name].description

    def __iter__(self) -> Iterator[str]:
        return iter(BLOCK_RULES)

    def __len__(self) -> int:
        return len(BLOCK_RULES)


#: Block operation names and what each means (a view of :data:`BLOCK_RULES`).
BLOCK_OPERATIONS: Mapping[str, str] = _Descriptions()


@contextmanager
def extra_block_rules(rules: BlockRules) -> Iterator[BlockRules]:
    """Make ``rules`` a valid op of :class:`BlockSpec` inside the ``with`` block only (for
    tests of a new op; ``nas_search.spaces.ops.extra_block_kind`` calls this)."""
    if rules.name in BLOCK_RULES:
        raise ValueError(f"block op {rules.name!r} already exists")
    BLOCK_RULES[rules.name] = rules
    try:
        yield rules
    finally:
        del BLOCK_RULES[rules.name]


def _fail(owner: str, field_name: str, value: Any, allowed: str) -> None:
    raise UserError(f"{owner}.{field_name}={value!r} is invalid; allowed: {allowed}")


def _format_number(value: float) -> str:
    """Shortest faithful text for a ratio (0.5 -> '0.5', 4.0 -> '4')."""
    return f"{value:g}"


@dataclass(frozen=True)
class BlockSpec:
    """One block of a stage.

    Attributes:
        op: one of :data:`BLOCK_OPERATIONS`.
        kernel: depthwise kernel size, one of 3, 5, 7.
        width: output width ratio of the block (its per-layer pruning ratio), in (0, 1].
            The channel count is ``round(width * max_channels)`` rounded to the space's
            channel divisor.
        expansion: hidden-width multiplier of ``mbconv`` (ignored by other ops, must be 1).
        groups: SCC channel groups ``cg`` (``scc`` only, else 1).
        overlap: SCC overlap ratio ``co`` (``scc`` only, else 0).
        squeeze_excite: squeeze-and-excite on the hidden layer (``mbconv`` only).
    """

    op: str
    kernel: int = 3
    width: float = 1.0
    expansion: float = 1.0
    groups: int = 1
    overlap: float = 0.0
    squeeze_excite: bool = False

    def __post_init__(self) -> None:
        name = "BlockSpec"
        if self.op not in BLOCK_OPERATIONS:
            _fail(name, "op", self.op, ", ".join(BLOCK_OPERATIONS))
        if isinstance(self.kernel, bool) or self.kernel not in KERNEL_SIZES:
            _fail(name, "kernel", self.kernel, ", ".join(map(str, KERNEL_SIZES)))
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or not 0 < self.width <= 1:
            _fail(name, "width", self.width, "a ratio in (0, 1]")
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "expansion", float(self.expansion))
        object.__setattr__(self, "overlap", float(self.overlap))
        own_fields = BLOCK_RULES[self.op].fields
        for op_field in OP_FIELDS:
            value = getattr(self, op_field.name)
            if not op_field.well_typed(value):
                _fail(name, op_field.name, value, op_field.allowed_text)
            if op_field in own_fields:
                if not op_field.allowed(value):
                    _fail(name, op_field.name, value, op_field.allowed_text)
            elif value != op_field.unused:
                _fail(name, op_field.name, value, f"{op_field.unused_text} for op {self.op!r} ({op_field.unused_reason})")

    def __str__(self) -> str:
        parts = [self.op, f"k{self.kernel}"]
        for op_field in BLOCK_RULES[self.op].fields:
            token = op_field.token(getattr(self, op_field.name))
            if token is not None:
                parts.append(token)
        parts.append(f"w{_format_number(self.width)}")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form holding only the fields that matter for this op."""
        data: dict[str, Any] = {"op": self.op, "kernel": self.kernel, "width": self.width}
        for op_field in BLOCK_RULES[self.op].fields:
            data[op_field.name] = getattr(self, op_field.name)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlockSpec:
        """Build from :meth:`to_dict` output; unknown keys are refused."""
        _check_keys("BlockSpec", data, {f.name for f in fields(cls)})
        if "op" not in data:
            raise UserError(f"BlockSpec is missing 'op'; allowed: {', '.join(BLOCK_OPERATIONS)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class StageSpec:
    """The active blocks of one stage, in order. Its depth is ``len(blocks)``."""

    blocks: tuple[BlockSpec, ...]

    def __post_init__(self) -> None:
        blocks = tuple(self.blocks)
        if not blocks:
            _fail("StageSpec", "blocks", [], "at least one block")
        for block in blocks:
            if not isinstance(block, BlockSpec):
                _fail("StageSpec", "blocks", block, "BlockSpec instances")
        object.__setattr__(self, "blocks", blocks)

    @property
    def depth(self) -> int:
        """Number of active blocks."""
        return len(self.blocks)

    def __str__(self) -> str:
        return "+".join(str(block) for block in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {"blocks": [block.to_dict() for block in self.blocks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageSpec:
        """Build from :meth:`to_dict` output."""
        _check_keys("StageSpec", data, {"blocks"})
        blocks = data.get("blocks")
        if not isinstance(blocks, list):
            raise UserError(f"StageSpec.blocks={blocks!r} is invalid; allowed: a list of blocks")
        return cls(tuple(BlockSpec.from_dict(_as_mapping("BlockSpec", block)) for block in blocks))


#: Optuna parameter name of each :class:`DetectorSpec` field (``head_width`` would clash
#: with the classifier head's parameter).
DETECTOR_PARAMETERS: dict[str, str] = {
    "neck_width": "neck_width",
    "neck_depth": "neck_depth",
    "head_width": "det_head_width",
    "head_depth": "det_head_depth",
}


@dataclass(frozen=True)
class DetectorSpec:
    """The neck and head choices of a detector (``detect`` space).

    Attributes:
        neck_width: width ratio of the neck (FPN-lite) channels, in (0, 1].
        neck_depth: extra depthwise-separable blocks per pyramid level after the
            top-down fusion (0 or more).
        head_width: width ratio of the FCOS head towers, in (0, 1].
        head_depth: depthwise-separable layers in each head tower (1 or more).
    """

    neck_width: float
    neck_depth: int
    head_width: float
    head_depth: int

    def __post_init__(self) -> None:
        name = "DetectorSpec"
        for ratio in ("neck_width", "head_width"):
            value = getattr(self, ratio)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                _fail(name, ratio, value, "a ratio in (0, 1]")
            object.__setattr__(self, ratio, float(value))
        for depth, minimum, allowed in (("neck_depth", 0, "an integer >= 0"), ("head_depth", 1, "an integer >= 1")):
            value = getattr(self, depth)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                _fail(name, depth, value, allowed)

    def __str__(self) -> str:
        return (
            f"neck{_format_number(self.neck_width)}x{self.neck_depth}"
            f"|dethead{_format_number(self.head_width)}x{self.head_depth}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {
            "neck_width": self.neck_width,
            "neck_depth": self.neck_depth,
            "head_width": self.head_width,
            "head_depth": self.head_depth,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorSpec:
        """Build from :meth:`to_dict` output; unknown or missing keys are refused."""
        allowed = {f.name for f in fields(cls)}
        _check_keys("DetectorSpec", data, allowed)
        missing = sorted(allowed - set(data))
        if missing:
            raise UserError(f"DetectorSpec is missing {', '.join(missing)}; needed: {', '.join(sorted(allowed))}")
        return cls(**dict(data))


@dataclass(frozen=True)
class ArchSpec:
    """A complete architecture: which space it belongs to and every choice taken in it.

    Attributes:
        space: registered name of the search space (``nas-search spaces`` lists them).
        stages: one :class:`StageSpec` per stage of the space.
        stem_width: width ratio of the stem convolution.
        head_width: width ratio of the last 1x1 convolution before the classifier.
        channel_divisor: every channel count is rounded to a multiple of this (8 by
            default; a multiple of 8, so that SCC channel groups always divide it).
            FLOPs alone do not predict latency: many devices run multiples of 8 or 16
            much faster than odd widths.
        detector: neck and head choices of a detector; ``None`` for a classifier (then
            the spec's dict, JSON, YAML and string forms carry no detector entry at all).
    """

    space: str
    stages: tuple[StageSpec, ...]
    stem_width: float = 1.0
    head_width: float = 1.0
    channel_divisor: int = 8
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    detector: DetectorSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.space, str) or not self.space:
            _fail("ArchSpec", "space", self.space, "a registered space name")
        stages = tuple(self.stages)
        if not stages:
            _fail("ArchSpec", "stages", [], "at least one stage")
        for stage in stages:
            if not isinstance(stage, StageSpec):
                _fail("ArchSpec", "stages", stage, "StageSpec instances")
        object.__setattr__(self, "stages", stages)
        for name in ("stem_width", "head_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                _fail("ArchSpec", name, value, "a ratio in (0, 1]")
            object.__setattr__(self, name, float(value))
        divisor = self.channel_divisor
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor <= 0 or divisor % 8:
            _fail("ArchSpec", "channel_divisor", divisor, "a positive multiple of 8 (8, 16, 32, ...)")
        if self.detector is not None and not isinstance(self.detector, DetectorSpec):
            _fail("ArchSpec", "detector", self.detector, "a DetectorSpec or None")

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        """All active blocks, in network order."""
        return tuple(block for stage in self.stages for block in stage.blocks)

    def __str__(self) -> str:
        stages = "|".join(str(stage) for stage in self.stages)
        divisor = "" if self.channel_divisor == 8 else f"|div{self.channel_divisor}"
        detector = "" if self.detector is None else f"|{self.detector}"
        return (
            f"{self.space}:stem{_format_number(self.stem_width)}|{stages}"
            f"|head{_format_number(self.head_width)}{detector}{divisor}"
        )

    def brief(self) -> str:
        """A short form that fits a terminal row: depth per stage, the op mix, the kernel
        range and the mean width, e.g. ``depths 1-2-3-3 | 5 mbconv 3 dsc 1 scc | k3-5 |
        width 0.72`` (a detector adds its neck and head). The full form is ``str(spec)``."""
        blocks = self.blocks
        counts: dict[str, int] = {}
        for block in blocks:
            counts[block.op] = counts.get(block.op, 0) + 1
        mix = " ".join(f"{count} {op}" for op, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        kernels = sorted({block.kernel for block in blocks})
        kernel_range = f"k{kernels[0]}" if len(kernels) == 1 else f"k{kernels[0]}-{kernels[-1]}"
        mean_width = sum(block.width for block in blocks) / len(blocks)
        depths = "-".join(str(stage.depth) for stage in self.stages)
        text = f"depths {depths} | {mix} | {kernel_range} | width {mean_width:.2f}"
        if self.detector is not None:
            detector = self.detector
            text += f" | neck {detector.neck_width:g}x{detector.neck_depth} head {detector.head_width:g}x{detector.head_depth}"
        return text

    @property
    def key(self) -> str:
        """Stable identity of the architecture (the string view), for caches and tables."""
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, safe for JSON and YAML."""
        data = {
            "format_version": SPEC_FORMAT_VERSION,
            "space": self.space,
            "stem_width": self.stem_width,
            "head_width": self.head_width,
            "channel_divisor": self.channel_divisor,
            "stages": [stage.to_dict() for stage in self.stages],
        }
        if self.detector is not None:
            data["detector"] = self.detector.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        """Build from :meth:`to_dict` output, refusing unknown keys and versions."""
        data = _as_mapping("ArchSpec", data)
        _check_keys(
            "ArchSpec", data, {"format_version", "space", "stem_width", "head_width", "channel_divisor", "stages", "detector"}
        )
        version = data.get("format_version", SPEC_FORMAT_VERSION)
        if version != SPEC_FORMAT_VERSION:
            raise UserError(f"ArchSpec.format_version={version!r} is not supported; allowed: {SPEC_FORMAT_VERSION}")
        if "space" not in data or "stages" not in data:
            raise UserError("ArchSpec needs 'space' and 'stages'")
        stages = data["stages"]
        if not isinstance(stages, list):
            raise UserError(f"ArchSpec.stages={stages!r} is invalid; allowed: a list of stages")
        return cls(
            space=data["space"],
            stages=tuple(StageSpec.from_dict(_as_mapping("StageSpec", stage)) for stage in stages),
            stem_width=data.get("stem_width", 1.0),
            head_width=data.get("head_width", 1.0),
            channel_divisor=data.get("channel_divisor", 8),
            detector=None
            if data.get("detector") is None
            else DetectorSpec.from_dict(_as_mapping("DetectorSpec", data["detector"])),
        )

    def to_json(self) -> str:
        """Compact JSON text."""
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"architecture JSON is malformed: {error}") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        """Block-style YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ArchSpec:
        """Parse YAML (``yaml.safe_load``)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            first_line = str(error).splitlines()[0] if str(error) else "parse error"
            raise UserError(f"architecture YAML is malformed: {first_line}") from None
        return cls.from_dict(data)


def _as_mapping(owner: str, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise UserError(f"{owner} must be a mapping of field names to values, got {type(data).__name__}")
    return data


def _check_keys(owner: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{owner} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def load_arch(path: str | Path) -> ArchSpec:
    """Read an architecture file (``.json``, ``.yaml`` or ``.yml``; also an exported meta
    or train config holding an ``arch`` entry)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"architecture file {missing_file(path)}: {path} (expected a .yaml or .json ArchSpec)")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is a subset of YAML
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UserError(
            f"architecture file {path} is not valid YAML or JSON (expected a .yaml or .json ArchSpec, "
            "such as an export's arch.yaml)"
        ) from None
    except OSError as error:
        raise UserError(f"architecture file {path} cannot be read: {error.strerror or error}") from None
    if isinstance(data, Mapping) and "arch" in data and "stages" not in data:
        data = data["arch"]
    try:
        return ArchSpec.from_dict(_as_mapping("ArchSpec", data))
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def save_arch(spec: ArchSpec, path: str | Path) -> Path:
    """Write a spec atomically, as YAML or JSON by the file suffix."""
    from nas_search.utils import atomic_write_text

    path = Path(path)
    text = spec.to_json() + "\n" if path.suffix == ".json" else spec.to_yaml()
    atomic_write_text(path, text)
    return path


__all__ = [
    "ArchSpec",
    "BlockSpec",
    "DetectorSpec",
    "StageSpec",
    "BLOCK_OPERATIONS",
    "BLOCK_RULES",
    "BlockRules",
    "OpField",
    "OP_FIELDS",
    "extra_block_rules",
    "KERNEL_SIZES",
    "SCC_GROUPS",
    "SCC_OVERLAPS",
    "load_arch",
    "save_arch",
]

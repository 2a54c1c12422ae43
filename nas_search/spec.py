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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas_search.errors import UserError, missing_file

SPEC_FORMAT_VERSION = 1

#: Block operation names and what each means.
BLOCK_OPERATIONS: dict[str, str] = {
    "mbconv": "inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, optional squeeze-excite",
    "dsc": "depthwise-separable: depthwise kxk -> pointwise 1x1",
    "scc": "depthwise kxk -> sliding-channel pointwise (DSXplore), cg channel groups, co overlap",
    "slim": "Slim-CNN slim module: two SSE blocks with a projected skip, then a depthwise-separable conv",
}
KERNEL_SIZES = (3, 5, 7)
SCC_GROUPS = (2, 4, 8)
SCC_OVERLAPS = (0.25, 0.33, 0.5)


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
        if self.op == "mbconv":
            if not 1 <= self.expansion <= 8:
                _fail(name, "expansion", self.expansion, "1 to 8 for mbconv")
        elif self.expansion != 1:
            _fail(name, "expansion", self.expansion, f"1 for op {self.op!r} (only mbconv expands)")
        if self.op == "scc":
            if self.groups not in SCC_GROUPS:
                _fail(name, "groups", self.groups, ", ".join(map(str, SCC_GROUPS)))
            if self.overlap not in SCC_OVERLAPS:
                _fail(name, "overlap", self.overlap, ", ".join(map(str, SCC_OVERLAPS)))
        else:
            if self.groups != 1:
                _fail(name, "groups", self.groups, f"1 for op {self.op!r} (only scc has channel groups)")
            if self.overlap != 0:
                _fail(name, "overlap", self.overlap, f"0 for op {self.op!r} (only scc has overlap)")
        if not isinstance(self.squeeze_excite, bool):
            _fail(name, "squeeze_excite", self.squeeze_excite, "true or false")
        if self.squeeze_excite and self.op != "mbconv":
            _fail(name, "squeeze_excite", self.squeeze_excite, f"false for op {self.op!r} (only mbconv)")

    def __str__(self) -> str:
        parts = [self.op, f"k{self.kernel}"]
        if self.op == "mbconv":
            parts.append(f"e{_format_number(self.expansion)}")
        if self.op == "scc":
            parts += [f"g{self.groups}", f"o{_format_number(self.overlap)}"]
        if self.squeeze_excite:
            parts.append("se")
        parts.append(f"w{_format_number(self.width)}")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form holding only the fields that matter for this op."""
        data: dict[str, Any] = {"op": self.op, "kernel": self.kernel, "width": self.width}
        if self.op == "mbconv":
            data["expansion"] = self.expansion
            data["squeeze_excite"] = self.squeeze_excite
        if self.op == "scc":
            data["groups"] = self.groups
            data["overlap"] = self.overlap
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BlockSpec":
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
    def from_dict(cls, data: Mapping[str, Any]) -> "StageSpec":
        """Build from :meth:`to_dict` output."""
        _check_keys("StageSpec", data, {"blocks"})
        blocks = data.get("blocks")
        if not isinstance(blocks, list):
            raise UserError(f"StageSpec.blocks={blocks!r} is invalid; allowed: a list of blocks")
        return cls(tuple(BlockSpec.from_dict(_as_mapping("BlockSpec", block)) for block in blocks))


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
    def from_dict(cls, data: Mapping[str, Any]) -> "DetectorSpec":
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
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchSpec":
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
            detector=None if data.get("detector") is None
            else DetectorSpec.from_dict(_as_mapping("DetectorSpec", data["detector"])),
        )

    def to_json(self) -> str:
        """Compact JSON text."""
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
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
    def from_yaml(cls, text: str) -> "ArchSpec":
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
        raise UserError(f"architecture file {path} is not valid YAML or JSON (expected a .yaml or .json ArchSpec, "
                        "such as an export's arch.yaml)") from None
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
    "KERNEL_SIZES",
    "SCC_GROUPS",
    "SCC_OVERLAPS",
    "load_arch",
    "save_arch",
]

"""Parsing of budget strings: FLOPs, latency, memory.

FLOPs follow fvcore's convention: one multiply-add counts as one FLOP, so FLOPs and MACs
are the same quantity and ``4.5GFLOPs`` equals ``4.5GMACs``.
"""

from __future__ import annotations

import re

from nas_search.errors import UserError

_PREFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_FLOPS_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]?)\s*(FLOPS|MACS)?\s*$", re.IGNORECASE)
FLOPS_FORMS = "4.5GFLOPs, 4.5G, 450MFLOPs, 4.5GMACs or 4500000000 (1 multiply-add = 1 FLOP)"

_LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_LATENCY_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(us|ms|s)?\s*$", re.IGNORECASE)
LATENCY_FORMS = "15ms, 15 (milliseconds), 800us or 0.02s"

_MEMORY_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_MEMORY_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMG]?I?B)?\s*$", re.IGNORECASE)
MEMORY_FORMS = "20MB, 20MiB, 512KB or 20000000 (bytes)"

#: The input sizes (square side, pixels) nas-search accepts anywhere.
INPUT_SIZE_RANGE = (8, 4096)
INPUT_SIZE_FORMS = f"{INPUT_SIZE_RANGE[0]} to {INPUT_SIZE_RANGE[1]} pixels"


def valid_input_size(value: int | None) -> bool:
    """Whether ``value`` is an accepted input size (``None`` is not)."""
    return value is not None and not isinstance(value, bool) and INPUT_SIZE_RANGE[0] <= value <= INPUT_SIZE_RANGE[1]


def check_input_size(value: int | None, name: str = "--input-size") -> int | None:
    """``value`` unchanged when it is ``None`` or an accepted input size; otherwise a
    :class:`UserError` naming ``name`` and the accepted range. The one place the rule lives.

    >>> check_input_size(224)
    224
    """
    if value is not None and not valid_input_size(value):
        raise UserError(f"{name} {value} is out of range; accepted: {INPUT_SIZE_FORMS}")
    return value


def parse_flops(text: str | int | float) -> int:
    """A FLOPs budget as an integer number of FLOPs (= MACs).

    >>> parse_flops("4.5GFLOPs") == parse_flops("4.5G") == parse_flops("4.5GMACs") == 4_500_000_000
    True
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _FLOPS_PATTERN.match(str(text))
        if not match:
            raise UserError(f"bad FLOPs budget {text!r}; accepted forms: {FLOPS_FORMS}")
        value = float(match.group(1)) * _PREFIXES[match.group(2).upper()]
    if value <= 0:
        raise UserError(f"bad FLOPs budget {text!r}: must be positive; accepted forms: {FLOPS_FORMS}")
    return int(round(value))


def parse_latency_ms(text: str | int | float) -> float:
    """A latency budget in milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _LATENCY_PATTERN.match(str(text))
        if not match:
            raise UserError(f"bad latency {text!r}; accepted forms: {LATENCY_FORMS}")
        value = float(match.group(1)) * _LATENCY_UNITS[(match.group(2) or "ms").lower()]
    if value <= 0:
        raise UserError(f"bad latency {text!r}: must be positive; accepted forms: {LATENCY_FORMS}")
    return value


def parse_memory_bytes(text: str | int | float) -> int:
    """A memory budget in bytes (MB = 10^6 bytes, MiB = 2^20)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _MEMORY_PATTERN.match(str(text))
        if not match:
            raise UserError(f"bad memory budget {text!r}; accepted forms: {MEMORY_FORMS}")
        value = float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "B").upper()]
    if value <= 0:
        raise UserError(f"bad memory budget {text!r}: must be positive; accepted forms: {MEMORY_FORMS}")
    return int(round(value))


def format_flops(flops: float) -> str:
    """Human form: 4.50 GFLOPs, 123.4 MFLOPs."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(flops) >= scale:
            return f"{flops / scale:.2f} {prefix}FLOPs" if prefix == "G" else f"{flops / scale:.1f} {prefix}FLOPs"
    return f"{flops:.0f} FLOPs"


def format_duration(seconds: float) -> str:
    """Human form of a wall time: 45 s, 4 min 12 s, 1 h 05 min."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def format_count(count: float) -> str:
    """Human form of a parameter count: 3.51M."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f}{prefix}"
    return f"{count:.0f}"


def format_bytes(count: float) -> str:
    """Human form of a byte count in decimal units (as budgets read them): 12.3 MB."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {prefix}B"
    return f"{count:.0f} B"

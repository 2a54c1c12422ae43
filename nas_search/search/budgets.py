"""A search's budgets, typed: the FLOPs, parameter, latency and memory limits and the
minimum utilisation, and the Optuna constraints they become.

Each constraint keeps the name it always had (``flops``, ``flops_utilization``,
``params``, ``latency``, ``latency_utilization``, ``memory``): studies store them under
those names and compare them on a rerun. Code that needs a limit reads it from
:class:`Budgets`, never by looking a constraint up by its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nas_search.errors import UserError

PARAMS_FORMS = "5M, 5Mparams, 500K or 5000000"
_PARAMS_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMG]?)\s*(params)?\s*$", re.IGNORECASE)
_COUNT_PREFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_params_budget(text: str) -> int:
    """A parameter budget such as ``5M`` as a whole number of parameters."""
    match = _PARAMS_PATTERN.match(str(text))
    value = float(match.group(1)) * _COUNT_PREFIXES[match.group(2).upper()] if match else 0.0
    if value < 1:
        raise UserError(f"bad parameter budget {text!r}; accepted forms: {PARAMS_FORMS}")
    return int(round(value))


@dataclass(frozen=True)
class Constraint:
    """A bound on a cost: ``value <= limit`` (upper) or ``value >= limit`` (lower).

    Its Optuna constraint value is the relative violation, ``<= 0`` when satisfied.
    """

    name: str
    cost: str
    limit: float
    lower: bool = False

    def violation(self, value: float) -> float:
        """Relative violation (``<= 0`` means satisfied)."""
        return (self.limit - value) / self.limit if self.lower else (value - self.limit) / self.limit


@dataclass(frozen=True)
class Budgets:
    """The limits a search's candidates must meet (None: no such budget).

    Attributes:
        flops: FLOPs at the deployment size (1 multiply-add = 1 FLOP).
        params: parameter count.
        latency_ms: latency on the study's device, in milliseconds.
        memory_bytes: peak activation memory, in bytes.
        min_utilization: the fraction of the binding budget a candidate must use (a lower
            bound): of the latency budget when there is one, else of the FLOPs budget.
        flops_binding: whether the FLOPs budget is below the largest subnet (above it, no
            candidate can exceed it, and no lower bound is derived from it).
    """

    flops: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    memory_bytes: int | None = None
    min_utilization: float = 0.0
    flops_binding: bool = False

    @property
    def flops_floor(self) -> float | None:
        """The lower FLOPs bound (``min_utilization`` of a binding FLOPs budget), or None:
        with a latency budget the search is pushed to that one instead."""
        if self.flops is None or not self.flops_binding or self.min_utilization <= 0 or self.latency_ms is not None:
            return None
        return self.min_utilization * self.flops

    @property
    def latency_floor(self) -> float | None:
        """The lower latency bound (``min_utilization`` of the latency budget), or None."""
        if self.latency_ms is None or self.min_utilization <= 0:
            return None
        return self.min_utilization * self.latency_ms

    def constraints(self) -> list[Constraint]:
        """The Optuna constraints, in the order studies store them."""
        table: list[tuple[str, str, float | None, bool]] = [
            ("flops", "flops", None if self.flops is None else float(self.flops), False),
            ("flops_utilization", "flops", self.flops_floor, True),
            ("params", "params", None if self.params is None else float(self.params), False),
            ("latency", "latency", self.latency_ms, False),
            ("latency_utilization", "latency", self.latency_floor, True),
            ("memory", "peak_memory", None if self.memory_bytes is None else float(self.memory_bytes), False),
        ]
        return [Constraint(name, cost, limit, lower=lower) for name, cost, limit, lower in table if limit is not None]

    def device_limits(self) -> dict[str, float]:
        """Upper limits on device costs (``latency``, ``peak_memory``), by cost name."""
        limits = {"latency": self.latency_ms, "peak_memory": None if self.memory_bytes is None else float(self.memory_bytes)}
        return {cost: limit for cost, limit in limits.items() if limit is not None}

    def device_floors(self) -> dict[str, float]:
        """Lower limits on device costs, by cost name."""
        return {} if self.latency_floor is None else {"latency": self.latency_floor}


__all__ = ["PARAMS_FORMS", "Budgets", "Constraint", "parse_params_budget"]

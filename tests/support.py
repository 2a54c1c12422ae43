"""Shared helpers for the test suite.

CI sets ``NAS_SEARCH_REQUIRE_ALL=1``: then anything that would be skipped because a
dependency, a data folder or a system service is missing fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NAS_SEARCH_SHARED_DATA", REPOSITORY_ROOT.parent / "shared" / "data"))


def strict_mode() -> bool:
    """True when a missing requirement must fail the test rather than skip it."""
    return os.environ.get("NAS_SEARCH_REQUIRE_ALL", "") not in ("", "0")


def skip_or_fail(reason: str) -> None:
    """Skip the current test, or fail it under ``NAS_SEARCH_REQUIRE_ALL=1``."""
    if strict_mode():
        pytest.fail(f"required for CI but missing: {reason}")
    pytest.skip(reason)


def shared_data_path(*parts: str) -> Path:
    """Path under ../shared/data, skipping (or failing in CI) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        skip_or_fail(f"shared data not found: {path}")
    return path

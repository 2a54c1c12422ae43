"""Progress bars (tqdm) with rate and ETA; silent where disabled (other ranks, --quiet)."""

from __future__ import annotations

import sys
from typing import Any


class _SilentBar:
    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, description: str, unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar on stderr showing count, rate (``unit``/s) and ETA."""
    if not enabled:
        return _SilentBar()
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
        smoothing=0.1,
    )

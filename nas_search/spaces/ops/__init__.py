"""The op table: one :class:`~nas_search.spaces.ops.base.BlockKind` per block op.

:data:`BLOCK_KINDS` maps each op's name to its kind, in the order of
:data:`nas_search.spec.BLOCK_RULES`; every module that depends on a block's op (the space,
the supernet, the FLOPs, memory and analytic-device models, the latency parts, the Optuna
parameters) dispatches through it. A new op is one module here defining its kind plus one
row in this table (and its spec-level row in ``nas_search.spec``); a test can try an op
for the duration of a ``with`` block through :func:`extra_block_kind`, and nothing
registers anything at import time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar, cast

from nas_search.errors import UserError
from nas_search.spaces.ops.base import BlockChoice, BlockKind, ChannelOrder
from nas_search.spaces.ops.dsc import DSC
from nas_search.spaces.ops.mbconv import MBCONV
from nas_search.spaces.ops.scc import SCC
from nas_search.spaces.ops.slim import SLIM
from nas_search.spec import extra_block_rules

#: Every block op, by name.
BLOCK_KINDS: dict[str, BlockKind] = {kind.name: kind for kind in (MBCONV, DSC, SCC, SLIM)}


def block_kind(name: str) -> BlockKind:
    """The kind of op ``name``; an unknown name raises :class:`UserError` listing the ops."""
    try:
        return BLOCK_KINDS[name]
    except KeyError:
        raise UserError(f"block op {name!r} is unknown; allowed: {', '.join(BLOCK_KINDS)}") from None


@contextmanager
def extra_block_kind(kind: BlockKind) -> Iterator[BlockKind]:
    """Add ``kind`` to the op table (and its rules to ``BlockSpec``'s) inside the ``with``
    block only: how a test runs a new op through every model without editing the table."""
    if kind.name in BLOCK_KINDS:
        raise ValueError(f"block op {kind.name!r} already exists")
    with extra_block_rules(kind.rules):
        BLOCK_KINDS[kind.name] = kind
        try:
            yield kind
        finally:
            del BLOCK_KINDS[kind.name]


Value = TypeVar("Value")


class KindTable(Mapping[str, Value], Generic[Value]):
    """A live read-only view ``op name -> one attribute of its kind`` (the old per-op
    tables, such as ``STATIC_BLOCKS`` and ``BLOCK_COSTS``, kept for their users)."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __getitem__(self, name: str) -> Value:
        return cast(Value, getattr(BLOCK_KINDS[name], self.attribute))

    def __iter__(self) -> Iterator[str]:
        return iter(BLOCK_KINDS)

    def __len__(self) -> int:
        return len(BLOCK_KINDS)

    def __repr__(self) -> str:
        return f"KindTable({self.attribute!r}: {', '.join(BLOCK_KINDS)})"


__all__ = ["BLOCK_KINDS", "BlockChoice", "BlockKind", "ChannelOrder", "KindTable", "block_kind", "extra_block_kind"]

"""Internal: what the codecs' ``read_header`` share (a module of its own, so that the codec
modules need not import the package that imports them).

Where it sits: layer L4 (services, durability), under the codecs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

from ..state import CorruptStateError

__all__ = ["SMALL_STATE", "StateHeader", "read_head"]


class StateHeader(NamedTuple):
    """What the head of an encoded state tells without decoding it (``read_header``):
    enough to list a run.  ``num_nodes`` is ``None`` when not cheap to tell (JSON)."""

    format_version: int
    workflow: str
    run_id: str
    run_status: str
    started_at: float
    updated_at: float
    num_nodes: int | None


SMALL_STATE = 65536
"""An encoded state of at most this many bytes is read whole by the codecs' ``read_header``
(and by the database stores' ``list_runs``), which then checks its CRC32 too."""

T = TypeVar("T")


def read_head(read: Callable[[int], bytes], size: int, check_whole: Callable[[bytes], object],
              parse: Callable[[bytes], T]) -> T:
    """Internal (the codecs' ``read_header``): ``parse`` of the first :data:`SMALL_STATE` bytes
    ``read(n)`` gives of a state of ``size`` bytes (``check_whole`` of them first when they
    are the whole state); while ``parse`` raises :class:`CorruptStateError` and the state has
    more bytes (a long name), of 16 times as many."""
    want = SMALL_STATE
    while True:
        head = read(min(size, want))
        if len(head) == size <= SMALL_STATE:
            check_whole(head)  # the whole state was read: its CRC32 costs nothing more
        try:
            return parse(head)
        except CorruptStateError:
            if len(head) >= size:
                raise
            want *= 16

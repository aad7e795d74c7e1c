"""In-order acknowledgement for a consumer that runs several calls at once.

Calls finish in any order, but a partition's committed offset may only move past a record when
every earlier record of that partition has finished: otherwise a crash loses the unfinished
ones. Faust's own commit logic does not guarantee this for out-of-order acks (it can commit
past a gap at the head of a partition), so workers ack records to Faust only through this.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "InOrderAcks",
    "Item",
]

Item = TypeVar("Item")


@dataclass
class _Partition(Generic[Item]):
    # Offsets in the order they were started (the consumer's order, so ascending), with the
    # item and whether it is finished.
    started: dict[int, tuple[Item, bool]] = field(default_factory=dict)


class InOrderAcks(Generic[Item]):
    """Tracks started records per partition; ``finish`` returns those now safe to ack."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, _Partition[Item]] = {}

    def start(self, partition: Hashable, offset: int, item: Item) -> None:
        slot = self._partitions.setdefault(partition, _Partition())
        if slot.started and offset <= max(slot.started):
            # The consumer sought back (a rebalance kept the partition): those records are being
            # delivered again, so only the earlier ones still hold the partition back.
            slot.started = {o: v for o, v in slot.started.items() if o < offset}
        slot.started[offset] = (item, False)

    def finish(self, partition: Hashable, offset: int) -> list[Item]:
        """Mark one record finished; returns the items of the finished run at the head of the
        partition, in offset order (empty when an earlier record is still running)."""
        slot = self._partitions.get(partition)
        if slot is None or offset not in slot.started:
            return []
        item, _ = slot.started[offset]
        slot.started[offset] = (item, True)
        ready: list[Item] = []
        for head in list(slot.started):  # dicts keep insertion order: ascending offsets
            head_item, done = slot.started[head]
            if not done:
                break
            ready.append(head_item)
            del slot.started[head]
        return ready

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop revoked partitions: their records go to the new owner, acked or not."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def in_flight(self) -> int:
        return sum(
            1 for slot in self._partitions.values() for _, done in slot.started.values() if not done
        )

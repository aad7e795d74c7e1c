"""Offsets are released for commit only in order, whatever order calls finish in."""

from __future__ import annotations

from agentstream.processors.workers.offsets import InOrderAcks


def test_a_later_call_finishing_first_waits_for_the_earlier_one() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    for offset in (10, 11, 12):
        acks.start("tp0", offset, f"r{offset}")
    assert acks.finish("tp0", 12) == []
    assert acks.finish("tp0", 11) == []
    assert acks.in_flight() == 1
    assert acks.finish("tp0", 10) == ["r10", "r11", "r12"]
    assert acks.in_flight() == 0


def test_partitions_are_independent() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    acks.start("a", 0, "a0")
    acks.start("b", 5, "b5")
    assert acks.finish("b", 5) == ["b5"]
    acks.start("a", 1, "a1")
    assert acks.finish("a", 1) == []
    assert acks.finish("a", 0) == ["a0", "a1"]


def test_gaps_in_offsets_do_not_block() -> None:
    # transaction markers and compaction leave offsets that are never delivered
    acks: InOrderAcks[int] = InOrderAcks()
    acks.start("tp", 3, 3)
    acks.start("tp", 7, 7)
    assert acks.finish("tp", 3) == [3]
    assert acks.finish("tp", 7) == [7]


def test_revoked_partitions_are_forgotten() -> None:
    acks: InOrderAcks[int] = InOrderAcks()
    acks.start("tp", 1, 1)
    acks.start("tp", 2, 2)
    acks.forget(["tp"])
    assert acks.finish("tp", 2) == []
    assert acks.in_flight() == 0


def test_a_seek_back_restarts_tracking_from_the_redelivered_offset() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    for offset in (1, 2, 3):
        acks.start("tp", offset, f"old{offset}")
    acks.start("tp", 2, "new2")  # the consumer sought back to 2
    assert acks.finish("tp", 2) == []  # 1 still runs
    assert acks.finish("tp", 1) == ["old1", "new2"]

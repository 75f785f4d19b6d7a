"""The duplicate-connection rule: both ends reach the same decision on their own."""

from __future__ import annotations

import itertools

from btchat.net.tiebreak import keeper, replaces

SMALL, BIG = b"\x01" * 32, b"\x02" * 32


def test_keeper_is_the_smaller_key() -> None:
    assert keeper(SMALL, BIG) == keeper(BIG, SMALL) == SMALL


def test_the_connection_dialled_by_the_smaller_key_wins() -> None:
    assert replaces(SMALL, BIG, current_dialler=BIG, new_dialler=SMALL)
    assert not replaces(SMALL, BIG, current_dialler=SMALL, new_dialler=BIG)


def test_same_dialler_keeps_the_older_connection() -> None:
    for dialler in (SMALL, BIG):
        assert not replaces(SMALL, BIG, current_dialler=dialler, new_dialler=dialler)


def test_both_ends_agree_whatever_the_arrival_order() -> None:
    # Each side sees the two connections in its own order; both end on the same one.
    for first, second in itertools.permutations((SMALL, BIG)):
        for local, remote in ((SMALL, BIG), (BIG, SMALL)):
            kept = second if replaces(local, remote, first, second) else first
            assert kept == SMALL

"""The duplicate-connection rule: both ends reach the same decision on their own."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from btchat.channels.chatfile import ChatFile
from btchat.channels.service import ChannelConfig, ChannelService
from btchat.channels.store import ChannelStore
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
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


#: (current dialler, current relayed, new dialler, new relayed) -> new replaces current,
#: from either end (local, remote swapped): direct beats relayed whoever dialled.
RELAY_TABLE = [
    (BIG, True, BIG, False, True),
    (BIG, True, SMALL, False, True),
    (SMALL, True, BIG, False, True),  # direct wins even against the smaller key's relay
    (SMALL, True, SMALL, False, True),
    (SMALL, False, BIG, True, False),  # a relayed one never knocks out a direct one
    (SMALL, False, SMALL, True, False),
    (BIG, False, SMALL, True, False),
    (BIG, True, SMALL, True, True),  # between two relayed ones the usual rule holds
    (SMALL, True, BIG, True, False),
    (SMALL, True, SMALL, True, False),
]


@pytest.mark.parametrize(("cur", "cur_relayed", "new", "new_relayed", "expected"), RELAY_TABLE)
def test_direct_beats_relayed_from_both_ends(
    cur: bytes, cur_relayed: bool, new: bytes, new_relayed: bool, expected: bool
) -> None:
    for local, remote in ((SMALL, BIG), (BIG, SMALL)):
        got = replaces(
            local, remote, cur, new, current_relayed=cur_relayed, new_relayed=new_relayed
        )
        assert got is expected


class _Conn:
    """A stand-in for a :class:`LinkConnection`: only ``close`` is reached."""

    def __init__(self) -> None:
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


@pytest.mark.parametrize(
    ("we_are_smaller", "current_ours", "new_ours", "kept"),
    [
        (True, False, True, True),  # we are the keeper and dialled the new one
        (True, True, False, False),  # the keeper's link is already up
        (True, True, True, False),  # a redial of ours: the older stays
        (False, True, False, True),  # the peer is the keeper and dialled the new one
        (False, False, True, False),
        (False, False, False, False),  # a redial of theirs: the older stays
    ],
)
def test_channel_links_follow_the_same_rule(
    tmp_path: Path, we_are_smaller: bool, current_ours: bool, new_ours: bool, kept: bool
) -> None:
    """The channel service decides duplicate links as sessions do (issue 9, item 3)."""
    ids = sorted((Identity.generate() for _ in range(2)), key=lambda i: i.public_key)
    me, peer = (ids[0], ids[1]) if we_are_smaller else (ids[1], ids[0])
    chat = ChatFile.create("tiebreak", now=0.0)
    store = ChannelStore(Store.open(tmp_path / "c.db", None))
    service = ChannelService(chat, me, store, None, ChannelConfig(), on_event=lambda *_: None)
    current = _Conn()
    service.links[peer.public_key] = (current, current_ours)  # type: ignore[assignment]
    assert service._keep(peer.public_key, new_ours) is kept
    assert (current.closed is not None) is kept
    assert (peer.public_key in service.links) is not kept
    store.store.close()

"""A member who floods a channel cannot make the others store, relay or remember without
bound (issue 14 item 4, the per-author part): windows per author, caps per author and
per channel with oldest-first eviction, a bounded and expiring presence table."""

from __future__ import annotations

from pathlib import Path

import pytest

from btchat.channels.chatfile import ChatFile
from btchat.channels.engine import ChannelEngine, Send
from btchat.channels.messages import PRESENCE, TEXT, seal_message
from btchat.channels.quota import AuthorWindows, ChannelQuota
from btchat.channels.store import ChannelStore
from btchat.codec.bencode import decode, encode
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
from btchat.sansio import drain_events

T0 = 1_800_000_000.0


class Channel:
    """One member's engine with two linked members: ``peer`` delivers, ``other`` is
    where relayed copies go (it advertises no links, so everything is relayed to it)."""

    def __init__(self, tmp: Path, quota: ChannelQuota | None = None) -> None:
        self.chat = ChatFile.create("open", now=T0)
        self.store = ChannelStore(Store.open(tmp / "m.db", None))
        self.store.add_channel(self.chat.channel_id, self.chat.to_bytes(), 0)
        self.quota = quota
        self.engine = self.new_engine()
        self.peer, self.other = Identity.generate().public_key, Identity.generate().public_key
        self.engine.link_up(self.peer, "192.0.2.1", T0)
        self.engine.link_up(self.other, "192.0.2.2", T0)
        drain_events(self.engine)
        self.lamport = 0

    def new_engine(self) -> ChannelEngine:
        me = Identity.generate()
        return ChannelEngine(self.chat, me, self.store, listen_port=4000, now=T0, quota=self.quota)

    def wire(self, author: Identity, *, text: str = "hi", presence: bool = False) -> bytes:
        self.lamport += 1
        return seal_message(
            author,
            self.chat.channel_id,
            kind=PRESENCE if presence else TEXT,
            body={b"s": b"online"} if presence else {b"t": text.encode()},
            lamport=self.lamport,
            now=T0,
            generation=0,
            traffic_key=self.chat.keys.traffic_key(0),
        ).encode()

    def deliver(self, wire: bytes, now: float = T0) -> int:
        """Hand ``wire`` over from ``peer``; returns how many copies were relayed on."""
        self.engine.on_payload(self.peer, encode({b"t": b"msg", b"m": wire}), now)
        sends = [e for e in drain_events(self.engine) if isinstance(e, Send)]
        return sum(1 for e in sends if e.member == self.other and decode(e.payload)[b"t"] == b"msg")

    def authors(self) -> list[bytes]:
        return [m.author for m in self.store.recent(self.chat.channel_id, 100_000)]


def test_one_author_flooding_is_cut_at_its_window_and_not_relayed(tmp_path: Path) -> None:
    """With the default limits: before the quota every copy was stored and relayed."""
    ch = Channel(tmp_path)
    limit = ChannelQuota().author_messages
    flooder = Identity.generate()
    relayed = sum(ch.deliver(ch.wire(flooder, text=f"spam {i}")) for i in range(limit + 50))
    assert len(ch.authors()) == limit and relayed == limit
    assert ch.engine.stats["quota_author_messages"] == 50
    honest = Identity.generate()  # someone else still gets through at once
    assert ch.deliver(ch.wire(honest)) == 1 and ch.authors()[-1] == honest.public_key
    # The next window admits the flooder again.
    later = T0 + ChannelQuota().window
    assert ch.deliver(ch.wire(flooder, text="a new window"), now=later) == 1


def test_an_author_window_in_bytes(tmp_path: Path) -> None:
    ch = Channel(tmp_path, ChannelQuota(author_bytes=20_000))
    big = Identity.generate()
    for i in range(10):
        ch.deliver(ch.wire(big, text=f"{i}" + "x" * 4000))
    stored = ch.authors()
    assert 3 <= len(stored) <= 5 and ch.engine.stats["quota_author_bytes"] == 10 - len(stored)


def test_the_author_table_is_bounded() -> None:
    windows = AuthorWindows(ChannelQuota(tracked_authors=100))
    for i in range(1000):
        assert windows.admit(i.to_bytes(32, "big"), 10, presence=False, now=T0 + i) is None
    assert len(windows) == 100


def test_an_author_past_its_stored_cap_loses_its_own_oldest(tmp_path: Path) -> None:
    ch = Channel(tmp_path, ChannelQuota(author_stored=5))
    honest, flooder = Identity.generate(), Identity.generate()
    for _ in range(3):
        ch.deliver(ch.wire(honest))
    texts = [f"flood {i}" for i in range(8)]
    for text in texts:
        ch.deliver(ch.wire(flooder, text=text))
    kept = ch.store.recent(ch.chat.channel_id, 100)
    assert [m.author for m in kept].count(honest.public_key) == 3  # untouched
    assert [m.text for m in kept if m.author == flooder.public_key] == texts[3:]
    assert ch.engine.stats["evicted_author"] == 3


def test_a_full_channel_evicts_the_oldest_arrivals(tmp_path: Path) -> None:
    ch = Channel(tmp_path, ChannelQuota(channel_messages=10))
    people = [Identity.generate() for _ in range(4)]
    order = []
    for i in range(15):
        author = people[i % 4]
        ch.deliver(ch.wire(author, text=f"m{i}"))
        order.append(f"m{i}")
    kept = {m.text for m in ch.store.recent(ch.chat.channel_id, 100)}
    assert kept == set(order[5:])
    assert ch.engine.stats["evicted_channel"] == 5
    assert ch.engine.stored_usage() == ch.store.usage(ch.chat.channel_id)
    assert ch.engine.stored_usage()[0] == 10
    # A restarted engine reads the usage back and keeps enforcing it.
    ch.engine = ch.new_engine()
    assert ch.engine.stored_usage() == ch.store.usage(ch.chat.channel_id)


def test_a_channel_byte_cap(tmp_path: Path) -> None:
    ch = Channel(tmp_path, ChannelQuota(channel_bytes=30_000))
    author = Identity.generate()
    for i in range(20):
        ch.deliver(ch.wire(author, text=f"{i}" + "y" * 3000))
    count, size = ch.store.usage(ch.chat.channel_id)
    assert size <= 30_000 and count < 20 and ch.engine.stats["evicted_channel"] == 20 - count


def test_our_own_posts_count_toward_the_channel_cap(tmp_path: Path) -> None:
    ch = Channel(tmp_path, ChannelQuota(channel_messages=3))
    for i in range(5):
        ch.engine.post(f"mine {i}", T0 + i)
    assert [m.text for m in ch.store.recent(ch.chat.channel_id, 10)] == [
        "mine 2",
        "mine 3",
        "mine 4",
    ]


def test_presence_entries_are_bounded_by_default(tmp_path: Path) -> None:
    """Before the bound, every key that signed a presence message stayed in the table."""
    ch = Channel(tmp_path)
    cap = ChannelQuota().presence_entries
    for i in range(cap + 200):
        ch.deliver(ch.wire(Identity.generate(), presence=True), now=T0 + i * 0.001)
    heard = ch.engine.presence.last_heard
    assert len(heard) == cap and ch.engine.stats["presence_evicted"] == 202  # 200 more, + 2 linked
    assert ch.peer in heard and ch.other in heard  # linked members are never evicted
    assert set(ch.engine.presence.status) <= set(heard)
    assert len(ch.engine.member_view(T0)) <= cap + 1


def test_presence_expires_and_is_rate_limited(tmp_path: Path) -> None:
    ch = Channel(tmp_path, ChannelQuota(author_presence=3, presence_expiry=100.0))
    chatty = Identity.generate()
    relayed = sum(ch.deliver(ch.wire(chatty, presence=True)) for _ in range(10))
    assert relayed == 3 and ch.engine.stats["quota_author_presence"] == 7
    assert chatty.public_key in ch.engine.presence.last_heard
    ch.engine.handle_timer(T0 + 101)  # presence is announced, and old entries expire
    assert chatty.public_key not in ch.engine.presence.last_heard
    assert ch.peer in ch.engine.presence.last_heard  # linked: kept
    assert ch.engine.stats["presence_expired"] == 1


@pytest.mark.parametrize("kind", ["text", "presence"])
def test_refused_messages_do_not_mark_the_author_heard(tmp_path: Path, kind: str) -> None:
    ch = Channel(tmp_path, ChannelQuota(author_messages=0, author_presence=0))
    stranger = Identity.generate()
    ch.deliver(ch.wire(stranger, presence=kind == "presence"))
    assert stranger.public_key not in ch.engine.presence.last_heard


def test_time_going_backwards_starts_a_new_window() -> None:
    windows = AuthorWindows(ChannelQuota(author_messages=1))
    key = b"k" * 32
    assert windows.admit(key, 1, presence=False, now=T0) is None
    assert windows.admit(key, 1, presence=False, now=T0 + 1) == "messages"
    assert windows.admit(key, 1, presence=False, now=T0 - 1) is None

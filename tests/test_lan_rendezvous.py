"""The LAN rendezvous core: contacts find each other by private multicast announcements.

Pure unit tests of :class:`~btchat.discovery.lan_rendezvous.LanRendezvous` driven in
virtual time: what is accepted, what is dropped (and counted), its bounds, epoch edges,
and the published test vector (docs/vectors/lan.json).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import events

from btchat.codec.bencode import encode
from btchat.discovery import lan_rendezvous as lan
from btchat.discovery.lan_rendezvous import (
    MAGIC,
    MAX_DATAGRAM,
    LanPeer,
    LanRendezvous,
    lan_key,
    lan_tag,
    seal_announcement,
)
from btchat.discovery.lsd import LsdAnnouncer, LsdError, build_announce, parse_announce
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.identity.rendezvous import EPOCH_SECONDS, pairwise_secret

GROUP = ("239.192.152.143", 6771)
T0 = 1_800_000_000.0 - 1_800_000_000.0 % EPOCH_SECONDS + 1000.0  # 1000 s into an epoch
A_IP, B_IP = "192.168.1.10", "192.168.1.11"


_NONCES = itertools.count(1)


def counter_rng() -> Callable[[int], bytes]:
    """Reproducible nonces, distinct across every core of a test run."""
    return lambda n: next(_NONCES).to_bytes(n, "big")


class Person:
    def __init__(self, port: int, seed: int | None = None) -> None:
        self.identity = (
            Identity.from_seed(bytes([seed]) * 32) if seed is not None else Identity.generate()
        )
        self.device = DeviceKey.generate()
        self.cert = self.identity.certify(self.device, 1_700_000_000)
        self.core = LanRendezvous(self.identity, self.cert, port, dest=GROUP, rng=counter_rng())

    @property
    def pk(self) -> bytes:
        return self.identity.public_key

    def sent(self, now: float) -> list[bytes]:
        self.core.handle_timer(now)
        out = self.core.datagrams_to_send()
        assert all(dest == GROUP for _, dest in out)
        return [d for d, _ in out]


def pair(now: float = T0) -> tuple[Person, Person]:
    a, b = Person(7001), Person(7002)
    a.core.set_contacts([b.pk], now)
    b.core.set_contacts([a.pk], now)
    return a, b


def test_a_contact_hears_us_and_learns_our_certificate_and_port() -> None:
    a, b = pair()
    [datagram] = a.sent(T0)
    assert datagram.startswith(MAGIC) and len(datagram) <= MAX_DATAGRAM
    b.core.receive_datagram(datagram, (A_IP, 6771), T0 + 0.1)
    assert events(b.core) == [LanPeer(a.pk, (a.cert,), (A_IP, 7001))]
    assert b.core.stats["rx_announcements"] == 1
    # Hearing a contact makes us answer soon (at once: we never announced to it yet).
    assert b.core.get_timer() == pytest.approx(T0 + 0.1)


def test_our_own_datagram_looped_back_and_strangers_pairs_are_unknown_tags() -> None:
    a, b = pair()
    c, _ = pair()
    [mine] = a.sent(T0)
    a.core.receive_datagram(mine, (A_IP, 6771), T0)
    [theirs] = c.sent(T0)
    b.core.receive_datagram(theirs, (A_IP, 6771), T0)
    assert events(a.core) == [] and events(b.core) == []
    assert a.core.stats["rx_unknown_tag"] == 1 and b.core.stats["rx_unknown_tag"] == 1


def test_wrong_key_tampering_and_foreign_datagrams_are_dropped_and_counted() -> None:
    a, b = pair()
    [good] = a.sent(T0)
    head = len(MAGIC) + lan.TAG_SIZE
    secret = pairwise_secret(a.identity, b.pk)
    epoch = int(T0 // EPOCH_SECONDS)
    tag = lan_tag(secret, a.pk, b.pk, epoch)
    wrong = seal_announcement(bytes(32), tag, bytes(24), 7001, [a.cert])
    flipped_body = good[:-1] + bytes([good[-1] ^ 1])
    flipped_nonce = good[: head + 1] + bytes([good[head + 1] ^ 1]) + good[head + 2 :]
    flipped_tag = good[: len(MAGIC)] + bytes([good[len(MAGIC)] ^ 1]) + good[len(MAGIC) + 1 :]
    # The right key but what is inside is not an announcement / not A's certificate.
    key = lan_key(secret, a.pk, b.pk, epoch)
    other = Person(9)
    not_a = seal_announcement(key, tag, bytes(23) + b"\x07", 7001, [other.cert])
    # seal_announcement refuses a bad port, so build a bad plaintext by hand.
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as seal

    nonce = bytes(23) + b"\x08"
    bad_port = MAGIC + tag + nonce + seal(encode({b"c": [a.cert.encode()], b"p": 0}),
                                          MAGIC + tag, nonce, key)  # fmt: skip
    for i, data in enumerate(
        [
            wrong,
            flipped_body,
            flipped_nonce,
            flipped_tag,
            not_a,
            bad_port,
            good[:-20],  # cut short: the MAC fails
            good[:head],  # no room for nonce and MAC
            good + bytes(MAX_DATAGRAM),  # oversize
            b"BT-SEARCH * HTTP/1.1\r\n\r\n",
            build_announce([bytes(20)], 7001, "cookie"),
        ]
    ):
        b.core.receive_datagram(data, (f"192.168.1.{100 + i}", 6771), T0)
    assert events(b.core) == []
    s = b.core.stats
    assert s["rx_bad_auth"] == 4 and s["rx_unknown_tag"] == 1 and s["rx_bad_cert"] == 1
    assert s["rx_malformed"] == 3 and s["rx_foreign"] == 2
    # The real one still works afterwards.
    b.core.receive_datagram(good, (A_IP, 6771), T0)
    assert [p.contact for p in events(b.core)] == [a.pk]


def test_bep14_parsers_drop_ours() -> None:
    a, _ = pair()
    [datagram] = a.sent(T0)
    with pytest.raises(LsdError):
        parse_announce(datagram)
    lsd = LsdAnnouncer(6881)
    lsd.receive_datagram(datagram, (A_IP, 6771), T0)
    assert lsd.stats["rx_malformed"] == 1 and lsd.next_event() is None


def test_a_replayed_datagram_is_opened_once() -> None:
    a, b = pair()
    [datagram] = a.sent(T0)
    b.core.receive_datagram(datagram, (A_IP, 6771), T0)
    b.core.receive_datagram(datagram, ("192.168.1.66", 6771), T0 + 1)  # replayed elsewhere
    assert len(events(b.core)) == 1 and b.core.stats["rx_replay"] == 1


def test_a_source_is_rate_limited_before_any_crypto() -> None:
    a, b = pair()
    [datagram] = a.sent(T0)
    junk = MAGIC + bytes(100)
    for _ in range(int(lan.RX_BURST)):
        b.core.receive_datagram(junk, (A_IP, 6771), T0)
    b.core.receive_datagram(datagram, (A_IP, 6771), T0)
    assert events(b.core) == [] and b.core.stats["rx_rate_limited"] == 1
    b.core.receive_datagram(datagram, (A_IP, 6771), T0 + 1.0)  # the bucket refilled a bit
    assert len(events(b.core)) == 1
    assert b.core.stats["rx_unknown_tag"] == lan.RX_BURST


def test_announcements_per_contact_are_bounded() -> None:
    a, b = pair()
    burst = int(lan.CONTACT_BURST)
    sent = []
    for i in range(burst + 1):
        a.core.announce_now(T0 + i * 10, b.pk)
        sent += a.sent(T0 + i * 10)
    assert len(sent) == burst + 1
    for i, data in enumerate(sent):  # all at once, each from its own source
        b.core.receive_datagram(data, (f"192.168.1.{20 + i}", 6771), T0 + 100)
    assert len(events(b.core)) == burst and b.core.stats["rx_contact_limited"] == 1


def test_candidates_per_source_are_bounded() -> None:
    b = Person(7002)
    many = [Person(7100 + i) for i in range(int(lan.CANDIDATE_BURST) + 1)]
    b.core.set_contacts([p.pk for p in many], T0)
    for p in many:
        p.core.set_contacts([b.pk], T0)
        for data in p.sent(T0):
            b.core.receive_datagram(data, (A_IP, 6771), T0)  # one host claims them all
    assert len(events(b.core)) == lan.CANDIDATE_BURST
    assert b.core.stats["rx_candidates_limited"] == 1


def test_unusable_sources_are_dropped() -> None:
    a, b = pair()
    [datagram] = a.sent(T0)
    b.core.receive_datagram(datagram, ("0.0.0.0", 6771), T0)
    b.core.receive_datagram(datagram, ("239.192.152.143", 6771), T0)
    assert events(b.core) == [] and b.core.stats["rx_bad_source"] == 2


@pytest.mark.parametrize(
    ("into", "skew", "heard"),
    [
        (1000, 0, True),
        (1000, -EPOCH_SECONDS + 1, True),  # the receiver's clock an hour behind
        (1000, EPOCH_SECONDS, True),  # an hour ahead: it still holds the previous epoch
        (1000, 2 * EPOCH_SECONDS, False),  # two hours ahead: too far
        (EPOCH_SECONDS - 60, 2 * EPOCH_SECONDS - 60, True),  # near the end: the next one too
        (EPOCH_SECONDS - 60, -2 * EPOCH_SECONDS, False),
    ],
)
def test_epoch_edges(into: float, skew: float, heard: bool) -> None:
    start = T0 - 1000 + into
    a, b = pair(start)
    datagrams = a.sent(start)
    assert len(datagrams) == (2 if into >= EPOCH_SECONDS - 600 else 1)
    for data in datagrams:
        b.core.receive_datagram(data, (A_IP, 6771), start + skew)
    assert bool(events(b.core)) is heard


def test_the_tag_table_rolls_over_with_the_epoch() -> None:
    a, b = pair()
    assert b.core.get_timer() is not None
    b.sent(T0)  # builds the table for this epoch
    later = T0 + 3 * EPOCH_SECONDS
    a.core.announce_now(later, b.pk)
    [datagram] = a.sent(later)
    b.core.receive_datagram(datagram, (A_IP, 6771), later)
    assert len(events(b.core)) == 1


def test_schedule_interval_minimum_and_contact_changes() -> None:
    a, b = pair()
    assert a.core.get_timer() == T0
    assert len(a.sent(T0)) == 1
    assert a.sent(T0 + 1) == []
    assert a.core.get_timer() == pytest.approx(T0 + lan.ANNOUNCE_INTERVAL)
    a.core.announce_now(T0 + 1)
    assert a.core.get_timer() == pytest.approx(T0 + lan.MIN_ANNOUNCE_INTERVAL)
    assert len(a.sent(T0 + lan.MIN_ANNOUNCE_INTERVAL)) == 1
    # A contact with a session (or removed) is neither announced to nor heard.
    [datagram] = a.sent(T0 + 100)
    b.core.set_contacts([], T0 + 100)
    assert b.core.get_timer() is None and b.sent(T0 + 200) == []
    b.core.receive_datagram(datagram, (A_IP, 6771), T0 + 100)
    assert events(b.core) == [] and b.core.stats["rx_unknown_tag"] == 1
    b.core.set_contacts([a.pk], T0 + 101)  # back: announced at once, heard again
    assert b.core.get_timer() == T0 + 101
    b.core.receive_datagram(datagram, (A_IP, 6771), T0 + 101)
    assert len(events(b.core)) == 1


def test_many_contacts_are_announced_in_paced_bursts() -> None:
    a = Person(7001)
    n = lan.TX_BURST * 2 + 3
    a.core.set_contacts([Identity.generate().public_key for _ in range(n)], T0)
    sizes, now = [], T0
    while (when := a.core.get_timer()) is not None and when < T0 + 10:
        now = when
        sizes.append(len(a.sent(now)))
    assert sizes == [lan.TX_BURST, lan.TX_BURST, 3]
    assert now == pytest.approx(T0 + 2 * lan.TX_PACE)


def test_unusable_contact_keys_are_skipped_and_bad_arguments_refused() -> None:
    a = Person(7001)
    a.core.set_contacts([bytes(32), a.pk], T0)  # a small-order point; ourselves
    assert a.core.contacts == frozenset() and a.core.stats["bad_contact_keys"] == 1
    with pytest.raises(ValueError):
        LanRendezvous(a.identity, a.cert, 0, dest=GROUP)
    with pytest.raises(ValueError):
        LanRendezvous(Identity.generate(), a.cert, 7001, dest=GROUP)
    with pytest.raises(ValueError):
        seal_announcement(bytes(32), bytes(16), bytes(24), 7001, [])


# ------------------------------------------------------------------ the vector

VECTOR = Path(__file__).resolve().parents[1] / "docs" / "vectors" / "lan.json"


def test_published_vector() -> None:
    data = json.loads(VECTOR.read_text())
    for v in data["vectors"]:
        me = Identity.from_seed(bytes.fromhex(v["announcer_seed"]))
        them = Identity.from_seed(bytes.fromhex(v["seeker_seed"]))
        secret = pairwise_secret(me, them.public_key)
        assert secret.hex() == v["secret"]
        assert pairwise_secret(them, me.public_key) == secret
        epoch = v["epoch"]
        tag = lan_tag(secret, me.public_key, them.public_key, epoch)
        key = lan_key(secret, me.public_key, them.public_key, epoch)
        assert (tag.hex(), key.hex()) == (v["tag"], v["key"])
        cert = DeviceCertificate.decode(bytes.fromhex(v["certificate"]))
        datagram = bytes.fromhex(v["datagram"])
        nonce = bytes.fromhex(v["nonce"])
        assert seal_announcement(key, tag, nonce, v["port"], [cert]) == datagram
        assert lan.open_announcement(key, datagram, me.public_key) == (v["port"], [cert])
        # The receiving core, at the vector's time, reports exactly this.
        core = LanRendezvous(them, them.certify(DeviceKey.generate(), 1), 1, dest=GROUP)
        core.set_contacts([me.public_key], v["now"])
        core.receive_datagram(datagram, (A_IP, 6771), v["now"])
        assert events(core) == [LanPeer(me.public_key, (cert,), (A_IP, v["port"]))]

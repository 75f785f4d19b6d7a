"""Bounded peer and item stores: limits, expiry, refresh, BEP 44 seq/cas rules."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from btchat.dht import bep44
from btchat.dht.bep44 import ItemError, MutableItem
from btchat.dht.storage import ItemStore, PeerStore, StoredImmutable


def ih(n: int) -> bytes:
    return n.to_bytes(20, "big")


def peer(n: int) -> tuple[str, int]:
    return (f"10.0.{n // 256}.{n % 256}", 6881)


# --- PeerStore -----------------------------------------------------------------------


def test_peer_add_get() -> None:
    store = PeerStore()
    store.add(ih(1), ("1.2.3.4", 1), 0.0)
    store.add(ih(1), ("1.2.3.5", 2), 0.0)
    assert sorted(store.get(ih(1), 1.0, random.Random(0))) == [("1.2.3.4", 1), ("1.2.3.5", 2)]
    assert store.get(ih(2), 1.0, random.Random(0)) == []
    assert len(store) == 1
    assert store.peer_count() == 2


def test_peers_per_infohash_bounded_oldest_replaced() -> None:
    store = PeerStore(max_peers_per_infohash=10)
    for n in range(25):
        store.add(ih(1), peer(n), float(n))
        assert store.peer_count() <= 10
    got = store.get(ih(1), 30.0, random.Random(0), max_count=100)
    assert sorted(got) == sorted(peer(n) for n in range(15, 25))


def test_infohashes_bounded_least_recently_active_evicted() -> None:
    store = PeerStore(max_infohashes=5, max_peers_per_infohash=3)
    for n in range(5):
        store.add(ih(n), peer(n), float(n))
    store.add(ih(0), peer(99), 10.0)  # ih(0) is active again, so ih(1) is now oldest
    for n in range(5, 20):
        store.add(ih(n), peer(n), 10.0 + n)
        for extra in range(10):
            store.add(ih(n), peer(100 + extra), 10.0 + n)
        assert len(store) <= 5
        assert store.peer_count() <= 5 * 3
    assert store.get(ih(1), 30.0, random.Random(0)) == []
    assert store.peer_count() == sum(
        len(store.get(ih(n), 30.0, random.Random(0))) for n in range(20)
    )


def test_infohash_eviction_prefers_stale_over_refreshed() -> None:
    store = PeerStore(max_infohashes=2)
    store.add(ih(1), peer(1), 0.0)
    store.add(ih(2), peer(2), 1.0)
    store.add(ih(1), peer(1), 2.0)  # re-announce
    store.add(ih(3), peer(3), 3.0)
    rng = random.Random(0)
    assert store.get(ih(1), 4.0, rng) == [peer(1)]
    assert store.get(ih(2), 4.0, rng) == []
    assert store.get(ih(3), 4.0, rng) == [peer(3)]


def test_peer_expiry_and_reannounce_refresh() -> None:
    store = PeerStore(ttl=100.0)
    rng = random.Random(0)
    store.add(ih(1), peer(1), 0.0)
    store.add(ih(1), peer(2), 0.0)
    store.add(ih(1), peer(1), 60.0)  # refresh peer 1 only
    assert store.peer_count() == 2
    assert sorted(store.get(ih(1), 99.0, rng)) == [peer(1), peer(2)]
    assert store.get(ih(1), 100.0, rng) == [peer(1)]
    assert store.peer_count() == 1
    assert store.get(ih(1), 160.0, rng) == []
    assert len(store) == 0
    assert store.peer_count() == 0


def test_peer_expire_drops_empty_infohashes() -> None:
    store = PeerStore(ttl=100.0)
    store.add(ih(1), peer(1), 0.0)
    store.add(ih(2), peer(2), 50.0)
    store.add(ih(2), peer(3), 80.0)
    store.expire(120.0)
    assert len(store) == 1
    assert store.peer_count() == 2
    store.expire(160.0)
    assert store.peer_count() == 1
    store.expire(1000.0)
    assert len(store) == 0
    assert store.peer_count() == 0


def test_get_random_sample_size() -> None:
    store = PeerStore()
    for n in range(200):
        store.add(ih(1), peer(n), 0.0)
    rng = random.Random(42)
    sample = store.get(ih(1), 1.0, rng)
    assert len(sample) == 50
    assert len(set(sample)) == 50
    assert set(sample) <= {peer(n) for n in range(200)}
    assert len(store.get(ih(1), 1.0, rng, max_count=8)) == 8
    assert len(store.get(ih(1), 1.0, rng, max_count=500)) == 200
    # Sampling hands out different peers over time, not always the same 50.
    seen: set[tuple[str, int]] = set()
    for _ in range(20):
        seen.update(store.get(ih(1), 1.0, rng))
    assert len(seen) > 150


# --- ItemStore -----------------------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)


def mutable(seq: int, value: bytes = b"5:hello", salt: bytes = b"") -> MutableItem:
    return bep44.sign_mutable(KEY, value, seq, salt)


def test_immutable_put_get() -> None:
    store = ItemStore()
    target = store.put_immutable(b"12:Hello World!", 0.0)
    assert target.hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"
    assert store.get(target, 1.0) == StoredImmutable(b"12:Hello World!")
    assert store.get(b"\x00" * 20, 1.0) is None


def test_immutable_too_big_rejected() -> None:
    store = ItemStore()
    with pytest.raises(ItemError) as exc:
        store.put_immutable(b"997:" + b"x" * 997, 0.0)
    assert exc.value.code == 205
    assert len(store) == 0


def test_item_expiry_and_refresh() -> None:
    store = ItemStore(ttl=100.0)
    target = store.put_immutable(b"i1e", 0.0)
    item = mutable(1)
    store.put_mutable(item, 0.0)
    store.put_immutable(b"i1e", 50.0)  # refresh immutable
    store.put_mutable(mutable(1), 50.0)  # equal seq refreshes
    assert store.get(target, 149.0) is not None
    assert store.get(item.target, 149.0) == item
    assert store.get(target, 150.0) is None
    store.expire(151.0)
    assert len(store) == 0


def test_item_expire_keeps_live() -> None:
    store = ItemStore(ttl=100.0)
    old = store.put_immutable(b"i1e", 0.0)
    new = store.put_immutable(b"i2e", 60.0)
    store.expire(100.0)
    assert len(store) == 1
    assert store.get(old, 100.0) is None
    assert store.get(new, 100.0) == StoredImmutable(b"i2e")


def test_items_bounded_soonest_expiring_evicted() -> None:
    store = ItemStore(max_items=10)
    targets = [store.put_immutable(b"i%de" % n, float(n)) for n in range(10)]
    store.put_immutable(b"i0e", 20.0)  # refresh item 0: item 1 now expires soonest
    for n in range(10, 40):
        store.put_immutable(b"i%de" % n, float(n + 20))
        assert len(store) <= 10
    assert store.get(targets[1], 60.0) is None
    store2 = ItemStore(max_items=3)
    store2.put_immutable(b"i0e", 0.0)
    store2.put_immutable(b"i1e", 1.0)
    store2.put_immutable(b"i2e", 2.0)
    store2.put_immutable(b"i0e", 3.0)
    store2.put_immutable(b"i3e", 4.0)
    assert store2.get(targets[0], 5.0) is not None
    assert store2.get(targets[1], 5.0) is None


def test_mutable_items_bounded() -> None:
    store = ItemStore(max_items=5)
    for n in range(12):
        store.put_mutable(mutable(1, salt=b"%d" % n), float(n))
        assert len(store) <= 5


def test_mutable_higher_seq_replaces() -> None:
    store = ItemStore()
    store.put_mutable(mutable(1, b"3:one"), 0.0)
    newer = mutable(2, b"3:two")
    store.put_mutable(newer, 1.0)
    assert store.get(newer.target, 2.0) == newer


def test_mutable_lower_seq_rejected_302() -> None:
    store = ItemStore()
    current = mutable(5)
    store.put_mutable(current, 0.0)
    with pytest.raises(ItemError) as exc:
        store.put_mutable(mutable(4), 1.0)
    assert exc.value.code == 302
    assert store.get(current.target, 2.0) == current


def test_mutable_equal_seq_keeps_stored() -> None:
    store = ItemStore(ttl=100.0)
    first = mutable(3, b"5:first")
    store.put_mutable(first, 0.0)
    store.put_mutable(mutable(3, b"6:second"), 90.0)
    assert store.get(first.target, 150.0) == first  # kept, and its expiry refreshed


def test_mutable_cas() -> None:
    store = ItemStore()
    store.put_mutable(mutable(1), 0.0, cas=99)  # no current value: cas ignored
    with pytest.raises(ItemError) as exc:
        store.put_mutable(mutable(2), 1.0, cas=0)
    assert exc.value.code == 301
    assert store.get(mutable(1).target, 1.0) == mutable(1)
    store.put_mutable(mutable(2), 1.0, cas=1)
    assert store.get(mutable(2).target, 1.0) == mutable(2)
    # cas matches but seq is lower: still 302.
    with pytest.raises(ItemError) as exc:
        store.put_mutable(mutable(1), 2.0, cas=2)
    assert exc.value.code == 302


def test_mutable_invalid_rejected() -> None:
    store = ItemStore()
    good = mutable(1)
    forged = MutableItem(good.public_key, good.salt, 2, good.v_bencoded, good.signature)
    with pytest.raises(ItemError) as exc:
        store.put_mutable(forged, 0.0)
    assert exc.value.code == 206
    assert len(store) == 0
    salt = b"s" * 65
    sig = KEY.sign(bep44.signing_buffer(1, b"i1e", salt))
    with pytest.raises(ItemError) as exc:
        store.put_mutable(MutableItem(good.public_key, salt, 1, b"i1e", sig), 0.0)
    assert exc.value.code == 207
    assert len(store) == 0


def test_mutable_after_expiry_accepts_lower_seq() -> None:
    store = ItemStore(ttl=100.0)
    store.put_mutable(mutable(5), 0.0)
    store.put_mutable(mutable(1), 200.0)  # the seq-5 item expired; nothing to compare
    assert store.get(mutable(1).target, 201.0) == mutable(1)


def test_salted_items_are_separate() -> None:
    store = ItemStore()
    a, b = mutable(1, salt=b"a"), mutable(9, salt=b"b")
    store.put_mutable(a, 0.0)
    store.put_mutable(b, 0.0)
    assert store.get(a.target, 1.0) == a
    assert store.get(b.target, 1.0) == b

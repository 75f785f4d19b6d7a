"""The Olm (Double Ratchet) layer of offline delivery: sessions, forward secrecy, storage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import vodozemac

from btchat.codec.bencode import decode
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
from btchat.offline.ratchet import (
    FALLBACK_ROTATION_MS,
    Bundle,
    Ratchet,
    RatchetError,
    decode_prekey_body,
    pickle_key,
)
from btchat.offline.state import MailboxState

NOW_MS = 1_700_000_000_000


@dataclass
class Party:
    identity: Identity
    store: Store
    state: MailboxState
    ratchet: Ratchet

    @property
    def pk(self) -> bytes:
        return self.identity.public_key


def open_party(path: Path, identity: Identity | None = None) -> Party:
    identity = identity or Identity.generate()
    store = Store.open(path, None)
    state = MailboxState(store)
    return Party(identity, store, state, Ratchet(identity, state))


@pytest.fixture
def alice(tmp_path: Path) -> Party:
    return open_party(tmp_path / "alice.db")


@pytest.fixture
def bob(tmp_path: Path) -> Party:
    return open_party(tmp_path / "bob.db")


@pytest.fixture
def carol(tmp_path: Path) -> Party:
    return open_party(tmp_path / "carol.db")


def send(
    me: Party, to: Party, text: bytes, *, olm_key: bytes | None = None, prekey: bytes | None = None
) -> tuple[int, bytes]:
    """Encrypt and commit the new ratchet state with the queued packet, as deposit does."""
    message_type, body, pickles = me.ratchet.encrypt(to.pk, text, olm_key=olm_key, prekey=prekey)
    n = me.state.peer(to.pk).next_out
    me.state.queue_packet(to.pk, n, os.urandom(16), b"packet", NOW_MS, pickles, NOW_MS)
    return message_type, body


def receive(me: Party, frm: Party, message: tuple[int, bytes], *, commit: bool = True) -> bytes:
    """Decrypt and (unless told not to) commit, as Mailbox.offer_packet does."""
    plaintext, pickles = me.ratchet.decrypt(frm.pk, frm.ratchet.olm_key, *message)
    if commit:
        seen = me.state.peer(frm.pk)
        n = max([seen.received, *seen.received_above]) + 1
        assert me.state.receive(frm.pk, n, plaintext, pickles, NOW_MS)
    return plaintext


def start(alice: Party, bob: Party, text: bytes = b"hello") -> tuple[int, bytes]:
    """Alice starts a session from Bob's published bundle; Bob reads the first message."""
    bundle = bob.ratchet.bundle(NOW_MS)
    first = send(alice, bob, text, olm_key=bundle.olm_key, prekey=bundle.pick())
    assert first[0] == 0  # a pre-key message
    assert receive(bob, alice, first) == text
    return first


def refused(me: Party, frm: Party, message: tuple[int, bytes], code: str = "no_session") -> None:
    with pytest.raises(RatchetError) as info:
        me.ratchet.decrypt(frm.pk, frm.ratchet.olm_key, *message)
    assert info.value.code == code


# ---------------------------------------------------------------- starting sessions


def test_session_from_a_handed_one_time_key_both_ways(alice: Party, bob: Party) -> None:
    olm_key, one_time = bob.ratchet.one_time_key()
    assert olm_key == bob.ratchet.olm_key and len(one_time) == 32
    assert not alice.ratchet.has_session(bob.pk)
    first = send(alice, bob, b"hi bob", olm_key=olm_key, prekey=one_time)
    assert alice.ratchet.has_session(bob.pk)
    assert receive(bob, alice, first) == b"hi bob"
    assert bob.ratchet.has_session(alice.pk)
    # Until Alice hears back every message still carries the pre-key header.
    second = send(alice, bob, b"again")
    assert second[0] == 0
    assert receive(bob, alice, second) == b"again"
    reply = send(bob, alice, b"hi alice")
    assert reply[0] == 1
    assert receive(alice, bob, reply) == b"hi alice"
    third = send(alice, bob, b"third")
    assert third[0] == 1
    assert receive(bob, alice, third) == b"third"
    assert len(alice.state.session_pickles(bob.pk)) == 1
    assert len(bob.state.session_pickles(alice.pk)) == 1


def test_the_bundle_carries_only_the_fallback_key(alice: Party, bob: Party) -> None:
    bundle = bob.ratchet.bundle(NOW_MS)
    assert bundle.one_time == () and bundle.fallback is not None
    assert bundle.olm_key == bob.ratchet.olm_key and bundle.pick() == bundle.fallback
    # A bundle of an older version with one-time keys: its fallback key is still chosen.
    older = Bundle(bundle.olm_key, bundle.fallback, (os.urandom(32),) * 8)
    assert older.pick() == bundle.fallback
    assert Bundle(bundle.olm_key, None, (b"k" * 32,)).pick() == b"k" * 32


def test_one_bundle_serves_several_senders_and_a_sender_that_lost_its_database(
    tmp_path: Path, alice: Party, bob: Party, carol: Party
) -> None:
    """The bug one-time keys in a public bundle had: two senders (or one sender starting
    again from the same bundle) pick the same key and the second is undecryptable."""
    bundle = bob.ratchet.bundle(NOW_MS)
    for sender, text in ((alice, b"from alice"), (carol, b"from carol")):
        message = send(sender, bob, text, olm_key=bundle.olm_key, prekey=bundle.pick())
        assert receive(bob, sender, message) == text
    alice_again = open_party(tmp_path / "alice-new.db", alice.identity)
    message = send(
        alice_again, bob, b"after the loss", olm_key=bundle.olm_key, prekey=bundle.pick()
    )
    assert receive(bob, alice_again, message) == b"after the loss"
    assert bob.ratchet.has_session(alice.pk) and bob.ratchet.has_session(carol.pk)


def test_the_fallback_key_rotates_daily_and_the_previous_one_stays_valid(
    alice: Party, bob: Party, carol: Party
) -> None:
    first = bob.ratchet.bundle(NOW_MS)
    bob.ratchet.one_time_key()  # marks everything unpublished as published
    assert bob.ratchet.bundle(NOW_MS + FALLBACK_ROTATION_MS - 1) == first  # republished
    second = bob.ratchet.bundle(NOW_MS + FALLBACK_ROTATION_MS)
    assert second.fallback not in (None, first.fallback)
    message = send(alice, bob, b"previous", olm_key=first.olm_key, prekey=first.fallback)
    assert receive(bob, alice, message) == b"previous"
    third = bob.ratchet.bundle(NOW_MS + 2 * FALLBACK_ROTATION_MS)
    assert len({first.fallback, second.fallback, third.fallback}) == 3
    # Two rotations on, the first key is gone: its forward-secrecy window is closed.
    refused(bob, carol, send(carol, bob, b"too old", olm_key=first.olm_key, prekey=first.fallback))


def test_the_fallback_key_survives_a_restart(tmp_path: Path) -> None:
    bob = open_party(tmp_path / "bob.db")
    first = bob.ratchet.bundle(NOW_MS)
    bob.store.close()
    bob = open_party(tmp_path / "bob.db", bob.identity)
    assert bob.ratchet.bundle(NOW_MS + 1000) == first


def test_encrypt_without_session_or_prekey_is_refused(alice: Party, bob: Party) -> None:
    with pytest.raises(RatchetError) as info:
        alice.ratchet.encrypt(bob.pk, b"x", olm_key=None, prekey=None)
    assert info.value.code == "no_prekey"
    with pytest.raises(RatchetError) as info:
        alice.ratchet.encrypt(bob.pk, b"x", olm_key=bob.ratchet.olm_key, prekey=b"short")
    assert info.value.code == "no_prekey"
    with pytest.raises(RatchetError) as info:
        Bundle(bob.ratchet.olm_key, None, ()).pick()
    assert info.value.code == "no_prekey"
    assert not alice.ratchet.has_session(bob.pk)


# ----------------------------------------------------------------- forward secrecy


def test_a_decrypted_message_cannot_be_decrypted_again(alice: Party, bob: Party) -> None:
    first = start(alice, bob)
    # The message key was used and deleted: the committed state refuses the same bytes.
    refused(bob, alice, first)
    reply = send(bob, alice, b"reply")
    assert receive(alice, bob, reply) == b"reply"
    refused(alice, bob, reply)
    normal = send(alice, bob, b"normal")
    assert normal[0] == 1
    assert receive(bob, alice, normal) == b"normal"
    refused(bob, alice, normal)


def test_old_ciphertexts_fail_after_the_ratchet_advances(alice: Party, bob: Party) -> None:
    first = start(alice, bob, b"captured 1")
    second = send(alice, bob, b"captured 2")
    assert receive(bob, alice, second) == b"captured 2"
    # A reply round trip: both sides step the Diffie-Hellman ratchet.
    assert receive(alice, bob, send(bob, alice, b"reply 1")) == b"reply 1"
    later = send(alice, bob, b"new chain")
    assert receive(bob, alice, later) == b"new chain"
    assert receive(alice, bob, send(bob, alice, b"reply 2")) == b"reply 2"
    for old in (first, second, later):
        refused(bob, alice, old)


def test_uncommitted_decryption_changes_nothing(tmp_path: Path, alice: Party) -> None:
    """State lives only in the database: a crash before the commit loses no message."""
    bob = open_party(tmp_path / "bob2.db")
    first = start(alice, bob)
    message = send(alice, bob, b"read twice")
    assert receive(bob, alice, message, commit=False) == b"read twice"
    assert receive(bob, alice, message, commit=False) == b"read twice"
    bob.store.close()
    bob = open_party(tmp_path / "bob2.db", bob.identity)
    assert receive(bob, alice, message) == b"read twice"
    refused(bob, alice, message)
    refused(bob, alice, first)


def test_out_of_order_within_a_chain(alice: Party, bob: Party) -> None:
    bundle = bob.ratchet.bundle(NOW_MS)
    pre = [send(alice, bob, b"p0", olm_key=bundle.olm_key, prekey=bundle.pick())]
    pre += [send(alice, bob, b"p%d" % i) for i in (1, 2)]
    assert [m[0] for m in pre] == [0, 0, 0]
    # The last pre-key message starts the session; the earlier ones still decrypt.
    assert [receive(bob, alice, pre[i]) for i in (2, 0, 1)] == [b"p2", b"p0", b"p1"]
    assert len(bob.state.session_pickles(alice.pk)) == 1
    assert receive(alice, bob, send(bob, alice, b"ack")) == b"ack"
    normal = [send(alice, bob, b"n%d" % i) for i in range(4)]
    assert [m[0] for m in normal] == [1, 1, 1, 1]
    assert [receive(bob, alice, normal[i]) for i in (3, 1, 0, 2)] == [b"n3", b"n1", b"n0", b"n2"]
    for message in [*pre, *normal]:
        refused(bob, alice, message)


# ------------------------------------------------------------------ lost state


def test_lost_state_is_no_session(tmp_path: Path, alice: Party, bob: Party) -> None:
    first = start(alice, bob)
    assert receive(alice, bob, send(bob, alice, b"reply")) == b"reply"
    normal = send(alice, bob, b"after the reset")
    # Bob's database is gone: a new one under the same identity.
    fresh = open_party(tmp_path / "bob-restored.db", bob.identity)
    assert fresh.ratchet.olm_key != bob.ratchet.olm_key
    assert not fresh.ratchet.has_session(alice.pk)
    refused(fresh, alice, normal)
    refused(fresh, alice, first)  # its one-time key belonged to the lost account
    # The surviving database still reads it.
    assert receive(bob, alice, normal) == b"after the reset"


def test_a_consumed_one_time_key_cannot_start_a_second_session(
    alice: Party, bob: Party, carol: Party
) -> None:
    olm_key, key = bob.ratchet.one_time_key()  # handed to Alice; Carol got hold of it
    first = send(alice, bob, b"first user", olm_key=olm_key, prekey=key)
    assert receive(bob, alice, first) == b"first user"
    second = send(carol, bob, b"second user", olm_key=olm_key, prekey=key)
    refused(bob, carol, second)
    assert not bob.ratchet.has_session(carol.pk)
    # Alice's own fresh start with the used key fails too; her session still works.
    alice.state.drop_sessions(bob.pk)
    again = send(alice, bob, b"restart", olm_key=olm_key, prekey=key)
    refused(bob, alice, again)
    bob_session = bob.state.session_pickles(alice.pk)
    assert len(bob_session) == 1


def test_messages_are_bound_to_their_peer(alice: Party, bob: Party, carol: Party) -> None:
    start(alice, bob)
    assert receive(alice, bob, send(bob, alice, b"reply")) == b"reply"
    normal = send(alice, bob, b"for bob from alice")
    # Carol has no session with Bob: a normal message claimed to be hers is refused.
    refused(bob, carol, normal)
    assert receive(bob, alice, normal) == b"for bob from alice"


@pytest.mark.parametrize(
    "message_type, body", [(0, b"garbage"), (1, b"garbage"), (1, b""), (0, b"\x03")]
)
def test_garbage_is_bad_message(alice: Party, bob: Party, message_type: int, body: bytes) -> None:
    refused(bob, alice, (message_type, body), "bad_message")


# ----------------------------------------------------------------- persistence


def test_pickles_persist_across_reopening(tmp_path: Path) -> None:
    a_id, b_id = Identity.generate(), Identity.generate()
    alice = open_party(tmp_path / "a.db", a_id)
    bob = open_party(tmp_path / "b.db", b_id)
    keys = (alice.ratchet.olm_key, bob.ratchet.olm_key)
    first = start(alice, bob)
    captured = send(alice, bob, b"second")
    assert receive(bob, alice, captured) == b"second"
    for party in (alice, bob):
        party.store.close()
    alice = open_party(tmp_path / "a.db", a_id)
    bob = open_party(tmp_path / "b.db", b_id)
    assert (alice.ratchet.olm_key, bob.ratchet.olm_key) == keys
    assert alice.ratchet.has_session(bob.pk) and bob.ratchet.has_session(alice.pk)
    refused(bob, alice, first)
    refused(bob, alice, captured)
    assert receive(alice, bob, send(bob, alice, b"after restart")) == b"after restart"
    assert receive(bob, alice, send(alice, bob, b"and back")) == b"and back"
    # The pickles are not readable with another identity's key.
    assert pickle_key(a_id) != pickle_key(b_id)
    raw = alice.state.account_pickle()
    assert raw is not None
    vodozemac.Account.from_pickle(raw, pickle_key(a_id))
    with pytest.raises(vodozemac.PickleException):
        vodozemac.Account.from_pickle(raw, pickle_key(b_id))


# ---------------------------------------------------------------------- bundles


def test_bundle_round_trip_and_size(bob: Party) -> None:
    bundle = bob.ratchet.bundle(NOW_MS)
    assert Bundle.decode(decode(bundle.encode())) == bundle
    assert len(bundle.encode()) < 1000
    no_fallback = Bundle(bundle.olm_key, None, bundle.one_time[:2])
    assert Bundle.decode(decode(no_fallback.encode())) == no_fallback


K = bytes(range(32))


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"bytes",
        [K],
        {},
        {b"k": K[:31]},
        {b"k": 5},
        {b"k": K + b"x"},
        {b"k": K, b"f": K[:5]},
        {b"k": K, b"f": 7},
        {b"k": K, b"o": K},
        {b"k": K, b"o": {b"a": K}},
        {b"k": K, b"o": [K] * 65},
    ],
)
def test_bundle_decode_refuses_malformed(value: Any) -> None:
    with pytest.raises(RatchetError) as info:
        Bundle.decode(value)
    assert info.value.code == "bad_bundle"


def test_bundle_decode_drops_malformed_one_time_keys() -> None:
    bundle = Bundle.decode({b"k": K, b"o": [K, b"short", 5, [K], K[::-1]]})
    assert bundle == Bundle(K, None, (K, K[::-1]))
    assert Bundle.decode({b"k": K}).one_time == ()


@pytest.mark.parametrize(
    "value",
    [
        None,
        {},
        {b"k": K},
        {b"o": K},
        {b"k": K[:5], b"o": K},
        {b"k": K, b"o": [K]},
        {b"k": K, b"o": 1},
    ],
)
def test_prekey_body_refuses_malformed(value: Any) -> None:
    with pytest.raises(RatchetError) as info:
        decode_prekey_body(value)
    assert info.value.code == "bad_bundle"
    assert decode_prekey_body({b"k": K, b"o": K[::-1]}) == (K, K[::-1])


def test_mangled_messages_raise_only_ratchet_error(alice: Party, bob: Party) -> None:
    bundle = bob.ratchet.bundle(NOW_MS)
    pre = send(alice, bob, b"p", olm_key=bundle.olm_key, prekey=bundle.pick())
    mangled: list[tuple[bytes, int, bytes]] = []
    for pos in range(0, len(pre[1]), 7):
        body = bytearray(pre[1])
        body[pos] ^= 0x55
        mangled.append((alice.ratchet.olm_key, 0, bytes(body)))
        mangled.append((alice.ratchet.olm_key, 1, bytes(body)))
    mangled.append((bytes(32), 0, pre[1]))  # another Olm identity key than the message's
    mangled.append((bob.ratchet.olm_key, 0, pre[1]))
    mangled.append((alice.ratchet.olm_key, 1, pre[1]))  # a pre-key message as a normal one
    mangled.append((alice.ratchet.olm_key, 0, pre[1][: len(pre[1]) // 2]))
    for olm_key, message_type, body in mangled:
        with pytest.raises(RatchetError) as info:
            bob.ratchet.decrypt(alice.pk, olm_key, message_type, body)
        assert info.value.code in ("bad_message", "no_session")
    assert not bob.ratchet.has_session(alice.pk)
    # The genuine message still opens: nothing above consumed the one-time key.
    assert receive(bob, alice, pre) == b"p"

"""Candidate records (PROTOCOL.md "Candidate records (1.6)"): sealed, signed, bounded."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btchat.codec import bencode
from btchat.dht import bep44
from btchat.dht.node import GetItemResult, GetPeersResult, PutResult
from btchat.discovery import candidates as cand
from btchat.discovery.rendezvous import Candidate, FixedDirectory, Rendezvous, RendezvousConfig
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.identity.rendezvous import epoch_of, pairwise_secret
from btchat.net.dht_service import DhtError
from btchat.node.tasks import TaskOwner

ALICE, BOB, CAROL = (Identity.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
DEVICE = bytes(range(16))
EPOCH = 490000
SECRET = pairwise_secret(ALICE, BOB.public_key)
CANDS = (
    cand.Addr("mapped", "tcp", "203.0.113.7", 40000),
    cand.Addr("reflexive", "udp", "203.0.113.7", 51413),
    cand.Addr("host", "tcp", "192.168.1.10", 6882),
    cand.Addr("host", "udp", "2001:db8::10", 6881),
    cand.Addr("onion", "tcp", "a" * 56 + ".onion", 6881),
)


def _slot(epoch: int = EPOCH, device: bytes = DEVICE, secret: bytes = SECRET) -> cand.Slot:
    return cand.slot(secret, ALICE.public_key, BOB.public_key, device, epoch)


def _record(t: int = 1_764_000_000_000, **kw: object) -> cand.Record:
    fields: dict[str, object] = dict(
        seeker=BOB.public_key, device_id=DEVICE, epoch=EPOCH, t=t, candidates=CANDS
    )
    fields.update(kw)
    return cand.Record(**fields)  # type: ignore[arg-type]


def _open(value: bytes, where: cand.Slot | None = None, **kw: object) -> cand.Record:
    args: dict[str, object] = dict(
        announcer=ALICE.public_key, seeker=BOB.public_key, device_id=DEVICE, epoch=EPOCH
    )
    args.update(kw)
    return cand.open_record(value, where or _slot(), **args)  # type: ignore[arg-type]


def test_a_sealed_record_opens_for_its_seeker_and_fits_bep44() -> None:
    value = cand.seal(ALICE, _slot(), _record())
    assert len(value) == cand.VALUE_SIZE
    assert len(bencode.encode(value)) <= bep44.MAX_VALUE_SIZE
    assert _open(value) == _record()
    assert cand.seal(ALICE, _slot(), _record()) == value  # a put again is byte for byte


def test_every_record_has_one_size() -> None:
    small = cand.seal(ALICE, _slot(), _record(candidates=CANDS[:1]))
    full = cand.seal(
        ALICE, _slot(), _record(candidates=(cand.Addr("onion", "tcp", "b" * 56 + ".onion", 1),) * 8)
    )
    assert len(small) == len(full) == cand.VALUE_SIZE


def test_a_record_signed_by_another_identity_is_refused() -> None:
    """Bob can derive the slot's keys (and so write it), but not sign as Alice."""
    forged = cand.seal(BOB, _slot(), _record())
    with pytest.raises(cand.CandidateError) as caught:
        _open(forged)
    assert caught.value.reason == "signature"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"device_id": bytes(16)}, "elsewhere"),  # written for another of Alice's devices
        ({"epoch": EPOCH - 1}, "elsewhere"),  # last hour's record put into this hour's slot
        ({"seeker": CAROL.public_key}, "elsewhere"),  # Alice's record for Carol
    ],
)
def test_a_record_for_another_device_epoch_or_seeker_is_refused(
    change: dict[str, object], reason: str
) -> None:
    value = cand.seal(ALICE, _slot(), _record(**change))
    with pytest.raises(cand.CandidateError) as caught:
        _open(value)
    assert caught.value.reason == reason


def test_another_pair_epoch_or_device_cannot_open_it() -> None:
    value = cand.seal(ALICE, _slot(), _record())
    carol_secret = pairwise_secret(ALICE, CAROL.public_key)
    for other in (_slot(EPOCH + 1), _slot(device=bytes(16)), _slot(secret=carol_secret)):
        assert other.public_key != _slot().public_key
        with pytest.raises(cand.CandidateError) as caught:
            _open(value, other)
        assert caught.value.reason == "sealed"


@pytest.mark.parametrize(
    "value",
    [b"", b"x" * (cand.VALUE_SIZE - 1), b"x" * (cand.VALUE_SIZE + 1), 5, [b"x"], None],
)
def test_wrong_sizes_and_types_are_refused_before_any_crypto(value: object) -> None:
    with pytest.raises(cand.CandidateError) as caught:
        _open(value)  # type: ignore[arg-type]
    assert caught.value.reason == "size"


def test_a_tampered_value_is_refused() -> None:
    value = bytearray(cand.seal(ALICE, _slot(), _record()))
    value[100] ^= 1
    with pytest.raises(cand.CandidateError):
        _open(bytes(value))


def _seal_fields(fields: dict[bytes, object], signer: Identity = ALICE) -> bytes:
    """A record with arbitrary fields, signed and sealed as the code would."""
    where = _slot()
    body = bencode.encode({**fields, b"s": signer.sign(cand._signed_bytes(fields))})
    padded = body + bytes(cand.PLAINTEXT_SIZE - len(body))
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

    nonce = bytes(24)
    return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(
        padded, where.public_key, nonce, where.aead_key
    )


def test_more_than_eight_candidates_is_refused_whole() -> None:
    fields = _record().fields()
    fields[b"c"] = [CANDS[0].wire()] * (cand.MAX_CANDIDATES + 1)
    with pytest.raises(cand.CandidateError) as caught:
        _open(_seal_fields(fields))
    assert caught.value.reason == "malformed"
    with pytest.raises(ValueError):
        cand.seal(ALICE, _slot(), _record(candidates=CANDS * 2))


def test_unknown_kinds_and_keys_are_skipped_not_fatal() -> None:
    fields = _record().fields()
    fields[b"c"] = [
        [b"x", b"t", bytes(4), 1],  # unknown kind
        [b"h", b"q", bytes(4), 1],  # unknown transport
        [b"h", b"t", bytes(5), 1],  # neither IPv4 nor IPv6
        [b"h", b"t", bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1]), 1],  # IPv4-mapped
        [b"h", b"t", bytes([10, 0, 0, 1]), 0],  # port 0
        [b"o", b"u", b"a" * 56, 1],  # onion over UDP
        [b"h", b"t", bytes([10, 0, 0, 1]), 7, b"future"],  # a later field: kept
    ]
    fields[b"z"] = b"a later key"  # signed, so accepted and ignored
    record = _open(_seal_fields(fields))
    assert record.candidates == (cand.Addr("host", "tcp", "10.0.0.1", 7),)
    assert record.skipped == 6


def test_stale_records_are_refused_and_old_epochs_forgotten() -> None:
    fresh = cand.Freshness()
    a, d = ALICE.public_key, DEVICE
    assert fresh.accept(a, d, EPOCH, 10)
    assert fresh.accept(a, d, EPOCH, 10)  # the same one read again
    assert not fresh.accept(a, d, EPOCH, 9)  # a storing node's older copy
    assert fresh.accept(a, d, EPOCH + 1, 5)  # a new hour starts afresh
    assert fresh.accept(a, d, EPOCH + 2, 1)
    assert fresh.accept(a, d, EPOCH, 1)  # forgotten: two hours back (its slot is gone)
    assert len(fresh._seen) <= 3


def test_what_may_be_dialled() -> None:
    def ok(host: str, kind: str = "host", **kw: bool) -> bool:
        flags = {"onion_ok": False, "loopback_ok": False, **kw}
        return cand.dialable(cand.Addr(kind, "tcp", host, 1), **flags)

    assert ok("192.168.1.10") and ok("2001:db8::1") and ok("203.0.113.1")
    assert not ok("0.0.0.0") and not ok("::") and not ok("224.0.0.1") and not ok("ff02::1")
    assert not ok("255.255.255.255") and not ok("fe80::1")
    assert not ok("127.0.0.1") and ok("127.0.0.1", loopback_ok=True)
    assert not ok("a" * 56 + ".onion", "onion") and ok("a" * 56 + ".onion", "onion", onion_ok=True)


_ADDRS = st.one_of(
    st.builds(
        cand.Addr,
        st.sampled_from(["host", "mapped", "reflexive"]),
        st.sampled_from(["tcp", "udp"]),
        st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
        .filter(lambda ip: ip.version == 4 or ip.ipv4_mapped is None)
        .map(str),
        st.integers(1, 65535),
    ),
    st.builds(
        cand.Addr,
        st.just("onion"),
        st.just("tcp"),
        st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=56, max_size=56).map(
            lambda s: s + ".onion"
        ),
        st.integers(1, 65535),
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    candidates=st.lists(_ADDRS, max_size=cand.MAX_CANDIDATES).map(tuple),
    t=st.integers(0, (1 << 53) - 1),
    epoch=st.integers(0, (1 << 40)),
)
def test_round_trip(candidates: tuple[cand.Addr, ...], t: int, epoch: int) -> None:
    where = _slot(epoch)
    record = _record(t=t, epoch=epoch, candidates=candidates)
    assert _open(cand.seal(ALICE, where, record), where, epoch=epoch) == record


# ------------------------------------------------ the rendezvous writes and reads them


class ItemDht:
    """An in-memory DHT of BEP 44 items shared by two rendezvous: BEP 44's rules (a
    valid signature, a higher seq) and no announces found (so only records lead on)."""

    routing_size = bucket_size = 8

    def __init__(self) -> None:
        self.items: dict[bytes, bep44.MutableItem] = {}
        self.gets = 0

    async def announce(self, infohash: bytes, port: int, *, implied_port: bool = False) -> None:
        raise DhtError("announces are not the point here")

    async def get_peers(self, infohash: bytes) -> GetPeersResult:
        return GetPeersResult([], 1, 1)

    async def put_mutable(self, item: bep44.MutableItem, *, cas: int | None = None) -> PutResult:
        bep44.check_mutable(item)
        old = self.items.get(item.target)
        if old is not None and old.seq >= item.seq:
            raise DhtError("seq too low")
        self.items[item.target] = item
        return PutResult(item.target, 8, [], 8)

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> GetItemResult:
        self.gets += 1
        item = self.items.get(bep44.mutable_target(public_key, salt))
        if item is None:
            return GetItemResult(None, None, None, None, 1)
        value = bencode.decode(item.v_bencoded)
        return GetItemResult(value, item.v_bencoded, item.seq, item.signature, 1)


class Reacher:
    def __init__(self) -> None:
        self.offered: list[Candidate] = []

    def connected(self, contact: bytes) -> bool:
        return False

    async def reach(self, candidates: list[Candidate]) -> bool:
        self.offered += candidates
        return True

    def revoked(self, contact: bytes, device_ids: frozenset[bytes]) -> None:
        pass


def _cert(identity: Identity) -> DeviceCertificate:
    return identity.certify(DeviceKey.generate(), int(time.time()))


async def _meet(
    alice_says: list[cand.Addr], *, bob_reads: bool = True, wait: float = 5.0
) -> tuple[Reacher, Rendezvous, Rendezvous, ItemDht]:
    dht = ItemDht()
    alice_cert, bob_cert = _cert(ALICE), _cert(BOB)
    directory_a = FixedDirectory([BOB.public_key], {BOB.public_key: [bob_cert]})
    directory_b = FixedDirectory([ALICE.public_key], {ALICE.public_key: [alice_cert]})
    config = RendezvousConfig(round_interval=0.2, first_retry=0.05)
    alice = Rendezvous(
        ALICE, alice_cert, dht, config, Reacher(), directory_a,  # type: ignore[arg-type]
        candidates=lambda: alice_says,
    )  # fmt: skip
    found = Reacher()
    bob = Rendezvous(
        BOB, bob_cert, dht, config, found, directory_b,  # type: ignore[arg-type]
        candidates=(lambda: []) if bob_reads else None,
    )  # fmt: skip
    tasks = TaskOwner()
    tasks.spawn(alice.run(4000, tasks.spawn))
    tasks.spawn(bob.run(4001, tasks.spawn))
    deadline = time.monotonic() + wait
    while not found.offered and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    await tasks.cancel_all()
    return found, alice, bob, dht


async def test_bob_dials_what_alices_record_says() -> None:
    says = [
        cand.Addr("host", "tcp", "192.168.1.10", 6882),
        cand.Addr("mapped", "udp", "1.2.3.4", 5),
    ]
    found, alice, bob, _ = await _meet(says)
    assert alice.stats["records_put"] >= 1
    got = {(c.addr, c.transport, c.kind) for c in found.offered}
    assert got == {(("192.168.1.10", 6882), "tcp", "host"), (("1.2.3.4", 5), "udp", "mapped")}
    assert bob.stats["records_read"] >= 1 and bob.stats["records_dropped"] == 0


async def test_without_records_nothing_is_found() -> None:
    found, _, bob, _ = await _meet([], wait=1.0)  # nothing to say: no record is written
    assert found.offered == [] and bob.stats["records_read"] == 0
    found, alice, bob, _ = await _meet([CANDS[0]], bob_reads=False, wait=1.0)
    assert alice.stats["records_put"] >= 1  # there is one, but Bob reads none
    assert found.offered == [] and bob.stats["records_read"] == 0


async def test_a_record_bob_forged_into_alices_slot_is_dropped_and_counted() -> None:
    """Bob's own rendezvous writes into the slot where Alice's record for him goes (he
    can derive its key): what he reads back there is dropped, counted, never raised."""
    dht = ItemDht()
    bob_cert = _cert(BOB)
    alice_cert = _cert(ALICE)
    epoch = epoch_of(time.time())
    where = cand.slot(SECRET, ALICE.public_key, BOB.public_key, alice_cert.device_id, epoch)
    record = cand.Record(BOB.public_key, alice_cert.device_id, epoch, 1, CANDS[:1])
    value = bencode.encode(cand.seal(BOB, where, record))  # signed by Bob, not Alice
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    await dht.put_mutable(
        bep44.sign_mutable(Ed25519PrivateKey.from_private_bytes(where.seed), value, 1)
    )
    found = Reacher()
    bob = Rendezvous(
        BOB, bob_cert, dht, RendezvousConfig(), found,  # type: ignore[arg-type]
        FixedDirectory([ALICE.public_key], {ALICE.public_key: [alice_cert]}),
        candidates=lambda: [],
    )  # fmt: skip
    assert await bob._look(ALICE.public_key, SECRET, time.time()) is False
    assert bob.stats["records_dropped"] >= 1 and found.offered == []


def test_status_says_what_records_did_once_there_were_any() -> None:
    from btchat.cli.chat import records_text

    quiet = {"records_put": 0, "records_read": 0, "records_dropped": 0, "candidates_refused": 0}
    assert records_text(None) == records_text(quiet) == ""
    busy = {**quiet, "records_put": 4, "records_read": 2, "records_dropped": 1}
    assert records_text(busy) == (
        "\ncandidate records: 4 written, 2 read, 1 dropped, 0 candidates refused"
    )

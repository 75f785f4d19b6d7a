"""The published test vectors (docs/vectors/*.json) against btchat's code, both ways.

Forward: the generator, re-run, must reproduce every committed file byte for byte, so a
format that drifts from its vectors fails here (regenerate with
``python tests/vectors/make_vectors.py`` only when the change is meant). Backward: each
vector's bytes parse back to its fields and verify, and a copy with one flipped byte is
refused. Derivations are also recomputed here from the file's own inputs (and, where
that is short, from the standard library alone), as another implementation would.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import vodozemac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from btchat.channels.chatfile import ChatFile, ChatFileError
from btchat.channels.keys import ChannelKeyError, open_generation_key
from btchat.channels.members import MemberList, MemberListError
from btchat.channels.messages import ChannelMessage, MessageError, open_content
from btchat.codec.bencode import decode, encode
from btchat.identity import idtext, pow, rendezvous, safety
from btchat.identity.devices import decode_revoked
from btchat.identity.keys import (
    CertificateError,
    DeviceCertificate,
    Identity,
    Signed,
    verify_signature,
)
from btchat.messaging import envelope as env
from btchat.messaging import own_sync
from btchat.node import requests
from btchat.node.peering import decode_device_list
from btchat.offline import packet
from btchat.offline.ratchet import Bundle, decode_prekey_body, device_prekey_salt, pickle_key

VECTOR_DIR = Path(__file__).resolve().parents[1] / "docs" / "vectors"
_spec = importlib.util.spec_from_file_location(
    "make_vectors", Path(__file__).parent / "vectors" / "make_vectors.py"
)
assert _spec is not None and _spec.loader is not None
make_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_vectors)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTOR_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data


def b(text: str) -> bytes:
    return bytes.fromhex(text)


def flipped(data: bytes, index: int) -> bytes:
    """``data`` with one byte changed: what every parser here must refuse."""
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def identity(people: dict[str, Any], name: str) -> Identity:
    return Identity.from_seed(b(people[name]["seed"]))


# ------------------------------------------------------------------------ forward


@pytest.mark.parametrize("name", sorted(make_vectors.FAMILIES))
def test_generator_reproduces_the_committed_file(name: str) -> None:
    committed = (VECTOR_DIR / f"{name}.json").read_text(encoding="utf-8")
    fresh = make_vectors.render(make_vectors.FAMILIES[name]())
    if fresh != committed:
        diff = difflib.unified_diff(
            committed.splitlines(), fresh.splitlines(), "committed", "code", lineterm="", n=1
        )
        shown = "\n".join(line[:160] for line in list(diff)[:40])
        pytest.fail(f"docs/vectors/{name}.json no longer matches the code:\n{shown}")


def test_every_file_is_versioned_and_describes_its_fields() -> None:
    files = sorted(p.stem for p in VECTOR_DIR.glob("*.json"))
    assert files == sorted(make_vectors.FAMILIES)
    for name in files:
        data = load(name)
        assert data["version"] == 1 and data["description"] and data["fields"]


# ----------------------------------------------------------------------- 1. IDs


def test_ids() -> None:
    data = load("ids")
    for v in data["vectors"]:
        pk = b(v["public_key"])
        checksum = hashlib.blake2b(b(v["checksum_input"])).digest()[:3]
        assert v["checksum_input"] == (b"btchat-id-v1" + pk).hex()
        assert checksum.hex() == v["checksum"] == idtext.id_checksum(pk).hex()
        body = base64.b32encode(pk + checksum).decode().lower()
        assert v["id"] == "bt" + body == idtext.format_id(pk)
        assert idtext.parse_id(v["id"]) == idtext.parse_id(v["id_grouped"]) == pk
        assert idtext.parse_uri(v["link"]) == (pk, None)
        assert idtext.parse_uri(v["link_named"]) == (pk, v["link_named_name"])
        with pytest.raises(idtext.IdError):
            idtext.parse_id(v["id"][:-1] + ("a" if v["id"][-1] != "a" else "b"))
    parsing = data["parsing"]
    for text in parsing["accepted"]:
        assert idtext.parse_id(text) == b(parsing["public_key"]), text
    for text in parsing["refused"]:
        with pytest.raises(idtext.IdError):
            idtext.parse_id(text)


# -------------------------------------------------------------------- 2. devices


def test_device_certificates() -> None:
    data = load("devices")
    context = b(data["context"])
    for v in data["vectors"]["certificates"]:
        assert b(v["signed_bytes"]) == context + b(v["unsigned_bencoded"])
        cert = DeviceCertificate.decode(b(v["certificate"]))
        assert (cert.identity, cert.device_key, cert.device_id, cert.created) == (
            b(v["identity"]),
            b(v["device_key"]),
            b(v["device_id"]),
            v["created"],
        )
        assert cert.signature == b(v["signature"]) and cert.signed_bytes() == b(v["signed_bytes"])
        raw = b(v["certificate"])
        for index in (raw.index(b(v["device_key"])), len(raw) - 2):
            with pytest.raises(CertificateError):
                DeviceCertificate.decode(flipped(raw, index))


def test_device_list() -> None:
    data = load("devices")
    dl = data["vectors"]["device_list"]
    certs = [c["certificate"] for c in data["vectors"]["certificates"][:2]]
    value = decode(b(dl["value"]))
    assert value == {b"certs": [b(c) for c in certs]}  # byte strings, not dictionaries
    parsed = decode_device_list(b(dl["value"]), b(dl["identity"]))
    assert [c.encode().hex() for c in parsed] == certs
    salt, seq = b(dl["salt"]), dl["seq"]
    buffer = b"4:salt%d:%s3:seqi%de1:v%s" % (len(salt), salt, seq, b(dl["value"]))
    assert buffer.hex() == dl["signing_buffer"]
    assert hashlib.sha1(b(dl["identity"]) + salt).hexdigest() == dl["target"]
    assert verify_signature(b(dl["identity"]), b(dl["signature"]), buffer)
    # A list holding one tampered certificate keeps only the good one.
    bad = b(certs[1])
    tampered = b(dl["value"]).replace(bad, flipped(bad, len(bad) - 2))
    assert [c.encode().hex() for c in decode_device_list(tampered, b(dl["identity"]))] == [certs[0]]
    assert (
        decode_device_list(b(dl["value"]), b(data["vectors"]["certificates"][2]["identity"])) == []
    )


# ---------------------------------------------------------------- 3. rendezvous


def test_own_devices() -> None:
    data = load("own_devices")["vectors"]
    rl = data["revocation_list"]
    value, salt = b(rl["value"]), b(rl["salt"])
    assert decode(value) == {b"rev": [b(i) for i in rl["revoked"]]}
    assert decode_revoked(value) == {b(i) for i in rl["revoked"]}
    buffer = b"4:salt%d:%s3:seqi%de1:v%s" % (len(salt), salt, rl["seq"], value)
    assert buffer.hex() == rl["signing_buffer"]
    assert hashlib.sha1(b(rl["identity"]) + salt).hexdigest() == rl["target"]
    assert verify_signature(b(rl["identity"]), b(rl["signature"]), buffer)
    assert not verify_signature(b(rl["identity"]), b(rl["signature"]), flipped(buffer, 30))
    me = data["self_rendezvous"]
    assert me["my_public"] == me["their_public"]
    assert rendezvous.pairwise_secret(
        Identity.from_seed(b(me["my_seed"])), b(me["their_public"])
    ) == b(me["secret"])
    batch = own_sync.decode_sync(b(data["sync"]["payload"]), 0)
    assert isinstance(batch, own_sync.Batch) and batch.upto == data["sync"]["upto"]
    assert [r.text for r in batch.rows] == ["hello, both of you", "from my other device"]
    assert own_sync.decode_sync(b(data["synced"]["payload"]), 0) == data["synced"]["upto"]
    carried = own_sync.decode_sync(b(data["sync_with_envelope"]["payload"]), 0)
    assert isinstance(carried, own_sync.Batch) and carried.rows == batch.rows
    (pending,) = carried.envelopes
    assert pending == b(data["sync_with_envelope"]["envelope"])
    envelope = env.parse_envelope(pending)
    assert envelope.id == batch.rows[1].id and envelope.signed_by(batch.rows[1].sender)
    state = own_sync.decode_sync(b(data["state"]["payload"]), 0)
    assert state == own_sync.StateNote(batch.rows[1].peer, "delivered", [batch.rows[1].id])
    received = own_sync.decode_sync(b(data["received"]["payload"]), 0)
    assert received == own_sync.ReceivedNote([(batch.rows[1].peer, data["received"]["n"])])
    note = own_sync.decode_sync(b(data["devices"]["payload"]), 0)
    assert isinstance(note, own_sync.DevicesNote)
    assert DeviceCertificate.decode(note.certs[0]).verify()
    contacts = own_sync.decode_sync(b(data["contacts"]["payload"]), 0)
    assert isinstance(contacts, own_sync.ContactsNote)
    assert contacts.changes[0].name == "bob" and contacts.changes[0].verified
    read = own_sync.decode_sync(b(data["read"]["payload"]), 0)
    assert isinstance(read, own_sync.ReadNote) and len(read.ids) == 1
    profile = own_sync.decode_sync(b(data["profile"]["payload"]), 0)
    assert isinstance(profile, own_sync.ProfileChange)
    assert profile.name == data["profile"]["name"] and profile.status is None
    names = own_sync.decode_sync(b(data["names"]["payload"]), 0)
    assert isinstance(names, own_sync.NamesNote)
    (named,) = names.names
    assert (named.device.hex(), named.name) == (data["names"]["device"], data["names"]["name"])
    assert own_sync.encode_names(names.names) == b(data["names"]["payload"])
    channels = own_sync.decode_sync(b(data["channels"]["payload"]), 0)
    assert isinstance(channels, own_sync.ChannelsNote)
    joined, left = channels.changes
    assert joined.joined
    assert ChatFile.from_bytes(joined.chatfile).channel_id.hex() == data["channels"]["joined"]
    assert not left.joined and left.channel.hex() == data["channels"]["left"]
    assert own_sync.encode_channels(channels.changes) == [b(data["channels"]["payload"])]


def test_pairwise_secret() -> None:
    data = load("rendezvous")
    person = b(data["constants"]["person_padded"])
    secrets = set()
    for v in data["vectors"]["pairwise"]:
        me = Identity.from_seed(b(v["my_seed"]))
        first, second = sorted((b(v["my_public"]), b(v["their_public"])))
        assert b(v["blake2b_input"]) == b(v["x25519_shared"]) + first + second
        digest = hashlib.blake2b(b(v["blake2b_input"]), digest_size=32, person=person).digest()
        assert digest.hex() == v["secret"]
        assert rendezvous.pairwise_secret(me, b(v["their_public"])).hex() == v["secret"]
        secrets.add(v["secret"])
    assert len(secrets) == 1  # the same on both sides


def test_rendezvous_infohashes_and_targets() -> None:
    data = load("rendezvous")
    secret = b(data["vectors"]["pairwise"][0]["secret"])
    context = b(data["constants"]["infohash_context"])
    for v in data["vectors"]["infohashes"]:
        message = context + b(v["announcer"]) + b(v["seeker"]) + v["epoch"].to_bytes(8, "big")
        assert message.hex() == v["blake2b_message"]
        expected = hashlib.blake2b(message, digest_size=20, key=secret).hexdigest()
        assert expected == v["infohash"]
        got = rendezvous.rendezvous_infohash(secret, b(v["announcer"]), b(v["seeker"]), v["epoch"])
        assert got.hex() == v["infohash"]
    alice = b(data["people"]["alice"]["public_key"])
    bob = b(data["people"]["bob"]["public_key"])
    for v in data["vectors"]["targets"]:
        assert rendezvous.epoch_of(v["now"]) == v["epoch"]
        announced = rendezvous.announce_targets(secret, alice, bob, v["now"])
        looked = rendezvous.lookup_targets(secret, bob, alice, v["now"])
        assert [x.hex() for x in announced] == v["alice_announces"]
        assert [x.hex() for x in looked] == v["bob_looks_up"]
        assert announced[0] == looked[0]  # the current epoch always meets


# ------------------------------------------------------------------ 4. envelopes


def test_envelopes_parse_verify_and_refuse_tampering() -> None:
    data = load("envelopes")
    context = b(data["constants"]["context"])
    for v in data["vectors"]:
        wire = b(v["envelope"])
        e = env.parse_envelope(wire)
        assert (e.sender.hex(), e.device.hex(), e.recipient.hex()) == (v["from"], v["dev"], v["to"])
        assert (e.id.hex(), e.nonce.hex(), e.ts_ms, e.lamport) == (
            v["id"],
            v["n"],
            v["ts"],
            v["lc"],
        )
        assert e.type.decode() == v["type"] and e.signature.hex() == v["sig"]
        assert e.signed_bytes().hex() == v["signed_bytes"]
        assert b(v["signed_bytes"]).startswith(context)
        unsigned = decode(b(v["signed_bytes"])[len(context) :])
        assert unsigned[b"body"] == decode(b(v["body_bencoded"])) and b"sig" not in unsigned
        assert env.encode_envelope(e) == wire
        env.verify_envelope(
            e, expected_sender=e.sender, expected_recipient=e.recipient, now=v["verify_now"]
        )
        for index in (wire.index(e.nonce), wire.index(e.signature)):
            with pytest.raises(env.EnvelopeError) as info:
                tampered = env.parse_envelope(flipped(wire, index))
                env.verify_envelope(
                    tampered,
                    expected_sender=e.sender,
                    expected_recipient=e.recipient,
                    now=v["verify_now"],
                )
            assert info.value.code == "bad_signature"


def test_envelope_bodies_decode() -> None:
    vectors = {v["type"]: v for v in load("envelopes")["vectors"]}
    texts = [env.parse_envelope(b(v["envelope"])) for v in load("envelopes")["vectors"][::6]]
    text = texts[0]
    assert env.decode_text(text) == "Hello, Bob! Grüße 👋"
    assert env.decode_text(texts[1]) == make_vectors.LONG_TEXT
    receipts = [v for v in load("envelopes")["vectors"] if v["type"] == "receipt"]
    states = [env.decode_receipt(env.parse_envelope(b(v["envelope"]))) for v in receipts]
    assert states == [([text.id], b"delivered"), ([text.id], b"read")]
    assert env.decode_typing(env.parse_envelope(b(vectors["typing"]["envelope"]))) is True


# --------------------------------------------------------------- 5. safety numbers


def test_safety_numbers() -> None:
    data = load("safety")
    for v in data["vectors"]["fingerprints"]:
        pk = b(v["public_key"])
        assert b(v["iteration_1_input"]) == bytes(2) + pk  # starts from an empty digest
        first = hashlib.sha512(b(v["iteration_1_input"])).digest()
        assert first.hex() == v["iteration_1_digest"]
        assert b(v["iteration_2_input"]) == bytes(2) + pk + first
        assert safety.fingerprint_digits(pk) == v["digits"]
        final = b(v["final_digest"])
        digits = "".join(
            f"{int.from_bytes(final[i * 5 : i * 5 + 5], 'big') % 100000:05d}" for i in range(6)
        )
        assert digits == v["digits"]
    pair = data["vectors"]["pair"]
    assert safety.safety_number(b(pair["a"]), b(pair["b"])) == pair["safety_number"]
    assert safety.safety_number(b(pair["b"]), b(pair["a"])) == pair["safety_number"]


# ------------------------------------------------------------- 6. contact requests


def test_request_slots() -> None:
    s = load("requests")["vectors"]["slots"]
    for v in s["slots"]:
        seed = hashlib.blake2b(b(v["seed_input"]), digest_size=32, person=b"btchat-reqslot")
        assert seed.hexdigest() == v["seed"]
        key = requests.slot_key(b(s["recipient"]), s["day"], v["index"], b(s["inbox"]))
        assert key.public_key().public_bytes_raw().hex() == v["public_key"]


def test_contact_request_opens_and_refuses_tampering() -> None:
    data = load("requests")
    v = data["vectors"]["request"]
    bob = identity(data["people"], "bob")
    assert (
        requests.pow_challenge(b(v["recipient"]), b(v["sender"]), v["day"]).hex()
        == (v["pow_challenge"])
    )
    assert hashlib.blake2b(b(v["pow_input"]), digest_size=32).hexdigest() == v["pow_hash"]
    assert pow.verify(b(v["pow_challenge"]), v["pow"], v["pow_bits"])
    plain = decode(b(v["plaintext"]))
    assert type(plain[b"pow"]) is int  # an integer, not 8 bytes
    sig = plain.pop(b"sig")
    assert sig.hex() == v["sig"]
    assert (requests.REQUEST_CONTEXT + encode(plain)).hex() == v["signed_bytes"]
    request = requests.open_request(bob, b(v["sealed"]), now=v["open_now"])
    f = v["fields"]
    assert (request.sender.hex(), request.recipient.hex(), request.ts_ms) == (
        f["from"],
        f["to"],
        f["ts"],
    )
    assert (request.name, request.note, request.pow_nonce) == (f["name"], f["note"], f["pow"])
    assert request.certificate.encode().hex() == f["cert"]
    assert request.request_id.hex() == v["request_id"]
    sealed = b(v["sealed"])
    for index in (0, 40, len(sealed) - 1):
        with pytest.raises(requests.RequestError):
            requests.open_request(bob, flipped(sealed, index), now=v["open_now"])
    alice = identity(data["people"], "alice")
    with pytest.raises(requests.RequestError):
        requests.open_request(alice, sealed, now=v["open_now"])  # sealed to bob only


# ---------------------------------------------------------------------- 7. offline


def test_olm_prekey_message_decrypts() -> None:
    data = load("offline")
    v = data["vectors"]["olm_prekey"]
    bob = identity(data["people"], "bob")
    assert pickle_key(bob).hex() == v["bob_pickle_key"]
    account = vodozemac.Account.from_pickle(v["bob_account_pickle"], b(v["bob_pickle_key"]))
    assert bytes(account.curve25519_key.to_bytes()).hex() == v["bob_olm_key"]
    body = b(v["body"])
    assert body[0] == 3 and v["parsed"]["identity_key"] == v["alice_olm_key"]
    assert v["parsed"]["one_time_key"] == v["bob_one_time_key"]
    message = vodozemac.AnyOlmMessage.from_parts(v["message_type"], body).to_pre_key()
    _, plaintext = account.create_inbound_session(
        vodozemac.Curve25519PublicKey.from_bytes(b(v["alice_olm_key"])), message
    )
    assert bytes(plaintext).hex() == v["plaintext"]
    # The packet's k must be the identity key inside the pre-key message.
    account = vodozemac.Account.from_pickle(v["bob_account_pickle"], b(v["bob_pickle_key"]))
    with pytest.raises(vodozemac.SessionCreationException):
        account.create_inbound_session(
            vodozemac.Curve25519PublicKey.from_bytes(b(v["bob_one_time_key"])), message
        )
    tampered = vodozemac.AnyOlmMessage.from_parts(0, flipped(body, len(body) - 1)).to_pre_key()
    with pytest.raises(vodozemac.SessionCreationException):
        account.create_inbound_session(
            vodozemac.Curve25519PublicKey.from_bytes(b(v["alice_olm_key"])), tampered
        )


def test_prekey_bundle_and_envelope() -> None:
    data = load("offline")
    v, olm = data["vectors"], data["vectors"]["olm_prekey"]
    bundle = Bundle.decode(decode(b(v["bundle"]["value"])))
    assert (bundle.olm_key.hex(), bundle.fallback) == (
        olm["bob_olm_key"],
        b(olm["bob_fallback_key"]),
    )
    assert [k.hex() for k in bundle.one_time] == [olm["bob_one_time_key"]]
    assert bundle.encode().hex() == v["bundle"]["value"]
    pe = v["prekey_envelope"]
    e = env.parse_envelope(b(pe["envelope"]))
    env.verify_envelope(
        e, expected_sender=e.sender, expected_recipient=e.recipient, now=pe["verify_now"]
    )
    assert not e.known_type  # an offline type: the 1:1 core ignores it, offline delivery reads it
    key, one_time = decode_prekey_body(e.body)
    assert (key.hex(), one_time.hex()) == (olm["bob_olm_key"], olm["bob_one_time_key"])


def test_offline_packet() -> None:
    data = load("offline")
    v, olm = data["vectors"]["packet"], data["vectors"]["olm_prekey"]
    wire = b(v["wire"])
    pkt = packet.OfflinePacket.parse(wire)
    pkt.verify(b(v["sender"]), b(v["recipient"]))
    assert (pkt.n, pkt.expires_ms, pkt.olm_type) == (v["n"], v["expires_ms"], olm["message_type"])
    assert pkt.olm_key.hex() == olm["alice_olm_key"] and pkt.olm_body.hex() == olm["body"]
    assert pkt.encode() == wire
    context = b(data["constants"]["packet_context"])
    fields = decode(wire)
    del fields[b"s"]
    assert (context + encode(fields)).hex() == v["signed_bytes"]
    with pytest.raises(packet.PacketError):
        packet.OfflinePacket.parse(flipped(wire, wire.index(pkt.olm_body))).verify(
            b(v["sender"]), b(v["recipient"])
        )


def test_mailbox_slots_and_sealed_items() -> None:
    data = load("offline")
    m = data["vectors"]["mailbox"]
    secret, sender, recipient = b(m["secret"]), b(m["sender"]), b(m["recipient"])
    items = [*m["chunks"], m["head"]]
    for v in items:
        assert b(v["root_input"]) == b"btchat/mailbox/v1\x00" + sender + recipient + b(v["label"])
        root = hashlib.blake2b(b(v["root_input"]), key=secret, digest_size=32).digest()
        assert root.hex() == v["root"]
        seed = hashlib.blake2b(root, digest_size=32, person=b"btchat-mbox-sig").digest()
        aead = hashlib.blake2b(root, digest_size=32, person=b"btchat-mbox-enc").digest()
        assert (seed.hex(), aead.hex()) == (v["seed"], v["aead_key"])
        padded = b(v["padded"])
        assert len(padded) == data["constants"]["item_plaintext"]
        assert padded == b(v["payload"]).ljust(len(padded), b"\x00")
        assert hashlib.blake2b(padded, key=aead, digest_size=24).hexdigest() == v["nonce"]
        sealed = decode(b(v["v"]))
        assert sealed[:24].hex() == v["nonce"] and len(sealed) == 980
        slot = packet.Slot(_ed25519(seed), b(v["public_key"]), aead)
        assert packet.open_item(slot, sealed) == decode(b(v["payload"]))
        for index in (0, 30, len(sealed) - 1):
            with pytest.raises(packet.PacketError):
                packet.open_item(slot, flipped(sealed, index))
    chunks = [decode(b(v["payload"])) for v in m["chunks"]]
    for part, chunk in enumerate(chunks):
        assert packet.chunk_count(chunk, part) == len(chunks)
        slot = packet.chunk_slot(secret, sender, recipient, 0, part)
        assert slot.public_key.hex() == m["chunks"][part]["public_key"]
    assert packet.join_chunks(chunks).hex() == data["vectors"]["packet"]["wire"]
    head = packet.Head.from_payload(decode(b(m["head"]["payload"])))
    assert (head.lo, head.hi, head.ack + 1) == (m["head"]["lo"], m["head"]["hi"], m["head"]["a"])
    slot = packet.head_slot(secret, sender, recipient, m["head"]["day"])
    assert slot.public_key.hex() == m["head"]["public_key"]


def _ed25519(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def test_offline_packet_v2_every_device_opens_its_wrap() -> None:
    data = load("offline_v2")
    v, olm = data["vectors"]["packet"], data["vectors"]["olm"]
    bob = identity(data["people"], "bob")
    assert pickle_key(bob).hex() == olm["bob_pickle_key"]
    wire = b(v["wire"])
    pkt = packet.OfflinePacket.parse(wire)
    pkt.verify(b(v["sender"]), b(v["recipient"]))
    assert pkt.encode() == wire and pkt.version == 2 and pkt.n == v["n"]
    assert pkt.signed_bytes().hex() == v["signed_bytes"]
    fields = decode(wire)
    del fields[b"s"]
    context = b(load("offline")["constants"]["packet_context"])  # the same as v1's
    assert context + encode(fields) == b(v["signed_bytes"])
    # The ciphertext is the envelope under the packet key (fixed nonce, no AD).
    key = b(olm["packet_key"])
    assert packet.seal_envelope(b(v["plaintext"]), key)[1].hex() == v["ciphertext"]
    assert pkt.olm_body.hex() == v["ciphertext"]
    for d, bundle in zip(olm["devices"], data["vectors"]["bundles"], strict=True):
        assert bundle["salt"] == (b"btchat/prekeys/" + b(d["device_id"])).hex()
        assert device_prekey_salt(b(d["device_id"])).hex() == bundle["salt"]
        parsed = Bundle.decode(decode(b(bundle["value"])))
        assert (parsed.olm_key.hex(), parsed.fallback) == (d["olm_key"], b(d["fallback_key"]))
        wrap = pkt.wrap_for(b(d["device_id"]))
        assert wrap is not None and (wrap[1], wrap[2].hex()) == (d["wrap_type"], d["wrap"])
        account = vodozemac.Account.from_pickle(d["account_pickle"], b(olm["bob_pickle_key"]))
        message = vodozemac.AnyOlmMessage.from_parts(wrap[1], wrap[2]).to_pre_key()
        _, unwrapped = account.create_inbound_session(
            vodozemac.Curve25519PublicKey.from_bytes(pkt.olm_key), message
        )
        assert bytes(unwrapped) == key
        assert packet.open_envelope(bytes(unwrapped), pkt.olm_body).hex() == v["plaintext"]
    # Altered anywhere, the packet does not verify; a wrong key does not open it.
    for index in (wire.index(pkt.olm_body) + 5, wire.index(pkt.wraps[1][2]) + 9):
        with pytest.raises(packet.PacketError):
            packet.OfflinePacket.parse(flipped(wire, index)).verify(
                b(v["sender"]), b(v["recipient"])
            )
    with pytest.raises(packet.PacketError):
        packet.open_envelope(flipped(key, 0), pkt.olm_body)
    # More wraps than a device list has devices: refused.
    fields[b"w"] = fields[b"w"] * 3
    fields[b"s"] = bytes(64)
    with pytest.raises(packet.PacketError):
        packet.OfflinePacket.parse(encode(fields))


# --------------------------------------------------------------------- 8. channels


def test_chat_files_and_links() -> None:
    data = load("channels")
    for name, v in data["vectors"]["chatfiles"].items():
        raw = b(v["bytes"])
        chat = ChatFile.from_bytes(raw)
        assert chat.to_bytes() == raw and chat.mac.hex() == v["mac"]
        assert ChatFile.from_uri(v["link"]) == chat and chat.to_uri() == v["link"]
        assert chat.invite_only == (name == "invite")
        with pytest.raises(ChatFileError):
            ChatFile.from_bytes(flipped(raw, raw.index(b"secret") + 10))


def test_channel_key_schedule() -> None:
    data = load("channels")
    files = {n: ChatFile.from_bytes(b(v["bytes"])) for n, v in data["vectors"]["chatfiles"].items()}
    for v in data["vectors"]["schedule"]:
        ks = files[v["file"]].keys
        root = hmac.new(b"btchat channel v1", b(v["ikm"]), "sha256").digest()
        first_block = hmac.new(root, b"btchat channel id v1\x00\x01", "sha256").digest()
        assert first_block.hex() == v["channel_id"] == ks.channel_id.hex()
        assert (ks.file_mac_key.hex(), ks.proof_key.hex()) == (v["file_mac_key"], v["proof_key"])
        for epoch, infohash in v["infohash"].items():
            assert ks.infohash(int(epoch)).hex() == infohash
        assert [x.hex() for x in ks.announce_targets(v["targets_now"])] == v["announce_targets"]
        assert [x.hex() for x in ks.lookup_targets(v["targets_now"])] == v["lookup_targets"]
        gen = b(v["generation_secret_0"]) if v["generation_secret_0"] else None
        assert ks.traffic_key(0, gen).hex() == v["traffic_key_0"]
        assert ks.generation_proof_key(0, gen).hex() == v["generation_proof_key_0"]
    p = data["vectors"]["proof"]
    message = b"btchat channel membership proof v1\x00" + b(p["prover"]) + b(p["transcript_hash"])
    assert hmac.new(b(p["key"]), message, "sha256").hexdigest() == p["proof"]


def test_member_lists() -> None:
    data = load("channels")
    invite = ChatFile.from_bytes(b(data["vectors"]["chatfiles"]["invite"]["bytes"]))
    chan, owner = invite.keys.channel_id, invite.owner
    assert owner is not None
    previous = None
    for v in data["vectors"]["member_lists"]:
        wire = b(v["wire"])
        ml = MemberList.from_bytes(wire)
        ml.verify(previous, channel_id=chan, owner=owner)
        assert (ml.version, ml.generation) == (v["version"], v["generation"])
        assert hashlib.sha256(wire).hexdigest() == v["digest"] == ml.digest.hex()
        if previous is not None:
            assert ml.previous_digest == previous.digest
        with pytest.raises(MemberListError):
            MemberList.from_bytes(flipped(wire, len(wire) - 3))
        previous = ml


def test_generation_grant() -> None:
    data = load("channels")
    g = data["vectors"]["grant"]
    bob = identity(data["people"], "bob")
    chan, by = b(g["channel_id"]), b(g["by"])
    grant = open_generation_key(bob, b(g["sealed"]), channel_id=chan, issuers={by})
    assert (
        grant.key == bytes([0x42]) * 32 and grant.recipient == bob.public_key and grant.issuer == by
    )
    sealed = b(g["sealed"])
    with pytest.raises(ChannelKeyError):
        open_generation_key(bob, flipped(sealed, len(sealed) - 1), channel_id=chan, issuers={by})
    with pytest.raises(ChannelKeyError):
        open_generation_key(bob, sealed, channel_id=chan, issuers={bob.public_key})


def test_channel_messages() -> None:
    data = load("channels")
    alice, bob, carol = (identity(data["people"], n) for n in ("alice", "bob", "carol"))
    for v in data["vectors"]["messages"]:
        wire = b(v["wire"])
        msg = ChannelMessage.parse(wire, b(v["channel_id"]))
        assert msg.encode() == wire and msg.ciphertext.hex() == v["e"]
        if v["traffic_key"] is None:  # private: alice and bob can read it, carol cannot
            assert open_content(msg, carol, bytes(32)) is None
            assert open_content(msg, bob, None) == open_content(msg, alice, None)
            assert [k.hex() for k, _ in msg.recipients] == [r["key"] for r in v["recipients"]]
        body = open_content(msg, alice, None if v["traffic_key"] is None else b(v["traffic_key"]))
        assert body is not None and msg.signature.hex() == v["s"]
        assert encode(body).hex() == v["body_bencoded"]
        with pytest.raises(MessageError):
            ChannelMessage.parse(flipped(wire, wire.index(msg.ciphertext)), b(v["channel_id"]))
        with pytest.raises(MessageError):
            ChannelMessage.parse(wire, bytes(32))


def test_every_signed_record_has_its_own_context() -> None:
    """Domain separation: no two kinds of record sign over the same prefix."""
    kinds = set(Signed.__subclasses__())
    assert {DeviceCertificate, env.Envelope, ChannelMessage, packet.OfflinePacket} <= kinds
    contexts = [k.CONTEXT for k in kinds]
    assert len(set(contexts)) == len(contexts)
    assert all(c.startswith(b"btchat ") and c.endswith(b" v1\x00") for c in contexts)


# ------------------------------------------------------- 9. sessions and links


def _frames(data: bytes) -> list[bytes]:
    """Split a write into its Noise messages (u16be length prefixes)."""
    out = []
    while data:
        n = int.from_bytes(data[:2], "big")
        out.append(data[2 : 2 + n])
        data = data[2 + n :]
    return out


def _raw_noise(name: str, initiator: bool, prologue: bytes, side: dict[str, str]) -> Any:
    """A plain ``noiseprotocol`` connection, not btchat's wrapper: as another client would."""
    from noise.connection import Keypair, NoiseConnection

    conn = NoiseConnection.from_name(name.encode())
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_prologue(prologue)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, b(side["static_private"]))
    conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, b(side["ephemeral_private"]))
    return conn


def _writes(vector: dict[str, Any], side: str) -> list[bytes]:
    return [m for w in vector["wire"] if w["from"] == side for m in _frames(b(w["bytes"]))]


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_session_handshake_and_frames() -> None:
    v = load("sessions")["vectors"]["session"]
    init, resp = v["initiator"], v["responder"]
    # Bob's side, replayed from the file with the bare Noise library.
    bob = _raw_noise(v["protocol_name"], False, b(v["prologue"]), resp)
    bob.start_handshake()
    from_alice, from_bob = _writes(v, "initiator"), _writes(v, "responder")
    assert bob.read_message(from_alice[0]) == b(init["certificate"])
    assert bob.write_message(b(resp["certificate"])) == from_bob[0]
    assert bob.get_handshake_hash().hex() == v["handshake_hash"]
    assert [bob.decrypt(m) for m in from_alice[1:]] == [
        b"\x01",
        b"\x00" + b(v["payloads"]["text"]),
        b"\x04" + v["payloads"]["close_reason"].encode(),
    ]
    assert [bob.encrypt(p) for p in (b"\x02", b"\x00" + b(v["payloads"]["receipt"]))] == (
        from_bob[1:]
    )
    cert = DeviceCertificate.decode(b(init["certificate"]))
    assert (
        cert.identity.hex() == init["identity"] and cert.device_key.hex() == init["static_public"]
    )
    # btchat's responder refuses message 1 with one byte changed, silently.
    from btchat.session.core import Session, SessionFailed

    bob_device = make_vectors.BOB_DEVICE
    core = Session(
        "responder",
        bob_device,
        DeviceCertificate.decode(b(resp["certificate"])),
        lambda *_: True,
        now=v["now"],
    )
    wire = b(v["wire"][0]["bytes"])
    core.receive_data(flipped(wire, 40), v["now"])
    assert core.data_to_send() == b""
    assert any(isinstance(e, SessionFailed) for e in iter(core.next_event, None))


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_link_handshake_proofs_and_frames() -> None:
    from btchat.channels.link import PROOF_CONTEXT

    v = load("sessions")["vectors"]["link"]
    alice_writes, bob_writes = _writes(v, "initiator"), _writes(v, "responder")
    bob = _raw_noise(v["protocol_name"], False, b(v["prologue"]), v["responder"])
    bob.set_psks(psk=b(v["psk"]))
    bob.start_handshake()
    assert bob.read_message(alice_writes[0]) == b""
    assert bob.write_message(b"") == bob_writes[0]
    assert bob.read_message(alice_writes[1]) == b""
    h = bob.get_handshake_hash()
    assert h.hex() == v["handshake_hash"]
    channel = b(v["channel_id"])
    for proof, who, role in ((bob.decrypt(alice_writes[2]), "initiator", b"i"),
                             (None, "responder", b"r")):  # fmt: skip
        if proof is None:
            bob_identity = Identity.from_seed(b(v["responder"]["identity_seed"]))
            signature = bob_identity.sign(PROOF_CONTEXT + channel + role + h)
            proof = bob_identity.public_key + signature
            assert bob.encrypt(proof) == bob_writes[1]
        assert proof[:32].hex() == v[who]["identity"]
        assert verify_signature(proof[:32], proof[32:], PROOF_CONTEXT + channel + role + h)
    assert bob.decrypt(alice_writes[3]) == b"\x00" + b(v["payload"])
    assert bob.decrypt(alice_writes[4]) == b"\x03bye"  # links: CLOSE is 3 (no REKEY)


# ------------------------------------------------------------- 10. inline files


def test_inline_file_offers() -> None:
    """PROTOCOL.md "Inline files": the bytes in the ``file`` body (key ``d``) are the
    content, its SHA-256 is the root; a changed byte or a wrong root is refused."""
    for v in load("files")["vectors"]["inline"]:
        wire = b(v["envelope"])
        e = env.parse_envelope(wire)
        env.verify_envelope(
            e, expected_sender=e.sender, expected_recipient=e.recipient, now=v["verify_now"]
        )
        assert e.signed_bytes().hex() == v["signed_bytes"] and e.type == b"file"
        content = b(v["content"])
        assert env.decode_inline(e) == content
        assert hashlib.sha256(content).digest() == b(v["root"]) == env.decode_file(e).root
        assert decode(b(v["body_bencoded"]))[b"d"] == content
        if content:  # a byte of the file changed on the way: no longer its root's
            with pytest.raises(env.EnvelopeError) as info:
                env.parse_envelope(flipped(wire, wire.index(content)))
            assert info.value.code == "bad_body"
        with pytest.raises(env.EnvelopeError) as info:  # however it is signed
            env._check_file({**e.body, b"r": bytes(32)})
        assert info.value.code == "bad_body"


def test_channel_file_message_and_transfer_messages() -> None:
    """PROTOCOL.md "Files in channels": a ``file`` channel message carries the 1:1
    manifest; every transfer message's framed bytes, parsed back and rebuilt."""
    from btchat.channels.messages import file_of
    from btchat.transfer import wire

    data = load("files")["vectors"]
    v = data["channel_message"]
    msg = ChannelMessage.parse(b(v["wire"]), b(v["channel_id"]))
    assert msg.kind == b"file" and msg.signature.hex() == v["s"]
    body = open_content(msg, identity(load("channels")["people"], "alice"), b(v["traffic_key"]))
    assert body is not None and encode(body).hex() == v["body_bencoded"]
    manifest = file_of(body)
    tree = next(t for t in data["trees"] if t["size"] == manifest.size)
    assert manifest.root.hex() == tree["root"] and manifest.piece_size == tree["piece_size"]
    with pytest.raises(MessageError):
        file_of({**body, b"r": b"short"})
    kinds = {m.name: m.value for m in wire.Kind}
    for t in data["transfer"]:
        raw = b(t["bytes"])
        [parsed] = wire.Reader().feed(raw)
        assert wire.encode(parsed) == raw
        assert raw[4] == kinds[t["kind"]] and parsed.offer.hex() == t["offer"] == msg.id.hex()
        assert int.from_bytes(raw[:4], "big") == len(raw) - 4
        if t["kind"] == "BITFIELD":
            assert isinstance(parsed, wire.Bitfield)
            held = [i for i in range(8 * len(parsed.bits)) if parsed.bits[i >> 3] & 0x80 >> (i & 7)]
            assert held == t["held"]
        elif t["kind"] == "HAVE":
            assert isinstance(parsed, wire.Have) and parsed.index == t["index"]
        elif t["kind"] == "LAYER":
            assert isinstance(parsed, wire.Layer)
            assert [x.hex() for x in parsed.hashes] == t["hashes"] == tree["layer"]


# ------------------------------------------------------------------ linking a device


def test_link_codes_infohashes_keys_and_sealed_frames() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from btchat.identity import linking

    data = load("linking")
    for v in data["vectors"]["codes"]:
        code = linking.parse_code(v["code"])
        assert [linking.WORDS.index(w) for w in code.words] == v["word_indices"]
        assert code.password == b(v["password"]) == v["code"].encode()
        assert b(v["infohash_input"]) == b"btchat link rendezvous v1" + v["nameplate"].to_bytes(
            2, "big"
        )
        ih = hashlib.blake2b(b(v["infohash_input"]), digest_size=20, person=b"btchat-link-v1")
        assert ih.digest() == b(v["infohash"]) == linking.link_infohash(v["nameplate"])
    k = data["vectors"]["keys"]
    transcript = b(k["msg_linker"]) + b(k["msg_joiner"])
    assert transcript == b(k["transcript"])
    for name, info in (
        ("confirm_linker", b"btchat link v1 confirm linker"),
        ("confirm_joiner", b"btchat link v1 confirm joiner"),
        ("linker_to_joiner", b"btchat link v1 linker to joiner"),
        ("joiner_to_linker", b"btchat link v1 joiner to linker"),
    ):
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=transcript, info=info)
        assert hkdf.derive(b(k["spake_key"])) == b(k[name]), name
    for side in ("linker", "joiner"):
        mac = hmac.new(b(k[f"confirm_{side}"]), transcript, hashlib.sha256).digest()
        assert mac == b(k[f"{side}_confirmation"])
    f = data["vectors"]["frames"]
    assert b(f["joiner_confirm_frame"]) == b"\x00\x00\x00\x21\x02" + b(k["joiner_confirmation"])
    # The done frame, opened as another implementation would: length, type, AEAD.
    frame = b(f["done_frame_from_linker_n0"])
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4 and frame[4] == 3
    aead = ChaCha20Poly1305(b(k["linker_to_joiner"]))
    assert aead.decrypt(bytes(12), frame[5:], None) == b"\x01" + b(f["done_message"])
    # And by the joiner's core: the frames in order, then a flipped one refused.
    opener = linking.Sealer(b(k["linker_to_joiner"]))
    assert opener.open(frame[5:]) == (True, b(f["done_message"]))
    frames = _link_frames(b(f["two_chunk_frames_from_linker_n1_n2"]))
    assert [len(x) for x in frames] == [data["constants"]["max_frame"], 10 + 2 + 16]
    chunks = [opener.open(x[1:]) for x in frames]
    assert [last for last, _ in chunks] == [False, True]
    assert sum(len(c) for _, c in chunks) == f["two_chunk_message_length"]
    with pytest.raises(linking.LinkError):
        linking.Sealer(b(k["linker_to_joiner"])).open(flipped(frame, 10)[5:])


def _link_frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


# ------------------------------------------------------------------ port mapping (PCP)


def test_pcp_messages() -> None:
    """Requests parse back, with the standard library alone, to their fields (RFC 6887
    sections 7.1 and 11.1); answers decode to theirs; the malformed ones are dropped."""
    import ipaddress
    import struct

    from btchat.net import pcp
    from btchat.net.gateway_udp import Malformed

    data = load("pcp")
    sent = {v["name"]: b(v["bytes"]) for v in data["vectors"] if v["kind"] == "request"}
    for v in data["vectors"]:
        raw = b(v["bytes"])
        if v["kind"] == "request":
            version, op, lifetime, client = struct.unpack("!BBxxI16s", raw[:24])
            assert version == 2 and op == {"announce": 0, "map": 1}[v["op"]]
            assert ipaddress.IPv6Address(client).ipv4_mapped == ipaddress.IPv4Address(
                v["client_ip"]
            )
            if v["op"] == "announce":
                assert len(raw) == 24 and lifetime == 0
                continue
            nonce, proto, internal, external, ext_ip = struct.unpack("!12sB3xHH16s", raw[24:])
            assert (nonce.hex(), proto, internal, external, lifetime) == (
                v["nonce"], {"UDP": 17, "TCP": 6}[v["protocol"]], v["internal_port"],
                v["external_port"], v["lifetime"],
            )  # fmt: skip
            assert ipaddress.IPv6Address(ext_ip).ipv4_mapped == ipaddress.IPv4Address(0)
            continue
        request = sent[v["to"]]
        if v.get("fallback"):
            with pytest.raises(pcp.PcpUnsupported):
                pcp.decode_response(raw, request)
        elif "result" in v:
            with pytest.raises(pcp.PcpError) as err:
                pcp.decode_response(raw, request)
            assert err.value.code == v["result"] and not isinstance(err.value, pcp.PcpUnsupported)
        else:
            got = pcp.decode_response(raw, request)
            want = {k: v[k] for k in v if k not in ("name", "kind", "to", "bytes", "note")}
            assert {k: getattr(got, k) for k in want} == want
            if v["to"] != "announce":
                with pytest.raises(Malformed):  # a flipped nonce byte: another mapping's
                    pcp.decode_response(flipped(raw, 30), request)
    for bad in data["malformed"]:
        with pytest.raises(Malformed):
            pcp.decode_response(b(bad["bytes"]), sent["map_udp"])


def test_dht_proxy_messages() -> None:
    from btchat.codec.bencode import DecodeError
    from btchat.dht import bep44
    from btchat.net import dht_proxy_core as dp
    from btchat.stream.frames import CAPS_DHT

    data = load("dht_proxy")
    assert b(data["constants"]["magic"]) == dp.MAGIC and data["constants"]["caps_bit"] == CAPS_DHT
    by_name = {}
    for v in data["vectors"]:
        message = dp.decode(b(v["bytes"]))
        assert dp.encode(message).hex() == v["bytes"], v["name"]
        by_name[v["name"]] = message
    put, found = by_name["put_mutable"].op, by_name["item_found"].result
    assert put.item.verify() and put.cas == 6
    # The answer's item verifies under the key and salt asked for, and not once altered.
    get = by_name["get_mutable"].op
    item = bep44.MutableItem(get.public_key, get.salt, found.seq, found.v_bencoded, found.signature)
    assert item.verify()
    assert not bep44.MutableItem(
        get.public_key, b"", found.seq, found.v_bencoded, found.signature
    ).verify()
    for bad in data["malformed"]:
        with pytest.raises(DecodeError):
            dp.decode(b(bad["bytes"]))


# ------------------------------------------------------------ candidate records


def test_candidate_record_slot_seal_and_refusals() -> None:
    """Derive the slot with hashlib, check both signatures, open with btchat's code."""
    from btchat.dht import bep44
    from btchat.discovery import candidates as cand

    data = load("candidates")
    v = data["vectors"]["record"]
    secret, a, s, device = b(v["secret"]), b(v["announcer"]), b(v["seeker"]), b(v["device_id"])
    assert b(v["root_input"]) == (
        b"btchat/candidates/v1\x00" + a + s + device + v["epoch"].to_bytes(8, "big")
    )
    root = hashlib.blake2b(b(v["root_input"]), key=secret, digest_size=32).digest()
    seed = hashlib.blake2b(root, digest_size=32, person=b"btchat-cand-sig").digest()
    aead = hashlib.blake2b(root, digest_size=32, person=b"btchat-cand-enc").digest()
    assert (root.hex(), seed.hex(), aead.hex()) == (v["root"], v["seed"], v["aead_key"])
    public = _ed25519(seed).public_key().public_bytes_raw()
    assert public.hex() == v["public_key"]
    assert hashlib.sha1(public).hexdigest() == v["target"]
    assert b(v["signed_message"]) == b"btchat candidate record v1\x00" + b(v["unsigned"])
    assert verify_signature(a, b(v["signature"]), b(v["signed_message"]))
    padded = b(v["padded"])
    assert len(padded) == data["constants"]["plaintext_size"]
    assert padded == b(v["plaintext"]).ljust(len(padded), b"\x00")
    assert decode(b(v["plaintext"]))[b"s"].hex() == v["signature"]
    assert hashlib.blake2b(padded, key=aead, digest_size=24).hexdigest() == v["nonce"]
    value = b(v["v"])
    assert len(value) == data["constants"]["value_size"] and value[:24].hex() == v["nonce"]
    assert b(v["v_bencoded"]) == encode(value)
    item = bep44.MutableItem(public, b"", v["seq"], b(v["v_bencoded"]), b(v["item_signature"]))
    assert item.verify()
    slot = cand.slot(secret, a, s, device, v["epoch"])
    record = cand.open_record(value, slot, a, s, device, v["epoch"])
    got = [
        {"kind": c.kind, "transport": c.transport, "host": c.host, "port": c.port}
        for c in record.candidates
    ]
    assert got == v["candidates"] and record.t == v["seq"]
    for index in (0, 30, len(value) - 1):
        with pytest.raises(cand.CandidateError):
            cand.open_record(flipped(value, index), slot, a, s, device, v["epoch"])
    for bad in data["vectors"]["refused"]:
        with pytest.raises(cand.CandidateError) as caught:
            cand.open_record(b(bad["v"]), slot, a, s, device, v["epoch"])
        assert caught.value.reason == bad["reason"], bad["what"]
    contexts = {k.CONTEXT for k in Signed.__subclasses__()}
    assert cand.RECORD_CONTEXT not in contexts

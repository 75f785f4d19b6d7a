"""Write the protocol's test vectors, docs/vectors/*.json, from btchat's own code.

Run ``python tests/vectors/make_vectors.py`` (with btchat importable) after a change that
is meant to alter a format; ``tests/test_vectors.py`` fails whenever the committed files
and this generator disagree, so a format cannot drift silently.

How this works: every input is fixed (key seeds, device ids, times, nonces, ephemeral
keys), so the output is the same on every run. Where btchat's code draws randomness it
takes it through a keyword parameter (``nonce=``, ``secret=``, ``msg_id=``). A libsodium
sealed box draws an ephemeral key that no API lets us fix, so sealed boxes are built here
from their definition (``crypto_box_seal``: ephemeral public key, then ``crypto_box``
with nonce ``BLAKE2b-192(epk || pk)``) with a fixed ephemeral key, and the test opens
them with btchat's code. vodozemac's Olm draws its keys inside Rust and cannot be
seeded: the Olm pre-key message is therefore made once and then kept (read back from
the existing file) as a decrypt-only vector.

Every file has ``version`` (of the vector file), ``description``, ``fields`` (what each
vector key means) and ``vectors``. Bytes are lowercase hex; text is JSON text.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import vodozemac
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_box,
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)

from btchat.channels import keys as channel_keys
from btchat.channels.chatfile import ChatFile
from btchat.channels.link import PROTOCOL_NAME as LINK_PROTOCOL
from btchat.channels.link import Link, link_prologue
from btchat.channels.members import MemberList
from btchat.channels.messages import CONTEXT as CHANNEL_MESSAGE_CONTEXT
from btchat.channels.messages import ChannelMessage, seal_message
from btchat.codec.bencode import DecodeError, encode
from btchat.dht import bep44
from btchat.identity import idtext, linking, pow, rendezvous, safety
from btchat.identity.devices import REVOKED_SALT, encode_revoked
from btchat.identity.keys import DEVICE_CERT_CONTEXT, DeviceKey, Identity
from btchat.messaging import envelope as env
from btchat.messaging import own_sync
from btchat.messaging.messages import MessageRow
from btchat.node import requests
from btchat.node.peering import DEVICES_SALT, encode_device_list
from btchat.offline import packet
from btchat.offline.ratchet import PREKEY_SALT, Bundle, device_prekey_salt, pickle_key
from btchat.session import core as session_core
from btchat.session.noise_ik import PROTOCOL_NAME as SESSION_PROTOCOL
from btchat.stream.core import SecureStream
from btchat.transfer import wire
from btchat.transfer.download import Bitmap
from btchat.transfer.manifest import Manifest
from btchat.transfer.names import safe_name
from btchat.transfer.tree import PieceHasher

VECTOR_DIR = Path(__file__).resolve().parents[2] / "docs" / "vectors"
FILE_VERSION = 1

# ----------------------------------------------------------------------------- inputs

ALICE_SEED = bytes([0x01]) * 32
BOB_SEED = bytes([0x02]) * 32
CAROL_SEED = bytes([0x03]) * 32
ALICE = Identity.from_seed(ALICE_SEED)
BOB = Identity.from_seed(BOB_SEED)
CAROL = Identity.from_seed(CAROL_SEED)
ALICE_DEVICE = DeviceKey.from_bytes(bytes([0x11]) * 32, bytes([0xA1]) * 16)
ALICE_DEVICE_2 = DeviceKey.from_bytes(bytes([0x12]) * 32, bytes([0xA2]) * 16)
BOB_DEVICE = DeviceKey.from_bytes(bytes([0x21]) * 32, bytes([0xB1]) * 16)
#: 2023-11-14 22:13:20.25 UTC: exact in binary, so ``int(now * 1000)`` is exact.
NOW = 1700000000.25
CREATED = 1700000000
#: Long enough that its offline packet takes two mailbox chunks.
LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 30


def hx(data: bytes) -> str:
    return bytes(data).hex()


def _people() -> dict[str, Any]:
    return {
        name: {"seed": hx(who.seed), "public_key": hx(who.public_key)}
        for name, who in (("alice", ALICE), ("bob", BOB), ("carol", CAROL))
    }


def _file(description: str, fields: dict[str, str], vectors: Any, **extra: Any) -> dict[str, Any]:
    return {
        "version": FILE_VERSION,
        "description": description,
        "fields": fields,
        **extra,
        "vectors": vectors,
    }


def sealed_box(recipient_x25519: bytes, message: bytes, ephemeral_secret: bytes) -> bytes:
    """libsodium ``crypto_box_seal`` with a chosen ephemeral key (see the module text)."""
    epk = crypto_scalarmult_base(ephemeral_secret)
    nonce = hashlib.blake2b(epk + recipient_x25519, digest_size=24).digest()
    return epk + crypto_box(message, nonce, recipient_x25519, ephemeral_secret)


def _sealed_vector(recipient: Identity, message: bytes, ephemeral_secret: bytes) -> dict[str, str]:
    rx = crypto_sign_ed25519_pk_to_curve25519(recipient.public_key)
    epk = crypto_scalarmult_base(ephemeral_secret)
    return {
        "recipient_x25519": hx(rx),
        "ephemeral_secret": hx(ephemeral_secret),
        "ephemeral_public": hx(epk),
        "box_nonce": hx(hashlib.blake2b(epk + rx, digest_size=24).digest()),
        "sealed": hx(sealed_box(rx, message, ephemeral_secret)),
    }


# --------------------------------------------------------------------------- 1. IDs


def family_ids() -> dict[str, Any]:
    vectors = []
    for name, who in (("alice", ALICE), ("bob", BOB)):
        pk = who.public_key
        vectors.append(
            {
                "name": name,
                "public_key": hx(pk),
                "checksum_input": hx(idtext.CHECKSUM_CONTEXT + pk),
                "checksum": hx(idtext.id_checksum(pk)),
                "base32_input": hx(pk + idtext.id_checksum(pk)),
                "id": idtext.format_id(pk),
                "id_grouped": idtext.format_id(pk, grouped=True),
                "link": idtext.format_uri(pk),
                "link_named": idtext.format_uri(pk, "Alice Café & Co"),
                "link_named_name": "Alice Café & Co",
            }
        )
    pk = ALICE.public_key
    ident = idtext.format_id(pk)
    accepted = [
        ident.upper(),
        idtext.format_id(pk, grouped=True),
        "  " + ident[:10] + "\u2013" + ident[10:] + "\u200b ",
        "bt" + ident[2:].replace("o", "0").replace("b", "8"),
    ]
    wrong = ident[:20] + ("a" if ident[20] != "a" else "b") + ident[21:]
    refused = [wrong, ident[:-1], ident + "a", ident[:5] + "1" + ident[6:], "xx" + ident[2:]]
    return _file(
        "User IDs as text (checksummed base32 of the Ed25519 key) and btchat: contact links.",
        {
            "public_key": "32-byte Ed25519 identity key",
            "checksum_input": "exact BLAKE2b-512 input: ASCII 'btchat-id-v1' || public_key",
            "checksum": "BLAKE2b-512(checksum_input)[0:3], unkeyed, no personalisation",
            "base32_input": "public_key || checksum: 35 bytes, base32 without padding -> 56 chars",
            "id": "'bt' || lowercase RFC 4648 base32 of base32_input",
            "id_grouped": "the display form: 'bt' then groups of 4 characters, joined by '-'",
            "link": "'btchat:' || id",
            "link_named": "link with ?name= (UTF-8, percent-encoded, RFC 3986 unreserved kept)",
            "accepted": "texts that MUST parse to alice's key (case, separators, look-alikes)",
            "refused": "texts that MUST be refused (typo caught by checksum, length, '1', prefix)",
        },
        vectors,
        people=_people(),
        parsing={"public_key": hx(pk), "accepted": accepted, "refused": refused},
    )


# ------------------------------------------------------------------ 2. device lists


def _cert_vector(identity: Identity, device: DeviceKey, created: int) -> dict[str, Any]:
    cert = identity.certify(device, created)
    unsigned = {b"c": created, b"d": device.device_id, b"i": identity.public_key}
    unsigned[b"k"] = device.public_key
    return {
        "identity_seed": hx(identity.seed),
        "identity": hx(identity.public_key),
        "device_private": hx(device.private_bytes),
        "device_key": hx(device.public_key),
        "device_id": hx(device.device_id),
        "created": created,
        "unsigned_bencoded": hx(encode(unsigned)),
        "signed_bytes": hx(cert.signed_bytes()),
        "signature": hx(cert.signature),
        "certificate": hx(cert.encode()),
    }


def family_devices() -> dict[str, Any]:
    certs = [ALICE.certify(ALICE_DEVICE, CREATED), ALICE.certify(ALICE_DEVICE_2, CREATED + 60)]
    value = encode_device_list(certs)
    seq = CREATED + 120
    item = bep44.sign_mutable(ALICE.private_key, value, seq, DEVICES_SALT)
    return _file(
        "Device certificates (identity signs a device's X25519 key) and the device list "
        "published as a BEP 44 mutable item.",
        {
            "identity": "Ed25519 identity public key (i)",
            "device_private": "X25519 private key of the device (input only)",
            "device_key": "X25519 public key of the device (k), its Noise static key",
            "device_id": "16-byte device id (d)",
            "created": "unix seconds (c)",
            "unsigned_bencoded": "bencode({c, d, i, k}), canonical (keys sorted)",
            "signed_bytes": "'btchat device certificate v1' 0x00 || unsigned_bencoded",
            "signature": "Ed25519 by identity over signed_bytes (s)",
            "certificate": "bencode({c, d, i, k, s}): the certificate's wire form",
            "device_list.value": "BEP 44 v: bencode({certs: [certificate, ...]}); each "
            "entry is a BYTE STRING holding a bencoded certificate, not a dictionary",
            "device_list.signing_buffer": "BEP 44 signing buffer (salt, seq, v)",
        },
        {
            "certificates": [
                _cert_vector(ALICE, ALICE_DEVICE, CREATED),
                _cert_vector(ALICE, ALICE_DEVICE_2, CREATED + 60),
                _cert_vector(BOB, BOB_DEVICE, CREATED),
            ],
            "device_list": {
                "identity": hx(ALICE.public_key),
                "salt": hx(DEVICES_SALT),
                "seq": seq,
                "value": hx(value),
                "target": hx(bep44.mutable_target(ALICE.public_key, DEVICES_SALT)),
                "signing_buffer": hx(bep44.signing_buffer(seq, value, DEVICES_SALT)),
                "signature": hx(item.signature),
            },
        },
        context=hx(DEVICE_CERT_CONTEXT),
    )


def family_own_devices() -> dict[str, Any]:
    """Several devices of one identity (1.4): the revocation list, our identity's
    rendezvous with itself, and the payloads between our own devices."""
    revoked = [ALICE_DEVICE_2.device_id, bytes([0xA3]) * 16]
    value = encode_revoked(revoked)
    seq = CREATED + 300
    item = bep44.sign_mutable(ALICE.private_key, value, seq, REVOKED_SALT)
    row = MessageRow(
        bytes([0x55]) * 16, BOB.public_key, BOB.public_key, "in",
        int(NOW * 1000), 7, "text", "hello, both of you", "delivered", int(NOW * 1000),
    )  # fmt: skip
    mine = replace(row, id=bytes([0x56]) * 16, sender=ALICE.public_key, direction="out",
                   lamport=8, text="from my other device", state="sent")  # fmt: skip
    batch, upto = own_sync.encode_batch([(41, row), (42, mine)])
    # 1.5: the same batch from a device whose outbox still holds its message for Bob.
    pending = env.create(
        ALICE, ALICE_DEVICE_2.device_id, BOB.public_key, env.TEXT,
        env.text_body("from my other device"), lamport=8, now=NOW,
        msg_id=mine.id, nonce=bytes([0x57]) * 16,
    )  # fmt: skip
    carried, _ = own_sync.encode_batch(
        [(41, row), (42, mine)], {mine.id: env.encode_envelope(pending)}
    )
    change = own_sync.ContactChange(
        int(NOW * 1000), ALICE_DEVICE.device_id, BOB.public_key, "bob", False, True, False
    )
    team = ChatFile.create("team", now=CREATED, secret=bytes([0x77]) * 32)
    joined = own_sync.ChannelChange(
        int(NOW * 1000), ALICE_DEVICE.device_id, team.channel_id, True, team.to_bytes()
    )
    left = own_sync.ChannelChange(
        int(NOW * 1000) + 1, ALICE_DEVICE_2.device_id, bytes([0x78]) * 32, False
    )
    return _file(
        "One identity on several devices: the revocation list (a BEP 44 mutable item), "
        "the rendezvous of an identity with itself (how its devices find each other), "
        "and the payloads sessions between them carry.",
        {
            "revocation_list.value": "BEP 44 v: bencode({rev: [device id, ...]}), ids sorted",
            "revocation_list.signing_buffer": "BEP 44 signing buffer (salt, seq, v)",
            "self_rendezvous": "pairwise secret of an identity with itself (as for a contact)",
            "sync": "a batch: bencode({m: [[id, peer, sender, direction, ts, lamport, type, "
            "text]...], t: sync, u: last seq})",
            "sync_with_envelope": "a batch (1.5) with e: [the signed envelope of each "
            "outgoing row still in the sender's outbox]",
            "synced": "its acknowledgement: bencode({t: synced, u: seq})",
            "state": "bencode({i: [message id, ...], p: contact key, s: delivered or read, "
            "t: state}) (1.5): the contact acknowledged our messages",
            "received": "bencode({c: [[contact key, n]...], t: received}) (1.6): every "
            "offline packet of that contact up to counter n reached the sender",
            "devices": "bencode({c: [certificate, ...], r: [revoked id, ...], t: devices})",
            "contacts": "bencode({c: [[key, petname, flags, changed_ms, device]...], "
            "t: contacts}); flags 1 blocked, 2 verified, 4 removed",
            "read": "bencode({i: [message id, ...], p: contact key, t: read})",
            "profile": "bencode({a: avatar hash or empty, c: changed_ms, d: device, "
            "n: name, s: status or empty, t: profile})",
            "names": "bencode({n: [[device id, name, changed_ms, by device id]...], "
            "t: names}) (1.5): what we call our devices, each last-writer-wins",
            "channels": "bencode({c: [[channel id, flags, changed_ms, device, chatfile, "
            "[[generation, secret]...], member list]...], t: channels}); flags 1 joined "
            "(a leave carries no file, keys or list)",
        },
        {
            "revocation_list": {
                "identity": hx(ALICE.public_key),
                "revoked": [hx(i) for i in sorted(revoked)],
                "salt": hx(REVOKED_SALT),
                "seq": seq,
                "value": hx(value),
                "target": hx(bep44.mutable_target(ALICE.public_key, REVOKED_SALT)),
                "signing_buffer": hx(bep44.signing_buffer(seq, value, REVOKED_SALT)),
                "signature": hx(item.signature),
            },
            "self_rendezvous": _pair_vector(ALICE, ALICE),
            "sync": {"rows": [41, 42], "upto": upto, "payload": hx(batch)},
            "sync_with_envelope": {
                "envelope": hx(env.encode_envelope(pending)),
                "payload": hx(carried),
            },
            "synced": {"upto": upto, "payload": hx(own_sync.encode_synced(upto))},
            "state": {
                "state": "delivered",
                "payload": hx(own_sync.encode_state(BOB.public_key, "delivered", [mine.id])[0]),
            },
            "received": {
                "n": int(NOW * 1000),
                "payload": hx(own_sync.encode_received([(BOB.public_key, int(NOW * 1000))])[0]),
            },
            "devices": {
                "payload": hx(
                    own_sync.encode_devices(
                        [ALICE.certify(ALICE_DEVICE, CREATED).encode()], frozenset(revoked)
                    )
                )
            },
            "contacts": {"payload": hx(own_sync.encode_contacts([change]))},
            "channels": {
                "joined": hx(team.channel_id),
                "left": hx(left.channel),
                "payload": hx(own_sync.encode_channels([joined, left])[0]),
            },
            "read": {"payload": hx(own_sync.encode_read(BOB.public_key, [row.id])[0])},
            "profile": {
                "name": "Alice",
                "payload": hx(
                    own_sync.encode_profile(
                        own_sync.ProfileChange(
                            int(NOW * 1000), ALICE_DEVICE.device_id, "Alice", None, None
                        )
                    )
                ),
            },
            "names": {
                "device": hx(ALICE_DEVICE.device_id),
                "name": "laptop",
                "payload": hx(
                    own_sync.encode_names(
                        [
                            own_sync.DeviceName(
                                ALICE_DEVICE.device_id,
                                "laptop",
                                int(NOW * 1000),
                                ALICE_DEVICE.device_id,
                            )
                        ]
                    )
                ),
            },
        },
    )


# ------------------------------------------------------------------- 3. rendezvous


def _pair_vector(me: Identity, them: Identity) -> dict[str, Any]:
    my_x = crypto_sign_ed25519_sk_to_curve25519(me.seed + me.public_key)
    their_x = crypto_sign_ed25519_pk_to_curve25519(them.public_key)
    shared = crypto_scalarmult(my_x, their_x)
    first, second = sorted((me.public_key, them.public_key))
    return {
        "my_seed": hx(me.seed),
        "my_public": hx(me.public_key),
        "their_public": hx(them.public_key),
        "my_x25519_private": hx(my_x),
        "their_x25519_public": hx(their_x),
        "x25519_shared": hx(shared),
        "blake2b_input": hx(shared + first + second),
        "secret": hx(rendezvous.pairwise_secret(me, them.public_key)),
    }


def family_rendezvous() -> dict[str, Any]:
    secret = rendezvous.pairwise_secret(ALICE, BOB.public_key)
    a, b = ALICE.public_key, BOB.public_key
    base = 472222 * rendezvous.EPOCH_SECONDS  # 2023-11-14 22:00:00 UTC
    infohashes = []
    for epoch in (0, 472221, 472222, 472223):
        for announcer, seeker, label in ((a, b, "alice_for_bob"), (b, a, "bob_for_alice")):
            data = rendezvous.INFOHASH_CONTEXT + announcer + seeker + epoch.to_bytes(8, "big")
            infohashes.append(
                {
                    "direction": label,
                    "epoch": epoch,
                    "announcer": hx(announcer),
                    "seeker": hx(seeker),
                    "blake2b_message": hx(data),
                    "infohash": hx(
                        rendezvous.rendezvous_infohash(secret, announcer, seeker, epoch)
                    ),
                }
            )
    offsets = (0, 1, 599, 600, 1800, 2999, 3000, 3599)
    targets = []
    for off in offsets:
        t = base + off
        targets.append(
            {
                "now": t,
                "epoch": rendezvous.epoch_of(t),
                "seconds_into_epoch": off,
                "alice_announces": [hx(x) for x in rendezvous.announce_targets(secret, a, b, t)],
                "bob_looks_up": [hx(x) for x in rendezvous.lookup_targets(secret, b, a, t)],
            }
        )
    person = rendezvous.PAIRWISE_PERSON
    return _file(
        "The pairwise secret of two contacts and their directional, hourly rendezvous "
        "infohashes, with announce and lookup target sets at and near epoch boundaries.",
        {
            "my_x25519_private": "crypto_sign_ed25519_sk_to_curve25519(seed || public): "
            "SHA-512(seed)[0:32], clamped",
            "their_x25519_public": "crypto_sign_ed25519_pk_to_curve25519(their_public) "
            "(Edwards y -> Montgomery u = (1+y)/(1-y))",
            "x25519_shared": "X25519(my_x25519_private, their_x25519_public); all-zero is refused",
            "blake2b_input": "x25519_shared || min(pk_a, pk_b) || max(pk_a, pk_b) (byte order)",
            "secret": "BLAKE2b, 32-byte digest, UNKEYED, personalisation = person_padded, "
            "of blake2b_input; same on both sides",
            "blake2b_message": "'btchat rendezvous v1' (no terminating byte) || announcer || "
            "seeker || u64be(epoch)",
            "infohash": "BLAKE2b, 20-byte digest, KEYED with the 32-byte secret, of "
            "blake2b_message (no personalisation)",
            "epoch": "floor(unix seconds / 3600)",
            "alice_announces": "announce_peer targets, in this order: current epoch, then "
            "next epoch when seconds_into_epoch >= 3000",
            "bob_looks_up": "get_peers targets for alice's announces, in this order: current "
            "epoch, previous epoch when seconds_into_epoch < 600 (and epoch > 0), next epoch "
            "when seconds_into_epoch >= 3000",
        },
        {
            "pairwise": [_pair_vector(ALICE, BOB), _pair_vector(BOB, ALICE)],
            "infohashes": infohashes,
            "targets": targets,
        },
        people=_people(),
        constants={
            "epoch_seconds": rendezvous.EPOCH_SECONDS,
            "overlap_seconds": rendezvous.OVERLAP_SECONDS,
            "person": hx(person),
            "person_padded": hx(person.ljust(16, b"\x00")),
            "infohash_context": hx(rendezvous.INFOHASH_CONTEXT),
        },
    )


# -------------------------------------------------------------------- 4. envelopes


#: Who sends: identity, device, and the other side.
_PARTIES = {"alice": (ALICE, ALICE_DEVICE, BOB), "bob": (BOB, BOB_DEVICE, ALICE)}


def _envelope_vector(
    label: str,
    who: str,
    kind: bytes,
    body: dict[bytes, Any],
    *,
    lamport: int,
    now: float,
    seq: int,
) -> dict[str, Any]:
    """One envelope, its id and nonce fixed from ``seq`` (so its receipts can name it)."""
    sender, device, to = _PARTIES[who]
    e = env.create(
        sender,
        device.device_id,
        to.public_key,
        kind,
        body,
        lamport=lamport,
        now=now,
        msg_id=bytes([seq]) * 16,
        nonce=bytes([0xF0 + seq]) * 16,
    )
    return {
        "label": label,
        "from": hx(e.sender),
        "dev": hx(e.device),
        "to": hx(e.recipient),
        "id": hx(e.id),
        "n": hx(e.nonce),
        "ts": e.ts_ms,
        "lc": e.lamport,
        "type": e.type.decode("ascii"),
        "body_bencoded": hx(encode(e.body)),
        "signed_bytes": hx(e.signed_bytes()),
        "sig": hx(e.signature),
        "envelope": hx(env.encode_envelope(e)),
        "verify_now": now,
    }


def family_envelopes() -> dict[str, Any]:
    text_id = bytes([1]) * 16  # the first envelope's id (seq 1)
    # (label, sender, type, body, Lamport value, seconds after NOW), in the order sent.
    conversation: list[tuple[str, str, bytes, dict[bytes, Any], int, float]] = [
        ("alice's first text (alice's clock 0 -> 1)", "alice", env.TEXT,
         env.text_body("Hello, Bob! Grüße 👋"), 1, 0),
        ("bob's delivered receipt (bob received lc 1: clock max(0, 1) + 1 = 2; sends 3)",
         "bob", env.RECEIPT, env.receipt_body([text_id], b"delivered"), 3, 0.25),
        ("bob's read receipt (next value: 4)", "bob", env.RECEIPT,
         env.receipt_body([text_id], b"read"), 4, 5),
        ("bob types (5)", "bob", env.TYPING, env.typing_body(True), 5, 6),
        ("alice's presence with a note (alice received 3, 4, 5: clock 6; sends 7)", "alice",
         env.PRESENCE, env.presence_body("away", 1700000000000, "lunch ☕"), 7, 7),
        ("alice's presence without a note (8)", "alice", env.PRESENCE,
         env.presence_body("online", 1700000008250), 8, 8),
        ("alice's long text (9): the plaintext of the offline packet, three mailbox chunks",
         "alice", env.TEXT, env.text_body(LONG_TEXT), 9, 9),
    ]  # fmt: skip
    vectors = [
        _envelope_vector(label, who, kind, body, lamport=lc, now=NOW + dt, seq=i + 1)
        for i, (label, who, kind, body, lc, dt) in enumerate(conversation)
    ]
    return _file(
        "Signed 1:1 envelopes: text, receipts (delivered, read), typing, presence. Every "
        "envelope a sender creates, of any type, takes the next value of its Lamport clock "
        "for the conversation; every verified envelope received sets the receiver's clock "
        "to max(clock, lc) + 1.",
        {
            "from": "sender identity key (32)",
            "dev": "sender device id (16)",
            "to": "recipient identity key (32)",
            "id": "message id (16, random in real use; fixed here)",
            "n": "nonce (16, random in real use; fixed here)",
            "ts": "sender's clock, unix milliseconds (floor(now * 1000))",
            "lc": "Lamport value",
            "type": "envelope type",
            "body_bencoded": "bencode(body)",
            "signed_bytes": "'btchat envelope v1' 0x00 || bencode(every key except sig)",
            "sig": "Ed25519 by from over signed_bytes",
            "envelope": "the wire form: bencode(every key including sig)",
            "verify_now": "a receiver time (unix s) at which the envelope verifies",
        },
        vectors,
        people=_people(),
        devices={
            "alice": hx(ALICE_DEVICE.device_id),
            "bob": hx(BOB_DEVICE.device_id),
        },
        constants={"context": hx(env.ENVELOPE_CONTEXT), "version": env.VERSION},
    )


# ---------------------------------------------------------------- 5. safety numbers


def _fingerprint_steps(pk: bytes) -> dict[str, Any]:
    prefix = safety.FINGERPRINT_VERSION.to_bytes(2, "big") + pk
    digest = b""
    first = b""
    for i in range(safety.FINGERPRINT_ITERATIONS):
        digest = hashlib.sha512(prefix + digest).digest()
        if i == 0:
            first = digest
    return {
        "public_key": hx(pk),
        "iteration_1_input": hx(prefix),
        "iteration_1_digest": hx(first),
        "iteration_2_input": hx(prefix + first),
        "final_digest": hx(digest),
        "digits": safety.fingerprint_digits(pk),
    }


def family_safety() -> dict[str, Any]:
    a, b = ALICE.public_key, BOB.public_key
    return _file(
        "Safety numbers: 30 digits per key from 5200 iterations of SHA-512; the lower "
        "key's digits first.",
        {
            "iteration_1_input": "u16be(version = 0) || public_key: the digest starts EMPTY "
            "(initial value: zero bytes, not 64 zero bytes)",
            "iteration_2_input": "u16be(0) || public_key || previous digest; iterate 5200 times",
            "final_digest": "digest after 5200 iterations",
            "digits": "for i in 0..5: u40be(final_digest[5i:5i+5]) mod 100000, 5 digits, "
            "zero-padded",
            "safety_number": "digits(min key) || digits(max key), 12 groups of 5 joined by ' '",
        },
        {
            "fingerprints": [_fingerprint_steps(a), _fingerprint_steps(b)],
            "pair": {"a": hx(a), "b": hx(b), "safety_number": safety.safety_number(a, b)},
        },
        constants={
            "version": safety.FINGERPRINT_VERSION,
            "iterations": safety.FINGERPRINT_ITERATIONS,
        },
    )


# --------------------------------------------------------------- 6. contact requests


def family_requests() -> dict[str, Any]:
    recipient, sender = BOB, ALICE
    day = requests.day_of(NOW)
    inbox = bytes(range(0xA0, 0xA0 + requests.INBOX_SIZE))
    slots = []
    for index in range(requests.SLOTS):
        seed_input = recipient.public_key + day.to_bytes(8, "big") + bytes([index]) + inbox
        key = requests.slot_key(recipient.public_key, day, index, inbox)
        slots.append(
            {
                "index": index,
                "seed_input": hx(seed_input),
                "seed": hx(key.private_bytes_raw()),
                "public_key": hx(key.public_key().public_bytes_raw()),
            }
        )
    challenge = requests.pow_challenge(recipient.public_key, sender.public_key, day)
    nonce = pow.solve(challenge, requests.REQUEST_POW_BITS)
    cert = sender.certify(ALICE_DEVICE, CREATED)
    fields: dict[bytes, Any] = {
        b"from": sender.public_key,
        b"to": recipient.public_key,
        b"cert": cert.encode(),
        b"name": b"Alice",
        b"note": b"We met at the conference, remember?",
        b"ts": int(NOW * 1000),
        b"pow": nonce,
    }
    signed = requests.REQUEST_CONTEXT + encode(fields)
    fields[b"sig"] = sender.sign(signed)
    plaintext = encode(fields)
    return _file(
        "Contact requests: daily slots under the recipient's published inbox value, hashcash "
        "proof of work, the signed request and its sealed box.",
        {
            "day": "floor(unix seconds / 86400)",
            "inbox": "16 bytes, field 'i' of the recipient's signed profile (BEP 44, salt "
            "'btchat/profile')",
            "seed_input": "recipient || u64be(day) || u8(index) || inbox",
            "seed": "BLAKE2b, 32-byte digest, unkeyed, personalisation 'btchat-reqslot' "
            "(zero-padded to 16 bytes), of seed_input: the slot's Ed25519 seed",
            "public_key": "the slot's BEP 44 key (no salt)",
            "pow_challenge": "'btchat-request' || recipient || sender || u64be(day)",
            "pow_input": "'btchat-pow-v1' || pow_challenge || u64be(pow)",
            "pow_hash": "BLAKE2b-256 (unkeyed, no personalisation) of pow_input; its first "
            "pow_bits bits are zero",
            "pow": "an INTEGER in the bencoded request (i...e), 0 <= pow < 2^64; hashed as "
            "8 bytes big-endian. Senders use the smallest that works (this one).",
            "signed_bytes": "'btchat contact request v1' 0x00 || bencode(every key except sig)",
            "plaintext": "bencode(request with sig): what is sealed",
            "sealed": "crypto_box_seal(plaintext, recipient_x25519): ephemeral public key "
            "(32) || crypto_box(plaintext, box_nonce, recipient_x25519, ephemeral_secret)",
            "open_now": "a recipient time (unix s) at which the request is accepted",
        },
        {
            "slots": {
                "recipient": hx(recipient.public_key),
                "day": day,
                "inbox": hx(inbox),
                "slots": slots,
            },
            "request": {
                "recipient": hx(recipient.public_key),
                "sender": hx(sender.public_key),
                "day": day,
                "pow_bits": requests.REQUEST_POW_BITS,
                "pow_challenge": hx(challenge),
                "pow_input": hx(pow.POW_CONTEXT + challenge + nonce.to_bytes(8, "big")),
                "pow": nonce,
                "pow_hash": hx(pow.pow_hash(challenge, nonce)),
                "fields": {
                    "from": hx(sender.public_key),
                    "to": hx(recipient.public_key),
                    "cert": hx(cert.encode()),
                    "name": "Alice",
                    "note": "We met at the conference, remember?",
                    "ts": int(NOW * 1000),
                    "pow": nonce,
                },
                "signed_bytes": hx(signed),
                "sig": hx(fields[b"sig"]),
                "plaintext": hx(plaintext),
                "request_id": hx(requests.request_id(sender.public_key, int(NOW * 1000))),
                **_sealed_vector(recipient, plaintext, bytes([0xE1]) * 32),
                "open_now": NOW + 60,
            },
        },
        people=_people(),
    )


# ------------------------------------------------------------------------ 7. offline


def _existing(name: str) -> dict[str, Any] | None:
    path = VECTOR_DIR / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _olm_fixture(plaintext: bytes) -> dict[str, Any]:
    """Bob's Olm account and Alice's pre-key message to it: made once, then kept."""
    old = _existing("offline")
    kept = old["vectors"].get("olm_prekey") if old else None
    if kept and kept["plaintext"] == hx(plaintext) and "bob_fallback_key" in kept:
        return dict(kept)
    key = pickle_key(BOB)
    bob = vodozemac.Account()
    bob.generate_fallback_key()
    fallback = next(iter(bob.fallback_key.values()))
    bob.generate_one_time_keys(1)
    one_time = next(iter(bob.one_time_keys.values()))
    bob.mark_keys_as_published()
    alice = vodozemac.Account()
    session = alice.create_outbound_session(bob.curve25519_key, one_time)
    message_type, body = session.encrypt(plaintext).to_parts()
    return {
        "bob_account_pickle": bob.pickle(key),
        "bob_pickle_key": hx(key),
        "bob_olm_key": hx(bytes(bob.curve25519_key.to_bytes())),
        "bob_one_time_key": hx(bytes(one_time.to_bytes())),
        "bob_fallback_key": hx(bytes(fallback.to_bytes())),
        "alice_olm_key": hx(bytes(alice.curve25519_key.to_bytes())),
        "message_type": int(message_type),
        "body": hx(bytes(body)),
        "plaintext": hx(plaintext),
    }


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _olm_fields(data: bytes) -> dict[str, Any]:
    """The protobuf-style fields after the version byte of an Olm message (Olm v1)."""
    names = {0x0A: "one_time_key", 0x12: "base_key", 0x1A: "identity_key", 0x22: "message"}
    out: dict[str, Any] = {"version": data[0]}
    pos = 1
    while pos < len(data):
        tag = data[pos]
        if tag & 7 == 0:
            out[f"tag_{tag:02x}"], pos = _varint(data, pos + 1)
            continue
        length, start = _varint(data, pos + 1)
        out[names.get(tag, f"tag_{tag:02x}")] = hx(data[start : start + length])
        pos = start + length
    return out


def _inner_olm(message: bytes) -> dict[str, Any]:
    """An Olm normal message: version, ratchet key (0x0a), chain index (0x10), ciphertext
    (0x22), then an 8-byte truncated HMAC-SHA256."""
    body, mac = message[:-8], message[-8:]
    names = {0x0A: "ratchet_key", 0x22: "ciphertext"}
    out: dict[str, Any] = {"version": body[0]}
    pos = 1
    while pos < len(body):
        tag = body[pos]
        if tag == 0x10:
            out["chain_index"], pos = _varint(body, pos + 1)
            continue
        length, start = _varint(body, pos + 1)
        out[names.get(tag, f"tag_{tag:02x}")] = hx(body[start : start + length])
        pos = start + length
    out["mac"] = hx(mac)
    return out


#: Bob's two devices in the packet v2 vectors, and the packet key (fixed here; random
#: for every packet in use).
V2_DEVICES = (bytes([0xB1]) * 16, bytes([0xB2]) * 16)
V2_PACKET_KEY = bytes(range(0x40, 0x60))


def _olm_v2_fixture() -> dict[str, Any]:
    """Bob's two device accounts, alice's account and her wraps of the packet key: Olm
    draws its keys inside the library, so they are made once, then kept."""
    old = _existing("offline_v2")
    kept = old["vectors"].get("olm") if old else None
    if kept and kept["packet_key"] == hx(V2_PACKET_KEY):
        return dict(kept)
    key = pickle_key(BOB)
    alice = vodozemac.Account()
    devices = []
    for device_id in V2_DEVICES:
        account = vodozemac.Account()
        account.generate_fallback_key()
        fallback = next(iter(account.fallback_key.values()))
        account.mark_keys_as_published()
        session = alice.create_outbound_session(account.curve25519_key, fallback)
        message_type, body = session.encrypt(V2_PACKET_KEY).to_parts()
        devices.append(
            {
                "device_id": hx(device_id),
                "account_pickle": account.pickle(key),
                "olm_key": hx(bytes(account.curve25519_key.to_bytes())),
                "fallback_key": hx(bytes(fallback.to_bytes())),
                "wrap_type": int(message_type),
                "wrap": hx(bytes(body)),
            }
        )
    return {
        "bob_pickle_key": hx(key),
        "alice_olm_key": hx(bytes(alice.curve25519_key.to_bytes())),
        "packet_key": hx(V2_PACKET_KEY),
        "devices": devices,
    }


def family_offline_v2() -> dict[str, Any]:
    plaintext = bytes.fromhex(family_envelopes()["vectors"][-1]["envelope"])
    olm = _olm_v2_fixture()
    _, ciphertext = packet.seal_envelope(plaintext, V2_PACKET_KEY)
    expires = int(NOW * 1000) + 2 * 86400 * 1000
    wraps = [
        (bytes.fromhex(d["device_id"]), d["wrap_type"], bytes.fromhex(d["wrap"]))
        for d in olm["devices"]
    ]
    pkt = packet.OfflinePacket.create_v2(
        ALICE,
        BOB.public_key,
        int(NOW * 1000),
        expires,
        bytes.fromhex(olm["alice_olm_key"]),
        wraps,
        ciphertext,
    )
    bundles = [
        {
            "device_id": d["device_id"],
            "salt": hx(device_prekey_salt(bytes.fromhex(d["device_id"]))),
            "value": hx(
                Bundle(bytes.fromhex(d["olm_key"]), bytes.fromhex(d["fallback_key"]), ()).encode()
            ),
        }
        for d in olm["devices"]
    ]
    return _file(
        "Offline packet v2 (protocol 1.6): one ciphertext of the envelope, its key wrapped "
        "in an Olm message for each of the recipient's devices, and the per-device prekey "
        "bundles the wraps were made from.",
        {
            "olm": "bob's two device accounts (vodozemac pickles under bob_pickle_key, the "
            "identity's pickle key as in offline.json) and alice's Olm wrap of packet_key "
            "to each (BINARY; wrap_type 0 = pre-key). Decrypt-only: vodozemac draws its "
            "keys internally",
            "bundles": "each device's own bundle: BEP 44 v under bob's identity key, salt "
            "'btchat/prekeys/' || device id (31 bytes), value bencode({f, k, o: []})",
            "packet.plaintext": "alice's long text envelope (envelopes.json)",
            "packet.ciphertext": "XChaCha20-Poly1305-IETF(packet_key, nonce = 24 zero "
            "bytes, no AD, plaintext): the packet's b (a key seals one envelope only)",
            "packet.signed_bytes": "'btchat offline packet v1' 0x00 || bencode(every key "
            "except s); v = 2 is among them",
            "packet.wire": "bencode({b, f, k, n, s, t, v: 2, w: [[device id, Olm type, "
            "Olm message], ...], x})",
        },
        {
            "olm": olm,
            "bundles": bundles,
            "packet": {
                "sender": hx(ALICE.public_key),
                "recipient": hx(BOB.public_key),
                "n": pkt.n,
                "expires_ms": expires,
                "plaintext": hx(plaintext),
                "ciphertext": hx(ciphertext),
                "signed_bytes": hx(pkt.signed_bytes()),
                "s": hx(pkt.signature),
                "wire": hx(pkt.encode()),
            },
        },
        people=_people(),
        constants={"max_wraps": packet.MAX_WRAPS, "max_wrap_body": packet.MAX_WRAP_BODY},
    )


def family_offline() -> dict[str, Any]:
    # The plaintext of the packet is alice's long text envelope (file envelopes.json).
    text = family_envelopes()["vectors"][-1]
    plaintext = bytes.fromhex(text["envelope"])
    olm = _olm_fixture(plaintext)
    bob_olm, bob_one_time = (
        bytes.fromhex(olm["bob_olm_key"]),
        bytes.fromhex(olm["bob_one_time_key"]),
    )
    bundle = Bundle(bob_olm, bytes.fromhex(olm["bob_fallback_key"]), (bob_one_time,))
    prekey = _envelope_vector(
        "bob hands alice a one-time key when a session comes up (bob's clock: 9; sends 10)",
        "bob",
        b"prekey",
        {b"k": bob_olm, b"o": bob_one_time},
        lamport=10,
        now=NOW + 10,
        seq=8,
    )
    body = bytes.fromhex(olm["body"])
    olm["parsed"] = _olm_fields(body)
    olm["parsed"]["message_fields"] = _inner_olm(bytes.fromhex(olm["parsed"]["message"]))
    expires = int(NOW * 1000) + 2 * 86400 * 1000
    pkt = packet.OfflinePacket.create(
        ALICE,
        BOB.public_key,
        0,
        expires,
        bytes.fromhex(olm["alice_olm_key"]),
        olm["message_type"],
        body,
    )
    wire = pkt.encode()
    secret = rendezvous.pairwise_secret(ALICE, BOB.public_key)
    direction = ALICE.public_key + BOB.public_key
    chunks = []
    for part, payload in enumerate(packet.split_chunks(wire)):
        slot = packet.chunk_slot(secret, ALICE.public_key, BOB.public_key, 0, part)
        chunks.append(_item_vector(slot, secret, direction, b"chunk" + encode([0, part]), payload))
    day = int(NOW // packet.DAY_SECONDS)
    head_slot = packet.head_slot(secret, ALICE.public_key, BOB.public_key, day)
    head = packet.Head(0, 1, -1)
    return _file(
        "Offline delivery: an Olm pre-key message (decrypt-only), the signed offline packet "
        "carrying it, and its sealed chunks and head in the pair's DHT mailbox.",
        {
            "olm_prekey": "bob's vodozemac account (pickle, base64 as vodozemac writes it, "
            "under bob_pickle_key) and alice's Olm pre-key message to it; body is BINARY "
            "(not base64); message_type 0 = pre-key, 1 = normal. vodozemac draws its keys "
            "internally, so this vector is decrypt-only: bob's account decrypts body to "
            "plaintext. parsed: the message's fields (Olm v1: version byte 0x03, "
            "protobuf-style tags, an 8-byte truncated HMAC-SHA256 at the end of the inner "
            "message)",
            "bundle": "the prekey bundle's BEP 44 v under bob's identity key, salt "
            "'btchat/prekeys': bencode({f: fallback key, k: Olm identity key, o: [one-time "
            "keys]}), raw 32-byte Curve25519 keys",
            "prekey_envelope": "an envelope of type 'prekey' (fields as in envelopes.json), "
            "body {k: Olm identity key, o: one one-time key}",
            "packet.signed_bytes": "'btchat offline packet v1' 0x00 || bencode(every key except s)",
            "packet.wire": "bencode({b, f, k, m, n, s, t, v, x})",
            "packet.k": "the sender's Olm Curve25519 identity key: the key Olm's pre-key "
            "message carries as identity_key",
            "root_input": "'btchat/mailbox/v1' 0x00 || sender || recipient || label",
            "root": "BLAKE2b-256 KEYED with the pairwise secret (the secret is the key, "
            "root_input the message), no personalisation",
            "seed": "BLAKE2b-256(root), unkeyed, personalisation 'btchat-mbox-sig' "
            "(zero-padded to 16): the item's Ed25519 seed",
            "aead_key": "BLAKE2b-256(root), unkeyed, personalisation 'btchat-mbox-enc'",
            "payload": "bencode(chunk or head dictionary)",
            "padded": "payload || zero bytes, 940 bytes in all",
            "nonce": "BLAKE2b-192 KEYED with aead_key over padded (all 940 bytes)",
            "item": "nonce || XChaCha20-Poly1305(aead_key, nonce, padded, ad = public_key): "
            "980 bytes, stored as the BEP 44 v (a byte string: 984 bytes bencoded)",
        },
        {
            "olm_prekey": olm,
            "bundle": {
                "identity": hx(BOB.public_key),
                "salt": hx(PREKEY_SALT),
                "value": hx(bundle.encode()),
            },
            "prekey_envelope": prekey,
            "packet": {
                "sender": hx(ALICE.public_key),
                "recipient": hx(BOB.public_key),
                "n": 0,
                "expires_ms": expires,
                "signed_bytes": hx(packet.PACKET_CONTEXT + encode(pkt._fields())),
                "s": hx(pkt.signature),
                "wire": hx(wire),
            },
            "mailbox": {
                "secret": hx(secret),
                "sender": hx(ALICE.public_key),
                "recipient": hx(BOB.public_key),
                "chunks": chunks,
                "head": {
                    "day": day,
                    "lo": head.lo,
                    "hi": head.hi,
                    "a": head.ack + 1,
                    **_item_vector(
                        head_slot, secret, direction, b"head" + encode(day), head.payload()
                    ),
                },
            },
        },
        people=_people(),
        constants={
            "item_plaintext": packet.ITEM_PLAINTEXT,
            "chunk_data": packet.CHUNK_DATA,
            "max_packet": packet.MAX_PACKET,
            "packet_context": hx(packet.PACKET_CONTEXT),
        },
    )


def _item_vector(
    slot: packet.Slot, secret: bytes, direction: bytes, label: bytes, payload: dict[bytes, Any]
) -> dict[str, Any]:
    """One sealed mailbox item; ``direction`` is sender || recipient."""
    root_input = b"btchat/mailbox/v1\x00" + direction + label
    plain = encode(payload)
    padded = plain + bytes(packet.ITEM_PLAINTEXT - len(plain))
    return {
        "label": hx(label),
        "root_input": hx(root_input),
        "root": hx(hashlib.blake2b(root_input, key=secret, digest_size=32).digest()),
        "seed": hx(slot.private_key.private_bytes_raw()),
        "public_key": hx(slot.public_key),
        "aead_key": hx(slot.aead_key),
        "payload": hx(plain),
        "padded": hx(padded),
        "nonce": hx(hashlib.blake2b(padded, key=slot.aead_key, digest_size=24).digest()),
        "v": hx(packet.seal_item(slot, payload)),
    }


# ----------------------------------------------------------------------- 8. channels


def family_channels() -> dict[str, Any]:
    secret = bytes(range(32))
    open_file = ChatFile.create(
        "Café", trackers=["udp://tracker.example:6969"], history=100, now=CREATED, secret=secret
    )
    invite = ChatFile.create(
        "Team", invite_only=True, owner=ALICE, now=CREATED, secret=bytes([0x5A]) * 32
    )
    epoch = 472222
    schedule = []
    for name, chat in (("open", open_file), ("invite", invite)):
        ks = chat.keys
        t = epoch * 3600 + 3300
        entry: dict[str, Any] = {
            "file": name,
            "secret": hx(chat.secret),
            "owner": hx(chat.owner) if chat.owner else None,
            "ikm": hx(chat.secret + (b"\x01" + chat.owner if chat.owner else b"\x00")),
            "channel_id": hx(ks.channel_id),
            "file_mac_key": hx(ks.file_mac_key),
            "proof_key": hx(ks.proof_key),
            "infohash": {str(e): hx(ks.infohash(e)) for e in (epoch, epoch + 1)},
            "targets_now": t,
            "announce_targets": [hx(x) for x in ks.announce_targets(t)],
            "lookup_targets": [hx(x) for x in ks.lookup_targets(t)],
        }
        gen_secret = None if chat.owner is None else bytes([0x42]) * 32
        entry["generation_secret_0"] = hx(gen_secret) if gen_secret else None
        entry["traffic_key_0"] = hx(ks.traffic_key(0, gen_secret))
        entry["generation_proof_key_0"] = hx(ks.generation_proof_key(0, gen_secret))
        schedule.append(entry)
    transcript = bytes(range(64))
    proof = channel_keys.membership_proof(open_file.keys.proof_key, transcript, ALICE.public_key)
    # Member lists: version 1 (owner), version 2 adds bob (member) and carol (admin).
    chan = invite.keys.channel_id
    v1 = MemberList.create(chan, ALICE.public_key, now=CREATED).sign(ALICE)
    v2 = v1.apply(
        add=[BOB.public_key, CAROL.public_key],
        roles={CAROL.public_key: "admin"},
        now=CREATED + 60,
    ).sign(ALICE)
    grant_fields: dict[bytes, Any] = {
        b"v": 1,
        b"chan": chan,
        b"gen": 0,
        b"key": bytes([0x42]) * 32,
        b"to": BOB.public_key,
        b"by": ALICE.public_key,
        b"mlv": v2.version,
    }
    grant_signed = channel_keys.GENERATION_KEY_CONTEXT + encode(grant_fields)
    grant_fields[b"sig"] = ALICE.sign(grant_signed)
    grant_plain = encode(grant_fields)
    messages = []
    for name, chat, key, seq in (
        ("open", open_file, open_file.keys.traffic_key(0), 1),
        ("invite", invite, invite.keys.traffic_key(0, bytes([0x42]) * 32), 2),
    ):
        body = {b"t": "Hello, channel! ¡Hola!".encode()}
        msg = seal_message(
            ALICE,
            chat.keys.channel_id,
            kind=b"text",
            body=body,
            lamport=seq,
            now=NOW,
            generation=0,
            traffic_key=key,
            msg_id=bytes([0xC0 + seq]) * 16,
            nonce=bytes([0xD0 + seq]) * 24,
        )
        messages.append(
            {
                "file": name,
                "channel_id": hx(msg.channel),
                "traffic_key": hx(key),
                "body_bencoded": hx(encode(body)),
                "ad": hx(CHANNEL_MESSAGE_CONTEXT + msg.channel + msg.id + msg.author),
                "e": hx(msg.ciphertext),
                "signed_bytes": hx(CHANNEL_MESSAGE_CONTEXT + encode(msg._fields())),
                "s": hx(msg.signature),
                "wire": hx(msg.encode()),
            }
        )
    messages.append(_private_message(invite.keys.channel_id))
    return _file(
        "Channels: .chat files and links, the HKDF key schedule and rotating infohashes, "
        "membership proofs, member lists, sealed generation grants, channel messages. "
        "Every value is given in full: 42 x 32 elsewhere in prose means 32 bytes of 0x42.",
        {
            "ikm": "HKDF-Extract IKM: secret || 0x00 (open) or secret || 0x01 || owner",
            "channel_id": "HKDF-Expand(root, 'btchat channel id v1' 0x00, 32); root = "
            "HMAC-SHA256(key='btchat channel v1', ikm)",
            "infohash": "epoch -> HKDF-Expand(root, 'btchat channel infohash v1' 0x00 || "
            "u64be(epoch), 20)",
            "announce_targets": "current epoch, then next one in the epoch's last 600 s",
            "lookup_targets": "current, previous (first 600 s), next (last 600 s)",
            "traffic_key_0": "HKDF-Expand(HKDF-Extract(salt=channel id, IKM=gen secret), "
            "'btchat channel traffic v1' 0x00 || u32be(0), 32)",
            "proof": "HMAC-SHA256(proof_key, 'btchat channel membership proof v1' 0x00 || "
            "prover || transcript_hash)",
            "member_lists": "owner-signed lists: wire bytes, their SHA-256 (the next prev)",
            "grant": "generation grant plaintext (signed by 'by') and its sealed box",
            "messages": "text messages: e = XChaCha20-Poly1305(key, n, body_bencoded, ad) "
            "with key = traffic_key (channel-wide, r empty) or, for a private message, a "
            "random content_key sealed (crypto_box_seal) to the X25519 form of each "
            "recipient's key, r = [[key, sealed_content_key], ...] sorted by key, the "
            "author included; s = Ed25519 by f over signed_bytes",
        },
        {
            "chatfiles": {
                "open": {
                    "bytes": hx(open_file.to_bytes()),
                    "link": open_file.to_uri(),
                    "mac": hx(open_file.mac),
                },
                "invite": {
                    "bytes": hx(invite.to_bytes()),
                    "link": invite.to_uri(),
                    "mac": hx(invite.mac),
                    "sig": hx(invite.signature or b""),
                },
            },
            "schedule": schedule,
            "proof": {
                "key": hx(open_file.keys.proof_key),
                "prover": hx(ALICE.public_key),
                "transcript_hash": hx(transcript),
                "proof": hx(proof),
            },
            "member_lists": [
                {
                    "version": ml.version,
                    "generation": ml.generation,
                    "wire": hx(ml.to_bytes()),
                    "signed_bytes": hx(ml._signed_bytes()),
                    "digest": hx(ml.digest),
                }
                for ml in (v1, v2)
            ],
            "grant": {
                "channel_id": hx(chan),
                "to": hx(BOB.public_key),
                "by": hx(ALICE.public_key),
                "signed_bytes": hx(grant_signed),
                "sig": hx(grant_fields[b"sig"]),
                "plaintext": hx(grant_plain),
                **_sealed_vector(BOB, grant_plain, bytes([0xE2]) * 32),
            },
            "messages": messages,
        },
        people=_people(),
    )


def _private_message(channel: bytes) -> dict[str, Any]:
    """A message for chosen members (bob; the author is always included): the content
    key sealed to each. Sealed boxes cannot be fixed through btchat's API, so the
    message is built from its definition here; the test opens it with btchat's code."""
    content_key = bytes([0x77]) * 32
    body = {b"t": b"Just for you, Bob."}
    msg_id, nonce = bytes([0xC3]) * 16, bytes([0xD3]) * 24
    recipients = []
    for i, key in enumerate(sorted({ALICE.public_key, BOB.public_key})):
        ephemeral = bytes([0xE3 + i]) * 32
        recipients.append((key, ephemeral))
    sealed = tuple(
        (k, sealed_box(crypto_sign_ed25519_pk_to_curve25519(k), content_key, eph))
        for k, eph in recipients
    )
    ad = CHANNEL_MESSAGE_CONTEXT + channel + msg_id + ALICE.public_key
    unsigned = ChannelMessage(
        channel,
        msg_id,
        ALICE.public_key,
        3,
        int(NOW * 1000),
        b"text",
        0,
        sealed,
        nonce,
        crypto_aead_xchacha20poly1305_ietf_encrypt(encode(body), ad, nonce, content_key),
    )
    signed = CHANNEL_MESSAGE_CONTEXT + encode(unsigned._fields())
    msg = replace(unsigned, signature=ALICE.sign(signed))
    return {
        "file": "invite",
        "channel_id": hx(channel),
        "traffic_key": None,
        "content_key": hx(content_key),
        "recipients": [
            {"key": hx(k), "ephemeral_secret": hx(eph), "sealed_content_key": hx(x)}
            for (k, eph), (_, x) in zip(recipients, sealed, strict=True)
        ],
        "body_bencoded": hx(encode(body)),
        "ad": hx(ad),
        "e": hx(msg.ciphertext),
        "signed_bytes": hx(signed),
        "s": hx(msg.signature),
        "wire": hx(msg.encode()),
    }


# ------------------------------------------------------------ 9. sessions and links

#: Fixed ephemeral (and, for links, static) X25519 private keys: vectors only.
SESSION_EPHEMERAL = {"initiator": bytes([0xE1]) * 32, "responder": bytes([0xE2]) * 32}
LINK_STATIC = {"initiator": bytes([0x51]) * 32, "responder": bytes([0x52]) * 32}
LINK_EPHEMERAL = {"initiator": bytes([0xE3]) * 32, "responder": bytes([0xE4]) * 32}


def _wire_trace(
    initiator: SecureStream, responder: SecureStream, steps: list[tuple[str, Any, str]]
) -> list[dict[str, Any]]:
    """Run two cores against each other; each step is (side, action) where action is
    None (just flush), ("send", payload) or ("close", reason). Records every chunk of
    bytes one side wrote, in order, and what the other side then wrote back at once."""
    cores = {"initiator": initiator, "responder": responder}
    trace: list[dict[str, Any]] = []

    def flush(side: str, what: str) -> None:
        data = cores[side].data_to_send()
        if not data:
            return
        trace.append({"from": side, "what": what, "bytes": hx(data)})
        other = "responder" if side == "initiator" else "initiator"
        cores[other].receive_data(data, NOW)

    for side, action, what in steps:
        if action is not None and action[0] == "send":
            cores[side].send(action[1], NOW)
        elif action is not None and action[0] == "close":
            cores[side].close(action[1], NOW)
        flush(side, what)
    return trace


def _session_vector() -> dict[str, Any]:
    alice_cert = ALICE.certify(ALICE_DEVICE, CREATED)
    bob_cert = BOB.certify(BOB_DEVICE, CREATED)
    text = bytes.fromhex(family_envelopes()["vectors"][0]["envelope"])
    receipt = bytes.fromhex(family_envelopes()["vectors"][1]["envelope"])
    initiator = session_core.Session(
        "initiator",
        ALICE_DEVICE,
        alice_cert,
        lambda identity, _cert: identity == BOB.public_key,
        remote_static=BOB_DEVICE.public_key,
        now=NOW,
        ephemeral_private=SESSION_EPHEMERAL["initiator"],
    )
    responder = session_core.Session(
        "responder",
        BOB_DEVICE,
        bob_cert,
        lambda identity, _cert: identity == ALICE.public_key,
        now=NOW,
        ephemeral_private=SESSION_EPHEMERAL["responder"],
    )
    trace = _wire_trace(
        initiator,
        responder,
        [
            (
                "initiator",
                None,
                "handshake message 1: -> e, es, s, ss; payload alice's certificate",
            ),
            ("responder", None, "handshake message 2: <- e, ee, se; payload bob's certificate"),
            ("initiator", None, "transport 1 (initiator): PING, the key confirmation"),
            ("responder", None, "transport 1 (responder): PONG"),
            ("initiator", ("send", text), "DATA: alice's first text envelope"),
            ("responder", ("send", receipt), "DATA: bob's delivered receipt"),
            ("initiator", ("close", "bye"), "CLOSE, reason 'bye'"),
        ],
    )
    assert initiator.handshake_hash == responder.handshake_hash is not None
    return {
        "protocol_name": SESSION_PROTOCOL.decode(),
        "prologue": hx(session_core.PROLOGUE),
        "now": NOW,
        "initiator": {
            "identity": hx(ALICE.public_key),
            "static_private": hx(ALICE_DEVICE.private_bytes),
            "static_public": hx(ALICE_DEVICE.public_key),
            "ephemeral_private": hx(SESSION_EPHEMERAL["initiator"]),
            "certificate": hx(alice_cert.encode()),
        },
        "responder": {
            "identity": hx(BOB.public_key),
            "static_private": hx(BOB_DEVICE.private_bytes),
            "static_public": hx(BOB_DEVICE.public_key),
            "ephemeral_private": hx(SESSION_EPHEMERAL["responder"]),
            "certificate": hx(bob_cert.encode()),
        },
        "payloads": {"text": hx(text), "receipt": hx(receipt), "close_reason": "bye"},
        "handshake_hash": hx(initiator.handshake_hash),
        "wire": trace,
    }


def _link_vector() -> dict[str, Any]:
    chat = ChatFile.create("Café", history=100, now=CREATED, secret=bytes(range(32)))
    channel, psk = chat.keys.channel_id, chat.keys.proof_key
    cores = {
        role: Link(
            role,
            identity=who,
            channel_id=channel,
            psk=psk,
            authorize=lambda identity: True,
            now=NOW,
            fixed_keys=(LINK_STATIC[role], LINK_EPHEMERAL[role]),
        )
        for role, who in (("initiator", ALICE), ("responder", BOB))
    }
    post = encode({b"hello": b"members"})
    trace = _wire_trace(
        cores["initiator"],
        cores["responder"],
        [
            ("initiator", None, "handshake message 1: -> e (48 bytes; 50 with the length)"),
            ("responder", None, "handshake message 2: <- e, ee, s, es"),
            ("initiator", None, "handshake message 3: -> s, se, psk; then alice's proof"),
            ("responder", None, "bob's proof"),
            ("initiator", ("send", post), "DATA: one link payload"),
            ("initiator", ("close", "bye"), "CLOSE, reason 'bye'"),
        ],
    )
    return {
        "protocol_name": LINK_PROTOCOL.decode(),
        "channel_secret": hx(chat.secret),
        "channel_id": hx(channel),
        "psk": hx(psk),
        "prologue": hx(link_prologue(channel)),
        "now": NOW,
        "initiator": {
            "identity_seed": hx(ALICE.seed),
            "identity": hx(ALICE.public_key),
            "static_private": hx(LINK_STATIC["initiator"]),
            "ephemeral_private": hx(LINK_EPHEMERAL["initiator"]),
        },
        "responder": {
            "identity_seed": hx(BOB.seed),
            "identity": hx(BOB.public_key),
            "static_private": hx(LINK_STATIC["responder"]),
            "ephemeral_private": hx(LINK_EPHEMERAL["responder"]),
        },
        "payload": hx(post),
        "handshake_hash": hx(cores["initiator"].handshake_hash),
        "wire": trace,
    }


def family_sessions() -> dict[str, Any]:
    with warnings.catch_warnings():  # the library warns, rightly, of fixed ephemeral keys
        warnings.filterwarnings("ignore", "One of ephemeral keypairs is already set")
        session, link = _session_vector(), _link_vector()
    return _file(
        "A full 1:1 session (Noise IK) and a full channel link (Noise XXpsk3) with fixed "
        "keys: every byte each side writes, from the first handshake message to CLOSE. "
        "Ephemeral (and link static) keys are random in real use; fixing them makes the "
        "bytes reproducible. Ed25519 signatures (certificates, link proofs) are "
        "deterministic (RFC 8032).",
        {
            "protocol_name": "the Noise protocol name (Noise rev. 34 section 8)",
            "prologue": "the Noise prologue bytes",
            "static_private/ephemeral_private": "X25519 private keys (RFC 7748 scalars, as "
            "Noise uses them)",
            "certificate": "the device certificate each side sends as its handshake payload",
            "handshake_hash": "Noise h after the last handshake message (64 bytes, BLAKE2b)",
            "wire": "every write in order: who wrote it, what it is, and the bytes: frames of "
            "u16be(length) || Noise message; transport plaintext is type (1 byte) || body "
            "(sessions: 0 DATA, 1 PING, 2 PONG, 3 REKEY, 4 CLOSE; links: 0 DATA, 1 PING, "
            "2 PONG, 3 CLOSE), nonces count from 0 per direction, associated data empty",
            "link proof": "AEAD(identity:32 || Ed25519(identity, "
            "'btchat channel link proof v1' 0x00 || channel_id || role ('i'/'r') || h)) "
            "-- see PROTOCOL.md Links",
        },
        {"session": session, "link": link},
        people=_people(),
    )


# -------------------------------------------------------------------------- LAN


def family_lan() -> dict[str, Any]:
    """LAN announcements (docs/PROTOCOL.md "Finding contacts on the LAN")."""
    from btchat.discovery import lan_rendezvous as lan

    secret = rendezvous.pairwise_secret(ALICE, BOB.public_key)
    cert = ALICE.certify(ALICE_DEVICE, CREATED)
    vectors = []
    for now, port in ((NOW, 6881), (472222 * rendezvous.EPOCH_SECONDS + 3599.0, 40001)):
        epoch = rendezvous.epoch_of(now)
        a, b = ALICE.public_key, BOB.public_key
        tag = lan.lan_tag(secret, a, b, epoch)
        key = lan.lan_key(secret, a, b, epoch)
        nonce = bytes(range(epoch % 200, epoch % 200 + lan.NONCE_SIZE))
        plaintext = encode({b"c": [cert.encode()], b"p": port})
        vectors.append(
            {
                "now": now,
                "epoch": epoch,
                "announcer_seed": hx(ALICE.seed),
                "seeker_seed": hx(BOB.seed),
                "secret": hx(secret),
                "tag_message": hx(lan.TAG_CONTEXT + a + b + epoch.to_bytes(8, "big")),
                "tag": hx(tag),
                "key_message": hx(lan.KEY_CONTEXT + a + b + epoch.to_bytes(8, "big")),
                "key": hx(key),
                "port": port,
                "certificate": hx(cert.encode()),
                "plaintext": hx(plaintext),
                "nonce": hx(nonce),
                "aad": hx(lan.MAGIC + tag),
                "datagram": hx(lan.seal_announcement(key, tag, nonce, port, [cert])),
            }
        )
    return _file(
        "Alice's LAN announcement for Bob: a multicast datagram on the BEP 14 group that "
        "only Bob can recognise and open.",
        {
            "secret": "the pairwise secret (rendezvous.json)",
            "tag_message": "'btchat lan tag v1' || announcer || seeker || u64be(epoch)",
            "tag": "BLAKE2b, 16-byte digest, KEYED with secret, of tag_message",
            "key_message": "'btchat lan key v1' || announcer || seeker || u64be(epoch)",
            "key": "BLAKE2b, 32-byte digest, KEYED with secret, of key_message",
            "plaintext": "bencode({c: [device certificate], p: session port})",
            "aad": "MAGIC || tag",
            "datagram": "MAGIC || tag || nonce || XChaCha20-Poly1305-IETF(key, nonce, aad, "
            "plaintext) (ciphertext || 16-byte tag)",
        },
        vectors,
        constants={"magic": hx(lan.MAGIC), "epoch_seconds": rendezvous.EPOCH_SECONDS},
    )


def family_relay() -> dict[str, Any]:
    """Relay circuit headers (docs/PROTOCOL.md "Relayed sessions")."""
    from btchat.net import relay_core as relay

    identity, device = bytes(range(1, 33)), bytes(range(0xA0, 0xB0))
    headers: list[tuple[str, relay.Header, str]] = [
        (
            "connect",
            relay.Connect(1, identity, device),
            "A asks relay C for device `device` of identity `identity`",
        ),
        (
            "incoming",
            relay.Incoming(0x01020304, identity, device),
            "C tells B a circuit comes from `identity`/`device`",
        ),
        ("answer_ok", relay.Answer(1, relay.Status.OK), "the circuit is open"),
        (
            "answer_relay_off",
            relay.Answer(2**32 - 2, relay.Status.RELAY_OFF),
            relay.Status.RELAY_OFF.reason,
        ),
        ("answer_no_route", relay.Answer(7, relay.Status.NO_ROUTE), relay.Status.NO_ROUTE.reason),
    ]
    vectors: list[dict[str, Any]] = []
    for name, header, note in headers:
        v: dict[str, Any] = {"name": name, "kind": type(header).__name__.lower()}
        v["circuit"] = header.circuit
        if isinstance(header, relay.Answer):
            v["status"] = int(header.status)
        else:
            v["identity"], v["device"] = hx(header.identity), hx(header.device)
        vectors.append({**v, "bytes": hx(relay.encode_header(header)), "note": note})
    connect = relay.encode_header(headers[0][1])
    malformed = [
        ("version_2", b"\x02" + relay.encode_header(relay.Answer(1, 0))[1:], "unknown version"),
        ("kind_9", bytes.fromhex("010900000001"), "unknown kind"),
        ("circuit_0", bytes.fromhex("01030000000000"), "circuit id 0 is reserved"),
        ("truncated_connect", connect[:-1], f"a Connect is {relay.HOP_SIZE} bytes"),
        (
            "long_answer",
            relay.encode_header(relay.Answer(1, 0)) + b"\x00",
            f"an Answer is {relay.ANSWER_SIZE} bytes",
        ),
    ]
    for _, data, _ in malformed:  # what the file says is refused, the code refuses
        try:
            relay.parse_header(data)
        except DecodeError:
            continue
        raise AssertionError(f"relay header {data.hex()} was accepted")
    data = _file(
        'Relay circuit headers (docs/PROTOCOL.md "Relayed sessions"): the first bytes of '
        "every relay substream.",
        {
            "name": "vector name",
            "kind": "connect, incoming or answer",
            "circuit": "circuit id (u32, big-endian on the wire)",
            "identity": "32-byte identity key, hex",
            "device": "16-byte device id, hex",
            "status": "answer status code",
            "bytes": "the header on the wire, hex",
            "note": "what it means",
            "why": "why a malformed header is refused",
        },
        vectors,
    )
    data["malformed"] = [{"name": n, "bytes": hx(d), "why": w} for n, d, w in malformed]
    return data


def family_dcutr() -> dict[str, Any]:
    """Upgrade payloads (docs/PROTOCOL.md "Upgrading a relayed session", 1.5): CONNECT and
    SYNC, DATA payloads on a relayed session."""
    from btchat.net import dcutr

    messages: list[tuple[str, dcutr.Message, str]] = [
        (
            "connect",
            dcutr.Message(dcutr.CONNECT, 0, (("203.0.113.7", 6881), ("2001:db8::7", 6881))),
            "round 0: the initiator's reflexive IPv4 and its IPv6 host address",
        ),
        (
            "connect_answer_empty",
            dcutr.Message(dcutr.CONNECT, 0, ()),
            "the responder's answer when it knows no address of its own",
        ),
        ("sync", dcutr.Message(dcutr.SYNC, 2), "round 2: punch now (the initiator: in RTT/2)"),
    ]
    vectors = [
        {
            "name": name,
            "kind": "connect" if m.kind == dcutr.CONNECT else "sync",
            "attempt": m.attempt,
            "addrs": [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in m.addrs],
            "bytes": hx(dcutr.encode(m)),
            "note": note,
        }
        for name, m, note in messages
    ]
    connect = dcutr.encode(messages[0][1])
    head = dcutr.MAGIC + bytes([dcutr.VERSION])
    malformed = [
        ("version_2", dcutr.MAGIC + b"\x02" + connect[len(head) :], "unknown version"),
        ("kind_3", head + b"\x03\x00", "unknown kind"),
        ("truncated_connect", connect[:-1], "an address entry is cut short"),
        ("sync_trailing", dcutr.encode(messages[2][1]) + b"\x00", "a SYNC is 3 bytes after MAGIC"),
        ("family_5", head + b"\x01\x00\x01\x05" + bytes(6), "address family is 4 or 6"),
        ("nine_addrs", head + b"\x01\x00\x09" + (b"\x04" + bytes(6)) * 9, "at most 8 addresses"),
    ]
    for _, data, _ in malformed:  # what the file says is refused, the code refuses
        try:
            dcutr.decode(data)
        except ValueError:
            continue
        raise AssertionError(f"upgrade payload {data.hex()} was accepted")
    data = _file(
        'Upgrade payloads (docs/PROTOCOL.md "Upgrading a relayed session"): CONNECT and SYNC, '
        "sent as DATA payloads on a relayed session.",
        {
            "name": "vector name",
            "kind": "connect or sync",
            "attempt": "the round (u8)",
            "addrs": "candidate addresses, in order",
            "bytes": "the payload, hex",
            "note": "what it means",
            "why": "why a malformed payload is refused",
        },
        vectors,
        magic=hx(dcutr.MAGIC),
    )
    data["malformed"] = [{"name": n, "bytes": hx(d), "why": w} for n, d, w in malformed]
    return data


def family_pcp() -> dict[str, Any]:
    """PCP port mapping (RFC 6887; docs/PROTOCOL.md "Port mapping"): what we send to the
    home gateway and what we accept from it. Field values in the style of the RFC's."""
    from btchat.net import pcp
    from btchat.net.gateway_udp import Malformed

    client, nonce = "192.168.1.10", bytes.fromhex("a1b2c3d4e5f60718293a4b5c")
    requests: list[tuple[str, dict[str, Any], str]] = [
        ("announce", {"op": "announce"}, "the probe at discovery: does the gateway speak PCP"),
        (
            "map_udp",
            {"op": "map", "protocol": "UDP", "internal_port": 6881, "external_port": 6881,
             "lifetime": 3600},
            "map the DHT's UDP port, suggesting the same external port, for an hour",
        ),
        (
            "renew_udp",
            {"op": "map", "protocol": "UDP", "internal_port": 6881, "external_port": 40000,
             "lifetime": 3600},
            "the renewal at half the lease: same nonce, the external port granted",
        ),
        (
            "delete_tcp",
            {"op": "map", "protocol": "TCP", "internal_port": 7000, "external_port": 7000,
             "lifetime": 0},
            "a clean exit: lifetime 0 with the nonce that made the mapping deletes it",
        ),
    ]  # fmt: skip
    wire: dict[str, bytes] = {}
    vectors: list[dict[str, Any]] = []
    for name, fields, note in requests:
        if fields["op"] == "announce":
            data = pcp.encode_announce(client)
        else:
            data = pcp.encode_map(
                nonce, fields["protocol"], fields["internal_port"], fields["external_port"],
                fields["lifetime"], client,
            )  # fmt: skip
        wire[name] = data
        vectors.append({"name": name, "kind": "request", "client_ip": client,
                        **({"nonce": hx(nonce)} if fields["op"] == "map" else {}),
                        **fields, "bytes": hx(data), "note": note})  # fmt: skip
    header = "02{op:02x}00{result:02x}{lifetime:08x}{epoch:08x}" + "00" * 12
    mapped_ip = "00000000000000000000ffff" + "c6336407"  # 198.51.100.7
    udp_data = wire["map_udp"][24:42].hex()
    answers = [
        ("announce_ok", "announce", header.format(op=0x80, result=0, lifetime=0, epoch=1234),
         {"epoch": 1234}, "PCP is spoken; the gateway's epoch is 1234 s"),
        ("map_udp_ok", "map_udp",
         header.format(op=0x81, result=0, lifetime=1800, epoch=1240) + udp_data + "9c40"
         + mapped_ip,
         {"epoch": 1240, "protocol": "UDP", "internal_port": 6881, "external_port": 40000,
          "external_ip": "198.51.100.7", "lifetime": 1800},
         "granted another external port and half the lifetime asked: both are kept"),
        ("map_udp_ok_with_option", "map_udp",
         header.format(op=0x81, result=0, lifetime=1800, epoch=1240) + udp_data + "9c40"
         + mapped_ip + "01000010" + mapped_ip,
         {"epoch": 1240, "protocol": "UDP", "internal_port": 6881, "external_port": 40000,
          "external_ip": "198.51.100.7", "lifetime": 1800},
         "an option in the answer (code 1, 16 bytes) is checked for shape and skipped"),
        ("map_udp_not_authorized", "map_udp",
         header.format(op=0x81, result=2, lifetime=30, epoch=1240) + udp_data + "1ae1"
         + "00" * 16,
         {"result": 2}, "refused (NOT_AUTHORIZED): the protocol is given up until later"),
        ("natpmp_unsupported_version", "map_udp", "0081000100000065", {"fallback": True},
         "a NAT-PMP gateway's 'unsupported version' (RFC 6886 3.5): ask in NAT-PMP"),
        ("pcp_v1_unsupported_version", "map_udp",
         "01810001" + "00" * 20, {"fallback": True},
         "a PCP server of another version says UNSUPP_VERSION: ask in NAT-PMP"),
    ]  # fmt: skip
    for name, request, text, fields, note in answers:
        data = bytes.fromhex(text)
        try:  # what the file says, the code says
            got: Any = pcp.decode_response(data, wire[request])
            assert "epoch" in fields and got.epoch == fields["epoch"], name
        except pcp.PcpUnsupported:
            assert fields.get("fallback"), name
        except pcp.PcpError as exc:
            assert exc.code == fields["result"], name
        vectors.append({"name": name, "kind": "answer", "to": request, **fields,
                        "bytes": text, "note": note})  # fmt: skip
    good = bytes.fromhex(answers[1][2])
    malformed = [
        ("short", good[:20], "shorter than the 24-byte header"),
        ("odd_length", good + b"\x00", "not a multiple of 4 bytes (RFC 6887 section 7)"),
        ("request_echoed", wire["map_udp"], "the R bit is clear: a request, not an answer"),
        ("other_nonce", good[:24] + b"\xff" + good[25:], "another mapping's answer"),
        ("truncated_option", good + bytes.fromhex("01000010") + bytes(4), "option overruns"),
    ]
    for name, data, _ in malformed:
        try:
            pcp.decode_response(data, wire["map_udp"])
        except Malformed:
            continue
        raise AssertionError(f"PCP answer {name} was accepted")
    data = _file(
        "PCP (RFC 6887) MAP and ANNOUNCE messages between btchat and the home gateway "
        '(docs/PROTOCOL.md "Port mapping"): requests byte for byte, answers as parsed.',
        {
            "name": "vector name",
            "kind": "request (we send) or answer (the gateway sends)",
            "client_ip": "our LAN address, carried IPv4-mapped (::ffff:a.b.c.d)",
            "nonce": "the 96-bit mapping nonce, hex (random per mapping, kept for renewals)",
            "op": "announce (opcode 0) or map (opcode 1)",
            "protocol": "UDP (17) or TCP (6)",
            "internal_port": "our port",
            "external_port": "requests: suggested; answers: assigned",
            "lifetime": "seconds; 0 deletes (requests) or is a deletion's answer",
            "to": "the request vector an answer answers",
            "epoch": "the gateway's epoch time, seconds (RFC 6887 section 8.5)",
            "external_ip": "the assigned external address",
            "result": "a failure result code (RFC 6887 section 7.4)",
            "fallback": "true: the gateway does not speak PCP v2; NAT-PMP is asked",
            "bytes": "the message on the wire, hex",
            "note": "what it means",
            "why": "why a malformed answer is dropped (and counted)",
        },
        vectors,
    )
    data["malformed"] = [{"name": n, "bytes": hx(d), "why": w} for n, d, w in malformed]
    return data


def family_dht_proxy() -> dict[str, Any]:
    """The DHT through a contact (docs/PROTOCOL.md "The DHT through a contact (1.5)")."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from btchat.net import dht_proxy_core as dp
    from btchat.stream.frames import CAPS_DHT

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    item = bep44.sign_mutable(key, b"4:list", 7, b"btchat/devices")
    ih = bytes(range(20))
    messages: list[tuple[str, dp.Message, str]] = [
        ("get_peers", dp.Request(1, dp.GetPeers(ih)), "BEP 5 get_peers for a rendezvous infohash"),
        (
            "get_mutable",
            dp.Request(2, dp.GetItem(public_key=item.public_key, salt=item.salt)),
            "BEP 44 get of a mutable item (a device list)",
        ),
        (
            "get_immutable",
            dp.Request(3, dp.GetItem(target=bep44.immutable_target(b"5:hello"))),
            "BEP 44 get of an immutable item by its target",
        ),
        ("put_mutable", dp.Request(4, dp.PutMutable(item, cas=6)), "BEP 44 put, signed, with cas"),
        ("put_immutable", dp.Request(5, dp.PutImmutable(b"5:hello")), "BEP 44 immutable put"),
        (
            "peers_found",
            dp.Response(1, dp.PeersFound([("198.51.100.7", 40123), ("2001:db8::1", 6881)], 31, 9)),
            "peers (compact: 6 bytes IPv4, 18 bytes IPv6), queries, nodes that answered",
        ),
        (
            "item_found",
            dp.Response(2, dp.ItemFound(item.v_bencoded, item.seq, item.signature, 12)),
            "the item: the asker checks sig under the k and salt it asked for",
        ),
        ("item_absent", dp.Response(3, dp.ItemFound(None, queries=12)), "nobody had the item"),
        (
            "stored",
            dp.Response(4, dp.Stored(7, ["timeout"], 40, 153)),
            "stored on 7 nodes, one error, 40 queries, 153 nodes in the server's table",
        ),
        ("refused_off", dp.Response(5, dp.Failure(dp.Code.OFF)), "this node does not serve"),
        (
            "failed",
            dp.Response(6, dp.Failure(dp.Code.FAILED, "no DHT nodes answered")),
            "the DHT operation failed (not retried elsewhere)",
        ),
    ]
    vectors = []
    for name, message, note in messages:
        wire = dp.encode(message)
        assert dp.decode(wire) == message  # what the file says, the code reads back
        vectors.append({"name": name, "bytes": hx(wire), "note": note})

    def body(d: dict[bytes, Any]) -> bytes:
        return dp.MAGIC + encode(d)

    malformed = [
        ("no_magic", encode({b"t": 1, b"q": b"get_peers", b"ih": ih}), "no MAGIC prefix"),
        ("id_0", body({b"t": 0, b"q": b"get_peers", b"ih": ih}), "t is 1 .. 2^32 - 1"),
        ("unknown_q", body({b"t": 1, b"q": b"announce_peer", b"ih": ih}), "no such operation"),
        ("short_ih", body({b"t": 1, b"q": b"get_peers", b"ih": ih[:19]}), "ih is 20 bytes"),
        ("bad_v", body({b"t": 1, b"q": b"put", b"v": b"5:abc"}), "v is not bencode"),
        ("big_v", body({b"t": 1, b"q": b"put", b"v": b"1001:" + bytes(1001)}), "v over 1000"),
        ("unknown_code", body({b"t": 1, b"e": 99}), "an unknown error code"),
        (
            "too_many_peers",
            body({b"t": 1, b"r": {b"p": [bytes(6)] * 65}}),
            f"at most {dp.MAX_PEERS} peers",
        ),
        ("too_large", dp.MAGIC + encode({b"t": 1, b"q": b"x" * 4100}), "over 4096 bytes"),
    ]
    for _, data, _ in malformed:
        try:
            dp.decode(data)
        except DecodeError:
            continue
        raise AssertionError(f"DHT proxy message {data.hex()} was accepted")
    data = _file(
        "DHT proxy messages: one session DATA body each, MAGIC || bencode(dict), a request "
        "(q) or its answer (r or e) matched by t.",
        {
            "name": "vector name",
            "bytes": "the DATA body, hex",
            "note": "what it means",
            "why": "why a malformed message is dropped",
        },
        vectors,
        constants={"magic": hx(dp.MAGIC), "max_message": dp.MAX_MESSAGE, "caps_bit": CAPS_DHT},
    )
    data["malformed"] = [{"name": n, "bytes": hx(d), "why": w} for n, d, w in malformed]
    return data


FILE_TREE_CASES = [  # (size, piece size); content byte i = (i * 31 + 7) % 256
    (0, 262144),
    (1, 262144),
    (16384, 262144),
    (16385, 262144),
    (49152, 16384),
    (262144, 262144),
    (262145, 262144),
    (1048581, 262144),
]
FILE_NAMES = [
    "report.pdf",
    "../../etc/passwd",
    "/etc/shadow",
    "C:\\Windows\\system32\\cmd.exe",
    "CON",
    "nul.txt",
    "LPT9.log",
    "photo\u202egnp.exe",
    "a\u200bb.txt",
    "line\nbreak\ttab.txt",
    "..",
    ".bashrc",
    "",
    "x" * 300 + ".tar.gz",
    "ok<>:|?*name.txt",
    "trailing dots...",
]


def family_files() -> dict[str, Any]:
    """File transfer (PROTOCOL.md "Files"): content ids, piece layers, saved names."""
    trees = []
    for size, piece in FILE_TREE_CASES:
        h = PieceHasher(size, piece)
        h.update(bytes((i * 31 + 7) % 256 for i in range(size)))
        root = h.root()
        trees.append(
            {"size": size, "piece_size": piece, "root": hx(root), "layer": [hx(x) for x in h.layer]}
        )
    names = [{"offered": n, "saved": safe_name(n)} for n in FILE_NAMES]
    return _file(
        "BEP 52 style SHA-256 hash tree over 16 KiB leaves: the root (content id) and piece "
        "layer of generated contents (byte i = (i * 31 + 7) % 256), the name a receiver "
        "saves an offered name under, and inline file offers (the bytes in the body, key d)",
        {
            "trees": "size, piece_size, root (hex), layer (piece-layer hashes, hex)",
            "names": "offered (the name in the offer), saved (what the receiver saves it as)",
            "inline": "an inline `file` envelope from Alice to Bob (fields as in "
            "envelopes.json), with content (the file's bytes) and root (SHA-256 of them: "
            "one leaf)",
            "channel_message": "a `file` channel message by Alice in the open channel of "
            "channels.json (fields as its messages): body_bencoded is the manifest of the "
            "trees case of 1048581 bytes",
            "transfer": 'transfer messages (PROTOCOL.md "Files (1:1)" and "Files in '
            'channels"): kind, the fields, and the framed bytes (length u32be, kind u8, '
            "offer 16 bytes, rest); offer = the channel message's id",
        },
        {
            "trees": trees,
            "names": names,
            "inline": _inline_vectors(),
            **_channel_file_vectors(),
        },
    )


def _channel_file_vectors() -> dict[str, Any]:
    """A channel ``file`` message and one of each transfer message for its offer."""
    chat = ChatFile.create(
        "Café",
        trackers=["udp://tracker.example:6969"],
        history=100,
        now=CREATED,
        secret=bytes(range(32)),
    )  # the open channel of family_channels
    size, piece = 1048581, 262144
    h = PieceHasher(size, piece)
    h.update(bytes((i * 31 + 7) % 256 for i in range(size)))
    manifest = Manifest("holiday.mp4", size, "video/mp4", piece, h.root())
    key = chat.keys.traffic_key(0)
    msg = seal_message(
        ALICE,
        chat.keys.channel_id,
        kind=b"file",
        body=manifest.body(),
        lamport=7,
        now=NOW,
        generation=0,
        traffic_key=key,
        msg_id=bytes([0xC7]) * 16,
        nonce=bytes([0xD7]) * 24,
    )
    message = {
        "channel_id": hx(msg.channel),
        "traffic_key": hx(key),
        "body_bencoded": hx(encode(manifest.body())),
        "ad": hx(CHANNEL_MESSAGE_CONTEXT + msg.channel + msg.id + msg.author),
        "e": hx(msg.ciphertext),
        "signed_bytes": hx(CHANNEL_MESSAGE_CONTEXT + encode(msg._fields())),
        "s": hx(msg.signature),
        "wire": hx(msg.encode()),
    }
    offer = msg.id
    have = Bitmap(manifest.pieces)
    for i in (0, 2, 4):
        have.set(i)
    piece0 = bytes((i * 31 + 7) % 256 for i in range(16))  # a short stand-in for the bytes
    cases: list[tuple[str, wire.Message, dict[str, Any]]] = [
        ("GET_LAYER", wire.GetLayer(offer), {}),
        ("GET", wire.Get(offer, (0, 3)), {"indices": [0, 3]}),
        ("CANCEL", wire.Cancel(offer, "not serving"), {"reason": "not serving"}),
        ("BITFIELD", wire.Bitfield(offer, have.to_bytes()), {"held": [0, 2, 4]}),
        ("BITFIELD", wire.Bitfield(offer, b""), {"held": []}),
        ("HAVE", wire.Have(offer, 3), {"index": 3}),
        ("LAYER", wire.Layer(offer, tuple(h.layer)), {"hashes": [hx(x) for x in h.layer]}),
        ("PIECE", wire.Piece(offer, 0, piece0), {"index": 0, "data": hx(piece0)}),
    ]
    transfer = [
        {"kind": kind, "offer": hx(offer), **fields, "bytes": hx(wire.encode(m))}
        for kind, m, fields in cases
    ]
    return {"channel_message": message, "transfer": transfer}


#: Inline offers: (label, name, media type, size); content byte i = (i * 31 + 7) % 256.
INLINE_CASES = [
    ("a small text file", "note.txt", "text/plain", 300),
    ("the empty file", "empty", "application/octet-stream", 0),
]


def _inline_vectors() -> list[dict[str, Any]]:
    out = []
    for seq, (label, name, media, size) in enumerate(INLINE_CASES, start=12):
        content = bytes((i * 31 + 7) % 256 for i in range(size))
        h = PieceHasher(size, 262144)
        h.update(content)
        manifest = Manifest(name, size, media, 262144, h.root())
        v = _envelope_vector(
            label,
            "alice",
            env.FILE,
            env.file_body(manifest, content),
            lamport=10,
            now=NOW + 10,
            seq=seq,
        )
        out.append({**v, "content": hx(content), "root": hx(h.root())})
    return out


# ---------------------------------------------------------------------- linking

#: A stand-in SPAKE2 key and messages: SPAKE2 itself is the spake2 package's (its own
#: vectors); what follows it is btchat's and is fixed here.
LINK_SPAKE_KEY = bytes(range(0x40, 0x60))
LINK_MSG_LINKER = b"A" + bytes(range(0x80, 0xA0))
LINK_MSG_JOINER = b"B" + bytes(range(0xA0, 0xC0))


def family_linking() -> dict[str, Any]:
    """Linking a device (PROTOCOL.md "Linking a device"): codes, the nameplate's
    rendezvous infohash, the key schedule after SPAKE2, and sealed frames."""
    codes = []
    for plate, a, b in ((1, 0, 1), (37, 40, 233), (999, 255, 254)):
        code = linking.LinkCode(plate, (linking.WORDS[a], linking.WORDS[b]))
        message = linking.LINK_CONTEXT + plate.to_bytes(2, "big")
        codes.append(
            {
                "nameplate": plate,
                "word_indices": [a, b],
                "code": str(code),
                "password": hx(code.password),
                "infohash_input": hx(message),
                "infohash": hx(linking.link_infohash(plate)),
            }
        )
    keys = linking.LinkKeys.derive(LINK_SPAKE_KEY, LINK_MSG_LINKER, LINK_MSG_JOINER)
    done = encode({b"ok": 1})
    big = bytes(i % 251 for i in range(linking.MAX_CHUNK + 10))  # two frames
    sealer = linking.Sealer(keys.linker_to_joiner)
    frames = {
        "done_message": hx(done),
        "done_frame_from_linker_n0": hx(sealer.seal_message(done)),
        "two_chunk_message_length": len(big),
        "two_chunk_frames_from_linker_n1_n2": hx(sealer.seal_message(big)),
        "joiner_confirm_frame": hx(linking.frame(linking.T_CONFIRM, keys.confirmation(False))),
        "linker_pake_frame": hx(linking.frame(linking.T_PAKE, LINK_MSG_LINKER)),
    }
    return _file(
        "Link codes and the DHT infohash of their nameplate; the keys both sides derive "
        "from the SPAKE2 key and transcript; sealed frames under the linker's key",
        {
            "code": "<nameplate>-<word>-<word>, words by index in the 256-word list",
            "password": "the SPAKE2 password: the code's ASCII bytes",
            "infohash_input": "'btchat link rendezvous v1' || u16be(nameplate)",
            "infohash": "BLAKE2b-160(person = 'btchat-link-v1', infohash_input)",
            "spake_key": "the SPAKE2 output (a stand-in here), 32 bytes",
            "msg_linker, msg_joiner": "the two SPAKE2 messages (stand-ins), 33 bytes each",
            "transcript": "msg_linker || msg_joiner",
            "confirm_linker, confirm_joiner, linker_to_joiner, joiner_to_linker": (
                "HKDF-SHA256(ikm = spake_key, salt = transcript, info = 'btchat link v1 "
                "confirm linker' / '... confirm joiner' / '... linker to joiner' / '... "
                "joiner to linker', 32 bytes)"
            ),
            "linker_confirmation, joiner_confirmation": (
                "HMAC-SHA256(confirm_linker resp. confirm_joiner, transcript)"
            ),
            "frames": "u32be(len(body)) || body; body = u8(type) || data (1 PAKE, 2 CONFIRM, "
            "3 SEALED); SEALED data = ChaCha20-Poly1305(key, nonce = 4 zero bytes || "
            "u64be(n), no AD, u8(last) || chunk), n counting the direction's sealed frames",
        },
        {
            "codes": codes,
            "keys": {
                "spake_key": hx(LINK_SPAKE_KEY),
                "msg_linker": hx(LINK_MSG_LINKER),
                "msg_joiner": hx(LINK_MSG_JOINER),
                "transcript": hx(keys.transcript),
                "confirm_linker": hx(keys.confirm_linker),
                "confirm_joiner": hx(keys.confirm_joiner),
                "linker_to_joiner": hx(keys.linker_to_joiner),
                "joiner_to_linker": hx(keys.joiner_to_linker),
                "linker_confirmation": hx(keys.confirmation(True)),
                "joiner_confirmation": hx(keys.confirmation(False)),
            },
            "frames": frames,
        },
        constants={"max_frame": linking.MAX_FRAME, "max_chunk": linking.MAX_CHUNK},
    )


# ------------------------------------------------------------ candidate records


def family_candidates() -> dict[str, Any]:
    """Candidate records (docs/PROTOCOL.md "Candidate records (1.6)")."""
    from btchat.discovery import candidates as cand

    secret = rendezvous.pairwise_secret(ALICE, BOB.public_key)
    a, b, device = ALICE.public_key, BOB.public_key, ALICE_DEVICE.device_id
    epoch = rendezvous.epoch_of(NOW)
    t = int(NOW * 1000)
    found = (
        cand.Addr("mapped", "tcp", "203.0.113.7", 40000),
        cand.Addr("reflexive", "udp", "203.0.113.7", 51413),
        cand.Addr("host", "tcp", "192.168.1.10", 6882),
        cand.Addr("host", "udp", "2001:db8::10", 6881),
        cand.Addr(
            "onion", "tcp", "btchatbtchatbtchatbtchatbtchatbtchatbtchatbtchatbtchatbt.onion", 6881
        ),
    )
    where = cand.slot(secret, a, b, device, epoch)
    record = cand.Record(b, device, epoch, t, found)
    fields = record.fields()
    signed = cand.RECORD_CONTEXT + encode(fields)
    padded = cand.plaintext(ALICE, record)
    value = cand.seal(ALICE, where, record)
    item = bep44.sign_mutable(_ed25519_key(where.seed), encode(value), t)

    def refused(what: str, reason: str, rec: cand.Record, signer: Identity = ALICE,
                slot: cand.Slot = where) -> dict[str, Any]:  # fmt: skip
        return {"what": what, "reason": reason, "v": hx(cand.seal(signer, slot, rec))}

    vector = {
        "epoch": epoch,
        "secret": hx(secret),
        "announcer": hx(a),
        "seeker": hx(b),
        "device_id": hx(device),
        "root_input": hx(cand.ROOT_CONTEXT + a + b + device + epoch.to_bytes(8, "big")),
        "root": hx(where.root),
        "seed": hx(where.seed),
        "public_key": hx(where.public_key),
        "aead_key": hx(where.aead_key),
        "target": hx(item.target),
        "candidates": [
            {"kind": c.kind, "transport": c.transport, "host": c.host, "port": c.port}
            for c in found
        ],
        "unsigned": hx(encode(fields)),
        "signed_message": hx(signed),
        "signature": hx(ALICE.sign(signed)),
        "plaintext": hx(padded.rstrip(b"\0")),
        "padded": hx(padded),
        "nonce": hx(value[: cand.NONCE_SIZE]),
        "v": hx(value),
        "v_bencoded": hx(item.v_bencoded),
        "seq": item.seq,
        "item_signature": hx(item.signature),
    }
    other = cand.slot(secret, a, b, device, epoch + 1)
    refusals = [
        refused("signed by Bob, who can derive the slot", "signature", record, BOB),
        refused("for another device of Alice", "elsewhere", replace(record, device_id=bytes(16))),
        refused(
            "last hour's record in this hour's slot", "elsewhere", replace(record, epoch=epoch - 1)
        ),
        refused("Alice's record for Carol", "elsewhere", replace(record, seeker=CAROL.public_key)),
        refused("sealed under the next hour's slot", "sealed", record, slot=other),
    ]
    return _file(
        "Alice's candidate record for Bob: a BEP 44 mutable item under a key derived from "
        "the pair secret, sealed, and signed inside by Alice's identity.",
        {
            "secret": "the pairwise secret (rendezvous.json)",
            "root_input": "'btchat/candidates/v1\\0' || announcer || seeker || device_id || "
            "u64be(epoch)",
            "root": "BLAKE2b-256, KEYED with secret, of root_input",
            "seed": "BLAKE2b-256(person = 'btchat-cand-sig', root): Ed25519 seed of the item key",
            "public_key": "the item's Ed25519 public key (BEP 44 k; no salt)",
            "aead_key": "BLAKE2b-256(person = 'btchat-cand-enc', root)",
            "target": "SHA-1(public_key): the DHT key",
            "unsigned": "bencode({c: [[kind, transport, address, port]...], d: device_id, "
            "e: epoch, p: seeker, t: ms})",
            "signed_message": "'btchat candidate record v1\\0' || unsigned",
            "signature": "Ed25519 by the announcer's IDENTITY key over signed_message",
            "plaintext": "bencode(unsigned's keys + {s: signature})",
            "padded": "plaintext || zero bytes, 880 bytes",
            "nonce": "BLAKE2b-192, KEYED with aead_key, of padded",
            "v": "nonce || XChaCha20-Poly1305-IETF(aead_key, nonce, ad = public_key, padded)",
            "v_bencoded": "the BEP 44 v: v as one byte string (924 bytes)",
            "seq": "BEP 44 seq: the record's t",
            "item_signature": "BEP 44 sig by the item key over '3:seqi' seq 'e1:v' v_bencoded",
            "refused": "values a reader MUST drop (reason: the counter's name)",
        },
        {"record": vector, "refused": refusals},
        constants={
            "kinds": {k.decode(): v for k, v in cand.KINDS.items()},
            "transports": {k.decode(): v for k, v in cand.TRANSPORTS.items()},
            "max_candidates": cand.MAX_CANDIDATES,
            "plaintext_size": cand.PLAINTEXT_SIZE,
            "value_size": cand.VALUE_SIZE,
        },
        people=_people(),
    )


def _ed25519_key(seed: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


FAMILIES = {
    "ids": family_ids,
    "devices": family_devices,
    "own_devices": family_own_devices,
    "rendezvous": family_rendezvous,
    "envelopes": family_envelopes,
    "safety": family_safety,
    "requests": family_requests,
    "offline": family_offline,
    "offline_v2": family_offline_v2,
    "channels": family_channels,
    "sessions": family_sessions,
    "lan": family_lan,
    "relay": family_relay,
    "dcutr": family_dcutr,
    "pcp": family_pcp,
    "dht_proxy": family_dht_proxy,
    "files": family_files,
    "linking": family_linking,
    "candidates": family_candidates,
}


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    """File name -> the exact text the generator writes."""
    return {f"{name}.json": render(make()) for name, make in FAMILIES.items()}


def main() -> int:
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in build_all().items():
        (VECTOR_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote {VECTOR_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

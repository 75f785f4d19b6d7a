"""The protocol-1 client of ``v1_client`` reproduces the published vectors byte for byte.

Only the client and the JSON files are used here: no ``btchat`` import, so a vector that
only btchat's own code can reproduce fails this test.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from .v1_client import (
    CERT_CONTEXT,
    CLOSE,
    DATA,
    ENVELOPE_CONTEXT,
    PING,
    PONG,
    REKEY,
    Certificate,
    Identity,
    LamportClock,
    Refused,
    V1Session,
    bdecode,
    bencode,
    certify,
    id_checksum,
    id_text,
    make_envelope,
    open_envelope,
    parse_device_list,
    parse_id,
    x25519_public,
)

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors"


def load(family: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{family}.json").read_text())


def b(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


def frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return out


def test_the_client_imports_nothing_from_btchat() -> None:
    tree = ast.parse((Path(__file__).parent / "v1_client.py").read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert modules and not [m for m in modules if m.split(".")[0] == "btchat"]


def test_bencode_is_canonical_and_strict() -> None:
    assert bencode({"b": 1, "a": [b"x", -3]}) == b"d1:al1:xi-3ee1:bi1ee"
    assert bdecode(b"d1:al1:xi-3ee1:bi1ee") == {b"a": [b"x", -3], b"b": 1}
    for bad in (b"i03e", b"i-0e", b"01:x", b"d1:bi1e1:ai1ee", b"d1:ai1e1:ai1ee", b"i1ei1e"):
        with pytest.raises(ValueError):
            bdecode(bad)


def test_ids_as_text() -> None:
    ids = load("ids")
    for v in ids["vectors"]:
        pk = b(v["public_key"])
        assert (b"btchat-id-v1" + pk).hex() == v["checksum_input"]
        assert id_checksum(pk).hex() == v["checksum"]
        assert id_text(pk) == v["id"]
        body = v["id"][2:]
        grouped = "-".join(["bt", *(body[i : i + 4] for i in range(0, len(body), 4))])
        assert grouped == v["id_grouped"]
        assert parse_id(v["id"]) == pk
    parsing = ids["parsing"]
    for text in parsing["accepted"]:
        assert parse_id(text).hex() == parsing["public_key"], text
    for text in parsing["refused"]:
        with pytest.raises(ValueError):
            parse_id(text)


def test_device_certificates_and_list() -> None:
    devices = load("devices")
    assert CERT_CONTEXT.hex() == devices["context"]
    by_hex = {}
    for v in devices["vectors"]["certificates"]:
        identity = Identity(b(v["identity_seed"]))
        assert identity.public_key.hex() == v["identity"]
        device_key = x25519_public(b(v["device_private"]))
        assert device_key.hex() == v["device_key"]
        cert = certify(identity, device_key, b(v["device_id"]), v["created"])
        assert cert.unsigned().hex() == v["unsigned_bencoded"]
        assert (CERT_CONTEXT + cert.unsigned()).hex() == v["signed_bytes"]
        assert cert.signature.hex() == v["signature"]
        assert cert.encode().hex() == v["certificate"]
        assert Certificate.decode(b(v["certificate"])) == cert
        tampered = bytearray(b(v["certificate"]))
        tampered[-3] ^= 1
        with pytest.raises(ValueError):
            Certificate.decode(bytes(tampered))
        by_hex[v["certificate"]] = cert
    dl = devices["vectors"]["device_list"]
    certs = parse_device_list(b(dl["value"]), b(dl["identity"]))
    assert len(certs) == 2 and all(c.encode().hex() in by_hex for c in certs)
    assert parse_device_list(b(dl["value"]), b"\x00" * 32) == []


def test_envelopes_sign_and_verify() -> None:
    env = load("envelopes")
    assert ENVELOPE_CONTEXT.hex() == env["constants"]["context"]
    seeds = {p["public_key"]: b(p["seed"]) for p in env["people"].values()}
    for v in env["vectors"]:
        sender = Identity(seeds[v["from"]])
        wire = make_envelope(
            sender,
            b(v["dev"]),
            b(v["to"]),
            v["type"],
            bdecode(b(v["body_bencoded"])),
            v["lc"],
            ts_ms=v["ts"],
            message_id=b(v["id"]),
            nonce=b(v["n"]),
        )
        assert wire.hex() == v["envelope"], v["label"]
        fields = bdecode(wire)
        unsigned = {k: x for k, x in fields.items() if k != b"sig"}
        assert (ENVELOPE_CONTEXT + bencode(unsigned)).hex() == v["signed_bytes"]
        assert fields[b"sig"].hex() == v["sig"]
        who = {"sender": b(v["from"]), "device": b(v["dev"]), "recipient": b(v["to"])}
        opened = open_envelope(wire, **who, now=v["verify_now"])
        assert (opened.type, opened.lc, opened.id) == (v["type"], v["lc"], b(v["id"]))
        for reason, kwargs in (
            ("wrong_recipient", {**who, "recipient": b(v["from"])}),
            ("wrong_device", {**who, "device": b"\x00" * 16}),
        ):
            with pytest.raises(Refused, match=reason):
                open_envelope(wire, **kwargs, now=v["verify_now"])
        with pytest.raises(Refused, match="too_old"):
            open_envelope(wire, **who, now=v["verify_now"] + 16 * 86400)
        with pytest.raises(Refused, match="bad_signature"):
            open_envelope(wire.replace(b(v["n"]), bytes(16)), **who, now=v["verify_now"])


def test_lamport_clock_walk() -> None:
    # The conversation of envelopes.json: alice 1; bob receives (2), sends 3, 4, 5; ...
    alice, bob = LamportClock(), LamportClock()
    assert alice.tick() == 1
    bob.seen(1)
    assert [bob.tick() for _ in range(3)] == [3, 4, 5]
    for lc in (3, 4, 5):
        alice.seen(lc)
    assert [alice.tick() for _ in range(3)] == [7, 8, 9]


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_full_ik_session_both_sides() -> None:
    v = load("sessions")["vectors"]["session"]
    init, resp = v["initiator"], v["responder"]
    assert v["protocol_name"] == "Noise_IK_25519_ChaChaPoly_BLAKE2b"
    assert b(v["prologue"]) == b"btchat session v1"
    wire = [b(w["bytes"]) for w in v["wire"]]
    certs = {
        side: Certificate.decode(b(s["certificate"]))
        for side, s in v.items()
        if side in ("initiator", "responder")
    }
    alice = V1Session(
        initiator=True,
        device_private=b(init["static_private"]),
        certificate=certs["initiator"],
        accept=lambda c: c.identity.hex() == resp["identity"],
        peer_device_key=b(resp["static_public"]),
        ephemeral_private=b(init["ephemeral_private"]),
    )
    bob = V1Session(
        initiator=False,
        device_private=b(resp["static_private"]),
        certificate=certs["responder"],
        accept=lambda c: c.identity.hex() == init["identity"],
        ephemeral_private=b(resp["ephemeral_private"]),
    )
    text, receipt = b(v["payloads"]["text"]), b(v["payloads"]["receipt"])

    assert alice.data_to_send() == wire[0]
    assert bob.receive(wire[0]) == [] and bob.data_to_send() == wire[1]
    assert bob.peer == certs["initiator"] and not bob.established
    assert alice.receive(wire[1]) == [] and alice.data_to_send() == wire[2]  # the PING
    assert alice.peer == certs["responder"]
    assert alice.handshake_hash.hex() == bob.handshake_hash.hex() == v["handshake_hash"]
    assert bob.receive(wire[2]) == [(PING, b"")] and bob.established
    assert bob.data_to_send() == wire[3]  # its PONG
    assert alice.receive(wire[3]) == [(PONG, b"")]
    alice.send(DATA, text)
    assert alice.data_to_send() == wire[4]
    assert bob.receive(wire[4]) == [(DATA, text)]
    bob.send(DATA, receipt)
    assert bob.data_to_send() == wire[5]
    assert alice.receive(wire[5]) == [(DATA, receipt)]
    alice.send(CLOSE, v["payloads"]["close_reason"].encode())
    assert alice.data_to_send() == wire[6]
    assert bob.receive(wire[6]) == [(CLOSE, b"bye")] and bob.closed == "bye"
    # Each write is whole frames, as sessions.json cuts them.
    assert all(frames(w) == [w] for w in wire)


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_responder_stays_silent_for_a_stranger_or_a_changed_byte() -> None:
    from .v1_client import SessionError

    v = load("sessions")["vectors"]["session"]
    resp = v["responder"]
    first = b(v["wire"][0]["bytes"])
    for accept, message in (
        (lambda c: False, first),
        (lambda c: True, first[:40] + bytes([first[40] ^ 1]) + first[41:]),
    ):
        bob = V1Session(
            initiator=False,
            device_private=b(resp["static_private"]),
            certificate=Certificate.decode(b(resp["certificate"])),
            accept=accept,
        )
        with pytest.raises(SessionError):
            bob.receive(message)
        assert bob.data_to_send() == b""


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_rekey_is_noise_rekey_and_the_peer_follows() -> None:
    from noise.state import CipherState

    v = load("sessions")["vectors"]["session"]
    init, resp = v["initiator"], v["responder"]
    alice = V1Session(
        initiator=True,
        device_private=b(init["static_private"]),
        certificate=Certificate.decode(b(init["certificate"])),
        accept=lambda c: True,
        peer_device_key=b(resp["static_public"]),
    )
    bob = V1Session(
        initiator=False,
        device_private=b(resp["static_private"]),
        certificate=Certificate.decode(b(resp["certificate"])),
        accept=lambda c: True,
    )
    bob.receive(alice.data_to_send())
    alice.receive(bob.data_to_send())
    bob.receive(alice.data_to_send())
    sending = alice._noise.noise_protocol.cipher_state_encrypt
    before_k, before_n = sending.k, sending.n
    alice.send(REKEY)
    # The noise library's own CipherState.Rekey() from the same state gives the same key.
    reference = CipherState(alice._noise.noise_protocol)
    reference.initialize_key(before_k)
    reference.rekey()
    assert sending.k == reference.k and sending.n == before_n + 1  # n is not reset
    alice.send(DATA, b"d1:xi1ee")
    assert bob.receive(alice.data_to_send()) == [(REKEY, b""), (DATA, b"d1:xi1ee")]

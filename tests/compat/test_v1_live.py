"""A protocol-1 peer, written from the specification alone, against the current daemon.

A real ``btchat up`` runs on a loopback sandbox swarm. The peer of ``v1_client`` (no
``btchat`` import) is added as a contact by its ID, dials the daemon's session port over
TCP as a v1 peer (Noise IK, no substream announcement, no QUIC, no relay) and chats:
whatever later versions add must still reach it, and nothing it did not negotiate.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_messenger_e2e import BTCHAT, Person, sandbox, wait_for  # noqa: F401

from .v1_client import (
    FRAME_NAMES,
    PING,
    PONG,
    REKEY,
    Certificate,
    Received,
    V1Client,
    bencode,
    parse_device_list,
    parse_id,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(sandbox: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[Person]:  # noqa: F811
    bootstrap, env = sandbox
    person = Person("daemon", tmp_path, env, bootstrap)
    person.up()
    try:
        yield person
    finally:
        if person.proc is not None:
            person.proc.kill()
            person.proc.wait(timeout=10)


def device_certificate(person: Person) -> Certificate:
    """The daemon's certified device key, as a dialler finds it: its device list in the
    DHT (BEP 44, salt ``btchat/devices``), read here with ``btchat dht get``."""
    identity = parse_id(person.id)

    args = ["get", identity.hex(), "--salt", "btchat/devices", "--bootstrap", person.bootstrap]

    def fetch() -> list[Certificate]:
        out = subprocess.run(
            [*BTCHAT, "dht", *args, "--json"],
            env=person.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            return []
        certs = [bytes.fromhex(c["hex"]) for c in json.loads(out.stdout)["value"]["certs"]]
        return parse_device_list(bencode({"certs": certs}), identity)

    return wait_for(fetch, 20, "the daemon's device list in the DHT")[0]


def of_type(received: Received, kind: str) -> list[dict[bytes, object]]:
    return [e.body for e in received.envelopes if e.type == kind]


def receipted(received: Received, message_id: bytes) -> bool:
    return any(message_id in b[b"ids"] for b in of_type(received, "receipt"))


def test_a_v1_peer_chats_with_the_current_daemon(daemon: Person, tmp_path: Path) -> None:
    port = daemon.cli("status")["listen_port"]
    cert = device_certificate(daemon)
    client = V1Client()
    daemon.cli("contact", "add", client.id, "old")
    client.connect("127.0.0.1", port, cert)
    try:
        # The v1 peer writes first; the daemon stores it and answers "delivered".
        sent = client.send_text("hello from a v1 peer")
        client.wait(lambda r: receipted(r, sent), 15, "the daemon's delivered receipt")
        history = wait_for(lambda: daemon.history("old"), 10, "the text in the history")
        assert [(m["text"], m["direction"], m["id"]) for m in history[:1]] == [
            ("hello from a v1 peer", "in", sent.hex())
        ]
        assert history[0]["sender"] == client.identity.public_key.hex()
        # What the daemon sends at session start: its capability announcement (not an
        # envelope, dropped), presence, its Olm prekey (a type v1 verifies and ignores).
        caps = client.received.undecodable
        assert len(caps) == 1 and caps[0][:13] == b"\x00btchat-caps\x00" and caps[0][13] & 1
        assert of_type(client.received, "presence")[0][b"s"] == b"online"
        assert [b.keys() for b in of_type(client.received, "prekey")] == [{b"k", b"o"}]

        # Read receipts and presence, both ways.
        daemon.cli("read", "old")
        client.wait(
            lambda r: any(b[b"s"] == b"read" and sent in b[b"ids"] for b in of_type(r, "receipt")),
            15,
            "the daemon's read receipt",
        )
        client.send_envelope("presence", {"s": b"away", "ls": int(time.time() * 1000)})
        wait_for(
            lambda: daemon.cli("contacts")["contacts"][0]["presence"] == "away",
            10,
            "our presence at the daemon",
        )

        # A PING is answered; after our REKEY (Noise §11.3) the daemon still reads us.
        pongs = sum(kind == PONG for kind, _ in client.received.frames)
        client.send_frame(PING)
        client.wait(lambda r: sum(kind == PONG for kind, _ in r.frames) > pongs, 10, "a PONG")
        client.send_frame(REKEY)
        rekeyed = client.send_text("after a rekey")
        client.wait(lambda r: receipted(r, rekeyed), 15, "the receipt after a rekey")

        # The daemon writes; the v1 peer verifies the envelope and acknowledges it.
        daemon.cli("send", "old", "hello, old friend")
        client.wait(lambda r: bool(of_type(r, "text")), 15, "the daemon's text")
        assert of_type(client.received, "text") == [{b"t": b"hello, old friend"}]
        wait_for(
            lambda: daemon.history("old")[-1]["state"] == "delivered", 10, "our receipt applied"
        )

        # A file offer: an envelope type v1 ignores; its bytes would need substreams.
        (tmp_path / "notes.txt").write_bytes(b"x" * 40000)
        daemon.cli("send-file", "old", str(tmp_path / "notes.txt"))
        client.wait(lambda r: bool(of_type(r, "file")), 15, "the file offer")
        client.poll(1.0)
        assert client.received.refused == []
    finally:
        client.close()
    # A v1 peer is sent the v1 frames only: no OPEN, SDATA, CREDIT, FIN or RESET.
    assert {FRAME_NAMES[kind] for kind, _ in client.received.frames} <= {"DATA", "PING", "PONG"}

    # Written while the v1 peer is away: offered with `sync` at the next session (a type
    # v1 ignores), then, unanswered, resent after the 10 s reconciliation timeout.
    wait_for(lambda: not daemon.cli("contacts")["contacts"][0]["online"], 10, "session down")
    daemon.cli("send", "old", "while you were away")
    started = time.monotonic()
    client.connect("127.0.0.1", port, cert)
    try:
        client.wait(
            lambda r: {b"t": b"while you were away"} in of_type(r, "text"), 20, "the resend"
        )
        assert time.monotonic() - started >= 9
        assert of_type(client.received, "sync")
        wait_for(
            lambda: daemon.history("old")[-1]["state"] == "delivered", 10, "the resend receipted"
        )
    finally:
        client.close()
    assert {FRAME_NAMES[kind] for kind, _ in client.received.frames} <= {"DATA", "PING", "PONG"}

"""A running daemon faced with an impostor, replays, forgeries and tampered frames.

The test plays Bob with his real keys against Alice's daemon (a separate process): it
opens Noise sessions by hand and sends what a hostile or broken peer could send. Each
must be refused and logged, and Alice's daemon must keep running and keep serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import BTCHAT, base_env

from btchat.identity.keys import DeviceKey, Identity
from btchat.identity.keystore import KeyStore, LoadedKeys
from btchat.messaging import envelope as E
from btchat.session.core import DataReceived, HandshakeComplete, Session, SessionConfig

pytestmark = pytest.mark.slow


class Alice:
    def __init__(self, tmp: Path) -> None:
        self.env = base_env(tmp)
        self.dir = tmp / "alice"
        self.cli("init", "--no-passphrase")
        self.keys: LoadedKeys = KeyStore(self.dir).load(None)
        self.proc = subprocess.Popen(
            [
                *BTCHAT,
                "up",
                "--data-dir",
                str(self.dir),
                "--host",
                "127.0.0.1",
                "--dht-port",
                "0",
                "--bootstrap",
                "127.0.0.1:9",
                "--json",
                "-v",
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = json.loads(self.proc.stdout.readline())["listen_port"]

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [*BTCHAT, *args, "--data-dir", str(self.dir), "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[-1]) if out.stdout.strip() else None

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err


@pytest.fixture
def alice(tmp_path: Path) -> Iterator[Alice]:
    a = Alice(tmp_path)
    try:
        yield a
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(10)


class Peer:
    """A hand-driven session to Alice's daemon."""

    def __init__(self, identity: Identity, device: DeviceKey, remote_static: bytes) -> None:
        self.identity, self.device = identity, device
        self.cert = identity.certify(device, int(time.time()))
        self.remote_static = remote_static
        self.received: list[E.Envelope] = []
        self.established = False

    async def connect(self, port: int, timeout: float = 5.0) -> bool:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        self.session = Session(
            "initiator",
            self.device,
            self.cert,
            lambda i, c: True,
            remote_static=self.remote_static,
            now=loop.time(),
            config=SessionConfig(),
        )
        self._flush()
        deadline = loop.time() + timeout
        while not self.established and loop.time() < deadline:
            if not await self.pump(0.2):
                break
        return self.established

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.writer.write(data)

    async def pump(self, wait: float) -> bool:
        """Read what arrives within ``wait`` s; False once the stream has ended."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), wait)
        except TimeoutError:
            return True
        if not data:
            return False
        self.session.receive_data(data, asyncio.get_running_loop().time())
        while (event := self.session.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                self.established = True
            elif isinstance(event, DataReceived):
                self.received.append(E.parse_envelope(event.payload))
        self._flush()
        return True

    def send(self, payload: bytes) -> None:
        self.session.send(payload, asyncio.get_running_loop().time())
        self._flush()

    def envelope(self, to: bytes, text: str, lamport: int = 1) -> E.Envelope:
        return E.create(
            self.identity,
            self.device.device_id,
            to,
            b"text",
            E.text_body(text),
            lamport=lamport,
            now=time.time(),
        )


def texts(alice: Alice) -> list[str]:
    return [m["text"] for m in alice.cli("history", "bob")["messages"]]


async def _scenario(alice: Alice, bob_id: Identity, bob_dev: DeviceKey) -> None:
    me = alice.keys.identity.public_key
    static = alice.keys.device.public_key

    # An impostor: a valid handshake from a key that is not a contact gets no answer.
    carol = Peer(Identity.generate(), DeviceKey.generate(), static)
    assert not await carol.connect(alice.port, timeout=3)
    carol.writer.close()

    bob = Peer(bob_id, bob_dev, static)
    assert await bob.connect(alice.port)
    good = bob.envelope(me, "a real message")
    bob.send(E.encode_envelope(good))
    bob.send(b"this is not an envelope")  # malformed: refused, session goes on
    bob.send(E.encode_envelope(good))  # replay of the same envelope: stored once
    forged = E.create(
        carol.identity,
        carol.device.device_id,
        me,
        b"text",
        E.text_body("I am bob, honest"),
        lamport=2,
        now=time.time(),
    )
    bob.send(E.encode_envelope(forged))  # signed by someone else over bob's session
    tampered = dataclasses.replace(bob.envelope(me, "original", 3), body=E.text_body("tampered"))
    bob.send(E.encode_envelope(tampered))  # body changed after signing
    old = E.create(
        bob.identity,
        bob_dev.device_id,
        me,
        b"text",
        E.text_body("ancient"),
        lamport=4,
        now=time.time() - 40 * 86400,
    )
    bob.send(E.encode_envelope(old))  # outside the time window
    other_device = E.create(
        bob.identity,
        b"\x07" * 16,
        me,
        b"text",
        E.text_body("elsewhere"),
        lamport=5,
        now=time.time(),
    )
    bob.send(E.encode_envelope(other_device))  # names a device this session is not
    for _ in range(15):
        await bob.pump(0.2)
    receipts = [r for r in bob.received if r.type == b"receipt"]
    acked = [i for r in receipts for i in E.decode_receipt(r)[0]]
    assert acked.count(good.id) == 2  # the replay was acknowledged again, not stored again

    # A tampered frame on the wire kills that session, and only that session.
    bob.writer.write(b"\x00\x20" + b"\x42" * 32)
    ended = False
    for _ in range(20):
        if not await bob.pump(0.2):
            ended = True
            break
    assert ended
    again = Peer(bob_id, bob_dev, static)
    assert await again.connect(alice.port)
    again.send(E.encode_envelope(again.envelope(me, "after the storm", 9)))
    for _ in range(10):
        await again.pump(0.2)
    again.writer.close()


def test_refuses_hostile_input_and_keeps_running(alice: Alice, tmp_path: Path) -> None:
    bob_store = KeyStore(tmp_path / "bob", kdf_strength="min")
    bob = bob_store.create(None, now=int(time.time()))
    from btchat.identity.idtext import format_id

    alice.cli("contact", "add", format_id(bob.identity.public_key), "bob")
    asyncio.run(_scenario(alice, bob.identity, bob.device))
    assert texts(alice) == ["a real message", "after the storm"]
    assert alice.cli("status")["contacts"] == 1  # still serving its API
    log = alice.stop()
    assert "refused a session from a key that is not a contact" in log
    for code in ("malformed", "wrong_sender", "bad_signature", "too_old", "wrong_device"):
        assert code in log, f"no log line for {code}"
    assert "Traceback" not in log

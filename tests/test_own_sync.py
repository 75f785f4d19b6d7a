"""History sync between one identity's devices (issue 13 item 3): every message once,
in the same order, after any outage; bad payloads dropped and counted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from btchat.identity.keys import Identity
from btchat.messaging import envelope as env_mod
from btchat.messaging.own_sync import BATCH_ROWS, encode_batch
from btchat.messaging.store import Store
from btchat.node.own_sync import OwnSync


class Device:
    """One of our devices: a store and its sync, wired to the others by hand."""

    def __init__(self, tmp: Path, name: str, me: Identity) -> None:
        self.me = me
        self.id = name.encode().ljust(16, b".")
        self.store = Store.open(tmp / f"{name}.db", None)
        self.wire: dict[bytes, Device] = {}  # device id -> the peer, while "up"
        self.events: list[dict[str, Any]] = []
        self.sync = OwnSync(self.store, self._send, self._emit)

    def _send(self, device: bytes, payload: bytes) -> bool:
        peer = self.wire.get(device)
        if peer is None:
            return False
        peer.inbox.append((self.id, payload))
        return True

    inbox: list[tuple[bytes, bytes]]

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.sync.changed()  # as the daemon does: a new row wakes the other syncs

    def send_text(self, to: bytes, text: str) -> None:
        env = env_mod.create(
            self.me, self.id, to, env_mod.TEXT, env_mod.text_body(text),
            lamport=self.store.next_lamport(to, None), now=time.time(),
        )  # fmt: skip
        self.store.save_outgoing(env, time.time(), sent=True)
        self._emit({"type": "message"})

    def history(self, peer: bytes) -> list[tuple[bytes, str | None]]:
        rows = self.store.history(peer, limit=100_000)
        return [(r.id, r.text) for r in rows]


def connect(a: Device, b: Device) -> None:
    a.wire[b.id], b.wire[a.id] = b, a
    a.sync.device_up(b.id)
    b.sync.device_up(a.id)


def disconnect(a: Device, b: Device) -> None:
    a.wire.pop(b.id, None)
    b.wire.pop(a.id, None)
    a.sync.device_down(b.id)
    b.sync.device_down(a.id)


def pump(*devices: Device, limit: int = 100_000) -> int:
    """Deliver queued payloads until none are left; returns how many moved."""
    moved = 0
    while moved < limit:
        queued = [(d, d.inbox.pop(0)) for d in devices if d.inbox]
        if not queued:
            return moved
        for device, (source, payload) in queued:
            device.sync.receive(source, payload)
            moved += 1
    raise AssertionError("sync did not settle")


def three(tmp_path: Path) -> list[Device]:
    me = Identity.generate()
    devices = [Device(tmp_path, n, me) for n in ("laptop", "desktop", "phone")]
    for d in devices:
        d.inbox = []
    return devices


def test_a_device_back_after_a_long_outage_catches_up_once_in_order(tmp_path: Path) -> None:
    laptop, desktop, phone = three(tmp_path)
    friend = Identity.generate().public_key
    connect(laptop, desktop)
    for i in range(3 * BATCH_ROWS + 7):  # several batches while the phone is away
        (laptop if i % 3 else desktop).send_text(friend, f"m{i}")
        pump(laptop, desktop)
    assert laptop.history(friend) == desktop.history(friend)
    connect(phone, laptop)
    connect(phone, desktop)  # two sources at once: still every row once
    pump(laptop, desktop, phone)
    assert phone.history(friend) == laptop.history(friend)
    assert len(phone.history(friend)) == 3 * BATCH_ROWS + 7
    assert len({i for i, _ in phone.history(friend)}) == 3 * BATCH_ROWS + 7
    # A message sent on the phone now reaches both others at once.
    phone.send_text(friend, "from the phone")
    pump(laptop, desktop, phone)
    assert laptop.history(friend)[-1][1] == desktop.history(friend)[-1][1] == "from the phone"
    # The phone's clock moved past the copies: its message sorts last everywhere.
    assert laptop.history(friend) == desktop.history(friend) == phone.history(friend)


def test_a_batch_lost_with_its_session_is_sent_again(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    friend = Identity.generate().public_key
    for i in range(5):
        laptop.send_text(friend, f"m{i}")
    connect(laptop, desktop)
    desktop.inbox.clear()  # the session dies with the batch in flight
    disconnect(laptop, desktop)
    assert desktop.history(friend) == []
    connect(laptop, desktop)
    pump(laptop, desktop)
    assert desktop.history(friend) == laptop.history(friend)
    assert laptop.sync.cursor(desktop.id) == laptop.store.last_seq()


def test_malformed_sync_payloads_are_dropped_and_counted(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    friend = Identity.generate().public_key
    laptop.send_text(friend, "hi")
    rows = laptop.store.rows_after(0, 10)
    good, _ = encode_batch(rows)
    bad = [
        b"not bencode",
        b"d1:t4:sync1:ui1ee",  # no rows
        good.replace(b"3:out", b"3:sid"),  # a direction that is not one
        b"d1:ml" + b"le" * (BATCH_ROWS + 1) + b"e1:t4:sync1:ui1ee",  # too many rows
    ]
    for payload in bad:
        desktop.sync.receive(laptop.id, payload)
    assert desktop.sync.stats["malformed"] == len(bad)
    assert desktop.history(friend) == []
    desktop.sync.receive(laptop.id, good)
    assert [t for _, t in desktop.history(friend)] == ["hi"]

"""Names for our own devices ("laptop", "phone"), the same on all of them, so that the
one lost can be told apart when it is to be revoked.

A name is ours alone: it travels only between our own devices (the ``names`` note,
``messaging/own_sync.py``), never in the device list in the DHT, which anyone may
read. Each name is a last-writer-wins register (then the higher device id), so two
devices renaming one at once end with the same name. A device names itself after its
host the first time it starts, as changed at 0, so any name a user gives wins.
"""

from __future__ import annotations

import logging
import socket
import time
import unicodedata
from collections.abc import Callable
from typing import Any

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.errors import ApiError
from btchat.messaging.own_sync import (
    DEVICE_NAME_MAX,
    NAMES_PER_NOTE,
    DeviceName,
    NamesNote,
    encode_names,
)
from btchat.messaging.store import Store

__all__ = ["DeviceNames", "clean_name"]

log = logging.getLogger(__name__)

#: Where the names are kept: a bencoded list of [device, name, changed_ms, by].
NAMES_KEY = "device_names"
#: Longest name a user gives, in characters (and at most DEVICE_NAME_MAX bytes).
NAME_CHARS = 40


def clean_name(text: str) -> str:
    """A name as a user typed it, or ApiError: trimmed, one line, not empty."""
    name = " ".join(text.split())
    if not name or len(name) > NAME_CHARS or len(name.encode()) > DEVICE_NAME_MAX:
        raise ApiError(400, "bad_name", f"a device name is 1 to {NAME_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise ApiError(400, "bad_name", "a device name has no control or bidi characters")
    return name


class DeviceNames:
    def __init__(
        self,
        store: Store,
        device_id: bytes,
        send_to_all: Callable[[bytes], None],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.store = store
        self.device_id = device_id
        self._send_to_all = send_to_all
        self._emit = emit
        self.stats = {"applied": 0, "stale": 0}
        if device_id not in self._load():
            host = " ".join(socket.gethostname().split())[:NAME_CHARS] or "this device"
            self._save({**self._load(), device_id: DeviceName(device_id, host, 0, device_id)})

    def _load(self) -> dict[bytes, DeviceName]:
        raw = self.store.kv_get(NAMES_KEY)
        if not raw:
            return {}
        try:
            items = decode(raw)
            names = [DeviceName(i[0], i[1].decode(), i[2], i[3]) for i in items]
        except (DecodeError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:
            log.warning("the stored device names do not read (%s): they start again", exc)
            return {}
        return {n.device: n for n in names}

    def _save(self, names: dict[bytes, DeviceName]) -> None:
        # The newest first, so the bound keeps those most recently named.
        kept = sorted(names.values(), key=DeviceName.stamp, reverse=True)[:NAMES_PER_NOTE]
        self.store.kv_set(
            NAMES_KEY, encode([[n.device, n.name.encode(), n.changed_ms, n.by] for n in kept])
        )

    def of(self, device: bytes) -> str | None:
        found = self._load().get(device)
        return found.name if found else None

    def payloads(self) -> list[bytes]:
        """Every name we know, for a device coming up."""
        names = list(self._load().values())
        return [encode_names(names)] if names else []

    def rename(self, device: bytes, text: str) -> str:
        """The user names ``device`` here: stored, sent to our devices, shown."""
        name = clean_name(text)
        names = self._load()
        previous = names[device].changed_ms if device in names else 0
        at = max(int(time.time() * 1000), previous + 1)
        names[device] = DeviceName(device, name, at, self.device_id)
        self._save(names)
        self._send_to_all(encode_names([names[device]]))
        self._emit({"type": "device_named", "device_id": device.hex(), "name": name})
        return name

    def merge(self, note: NamesNote) -> None:
        """Names from another of our devices: each taken where newer than ours."""
        names = self._load()
        taken = []
        for n in note.names:
            here = names.get(n.device)
            if here is not None and n.stamp() <= here.stamp():
                self.stats["stale"] += 1
                continue
            names[n.device] = n
            taken.append(n)
        if not taken:
            return
        self._save(names)
        self.stats["applied"] += len(taken)
        for n in taken:
            self._emit({"type": "device_named", "device_id": n.device.hex(), "name": n.name})

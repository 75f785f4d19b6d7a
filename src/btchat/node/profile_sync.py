"""Our own profile the same on all our devices (``messaging/own_sync.py`` has the
format).

Every device republishes the profile under the identity key every half hour, so a name
changed on one device would come back from another's older copy at its next put.
Instead an edit here is recorded with its time and this device's id and sent to our
other devices up (a device coming up gets it too); a newer one replaces what a device
has (a tie goes to the higher device id), which republishes it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from btchat.messaging.own_sync import ProfileChange, encode_profile
from btchat.messaging.store import Store
from btchat.node.profile import Profiles

__all__ = ["ProfileSync"]

log = logging.getLogger(__name__)

#: Where the last change is kept: changed_ms (8 bytes, big-endian) and device id.
CHANGE_KEY = "profile_change"


class ProfileSync:
    def __init__(
        self,
        store: Store,
        profiles: Profiles,
        device_id: bytes,
        send_to_all: Callable[[bytes], None],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.store = store
        self.profiles = profiles
        self.device_id = device_id
        self._send_to_all = send_to_all
        self._emit = emit
        self.stats = {"applied": 0, "stale": 0}

    def current(self) -> ProfileChange:
        """Our profile and its last change; one from before sync counts as set at 0 by
        this device (so two such devices agree on the higher id's)."""
        raw = self.store.kv_get(CHANGE_KEY) or b""
        changed, device = (
            (int.from_bytes(raw[:8], "big"), raw[8:]) if len(raw) == 24 else (0, self.device_id)
        )
        mine = self.profiles.of(self.profiles.me)
        avatar = bytes.fromhex(mine["avatar"]) if mine["avatar"] else None
        return ProfileChange(changed, device, mine["name"], mine["status"], avatar)

    def _save(self, change: ProfileChange) -> None:
        self.store.kv_set(CHANGE_KEY, change.changed_ms.to_bytes(8, "big") + change.device)

    def payloads(self) -> list[bytes]:
        """The profile for a device coming up (nothing if none was ever set)."""
        change = self.current()
        if change.changed_ms == 0 and not (change.name or change.status or change.avatar):
            return []
        return [encode_profile(change)]

    def set(self, name: str | None, status: str | None, avatar: str | None) -> dict[str, Any]:
        """The user edits the profile here: stored, republished, sent to our devices."""
        previous = self.current().changed_ms
        profile = self.profiles.set_mine(name, status, avatar)
        at = max(int(time.time() * 1000), previous + 1)
        avatar_bytes = bytes.fromhex(profile["avatar"]) if profile["avatar"] else None
        change = ProfileChange(at, self.device_id, profile["name"], profile["status"], avatar_bytes)
        self._save(change)
        self._send_to_all(encode_profile(change))
        self._emit({"type": "profile", "profile": profile})  # other front ends show it
        return profile

    def merge(self, change: ProfileChange) -> None:
        """Another of our devices' profile: taken if newer than ours."""
        here = self.current()
        if (change.changed_ms, change.device) <= (here.changed_ms, here.device):
            self.stats["stale"] += 1
            return
        profile = self.profiles.set_mine(
            change.name or "", change.status or "", change.avatar.hex() if change.avatar else ""
        )
        self._save(change)
        self.stats["applied"] += 1
        log.info("our profile was changed on our device %s", change.device.hex()[:8])
        self._emit({"type": "profile", "profile": profile})

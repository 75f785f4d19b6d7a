"""Public profiles: ours published as a BEP 44 item under the identity key, contacts' fetched.

A profile is a name, a status line and an avatar hash. Ours is kept in the store and
republished while the node runs (public DHT nodes keep items about two hours) and at
once when it changes; a contact's is fetched when its session comes up or it is added,
checked (the DHT layer verifies the signature; sizes are checked here) and kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from btchat.codec.bencode import encode
from btchat.dht import bep44
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtError, DhtService

__all__ = ["PROFILE_REPUBLISH", "PROFILE_SALT", "Profiles"]

log = logging.getLogger(__name__)

#: BEP 44 salt of the public profile published under the identity key.
PROFILE_SALT = b"btchat/profile"
#: Profiles are republished this often (public DHT nodes keep items about two hours).
PROFILE_REPUBLISH = 1800.0
#: Longest name and status taken from a fetched profile (bytes).
MAX_NAME, MAX_STATUS = 256, 560


def _text(value: dict[bytes, Any], key: bytes, limit: int) -> str | None:
    raw = value.get(key)
    if not isinstance(raw, bytes) or len(raw) > limit:
        return None
    return raw.decode("utf-8", "replace")


class Profiles:
    """Our profile and our contacts' profiles, in the store and on the DHT."""

    def __init__(self, identity: Identity, store: Store) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.store = store
        self._changed = asyncio.Event()
        #: Where strangers leave contact requests (:mod:`btchat.node.contact_requests`);
        #: published with the profile, so a rotation takes effect at the next put.
        self.inbox: bytes | None = None

    def of(self, pk: bytes) -> dict[str, Any]:
        raw = self.store.kv_get(f"profile:{pk.hex()}")
        empty = {"name": None, "status": None, "avatar": None}
        if not raw:
            return empty
        try:
            return {**empty, **json.loads(raw)}
        except ValueError:
            return empty

    def set_mine(self, name: str | None, status: str | None, avatar: str | None) -> dict[str, Any]:
        """Change the fields given (an empty string clears one); republished at once."""
        profile = self.of(self.me)
        for key, value in (("name", name), ("status", status), ("avatar", avatar)):
            if value is not None:
                profile[key] = value or None
        self.store.kv_set(f"profile:{self.me.hex()}", json.dumps(profile).encode())
        if profile["name"]:
            self.store.kv_set("profile_name", profile["name"].encode())
        self._changed.set()
        return profile

    def _value(self) -> bytes:
        profile = self.of(self.me)
        value: dict[bytes, Any] = {}
        if profile["name"]:
            value[b"n"] = profile["name"].encode()
        if profile["status"]:
            value[b"s"] = profile["status"].encode()
        if profile["avatar"]:
            value[b"a"] = bytes.fromhex(profile["avatar"])
        if self.inbox is not None:
            value[b"i"] = self.inbox
        return encode(value)

    def republish(self) -> None:
        """Put the profile again now (its inbox changed)."""
        self._changed.set()

    async def publish_loop(self, dht: DhtService, joined: asyncio.Event) -> None:
        """Publish our profile under the identity key, and keep it alive."""
        while True:
            await joined.wait()
            self._changed.clear()
            item = bep44.sign_mutable(
                self.identity.private_key, self._value(), int(time.time() * 1000), PROFILE_SALT
            )
            try:
                await dht.put_mutable(item)
                wait = PROFILE_REPUBLISH
            except DhtError as exc:
                log.info("could not publish the profile yet: %s", exc)
                wait = 10.0
            with contextlib.suppress(TimeoutError):  # not wait_for: see ChannelService
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    async def fetch(self, dht: DhtService, pk: bytes) -> bool:
        """A contact's profile from the DHT; True if it changed (and was stored)."""
        try:
            result = await dht.get_mutable(pk, PROFILE_SALT)
        except DhtError:
            return False
        value = result.value
        if not isinstance(value, dict):
            return False
        avatar = value.get(b"a")
        profile = {
            "name": _text(value, b"n", MAX_NAME),
            "status": _text(value, b"s", MAX_STATUS),
            "avatar": avatar.hex() if isinstance(avatar, bytes) and len(avatar) == 32 else None,
        }
        if self.store.get_contact(pk) is None or profile == self.of(pk):
            return False
        self.store.kv_set(f"profile:{pk.hex()}", json.dumps(profile).encode())
        return True

"""An in-memory :class:`~btchat.api.facade.Messenger` with no network and no disk.

For tests of the API layer and for GUI work without a daemon: it behaves like the real
messenger where callers can see it (errors, event shapes, ordering), nothing more.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from btchat.api.facade import PRESENCE_STATES, ApiError, Devices, SettingsPart
from btchat.messaging.contacts import ContactChange
from btchat.node.events import EventHub

__all__ = ["FakeChannels", "FakeFiles", "FakeMessenger"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_key(text: str) -> bool:
    return len(text) == 64 and all(ch in "0123456789abcdef" for ch in text)


class FakeMessenger:
    """Contacts are 64-hex public keys; a ``ref`` is a key or ``btchat:<key>?name=<n>``."""

    def __init__(
        self, public_key: str | None = None, *, channels: bool = True, files: bool = False
    ) -> None:
        self.public_key = public_key or secrets.token_hex(32)
        #: ``channels=False``: a messenger without channels (the routes answer 501).
        self.channels: FakeChannels | None = FakeChannels(self) if channels else None
        #: ``files=True``: in-memory transfers (:class:`FakeFiles`); else the routes answer 501.
        self.files: FakeFiles | None = FakeFiles(self) if files else None
        #: No device list or linking: the device routes answer 501.
        self.devices: Devices | None = None
        self.settings: SettingsPart | None = None
        self.contacts: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []
        self.requests: dict[str, dict[str, Any]] = {}
        self.presence: dict[str, Any] = {"status": "online", "note": None}
        self.profile: dict[str, Any] = {"name": None, "status": None, "avatar": None}
        self.typing: list[tuple[str, bool]] = []
        self._lamport = itertools.count(1)
        self._events = EventHub()  # the daemon's stream, bounded the same way

    # ------------------------------------------------------------ helpers

    @property
    def subscribers(self) -> int:
        """How many event streams are open (tests check that closing unsubscribes)."""
        return self._events.subscribers

    def emit(self, event: dict[str, Any]) -> None:
        self._events.emit(event)

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        return self._events.subscribe()

    def _parse_ref(self, ref: str) -> tuple[str, str | None]:
        text, name = ref.strip(), None
        if text.startswith("btchat:"):
            text, _, query = text[len("btchat:") :].partition("?")
            if query.startswith("name="):
                name = query[len("name=") :] or None
        text = text.lower()
        if not _is_key(text):
            raise ApiError(400, "bad_id", f"{ref!r} is not a btchat ID")
        return text, name

    def _resolve(self, ref: str) -> str:
        for pk, row in self.contacts.items():
            if ref in (row["name"], row["id"], pk):
                return pk
        raise ApiError(404, "unknown_contact", f"no contact named {ref!r}")

    def _check_name(self, name: str, pk: str) -> None:
        if any(r["name"] == name and k != pk for k, r in self.contacts.items()):
            raise ApiError(409, "name_taken", f"another contact is already called {name!r}")

    def receive(self, c: str, text: str) -> dict[str, Any]:
        """Simulate a message arriving from contact ``c``."""
        pk = self._resolve(c)
        message = self._message(pk, pk, "in", text, "delivered")
        self.emit({"type": "message", "message": message})
        return message

    def _message(
        self, peer: str, sender: str, direction: str, text: str, state: str
    ) -> dict[str, Any]:
        message = {
            "id": secrets.token_hex(16),
            "peer": peer,
            "sender": sender,
            "direction": direction,
            "text": text,
            "state": state,
            "ts": _now_ms(),
            "lamport": next(self._lamport),
            "type": "text",
        }
        self.messages.append(message)
        return message

    # ------------------------------------------------------------ facade

    async def status(self) -> dict[str, Any]:
        return {
            **(await self.identity()),
            "version": "0.0.0-fake",
            "pid": 0,
            "dht": {"joined": True, "nodes": 0, "addr": None, "external_addr": None},
            "listen_port": None,
            "port_mapping": None,
            "contacts": len(self.contacts),
            "contacts_online": sum(1 for c in self.contacts.values() if c["online"]),
            "uptime": 0.0,
        }

    async def identity(self) -> dict[str, Any]:
        return {
            "id": f"bt{self.public_key[:20]}",
            "uri": f"btchat:{self.public_key}",
            "public_key": self.public_key,
            "device_id": self.public_key[:32],
        }

    async def list_contacts(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.contacts.values()]

    async def add_contact(self, ref: str, name: str | None) -> dict[str, Any]:
        pk, suggested = self._parse_ref(ref)
        if pk == self.public_key:
            raise ApiError(400, "self", "that is your own ID")
        name = name or suggested or pk[:12]
        self._check_name(name, pk)
        if pk in self.contacts:
            raise ApiError(409, "exists", "already a contact")
        self.contacts[pk] = {
            "id": f"bt{pk[:20]}",
            "public_key": pk,
            "name": name,
            "verified": False,
            "blocked": False,
            "retention_days": 2,
            "presence": "offline",
            "last_seen": None,
            "online": False,
        }
        self.emit({"type": "contact", "action": "added", "contact": dict(self.contacts[pk])})
        return dict(self.contacts[pk])

    async def get_contact(self, c: str) -> dict[str, Any]:
        return dict(self.contacts[self._resolve(c)])

    async def update_contact(self, c: str, change: ContactChange) -> dict[str, Any]:
        pk = self._resolve(c)
        row = self.contacts[pk]
        days = change.retention_days
        if days is not None and not 1 <= days <= 14:
            raise ApiError(400, "bad_retention", "retention must be 1 to 14 days")
        if change.name is not None:
            self._check_name(change.name, pk)
        row.update(change.given())
        return dict(row)

    async def remove_contact(self, c: str) -> None:
        pk = self._resolve(c)
        del self.contacts[pk]
        self.emit({"type": "contact", "action": "removed", "public_key": pk})

    async def safety_number(self, c: str) -> dict[str, Any]:
        pk = self._resolve(c)
        digest = hashlib.sha256("".join(sorted((pk, self.public_key))).encode()).digest()
        digits = "".join(f"{b % 100:02d}" for b in digest[:30])
        groups = " ".join(digits[i : i + 5] for i in range(0, 60, 5))
        return {"contact": dict(self.contacts[pk]), "safety_number": groups}

    async def dial_contact(self, c: str, address: str) -> dict[str, Any]:
        pk = self._resolve(c)
        self.contacts[pk]["online"] = True  # the fake reaches everyone
        return dict(self.contacts[pk])

    async def send_message(self, c: str, text: str) -> dict[str, Any]:
        pk = self._resolve(c)
        message = self._message(pk, self.public_key, "out", text, "pending")
        self.emit({"type": "message", "message": message})
        return dict(message)

    async def history(self, c: str, limit: int, before: int | None) -> list[dict[str, Any]]:
        pk = self._resolve(c)
        rows = [
            m
            for m in self.messages
            if m["peer"] == pk and (before is None or m["lamport"] < before)
        ]
        return [dict(m) for m in rows[-limit:]]

    async def search(self, q: str, contact: str | None, limit: int) -> list[dict[str, Any]]:
        peer = self._resolve(contact) if contact else None
        rows = [
            m
            for m in self.messages
            if q.lower() in m["text"].lower() and (peer is None or m["peer"] == peer)
        ]
        return [dict(m) for m in rows[:limit]]

    async def mark_read(self, c: str, up_to: str | None) -> dict[str, Any]:
        pk = self._resolve(c)
        marked = 0
        for m in self.messages:
            if m["peer"] == pk and m["direction"] == "in" and m["state"] != "read":
                m["state"] = "read"
                marked += 1
                if m["id"] == up_to:
                    break
        return {"contact": dict(self.contacts[pk]), "marked": marked}

    async def set_presence(self, status: str, note: str | None) -> dict[str, Any]:
        if status not in PRESENCE_STATES:
            raise ApiError(400, "bad_presence", "unknown presence")
        self.presence = {"status": status, "note": note}
        return dict(self.presence)

    async def get_profile(self) -> dict[str, Any]:
        return dict(self.profile)

    async def set_profile(
        self, name: str | None, status: str | None, avatar: str | None
    ) -> dict[str, Any]:
        for key, value in (("name", name), ("status", status), ("avatar", avatar)):
            if value is not None:
                self.profile[key] = value or None
        return dict(self.profile)

    async def send_typing(self, c: str, on: bool) -> None:
        self.typing.append((self._resolve(c), on))

    async def list_requests(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.requests.values()]

    async def send_request(self, ref: str, note: str | None) -> dict[str, Any]:
        pk, _ = self._parse_ref(ref)
        if pk in self.contacts:
            raise ApiError(409, "exists", "already a contact")
        request = {
            "id": secrets.token_hex(8),
            "public_key": pk,
            "note": note,
            "direction": "out",
            "state": "sent",
            "ts": _now_ms(),
        }
        self.requests[request["id"]] = request
        return dict(request)

    async def answer_request(self, id: str, accept: bool, name: str | None) -> dict[str, Any]:
        request = self.requests.get(id)
        if request is None:
            raise ApiError(404, "unknown_request", "no such contact request")
        del self.requests[id]
        if not accept:
            return {**request, "state": "declined"}
        return await self.add_contact(request["public_key"], name)

    def incoming_request(self, pk: str, note: str | None = None) -> dict[str, Any]:
        """Simulate a stranger asking to become a contact."""
        request = {
            "id": secrets.token_hex(8),
            "public_key": pk,
            "note": note,
            "direction": "in",
            "state": "pending",
            "ts": _now_ms(),
        }
        self.requests[request["id"]] = request
        self.emit({"type": "request", "request": dict(request)})
        return dict(request)


class FakeChannels:
    """In-memory channels with the real manager's errors; ``join`` knows only channels
    this fake created (their link is ``btchat:channel:<id>``)."""

    def __init__(self, owner: FakeMessenger) -> None:
        self._owner = owner
        self.known: dict[str, dict[str, Any]] = {}  # every channel created, by id
        self.joined: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.members_of: dict[str, set[str]] = {}
        self.files: dict[str, list[dict[str, Any]]] = {}  # channel id -> its files
        self._lamport = itertools.count(1)

    def _find(self, ref: str) -> dict[str, Any]:
        ref = ref.strip()
        matches = [
            c
            for cid, c in self.joined.items()
            if c["name"] == ref or (len(ref) >= 8 and cid.startswith(ref.lower()))
        ]
        if not matches:
            raise ApiError(404, "no_channel", f"no channel {ref!r}")
        if len(matches) > 1:
            raise ApiError(409, "ambiguous", f"several channels match {ref!r}; use its id")
        return matches[0]

    def _view(self, c: dict[str, Any]) -> dict[str, Any]:
        members = self.members_of[c["id"]]
        return {**c, "members": len(members), "members_online": 1, "links": 0}

    async def list(self) -> list[dict[str, Any]]:
        return [self._view(c) for c in self.joined.values()]

    async def create(self, name: str, invite_only: bool, trackers: list[str]) -> dict[str, Any]:
        cid = secrets.token_hex(32)
        channel = {
            "id": cid,
            "name": name,
            "invite_only": invite_only,
            "owner": self._owner.public_key if invite_only else None,
            "trackers": list(trackers),
            "uri": f"btchat:channel:{cid}",
            "chatfile": "ZmFrZQ==",
            "port": 0,
            "discovery": {},
        }
        self.known[cid] = channel
        self.joined[cid] = channel
        self.messages[cid] = []
        self.members_of[cid] = {self._owner.public_key}
        return self._view(channel)

    async def join(self, ref: str) -> dict[str, Any]:
        cid = ref[len("btchat:channel:") :] if ref.startswith("btchat:channel:") else ""
        if cid not in self.known:
            raise ApiError(400, "bad_chatfile", "not a channel link or .chat file")
        if cid in self.joined:
            raise ApiError(409, "joined", "already in this channel")
        self.joined[cid] = self.known[cid]
        return self._view(self.joined[cid])

    async def get(self, ref: str) -> dict[str, Any]:
        return self._view(self._find(ref))

    async def leave(self, ref: str) -> None:
        del self.joined[self._find(ref)["id"]]

    async def members(self, ref: str) -> list[dict[str, Any]]:
        me = self._owner.public_key
        return [
            {
                "public_key": pk,
                "id": pk,
                "role": None,
                "online": pk == me,
                "linked": False,
                "me": pk == me,
                "last_heard": None,
            }
            for pk in sorted(self.members_of[self._find(ref)["id"]])
        ]

    async def change_members(self, ref: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        channel = self._find(ref)
        if not channel["invite_only"]:
            raise ApiError(409, "open_channel", "an open channel has no member list")
        for key in add + remove:
            self._owner._parse_ref(key)
        members = self.members_of[channel["id"]]
        members |= set(add)
        members -= set(remove)
        return self._view(channel)

    async def post(self, ref: str, text: str, to: list[str]) -> dict[str, Any]:
        channel = self._find(ref)
        message = {
            "channel": channel["id"],
            "id": secrets.token_hex(16),
            "author": self._owner.public_key,
            "lamport": next(self._lamport),
            "ts": _now_ms(),
            "private": bool(to),
            "recipients": list(to),
            "text": text,
        }
        self.messages[channel["id"]].append(message)
        self._owner.emit({"type": "channel_message", "channel": channel["id"], "message": message})
        return message

    async def history(self, ref: str, limit: int) -> list[dict[str, Any]]:
        return self.messages[self._find(ref)["id"]][-limit:]

    async def dial(self, ref: str, address: str) -> dict[str, Any]:
        return self._view(self._find(ref))  # the fake has nobody to link to

    async def send_file(self, ref: str, path: str, name: str | None) -> dict[str, Any]:
        channel = self._find(ref)
        shown = name or path.replace("\\", "/").rsplit("/", 1)[-1]
        f = {
            "id": secrets.token_hex(16),
            "channel": channel["id"],
            "author": self._owner.public_key,
            "mine": True,
            "name": shown,
            "size": 0,
            "media_type": "application/octet-stream",
            "root": "00" * 32,
            "piece_size": 262144,
            "pieces": 0,
            "have": 0,
            "bytes_done": 0,
            "progress": 1.0,
            "state": "done",
            "error": None,
            "path": path,
            "served": 0,
            "sources": 0,
            "stats": {},
        }
        self.files.setdefault(channel["id"], []).append(f)
        return dict(f)

    async def upload_file(
        self, ref: str, name: str, size: int, chunks: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        got = 0
        async for chunk in chunks:
            got += len(chunk)
        if got != size:
            raise ApiError(400, "bad_length", f"the body ended after {got} of {size} bytes")
        f = await self.send_file(ref, name, name)
        f["size"] = size
        return f

    async def file_path(self, ref: str, fid: str) -> Path:
        for f in self.files.get(self._find(ref)["id"], []):
            if f["id"].startswith(fid.lower()) and len(fid) >= 6:
                return Path(f.get("path") or "/nonexistent")
        raise ApiError(404, "no_file", f"no file {fid!r} in this channel")

    async def list_files(self, ref: str) -> list[dict[str, Any]]:
        return [dict(f) for f in self.files.get(self._find(ref)["id"], [])]

    async def file_action(self, ref: str, fid: str, action: str) -> dict[str, Any]:
        for f in self.files.get(self._find(ref)["id"], []):
            if f["id"].startswith(fid.lower()) and len(fid) >= 6:
                if f["state"] != "offered":
                    raise ApiError(409, "not_offered", f"the file is {f['state']}")
                f["state"] = {"accept": "active", "reject": "rejected"}.get(action, "cancelled")
                return dict(f)
        raise ApiError(404, "no_file", f"no file {fid!r} in this channel")

    async def set_serving(self, ref: str, serve: bool) -> dict[str, Any]:
        return {"channel": self._find(ref)["id"], "serve": serve}


class FakeFiles:
    """Transfers without bytes: offers, actions and progress the way the real ``Files``
    shows them (``file_offer``, ``file_progress``, ``file_done`` events). Tests move an
    accepted transfer along with :meth:`advance`."""

    ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
        "accept": (("offered",), "active"),
        "reject": (("offered",), "rejected"),
        "cancel": (("offered", "active", "paused"), "cancelled"),
        "pause": (("active",), "paused"),
        "resume": (("paused",), "active"),
    }

    def __init__(self, owner: FakeMessenger) -> None:
        self._owner = owner
        self.transfers: dict[str, dict[str, Any]] = {}
        self.limits: dict[str, int] = {}

    def _new(self, direction: str, pk: str, name: str, size: int) -> dict[str, Any]:
        tid = secrets.token_hex(16)
        t = {
            "id": tid,
            "direction": direction,
            "contact": pk,
            "name": name,
            "size": size,
            "media_type": "application/octet-stream",
            "root": hashlib.sha256(tid.encode()).hexdigest(),
            "pieces": max(1, -(-size // 16384)),
            "have": 0,
            "bytes_done": 0,
            "progress": 1.0 if size == 0 else 0.0,
            "state": "offered",
            "error": None,
            "path": None,
        }
        self.transfers[tid] = t
        kind = "in" if direction == "in" else "out"
        message = self._owner._message(
            pk,
            pk if kind == "in" else self._owner.public_key,
            kind,
            name,
            "delivered" if kind == "in" else "pending",
        )
        message["type"] = "file"
        message["id"] = tid  # a transfer's id is its offer's message id
        self._owner.emit({"type": "message", "message": dict(message)})
        return t

    def offer(self, c: str, name: str, size: int) -> dict[str, Any]:
        """Simulate contact ``c`` offering a file."""
        t = self._new("in", self._owner._resolve(c), name, size)
        self._owner.emit({"type": "file_offer", "transfer": dict(t)})
        return dict(t)

    def advance(self, tid: str, bytes_done: int) -> dict[str, Any]:
        """Simulate bytes arriving (or leaving); at the full size the transfer is done."""
        t = self._get(tid)
        t["bytes_done"] = min(bytes_done, t["size"])
        t["progress"] = 1.0 if t["size"] == 0 else t["bytes_done"] / t["size"]
        t["have"] = int(t["pieces"] * t["progress"])
        if t["bytes_done"] >= t["size"]:
            t["state"] = "done"
            if t["direction"] == "in":
                t["path"] = f"/tmp/btchat-fake/{t['name']}"
        kind = "file_done" if t["state"] == "done" else "file_progress"
        self._owner.emit({"type": kind, "transfer": dict(t)})
        return dict(t)

    def _get(self, tid: str) -> dict[str, Any]:
        matches = [t for k, t in self.transfers.items() if k.startswith(tid.lower())]
        if len(matches) != 1:
            raise ApiError(404, "unknown_transfer", f"no transfer {tid!r}")
        return matches[0]

    async def list(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.transfers.values()]

    async def get(self, tid: str) -> dict[str, Any]:
        return dict(self._get(tid))

    async def send(self, c: str, path: str) -> dict[str, Any]:
        pk = self._owner._resolve(c)
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        return dict(self._new("out", pk, name, 1000))

    async def act(self, tid: str, action: str) -> dict[str, Any]:
        t = self._get(tid)
        if action not in self.ACTIONS:
            raise ApiError(400, "bad_action", f"unknown action {action!r}")
        allowed, state = self.ACTIONS[action]
        if action in ("accept", "reject") and t["direction"] != "in":
            raise ApiError(409, "not_incoming", "only an incoming offer is accepted or rejected")
        if t["state"] not in allowed:
            raise ApiError(409, "bad_state", f"the transfer is {t['state']}")
        t["state"] = state
        self._owner.emit({"type": "file_progress", "transfer": dict(t)})
        return dict(t)

    async def set_limit(self, c: str, max_bytes: int) -> dict[str, Any]:
        pk = self._owner._resolve(c)
        self.limits[pk] = max_bytes
        return {"contact": pk, "max_bytes": max_bytes}

    def file_path(self, tid: str) -> Path:
        return Path(self._get(tid)["path"] or "/nonexistent")

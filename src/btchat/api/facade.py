"""What the API layer needs from the messenger, and the one error type it understands.

That error, :class:`ApiError`, lives in :mod:`btchat.errors` (the node raises it without
importing the API) and is re-exported here for the API's own modules.

The server is written against this protocol rather than the daemon so it can be tested
with an in-memory fake and so the daemon can change without touching HTTP code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from btchat.errors import ApiError
from btchat.messaging.contacts import ContactChange

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_NAME_CHARS",
    "MAX_NOTE_BYTES",
    "MAX_QUERY_CHARS",
    "MAX_REF_CHARS",
    "MAX_TEXT_BYTES",
    "PRESENCE_STATES",
    "ApiError",
    "Channels",
    "Devices",
    "Files",
    "Messenger",
]

#: Presence states a user may announce.
PRESENCE_STATES = ("online", "away", "busy", "offline")
#: Largest message text, in UTF-8 bytes (the wire format's limit).
MAX_TEXT_BYTES = 16 * 1024
#: Largest status note, in UTF-8 bytes.
MAX_NOTE_BYTES = 140
#: Most rows one history or search call returns; keeps responses bounded.
MAX_LIMIT = 500
#: Rows returned when the caller does not say how many.
DEFAULT_LIMIT = 50
#: Longest petname, in characters (the same cap as names suggested in links).
MAX_NAME_CHARS = 64
#: Longest contact reference (ID text, URI or hex key) worth parsing at all.
MAX_REF_CHARS = 1024
#: Longest full-text search query, in characters.
MAX_QUERY_CHARS = 256
#: Longest channel reference (name or id prefix) in a path.
MAX_CHANNEL_REF = 200


class Channels(Protocol):
    """The channels part of the messenger (``node/channels.py``'s ``ChannelManager``).

    Channel arguments (``ch``) are a channel's name or at least 8 hex digits of its id;
    member lists hold IDs as text. Failures are :class:`ApiError` as for the messenger.
    """

    async def list(self) -> list[dict[str, Any]]: ...

    async def create(self, name: str, invite_only: bool, trackers: list[str]) -> dict[str, Any]: ...

    async def join(self, ref: str) -> dict[str, Any]: ...

    async def get(self, ref: str) -> dict[str, Any]: ...

    async def leave(self, ref: str) -> None: ...

    async def members(self, ref: str) -> list[dict[str, Any]]: ...

    async def change_members(
        self, ref: str, add: list[str], remove: list[str]
    ) -> dict[str, Any]: ...

    async def post(self, ref: str, text: str, to: list[str]) -> dict[str, Any]: ...

    async def history(self, ref: str, limit: int) -> list[dict[str, Any]]: ...

    async def dial(self, ref: str, address: str) -> dict[str, Any]: ...

    # Files in a channel: ``{id, channel, author, mine, name, size, media_type, root,
    # pieces, have, bytes_done, progress, state, error, path, served, sources, stats}``;
    # ``fid`` is a file's message id or a unique prefix of 6+ hex digits.
    async def send_file(self, ref: str, path: str, name: str | None) -> dict[str, Any]: ...

    async def upload_file(
        self, ref: str, name: str, size: int, chunks: AsyncIterator[bytes]
    ) -> dict[str, Any]: ...

    async def file_path(self, ref: str, fid: str) -> Path: ...

    async def list_files(self, ref: str) -> list[dict[str, Any]]: ...

    async def file_action(self, ref: str, fid: str, action: str) -> dict[str, Any]: ...

    async def set_serving(self, ref: str, serve: bool) -> dict[str, Any]: ...


class Files(Protocol):
    """1:1 file transfer (``node/files.py``'s ``Files``). Transfers are
    ``{id, direction, contact, name, size, media_type, root, pieces, have, bytes_done,
    progress, state, error, path, ...}``; ``tid`` is a transfer id or a unique prefix.
    :meth:`upload` offers bytes streamed in (``size`` of them) under ``name``: the web
    app has bytes, not a path on the daemon's machine."""

    async def list(self) -> list[dict[str, Any]]: ...

    async def get(self, tid: str) -> dict[str, Any]: ...

    async def send(self, c: str, path: str) -> dict[str, Any]: ...

    async def upload(
        self, c: str, name: str, size: int, chunks: AsyncIterator[bytes]
    ) -> dict[str, Any]: ...

    async def act(self, tid: str, action: str) -> dict[str, Any]: ...

    async def set_limit(self, c: str, max_bytes: int) -> dict[str, Any]: ...

    def file_path(self, tid: str) -> Path: ...


class Devices(Protocol):
    """Our identity's devices (``node/devices.py``): the list, revoking one, and linking
    a new one with a one-time code (``node/linking.py``). The list is ``{devices:
    [{device_id, created, this_device, ...}], revoked: [device_id], this_revoked, ...}``;
    ``device`` is a device id in hex or a unique prefix of 4+ digits. An offer is ``{code,
    expires_at, port}``; how it ends comes as the events ``device_linked`` or
    ``device_link_failed``."""

    async def list(self) -> dict[str, Any]: ...

    async def revoke(self, device: str) -> dict[str, Any]: ...

    async def rename(self, device: str, name: str) -> dict[str, Any]: ...

    async def link(self) -> dict[str, Any]: ...

    async def cancel_link(self) -> None: ...


class SettingsPart(Protocol):
    """The settings a front end may change (``node/settings_file.py``): written to the
    config file, taking effect at the next start. The view is ``{config_file, problem,
    settings: {name: {value, next_start, source, about}}}``; ``save`` takes ``{name:
    value}`` (``None``: back to the default) and raises :class:`ApiError` on a bad
    value or a config file that does not parse (never overwritten)."""

    async def view(self) -> dict[str, Any]: ...

    async def save(self, changes: dict[str, Any]) -> dict[str, Any]: ...


@runtime_checkable
class Messenger(Protocol):
    """Everything the local API can ask of the running messenger.

    Contacts are ``{id, public_key, name, verified, blocked, presence, last_seen, online}``;
    messages are ``{id, peer, sender, direction, text, state, ts, lamport, type}``.
    Contact arguments (``c``) are petnames, IDs, URIs or hex keys. Failures the user should
    see are raised as :class:`ApiError`: 400 bad input, 404 unknown contact or request,
    409 conflict (name taken, already a contact), 503 not ready (e.g. DHT not joined yet).
    The API validates shapes and sizes before calling; the messenger validates meaning.
    ``channels`` is ``None`` where the messenger runs no channels (the API answers 501);
    so is ``files`` where it transfers no files, ``devices`` where it keeps no
    device list, and ``settings`` where it has no config file to edit (a fake).
    """

    channels: Channels | None
    files: Files | None
    devices: Devices | None
    settings: SettingsPart | None

    async def status(self) -> dict[str, Any]: ...

    async def identity(self) -> dict[str, Any]: ...

    async def list_contacts(self) -> list[dict[str, Any]]: ...

    async def add_contact(self, ref: str, name: str | None) -> dict[str, Any]: ...

    async def get_contact(self, c: str) -> dict[str, Any]: ...

    async def update_contact(self, c: str, change: ContactChange) -> dict[str, Any]: ...

    async def remove_contact(self, c: str) -> None: ...

    async def safety_number(self, c: str) -> dict[str, Any]: ...

    async def dial_contact(self, c: str, address: str) -> dict[str, Any]: ...

    async def send_message(self, c: str, text: str) -> dict[str, Any]: ...

    async def history(self, c: str, limit: int, before: int | None) -> list[dict[str, Any]]: ...

    async def search(self, q: str, contact: str | None, limit: int) -> list[dict[str, Any]]: ...

    async def mark_read(self, c: str, up_to: str | None) -> dict[str, Any]: ...

    async def set_presence(self, status: str, note: str | None) -> dict[str, Any]: ...

    async def get_profile(self) -> dict[str, Any]: ...

    async def set_profile(
        self, name: str | None, status: str | None, avatar: str | None
    ) -> dict[str, Any]: ...

    async def send_typing(self, c: str, on: bool) -> None: ...

    async def list_requests(self) -> list[dict[str, Any]]: ...

    async def send_request(self, ref: str, note: str | None) -> dict[str, Any]: ...

    async def answer_request(self, id: str, accept: bool, name: str | None) -> dict[str, Any]: ...

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Live events, from now on; closing the iterator unsubscribes.

        Implemented as an async generator, so it is a plain ``def`` here.
        """
        ...

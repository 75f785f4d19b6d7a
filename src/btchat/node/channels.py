"""The daemon's channels: create, join, leave, post, members; one service per channel.

With several devices of one identity, each join, creation and leave here is recorded
for our other devices (``node/channel_sync.py``) and theirs are applied here, so all are
in the same channels; each device holds its own links in each.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from btchat.channels.chatfile import ChatFile, ChatFileError
from btchat.channels.engine import Event, NotAMember, Removed, Shown
from btchat.channels.link_connection import LinkConnection
from btchat.channels.members import MemberList, MemberListError
from btchat.channels.service import ChannelConfig, ChannelService
from btchat.channels.store import ChannelStore
from btchat.errors import ApiError, BtchatError
from btchat.identity.idtext import IdError, format_id, parse_contact_ref
from btchat.identity.keys import Identity
from btchat.messaging.own_sync import ChannelChange
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtService
from btchat.net.proxy import ProxyDialer
from btchat.net.transport import Dialer
from btchat.node.channel_files import ChannelFiles, ChannelFilesConfig
from btchat.node.channel_sync import ChannelSync
from btchat.node.config import parse_ip_port
from btchat.node.own_sync import OwnSync
from btchat.node.uploads import stage_upload
from btchat.tasks import TaskOwner

__all__ = ["ChannelManager"]

log = logging.getLogger(__name__)

MAX_TEXT = 16 * 1024


class ChannelManager:
    def __init__(
        self,
        identity: Identity,
        store: Store,
        dht: DhtService | None,
        config: ChannelConfig,
        emit: Callable[[dict[str, Any]], None],
        *,
        dialer: Dialer | None = None,
        device_id: bytes | None = None,
        own_sync: OwnSync | None = None,
        files: ChannelFilesConfig | None = None,
    ) -> None:
        self.identity = identity
        self.kv = store
        self.store = ChannelStore(store)
        #: Files posted in channels, fetched from any member (None: no files in channels).
        self.files: ChannelFiles | None = None
        if files is not None:
            self.files = ChannelFiles(files, serving=self.serving, emit=emit)
        self.dht = dht
        self.config = config
        self.emit = emit
        self.dialer = dialer  # None: plain TCP
        #: This device's id: its links are told apart from our other devices' by it.
        self.device_id = device_id
        self.services: dict[bytes, ChannelService] = {}
        self._own_sync = own_sync
        #: Membership shared with our other devices (none without a device id).
        self.sync: ChannelSync | None = None
        if own_sync is not None and device_id is not None:
            self.sync = ChannelSync(self.store, device_id, own_sync.send_to_all, self._synced)
        self._tasks = TaskOwner()  # joins and leaves from our other devices
        self._sync_lock = asyncio.Lock()  # one at a time, in the order they came
        self._stopping = False

    async def start(self) -> None:
        if self.files is not None:
            self.files.start()
        for row in self.store.channels():
            try:
                chat = ChatFile.from_bytes(row.chatfile)
            except ChatFileError as exc:
                log.warning("stored channel %s unreadable: %s", row.id.hex()[:16], exc)
                continue
            await self._run(chat)
        if self.sync is not None and self._own_sync is not None:
            self._own_sync.attach_channels(self.sync.payloads, self.sync.merge)

    async def stop(self) -> None:
        self._stopping = True  # a note arriving now starts nothing
        await self._tasks.cancel_all()
        # At once: each channel waits a moment for its goodbye to be written, and those
        # waits should not add up over many channels.
        await asyncio.gather(*(service.stop() for service in self.services.values()))
        self.services.clear()
        if self.files is not None:
            await self.files.stop()

    async def _run(self, chat: ChatFile) -> ChannelService:
        files = self.files
        on_stream = None
        if files is not None:
            channel = chat.channel_id

            def on_stream(key: bytes, conn: LinkConnection, event: object) -> None:
                files.on_stream(channel, key, conn, event)

        service = ChannelService(
            chat,
            self.identity,
            self.store,
            self.dht,
            self.config,
            on_event=self._on_event,
            dialer=self.dialer,
            device_id=self.device_id,
            on_stream=on_stream,
        )
        await service.start()
        self.services[chat.channel_id] = service
        return service

    def _on_event(self, chat: ChatFile, event: Event | dict[str, Any]) -> None:
        if isinstance(event, Shown):
            if event.message.file is not None and self.files is not None:
                self.files.on_message(event.message)
            self.emit(
                {
                    "type": "channel_message",
                    "channel": chat.channel_id.hex(),
                    "message": event.message.to_json(),
                }
            )
        elif isinstance(event, Removed):
            self.emit({"type": "channel_removed", "channel": chat.channel_id.hex()})

    # ------------------------------------------------------------------ our devices

    def _record(self, channel: bytes, *, joined: bool) -> None:
        if self.sync is not None:
            self.sync.record(channel, joined=joined)

    def _synced(self, change: ChannelChange, chat: ChatFile | None) -> None:
        """Another of our devices joined, created or left a channel: do the same here."""
        if self._stopping:
            assert self.sync is not None
            self.sync.undo(change.channel)
        else:
            self._tasks.spawn(self._apply_synced(change, chat))

    async def _apply_synced(self, change: ChannelChange, chat: ChatFile | None) -> None:
        assert self.sync is not None
        try:
            await self._apply_locked(change, chat)
        except asyncio.CancelledError:
            self.sync.undo(change.channel)  # stopping: the change comes again next time
            raise
        except (OSError, BtchatError) as exc:  # no port to listen on, a full disk...
            self.sync.undo(change.channel)
            log.warning("channel %s: a change from our other device failed: %s",
                        change.channel.hex()[:16], exc)  # fmt: skip

    async def _apply_locked(self, change: ChannelChange, chat: ChatFile | None) -> None:
        async with self._sync_lock:
            service = self.services.get(change.channel)
            if not change.joined:
                if service is not None:
                    await service.stop()
                    self.services.pop(change.channel, None)
                if self.files is not None:
                    self.files.forget_channel(change.channel)
                if self.store.remove_channel(change.channel) or service is not None:
                    log.info("left channel %s, as another of our devices did",
                             change.channel.hex()[:16])  # fmt: skip
                    self.emit({"type": "channel_removed", "channel": change.channel.hex()})
                return
            assert chat is not None
            if service is None:
                self.store.add_channel(chat.channel_id, chat.to_bytes(), change.changed_ms)
                self._adopt_list(chat, change.member_list)
            held = self.store.keys(chat.channel_id)
            new = {g for g, _ in change.keys if g not in held}
            for generation, key in change.keys:
                if generation in new:  # the owner grants itself none: ours bring them
                    self.store.save_key(chat.channel_id, generation, key)
            if service is None:
                log.info("joined channel %r, as another of our devices did", chat.name)
                await self._run(chat)
                self.emit({"type": "channel_joined", "channel": chat.channel_id.hex(),
                           "name": chat.name})  # fmt: skip
            else:
                service.from_our_device(change.member_list, new)

    def _adopt_list(self, chat: ChatFile, data: bytes) -> None:
        """A new channel's member list, as our other device holds it (verified there;
        here only that it parses and is this channel's, owned by its owner)."""
        if not data or chat.owner is None:
            return
        try:
            members = MemberList.from_bytes(data)
        except MemberListError as exc:
            log.warning("a synced member list is refused: %s", exc)
            return
        if members.channel_id == chat.channel_id and members.owner == chat.owner:
            self.store.set_member_list(chat.channel_id, data)

    # ------------------------------------------------------------------ lookup

    def _service(self, ref: str) -> ChannelService:
        ref = ref.strip()
        matches = [
            s
            for cid, s in self.services.items()
            if s.chat.name == ref or (len(ref) >= 8 and cid.hex().startswith(ref.lower()))
        ]
        if not matches:
            raise ApiError(404, "no_channel", f"no channel {ref!r}")
        if len(matches) > 1:
            raise ApiError(409, "ambiguous", f"several channels match {ref!r}; use its id")
        return matches[0]

    def _member(self, ref: str) -> bytes:
        try:
            pk, _ = parse_contact_ref(ref)
        except IdError as exc:
            raise ApiError(400, "bad_id", str(exc)) from None
        return pk

    def _json(self, service: ChannelService) -> dict[str, Any]:
        chat = service.chat
        engine = service.engine
        now = time.time()
        members = engine.member_view(now) if engine else []
        return {
            "id": chat.channel_id.hex(),
            "name": chat.name,
            "invite_only": chat.invite_only,
            "removed": engine.removed if engine else False,
            "owner": chat.owner.hex() if chat.owner else None,
            "trackers": list(chat.trackers),
            "uri": chat.to_uri(),
            "port": service.port,
            "members": len(members),
            "members_online": sum(1 for m in members if m["online"]),
            "links": len(service.links),
            "discovery": dict(service.stats),
            # Drops and evictions (quota_author_*, evicted_*, presence_*, not_stored...).
            "counters": dict(engine.stats) if engine else {},
            "stored": dict(zip(("messages", "bytes"), engine.stored_usage(), strict=True))
            if engine
            else None,
            "serve_files": self.serving(chat.channel_id),
        }

    # ------------------------------------------------------------------ API

    async def list(self) -> list[dict[str, Any]]:
        return [self._json(s) for s in self.services.values()]

    async def create(self, name: str, invite_only: bool, trackers: list[str]) -> dict[str, Any]:
        try:
            chat = ChatFile.create(
                name,
                invite_only=invite_only,
                trackers=tuple(trackers),
                owner=self.identity if invite_only else None,
                now=time.time(),
            )
        except ChatFileError as exc:
            raise ApiError(400, exc.code, str(exc)) from None
        async with self._sync_lock:  # not at once with a join from our other device
            if any(s.chat.name == chat.name for s in self.services.values()):
                # Channels are named by name in the CLI and API: a second one would make
                # the name ambiguous (a joined channel may still share a name: use its id).
                raise ApiError(409, "name_taken", f"you already have a channel named {chat.name!r}")
            self.store.add_channel(chat.channel_id, chat.to_bytes(), int(time.time() * 1000))
            service = await self._run(chat)
            if invite_only:
                assert service.engine is not None
                service.engine.start_invite_only(time.time())
            self._record(chat.channel_id, joined=True)
        return {**self._json(service), "chatfile": base64.b64encode(chat.to_bytes()).decode()}

    async def join(self, ref: str) -> dict[str, Any]:
        try:
            if ref.strip().lower().startswith("btchat:"):
                chat = ChatFile.from_uri(ref)
            else:
                chat = ChatFile.from_bytes(base64.b64decode(ref, validate=True))
        except (ChatFileError, ValueError) as exc:
            raise ApiError(400, getattr(exc, "code", "bad_chatfile"), str(exc)) from None
        async with self._sync_lock:  # not at once with a join from our other device
            if chat.channel_id in self.services:
                raise ApiError(409, "exists", f"already in channel {chat.name!r}")
            self.store.add_channel(chat.channel_id, chat.to_bytes(), int(time.time() * 1000))
            service = await self._run(chat)
            self._record(chat.channel_id, joined=True)
        return self._json(service)

    async def leave(self, ref: str) -> None:
        async with self._sync_lock:
            service = self._service(ref)
            await service.stop()
            del self.services[service.chat.channel_id]
            if self.files is not None:
                self.files.forget_channel(service.chat.channel_id)
            self.store.remove_channel(service.chat.channel_id)
            self._record(service.chat.channel_id, joined=False)

    async def get(self, ref: str) -> dict[str, Any]:
        service = self._service(ref)
        return {
            **self._json(service),
            "chatfile": base64.b64encode(service.chat.to_bytes()).decode(),
        }

    async def members(self, ref: str) -> list[dict[str, Any]]:
        service = self._service(ref)
        assert service.engine is not None
        out = service.engine.member_view(time.time())
        for m in out:
            m["id"] = format_id(bytes.fromhex(m["public_key"]))
        return out

    async def change_members(self, ref: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        service = self._service(ref)
        if not service.chat.invite_only:
            raise ApiError(400, "open_channel", "an open channel has no member list")
        try:
            service.change_members(
                add=[self._member(a) for a in add], remove=[self._member(r) for r in remove]
            )
        except MemberListError as exc:
            raise ApiError(403 if exc.code == "unauthorized" else 400, exc.code, str(exc)) from None
        self._record(service.chat.channel_id, joined=True)  # the new list and secret
        return self._json(service)

    async def dial(self, ref: str, address: str) -> dict[str, Any]:
        """Link to a member at an address given by hand (Tor mode has no discovery): the
        address is dialled now and again, like one discovery found, until a link is up."""
        service = self._service(ref)
        try:
            addr = parse_ip_port(address, proxied=isinstance(self.dialer, ProxyDialer))
        except ValueError as exc:
            raise ApiError(400, "bad_address", str(exc)) from None
        service.dial(addr)
        return self._json(service)

    async def post(self, ref: str, text: str, to: list[str]) -> dict[str, Any]:
        service = self._service(ref)
        if not text or len(text.encode()) > MAX_TEXT:
            raise ApiError(400, "bad_text", f"text must be 1 to {MAX_TEXT} bytes")
        try:
            stored = service.post(text, [self._member(t) for t in to] or None)
        except NotAMember as exc:
            raise ApiError(403, "removed", str(exc)) from None
        except ValueError as exc:
            raise ApiError(409, "no_key", str(exc)) from None
        return stored.to_json()

    async def history(self, ref: str, limit: int) -> list[dict[str, Any]]:
        service = self._service(ref)
        return [m.to_json() for m in self.store.history(service.chat.channel_id, limit)]

    # ------------------------------------------------------------------ files

    def _files(self) -> ChannelFiles:
        if self.files is None:
            raise ApiError(501, "no_files", "this daemon does not transfer files in channels")
        return self.files

    def serving(self, channel: bytes) -> bool:
        """Do we serve pieces of this channel's files to its members? (default: yes)"""
        return self.kv.kv_get(f"channel_serve:{channel.hex()}") != b"0"

    async def set_serving(self, ref: str, serve: bool) -> dict[str, Any]:
        service = self._service(ref)
        self.kv.kv_set(f"channel_serve:{service.chat.channel_id.hex()}", b"1" if serve else b"0")
        return {"channel": service.chat.channel_id.hex(), "serve": serve}

    async def send_file(self, ref: str, path: str, name: str | None) -> dict[str, Any]:
        """Post the file at ``path`` (on this machine) in the channel, and serve it."""
        files = self._files()
        service = self._service(ref)
        manifest, layer, src, st = await files.prepare(path, name)
        try:
            stored = service.post_file(manifest)
        except NotAMember as exc:
            raise ApiError(403, "removed", str(exc)) from None
        except ValueError as exc:
            raise ApiError(409, "no_key", str(exc)) from None
        return files.posted(stored, layer, src, st)

    async def upload_file(
        self, ref: str, name: str, size: int, chunks: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        """Post ``size`` bytes streamed in by a front end (the web app): kept under the
        channel files' state folder, the copy we serve for as long as we hold the channel."""
        files = self._files()
        self._service(ref)  # an unknown channel fails before a byte is stored
        folder = files.config.state_dir / "uploads"
        path = await stage_upload(folder, size, chunks, files.config.disk_margin)
        try:
            return await self.send_file(ref, str(path), name)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def file_path(self, ref: str, fid: str) -> Path:
        """A channel file held whole here (fetched, or ours), for the page to save."""
        f = self._files().get(self._service(ref).chat.channel_id, fid)
        if f.state != "done" or f.path is None:
            raise ApiError(409, "not_done", "the file is not complete here yet")
        return Path(f.path)

    async def list_files(self, ref: str) -> list[dict[str, Any]]:
        return self._files().list(self._service(ref).chat.channel_id)

    async def file_action(self, ref: str, fid: str, action: str) -> dict[str, Any]:
        return self._files().act(self._service(ref).chat.channel_id, fid, action)

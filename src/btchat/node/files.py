"""The asyncio shell of 1:1 file transfer: offers, the disk, and the transfer substreams.

How this works: sending a file hashes it (in a thread, one piece in memory), keeps a
record and the piece layer under ``<data dir>/transfers``, then commits a signed
``file`` envelope to the conversation (a message in the history, through the outbox
like a text). The receiver's conversation core reports the offer; we record it (bounded
per contact, refused above the contact's size limit) and wait for the user. Accepting
checks free space, opens ``<save dir>/.btchat-<id>.part`` and starts a
:class:`~btchat.transfer.download.Download`, which asks for the piece layer, then for
pieces, over the session's transfer substreams (:mod:`btchat.transfer.wire`); every
piece is verified before it is written at its offset. The bitmap of pieces held is
saved (after an fsync of the part file, so it never claims a byte not on disk) at most
every :data:`SAVE_EVERY` seconds and whenever the transfer stops, so after a
disconnect or a restart of either side only the missing pieces are asked for. A
complete file is fsynced and linked into place under a safe, unused name.

The sender reads a piece from disk only when the bulk substream has room, so memory
is bounded by the stream's buffer plus one piece whatever the file size; GETs beyond
:data:`MAX_QUEUED` per session are dropped and counted.

Small files go *inline*: a file of at most :data:`~btchat.transfer.manifest.MAX_INLINE`
bytes is sent with its bytes in the offer itself (key ``d``), so it travels every way a
message does (live session, DHT mailbox, a friend's backup) and needs nobody online at
the same time. The receiver saves it while the message is stored, in the same
transaction (:attr:`Store.on_incoming_file`), so it is on disk before it is acknowledged
and a full disk makes the sender try again later; it shows as a transfer ``done``, or
``refused`` above the contact's limit. What contacts can make us store this way is
bounded per contact and in all per day (:class:`FilesConfig`, ``inline_*``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import mimetypes
import os
import re
import shutil
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btchat.errors import ApiError
from btchat.files import write_atomic
from btchat.messaging import envelope as env_mod
from btchat.messaging.conversation import Conversations
from btchat.messaging.envelope import Envelope
from btchat.messaging.store import Store
from btchat.node.piece_writer import PieceWriter
from btchat.node.transfer_records import load_records, read_layer
from btchat.node.transfer_streams import TransferStreams
from btchat.node.uploads import stage_upload
from btchat.session.connection import SessionConnection
from btchat.session.core import SessionClosed, SessionFailed
from btchat.storage import StoreError
from btchat.storage.database import StoreFull, StoreIOError, StoreReadOnly
from btchat.stream.events import StreamsAvailable
from btchat.transfer import wire
from btchat.transfer.download import Bitmap, Download
from btchat.transfer.manifest import MAX_FILE_SIZE, MAX_INLINE, Manifest, choose_piece_size
from btchat.transfer.names import safe_name
from btchat.transfer.tree import PieceHasher

__all__ = [
    "INLINE_WINDOW",
    "MAX_PENDING_OFFERS",
    "MAX_QUEUED",
    "SAVE_EVERY",
    "Files",
    "FilesConfig",
    "hash_file",
    "media_type_of",
    "place_file",
]

log = logging.getLogger(__name__)

#: Offers from one contact waiting for an answer; more are refused (a flood of offers).
MAX_PENDING_OFFERS = 16
#: Piece requests queued per session; a peer asking more is not served the excess.
MAX_QUEUED = 1024
#: Seconds between saves of a download's bitmap (after an fsync of its data).
SAVE_EVERY = 1.0
#: Seconds between progress events per transfer.
PROGRESS_EVERY = 0.5
#: Bytes read from disk per call while hashing a file to offer.
HASH_CHUNK = 1 << 20
#: Free space kept beyond what a download still needs.
DISK_MARGIN = 64 * 1024 * 1024
#: Checked every this many bytes written: is there still room for the rest?
DISK_CHECK_EVERY = 16 * 1024 * 1024
#: Inline files saved in the last this many seconds count against the inline bounds.
INLINE_WINDOW = 86400.0
_MEDIA_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
#: Transfer states; ``offered``, ``active`` and ``paused`` may still change.
OPEN_STATES = ("offered", "active", "paused")
ACTIONS = ("accept", "reject", "cancel", "pause", "resume")


@dataclass(frozen=True)
class FilesConfig:
    #: Where accepted files are saved (``--files-dir``, ``BTCHAT_FILES_DIR``, ``[files] dir``).
    save_dir: Path
    #: Records, piece layers and bitmaps.
    state_dir: Path
    #: Largest file a contact may offer unless its own limit says otherwise.
    max_size: int = 4 * 1024**3
    max_pending: int = MAX_PENDING_OFFERS
    #: Pieces in flight per download.
    window: int = 16
    disk_margin: int = DISK_MARGIN
    #: Inline files one contact may make us save per INLINE_WINDOW: count and bytes
    #: (256 files of 16 KiB are 4 MiB). Beyond either, more are dropped (logged, counted).
    inline_files: int = 256
    inline_bytes: int = 4 * 1024 * 1024
    #: The same for all contacts together.
    inline_total_files: int = 2048
    inline_total_bytes: int = 32 * 1024 * 1024


@dataclass(eq=False)
class _Transfer:
    """One transfer, both directions; :meth:`to_record` is what is persisted."""

    id: bytes
    direction: str  # "in" or "out"
    peer: bytes
    device: bytes
    manifest: Manifest
    state: str
    created: float
    path: str | None = None  # out: the source; in: where the finished file is
    error: str | None = None
    src_size: int = 0
    src_mtime_ns: int = 0
    served: int = 0  # out: pieces sent
    stats: Counter[str] = field(default_factory=Counter)
    download: Download | None = None
    fd: int | None = None
    dirty: bool = False
    saved_at: float = 0.0
    progress_at: float = 0.0
    unchecked: int = 0  # bytes written since the last free-space check
    held: deque[int] = field(default_factory=deque)  # out: requests kept while paused
    staged: bool = False  # out: ``path`` is our copy of an upload, removed when it ends
    inline: bool = False  # the bytes travelled in the offer (at most MAX_INLINE)

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "id": self.id.hex(),
            "direction": self.direction,
            "peer": self.peer.hex(),
            "device": self.device.hex(),
            "manifest": self.manifest.to_json(),
            "state": self.state,
            "created": self.created,
            "path": self.path,
            "error": self.error,
            "src_size": self.src_size,
            "src_mtime_ns": self.src_mtime_ns,
            "served": self.served,
            "stats": dict(self.stats),
            "staged": self.staged,
            "inline": self.inline,
        }
        if self.download is not None:
            rec["have"] = base64.b64encode(self.download.have.to_bytes()).decode()
            rec["stats"] = dict(self.stats + self.download.stats)
        return rec

    @property
    def have(self) -> int:
        if self.direction == "in":
            if self.state == "done":
                return self.manifest.pieces
            return self.download.have.count if self.download is not None else 0
        return self.manifest.pieces if self.state == "done" else 0

    def bytes_done(self) -> int:
        m = self.manifest
        if self.direction == "out":
            return min(m.size, self.served * m.piece_size) if self.state != "done" else m.size
        if self.state == "done":
            return m.size
        have = self.have
        if have and self.download is not None and self.download.have[m.pieces - 1]:
            return (have - 1) * m.piece_size + m.piece_length(m.pieces - 1)
        return have * m.piece_size


@dataclass(eq=False, kw_only=True)
class _Link(TransferStreams):
    """Our two substreams on one session, and the pieces the peer asked for."""

    key: tuple[bytes, bytes]
    queue: deque[tuple[bytes, int]] = field(default_factory=deque)  # (offer, index); -1: layer


class Files:
    """Implements the API's ``Files`` part; see the module docstring."""

    def __init__(
        self,
        config: FilesConfig,
        store: Store,
        conversations: Conversations,
        *,
        resolve: Callable[[str], bytes],
        drive: Callable[[], None],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.config = config
        self.store = store
        self.conversations = conversations
        self._resolve = resolve
        self._drive = drive
        self._emit = emit
        self.transfers: dict[bytes, _Transfer] = {}
        self._links: dict[tuple[bytes, bytes], _Link] = {}
        self.stats: Counter[str] = Counter()
        self._writer = PieceWriter()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._load()
        store.on_incoming_file = self._on_incoming_file  # inline files: saved with the message

    # ----------------------------------------------------------- persistence

    def _record_path(self, tid: bytes) -> Path:
        return self.config.state_dir / f"{tid.hex()}.json"

    def _layer_path(self, tid: bytes) -> Path:
        return self.config.state_dir / f"{tid.hex()}.layer"

    def _uploads(self) -> Path:
        return self.config.state_dir / "uploads"

    def _part_path(self, tid: bytes) -> Path:
        return self.config.save_dir / f".btchat-{tid.hex()}.part"

    def _save(self, t: _Transfer) -> None:
        """Commit the record; a download's data is fsynced first (persist, then claim)."""
        self._writer.settle(t.id)  # its writes (and an older record) go first
        if t.fd is not None and t.direction == "in":
            os.fsync(t.fd)
        write_atomic(self._record_path(t.id), json.dumps(t.to_record()).encode())
        t.dirty = False
        t.saved_at = time.monotonic()

    def _save_soon(self, t: _Transfer) -> None:
        """:meth:`_save` on the writer's thread, after the writes queued before it: the
        loop goes on while the disk catches up (the bitmap is this moment's)."""
        record = json.dumps(t.to_record()).encode()
        fd = t.fd if t.direction == "in" else None
        self._writer.save(t.id, fd, self._record_path(t.id), record)
        t.dirty = False
        t.saved_at = time.monotonic()

    def _load(self) -> None:
        for t in load_records(self.config.state_dir, self._from_record, "transfer"):
            self.transfers[t.id] = t

    def _from_record(self, rec: dict[str, Any]) -> _Transfer:
        manifest = Manifest.from_json(rec["manifest"])
        t = _Transfer(
            bytes.fromhex(rec["id"]),
            rec["direction"],
            bytes.fromhex(rec["peer"]),
            bytes.fromhex(rec["device"]),
            manifest,
            rec["state"],
            rec["created"],
            rec.get("path"),
            rec.get("error"),
            rec.get("src_size", 0),
            rec.get("src_mtime_ns", 0),
            rec.get("served", 0),
            Counter(rec.get("stats", {})),
            staged=bool(rec.get("staged", False)),
            inline=bool(rec.get("inline", False)),
        )
        if t.direction == "in" and t.state in ("active", "paused"):
            have = Bitmap(manifest.pieces, base64.b64decode(rec["have"]))
            layer = self._read_layer(t)
            t.download = Download(t.id, manifest, have, layer, window=self.config.window)
            t.stats = Counter()  # the download's counters carry on from the record
            t.download.stats.update(Counter(rec.get("stats", {})))
            try:
                t.fd = os.open(self._part_path(t.id), os.O_RDWR)
            except OSError as exc:
                t.state, t.error, t.download = "failed", f"partial file lost: {exc}", None
        return t

    def _read_layer(self, t: _Transfer) -> list[bytes] | None:
        return read_layer(self._layer_path(t.id))

    async def settled(self) -> bool:
        """Wait until the pieces handed to the writer's thread are checked, written and
        accounted for (tests step a transfer with this); True if any were."""
        return await self._writer.drained()

    def close(self) -> None:
        """Save every open download (``btchat`` stops) and close the files."""
        for t in self.transfers.values():
            self._writer.settle(t.id)
            if t.fd is not None:
                if t.direction == "in" and t.state in OPEN_STATES:
                    self._save(t)
                os.close(t.fd)
                t.fd = None
        self._writer.close()

    # ----------------------------------------------------------- API

    def json(self, t: _Transfer) -> dict[str, Any]:
        m = t.manifest
        done = t.bytes_done()
        out = {
            "id": t.id.hex(),
            "direction": t.direction,
            "contact": t.peer.hex(),
            "name": m.name,
            "size": m.size,
            "media_type": m.media_type,
            "root": m.root.hex(),
            "piece_size": m.piece_size,
            "pieces": m.pieces,
            "have": t.have,
            "bytes_done": done,
            "progress": 1.0 if m.size == 0 else done / m.size,
            "state": t.state,
            "error": t.error,
            "path": t.path,
            "served": t.served,
            "inline": t.inline,
            "stats": dict(t.stats + (t.download.stats if t.download else Counter())),
        }
        return out

    async def list(self) -> list[dict[str, Any]]:
        rows = sorted(self.transfers.values(), key=lambda t: t.created)
        return [self.json(t) for t in rows]

    def _get(self, tid: str) -> _Transfer:
        try:
            key = bytes.fromhex(tid)
        except ValueError:
            key = b""
        t = self.transfers.get(key)
        if t is None:
            matches = [t for k, t in self.transfers.items() if k.hex().startswith(tid.lower())]
            if len(tid) >= 6 and len(matches) == 1:
                return matches[0]
            raise ApiError(404, "no_transfer", f"no transfer {tid!r}")
        return t

    async def get(self, tid: str) -> dict[str, Any]:
        return self.json(self._get(tid))

    def file_path(self, tid: str) -> Path:
        """A finished download's file, for ``GET /download``."""
        t = self._get(tid)
        if t.direction != "in" or t.state != "done" or t.path is None:
            raise ApiError(409, "not_done", "the file is not complete yet")
        return Path(t.path)

    async def send(
        self, c: str, path: str, *, name: str | None = None, staged: bool = False
    ) -> dict[str, Any]:
        """Offer the file at ``path`` (on this machine) to contact ``c``, under ``name``
        (default: the file's own); ``staged`` marks our copy of an upload, deleted once
        the transfer ends."""
        pk = self._resolve(c)
        src = Path(path).expanduser()
        try:
            st = src.stat()
        except OSError as exc:
            raise ApiError(400, "bad_path", f"cannot read {path}: {exc.strerror}") from None
        if not src.is_file():
            raise ApiError(400, "bad_path", f"{path} is not a regular file")
        if st.st_size > MAX_FILE_SIZE:
            raise ApiError(400, "too_large", f"a file is at most {MAX_FILE_SIZE} bytes")
        piece = choose_piece_size(st.st_size)
        data: bytes | None = None
        try:
            if st.st_size <= MAX_INLINE:  # small: the bytes go in the offer itself
                data = await asyncio.to_thread(src.read_bytes)
                if len(data) != st.st_size:
                    raise OSError("the file changed while it was read")
                hasher = PieceHasher(len(data), piece)
                hasher.update(data)
            else:
                hasher = await asyncio.to_thread(hash_file, src, st.st_size, piece)
        except OSError as exc:
            raise ApiError(400, "bad_path", f"cannot read {path}: {exc}") from None
        name = safe_name(name or src.name)
        media = media_type_of(name)
        manifest = Manifest(name, st.st_size, media, piece, hasher.root())
        body = env_mod.file_body(manifest, data)
        envelope = self.conversations.send_message(pk, env_mod.FILE, body, time.time())
        t = _Transfer(
            envelope.id,
            "out",
            pk,
            self.conversations.device_id,
            manifest,
            "offered" if data is None else "done",
            time.time(),
            str(src.resolve()),
            src_size=st.st_size,
            src_mtime_ns=st.st_mtime_ns,
            staged=staged,
            inline=data is not None,
        )
        if data is None:
            write_atomic(self._layer_path(t.id), b"".join(hasher.layer))
        elif staged:
            # The outbox holds the bytes now (and the mailbox, once deposited): our copy
            # of the upload has nothing left to serve.
            src.unlink(missing_ok=True)
            t.path, t.staged = None, False
        self._save(t)  # persist, then act: the offer goes out with the next drive
        self.transfers[t.id] = t
        self._drive()
        if t.inline:
            self.stats["inline_sent"] += 1
            self._emit({"type": "file_done", "transfer": self.json(t)})
        return self.json(t)

    async def upload(
        self, c: str, name: str, size: int, chunks: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        """Offer ``size`` bytes streamed in by a client that has no path to give (the web
        app): they are copied under ``<state dir>/uploads`` first, since a transfer
        serves pieces from disk for as long as it runs (resumes included)."""
        self._resolve(c)  # an unknown contact fails before a byte is stored
        path = await stage_upload(self._uploads(), size, chunks, self.config.disk_margin)
        try:
            return await self.send(c, str(path), name=name, staged=True)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def act(self, tid: str, action: str) -> dict[str, Any]:
        t = self._get(tid)
        if action not in ACTIONS:
            raise ApiError(400, "bad_action", f"action is one of {', '.join(ACTIONS)}")
        if t.state not in OPEN_STATES:
            raise ApiError(409, "finished", f"the transfer is {t.state}")
        if action == "accept":
            self._accept(t)
        elif action in ("reject", "cancel"):
            if action == "reject" and (t.direction != "in" or t.state != "offered"):
                raise ApiError(409, "not_offered", "only an offer made to you can be rejected")
            self._end(t, "rejected" if action == "reject" else "cancelled", None, tell=action)
        elif action == "pause":
            if t.state != "active" and not (t.direction == "out" and t.state == "offered"):
                raise ApiError(409, "not_active", "only a running transfer can be paused")
            t.state = "paused"
            self._save(t)
        else:  # resume
            if t.state != "paused":
                raise ApiError(409, "not_paused", "the transfer is not paused")
            if t.direction == "in":
                self._check_space(t)
            t.state, t.error = "active", None
            self._save(t)
            if t.direction == "out":  # serve what was asked while paused
                link = next((k for k in self._links.values() if k.key[0] == t.peer), None)
                if link is not None:
                    link.queue.extend((t.id, i) for i in t.held)
                    self._pump(link)
                t.held.clear()
            self._request(t)
        self._emit_progress(t, force=True)
        return self.json(t)

    def _accept(self, t: _Transfer) -> None:
        if t.direction != "in" or t.state != "offered":
            raise ApiError(409, "not_offered", "only an offer made to you can be accepted")
        self.config.save_dir.mkdir(parents=True, exist_ok=True)
        self._check_space(t)
        part = self._part_path(t.id)
        t.fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        have = Bitmap(t.manifest.pieces)
        t.download = Download(t.id, t.manifest, have, window=self.config.window)
        t.state = "active"
        self._save(t)
        if t.download.complete:  # the empty file
            self._place(t)
            return
        self._request(t)

    def _check_space(self, t: _Transfer) -> None:
        need = t.manifest.size - t.bytes_done() + self.config.disk_margin
        free = shutil.disk_usage(self.config.save_dir).free
        if free < need:
            raise ApiError(
                507, "disk_full", f"{need} bytes needed in {self.config.save_dir}, {free} free"
            )

    def limit_for(self, pk: bytes) -> int:
        """The largest file ``pk`` may offer: its own limit if set, else the default."""
        raw = self.store.kv_get(f"file_limit:{pk.hex()}")
        return int(raw.decode()) if raw else self.config.max_size

    async def set_limit(self, c: str, max_bytes: int) -> dict[str, Any]:
        pk = self._resolve(c)
        if not 0 <= max_bytes <= MAX_FILE_SIZE:
            raise ApiError(400, "bad_limit", f"a limit is 0 to {MAX_FILE_SIZE} bytes")
        self.store.kv_set(f"file_limit:{pk.hex()}", str(max_bytes).encode())
        return {"contact": pk.hex(), "max_bytes": max_bytes}

    # ----------------------------------------------------------- offers

    def on_offer(self, peer: bytes, envelope: Envelope) -> None:
        """A new ``file`` envelope from ``peer`` was stored in the history."""
        if envelope.id in self.transfers or env_mod.decode_inline(envelope) is not None:
            return  # an inline file was handled as it was stored (_on_incoming_file)
        manifest = env_mod.decode_file(envelope)
        t = _Transfer(envelope.id, "in", peer, envelope.device, manifest, "offered", time.time())
        pending = sum(
            1
            for o in self.transfers.values()
            if o.peer == peer and o.direction == "in" and o.state == "offered"
        )
        if pending >= self.config.max_pending:
            t.state, t.error = "refused", "too many offers waiting from this contact"
        elif manifest.size > self.limit_for(peer):
            t.state, t.error = "refused", "larger than the limit for this contact"
        if t.state == "refused":
            self.stats["offers_refused"] += 1
        self.transfers[t.id] = t
        self._save(t)
        if t.state == "refused":
            self._tell(t, wire.Cancel(t.id, t.error or "refused"))
        self._emit({"type": "file_offer", "transfer": self.json(t)})

    def _on_incoming_file(self, envelope: Envelope) -> None:
        """A new ``file`` envelope, inside the transaction that stores it (every path:
        session, DHT mailbox, a friend's backup). An inline file is saved here, so it is
        on disk before the message is acknowledged; a storage fault raises (a
        StoreError), which undoes the save: the sender still has it and tries again."""
        if envelope.sender == self.conversations.me or envelope.id in self.transfers:
            return
        data = env_mod.decode_inline(envelope)  # checked against its root by the parse
        if data is None:
            return  # a normal offer: recorded by on_offer once the message is stored
        manifest = env_mod.decode_file(envelope)
        peer = envelope.sender
        t = _Transfer(
            envelope.id, "in", peer, envelope.device, manifest, "offered", time.time(), inline=True
        )
        over = self._inline_over(peer, manifest.size)
        if over is not None:
            # Not recorded at all: a record per dropped file would be the flood's storage.
            self.stats["inline_over_bound"] += 1
            log.warning("inline file from %s dropped: %s", peer.hex()[:16], over)
            return
        try:
            if manifest.size > self.limit_for(peer):
                t.state, t.error = "refused", "larger than the limit for this contact"
                self.stats["offers_refused"] += 1
                log.info("inline file from %s refused: %s", peer.hex()[:16], t.error)
            else:
                t.path = str(self._store_inline(t, data))
                t.state = "done"
                self.stats["inline_saved"] += 1
            self._save(t)
        except OSError as exc:
            raise _storage_error(exc) from exc
        self.transfers[t.id] = t
        self._emit({"type": "file_offer", "transfer": self.json(t)})
        if t.state == "done":
            self._emit({"type": "file_done", "transfer": self.json(t)})

    def _inline_over(self, peer: bytes, size: int) -> str | None:
        """Why one more inline file of ``size`` bytes from ``peer`` is over the bounds."""
        cfg, since = self.config, time.time() - INLINE_WINDOW
        recent = [
            t
            for t in self.transfers.values()
            if t.inline and t.direction == "in" and t.created >= since
        ]
        mine = [t for t in recent if t.peer == peer]
        if len(mine) >= cfg.inline_files or _bytes(mine) + size > cfg.inline_bytes:
            return "over the day's bound of inline files from this contact"
        if len(recent) >= cfg.inline_total_files or _bytes(recent) + size > cfg.inline_total_bytes:
            return "over the day's bound of inline files from all contacts"
        return None

    def _store_inline(self, t: _Transfer, data: bytes) -> Path:
        """Write an inline file's bytes (fsynced) and link them into place."""
        folder = self.config.save_dir
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < len(data) + self.config.disk_margin:
            raise StoreFull(f"{len(data)} bytes needed in {folder}, {free} free")
        part = self._part_path(t.id)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            return place_file(part, folder, safe_name(t.manifest.name))
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    # ----------------------------------------------------------- sessions

    def on_stream(self, peer: tuple[bytes, bytes], conn: SessionConnection, event: object) -> None:
        """A session's substream events (and its end), from peering."""
        link = self._links.get(peer)
        if isinstance(event, StreamsAvailable):
            if link is not None and link.conn is not conn:
                self._drop(link)
            link = _Link.open(conn, key=peer)
            self._links[peer] = link
            for t in list(self.transfers.values()):
                if t.peer == peer[0] and t.device == peer[1]:
                    self._request(t)  # resume what this session's device offered us
            return
        if link is None or link.conn is not conn:
            return
        if isinstance(event, SessionClosed | SessionFailed):
            self._drop(link)
            return
        messages, writable = link.handle(event, self.stats)
        for msg in messages:
            self._dispatch(link, msg)
        if writable:
            self._pump(link)

    def _drop(self, link: _Link) -> None:
        if self._links.get(link.key) is link:
            del self._links[link.key]
        for t in self.transfers.values():
            if t.download is not None and t.peer == link.key[0] and t.device == link.key[1]:
                t.download.session_lost()
                if t.dirty:
                    self._save(t)

    def _dispatch(self, link: _Link, msg: wire.Message) -> None:
        t = self.transfers.get(msg.offer)
        if t is None or t.peer != link.key[0]:
            self.stats["rx_unknown_offer"] += 1
            if isinstance(msg, wire.GetLayer | wire.Get):
                link.send_control(wire.Cancel(msg.offer, "unknown offer"))
            return
        if isinstance(msg, wire.Cancel):
            if t.state in OPEN_STATES:
                state = {"done": "done", "rejected": "rejected"}.get(msg.reason, "cancelled")
                if t.direction == "in" and state == "done":
                    state = "cancelled"  # only the receiver says it is done
                self._end(t, state, None if state == "done" else msg.reason, tell=None)
            return
        if t.direction == "out":
            self._serve(link, t, msg)
        else:
            self._receive(link, t, msg)

    # ----------------------------------------------------------- sending side

    def _serve(self, link: _Link, t: _Transfer, msg: wire.Message) -> None:
        if t.state not in OPEN_STATES:
            link.send_control(wire.Cancel(t.id, t.state))
            return
        if isinstance(msg, wire.GetLayer):
            wanted = [-1]
        elif isinstance(msg, wire.Get):
            wanted = [i for i in msg.indices if 0 <= i < t.manifest.pieces]
            self.stats["rx_bad_index"] += len(msg.indices) - len(wanted)
        else:
            self.stats["rx_unexpected"] += 1
            return
        if t.state == "offered":
            t.state = "active"
            self._save(t)
        room = MAX_QUEUED - len(link.queue)
        if len(wanted) > room:
            self.stats["rx_over_queue"] += len(wanted) - room
            wanted = wanted[:room]
        link.queue.extend((t.id, i) for i in wanted)
        self._pump(link)

    def _pump(self, link: _Link) -> None:
        """Send queued pieces while the bulk stream takes them."""
        if not link.flush():
            return
        while link.queue:
            tid, index = link.queue.popleft()
            t = self.transfers.get(tid)
            if t is None or t.state not in OPEN_STATES:
                continue
            if t.state == "paused":
                t.held.append(index)
                continue
            try:
                data = self._read(t, index)
            except OSError as exc:
                self._end(t, "failed", f"cannot read the file: {exc}", tell="cancel")
                continue
            if data is None:
                continue
            if not link.send(link.bulk, data):
                return

    def _read(self, t: _Transfer, index: int) -> bytes | bytearray | None:
        """One framed LAYER (index -1) or PIECE, read from disk; None if the file changed."""
        if index < 0:
            return wire.encode(wire.Layer(t.id, tuple(self._read_layer(t) or ())))
        if t.fd is None:
            assert t.path is not None
            st = os.stat(t.path)
            if st.st_size != t.src_size or st.st_mtime_ns != t.src_mtime_ns:
                self._end(t, "failed", "the file changed since it was offered", tell="cancel")
                return None
            t.fd = os.open(t.path, os.O_RDONLY)
        m = t.manifest
        length = m.piece_length(index)
        # Read from disk straight in behind the message head: the piece is copied once.
        message = bytearray(wire.PIECE_HEAD + length)
        message[: wire.PIECE_HEAD] = wire.piece_head(t.id, index, length)
        with memoryview(message) as view:
            got = os.preadv(t.fd, [view[wire.PIECE_HEAD :]], index * m.piece_size)
        if got != length:
            self._end(t, "failed", "the file changed since it was offered", tell="cancel")
            return None
        t.served += 1
        if time.monotonic() - t.saved_at > SAVE_EVERY:
            self._save_soon(t)  # the count served: progress, nothing to fsync first
        self._emit_progress(t)
        return message

    def _tell(self, t: _Transfer, msg: wire.Message) -> None:
        for key, link in self._links.items():
            if key[0] == t.peer and (t.direction == "out" or key[1] == t.device):
                link.send_control(msg)

    # ----------------------------------------------------------- receiving side

    def _request(self, t: _Transfer) -> None:
        if t.direction != "in" or t.state != "active" or t.download is None:
            return
        link = self._links.get((t.peer, t.device))
        if link is None:
            return
        for msg in t.download.requests():
            link.send_control(msg)

    def _receive(self, link: _Link, t: _Transfer, msg: wire.Message) -> None:
        d = t.download
        if link.key[1] != t.device or d is None or t.state not in ("active", "paused"):
            self.stats["rx_unexpected"] += 1
            return
        if isinstance(msg, wire.Layer):
            if d.on_layer(list(msg.hashes)):
                write_atomic(self._layer_path(t.id), b"".join(msg.hashes))
            elif d.failed:
                self._end(t, "failed", "the sender's piece layer does not match", tell="cancel")
                return
        elif isinstance(msg, wire.Piece):
            if t.fd is not None and d.wants(msg.index, len(msg.data)):
                self._write(t, d, msg.index, msg.data)  # checked and written on the thread
                return
            # Not asked for, held already, or the wrong length: refused without hashing
            # (on_piece says why; it never says "ok" to what wants() turned down).
            if not self._checked(t, d, msg.index, msg.data, None):
                return
        else:
            self.stats["rx_unexpected"] += 1
            return
        self._next(t, d)

    def _next(self, t: _Transfer, d: Download) -> None:
        if d.complete:
            self._finish(t)
        elif t.state == "active":
            self._request(t)

    def _write(self, t: _Transfer, d: Download, index: int, data: bytes) -> None:
        """Hash and write one asked-for piece on the writer's thread; its verdict
        (:meth:`_checked`) follows on the loop once it is done."""
        assert t.fd is not None
        t.unchecked += len(data)
        if t.unchecked >= DISK_CHECK_EVERY:
            t.unchecked = 0
            try:
                self._check_space(t)
            except ApiError as exc:
                self._write_failed(t, d, exc)
                return
        m = t.manifest

        def written(digest: bytes, error: OSError | None) -> None:
            if t.download is not d:
                return  # ended (or started again) meanwhile: nothing to claim
            if error is not None:
                if t.error is None:  # the first failure says why; later ones add nothing
                    self._write_failed(t, d, error)
            elif self._checked(t, d, index, data, digest):
                self._next(t, d)

        self._writer.write(
            t.id,
            t.fd,
            index * m.piece_size,
            data,
            d.expected(index),
            (m.pieces, m.piece_size),
            written,
        )

    def _checked(
        self, t: _Transfer, d: Download, index: int, data: bytes, digest: bytes | None
    ) -> bool:
        """The verdict on a piece (``digest``: its hash, and it is on disk if it fits);
        False if the transfer ended."""
        verdict = d.on_piece(index, data, digest)
        if verdict.outcome == "ok":
            d.written(index)  # the thread wrote it: the hash it saw is the layer's
            t.dirty = True
            if time.monotonic() - t.saved_at > SAVE_EVERY:
                self._save_soon(t)
            self._emit_progress(t)
        elif verdict.outcome == "failed":
            self._end(t, "failed", "too many bad pieces from the sender", tell="cancel")
            return False
        elif verdict.outcome == "bad":
            log.warning("bad piece %d of %s, asked again", index, t.id.hex()[:12])
        return True

    def _write_failed(self, t: _Transfer, d: Download, exc: Exception) -> None:
        """Disk full (or gone): pause, saying why; what is written stays verified."""
        t.state = "paused"
        t.error = "disk_full" if isinstance(exc, ApiError) else f"cannot write: {exc}"
        self._writer.settle(t.id)  # pieces written before the failure are still claimed
        if t.download is not d:
            return  # they completed it
        d.session_lost()
        self._save(t)
        self._emit_progress(t, force=True)

    def _finish(self, t: _Transfer) -> None:
        """Every piece is verified and written: the last fsync on the writer's thread,
        then :meth:`_place` (unless the transfer ended meanwhile)."""
        assert t.fd is not None
        d = t.download

        def synced(_: object) -> None:
            if t.download is d and t.state in OPEN_STATES:
                self._place(t)

        self._writer.sync(t.id, t.fd, synced)

    def _place(self, t: _Transfer) -> None:
        """fsynced: move into place, say so."""
        assert t.fd is not None
        self._writer.settle(t.id)
        os.fsync(t.fd)  # nothing left to write back by now: quick
        os.close(t.fd)
        t.fd = None
        final = place_file(self._part_path(t.id), self.config.save_dir, safe_name(t.manifest.name))
        t.path = str(final)
        t.state = "done"
        assert t.download is not None
        t.stats.update(t.download.stats)
        t.download = None
        self._save(t)
        self._layer_path(t.id).unlink(missing_ok=True)
        self._tell(t, wire.Cancel(t.id, "done"))
        self._emit({"type": "file_done", "transfer": self.json(t)})

    def _end(self, t: _Transfer, state: str, error: str | None, *, tell: str | None) -> None:
        """A transfer stops for good (done on the sender, rejected, cancelled, failed)."""
        if tell is not None:
            self._tell(t, wire.Cancel(t.id, "rejected" if tell == "reject" else error or tell))
        t.state, t.error = state, error
        self._writer.settle(t.id)  # no job may still use the file when it is closed
        if t.fd is not None:
            os.close(t.fd)
            t.fd = None
        if t.direction == "out" and t.staged and t.path is not None:
            Path(t.path).unlink(missing_ok=True)  # our copy of an upload: nothing serves it now
        if t.direction == "in":
            self._part_path(t.id).unlink(missing_ok=True)
            self._layer_path(t.id).unlink(missing_ok=True)
            if t.download is not None:
                t.stats.update(t.download.stats)
            t.download = None
        self._save(t)
        event = "file_done" if state == "done" else "file_progress"
        self._emit({"type": event, "transfer": self.json(t)})

    def _emit_progress(self, t: _Transfer, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - t.progress_at >= PROGRESS_EVERY:
            t.progress_at = now
            self._emit({"type": "file_progress", "transfer": self.json(t)})


def media_type_of(name: str) -> str:
    """The media type an offer of ``name`` says (from its extension, else octet-stream)."""
    media = (mimetypes.guess_type(name)[0] or "").lower()
    return media if _MEDIA_RE.fullmatch(media) else "application/octet-stream"


def _bytes(transfers: list[_Transfer]) -> int:
    return sum(t.manifest.size for t in transfers)


def _storage_error(exc: OSError) -> StoreError:
    """The storage fault an OSError saving an inline file stands for, as the message
    store's own (a StoreError), so the batch that stores the message fails like one."""
    if isinstance(exc, StoreError):
        return exc
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"cannot save an inline file: {exc}")
    if exc.errno == errno.EROFS:
        return StoreReadOnly(f"cannot save an inline file: {exc}")
    return StoreIOError(f"cannot save an inline file: {exc}")


def hash_file(path: Path, size: int, piece: int) -> PieceHasher:
    """The piece layer and root of the file at ``path`` (read in a thread)."""
    hasher = PieceHasher(size, piece)
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher


def place_file(part: Path, folder: Path, name: str) -> Path:
    """Link ``part`` into ``folder`` under ``name`` or ``name (2)``..., never replacing."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    for n in range(1, 10_000):
        candidate = folder / (name if n == 1 else f"{stem} ({n}){dot}{ext}")
        try:
            os.link(part, candidate)
        except FileExistsError:
            continue
        part.unlink()
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return candidate
    raise OSError(f"no free name for {name} in {folder}")

"""The asyncio shell of files in channels: offers in the history, pieces from any member.

How this works: posting a file hashes it (in a thread, one piece in memory), keeps a
record and the piece layer under ``<data dir>/channel_files`` and posts a signed
channel message of kind ``file`` (the 1:1 offer's body: name, size, media type, piece
size, root), which history sync carries to members who join later. Every member that
reads the message records the offer (at most :attr:`ChannelFilesConfig.max_files` per
channel) and waits for its user to accept.

The bytes travel over the channel links' substreams (:mod:`btchat.transfer.wire`, service
2, priorities 6 and 7: chat on the link never waits behind them). On a link, a member
that fetches a file, or holds pieces of it and serves, sends a BITFIELD of what it
holds (a fetcher that holds nothing sends an empty one: "tell me"); the first BITFIELD
heard from a link for a file is answered with ours, and every piece verified and
written is announced to every link with HAVE. The fetcher's
:class:`~btchat.transfer.swarm.Swarm` asks for the piece layer, then for pieces, rarest
first, several in flight per source; every piece is checked against the layer before it
is written, a bad one counted against its sender and fetched from another. The bitmap
of held pieces is saved after an fsync of the part file, so a restart resumes. A
complete file is linked into place under a safe name and served from there, so the
poster may go offline once another member holds the file. A member may choose not to
serve a channel's files (:meth:`ChannelFiles.set_serving`): it then sends no BITFIELD
and answers requests with CANCEL ``not serving``. A serving member sends each member at
most :attr:`ChannelFilesConfig.serve_per_minute` pieces a minute and queues at most
:attr:`ChannelFilesConfig.max_queued` requests per link; the excess is dropped and
counted (the fetcher asks again after its timeout, or elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btchat.channels.link import LinkClosed, LinkFailed
from btchat.channels.link_connection import LinkConnection
from btchat.channels.store import StoredMessage
from btchat.errors import ApiError
from btchat.files import write_atomic
from btchat.node.files import DISK_MARGIN, hash_file, media_type_of, place_file
from btchat.node.piece_writer import PieceWriter
from btchat.node.transfer_records import load_records, read_layer
from btchat.node.transfer_streams import TransferStreams
from btchat.stream.events import StreamOpened, StreamsAvailable
from btchat.tasks import TaskOwner
from btchat.transfer import wire
from btchat.transfer.download import Bitmap
from btchat.transfer.manifest import MAX_FILE_SIZE, Manifest, choose_piece_size
from btchat.transfer.names import safe_name
from btchat.transfer.swarm import Swarm

__all__ = ["ChannelFiles", "ChannelFilesConfig"]

log = logging.getLogger(__name__)

#: Seconds between saves of a download's bitmap, and between checks for late requests.
SAVE_EVERY = 1.0
TICK = 5.0
PROGRESS_EVERY = 0.5
ACTIONS = ("accept", "reject", "cancel", "pause", "resume")
#: Written every this many bytes: is there still room for the rest?
DISK_CHECK_EVERY = 16 * 1024 * 1024


@dataclass(frozen=True)
class ChannelFilesConfig:
    save_dir: Path
    state_dir: Path
    #: Offers recorded per channel; more are shown in the history but not tracked.
    max_files: int = 256
    #: Largest file we record an offer of.
    max_size: int = 4 * 1024**3
    #: Pieces in flight per source.
    per_source: int = 8
    #: Pieces one member's device may fetch from us per minute (256 KiB pieces: 20 MB/s).
    serve_per_minute: int = 4800
    #: Requests queued per link (beyond: dropped, counted ``rx_over_queue``).
    max_queued: int = 256
    disk_margin: int = DISK_MARGIN


@dataclass(eq=False)
class _File:
    """One file offered in one channel; :meth:`to_record` is what is persisted."""

    channel: bytes
    id: bytes  # the channel message's id
    author: bytes
    manifest: Manifest
    state: str  # offered, active, paused, done (held whole), failed, rejected, cancelled
    created: float
    mine: bool = False
    path: str | None = None  # the whole file: our source, or where the download went
    src_size: int = 0
    src_mtime_ns: int = 0
    error: str | None = None
    served: int = 0
    stats: Counter[str] = field(default_factory=Counter)
    swarm: Swarm | None = None
    fd: int | None = None  # the part file (read and write) while active
    rfd: int | None = None  # the whole file, for serving
    saved_at: float = 0.0
    progress_at: float = 0.0
    unchecked: int = 0  # bytes written since the last free-space check

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "channel": self.channel.hex(),
            "id": self.id.hex(),
            "author": self.author.hex(),
            "manifest": self.manifest.to_json(),
            "state": self.state,
            "created": self.created,
            "mine": self.mine,
            "path": self.path,
            "src_size": self.src_size,
            "src_mtime_ns": self.src_mtime_ns,
            "error": self.error,
            "served": self.served,
            "stats": dict(self.stats),
        }
        if self.swarm is not None:
            rec["have"] = base64.b64encode(self.swarm.have.to_bytes()).decode()
            rec["stats"] = dict(self.stats + self.swarm.stats)
        return rec

    def holds(self, index: int) -> bool:
        if self.state == "done":
            return True
        return self.swarm is not None and self.swarm.have[index]

    @property
    def held(self) -> int:
        if self.state == "done":
            return self.manifest.pieces
        return self.swarm.have.count if self.swarm is not None else 0

    def bitfield(self) -> bytes:
        if self.state == "done":
            full = Bitmap(self.manifest.pieces)
            for i in range(self.manifest.pieces):
                full.set(i)
            return full.to_bytes()
        return self.swarm.have.to_bytes() if self.swarm is not None else b""


@dataclass(eq=False, kw_only=True)
class _Link(TransferStreams):
    """Our transfer substreams on one channel link, and what we serve on it."""

    channel: bytes
    key: bytes  # the member's link key
    queue: deque[tuple[bytes, int]] = field(default_factory=deque)  # (offer, index); -1: layer
    heard: set[bytes] = field(default_factory=set)  # offers this peer sent a BITFIELD of
    tokens: float = 0.0
    tokens_at: float = 0.0
    waking: bool = False


class ChannelFiles:
    """Files offered and fetched in every channel of this daemon; see the module docstring."""

    def __init__(
        self,
        config: ChannelFilesConfig,
        *,
        serving: Callable[[bytes], bool],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.config = config
        self._serving = serving
        self._emit = emit
        self.files: dict[bytes, _File] = {}
        self._links: dict[tuple[bytes, bytes], _Link] = {}
        self.stats: Counter[str] = Counter()
        self._tasks = TaskOwner()
        self._rng = random.Random()
        self._writer = PieceWriter()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._load()

    # ----------------------------------------------------------- persistence

    def _record_path(self, fid: bytes) -> Path:
        return self.config.state_dir / f"{fid.hex()}.json"

    def _layer_path(self, fid: bytes) -> Path:
        return self.config.state_dir / f"{fid.hex()}.layer"

    def _part_path(self, fid: bytes) -> Path:
        return self.config.save_dir / f".btchat-{fid.hex()}.part"

    def _save(self, f: _File) -> None:
        """Commit the record; a download's data is fsynced first (persist, then claim)."""
        self._writer.settle(f.id)  # its writes (and an older record) go first
        if f.fd is not None:
            os.fsync(f.fd)
        write_atomic(self._record_path(f.id), json.dumps(f.to_record()).encode())
        f.saved_at = time.monotonic()

    def _load(self) -> None:
        for f in load_records(self.config.state_dir, self._from_record, "channel file"):
            self.files[f.id] = f

    def _from_record(self, rec: dict[str, Any]) -> _File:
        manifest = Manifest.from_json(rec["manifest"])
        f = _File(
            bytes.fromhex(rec["channel"]),
            bytes.fromhex(rec["id"]),
            bytes.fromhex(rec["author"]),
            manifest,
            rec["state"],
            rec["created"],
            bool(rec.get("mine")),
            rec.get("path"),
            rec.get("src_size", 0),
            rec.get("src_mtime_ns", 0),
            rec.get("error"),
            rec.get("served", 0),
            Counter(rec.get("stats", {})),
        )
        if f.state in ("active", "paused"):
            have = Bitmap(manifest.pieces, base64.b64decode(rec["have"]))
            f.swarm = self._swarm(f, have, self._read_layer(f.id))
            f.swarm.stats.update(f.stats)
            f.stats = Counter()
            try:
                f.fd = os.open(self._part_path(f.id), os.O_RDWR)
            except OSError as exc:
                f.state, f.error, f.swarm = "failed", f"partial file lost: {exc}", None
        return f

    def _swarm(self, f: _File, have: Bitmap, layer: list[bytes] | None = None) -> Swarm:
        return Swarm(
            f.id,
            f.manifest,
            have,
            layer,
            per_source=self.config.per_source,
            rng=random.Random(self._rng.random()),
        )

    def _read_layer(self, fid: bytes) -> list[bytes] | None:
        return read_layer(self._layer_path(fid))

    def start(self) -> None:
        self._tasks.spawn(self._tick_loop())

    async def stop(self) -> None:
        """Save every open download and close the files (``btchat`` stops)."""
        await self._tasks.cancel_all()
        for f in self.files.values():
            self._writer.settle(f.id)
            if f.fd is not None:
                self._save(f)
                os.close(f.fd)
                f.fd = None
            if f.rfd is not None:
                os.close(f.rfd)
                f.rfd = None
        self._writer.close()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for f in list(self.files.values()):
                if f.swarm is not None and f.state == "active":
                    f.swarm.expire(now)
                    self._request(f)

    # ----------------------------------------------------------- API

    def json(self, f: _File) -> dict[str, Any]:
        m = f.manifest
        held = f.held
        done = m.size if held == m.pieces else min(m.size, held * m.piece_size)
        sources = len(f.swarm.sources) if f.swarm is not None else 0
        return {
            "id": f.id.hex(),
            "channel": f.channel.hex(),
            "author": f.author.hex(),
            "mine": f.mine,
            "name": m.name,
            "size": m.size,
            "media_type": m.media_type,
            "root": m.root.hex(),
            "piece_size": m.piece_size,
            "pieces": m.pieces,
            "have": held,
            "bytes_done": done,
            "progress": 1.0 if m.size == 0 else done / m.size,
            "state": f.state,
            "error": f.error,
            "path": f.path,
            "served": f.served,
            "sources": sources,
            "stats": dict(f.stats + (f.swarm.stats if f.swarm else Counter())),
        }

    def list(self, channel: bytes) -> list[dict[str, Any]]:
        rows = sorted(
            (f for f in self.files.values() if f.channel == channel), key=lambda f: f.created
        )
        return [self.json(f) for f in rows]

    def get(self, channel: bytes, fid: str) -> _File:
        fid = fid.lower()
        matches = [
            f for k, f in self.files.items() if f.channel == channel and k.hex().startswith(fid)
        ]
        if len(fid) < 6:
            raise ApiError(400, "bad_file", "name a file by 6 or more digits of its id")
        if len(matches) > 1:
            raise ApiError(409, "ambiguous", f"{fid!r} names {len(matches)} files: give more")
        if not matches:
            raise ApiError(404, "no_file", f"no file {fid!r} in this channel")
        return matches[0]

    async def prepare(
        self, path: str, name: str | None
    ) -> tuple[Manifest, list[bytes], Path, os.stat_result]:
        """The manifest of the file at ``path`` (hashed in a thread), to post."""
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
        try:
            hasher = await asyncio.to_thread(hash_file, src, st.st_size, piece)
            root = hasher.root()
        except (OSError, ValueError) as exc:
            raise ApiError(400, "bad_path", f"cannot read {path}: {exc}") from None
        shown = safe_name(name or src.name)
        manifest = Manifest(shown, st.st_size, media_type_of(shown), piece, root)
        return manifest, hasher.layer, src.resolve(), st

    def posted(
        self, stored: StoredMessage, layer: list[bytes], src: Path, st: os.stat_result
    ) -> dict[str, Any]:
        """Our own ``file`` message was posted: record it as held whole, and serve it."""
        m = stored.file
        assert m is not None
        write_atomic(self._layer_path(stored.id), b"".join(layer))
        f = _File(stored.channel, stored.id, stored.author, m, "done", time.time(), mine=True)
        f.path, f.src_size, f.src_mtime_ns = str(src), st.st_size, st.st_mtime_ns
        self.files[f.id] = f
        self._save(f)
        self._announce(f)
        return self.json(f)

    def act(self, channel: bytes, fid: str, action: str) -> dict[str, Any]:
        f = self.get(channel, fid)
        if action not in ACTIONS:
            raise ApiError(400, "bad_action", f"action is one of {', '.join(ACTIONS)}")
        if action == "accept":  # again after a reject, cancel or failure: from scratch
            if f.state not in ("offered", "rejected", "cancelled", "failed") or f.mine:
                raise ApiError(409, "not_offered", f"the file is {f.state}")
            f.error = None
            self._accept(f)
        elif action == "reject":
            if f.state != "offered":
                raise ApiError(409, "not_offered", f"the file is {f.state}")
            f.state = "rejected"
            self._save(f)
        elif action == "pause":
            if f.state != "active":
                raise ApiError(409, "not_active", "only a running download can be paused")
            f.state = "paused"
            self._save(f)
        elif action == "resume":
            if f.state != "paused":
                raise ApiError(409, "not_paused", "the download is not paused")
            self._check_space(f)
            assert f.swarm is not None
            f.state, f.error = "active", None
            f.swarm.forget_requests()  # answers to them were dropped while paused
            self._save(f)
            self._request(f)
        else:
            if f.state not in ("active", "paused"):
                raise ApiError(409, "not_active", "only a running download can be cancelled")
            self._end(f, "cancelled", None)
        self._emit_progress(f, force=True)
        return self.json(f)

    def _check_space(self, f: _File) -> None:
        held = f.swarm.have.count if f.swarm is not None else 0
        need = max(0, f.manifest.size - held * f.manifest.piece_size) + self.config.disk_margin
        free = shutil.disk_usage(self.config.save_dir).free
        if free < need:
            raise ApiError(
                507, "disk_full", f"{need} bytes needed in {self.config.save_dir}, {free} free"
            )

    def _accept(self, f: _File) -> None:
        self.config.save_dir.mkdir(parents=True, exist_ok=True)
        f.swarm = None
        self._check_space(f)
        f.fd = os.open(self._part_path(f.id), os.O_RDWR | os.O_CREAT, 0o600)
        f.swarm = self._swarm(f, Bitmap(f.manifest.pieces))
        f.state = "active"
        self._save(f)
        if f.swarm.complete:  # the empty file
            self._finish(f)
            return
        self._announce(f)

    # ----------------------------------------------------------- offers

    def on_message(self, stored: StoredMessage) -> None:
        """A ``file`` message we can read was stored (live, or by history sync)."""
        m = stored.file
        if m is None or stored.id in self.files:
            return
        if not self._room(stored.channel):
            self.stats["over_max_files"] += 1
            cid, mid = stored.channel.hex()[:8], stored.id.hex()[:8]
            log.info(
                "channel %s: %d files held or fetched, %s not recorded",
                cid,
                self.config.max_files,
                mid,
            )
            return
        f = _File(stored.channel, stored.id, stored.author, m, "offered", time.time())
        if m.size > self.config.max_size:
            f.state, f.error = "rejected", "larger than the limit for channel files"
        self.files[f.id] = f
        self._save(f)
        self._emit({"type": "channel_file_offer", "file": self.json(f)})

    def _room(self, channel: bytes) -> bool:
        """Room for one more record in ``channel``: past the bound, the oldest offer
        nobody accepted (or a rejected one) is forgotten, so a flood of offers cannot
        keep a later one out; files held or being fetched are never dropped."""
        mine = [f for f in self.files.values() if f.channel == channel]
        if len(mine) < self.config.max_files:
            return True
        idle = [f for f in mine if f.state in ("offered", "rejected", "cancelled", "failed")]
        if not idle:
            return False
        oldest = min(idle, key=lambda f: f.created)
        del self.files[oldest.id]
        self._record_path(oldest.id).unlink(missing_ok=True)
        self._layer_path(oldest.id).unlink(missing_ok=True)
        self.stats["offers_forgotten"] += 1
        return True

    def forget_channel(self, channel: bytes) -> None:
        """We left ``channel``: stop its downloads (what is saved stays on disk)."""
        for f in [f for f in self.files.values() if f.channel == channel]:
            if f.state in ("active", "paused"):
                self._end(f, "cancelled", "left the channel")
            for fd in (f.fd, f.rfd):
                if fd is not None:
                    os.close(fd)
            del self.files[f.id]
            self._record_path(f.id).unlink(missing_ok=True)
            self._layer_path(f.id).unlink(missing_ok=True)

    # ----------------------------------------------------------- links

    def on_stream(self, channel: bytes, key: bytes, conn: LinkConnection, event: object) -> None:
        """A channel link's substream events (and its end), from the channel service."""
        lk = (channel, key)
        link = self._links.get(lk)
        if isinstance(event, StreamsAvailable):
            if link is not None and link.conn is not conn:
                self._drop(link)
            link = _Link.open(
                conn, channel=channel, key=key, tokens=self._burst(), tokens_at=time.monotonic()
            )
            self._links[lk] = link
            for f in self.files.values():
                if f.channel == channel:
                    self._tell_bitfield(link, f)
            return
        if link is None or link.conn is not conn:
            if isinstance(event, StreamOpened):
                conn.reset_stream(event.stream_id, "not ready")
            return
        if isinstance(event, LinkClosed | LinkFailed):
            self._drop(link)
            return
        messages, writable = link.handle(event, self.stats)
        for msg in messages:
            self._dispatch(link, msg)
        if writable:
            self._pump(link)

    def _drop(self, link: _Link) -> None:
        lk = (link.channel, link.key)
        if self._links.get(lk) is link:
            del self._links[lk]
        for f in self.files.values():
            if f.swarm is not None and f.channel == link.channel:
                f.swarm.remove_source(link.key)
                if f.state == "active":
                    self._request(f)

    def _channel_links(self, channel: bytes) -> list[_Link]:
        return [k for k in self._links.values() if k.channel == channel]

    def _can_serve(self, f: _File) -> bool:
        unchanged = f.state != "done" or f.error is None  # a whole file changed on disk
        return f.held > 0 and unchanged and self._serving(f.channel)

    def _tell_bitfield(self, link: _Link, f: _File) -> None:
        """Our BITFIELD of ``f`` to ``link``: if we serve pieces of it, or fetch it."""
        if self._can_serve(f):
            bits = f.bitfield()
        elif f.state in ("active", "paused"):
            bits = b""  # we hold nothing we serve, but want to hear who holds it
        else:
            return
        link.send_control(wire.Bitfield(f.id, bits))

    def _announce(self, f: _File) -> None:
        for link in self._channel_links(f.channel):
            self._tell_bitfield(link, f)

    def _dispatch(self, link: _Link, msg: wire.Message) -> None:
        f = self.files.get(msg.offer)
        if f is None or f.channel != link.channel:
            self.stats["rx_unknown_offer"] += 1
            if isinstance(msg, wire.GetLayer | wire.Get):
                link.send_control(wire.Cancel(msg.offer, "unknown offer"))
            return
        if isinstance(msg, wire.Bitfield):
            first = msg.offer not in link.heard
            link.heard.add(msg.offer)
            # A swarm exists while active or paused: a paused one still learns sources.
            if f.swarm is not None and not f.swarm.add_source(link.key, msg.bits):
                self.stats["rx_bad_bitfield"] += 1
            if first:
                self._tell_bitfield(link, f)  # the first word from this peer: answer it
            self._request(f)
        elif isinstance(msg, wire.Have):
            if f.swarm is not None and f.swarm.on_have(link.key, msg.index):
                self._request(f)
        elif isinstance(msg, wire.Cancel):
            if f.swarm is not None:
                f.swarm.remove_source(link.key)  # it serves us nothing of this file
                self._request(f)
        elif isinstance(msg, wire.GetLayer | wire.Get):
            self._serve(link, f, msg)
        elif isinstance(msg, wire.Layer | wire.Piece):
            self._receive(link, f, msg)

    # ----------------------------------------------------------- serving

    def _serve(self, link: _Link, f: _File, msg: wire.GetLayer | wire.Get) -> None:
        if not self._serving(f.channel):
            link.send_control(wire.Cancel(f.id, "not serving"))
            return
        if isinstance(msg, wire.GetLayer):
            wanted = [-1] if f.held else []
        else:
            wanted = [i for i in msg.indices if 0 <= i < f.manifest.pieces and f.holds(i)]
            self.stats["rx_not_held"] += len(msg.indices) - len(wanted)
        if not wanted:
            link.send_control(wire.Cancel(f.id, "not held"))
            return
        room = self.config.max_queued - len(link.queue)
        if len(wanted) > room:
            self.stats["rx_over_queue"] += len(wanted) - room
            wanted = wanted[: max(room, 0)]
        link.queue.extend((f.id, i) for i in wanted)
        self._pump(link)

    def _burst(self) -> float:
        return max(8.0, self.config.serve_per_minute / 60.0)

    def _pump(self, link: _Link) -> None:
        """Send queued pieces while the bulk stream takes them and the member's rate allows."""
        if not link.flush():
            return
        rate = self.config.serve_per_minute / 60.0
        while link.queue:
            now = time.monotonic()
            link.tokens = min(self._burst(), link.tokens + (now - link.tokens_at) * rate)
            link.tokens_at = now
            fid, index = link.queue[0]
            if index >= 0 and link.tokens < 1.0:
                if not link.waking:
                    link.waking = True
                    wait = (1.0 - link.tokens) / rate
                    asyncio.get_running_loop().call_later(wait, self._wake, link)
                self.stats["serve_paced"] += 1
                return
            link.queue.popleft()
            f = self.files.get(fid)
            if f is None or (index >= 0 and not f.holds(index)):
                continue
            try:
                data = self._read(f, index)
            except OSError as exc:
                log.warning("cannot serve %s: %s", f.id.hex()[:8], exc)
                self.stats["serve_failed"] += 1
                data = None
            if data is None:  # gone or changed on disk: say so, it is asked elsewhere
                link.send_control(wire.Cancel(f.id, "not held"))
                link.queue = deque(q for q in link.queue if q[0] != f.id)
                continue
            if index >= 0:
                link.tokens -= 1.0
            if not link.send(link.bulk, data):
                return

    def _wake(self, link: _Link) -> None:
        link.waking = False
        if self._links.get((link.channel, link.key)) is link:
            self._pump(link)

    def _read(self, f: _File, index: int) -> bytes | None:
        """One framed LAYER (index -1) or PIECE; None if the whole file changed."""
        if index < 0:
            layer = self._read_layer(f.id)
            return wire.encode(wire.Layer(f.id, tuple(layer))) if layer else None
        m = f.manifest
        if f.state == "done":
            if f.rfd is None:
                assert f.path is not None
                st = os.stat(f.path)
                if st.st_size != f.src_size or st.st_mtime_ns != f.src_mtime_ns:
                    f.error = "the file changed on disk: no longer served"
                    self.stats["serve_changed"] += 1
                    return None
                f.rfd = os.open(f.path, os.O_RDONLY)
            fd = f.rfd
        else:
            fd = f.fd
        if fd is None:
            return None
        data = os.pread(fd, m.piece_length(index), index * m.piece_size)
        f.served += 1
        return wire.encode(wire.Piece(f.id, index, data))

    # ----------------------------------------------------------- fetching

    def _request(self, f: _File) -> None:
        if f.state != "active" or f.swarm is None:
            return
        for key, msg in f.swarm.requests(time.monotonic()):
            link = self._links.get((f.channel, key))
            if link is None:
                f.swarm.remove_source(key)
                continue
            link.send_control(msg)

    def _receive(self, link: _Link, f: _File, msg: wire.Layer | wire.Piece) -> None:
        s = f.swarm
        if s is None or f.state != "active":
            self.stats["rx_unexpected"] += 1
            return
        if isinstance(msg, wire.Layer):
            if s.on_layer(link.key, list(msg.hashes)):
                write_atomic(self._layer_path(f.id), b"".join(msg.hashes))
            else:
                log.warning("bad piece layer of %s from %s", f.id.hex()[:8], link.key.hex()[:16])
        elif f.fd is not None and s.wants(link.key, msg.index, len(msg.data)):
            self._write(f, s, link.key, msg.index, msg.data)  # checked on the writer's thread
            return
        else:  # not asked of this member, held, or the wrong length: refused unhashed
            self._checked(f, s, link.key, msg.index, msg.data, None)
        self._next(f, s)

    def _next(self, f: _File, s: Swarm) -> None:
        if f.swarm is not s:
            return  # ended meanwhile
        if s.complete:  # even if paused meanwhile: the last piece was on its way
            self._finish(f)
        elif f.state == "active":
            self._request(f)

    def _write(self, f: _File, s: Swarm, key: bytes, index: int, data: bytes) -> None:
        """Hash and write one piece asked of ``key`` on the writer's thread; the verdict
        follows once it is done."""
        assert f.fd is not None
        f.unchecked += len(data)
        if f.unchecked >= DISK_CHECK_EVERY:
            f.unchecked = 0
            try:
                self._check_space(f)
            except ApiError as exc:
                self._write_failed(f, exc)
                return
        m = f.manifest

        def written(digest: bytes, error: OSError | None) -> None:
            if f.swarm is not s:
                return  # ended (or started again) meanwhile: nothing to claim
            if error is not None:
                if f.error is None:
                    self._write_failed(f, error)
            else:
                self._checked(f, s, key, index, data, digest)
                self._next(f, s)

        self._writer.write(
            f.id, f.fd, index * m.piece_size, data, s.expected(index), (m.pieces, m.piece_size),
            written,
        )  # fmt: skip

    def _write_failed(self, f: _File, exc: Exception) -> None:
        """Disk full (or gone): pause, saying why; what is written stays verified."""
        f.state = "paused"
        f.error = "disk_full" if isinstance(exc, ApiError) else f"cannot write: {exc}"
        self._save(f)  # the pieces written before the failure are claimed first
        self._emit_progress(f, force=True)

    def _checked(
        self, f: _File, s: Swarm, key: bytes, index: int, data: bytes, digest: bytes | None
    ) -> None:
        """The verdict on a piece from ``key`` (``digest``: its hash, and it is on disk
        if it fits); on_piece never says "ok" to what wants() turned down."""
        verdict = s.on_piece(key, index, data, digest)
        if verdict.outcome == "bad":
            log.warning("bad piece %d of %s from %s, fetched elsewhere",
                        index, f.id.hex()[:8], key.hex()[:16])  # fmt: skip
        if verdict.outcome != "ok":
            return
        s.written(index)
        if time.monotonic() - f.saved_at > SAVE_EVERY and f.fd is not None:
            f.saved_at = time.monotonic()
            record = json.dumps(f.to_record()).encode()
            self._writer.save(f.id, f.fd, self._record_path(f.id), record)
        if self._serving(f.channel):
            # To every member that told us it fetches or holds this file; the others
            # hear our BITFIELD when they first ask.
            have = wire.encode(wire.Have(f.id, index))
            for link in self._channel_links(f.channel):
                if f.id in link.heard:
                    link.send(link.control, have)
        self._emit_progress(f)

    def _finish(self, f: _File) -> None:
        """Every piece is verified and written: fsync, move into place, serve from there."""
        assert f.fd is not None and f.swarm is not None
        self._writer.settle(f.id)
        os.fsync(f.fd)
        os.close(f.fd)
        f.fd = None
        final = place_file(self._part_path(f.id), self.config.save_dir, safe_name(f.manifest.name))
        st = final.stat()
        f.path, f.src_size, f.src_mtime_ns = str(final), st.st_size, st.st_mtime_ns
        f.state = "done"
        f.stats.update(f.swarm.stats)
        f.swarm = None
        self._save(f)
        self._emit({"type": "channel_file_done", "file": self.json(f)})

    def _end(self, f: _File, state: str, error: str | None) -> None:
        f.state, f.error = state, error
        self._writer.settle(f.id)  # no job may still use the file when it is closed
        if f.fd is not None:
            os.close(f.fd)
            f.fd = None
        self._part_path(f.id).unlink(missing_ok=True)
        if f.swarm is not None:
            f.stats.update(f.swarm.stats)
        f.swarm = None
        self._save(f)
        self._emit_progress(f, force=True)

    def _emit_progress(self, f: _File, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - f.progress_at >= PROGRESS_EVERY:
            f.progress_at = now
            self._emit({"type": "channel_file_progress", "file": self.json(f)})

"""The file-transfer shell (:mod:`btchat.node.files`) on a pair of real sessions in memory:
a corrupting sender, a flood of offers, a size limit, disk full, names that collide."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import events, transfer
from test_session_core import established_pair

from btchat.errors import ApiError
from btchat.messaging import conversation as conv
from btchat.messaging import envelope as env_mod
from btchat.messaging.conversation import Conversations
from btchat.messaging.store import Store
from btchat.node import files as files_mod
from btchat.node.files import MAX_PENDING_OFFERS, Files, FilesConfig
from btchat.session.core import Session, SessionConfig
from btchat.stream.events import StreamsAvailable
from btchat.transfer.manifest import MAX_INLINE, Manifest
from btchat.transfer.tree import PieceHasher


class FakeConn:
    """:class:`SessionConnection`'s substream calls on a bare session core (now = 0)."""

    def __init__(self, core: Session) -> None:
        self.core = core

    def open_stream(self, priority: int, service: int = 0) -> int:
        return self.core.open_stream(priority, 0.0, service)

    def send_stream(self, sid: int, data: bytes) -> int:
        return self.core.send_stream(sid, data, 0.0)

    def stream_consumed(self, sid: int, n: int) -> None:
        self.core.stream_consumed(sid, n, 0.0)

    def reset_stream(self, sid: int, reason: str) -> None:
        self.core.reset_stream(sid, reason, 0.0)


@dataclass
class Side:
    files: Files
    conversations: Conversations
    conn: FakeConn
    key: tuple[bytes, bytes]  # the peer as this side's peering names it
    events: list[dict[str, Any]] = field(default_factory=list)


class Pair:
    def __init__(self, tmp: Path) -> None:
        a, b, alice, bob = established_pair(SessionConfig(substreams=True))
        self.a = self._side(tmp / "alice", alice, bob, a)
        self.b = self._side(tmp / "bob", bob, alice, b)
        now = time.time()
        for x in (self.a, self.b):
            other = self.b if x is self.a else self.a
            x.files.store.add_contact(other.conversations.me, "peer", int(now * 1000))
            x.conversations.session_up(other.conversations.me, now)
        self.drive()
        for x in (self.a, self.b):
            x.files.on_stream(x.key, x.conn, StreamsAvailable())  # type: ignore[arg-type]
        while self.step():  # nothing is written yet: no thread to wait for
            pass

    def _side(self, root: Path, me: Any, them: Any, core: Session) -> Side:
        store = Store.open(root / "db", None)
        conversations = Conversations(me.identity, me.cert.device_id, store)
        side: Side
        files = Files(
            FilesConfig(save_dir=root / "files", state_dir=root / "transfers", window=4),
            store,
            conversations,
            resolve=lambda c: them.identity.public_key,
            drive=lambda: self.drive(),
            emit=lambda e: side.events.append(e),
        )
        side = Side(
            files, conversations, FakeConn(core), (them.identity.public_key, them.cert.device_id)
        )
        return side

    def drive(self) -> None:
        """Carry envelopes between the conversation cores (the chat shell's job)."""
        busy = True
        while busy:
            busy = False
            for x, y in ((self.a, self.b), (self.b, self.a)):
                while (e := x.conversations.next_event()) is not None:
                    if isinstance(e, conv.Transmit):
                        busy = True
                        y.conversations.receive(
                            x.conversations.me,
                            x.conversations.device_id,
                            e.data,
                            time.time(),
                        )
                    elif isinstance(e, conv.FileOffered):
                        x.files.on_offer(e.peer, e.envelope)

    def step(self) -> bool:
        """Move session bytes and hand substream events to the shells; False if quiet."""
        moved = transfer(self.a.conn.core, self.b.conn.core)
        handled = 0
        for x in (self.a, self.b):
            for event in events(x.conn.core):
                handled += 1
                x.files.on_stream(x.key, x.conn, event)  # type: ignore[arg-type]
        return bool(moved or handled)

    async def pump(self) -> None:
        """Step until quiet, pieces checked and written on the writer's thread included."""
        while True:
            busy = self.step()
            for x in (self.a, self.b):
                busy = await x.files.settled() or busy
            if not busy:
                return


def transfer_json(side: Side, tid: str) -> dict[str, Any]:
    return next(
        t for t in [side.files.json(t) for t in side.files.transfers.values()] if t["id"] == tid
    )


async def offered(pair: Pair, src: Path) -> str:
    sent = await pair.a.files.send("bob", str(src))
    pair.drive()
    assert transfer_json(pair.b, sent["id"])["state"] == "offered"
    return sent["id"]


async def test_a_corrupted_piece_is_refused_and_fetched_again(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5 * 256 * 1024 + 77))
    tid = await offered(pair, src)
    real_read = pair.a.files._read
    corrupted: list[int] = []

    def lying_read(t: Any, index: int) -> bytes | None:
        data = real_read(t, index)
        if index == 2 and not corrupted and data is not None:
            corrupted.append(index)
            return data[:-1] + bytes([data[-1] ^ 0xFF])  # the piece's last byte flipped
        return data

    pair.a.files._read = lying_read  # type: ignore[method-assign]
    await pair.b.files.act(tid, "accept")
    await pair.pump()
    t = transfer_json(pair.b, tid)
    assert t["state"] == "done", t
    assert t["stats"]["bad"] == 1 and t["stats"]["verified"] == t["pieces"]
    assert Path(t["path"]).read_bytes() == src.read_bytes()
    assert transfer_json(pair.a, tid)["state"] == "done"
    served = pair.a.files.transfers[bytes.fromhex(tid)].served
    assert served == t["pieces"] + 1  # every piece once, the corrupted one twice
    # The same name again is saved beside it, never over it.
    tid2 = await offered(pair, src)
    await pair.b.files.act(tid2, "accept")
    await pair.pump()
    assert Path(transfer_json(pair.b, tid2)["path"]).name == "data (2).bin"


def crafted_offer(pair: Pair, size: int, name: bytes = b"x.bin") -> env_mod.Envelope:
    body = Manifest("x", size, "application/octet-stream", 262144, os.urandom(32)).body()
    body[b"n"] = name
    return env_mod.create(
        pair.a.conversations.identity,
        pair.a.conversations.device_id,
        pair.b.conversations.me,
        env_mod.FILE,
        body,
        lamport=1,
        now=time.time(),
    )


def test_a_flood_of_offers_is_refused_beyond_the_bound(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    alice = pair.a.conversations.me
    for _ in range(MAX_PENDING_OFFERS + 4):
        pair.b.files.on_offer(alice, crafted_offer(pair, 1000))
    states = [t.state for t in pair.b.files.transfers.values()]
    assert states.count("offered") == MAX_PENDING_OFFERS and states.count("refused") == 4
    assert pair.b.files.stats["offers_refused"] == 4
    offers = [e for e in pair.b.events if e["type"] == "file_offer"]
    assert offers[-1]["transfer"]["error"] == "too many offers waiting from this contact"


async def test_an_offer_above_the_contacts_limit_is_refused_and_the_sender_told(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path)
    await pair.b.files.set_limit("alice", 1000)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(50000))  # above MAX_INLINE: a normal offer
    sent = await pair.a.files.send("bob", str(src))
    pair.drive()
    await pair.pump()
    got = transfer_json(pair.b, sent["id"])
    assert got["state"] == "refused" and "limit" in got["error"]
    assert transfer_json(pair.a, sent["id"])["state"] == "cancelled"
    with pytest.raises(ApiError):
        await pair.b.files.act(sent["id"], "accept")


async def test_disk_full_before_and_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(40 * 256 * 1024))
    tid = await offered(pair, src)
    free: list[int] = [0]
    real = files_mod.shutil.disk_usage

    def usage(path: Any) -> Any:
        u = real(path)
        return type(u)(u.total, u.used, free[0])

    monkeypatch.setattr(files_mod.shutil, "disk_usage", usage)
    with pytest.raises(ApiError) as err:
        await pair.b.files.act(tid, "accept")
    assert err.value.status == 507
    assert transfer_json(pair.b, tid)["state"] == "offered"
    free[0] = 10 * 1024**3
    monkeypatch.setattr(files_mod, "DISK_CHECK_EVERY", 1)  # check at every piece
    await pair.b.files.act(tid, "accept")
    # Room for the layer and a few pieces only: the download pauses, saying why.
    pieces_done: list[int] = []
    full: list[bool] = []
    real_write = pair.b.files._write

    def write(t: Any, d: Any, index: int, data: bytes) -> None:
        if len(pieces_done) == 3 and not full:
            full.append(True)  # the disk fills up once
            free[0] = 1024
        if not full:
            pieces_done.append(index)
        real_write(t, d, index, data)

    pair.b.files._write = write  # type: ignore[method-assign]
    await pair.pump()
    t = transfer_json(pair.b, tid)
    assert t["state"] == "paused" and t["error"] == "disk_full" and t["have"] == 3
    assert not (tmp_path / "bob" / "files" / "data.bin").exists()
    free[0] = 10 * 1024**3
    await pair.b.files.act(tid, "resume")
    await pair.pump()
    t = transfer_json(pair.b, tid)
    assert t["state"] == "done" and t["stats"]["verified"] == t["pieces"]
    assert (
        hashlib.sha256(Path(t["path"]).read_bytes()).digest()
        == hashlib.sha256(src.read_bytes()).digest()
    )


async def test_reject_and_cancel_reach_the_other_side(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    src = tmp_path / "a.txt"
    src.write_bytes(os.urandom(MAX_INLINE + 1))
    tid = await offered(pair, src)
    await pair.b.files.act(tid, "reject")
    await pair.pump()
    assert transfer_json(pair.a, tid)["state"] == "rejected"
    tid = await offered(pair, src)
    await pair.a.files.act(tid, "cancel")
    await pair.pump()
    assert transfer_json(pair.b, tid)["state"] == "cancelled"


async def test_the_empty_file(tmp_path: Path) -> None:
    """Inline, like every small file: it arrives done, nothing to accept."""
    pair = Pair(tmp_path)
    src = tmp_path / "empty"
    src.write_bytes(b"")
    sent = await pair.a.files.send("bob", str(src))
    pair.drive()
    t = transfer_json(pair.b, sent["id"])
    assert t["state"] == "done" and t["inline"] and Path(t["path"]).read_bytes() == b""


def test_piece_hasher_matches_what_send_offers(tmp_path: Path) -> None:
    data = os.urandom(300000)
    (tmp_path / "f").write_bytes(data)
    h = files_mod.hash_file(tmp_path / "f", len(data), 262144)
    ref = PieceHasher(len(data), 262144)
    ref.update(data)
    assert h.root() == ref.root()


async def test_pause_and_resume_on_either_side(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(20 * 256 * 1024))
    tid = await offered(pair, src)
    await pair.b.files.act(tid, "accept")
    await pair.b.files.act(tid, "pause")
    await pair.pump()
    t = transfer_json(pair.b, tid)
    assert t["state"] == "paused" and t["have"] == 0  # the layer came; no piece was asked
    await pair.b.files.act(tid, "resume")
    await pair.pump()
    assert transfer_json(pair.b, tid)["state"] == "done"

    tid = await offered(pair, src)
    await pair.a.files.act(tid, "pause")  # the sender holds what it is asked
    await pair.b.files.act(tid, "accept")
    await pair.pump()
    assert transfer_json(pair.b, tid)["have"] == 0
    await pair.a.files.act(tid, "resume")
    await pair.pump()
    t = transfer_json(pair.b, tid)
    assert t["state"] == "done" and Path(t["path"]).read_bytes() == src.read_bytes()


def test_the_save_folder_setting_comes_from_flag_env_or_file(tmp_path: Path) -> None:
    from btchat.node.config import resolve

    conf = tmp_path / "config.toml"
    conf.write_text('[dht]\nbootstrap = ["h:1"]\n[files]\ndir = "/srv/inbox"\n')
    base = {"data_dir": tmp_path}
    assert resolve(base, config_file=conf, environ={}).files_dir == Path("/srv/inbox")
    env = {"BTCHAT_FILES_DIR": str(tmp_path / "env")}
    assert resolve(base, config_file=conf, environ=env).files_dir == tmp_path / "env"
    flag = {**base, "files_dir": tmp_path / "flag"}
    assert resolve(flag, config_file=conf, environ=env).files_dir == tmp_path / "flag"


async def test_a_malformed_or_extra_stream_is_refused_and_transfers_go_on(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    link = pair.b.files._links[pair.b.key]
    pair.b.conn.send_stream(link.bulk, b"\xff\xff\xff\xff")  # a length beyond any message
    await pair.pump()
    assert pair.a.files.stats["rx_malformed"] == 1
    extra = pair.b.conn.open_stream(7)  # a third stream is not the protocol
    pair.b.conn.send_stream(extra, b"x")
    await pair.pump()
    assert pair.a.files.stats["rx_bad_stream"] == 1
    # Bob's refused stream was replaced: a file from Bob to Alice still arrives.
    src = tmp_path / "back.bin"
    src.write_bytes(os.urandom(3 * 256 * 1024))
    sent = await pair.b.files.send("alice", str(src))
    pair.drive()
    await pair.a.files.act(sent["id"], "accept")
    await pair.pump()
    t = transfer_json(pair.a, sent["id"])
    assert t["state"] == "done" and Path(t["path"]).read_bytes() == src.read_bytes()


async def chunks_of(data: bytes, step: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def test_an_upload_is_offered_under_its_name_and_its_copy_goes_when_done(
    tmp_path: Path,
) -> None:
    """The web app's path: bytes streamed in, copied, offered under the name it gave."""
    pair = Pair(tmp_path)
    data = os.urandom(70000)
    sent = await pair.a.files.upload("bob", "../holiday <1>.png", len(data), chunks_of(data))
    assert sent["name"] == "holiday 1.png" and sent["media_type"] == "image/png"
    copy = Path(sent["path"])
    assert copy.parent == tmp_path / "alice" / "transfers" / "uploads"
    assert copy.read_bytes() == data
    pair.drive()
    await pair.b.files.act(sent["id"], "accept")
    await pair.pump()
    got = transfer_json(pair.b, sent["id"])
    assert got["state"] == "done" and Path(got["path"]).read_bytes() == data
    assert transfer_json(pair.a, sent["id"])["state"] == "done"
    assert not copy.exists()  # nothing serves it any more
    # A body shorter or longer than announced leaves no offer and no copy behind.
    for size in (len(data) + 1, len(data) - 1):
        with pytest.raises(ApiError) as err:
            await pair.a.files.upload("bob", "x.bin", size, chunks_of(data))
        assert err.value.code == "bad_length"
    assert list(copy.parent.iterdir()) == []
    with pytest.raises(ApiError) as err:
        await pair.a.files.upload("bob", "x.bin", 2**40, chunks_of(b""))
    assert err.value.code == "too_large"


async def test_a_rejected_upload_drops_its_copy(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    data = os.urandom(MAX_INLINE + 1)
    sent = await pair.a.files.upload("bob", "a.txt", len(data), chunks_of(data))
    pair.drive()
    await pair.b.files.act(sent["id"], "reject")
    await pair.pump()
    assert transfer_json(pair.a, sent["id"])["state"] == "rejected"
    assert not Path(sent["path"]).exists()


async def test_an_uploads_long_name_is_cut_keeping_its_extension(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sent = await pair.a.files.upload("bob", "é" * 600 + ".tar.gz", 2, chunks_of(b"ok"))
    assert len(sent["name"].encode()) <= 255 and sent["name"].endswith(".gz")

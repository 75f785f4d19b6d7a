"""Small files inline (:mod:`btchat.node.files`, PROTOCOL.md "Files (1:1)", "Inline
files"): the bytes travel in the offer, are checked against its root, saved as the
message is stored (so before it is acknowledged), bounded per contact and in all, and a
copy that comes twice (session, mailbox, a friend) is saved once."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_node_files import Pair, chunks_of, transfer_json

from btchat.codec.bencode import decode, encode
from btchat.messaging import envelope as env_mod
from btchat.messaging.envelope import Envelope, EnvelopeError
from btchat.node import files as files_mod
from btchat.offline.inbox import drain_inbox
from btchat.offline.state import MailboxState, RatchetPickles
from btchat.storage.database import StoreFull
from btchat.transfer.manifest import MAX_INLINE, Manifest


def saved(pair: Pair) -> list[Path]:
    folder = pair.b.files.config.save_dir
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def alice_pk(pair: Pair) -> bytes:
    return pair.a.conversations.me


def signed(pair: Pair, body: dict[bytes, Any]) -> bytes:
    """A ``file`` envelope from Alice to Bob, validly signed whatever its body says
    (``create`` refuses a bad body, a hostile client need not)."""
    a = pair.a.conversations
    unsigned = Envelope(
        version=1,
        id=os.urandom(16),
        sender=a.me,
        device=a.device_id,
        recipient=pair.b.conversations.me,
        ts_ms=int(time.time() * 1000),
        lamport=1,
        type=env_mod.FILE,
        body=decode(encode(body)),
        nonce=os.urandom(16),
        signature=bytes(64),
    )
    sig = a.identity.sign(unsigned.signed_bytes())
    return env_mod.encode_envelope(dataclasses.replace(unsigned, signature=sig))


async def quietly_send(pair: Pair, src: Path) -> dict[str, Any]:
    """Alice's send, its envelope left in her conversation core for the test to carry."""
    drive, pair.a.files._drive = pair.a.files._drive, lambda: None
    try:
        return await pair.a.files.send("bob", str(src))
    finally:
        pair.a.files._drive = drive


def inline_body(data: bytes, *, root: bytes | None = None, size: int | None = None) -> Any:
    manifest = Manifest(
        "x.bin",
        len(data) if size is None else size,
        "application/octet-stream",
        262144,
        hashlib.sha256(data).digest() if root is None else root,
    )
    return env_mod.file_body(manifest, data)


async def test_a_small_file_arrives_without_asking(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    data = os.urandom(5000)
    src = tmp_path / "cat.png"
    src.write_bytes(data)
    sent = await pair.a.files.send("bob", str(src))
    assert sent["state"] == "done" and sent["inline"] and sent["pieces"] == 1
    pair.drive()  # envelopes only: no substream is pumped
    got = transfer_json(pair.b, sent["id"])
    assert got["state"] == "done" and got["inline"] and got["media_type"] == "image/png"
    assert got["root"] == hashlib.sha256(data).hexdigest() == sent["root"]  # one leaf
    assert Path(got["path"]) == pair.b.files.config.save_dir / "cat.png"
    assert Path(got["path"]).read_bytes() == data
    kinds = [e["type"] for e in pair.b.events]
    assert kinds == ["file_offer", "file_done"]
    # A message of the history on both sides, delivered like a text.
    assert pair.b.files.store.get_message(bytes.fromhex(sent["id"])) is not None
    row = pair.a.files.store.get_message(bytes.fromhex(sent["id"]))
    assert row is not None and row.state == "delivered"
    # Kept after a restart, as every transfer.
    again = files_mod.Files(
        pair.b.files.config,
        pair.b.files.store,
        pair.b.conversations,
        resolve=lambda c: b"",
        drive=lambda: None,
        emit=lambda e: None,
    )
    assert again.json(again.transfers[bytes.fromhex(sent["id"])])["state"] == "done"


async def test_the_size_decides_inline_or_substream(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    for size, inline in ((MAX_INLINE, True), (MAX_INLINE + 1, False)):
        src = tmp_path / f"f{size}"
        src.write_bytes(os.urandom(size))
        sent = await pair.a.files.send("bob", str(src))
        pair.drive()
        got = transfer_json(pair.b, sent["id"])
        assert (got["inline"], got["state"]) == (inline, "done" if inline else "offered")


async def test_an_upload_that_goes_inline_keeps_no_copy(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sent = await pair.a.files.upload("bob", "note.txt", 5, chunks_of(b"hello"))
    assert sent["state"] == "done" and sent["path"] is None
    assert list((tmp_path / "alice" / "transfers" / "uploads").iterdir()) == []
    pair.drive()
    got = transfer_json(pair.b, sent["id"])
    assert got["media_type"] == "text/plain" and Path(got["path"]).read_bytes() == b"hello"


def test_bad_inline_bodies_are_refused_by_the_parse() -> None:
    data = os.urandom(1000)
    identity_free = [
        (inline_body(data, root=bytes(32)), "do not match the root"),
        (inline_body(data, size=999), "exactly the size"),
        (inline_body(os.urandom(MAX_INLINE + 1)), f"at most {MAX_INLINE}"),
    ]
    for body, why in identity_free:
        with pytest.raises(EnvelopeError) as info:
            env_mod._check_file(body)
        assert info.value.code == "bad_body" and why in info.value.message


async def test_a_tampered_or_oversized_inline_file_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pair = Pair(tmp_path)
    data = os.urandom(3000)
    bad = [
        signed(pair, inline_body(data, root=hashlib.sha256(b"other").digest())),
        signed(pair, inline_body(os.urandom(MAX_INLINE + 1))),
    ]
    good = signed(pair, inline_body(data))
    flipped = bytearray(good)
    flipped[good.index(data[100:132]) + 5] ^= 1  # a byte of the file changed on the way
    bad.append(bytes(flipped))
    a = pair.a.conversations
    for wire in bad:
        pair.b.conversations.receive(a.me, a.device_id, wire, time.time())
    assert pair.b.conversations.stats["refused"] == 3
    assert "refused an envelope" in caplog.text and "do not match the root" in caplog.text
    assert pair.b.files.transfers == {} and saved(pair) == []
    pair.b.conversations.receive(a.me, a.device_id, good, time.time())
    assert [p.read_bytes() for p in saved(pair)] == [data]


async def test_the_contacts_limit_applies_to_inline_files(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    await pair.b.files.set_limit("alice", 1000)
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(5000))
    sent = await pair.a.files.send("bob", str(src))
    pair.drive()
    got = transfer_json(pair.b, sent["id"])
    assert got["state"] == "refused" and "limit" in got["error"] and got["path"] is None
    assert saved(pair) == []
    assert pair.b.files.store.get_message(bytes.fromhex(sent["id"])) is not None  # shown


async def test_a_flood_of_inline_files_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pair = Pair(tmp_path)
    cfg = pair.b.files.config
    pair.b.files.config = dataclasses.replace(cfg, inline_files=5, inline_bytes=10**9)
    src = tmp_path / "s.txt"
    src.write_bytes(b"spam")
    for _ in range(8):
        await pair.a.files.send("bob", str(src))
        pair.drive()
    assert len(saved(pair)) == 5 and len(pair.b.files.transfers) == 5
    assert pair.b.files.stats["inline_over_bound"] == 3
    assert "over the day's bound of inline files from this contact" in caplog.text
    # Bytes count too, and the bound of all contacts together.
    pair.b.files.config = dataclasses.replace(cfg, inline_bytes=5 * 4 + 8000)
    src.write_bytes(os.urandom(5000))
    for _ in range(3):
        await pair.a.files.send("bob", str(src))
        pair.drive()
    assert len(saved(pair)) == 6 and pair.b.files.stats["inline_over_bound"] == 5
    pair.b.files.config = dataclasses.replace(cfg, inline_total_files=7)
    for _ in range(3):
        await pair.a.files.send("bob", str(src))
        pair.drive()
    assert len(saved(pair)) == 7 and "from all contacts" in caplog.text
    # A day later the window has moved on.
    for t in pair.b.files.transfers.values():
        t.created -= files_mod.INLINE_WINDOW + 1
    await pair.a.files.send("bob", str(src))
    pair.drive()
    assert len(saved(pair)) == 8


async def test_a_copy_by_session_and_by_mailbox_is_saved_once(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    src = tmp_path / "voice.ogg"
    src.write_bytes(os.urandom(9000))
    sent = await quietly_send(pair, src)
    (wire,) = pair.a.files.store.pending_outbox(pair.b.conversations.me)
    pair.drive()  # by session
    a = pair.a.conversations
    pair.b.conversations.receive(a.me, a.device_id, wire, time.time())  # a resend
    # The same envelope out of the DHT mailbox (or a friend's backup): the inbox path.
    state = MailboxState(pair.b.files.store)
    state.receive(a.me, 7, wire, RatchetPickles(), int(time.time() * 1000))
    out = drain_inbox(state, pair.b.files.store, pair.b.conversations.me, time.time())
    assert [fresh for _, fresh in out] == [False]
    assert len(saved(pair)) == 1 and len(pair.b.files.transfers) == 1
    assert transfer_json(pair.b, sent["id"])["state"] == "done"


async def test_a_mailbox_copy_first_is_saved_through_the_inbox(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    data = os.urandom(12000)
    body = inline_body(data)
    env = pair.a.conversations.envelope(pair.b.conversations.me, env_mod.FILE, body, time.time())
    state = MailboxState(pair.b.files.store)
    state.receive(alice_pk(pair), 1, env_mod.encode_envelope(env), RatchetPickles(), 0)
    out = drain_inbox(state, pair.b.files.store, pair.b.conversations.me, time.time())
    assert [fresh for _, fresh in out] == [True]
    assert [p.read_bytes() for p in saved(pair)] == [data]
    assert transfer_json(pair.b, env.id.hex())["state"] == "done"


async def test_a_full_disk_leaves_the_message_unacknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path)
    free = [0]
    real = files_mod.shutil.disk_usage

    def usage(path: Any) -> Any:
        u = real(path)
        return type(u)(u.total, u.used, free[0])

    monkeypatch.setattr(files_mod.shutil, "disk_usage", usage)
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(4000))
    sent = await quietly_send(pair, src)
    with pytest.raises(StoreFull):
        pair.drive()
    tid = bytes.fromhex(sent["id"])
    assert pair.b.files.store.get_message(tid) is None  # nothing stored, nothing acked
    assert saved(pair) == [] and pair.b.files.transfers == {}
    (wire,) = pair.a.files.store.pending_outbox(pair.b.conversations.me)
    # Through the inbox too: it stays there, decrypted, until there is room.
    state = MailboxState(pair.b.files.store)
    state.receive(alice_pk(pair), 1, wire, RatchetPickles(), 0)
    with pytest.raises(StoreFull):
        drain_inbox(state, pair.b.files.store, pair.b.conversations.me, time.time())
    assert len(state.inbox()) == 1
    free[0] = 10 * 1024**3
    out = drain_inbox(state, pair.b.files.store, pair.b.conversations.me, time.time())
    assert [fresh for _, fresh in out] == [True] and state.inbox() == []
    assert len(saved(pair)) == 1 and transfer_json(pair.b, sent["id"])["state"] == "done"
    a = pair.a.conversations
    pair.b.conversations.receive(a.me, a.device_id, wire, time.time())  # the resend: once
    pair.drive()
    assert len(saved(pair)) == 1

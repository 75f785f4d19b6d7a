"""docs/schemas/offline.schema.json and channel.schema.json describe what the code writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_messaging_schema import as_json

from btchat.codec.bencode import decode
from btchat.identity.keys import Identity
from btchat.identity.rendezvous import pairwise_secret
from btchat.messaging.store import Store
from btchat.offline import packet as pk
from btchat.offline.ratchet import Ratchet
from btchat.offline.state import MailboxState
from btchat.sansio import drain_events

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(
    (Path(__file__).parent.parent / "docs" / "schemas" / "offline.schema.json").read_text()
)
ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)


def check(name: str, value: Any) -> None:
    schema = {**SCHEMA, "$ref": f"#/$defs/{name}"}
    jsonschema.Draft202012Validator(schema).validate(as_json(value))


def refuses(name: str, value: Any) -> bool:
    schema = {**SCHEMA, "$ref": f"#/$defs/{name}"}
    return not jsonschema.Draft202012Validator(schema).is_valid(as_json(value))


def test_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_packet_chunks_head_and_sealed_items(tmp_path: Path) -> None:
    packet = pk.OfflinePacket.create(ALICE, BOB.public_key, 7, 10**12, b"k" * 32, 0, b"x" * 2000)
    wire = decode(packet.encode())
    check("packet", wire)
    assert refuses("packet", {**wire, b"m": 2})
    assert refuses("packet", {**wire, b"extra": 1})
    chunks = pk.split_chunks(packet.encode())
    assert len(chunks) == 3
    for chunk in chunks:
        check("chunk", chunk)
    head = pk.Head(3, 9, 4).payload()
    check("head", head)
    secret = pairwise_secret(ALICE, BOB.public_key)
    slot = pk.head_slot(secret, ALICE.public_key, BOB.public_key, 20000)
    check("sealed_item", decode(pk.seal_item(slot, head)))


def test_packet_v2() -> None:
    _, ciphertext = pk.seal_envelope(b"an envelope")
    wraps = [(bytes([i]) * 16, i % 2, b"w" * 200) for i in range(pk.MAX_WRAPS)]
    packet = pk.OfflinePacket.create_v2(
        ALICE, BOB.public_key, 7, 10**12, b"k" * 32, wraps, ciphertext
    )
    wire = decode(packet.encode())
    check("packet_v2", wire)
    assert refuses("packet", wire)  # a v1 reader's schema does not take it
    assert refuses("packet_v2", {**wire, b"w": wire[b"w"] + [[b"d" * 16, 0, b"w"]]})
    assert refuses("packet_v2", {**wire, b"w": [[b"d" * 15, 0, b"w"]]})
    assert refuses("packet_v2", {**wire, b"m": 0})


def test_prekey_bundle(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db", None) as store:
        bundle = Ratchet(ALICE, MailboxState(store)).bundle(0)
        check("prekey_bundle", decode(bundle.encode()))
        olm_key, one_time = Ratchet(ALICE, MailboxState(store)).one_time_key()
        check("prekey_body", {b"k": olm_key, b"o": one_time})


CHANNEL_SCHEMA = json.loads(
    (Path(__file__).parent.parent / "docs" / "schemas" / "channel.schema.json").read_text()
)


def check_channel(name: str, value: Any) -> None:
    schema = {**CHANNEL_SCHEMA, "$ref": f"#/$defs/{name}"}
    jsonschema.Draft202012Validator(schema).validate(as_json(value))


def test_channel_messages_and_link_payloads_match_their_schema(tmp_path: Path) -> None:
    import time

    from btchat.channels.chatfile import ChatFile
    from btchat.channels.engine import ChannelEngine, Send
    from btchat.channels.messages import ChannelMessage
    from btchat.channels.store import ChannelStore

    jsonschema.Draft202012Validator.check_schema(CHANNEL_SCHEMA)
    chat = ChatFile.create("schema", now=time.time())
    engines = []
    for name, ident in (("a", ALICE), ("b", BOB)):
        store = ChannelStore(Store.open(tmp_path / f"{name}.db", None))
        store.add_channel(chat.channel_id, chat.to_bytes(), 0)
        engines.append(ChannelEngine(chat, ident, store, listen_port=4000, now=0.0))
    a, b = engines
    a.link_up(BOB.public_key, "127.0.0.1", 0.0)
    b.link_up(ALICE.public_key, "127.0.0.1", 0.0)
    a.post("hello", 1.0)
    a.post("private", 2.0, to=[BOB.public_key])
    a.handle_timer(100.0)
    kinds = set()
    for event in drain_events(a):
        if not isinstance(event, Send):
            continue
        payload = decode(event.payload)
        check_channel("payload", payload)
        kinds.add(payload[b"t"])
        if payload[b"t"] == b"msg":
            check_channel("message", decode(payload[b"m"]))
            ChannelMessage.parse(payload[b"m"], chat.channel_id)
    assert {b"hello", b"msg", b"have"} <= kinds

"""What the node actually sends and answers validates against docs/schemas/krpc.schema.json."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from btchat.codec.bencode import decode, encode
from btchat.dht import bep44
from btchat.dht.ids import NodeInfo
from btchat.dht.node import DhtNode, NodeConfig

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(
    (Path(__file__).parent.parent / "docs" / "schemas" / "krpc.schema.json").read_text()
)


def as_json(value: Any) -> Any:
    """The schema's mapping: byte strings become latin-1 text, one char per byte."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k.decode("latin-1"): as_json(v) for k, v in value.items()}
    return value


def check(datagram: bytes) -> dict[str, Any]:
    msg = as_json(decode(datagram))
    jsonschema.validate(msg, SCHEMA)
    return msg


def test_every_message_the_node_sends_matches_the_schema() -> None:
    a = DhtNode(NodeConfig(), rng=random.Random(1))
    b = DhtNode(NodeConfig(), rng=random.Random(2))
    addr_a, addr_b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    a.routing.heard_from(
        NodeInfo(b.node_id, addr_b),
        0.0,
        responded=True,
    )
    key = Ed25519PrivateKey.generate()
    item = bep44.sign_mutable(key, encode(b"hi"), 1, b"salt")
    a.ping(addr_b, 0.0)
    a.find_node(b"\x02" * 20, 0.0)
    a.get_peers(b"\x03" * 20, 0.0)
    a.announce(b"\x03" * 20, 6881, 0.0)
    a.get_immutable(b"\x04" * 20, 0.0)
    a.put_immutable(encode(b"x"), 0.0)
    a.put_mutable(item, 0.0)
    seen: set[str] = set()
    for _ in range(6):  # a few round trips: lookups, then the announce/put phase
        for data, _ in a.datagrams_to_send():
            msg = check(data)
            seen.add(msg["q"])
            b.receive_datagram(data, addr_a, 0.0)
        for data, _ in b.datagrams_to_send():
            reply = check(data)
            seen.add("y=" + reply["y"])
            a.receive_datagram(data, addr_b, 0.0)
    assert {"ping", "find_node", "get_peers", "announce_peer", "get", "put", "y=r"} <= seen
    # An error reply and a mutable get answer too.
    b.receive_datagram(
        encode({b"t": b"1", b"y": b"q", b"q": b"nope", b"a": {b"id": b"x" * 20}}), addr_a, 0.0
    )
    b.receive_datagram(
        encode(
            {b"t": b"2", b"y": b"q", b"q": b"get", b"a": {b"id": b"x" * 20, b"target": item.target}}
        ),
        addr_a,
        0.0,
    )
    err, got = (check(d) for d, _ in b.datagrams_to_send())
    assert err["y"] == "e" and err["e"][0] == 204
    assert got["r"]["seq"] == 1 and len(got["r"]["sig"]) == 64


def test_schema_rejects_what_the_node_rejects() -> None:
    bad = {"t": "aa", "y": "q", "q": "find_node", "a": {"id": "x" * 20}}  # no target
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = {"t": "aa", "y": "q", "q": "ping", "a": {"id": "short"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)

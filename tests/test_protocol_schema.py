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


@pytest.mark.parametrize(
    ("config", "host"),
    [(NodeConfig(), "127.0.0.1"), (NodeConfig(ipv6=True), "::1")],
    ids=["ipv4", "dual-stack over ipv6"],  # BEP 32: want, nodes6, 18-byte ip
)
def test_every_message_the_node_sends_matches_the_schema(config: NodeConfig, host: str) -> None:
    a = DhtNode(config, rng=random.Random(1))
    b = DhtNode(config, rng=random.Random(2))
    addr_a, addr_b = (host, 1), (host, 2)
    a.tables[6 if ":" in host else 4].heard_from(
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
            seen.update(k for k in ("want",) if k in msg["a"])
            b.receive_datagram(data, addr_a, 0.0)
        for data, _ in b.datagrams_to_send():
            reply = check(data)
            seen.add("y=" + reply["y"])
            seen.update(k for k in ("nodes6",) if k in reply.get("r", {}))
            a.receive_datagram(data, addr_b, 0.0)
    assert {"ping", "find_node", "get_peers", "announce_peer", "get", "put", "y=r"} <= seen
    if config.ipv6:
        assert {"want", "nodes6"} <= seen
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
    bad = {"t": "aa", "y": "q", "q": "find_node", "a": {"id": "x" * 20, "target": "y" * 20}}
    jsonschema.validate({**bad, "a": {**bad["a"], "want": ["n4", "n6"]}}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # BEP 32: want is a list
        jsonschema.validate({**bad, "a": {**bad["a"], "want": "n6"}}, SCHEMA)
    bad = {"t": "aa", "y": "q", "q": "find_node", "a": {"id": "x" * 20}}  # no target
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = {"t": "aa", "y": "q", "q": "ping", "a": {"id": "short"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)

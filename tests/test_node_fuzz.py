"""Hostile input to a whole node: whatever arrives, nothing raises and replies stay valid.

"If this raises anything, that's a bug": mutated and structurally random KRPC messages
of every method are fed to a node that has state (contacts, peers, items, pending
queries), and every datagram it sends back must parse as KRPC.
"""

from __future__ import annotations

import random
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btchat.codec.bencode import decode, encode
from btchat.dht import bep44
from btchat.dht.ids import NodeInfo
from btchat.dht.krpc import parse_message
from btchat.dht.node import DhtNode, NodeConfig

SRC = ("127.0.0.1", 4000)
SRC6 = ("::1", 4000)
KEY = Ed25519PrivateKey.generate()
ITEM = bep44.sign_mutable(KEY, encode(b"v"), 1, b"s")


def stateful_node() -> DhtNode:
    """Dual-stack (BEP 32), so hostile ``want``, ``nodes6`` and IPv6 values reach it too."""
    node = DhtNode(NodeConfig(rate_limit=1e9, rate_burst=1e9, ipv6=True), rng=random.Random(1))
    rng = random.Random(2)
    for i in range(40):
        for family, host in ((4, "127.0.0.1"), (6, "::1")):
            node.tables[family].heard_from(
                NodeInfo(rng.randbytes(20), (host, 5000 + i)), 0.0, responded=True
            )
    node.peers.add(b"I" * 20, ("127.0.0.1", 6000), 0.0)
    node.items.put_mutable(ITEM, 0.0)
    node.get_peers(b"I" * 20, 0.0)  # pending queries whose replies could be forged
    node.datagrams_to_send()
    return node


TOKEN_NODE = stateful_node()
SEEDS: list[dict[bytes, Any]] = [
    {b"q": b"ping", b"a": {}},
    {b"q": b"find_node", b"a": {b"target": b"T" * 20}},
    {b"q": b"get_peers", b"a": {b"info_hash": b"I" * 20}},
    {
        b"q": b"announce_peer",
        b"a": {
            b"info_hash": b"I" * 20,
            b"port": 1,
            b"token": TOKEN_NODE.tokens.token_for(SRC[0], 0.0, b"I" * 20),
            b"implied_port": 1,
        },
    },
    {b"q": b"get", b"a": {b"target": ITEM.target, b"seq": 0}},
    {
        b"q": b"put",
        b"a": {
            b"v": b"x",
            b"token": TOKEN_NODE.tokens.token_for(SRC[0], 0.0, bep44.immutable_target(b"1:x")),
        },
    },
    {
        b"q": b"put",
        b"a": {
            b"k": ITEM.public_key,
            b"seq": 2,
            b"sig": ITEM.signature,
            b"salt": b"s",
            b"v": b"v",
            b"cas": 1,
            b"token": TOKEN_NODE.tokens.token_for(
                SRC[0], 0.0, bep44.mutable_target(ITEM.public_key, b"s")
            ),
        },
    },
]

values = st.recursive(
    st.binary(max_size=40) | st.integers(-(2**70), 2**70),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.binary(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        b"id",
        b"target",
        b"info_hash",
        b"port",
        b"token",
        b"implied_port",
        b"v",
        b"k",
        b"seq",
        b"sig",
        b"salt",
        b"cas",
        b"ro",
        b"t",
        b"y",
        b"q",
        b"want",
        b"nodes",
        b"nodes6",
        b"values",
    ]
)


def check_outbox(node: DhtNode) -> None:
    for data, _ in node.datagrams_to_send():
        parse_message(data)  # raises if we ever emit something malformed


@settings(
    max_examples=600, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(keys, values), max_size=4),
    drop=st.lists(keys, max_size=2),
    top=st.lists(st.tuples(keys, values), max_size=2),
)
def test_mutated_queries_never_raise(
    seed: dict[bytes, Any],
    edits: list[tuple[bytes, Any]],
    drop: list[bytes],
    top: list[tuple[bytes, Any]],
) -> None:
    node = TOKEN_NODE
    args: dict[bytes, Any] = {b"id": b"Q" * 20, **seed[b"a"]}
    for k, v in edits:
        args[k] = v
    for k in drop:
        args.pop(k, None)
    msg: dict[bytes, Any] = {b"t": b"tt", b"y": b"q", b"q": seed[b"q"], b"a": args}
    for k, v in top:
        msg[k] = v
    for src in (SRC, SRC6):  # over IPv4 and over IPv6 (BEP 32 answers differ)
        node.receive_datagram(encode(msg), src, 1.0)
        check_outbox(node)


@settings(max_examples=400, derandomize=True, database=None)
@given(
    body=st.dictionaries(keys, values, max_size=6),
    kind=st.sampled_from([b"r", b"e"]),
    ip=st.binary(max_size=20),
)
def test_forged_responses_never_raise(body: dict[bytes, Any], kind: bytes, ip: bytes) -> None:
    node = stateful_node()
    sent = node.get_peers(b"J" * 20, 0.0)
    assert sent
    for data, addr in node.datagrams_to_send():
        tid = decode(data)[b"t"]
        payload: dict[bytes, Any] = {b"t": tid, b"y": kind, b"ip": ip}
        payload[b"r" if kind == b"r" else b"e"] = (
            {b"id": b"R" * 20, **body} if kind == b"r" else [body.get(b"t", 201), b"x"]
        )
        node.receive_datagram(encode(payload), addr, 0.5)
        check_outbox(node)
    node.handle_timer(10.0)
    check_outbox(node)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(blob: bytes) -> None:
    TOKEN_NODE.receive_datagram(blob, SRC, 2.0)
    check_outbox(TOKEN_NODE)

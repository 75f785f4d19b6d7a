"""The WebSocket events match the typed models that the OpenAPI document publishes.

The daemon still emits dicts; these tests hold those dicts to ``api/events.py``: the
shapes each emitter builds, the ``Event`` schema in the document, and every event two
real daemons stream while they befriend, chat, read, type, change presence and share a
channel (the flows of the e2e tests).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from test_messenger_e2e import BTCHAT, Person, sandbox, wait_for  # noqa: F401
from test_offline_e2e import pair  # noqa: F401

from btchat.api.client import ApiClient, read_api_files
from btchat.api.events import EVENT_MODELS, event_problem
from btchat.api.openapi import openapi_document
from btchat.api.server import ALL_ROUTES

PK = "ab" * 32
ID = "0f" * 16
CONTACT = {
    "id": "bt1example",
    "public_key": PK,
    "name": "bob",
    "verified": False,
    "blocked": False,
    "presence": "online",
    "last_seen": 1700000000000,
    "online": True,
    "profile": {"name": None, "status": None, "avatar": None},
    "retention_days": 2,
}
MESSAGE = {
    "id": ID,
    "peer": PK,
    "sender": PK,
    "direction": "in",
    "text": "hi",
    "state": "received",
    "ts": 1700000000500,
    "lamport": 3,
    "type": "text",
}

#: One event of each kind, shaped as its emitter (daemon, offline, channels) builds it.
SAMPLES: list[dict[str, Any]] = [
    {"type": "dht", "joined": True, "nodes": 12},
    {"type": "dht", "joined": False},
    {"type": "contact", "action": "added", "contact": CONTACT},
    {"type": "contact", "action": "removed", "public_key": PK},
    {"type": "contact", "action": "profile", "contact": CONTACT},
    {"type": "message", "message": MESSAGE},
    {"type": "request", "request": {"id": "r1", "direction": "in", "state": "pending"}},
    {"type": "session", "state": "up", "contact": CONTACT},
    {"type": "session", "state": "down", "reason": "idle", "contact": CONTACT},
    {"type": "refused", "contact": PK, "reason": "bad_signature: forged"},
    {"type": "receipt", "contact": PK, "state": "delivered", "ids": [ID]},
    {"type": "presence", "contact": PK, "status": "away", "note": None, "last_seen": 1},
    {"type": "typing", "contact": PK, "on": True},
    {"type": "expired", "contact": PK, "ids": [ID]},
    {"type": "undecryptable", "contact": PK, "reason": "no session", "notice": "ask again"},
    {"type": "channel_message", "channel": "cd" * 32, "message": {"text": "hi"}},
    {"type": "channel_removed", "channel": "cd" * 32},
    {"type": "channel_joined", "channel": "cd" * 32, "name": "team"},
    {"type": "ready"},
    {"type": "pong", "id": 7},
    {"type": "error", "error": {"code": "bad_frame", "message": "no"}},
    {"type": "a-kind-from-a-newer-daemon", "anything": 1},
]


def event_schema_validator() -> Draft202012Validator:
    doc = openapi_document(ALL_ROUTES)
    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": "urn:doc#/components/schemas/Event"}, registry=registry)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e["type"])
def test_every_emitted_shape_validates(event: dict[str, Any]) -> None:
    assert event_problem(event) is None
    event_schema_validator().validate(event)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "message"},
        {"type": "receipt", "contact": PK, "state": "read", "ids": "not a list"},
        {"type": "typing", "contact": PK},
        {"type": "session", "state": "sideways"},
        {"type": "presence", "contact": "not hex", "status": "away"},
    ],
)
def test_malformed_events_are_caught(event: dict[str, Any]) -> None:
    assert event_problem(event) is not None
    assert not event_schema_validator().is_valid(event)


def test_every_model_is_in_the_published_union() -> None:
    doc = openapi_document(ALL_ROUTES)
    union = {
        ref["$ref"].rsplit("/", 1)[1] for ref in doc["components"]["schemas"]["Event"]["anyOf"]
    }
    assert {m.__name__ for m in EVENT_MODELS.values()} <= union
    assert "OtherEvent" in union


# ------------------------------------------------------------------ real daemons


class Watcher:
    """``btchat watch --json`` for one person, collecting every event line."""

    def __init__(self, person: Person) -> None:
        self.proc = subprocess.Popen(
            [*BTCHAT, "watch", "--data-dir", str(person.dir), "--json"],
            env=person.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def types(self) -> set[str]:
        return {e["type"] for e in self.events}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


@pytest.mark.slow
def test_events_of_real_daemons_validate(
    pair: tuple[Person, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice, bob = pair
    for p in (alice, bob):
        p.up("--channel-discovery", "dht")
    watchers = {p.name: Watcher(p) for p in (alice, bob)}
    try:
        time.sleep(3)  # `watch` swallows the ready frame: give it time to subscribe
        alice.cli("contact", "add", bob.id, "bob")
        bob.cli("contact", "add", alice.id, "alice")
        alice.cli("send", "bob", "hello bob")
        wait_for(lambda: bob.texts("alice") == ["hello bob"], 60, "bob to receive")
        bob.cli("read", "alice")
        ApiClient(*read_api_files(bob.dir)).send_typing("alice", True)
        bob.cli("presence", "away", "--note", "lunch")
        alice.cli("profile", "--name", "Alice")
        created = alice.cli("channel", "create", "room", "--out", str(tmp_path))
        bob.cli("channel", "join", created["uri"])
        api = ApiClient(*read_api_files(bob.dir))
        wait_for(lambda: any(c["links"] for c in api.list_channels()), 60, "a channel link")
        alice.cli("channel", "send", "room", "hello room")
        wanted = {"message", "receipt", "session", "contact", "typing", "presence"}
        wait_for(lambda: wanted <= watchers["alice"].types(), 60, f"alice to see {wanted}")
        wait_for(lambda: "channel_message" in watchers["bob"].types(), 60, "bob's channel message")
        time.sleep(0.5)  # let late events (receipts, presence) arrive too
    finally:
        for w in watchers.values():
            w.stop()
    validator = event_schema_validator()
    for name, w in watchers.items():
        for event in w.events:
            assert event_problem(event) is None, f"{name}: {event}"
            validator.validate(event)

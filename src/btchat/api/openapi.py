"""The hand-written OpenAPI 3.1 description of the local API, served at ``/openapi.json``.

Written by hand (not generated from handlers) so it is a deliberate, reviewable contract
for front-end authors; the tests keep it honest by checking that every route the server
registers is described here and that real responses validate against these schemas.
Schemas are JSON Schema 2020-12, the dialect OpenAPI 3.1 uses.
"""

from __future__ import annotations

import copy
from typing import Any

from btchat import __version__
from btchat.api.facade import (
    DEFAULT_LIMIT,
    EVENT_TYPES,
    MAX_LIMIT,
    MAX_NAME_CHARS,
    MAX_NOTE_BYTES,
    MAX_QUERY_CHARS,
    MAX_REF_CHARS,
    MAX_TEXT_BYTES,
    PRESENCE_STATES,
)

__all__ = ["DEFAULT_RECEIVE_TIMEOUT", "MAX_RECEIVE_TIMEOUT", "openapi_document"]

#: Seconds ``GET /receive`` waits when the caller does not say.
DEFAULT_RECEIVE_TIMEOUT = 30.0
#: Longest ``GET /receive`` wait; must equal ``server.MAX_POLL_SECONDS``.
MAX_RECEIVE_TIMEOUT = 300.0

Schema = dict[str, Any]

_HEX_KEY: Schema = {
    "type": "string",
    "pattern": "^[0-9a-f]{64}$",
    "description": "Ed25519 public key, 64 lowercase hex digits.",
}
_HEX_ID: Schema = {
    "type": "string",
    "pattern": "^[0-9a-fA-F]{2,128}$",
    "description": "Message id in hex.",
}
_MS: Schema = {"type": ["integer", "null"], "description": "Milliseconds since the Unix epoch."}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
    props: dict[str, Schema],
    required: list[str] | None = None,
    *,
    closed: bool = False,
    description: str | None = None,
) -> Schema:
    """An object schema; request bodies are ``closed`` because the server refuses unknown
    fields (a typo such as ``verifed`` must not silently do nothing)."""
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_CHARS,
    "pattern": "^[^\\x00-\\x1f\\x7f]*$",
    "description": "A petname: 1 to 64 characters, no control characters.",
}
_REF: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_REF_CHARS,
    "description": "An ID (`bt...`), a `btchat:` URI, or a 64-hex-digit public key.",
}
_NOTE: Schema = {
    "type": ["string", "null"],
    "maxLength": MAX_NOTE_BYTES,
    "description": f"At most {MAX_NOTE_BYTES} UTF-8 bytes.",
}

_SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": {
                        "type": "string",
                        "description": "Stable, machine-readable.",
                        "examples": ["unknown_contact", "bad_request", "unauthorized"],
                    },
                    "message": {"type": "string", "description": "One sentence for a person."},
                },
                ["code", "message"],
            ),
        },
        ["error"],
    ),
    "Status": _obj(
        {
            "id": {"type": "string", "description": "Your ID as text."},
            "public_key": _HEX_KEY,
            "device_id": {"type": "string", "description": "This device's id, hex."},
            "uri": {"type": "string"},
            "version": {"type": "string"},
            "pid": {"type": "integer"},
            "dht": _obj(
                {
                    "nodes": {"type": "integer", "minimum": 0},
                    "addr": {
                        "type": ["string", "null"],
                        "description": "host:port of the DHT node.",
                    },
                    "joined": {"type": "boolean"},
                },
                ["nodes", "addr", "joined"],
            ),
            "listen_port": {"type": ["integer", "null"], "description": "TCP port for sessions."},
            "contacts": {"type": "integer", "minimum": 0},
            "contacts_online": {"type": "integer", "minimum": 0},
            "uptime": {"type": "number", "minimum": 0, "description": "Seconds."},
            "mailbox": {
                "type": ["object", "null"],
                "description": "Offline delivery: packets waiting in the DHT for contacts"
                " (pending), packets held for friends (held_for_others), counters (stats).",
            },
            "sync": {
                "type": "object",
                "description": "Reconnect reconciliation counters: ids offered, messages"
                " resent, copies received that were already stored.",
            },
        },
        [
            "id",
            "public_key",
            "device_id",
            "version",
            "dht",
            "listen_port",
            "contacts_online",
            "uptime",
        ],
    ),
    "Identity": _obj(
        {
            "id": {"type": "string"},
            "uri": {"type": "string"},
            "public_key": _HEX_KEY,
            "device_id": {"type": "string"},
        },
        ["id", "uri", "public_key"],
    ),
    "Contact": _obj(
        {
            "id": {"type": "string", "description": "The contact's ID as text."},
            "public_key": _HEX_KEY,
            "name": {"type": "string"},
            "verified": {"type": "boolean", "description": "Safety number compared."},
            "blocked": {"type": "boolean"},
            "presence": {"type": "string", "description": f"One of {', '.join(PRESENCE_STATES)}."},
            "last_seen": _MS,
            "online": {"type": "boolean", "description": "A session is up right now."},
            "profile": _ref("Profile"),
            "retention_days": {
                "type": "number",
                "description": "How long a message to this contact is retried through the"
                " DHT mailbox while they are offline (1 to 14 days, default 2).",
            },
        },
        ["id", "public_key", "name", "verified", "blocked", "presence", "last_seen", "online"],
    ),
    "ContactList": _obj({"contacts": {"type": "array", "items": _ref("Contact")}}, ["contacts"]),
    "NewContact": _obj(
        {"ref": _REF, "name": {**_NAME, "type": ["string", "null"]}}, ["ref"], closed=True
    ),
    "ContactPatch": _obj(
        {
            "name": {**_NAME, "type": ["string", "null"]},
            "verified": {"type": ["boolean", "null"]},
            "blocked": {"type": ["boolean", "null"]},
            "retention_days": {"type": ["number", "null"], "minimum": 1, "maximum": 14},
        },
        closed=True,
        description="Only the fields given (and not null) change.",
    ),
    "SafetyNumber": _obj(
        {"contact": _ref("Contact"), "safety_number": {"type": "string"}},
        ["contact", "safety_number"],
    ),
    "Message": _obj(
        {
            "id": _HEX_ID,
            "peer": _HEX_KEY,
            "sender": {"type": "string", "description": "Public key of the author, hex."},
            "direction": {"enum": ["in", "out"]},
            "text": {"type": "string"},
            "state": {
                "type": "string",
                "description": "pending, sent, delivered, read or failed (outgoing); "
                "received or read (incoming).",
            },
            "ts": {"type": "number", "description": "When it was written."},
            "lamport": {"type": "integer", "description": "Conversation order."},
            "type": {"type": "string"},
        },
        ["id", "peer", "direction", "text", "state", "ts", "lamport"],
    ),
    "MessageList": _obj({"messages": {"type": "array", "items": _ref("Message")}}, ["messages"]),
    "NewMessage": _obj(
        {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TEXT_BYTES,
                "description": f"1 to {MAX_TEXT_BYTES} UTF-8 bytes.",
            },
        },
        ["text"],
        closed=True,
    ),
    "SendAlias": _obj(
        {"to": _REF, "text": _ref("NewMessage/properties/text")}, ["to", "text"], closed=True
    ),
    "ReadRequest": _obj(
        {
            "up_to": {
                "anyOf": [_HEX_ID, {"type": "null"}],
                "description": "Mark read up to this message; all unread if absent.",
            },
        },
        closed=True,
    ),
    "ReadResult": _obj(
        {"contact": _ref("Contact"), "marked": {"type": "integer", "minimum": 0}}, ["marked"]
    ),
    "TypingRequest": _obj({"on": {"type": "boolean"}}, ["on"], closed=True),
    "PresenceRequest": _obj(
        {"status": {"enum": list(PRESENCE_STATES)}, "note": _NOTE}, ["status"], closed=True
    ),
    "PresenceResult": _obj({"status": {"enum": list(PRESENCE_STATES)}, "note": _NOTE}, ["status"]),
    "Profile": _obj(
        {
            "name": {"type": ["string", "null"], "description": "Display name."},
            "status": {"type": ["string", "null"], "description": "Status line."},
            "avatar": {
                "type": ["string", "null"],
                "description": "SHA-256 of the avatar image, hex (the image travels as a file).",
            },
        },
        description="Published to the DHT as a BEP 44 item signed by the identity key.",
    ),
    "ProfileRequest": _obj(
        {
            "name": {**_NAME, "type": ["string", "null"]},
            "status": {**_NOTE, "type": ["string", "null"]},
            "avatar": {"type": ["string", "null"], "pattern": "^([0-9a-f]{64})?$"},
        },
        closed=True,
    ),
    "ContactRequest": _obj(
        {
            "id": {"type": "string"},
            "direction": {"enum": ["in", "out"]},
            "public_key": _HEX_KEY,
            "note": _NOTE,
            "state": {"type": "string"},
            "ts": {"type": "number"},
        },
        ["id"],
        description="A request to become contacts, sent or received.",
    ),
    "RequestList": _obj(
        {"requests": {"type": "array", "items": _ref("ContactRequest")}}, ["requests"]
    ),
    "NewRequest": _obj({"ref": _REF, "note": _NOTE}, ["ref"], closed=True),
    "RequestAnswer": _obj(
        {"accept": {"type": "boolean"}, "name": {**_NAME, "type": ["string", "null"]}},
        ["accept"],
        closed=True,
    ),
    # ---- WebSocket frames
    "MessageEvent": _obj(
        {"type": {"const": "message"}, "message": _ref("Message")},
        ["type", "message"],
        description="A message sent or received.",
    ),
    "ReceiptEvent": _obj(
        {
            "type": {"const": "receipt"},
            "contact": _HEX_KEY,
            "state": {"type": "string"},
            "ids": {"type": "array", "items": _HEX_ID},
        },
        ["type", "contact", "state", "ids"],
        description="Our messages delivered or read.",
    ),
    "PresenceEvent": _obj(
        {
            "type": {"const": "presence"},
            "contact": _HEX_KEY,
            "status": {"type": "string"},
            "note": {"type": ["string", "null"]},
            "last_seen": _MS,
        },
        ["type", "contact", "status"],
    ),
    "TypingEvent": _obj(
        {"type": {"const": "typing"}, "contact": _HEX_KEY, "on": {"type": "boolean"}},
        ["type", "contact", "on"],
    ),
    "ContactEvent": _obj(
        {
            "type": {"const": "contact"},
            "action": {"type": "string", "examples": ["added", "removed"]},
            "contact": _ref("Contact"),
            "public_key": _HEX_KEY,
        },
        ["type", "action"],
    ),
    "RequestEvent": _obj(
        {"type": {"const": "request"}, "request": _ref("ContactRequest")}, ["type"]
    ),
    "SessionEvent": _obj(
        {
            "type": {"const": "session"},
            "state": {"enum": ["up", "down"]},
            "contact": _ref("Contact"),
            "reason": {"type": "string"},
        },
        ["type", "state"],
        description="An encrypted session with a contact opened or closed.",
    ),
    "DhtEvent": _obj({"type": {"const": "dht"}, "joined": {"type": "boolean"}}, ["type"]),
    "OtherEvent": _obj(
        {"type": {"type": "string", "not": {"enum": list(EVENT_TYPES)}}},
        ["type"],
        description="A kind this version does not describe; ignore "
        "it, newer daemons may add kinds.",
    ),
    "Event": {
        "description": "One server-to-client frame on /v1/events.",
        "anyOf": [
            _ref(n)
            for n in (
                "MessageEvent",
                "ReceiptEvent",
                "PresenceEvent",
                "TypingEvent",
                "ContactEvent",
                "RequestEvent",
                "SessionEvent",
                "DhtEvent",
                "ReadyFrame",
                "PongFrame",
                "ErrorFrame",
                "OtherEvent",
            )
        ],
    },
    "PingFrame": _obj(
        {"type": {"const": "ping"}, "id": {}},
        ["type"],
        description="Client-to-server frame; answered by a PongFrame echoing `id`.",
    ),
    "ReadyFrame": _obj(
        {"type": {"const": "ready"}},
        ["type"],
        description="Always the first frame: the subscription is in place, "
        "so no event after it is missed.",
    ),
    "PongFrame": _obj({"type": {"const": "pong"}, "id": {}}, ["type"]),
    "ErrorFrame": _obj(
        {"type": {"const": "error"}, "error": _ref("Error/properties/error")},
        ["type", "error"],
        description="Answer to a client frame the server did not understand.",
    ),
}


def _param(
    name: str, where: str, schema: Schema, description: str, *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


_PARAMETERS: dict[str, Any] = {
    "contact": _param(
        "contact",
        "path",
        {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS},
        "Petname, ID, `btchat:` URI or hex public key, percent-encoded.",
    ),
    "limit": _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Most rows to return.",
    ),
    "before": _param(
        "before",
        "query",
        {"type": "integer", "minimum": 0},
        "Only messages with a Lamport number below this (paging backwards).",
    ),
    "q": _param(
        "q",
        "query",
        {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
        "Full-text query.",
        required=True,
    ),
    "searchContact": _param(
        "contact",
        "query",
        {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS},
        "Only this conversation.",
    ),
    "requestId": _param(
        "id", "path", {"type": "string", "minLength": 1, "maxLength": 128}, "The request's id."
    ),
    "timeout": _param(
        "timeout",
        "query",
        {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_RECEIVE_TIMEOUT,
            "default": DEFAULT_RECEIVE_TIMEOUT,
        },
        "Seconds to wait for a message.",
    ),
    "token": _param(
        "token",
        "query",
        {"type": "string"},
        "The API token, for WebSocket clients (browsers) that cannot set "
        "headers. Accepted on /v1/events only.",
    ),
}

_ERROR_CONTENT = {"application/json": {"schema": _ref("Error")}}
_RESPONSES: dict[str, Any] = {
    "Error": {
        "description": "Any other failure: 400 bad input, 404 unknown contact, 409 "
        "conflict, 413 body too large, 503 not ready, ...",
        "content": _ERROR_CONTENT,
    },
    "BadRequest": {
        "description": "Malformed JSON, unknown fields, or values out of bounds.",
        "content": _ERROR_CONTENT,
    },
    "Unauthorized": {"description": "Missing or wrong bearer token.", "content": _ERROR_CONTENT},
    "Forbidden": {
        "description": "A Host or Origin header that is not loopback (DNS "
        "rebinding or cross-site request).",
        "content": _ERROR_CONTENT,
    },
    "NotFound": {"description": "No such contact or request.", "content": _ERROR_CONTENT},
    "Conflict": {"description": "Name taken, already a contact, ...", "content": _ERROR_CONTENT},
    "NotImplemented": {"description": "Not available in this version.", "content": _ERROR_CONTENT},
}


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _r(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _p(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _op(
    op_id: str,
    tag: str,
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    body_required: bool = True,
    params: list[str] | None = None,
    description: str | None = None,
    public: bool = False,
) -> dict[str, Any]:
    """One operation; every one can fail with the shared error responses."""
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = [_p(p) for p in params]
    if body:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        responses = {**responses, "400": _r("BadRequest")}
    if public:
        op["security"] = []
    else:
        responses = {**responses, "401": _r("Unauthorized")}
    op["responses"] = {**responses, "403": _r("Forbidden"), "default": _r("Error")}
    return op


_NO_CONTENT = {"description": "Done; no body."}
_C = ["contact"]

_PATHS: dict[str, Any] = {
    "/v1/status": {
        "get": _op(
            "getStatus",
            "daemon",
            "What the daemon is doing",
            {"200": _json(_ref("Status"), "Status.")},
        )
    },
    "/v1/identity": {
        "get": _op(
            "getIdentity",
            "daemon",
            "Your ID, link and public key",
            {"200": _json(_ref("Identity"), "Your identity.")},
        )
    },
    "/v1/contacts": {
        "get": _op(
            "listContacts",
            "contacts",
            "All contacts",
            {"200": _json(_ref("ContactList"), "Contacts, in petname order.")},
        ),
        "post": _op(
            "addContact",
            "contacts",
            "Add a contact by ID, URI or key",
            {"201": _json(_ref("Contact"), "The new contact."), "409": _r("Conflict")},
            body="NewContact",
        ),
    },
    "/v1/contacts/{contact}": {
        "get": _op(
            "getContact",
            "contacts",
            "One contact",
            {"200": _json(_ref("Contact"), "The contact."), "404": _r("NotFound")},
            params=_C,
        ),
        "patch": _op(
            "updateContact",
            "contacts",
            "Rename, verify, block or unblock",
            {
                "200": _json(_ref("Contact"), "The contact after the change."),
                "404": _r("NotFound"),
                "409": _r("Conflict"),
            },
            body="ContactPatch",
            params=_C,
        ),
        "delete": _op(
            "removeContact",
            "contacts",
            "Forget a contact",
            {"204": _NO_CONTENT, "404": _r("NotFound")},
            params=_C,
        ),
    },
    "/v1/contacts/{contact}/safety-number": {
        "get": _op(
            "getSafetyNumber",
            "contacts",
            "The number to compare to verify a contact",
            {"200": _json(_ref("SafetyNumber"), "Safety number."), "404": _r("NotFound")},
            params=_C,
        ),
    },
    "/v1/contacts/{contact}/messages": {
        "get": _op(
            "getHistory",
            "messages",
            "A conversation, newest last",
            {
                "200": _json(_ref("MessageList"), "Messages in conversation order."),
                "400": _r("BadRequest"),
                "404": _r("NotFound"),
            },
            params=[*_C, "limit", "before"],
        ),
        "post": _op(
            "sendMessage",
            "messages",
            "Send a message",
            {
                "201": _json(
                    _ref("Message"), "The message as stored; `state` tells whether it went out yet."
                ),
                "404": _r("NotFound"),
            },
            body="NewMessage",
            params=_C,
        ),
    },
    "/v1/contacts/{contact}/read": {
        "post": _op(
            "markRead",
            "messages",
            "Mark received messages read (sends receipts)",
            {"200": _json(_ref("ReadResult"), "How many were marked."), "404": _r("NotFound")},
            body="ReadRequest",
            body_required=False,
            params=_C,
        ),
    },
    "/v1/contacts/{contact}/typing": {
        "post": _op(
            "sendTyping",
            "messages",
            "Tell the contact you are (not) typing",
            {"204": _NO_CONTENT, "404": _r("NotFound")},
            body="TypingRequest",
            params=_C,
        ),
    },
    "/v1/search": {
        "get": _op(
            "search",
            "messages",
            "Full-text search of your history",
            {
                "200": _json(_ref("MessageList"), "Matches, best first."),
                "400": _r("BadRequest"),
                "404": _r("NotFound"),
            },
            params=["q", "searchContact", "limit"],
        ),
    },
    "/v1/presence": {
        "put": _op(
            "setPresence",
            "presence",
            "Set your presence and status note",
            {"200": _json(_ref("PresenceResult"), "What contacts now see.")},
            body="PresenceRequest",
        ),
    },
    "/v1/profile": {
        "get": _op(
            "getProfile",
            "profile",
            "Your published profile",
            {"200": _json(_ref("Profile"), "The profile contacts can fetch.")},
        ),
        "put": _op(
            "setProfile",
            "profile",
            "Change and republish your profile",
            {
                "200": _json(_ref("Profile"), "The new profile."),
                "400": _r("BadRequest"),
            },
            body="ProfileRequest",
        ),
    },
    "/v1/requests": {
        "get": _op(
            "listRequests",
            "requests",
            "Contact requests sent and received",
            {"200": _json(_ref("RequestList"), "Requests.")},
        ),
        "post": _op(
            "sendRequest",
            "requests",
            "Ask someone to become a contact",
            {
                "201": _json(_ref("ContactRequest"), "The request sent."),
                "409": _r("Conflict"),
                "501": _r("NotImplemented"),
            },
            body="NewRequest",
        ),
    },
    "/v1/requests/{id}": {
        "post": _op(
            "answerRequest",
            "requests",
            "Accept or decline a contact request",
            {
                "200": _json(_ref("ContactRequest"), "The request, answered."),
                "404": _r("NotFound"),
                "409": _r("Conflict"),
            },
            body="RequestAnswer",
            params=["requestId"],
        ),
    },
    "/v1/events": {
        "get": _op(
            "events",
            "events",
            "Live events over a WebSocket",
            {
                "101": {
                    "description": "Switching Protocols. The server then sends one JSON "
                    "text frame per event (schema `Event`), in the order "
                    "they happened, starting with a `ReadyFrame`. The "
                    "client may send `PingFrame`s."
                },
                "400": {
                    "description": "Not a WebSocket upgrade request.",
                    "content": _ERROR_CONTENT,
                },
            },
            params=["token"],
            description="Authenticate with the `Authorization` header or, where a client "
            "cannot set headers, `?token=`. Events missed while disconnected "
            "are not replayed: reconnect, then reload what you show "
            "(e.g. history). Events of unknown `type` must be ignored.",
        ),
    },
    "/send": {
        "post": _op(
            "sendAlias",
            "aliases",
            "Alias of POST /v1/contacts/{to}/messages",
            {"201": _json(_ref("Message"), "The message as stored."), "404": _r("NotFound")},
            body="SendAlias",
            description="Kept for simple scripts; same as `POST /v1/contacts/{contact}/messages`.",
        ),
    },
    "/receive": {
        "get": _op(
            "receiveAlias",
            "aliases",
            "Long-poll for the next received message",
            {
                "200": _json(_ref("MessageEvent"), "The next incoming message event."),
                "204": {"description": "No message arrived within `timeout` seconds."},
                "400": _r("BadRequest"),
                "503": _r("Error"),
            },
            params=["timeout"],
            description="Alias for simple scripts: waits for the next *incoming* message "
            "(a `message` event with direction `in`) that arrives after the "
            "request. Messages arriving between two calls are not returned "
            "here (they are in the history); use /v1/events for a stream.",
        ),
    },
    "/upload": {
        "post": _op(
            "upload",
            "files",
            "Send a file (not implemented yet)",
            {"501": _r("NotImplemented")},
            description="File transfer comes in a later release; always 501.",
        ),
    },
    "/download": {
        "get": _op(
            "download",
            "files",
            "Fetch a received file (not implemented yet)",
            {"501": _r("NotImplemented")},
            description="File transfer comes in a later release; always 501.",
        ),
    },
    "/openapi.json": {
        "get": _op(
            "openapi",
            "daemon",
            "This document",
            {"200": _json({"type": "object"}, "OpenAPI 3.1 document.")},
            public=True,
        ),
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document, so a caller may change it without affecting others."""
    from btchat.api import channel_routes

    schemas = {**copy.deepcopy(_SCHEMAS), **copy.deepcopy(channel_routes.SCHEMAS)}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "btchat local API",
            "version": __version__,
            "summary": "Drive a running btchat daemon from the CLI, scripts and front ends.",
            "description": (
                "Listens on 127.0.0.1 only. Every endpoint except this document needs "
                "`Authorization: Bearer <token>`; the daemon writes the URL to `api.json` "
                "and the token to `api.token` (mode 0600) in its data directory. Requests "
                "whose `Host` is not loopback, or that carry an `Origin` other than this "
                "server's own (`http://127.0.0.1:<port>` or `http://localhost:<port>`, "
                "same port), are refused with 403. "
                "Bodies are JSON objects of at most 64 KiB; unknown fields are refused. "
                'Errors are `{"error": {"code", "message"}}`.'
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [
            {
                "url": "http://127.0.0.1:{port}",
                "variables": {"port": {"default": "8765", "description": "See `url` in api.json."}},
            }
        ],
        "security": [{"bearer": []}],
        "tags": [
            {"name": t}
            for t in (
                "daemon",
                "contacts",
                "messages",
                "presence",
                "requests",
                "events",
                "aliases",
                "files",
                "channels",
            )
        ],
        "paths": {**copy.deepcopy(_PATHS), **channel_routes.paths(_op, _json, _ref, _r)},
        "components": {
            "schemas": schemas,
            "parameters": {
                **copy.deepcopy(_PARAMETERS),
                **copy.deepcopy(channel_routes.PARAMETERS),
            },
            "responses": copy.deepcopy(_RESPONSES),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token from `api.token`.",
                },
            },
        },
    }

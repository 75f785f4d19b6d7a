"""The 1:1 messenger endpoints: contacts, messages, presence, profile, requests, events.

Each handler is declared once with :data:`ROUTES` (see ``routes.py``): that declaration
registers it, validates its body with the model it names, and is its OpenAPI part.
Handlers turn HTTP into :class:`~btchat.api.facade.Messenger` calls and nothing more;
the messenger validates meaning (unknown contact, name taken) and raises ``ApiError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from btchat.api.facade import MAX_QUERY_CHARS, MAX_REF_CHARS, ApiError
from btchat.api.routes import (
    MAX_BODY,
    SOCKETS,
    STOPPING,
    RouteTable,
    bad_request,
    contact_param,
    messenger,
    models_loaded,
    no_content,
    ok,
    path_param,
    query_int,
    query_limit,
)
from btchat.codec import json_limits
from btchat.messaging.contacts import ContactChange

if TYPE_CHECKING:  # the models load on first use (pydantic costs start-up time)
    from btchat.api import models as m

__all__ = ["DEFAULT_RECEIVE_TIMEOUT", "MAX_RECEIVE_TIMEOUT", "ROUTES"]

log = logging.getLogger(__name__)

#: Seconds ``GET /receive`` waits when the caller does not say.
DEFAULT_RECEIVE_TIMEOUT = 30.0
#: Longest ``GET /receive`` wait, so abandoned long-polls cannot pile up forever.
MAX_RECEIVE_TIMEOUT = 300.0
#: Longest contact-request id accepted in a path.
MAX_REQUEST_ID_CHARS = 128

ROUTES = RouteTable()
daemon = ROUTES.section("daemon")
contacts = ROUTES.section("contacts")
messages = ROUTES.section("messages")
presence = ROUTES.section("presence")
profile = ROUTES.section("profile")
requests = ROUTES.section("requests")
events = ROUTES.section("events")
aliases = ROUTES.section("aliases")

_NO_CONTENT = {"description": "Done; no body."}
_C = ("contact",)


# ------------------------------------------------------------------ daemon


@daemon("GET /v1/status", "getStatus", "What the daemon is doing", {"200": ("Status", "Status.")})
async def get_status(request: web.Request) -> web.Response:
    return ok(await messenger(request).status())


@daemon(
    "GET /v1/identity",
    "getIdentity",
    "Your ID, link and public key",
    {"200": ("Identity", "Your identity.")},
)
async def get_identity(request: web.Request) -> web.Response:
    return ok(await messenger(request).identity())


@daemon(
    "GET /v1/identity/qr",
    "getIdentityQr",
    "Your link as a QR code (modules, to draw)",
    {"200": ("QrCode", "The code.")},
)
async def get_identity_qr(request: web.Request) -> web.Response:
    from btchat.identity.qr import QUIET_ZONE, qr_rows

    uri = (await messenger(request).identity())["uri"]
    return ok({"text": uri, "rows": qr_rows(uri), "quiet_zone": QUIET_ZONE})


# ------------------------------------------------------------------ contacts


@contacts(
    "GET /v1/contacts",
    "listContacts",
    "All contacts",
    {"200": ("ContactList", "Contacts, in petname order.")},
)
async def list_contacts(request: web.Request) -> web.Response:
    return ok({"contacts": await messenger(request).list_contacts()})


@contacts(
    "POST /v1/contacts",
    "addContact",
    "Add a contact by ID, URI or key",
    {"201": ("Contact", "The new contact."), "409": "Conflict"},
    body="NewContact",
)
async def add_contact(request: web.Request, body: m.NewContact) -> web.Response:
    return ok(await messenger(request).add_contact(body.ref, body.name), 201)


@contacts(
    "GET /v1/contacts/{contact}",
    "getContact",
    "One contact",
    {"200": ("Contact", "The contact."), "404": "NotFound"},
    params=_C,
)
async def get_contact(request: web.Request) -> web.Response:
    return ok(await messenger(request).get_contact(contact_param(request)))


@contacts(
    "PATCH /v1/contacts/{contact}",
    "updateContact",
    "Rename, verify, block or unblock",
    {"200": ("Contact", "The contact after the change."), "404": "NotFound", "409": "Conflict"},
    body="ContactPatch",
    params=_C,
)
async def update_contact(request: web.Request, body: m.ContactPatch) -> web.Response:
    change = ContactChange(**body.model_dump())
    return ok(await messenger(request).update_contact(contact_param(request), change))


@contacts(
    "DELETE /v1/contacts/{contact}",
    "removeContact",
    "Forget a contact",
    {"204": _NO_CONTENT, "404": "NotFound"},
    params=_C,
)
async def remove_contact(request: web.Request) -> web.Response:
    await messenger(request).remove_contact(contact_param(request))
    return no_content()


@contacts(
    "GET /v1/contacts/{contact}/safety-number",
    "getSafetyNumber",
    "The number to compare to verify a contact",
    {"200": ("SafetyNumber", "Safety number."), "404": "NotFound"},
    params=_C,
)
async def safety_number(request: web.Request) -> web.Response:
    return ok(await messenger(request).safety_number(contact_param(request)))


@contacts(
    "POST /v1/contacts/{contact}/dial",
    "dialContact",
    "Open a session to a contact at an address given by hand (Tor mode has no rendezvous)",
    {
        "200": ("Contact", "The contact, online."),
        "400": "BadRequest",
        "404": "NotFound",
        "409": "Conflict",
        "504": "Unreachable",
    },
    body="Dial",
    params=_C,
)
async def dial_contact(request: web.Request, body: m.Dial) -> web.Response:
    return ok(await messenger(request).dial_contact(contact_param(request), body.address))


# ------------------------------------------------------------------ messages


@messages(
    "GET /v1/contacts/{contact}/messages",
    "getHistory",
    "A conversation, newest last",
    {
        "200": ("MessageList", "Messages in conversation order."),
        "400": "BadRequest",
        "404": "NotFound",
    },
    params=(*_C, "limit", "before"),
)
async def history(request: web.Request) -> web.Response:
    contact = contact_param(request)
    limit = query_limit(request)
    before = query_int(request, "before", None, 0)
    return ok({"messages": await messenger(request).history(contact, limit, before)})


@messages(
    "POST /v1/contacts/{contact}/messages",
    "sendMessage",
    "Send a message",
    {
        "201": ("Message", "The message as stored; `state` tells whether it went out yet."),
        "404": "NotFound",
    },
    body="NewMessage",
    params=_C,
)
async def send_message(request: web.Request, body: m.NewMessage) -> web.Response:
    return ok(await messenger(request).send_message(contact_param(request), body.text), 201)


@messages(
    "POST /v1/contacts/{contact}/read",
    "markRead",
    "Mark received messages read (sends receipts)",
    {"200": ("ReadResult", "How many were marked."), "404": "NotFound"},
    body="ReadRequest",
    body_required=False,
    params=_C,
)
async def mark_read(request: web.Request, body: m.ReadRequest) -> web.Response:
    return ok(await messenger(request).mark_read(contact_param(request), body.up_to))


@messages(
    "POST /v1/contacts/{contact}/typing",
    "sendTyping",
    "Tell the contact you are (not) typing",
    {"204": _NO_CONTENT, "404": "NotFound"},
    body="TypingRequest",
    params=_C,
)
async def send_typing(request: web.Request, body: m.TypingRequest) -> web.Response:
    await messenger(request).send_typing(contact_param(request), body.on)
    return no_content()


@messages(
    "GET /v1/search",
    "search",
    "Full-text search of your history",
    {"200": ("MessageList", "Matches, best first."), "400": "BadRequest", "404": "NotFound"},
    params=("q", "searchContact", "limit"),
)
async def search(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    if not q.strip():
        raise bad_request("q (the search text) is required")
    if len(q) > MAX_QUERY_CHARS:
        raise bad_request(f"q must be at most {MAX_QUERY_CHARS} characters")
    contact = request.query.get("contact") or None
    if contact is not None and len(contact) > MAX_REF_CHARS:
        raise bad_request(f"contact must be at most {MAX_REF_CHARS} characters")
    rows = await messenger(request).search(q, contact, query_limit(request))
    return ok({"messages": rows})


# ------------------------------------------------------------------ presence, profile


@presence(
    "PUT /v1/presence",
    "setPresence",
    "Set your presence and status note",
    {"200": ("PresenceResult", "What contacts now see.")},
    body="PresenceRequest",
)
async def set_presence(request: web.Request, body: m.PresenceRequest) -> web.Response:
    return ok(await messenger(request).set_presence(body.status, body.note))


@profile(
    "GET /v1/profile",
    "getProfile",
    "Your published profile",
    {"200": ("Profile", "The profile contacts can fetch.")},
)
async def get_profile(request: web.Request) -> web.Response:
    return ok(await messenger(request).get_profile())


@profile(
    "PUT /v1/profile",
    "setProfile",
    "Change and republish your profile",
    {"200": ("Profile", "The new profile."), "400": "BadRequest"},
    body="ProfileRequest",
)
async def set_profile(request: web.Request, body: m.ProfileRequest) -> web.Response:
    return ok(await messenger(request).set_profile(body.name, body.status, body.avatar))


# ------------------------------------------------------------------ requests


@requests(
    "GET /v1/requests",
    "listRequests",
    "Contact requests sent and received",
    {"200": ("RequestList", "Requests.")},
)
async def list_requests(request: web.Request) -> web.Response:
    return ok({"requests": await messenger(request).list_requests()})


@requests(
    "POST /v1/requests",
    "sendRequest",
    "Ask someone to become a contact",
    {"201": ("ContactRequest", "The request sent."), "409": "Conflict", "501": "NotImplemented"},
    body="NewRequest",
)
async def send_request(request: web.Request, body: m.NewRequest) -> web.Response:
    return ok(await messenger(request).send_request(body.ref, body.note or None), 201)


@requests(
    "POST /v1/requests/{id}",
    "answerRequest",
    "Accept or decline a contact request",
    {"200": ("ContactRequest", "The request, answered."), "404": "NotFound", "409": "Conflict"},
    body="RequestAnswer",
    params=("requestId",),
)
async def answer_request(request: web.Request, body: m.RequestAnswer) -> web.Response:
    request_id = path_param(request, "id", MAX_REQUEST_ID_CHARS)
    return ok(await messenger(request).answer_request(request_id, body.accept, body.name))


# ------------------------------------------------------------------ events


async def _aclose(events: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _checked(event: dict[str, Any]) -> dict[str, Any]:
    """The server boundary: an event the published schema does not describe is logged."""
    from btchat.api.events import event_problem  # loaded (models_loaded) by the caller

    problem = event_problem(event)
    if problem is not None:
        log.error("event does not match the published schema: %s", problem)
    return event


_EVENTS_DESCRIPTION = (
    "Authenticate with the `Authorization` header (the web app: its session cookie; a "
    "token in the URL is refused). Events missed while disconnected are not replayed: "
    "reconnect, then reload "
    "what you show (e.g. history). Events of unknown `type` must be ignored."
)
_EVENTS_101 = (
    "Switching Protocols. The server then sends one JSON text frame per event (schema "
    "`Event`), in the order they happened, starting with a `ReadyFrame`. The client may "
    "send `PingFrame`s."
)
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


@events(
    "GET /v1/events",
    "events",
    "Live events over a WebSocket",
    {
        "101": {"description": _EVENTS_101},
        "400": {"description": "Not a WebSocket upgrade request.", "content": _ERROR_CONTENT},
    },
    params=("token",),
    description=_EVENTS_DESCRIPTION,
)
async def events_ws(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events``: every event as a JSON text frame, ``ready`` first."""
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BODY)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket_required", "this endpoint needs a WebSocket upgrade")
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    events = messenger(request).subscribe()
    send_lock = asyncio.Lock()

    async def send(obj: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_str(json.dumps(obj))

    async def pump() -> None:
        try:
            async for event in events:
                await models_loaded()  # the check below needs them
                await send(_checked(event))
        except ConnectionError as exc:  # the client went away mid-send
            log.debug("event stream to a client ended: %s", exc)
        except Exception:
            log.exception("the event stream failed")
        await ws.close()  # the stream ended by itself (not on cancel): tell the client

    # Hold the lock so "ready" goes out first, once the subscription is in place.
    async with send_lock:
        pumper = asyncio.create_task(pump())
        await asyncio.sleep(0)  # let the generator run up to its first wait: subscribed
        with contextlib.suppress(ConnectionError):
            await ws.send_str(json.dumps({"type": "ready"}))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await send(_answer(msg.data))
    except ConnectionError:  # the response is already a WebSocket: no error body possible
        log.debug("WebSocket client went away")
    finally:
        pumper.cancel()
        await asyncio.gather(pumper, return_exceptions=True)
        await _aclose(events)
        request.app[SOCKETS].discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


def _answer(data: str) -> dict[str, Any]:
    """The reply to a client frame: a pong for a ping (echoing its id), else an error."""
    try:
        frame = json_limits.loads(data)
    except json_limits.JsonError:
        frame = None
    if isinstance(frame, dict) and frame.get("type") == "ping":
        pong: dict[str, Any] = {"type": "pong"}
        if "id" in frame:  # lets a client match answers to its pings
            pong["id"] = frame["id"]
        return pong
    message = 'the only client frame is {"type": "ping"}'
    return {"type": "error", "error": {"code": "bad_frame", "message": message}}


# ------------------------------------------------------------------ aliases


@aliases(
    "POST /send",
    "sendAlias",
    "Alias of POST /v1/contacts/{to}/messages",
    {"201": ("Message", "The message as stored."), "404": "NotFound"},
    body="SendAlias",
    description="Kept for simple scripts; same as `POST /v1/contacts/{contact}/messages`.",
)
async def send_alias(request: web.Request, body: m.SendAlias) -> web.Response:
    """``POST /send {to, text}``: the seed's name for sending a message."""
    return ok(await messenger(request).send_message(body.to, body.text), 201)


def _is_incoming_message(event: dict[str, Any]) -> bool:
    message = event.get("message")
    return (
        event.get("type") == "message"
        and isinstance(message, dict)
        and message.get("direction") != "out"
    )


async def _next_incoming(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    async for event in events:
        if _is_incoming_message(event):
            return event
    raise ApiError(503, "unavailable", "the event stream ended")


_RECEIVE_DESCRIPTION = (
    "Alias for simple scripts: waits for the next *incoming* message (a `message` event "
    "with direction `in`) that arrives after the request. Messages arriving between two "
    "calls are not returned here (they are in the history); use /v1/events for a stream."
)


@aliases(
    "GET /receive",
    "receiveAlias",
    "Long-poll for the next received message",
    {
        "200": ({"$ref": "#/components/schemas/MessageEvent"}, "The next incoming message event."),
        "204": {"description": "No message arrived within `timeout` seconds."},
        "400": "BadRequest",
        "503": "Error",
    },
    params=("timeout",),
    description=_RECEIVE_DESCRIPTION,
)
async def receive_alias(request: web.Request) -> web.Response:
    """``GET /receive?timeout=``: long-poll the next incoming message; 204 on timeout."""
    raw = request.query.get("timeout", "")
    try:
        timeout = float(raw) if raw else DEFAULT_RECEIVE_TIMEOUT
    except ValueError:
        raise bad_request("timeout must be a number of seconds") from None
    if not 0 <= timeout <= MAX_RECEIVE_TIMEOUT:  # also refuses NaN
        raise bad_request(f"timeout must be 0 to {MAX_RECEIVE_TIMEOUT:.0f} seconds")
    events = messenger(request).subscribe()
    waiter = asyncio.ensure_future(_next_incoming(events))
    stopper = asyncio.ensure_future(request.app[STOPPING].wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (waiter, stopper):
            task.cancel()
        await asyncio.gather(waiter, stopper, return_exceptions=True)
        await _aclose(events)
    if waiter in done and not waiter.cancelled():
        return ok(waiter.result())
    if stopper in done:
        raise ApiError(503, "shutting_down", "the daemon is stopping")
    return no_content()

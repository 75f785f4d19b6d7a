"""The frames of the ``/v1/events`` WebSocket, one model per event type.

How this works: the daemon still emits plain dicts (``Daemon._emit``,
``OfflineDelivery``, ``ChannelManager``); the server checks each one against the model
its ``type`` names here (:func:`event_problem`) before sending it, and sends the dict
unchanged, so a model can never rename or drop a field on the wire. A mismatch is
logged, not hidden from clients. The OpenAPI document publishes :class:`Event`, the
union of every model, plus :class:`OtherEvent` for kinds a newer daemon may add.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, RootModel, ValidationError, field_validator

from btchat.api.models import (
    ChannelMessage,
    Contact,
    ContactRequest,
    ErrorDetail,
    HexId,
    HexKey,
    Message,
    Ms,
    Profile,
    Shape,
    Transfer,
)

__all__ = ["EVENT_MODELS", "Event", "event_problem"]


class _Event(Shape):
    """Every frame has a ``type``; extra fields are allowed (clients ignore them)."""


class MessageEvent(_Event):
    """A message sent or received."""

    type: Literal["message"]
    message: Message


class ReceiptEvent(_Event):
    """Our messages delivered or read."""

    type: Literal["receipt"]
    contact: HexKey
    state: str
    ids: list[HexId]


class ReadEvent(_Event):
    """Messages from a contact marked read, here or on another of our devices."""

    type: Literal["read"]
    contact: HexKey
    ids: list[HexId]


class ProfileEvent(_Event):
    """Our own profile changed: from a front end here, or on another of our devices
    (then republished here too)."""

    type: Literal["profile"]
    profile: Profile


class ExpiredEvent(_Event):
    """Messages the DHT mailbox gave up on: the contact stayed offline too long."""

    type: Literal["expired"]
    contact: HexKey
    ids: list[HexId]


class PresenceEvent(_Event):
    type: Literal["presence"]
    contact: HexKey
    status: str
    note: str | None = None
    last_seen: Ms = None


class TypingEvent(_Event):
    type: Literal["typing"]
    contact: HexKey
    on: bool


class ContactEvent(_Event):
    type: Literal["contact"]
    action: str = Field(examples=["added", "removed", "profile"])
    contact: Contact | None = None
    public_key: HexKey | None = None


class RequestEvent(_Event):
    type: Literal["request"]
    request: ContactRequest | None = None


class InboxMovedEvent(_Event):
    """Our contact-request slots were found squatted (an item no later put can
    replace); we moved to a fresh inbox value and republished our profile."""

    type: Literal["inbox_moved"]
    squatted: int = Field(ge=1, description="Squatted slots seen in this round.")


class SessionEvent(_Event):
    """An encrypted session with a contact opened or closed."""

    type: Literal["session"]
    state: Literal["up", "down"]
    contact: Contact | None = None
    reason: str | None = None


class RefusedEvent(_Event):
    """An envelope from a contact that failed verification and was dropped."""

    type: Literal["refused"]
    contact: HexKey
    reason: str


class UndecryptableEvent(_Event):
    """An offline message that could not be decrypted (a ratchet state was lost)."""

    type: Literal["undecryptable"]
    contact: HexKey
    reason: str
    notice: str | None = None


class DhtEvent(_Event):
    type: Literal["dht"]
    joined: bool | None = None
    nodes: int | None = None


class ChannelMessageEvent(_Event):
    """A channel message became readable."""

    type: Literal["channel_message"]
    channel: str = Field(description="Channel id (hex).")
    message: ChannelMessage


class ChannelRemovedEvent(_Event):
    """We were removed from a channel (or left it)."""

    type: Literal["channel_removed"]
    channel: str


class ChannelJoinedEvent(_Event):
    """Another of our devices joined or created a channel, and so did this one."""

    type: Literal["channel_joined"]
    channel: str = Field(description="Channel id (hex).")
    name: str


class FileOfferEvent(_Event):
    """A contact offered us a file (or an offer was refused: its state says so)."""

    type: Literal["file_offer"]
    transfer: Transfer


class FileProgressEvent(_Event):
    """A transfer moved (at most twice a second each) or changed state."""

    type: Literal["file_progress"]
    transfer: Transfer


class FileDoneEvent(_Event):
    """A transfer completed: received and verified, or, on the sender, confirmed."""

    type: Literal["file_done"]
    transfer: Transfer


class ReadyFrame(_Event):
    """Always the first frame: the subscription is in place, so no event after it is
    missed."""

    type: Literal["ready"]


class PingFrame(_Event):
    """Client-to-server frame; answered by a PongFrame echoing `id`."""

    type: Literal["ping"]
    id: Any = None


class PongFrame(_Event):
    type: Literal["pong"]
    id: Any = None


class DeviceLinkWaitingEvent(_Event):
    """A link offer is open: the new device may join with the code."""

    type: Literal["device_link_waiting"]
    code: str
    expires_at: int


class DeviceLinkedEvent(_Event):
    """A new device joined this identity (its certificate is in our device list)."""

    type: Literal["device_linked"]
    device_id: str = Field(pattern="^[0-9a-f]{32}$")


class DeviceNamedEvent(_Event):
    """One of our devices got a name, here or on another of our devices."""

    type: Literal["device_named"]
    device_id: str = Field(pattern="^[0-9a-f]{32}$")
    name: str


class DeviceLinkFailedEvent(_Event):
    """The link offer ended without a new device."""

    type: Literal["device_link_failed"]
    reason: str = Field(examples=["wrong_code", "expired", "cancelled", "timeout"])


class ErrorFrame(_Event):
    """Answer to a client frame the server did not understand."""

    type: Literal["error"]
    error: ErrorDetail


#: ``type`` -> model, for every frame the server sends.
EVENT_MODELS: dict[str, type[_Event]] = {
    m.model_fields["type"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in (
        MessageEvent,
        ReceiptEvent,
        ReadEvent,
        ProfileEvent,
        ExpiredEvent,
        PresenceEvent,
        TypingEvent,
        ContactEvent,
        RequestEvent,
        InboxMovedEvent,
        SessionEvent,
        RefusedEvent,
        UndecryptableEvent,
        DhtEvent,
        ChannelMessageEvent,
        ChannelRemovedEvent,
        ChannelJoinedEvent,
        FileOfferEvent,
        FileProgressEvent,
        FileDoneEvent,
        DeviceLinkWaitingEvent,
        DeviceLinkedEvent,
        DeviceNamedEvent,
        DeviceLinkFailedEvent,
        ReadyFrame,
        PongFrame,
        ErrorFrame,
    )
}
#: Kinds described here; a client must ignore any other.
KNOWN_TYPES = (*EVENT_MODELS, "ping")


class OtherEvent(_Event):
    """A kind this version does not describe; ignore it, newer daemons may add kinds."""

    type: Annotated[str, Field(json_schema_extra={"not": {"enum": list(KNOWN_TYPES)}})]

    @field_validator("type")
    @classmethod
    def _unknown(cls, value: str) -> str:
        if value in KNOWN_TYPES:
            raise ValueError(f"{value!r} events have their own model")
        return value


class Event(RootModel[Any]):
    """One server-to-client frame on /v1/events."""

    root: Annotated[
        MessageEvent
        | ReceiptEvent
        | ReadEvent
        | ProfileEvent
        | ExpiredEvent
        | PresenceEvent
        | TypingEvent
        | ContactEvent
        | RequestEvent
        | InboxMovedEvent
        | SessionEvent
        | RefusedEvent
        | UndecryptableEvent
        | DhtEvent
        | ChannelMessageEvent
        | ChannelRemovedEvent
        | ChannelJoinedEvent
        | FileOfferEvent
        | FileProgressEvent
        | FileDoneEvent
        | DeviceLinkWaitingEvent
        | DeviceLinkedEvent
        | DeviceNamedEvent
        | DeviceLinkFailedEvent
        | ReadyFrame
        | PongFrame
        | ErrorFrame
        | OtherEvent,
        Field(union_mode="left_to_right"),
    ]


#: Published beside :class:`Event`, though no route names them.
FRAME_MODELS: tuple[type[BaseModel], ...] = (Event, PingFrame)


def event_problem(event: dict[str, Any]) -> str | None:
    """Why ``event`` does not match its model, or ``None`` when it does."""
    kind = event.get("type")
    model = EVENT_MODELS.get(kind) if isinstance(kind, str) else None
    try:
        (model or OtherEvent).model_validate(event)
    except ValidationError as exc:
        return f"{kind!r} event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
    return None

"""The shapes of the local API, declared once as pydantic models.

How this works: a request body is a :class:`Body` subclass; the route that takes it
validates with it (strict: no ``"1"`` for ``true``, unknown fields refused) and the
OpenAPI document publishes its JSON Schema, so the validator and the contract cannot
drift apart. Each field may carry a :class:`Rule`, the error code and sentence the
caller sees when that field is wrong (``bad_text``, ``bad_note``, ...), because those
codes are part of the API. Response models (:class:`Contact`, :class:`Message`, ...)
only document what the messenger returns; handlers send the messenger's dicts as they
are, so nothing is renamed or dropped on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from btchat.api.facade import (
    MAX_NAME_CHARS,
    MAX_NOTE_BYTES,
    MAX_REF_CHARS,
    MAX_TEXT_BYTES,
    PRESENCE_STATES,
    ApiError,
)
from btchat.dht.reachability import Filtering as NatFiltering
from btchat.dht.reachability import Mapping as NatMapping
from btchat.net.portmap import Phase

__all__ = ["Body", "Rule", "body_error"]

#: Most members one channel call may name.
MAX_RECIPIENTS = 64
#: Longest channel name.
MAX_CHANNEL_NAME = 100
#: Longest ``btchat:channel`` link or base64 ``.chat`` file accepted.
MAX_CHATFILE_CHARS = 8192


@dataclass(frozen=True)
class Rule:
    """What the caller is told when this field is wrong: a stable code and a sentence."""

    code: str
    message: str


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def _max_bytes(limit: int) -> AfterValidator:
    """UTF-8 length, the unit the wire format counts in (JSON Schema counts characters)."""

    def check(value: str | None) -> str | None:
        if value is not None and _utf8_len(value) > limit:
            raise ValueError(f"over {limit} bytes")
        return value

    return AfterValidator(check)


def _not_blank(value: str) -> str:
    """A message of spaces and line breaks only is a slip of the keyboard, not a message."""
    if not value.strip():
        raise ValueError("only white space")
    return value


# ------------------------------------------------------------------ field types

_HEX_KEY_DOC = "Ed25519 public key, 64 lowercase hex digits."
HexKey = Annotated[str, Field(pattern="^[0-9a-f]{64}$", description=_HEX_KEY_DOC)]
HexId = Annotated[str, Field(pattern="^[0-9a-fA-F]{2,128}$", description="Message id in hex.")]
Ms = Annotated[int | None, Field(description="Milliseconds since the Unix epoch.")]

Ref = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REF_CHARS,
        description="An ID (`bt...`), a `btchat:` URI, or a 64-hex-digit public key.",
    ),
]
Name = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        pattern="^[^\\x00-\\x1f\\x7f]*$",
        description="A petname: 1 to 64 characters, no control characters.",
    ),
    Rule("bad_request", f"name must be 1 to {MAX_NAME_CHARS} characters, no control characters"),
]
Note = Annotated[
    str | None,
    Field(max_length=MAX_NOTE_BYTES, description=f"At most {MAX_NOTE_BYTES} UTF-8 bytes."),
    _max_bytes(MAX_NOTE_BYTES),
]
Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TEXT_BYTES,
        pattern="\\S",
        description=f"1 to {MAX_TEXT_BYTES} UTF-8 bytes, not only white space.",
    ),
    _max_bytes(MAX_TEXT_BYTES),
    AfterValidator(_not_blank),
    Rule(
        "bad_text",
        f"text must be 1 to {MAX_TEXT_BYTES} bytes (UTF-8) and not only white space",
    ),
]
IdList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=300)]],
    Field(max_length=MAX_RECIPIENTS),
]
Presence = Literal["online", "away", "busy", "offline"]
assert set(Presence.__args__) == set(PRESENCE_STATES)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ request bodies


class Body(BaseModel):
    """A request body: strict types, no unknown fields (a typo must not do nothing)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Any:
        """The validated body, or the :class:`ApiError` its field's rule names."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise body_error(cls, exc) from None


def body_error(model: type[BaseModel], exc: ValidationError) -> ApiError:
    """One error for the caller: unknown fields first, then the first bad field."""
    errors = exc.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return ApiError(400, "bad_request", f"unknown field(s): {', '.join(unknown)}")
    first = errors[0]
    key = str(first["loc"][0]) if first["loc"] else "body"
    field = model.model_fields.get(key)
    rule = next((m for m in field.metadata if isinstance(m, Rule)), None) if field else None
    if first["type"] == "missing":
        return ApiError(400, rule.code if rule else "bad_request", f"{key} is required")
    if rule is not None:
        return ApiError(400, rule.code, rule.message.replace("{key}", key))
    return ApiError(400, "bad_request", f"{key}: {first['msg']}")


_BOOL = Rule("bad_request", "{key} must be true or false")
_REF = Rule("bad_request", f"{{key}} must be 1 to {MAX_REF_CHARS} characters")
_NOTE = Rule("bad_note", f"{{key}} must be a string of at most {MAX_NOTE_BYTES} bytes")
_IDS = Rule("bad_request", f"{{key}} must be a list of at most {MAX_RECIPIENTS} IDs as strings")


class NewContact(Body):
    ref: Annotated[Ref, _REF]
    name: Name = None


class Dial(Body):
    """An address given by hand: where a contact's device or a channel member listens."""

    address: Annotated[
        str,
        Field(
            min_length=3,
            max_length=80,
            description="IP:PORT ([v6]:PORT) or, through Tor, ONION.onion:PORT where the "
            "contact's device or the member listens.",
        ),
        Rule("bad_address", "{key} must be IP:PORT"),
    ]


class ContactPatch(Body):
    """Only the fields given (and not null) change."""

    name: Name = None
    verified: Annotated[bool | None, _BOOL] = None
    blocked: Annotated[bool | None, _BOOL] = None
    retention_days: Annotated[
        int | float | None,
        Field(json_schema_extra={"minimum": 1, "maximum": 14}),
        Rule("bad_request", "retention_days must be a number of days (1 to 14)"),
    ] = None


class NewMessage(Body):
    text: Text


class NewFile(Body):
    path: Annotated[
        str,
        Field(min_length=1, max_length=4096, description="A file on the daemon's machine."),
        Rule("bad_request", "path must be 1 to 4096 characters"),
    ]


class UploadAlias(NewFile):
    to: Annotated[Ref, _REF]


class TransferAction(Body):
    action: Annotated[
        Literal["accept", "reject", "cancel", "pause", "resume"],
        Rule("bad_action", "action is one of accept, reject, cancel, pause, resume"),
    ]


class NewChannelFile(NewFile):
    name: Annotated[
        str | None,
        Field(min_length=1, max_length=1024, description="The name to offer it under."),
        Rule("bad_request", "name must be 1 to 1024 characters"),
    ] = None


class ChannelFileAction(Body):
    action: Annotated[
        Literal["accept", "reject", "cancel", "pause", "resume"],
        Rule("bad_action", "action is one of accept, reject, cancel, pause, resume"),
    ]


class Serving(Body):
    serve: Annotated[
        bool,
        Field(description="Serve pieces of this channel's files to its members."),
        Rule("bad_request", "serve must be true or false"),
    ]


class FileLimit(Body):
    max_bytes: Annotated[
        int,
        Field(ge=0, le=2**36, description="Largest file this contact may offer."),
        Rule("bad_limit", "max_bytes must be 0 to 2**36"),
    ]


class SendAlias(Body):
    to: Annotated[Ref, _REF]
    text: Text


class ReadRequest(Body):
    up_to: Annotated[
        HexId | None,
        Field(description="Mark read up to this message; all unread if absent."),
        Rule("bad_request", "up_to must be a message id (hex)"),
    ] = None


class TypingRequest(Body):
    on: Annotated[bool, _BOOL]


class PresenceRequest(Body):
    status: Annotated[
        Presence, Rule("bad_presence", f"status is one of {', '.join(PRESENCE_STATES)}")
    ]
    note: Annotated[Note, _NOTE] = None


class ProfileRequest(Body):
    name: Name = None
    status: Annotated[Note, _NOTE] = None
    avatar: Annotated[
        str | None,
        Field(pattern="^([0-9a-f]{64})?$"),
        Rule("bad_avatar", "avatar is the SHA-256 of the image, as 64 hex digits"),
    ] = None


class NewRequest(Body):
    ref: Annotated[Ref, _REF]
    note: Annotated[Note, _NOTE] = None


class RequestAnswer(Body):
    accept: Annotated[bool, _BOOL]
    name: Name = None


class NewChannel(Body):
    name: Annotated[
        str,
        Field(min_length=1, max_length=MAX_CHANNEL_NAME),
        Rule("bad_request", f"name must be 1 to {MAX_CHANNEL_NAME} characters"),
    ]
    invite_only: Annotated[bool | None, _BOOL] = None
    trackers: Annotated[IdList, _IDS] = []


class JoinChannel(Body):
    chatfile: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_CHATFILE_CHARS,
            description="A btchat:channel link or the .chat file in base64.",
        ),
        Rule("bad_request", f"chatfile must be 1 to {MAX_CHATFILE_CHARS} characters"),
    ]


class MemberChange(Body):
    add: Annotated[IdList, _IDS] = []
    remove: Annotated[IdList, _IDS] = []


class NewChannelMessage(Body):
    text: Text
    to: Annotated[
        IdList,
        Field(description="Members for a private or group message; empty = everyone."),
        _IDS,
    ] = []


# ------------------------------------------------------------------ responses


class Shape(BaseModel):
    """A response shape, for the document only; the messenger may add fields."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(Shape):
    code: str = Field(
        description="Stable, machine-readable.",
        examples=["unknown_contact", "bad_request", "unauthorized"],
    )
    message: str = Field(description="One sentence for a person.")


class Error(Shape):
    error: ErrorDetail


class Reachability(Shape):
    """What the DHT's KRPC ``ip`` reports (BEP 42) and inbound queries say about our NAT."""

    external_ip: str | None = Field(description="Our address as most DHT nodes see it.")
    external_port: int | None = Field(
        description="Our UDP port as they see it; null when it differs per destination."
    )
    mapping: NatMapping = Field(description="RFC 4787 mapping: none = no NAT.")
    filtering: NatFiltering = Field(description="Who reaches us unasked (RFC 4787 filtering).")
    label: str = Field(
        description="In words: unknown, public, full cone, restricted cone, port-restricted,"
        " symmetric, or NAT."
    )
    reports: int = Field(ge=0, description="DHT nodes whose `ip` report we hold.")
    agreeing: int = Field(ge=0)
    distinct_ports: int = Field(ge=0)
    from_strangers: int = Field(ge=0)
    from_known_hosts: int = Field(ge=0)
    from_contacted: int = Field(ge=0)


class MappedPort(Shape):
    external_port: int
    internal_port: int
    lease: int = Field(ge=0, description="Seconds granted; 0 = permanent.")
    expires_in: float | None = Field(description="Seconds left; null when permanent.")


class PortMapping(Shape):
    """Port mapping on the home gateway: UPnP-IGD, else PCP, else NAT-PMP."""

    state: Phase
    gateway: str | None = Field(
        description="UPnP: the gateway's description URL; PCP and NAT-PMP:"
        " pcp://ADDRESS or natpmp://ADDRESS."
    )
    external_ip: str | None = Field(description="The gateway's WAN address.")
    mappings: dict[str, MappedPort] = Field(description="By protocol: udp, tcp.")
    error: str | None


class DhtStatus(Shape):
    nodes: int = Field(ge=0)
    addr: str | None = Field(description="host:port the DHT node is bound to (local).")
    joined: bool
    external_addr: str | None = Field(
        None,
        description="host:port a peer on the internet reaches our DHT node on: the UPnP"
        " mapping, else what DHT nodes report when our NAT keeps one port.",
    )
    reachability: Reachability | None = None
    addr6: str | None = Field(None, description="[host]:port of the IPv6 DHT socket (BEP 32).")
    nodes6: int = Field(0, ge=0, description="Contacts in the IPv6 routing table.")


class ProxyStatus(Shape):
    url: str = Field(description="The proxy sessions and links go through (no password).")
    dials: int = Field(ge=0)
    connected: int = Field(ge=0)
    failed: int = Field(ge=0)
    last_error: str | None = Field(description="Why the last failed dial failed, if it did.")


class Status(Shape):
    id: str = Field(description="Your ID as text.")
    public_key: HexKey
    device_id: str = Field(description="This device's id, hex.")
    uri: str | None = None
    version: str
    pid: int | None = None
    dht: DhtStatus
    listen_port: int | None = Field(description="TCP port for sessions.")
    external_tcp: str | None = Field(
        None, description="host:port of the session port on the internet (UPnP mapping)."
    )
    port_mapping: PortMapping | None = Field(None, description="Null when turned off.")
    contacts: int | None = Field(None, ge=0)
    contacts_online: int = Field(ge=0)
    uptime: float = Field(ge=0, description="Seconds.")
    mailbox: dict[str, Any] | None = Field(
        None,
        description="Offline delivery: packets waiting in the DHT for contacts (pending),"
        " packets held for friends (held_for_others), counters (stats).",
    )
    mailbox_reader: dict[str, Any] | None = Field(
        None,
        description="On a device that is not the mailbox device: reading the DHT mailbox"
        " while the mailbox device is away (counters in stats; received: packets read).",
    )
    sync: dict[str, Any] | None = Field(
        None,
        description="Reconnect reconciliation counters: ids offered, messages resent,"
        " copies received that were already stored.",
    )
    requests: dict[str, Any] | None = Field(
        None,
        description="Contact-request inbox: squatted slots seen, moves to a fresh inbox,"
        " time of the last move (ms).",
    )
    proxy: ProxyStatus | None = Field(
        None, description="Set when sessions and channel links go out through a proxy."
    )
    tor: bool = Field(
        False,
        description="Tor mode: no DHT node, no UDP; every connection goes through the proxy,"
        " DHT operations through a contact that serves them (dht_via).",
    )
    dht_via: dict[str, Any] | None = Field(
        None,
        description="Tor mode: the contact our DHT operations go through (contact, name;"
        " both null when no contact serves) and counters.",
    )
    onion: dict[str, Any] | None = Field(
        None,
        description="Tor mode with a control port: the onion service for sessions (address"
        " `xxx.onion:6881`, what contacts dial; or error). Null without a control port.",
    )
    dht_serving: dict[str, Any] | None = Field(
        None,
        description="Running DHT operations for contacts: serving (on/off) and counters"
        " (requests, served, failed, refused_*, malformed).",
    )
    rendezvous: dict[str, int] | None = Field(
        None,
        description="The private rendezvous: lookups, contacts found, candidate records"
        " put, read, dropped (did not open or verify) and stale, the candidates they"
        " named and those refused (not dialable). Null without a DHT.",
    )
    storage: str = Field(
        "ok",
        description='"ok", or the storage condition and since when, e.g. "disk full since'
        ' 2026-12-02T19:58:21Z": while it holds nothing that needs storing is acknowledged.',
    )
    storage_detail: dict[str, Any] | None = Field(
        None,
        description="Storage faults: where and why (while one holds), retry_in (seconds),"
        " counters (faults, conditions, cleared, not_acknowledged).",
    )


class Identity(Shape):
    id: str
    uri: str
    public_key: HexKey
    device_id: str | None = None


class QrCode(Shape):
    """A QR code of your link, as modules, for clients that draw it themselves."""

    text: str = Field(description="What the code encodes: your btchat: link.")
    rows: list[str] = Field(description="One string per row, `1` dark, `0` light; no quiet zone.")
    quiet_zone: int = Field(ge=0, description="Light modules to leave around it.")


class Profile(Shape):
    """Published to the DHT as a BEP 44 item signed by the identity key."""

    name: str | None = Field(None, description="Display name.")
    status: str | None = Field(None, description="Status line.")
    avatar: str | None = Field(
        None, description="SHA-256 of the avatar image, hex (the image travels as a file)."
    )


class Contact(Shape):
    id: str = Field(description="The contact's ID as text.")
    public_key: HexKey
    name: str
    verified: bool = Field(description="Safety number compared.")
    blocked: bool
    presence: str = Field(description=f"One of {', '.join(PRESENCE_STATES)}.")
    last_seen: Ms
    online: bool = Field(description="A session is up right now.")
    path: list[str] | None = Field(
        None,
        description='What carries each live session (one per device): "tcp", "udp" or'
        ' "relay via <relay id, 16 hex digits>".',
    )
    rtt_ms: float | None = Field(
        None,
        description="Smoothed round-trip time of the fastest live session, milliseconds"
        " (from the handshake and keepalive PINGs); null before the first measurement.",
    )
    profile: Profile | None = None
    retention_days: float | None = Field(
        None,
        description="How long a message to this contact is retried through the DHT mailbox"
        " while they are offline (1 to 14 days, default 2).",
    )


class ContactList(Shape):
    contacts: list[Contact]


class DeviceRename(Body):
    """A name for one of our devices, as the user typed it (trimmed to one line)."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=40),
        Rule("bad_name", "name is a string of 1 to 40 characters"),
    ]


class Device(Shape):
    device_id: str = Field(description="The device id, 32 hex digits.")
    name: str | None = Field(
        None, description="What we call it (set on any of our devices; first its host name)."
    )
    created: int = Field(description="When its certificate was made, Unix seconds.")
    this_device: bool = Field(description="The device this daemon runs on.")
    online: bool | None = Field(None, description="A session to it is up (not for this one).")
    to_sync: int | None = Field(
        None, description="Messages stored here it has not acknowledged yet (not for this one)."
    )


Passphrase = Annotated[
    str,
    Field(min_length=1, max_length=1024),
    Rule("bad_passphrase", "passphrase is a string of 1 to 1024 characters"),
]


class SetupRequest(Body):
    passphrase: Passphrase
    weak_ok: bool = False


class StrengthRequest(Body):
    passphrase: Passphrase


class QrScan(Shape):
    texts: list[str] = Field(description="What each QR code found says, as text.")


class SetupState(Shape):
    state: str = Field(description='"create", "unlock", "starting" or "ready".')
    no_recovery: str | None = Field(
        None, description="When creating: the warning to show (nobody can recover it)."
    )


class PassphraseStrength(Shape):
    ok: bool = Field(description="Strong enough to take without asking.")
    line: str = Field(description="The verdict and zxcvbn's advice, in words.")


class SettingsRequest(Body):
    """Settings to write to the config file; a key given as null goes back to the
    default, a key left out is left as it is."""

    bootstrap: Annotated[
        list[Annotated[str, Field(max_length=262)]] | None,
        Field(max_length=32),
        Rule("bad_setting", "bootstrap is a list of at most 32 host:port strings"),
    ] = None
    proxy: Annotated[
        str | None,
        Field(max_length=1024),
        Rule("bad_setting", "proxy is a URL such as socks5://127.0.0.1:9050"),
    ] = None
    tor: bool | None = None
    relay: bool | None = None
    upnp: bool | None = None
    lan: bool | None = None
    ipv6: bool | None = None


class Setting(Shape):
    value: Any = Field(description="What this daemon runs with now.")
    next_start: Any = Field(
        description="What the next start takes from the environment, the file or the "
        "default (a flag given to `btchat up` would still win)."
    )
    source: str = Field(description='"environment", "file" or "default".')
    flag: bool = Field(description="A flag of `btchat up` decided the value running now.")
    about: str


class SettingsView(Shape):
    config_file: str = Field(description="The TOML file changes are written to.")
    problem: str | None = Field(
        description="Why the file cannot be read (it is then never written), or null."
    )
    settings: dict[str, Setting]


class DeviceList(Shape):
    devices: list[Device] = Field(description="Devices that speak for us, this one first.")
    revoked: list[str] = Field(description="Ids of devices revoked, for good.")
    this_revoked: bool = Field(
        description="Another of our devices revoked this one: contacts no longer accept it."
    )
    sync: dict[str, int] = Field(
        description="Counters of the sync with our other devices: batches_sent, bytes_sent,"
        " rows_received, rows_new, malformed, envelopes_adopted and envelopes_refused"
        " (messages another device handed over to deposit or offer), states_applied"
        " (receipts that came to another device), from_revoked."
    )
    mailbox_device: str = Field(
        description="The device that sends and receives through the DHT mailbox while"
        " contacts are offline: one per identity, the oldest."
    )


class SafetyNumber(Shape):
    contact: Contact
    safety_number: str


class Message(Shape):
    id: HexId
    peer: HexKey
    sender: str | None = Field(None, description="Public key of the author, hex.")
    direction: Literal["in", "out"]
    text: str
    state: str = Field(
        description="pending, sent, delivered, read or failed (outgoing); "
        "delivered or read (incoming)."
    )
    ts: int = Field(description="When it was written, Unix time in milliseconds.")
    lamport: int = Field(description="Conversation order.")
    type: str | None = None


class MessageList(Shape):
    messages: list[Message]


class ReadResult(Shape):
    contact: Contact | None = None
    marked: int = Field(ge=0)


class PresenceResult(Shape):
    status: Presence
    note: Note = None


class ContactRequest(Shape):
    """A request to become contacts, sent or received."""

    id: str
    direction: Literal["in", "out"] | None = None
    public_key: HexKey | None = None
    note: Note = None
    state: str | None = None
    ts: float | None = None


class RequestList(Shape):
    requests: list[ContactRequest]


class Channel(Shape):
    id: str = Field(description="Channel id (hex).")
    name: str
    invite_only: bool
    removed: bool | None = Field(
        None, description="The owner removed us: posting is refused (403 removed)."
    )
    owner: str | None = None
    trackers: list[str] | None = None
    uri: str = Field(description="The btchat:channel link to share.")
    chatfile: str | None = Field(None, description="The .chat file, base64.")
    port: int | None = None
    members: int | None = None
    members_online: int | None = None
    links: int | None = None
    discovery: dict[str, Any] | None = None
    counters: dict[str, int] | None = Field(
        None,
        description="What this member dropped or evicted and why: quota_author_messages,"
        " quota_author_bytes, quota_author_presence, evicted_author, evicted_channel,"
        " presence_evicted, presence_expired, not_stored (disk full), and traffic counts.",
    )
    stored: dict[str, int] | None = Field(
        None, description="Messages and wire bytes stored for the channel (under its caps)."
    )
    serve_files: bool | None = Field(
        None, description="We serve pieces of this channel's files to its members."
    )


class Transfer(Shape):
    id: str = Field(description="The offer's message id (hex).")
    direction: Literal["in", "out"]
    contact: str
    name: str
    size: int
    media_type: str
    root: str = Field(description="Content id: SHA-256 tree root (hex).")
    pieces: int
    have: int
    bytes_done: int
    progress: float
    state: str = Field(
        description="offered, active, paused, done, rejected, refused, cancelled or failed."
    )
    error: str | None = None
    path: str | None = None
    inline: bool = Field(
        False,
        description="The bytes travelled in the offer itself (a file of at most 16 KiB):"
        " received without asking, done once the message is stored; sent, done once"
        " the message is committed (its delivery is the message's state).",
    )


class TransferList(Shape):
    transfers: list[Transfer]


class LinkOffer(Shape):
    """An open offer to link a new device (``POST /v1/devices/link``)."""

    code: str = Field(
        description="`<nameplate>-<word>-<word>`, for `btchat device join`.",
        examples=["37-cobalt-tiger"],
    )
    expires_at: int = Field(description="When the offer ends (ms since the Unix epoch).")
    port: int = Field(description="The TCP port it listens on (for `join --addr`).")


class FileLimitResult(Shape):
    contact: str
    max_bytes: int


class ChannelList(Shape):
    channels: list[Channel]


class ChannelMember(Shape):
    public_key: str | None = None
    id: str | None = None
    role: str | None = None
    online: bool | None = None
    linked: bool | None = None
    me: bool | None = None
    last_heard: int | None = None


class ChannelMembers(Shape):
    members: list[ChannelMember]


class ChannelMessage(Shape):
    channel: str | None = None
    id: str | None = None
    author: str | None = None
    lamport: int | None = None
    ts: int | None = None
    private: bool | None = None
    recipients: list[str] | None = None
    text: str | None = None


class ChannelFile(Shape):
    id: str = Field(description="The file message's id (hex).")
    channel: str
    author: str
    mine: bool = Field(description="We posted it (and serve it from its source).")
    name: str
    size: int
    media_type: str
    root: str = Field(description="Content id: SHA-256 tree root (hex).")
    piece_size: int
    pieces: int
    have: int = Field(description="Pieces held (verified).")
    bytes_done: int
    progress: float
    state: str = Field(description="offered, active, paused, done, rejected, cancelled or failed.")
    error: str | None = None
    path: str | None = Field(None, description="Where the whole file is, once held.")
    served: int = Field(description="Pieces we sent to other members.")
    sources: int = Field(description="Members we fetch from now.")
    stats: dict[str, int] | None = None


class ChannelFiles(Shape):
    files: list[ChannelFile]


class ServingResult(Shape):
    channel: str
    serve: bool


class ChannelMessages(Shape):
    messages: list[ChannelMessage]


#: Response shapes published even where no route names them directly.
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Status,
    Identity,
    Contact,
    ContactList,
    SafetyNumber,
    DeviceList,
    SettingsView,
    SetupState,
    PassphraseStrength,
    QrScan,
    Message,
    MessageList,
    ReadResult,
    PresenceResult,
    Profile,
    ContactRequest,
    RequestList,
    Channel,
    ChannelList,
    ChannelMember,
    ChannelMembers,
    ChannelMessage,
    ChannelMessages,
)

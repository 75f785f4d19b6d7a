"""Channel formats: the .chat file and its link, the key schedule, member lists."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btchat.channels import (
    ChannelKeyError,
    ChannelKeys,
    ChatFile,
    ChatFileError,
    Member,
    MemberList,
    MemberListError,
    is_channel_uri,
    membership_proof,
    new_generation_key,
    open_generation_key,
    seal_generation_key,
    verify_membership_proof,
)
from btchat.channels import chatfile as chatfile_mod
from btchat.channels import members as members_mod
from btchat.codec.bencode import decode, encode
from btchat.identity.idtext import IdError, format_uri, parse_contact_ref
from btchat.identity.keys import Identity
from btchat.identity.rendezvous import EPOCH_SECONDS, OVERLAP_SECONDS

OWNER = Identity.from_seed(b"\x01" * 32)
ADMIN = Identity.from_seed(b"\x02" * 32)
ALICE = Identity.from_seed(b"\x03" * 32)
BOB = Identity.from_seed(b"\x04" * 32)
MALLORY = Identity.from_seed(b"\x05" * 32)
NOW = 1_700_000_000.5
BOUNDARY = 480_000 * EPOCH_SECONDS
TRACKERS = ("udp://tracker.example.org:6969/announce", "https://t.example.net/announce")


def _open() -> ChatFile:
    return ChatFile.create("Book club", trackers=TRACKERS, history=50, now=NOW)


def _invite() -> ChatFile:
    return ChatFile.create("Board", invite_only=True, owner=OWNER, now=NOW)


_OPEN = _open()
_INVITE_BYTES = _invite().to_bytes()


def _fields(cf: ChatFile) -> dict[bytes, Any]:
    d = decode(cf.to_bytes())
    assert isinstance(d, dict)
    return d


def _remac(d: dict[bytes, Any]) -> bytes:
    """Re-encode ``d`` with a correct MAC: what someone holding the file can do."""
    body = {k: v for k, v in d.items() if k != b"mac"}
    owner = body.get(b"owner") if isinstance(body.get(b"owner"), bytes) else None
    key = ChannelKeys.derive(body[b"secret"], owner).file_mac_key
    return encode({**body, b"mac": hmac.new(key, encode(body), hashlib.sha256).digest()})


def _code(exc: pytest.ExceptionInfo[ChatFileError]) -> str:
    return exc.value.code


# ============================================================================ .chat file


def test_open_round_trip() -> None:
    cf = _open()
    assert cf.name == "Book club"
    assert cf.trackers == TRACKERS
    assert (cf.invite_only, cf.history, cf.created, cf.version) == (False, 50, 1_700_000_000, 1)
    assert cf.owner is None and cf.signature is None
    assert len(cf.secret) == 32 and len(cf.mac) == 32
    again = ChatFile.from_bytes(cf.to_bytes())
    assert again == cf
    assert again.to_bytes() == cf.to_bytes()
    assert again.channel_id == cf.channel_id
    assert ChatFile.from_uri(cf.to_uri()) == cf
    assert set(_fields(cf)) == {b"v", b"name", b"secret", b"trackers", b"opts", b"created", b"mac"}


def test_invite_only_round_trip_and_signature() -> None:
    cf = _invite()
    assert cf.invite_only and cf.owner == OWNER.public_key
    assert cf.signature is not None and len(cf.signature) == 64
    assert ChatFile.from_bytes(cf.to_bytes()) == cf
    assert ChatFile.from_uri(cf.to_uri()) == cf
    d = _fields(cf)
    unsigned = {k: v for k, v in d.items() if k not in (b"mac", b"sig")}
    from btchat.identity.keys import verify_signature

    assert verify_signature(
        OWNER.public_key, d[b"sig"], b"btchat chat file v1\x00" + encode(unsigned)
    )


def test_fresh_secret_each_time() -> None:
    assert _open().secret != _open().secret
    assert _open().channel_id != _open().channel_id


def test_repr_hides_secret() -> None:
    cf = _open()
    assert cf.secret.hex() not in repr(cf) and str(cf.secret) not in repr(cf)
    assert cf.keys.root.hex() not in repr(cf.keys)


def test_create_normalises() -> None:
    cf = ChatFile.create("  Cafe\u0301 ", trackers=["  HTTP://x.example/a"], now=NOW)
    assert cf.name == "Caf\u00e9"
    assert cf.trackers == ("http://x.example/a",)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "x" * 101,
        "é" * 51,
        "a\nb",
        "a\x00b",
        "a\u2028b",
        "evil\u202etxt",
        "a\u2066b",
        "\ud800",
    ],
)
def test_create_bad_names(name: str) -> None:
    with pytest.raises(ChatFileError) as exc:
        ChatFile.create(name, now=NOW)
    assert _code(exc) == "bad_name"


def test_name_limits_accepted() -> None:
    assert ChatFile.create("x" * 100, now=NOW).name == "x" * 100
    assert ChatFile.create("👩‍👩‍👧 family", now=NOW).name == "👩‍👩‍👧 family"  # ZWJ is allowed


@pytest.mark.parametrize(
    "url",
    [
        "ftp://tracker.example/announce",
        "wss://tracker.example/",
        "udp://tracker.example/announce",  # no port
        "http://user:pw@tracker.example/",
        "http://good.example@evil.example/",
        "http:///announce",
        "http://tracker.example/a#frag",
        "http://tracker.example/a b",
        "http://tracker.example/\u00e9",
        "http://tracker.example:99999/",
        "http://tracker.example:0/",
        "http://[::1/",
        "tracker.example:6969",
        "http:tracker.example",
        "http://tracker.example/" + "a" * 250,
    ],
)
def test_create_bad_trackers(url: str) -> None:
    with pytest.raises(ChatFileError) as exc:
        ChatFile.create("x", trackers=[url], now=NOW)
    assert _code(exc) == "bad_tracker"


def test_tracker_count_and_duplicates() -> None:
    many = [f"udp://t{i}.example:1" for i in range(9)]
    with pytest.raises(ChatFileError, match="at most 8"):
        ChatFile.create("x", trackers=many, now=NOW)
    assert len(ChatFile.create("x", trackers=many[:8], now=NOW).trackers) == 8
    with pytest.raises(ChatFileError, match="twice"):
        ChatFile.create("x", trackers=["udp://a.example:1", "UDP://a.example:1"], now=NOW)
    ok = ChatFile.create(
        "x", trackers=["udp://[2001:db8::1]:6969", "http://1.2.3.4/a?x=1"], now=NOW
    )
    assert len(ok.trackers) == 2


@pytest.mark.parametrize("history", [-1, 10_001, True])
def test_create_bad_history(history: Any) -> None:
    with pytest.raises(ChatFileError) as exc:
        ChatFile.create("x", history=history, now=NOW)
    assert _code(exc) == "bad_options"


def test_create_owner_rules() -> None:
    with pytest.raises(ChatFileError) as exc:
        ChatFile.create("x", invite_only=True, now=NOW)
    assert _code(exc) == "bad_owner"
    with pytest.raises(ChatFileError) as exc:
        ChatFile.create("x", owner=OWNER, now=NOW)
    assert _code(exc) == "bad_owner"
    with pytest.raises(ChatFileError):
        ChatFile.create("x", now=-1)
    with pytest.raises(ValueError):  # ChatFileError is a ValueError: misuse stays catchable
        ChatFile.create("x", now=float("nan"))


# ------------------------------------------------------------------------- parse errors


def _expect(data: bytes, code: str) -> ChatFileError:
    with pytest.raises(ChatFileError) as exc:
        ChatFile.from_bytes(data)
    assert exc.value.code == code, exc.value
    assert exc.value.message in str(exc.value)
    return exc.value


def test_parse_structure_errors() -> None:
    _expect(b"", "malformed")
    _expect(b"not bencode", "malformed")
    _expect(b"le", "malformed")
    _expect(b"i1e", "malformed")
    _expect(_open().to_bytes() + b"x", "malformed")
    _expect(b"d" + b"1:a" * 2000 + b"e", "too_large")
    _expect(b"de", "bad_version")
    with pytest.raises(ChatFileError) as exc:
        ChatFile.from_bytes("text")  # type: ignore[arg-type]
    assert _code(exc) == "malformed"
    # bytearray/memoryview are fine
    assert ChatFile.from_bytes(bytearray(_OPEN.to_bytes())) == _OPEN
    assert ChatFile.from_bytes(memoryview(_OPEN.to_bytes())) == _OPEN


@pytest.mark.parametrize("version", [0, 2, b"1", [1]])
def test_parse_bad_version(version: Any) -> None:
    d = _fields(_OPEN)
    d[b"v"] = version
    err = _expect(_remac(d), "bad_version")
    assert "not supported" in err.message


@pytest.mark.parametrize("key", [b"name", b"secret", b"trackers", b"opts", b"created", b"mac"])
def test_parse_missing_field(key: bytes) -> None:
    d = _fields(_OPEN)
    del d[key]
    err = _expect(encode(d), "missing_field")
    assert key.decode() in err.message


def test_parse_unknown_and_half_signed() -> None:
    d = _fields(_OPEN)
    d[b"x-extra"] = b"1"
    assert "x-extra" in _expect(_remac(d), "unknown_field").message
    d = _fields(_invite())
    del d[b"sig"]
    _expect(_remac(d), "missing_field")
    d = _fields(_invite())
    del d[b"owner"]
    _expect(_remac(d), "missing_field")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"name", 5),
        (b"secret", b"short"),
        (b"secret", 7),
        (b"trackers", b"udp://x:1"),
        (b"trackers", [1]),
        (b"opts", []),
        (b"created", -1),
        (b"created", 2**53),
        (b"created", b"0"),
        (b"mac", b"\x00" * 31),
    ],
)
def test_parse_wrong_types(key: bytes, value: Any) -> None:
    d = _fields(_OPEN)
    d[key] = value
    _expect(encode(d), "malformed")


@pytest.mark.parametrize(
    "opts",
    [
        {b"invite": 0},
        {b"invite": 0, b"history": 1, b"extra": 1},
        {b"invite": 2, b"history": 1},
        {b"invite": b"0", b"history": 1},
        {b"invite": 0, b"history": -1},
        {b"invite": 0, b"history": 10_001},
    ],
)
def test_parse_bad_options(opts: dict[bytes, Any]) -> None:
    d = _fields(_OPEN)
    d[b"opts"] = opts
    _expect(_remac(d), "bad_options")


def test_parse_content_rules_behind_a_valid_mac() -> None:
    """Someone holding the secret can re-MAC anything; content rules still hold."""
    for name in (b"", b"\xff\xfe", b"a\x1bb", "x\u202e".encode(), b"x" * 101, b" pad"):
        d = _fields(_OPEN)
        d[b"name"] = name
        _expect(_remac(d), "bad_name")
    for trackers in (
        [b"ftp://x.example/"],
        [b"udp://a.example:1"] * 2,
        [b"http://\xc3\xa9.example/"],
        [b"HTTP://x.example/"],
        [b"udp://a%d.example:1" % i for i in range(9)],
    ):
        d = _fields(_OPEN)
        d[b"trackers"] = trackers
        _expect(_remac(d), "bad_tracker")


def test_parse_owner_rules() -> None:
    d = _fields(_OPEN)
    d[b"opts"] = {b"invite": 1, b"history": 50}
    _expect(_remac(d), "bad_owner")  # invite-only without owner
    d = _fields(_invite())
    d[b"opts"] = {b"invite": 0, b"history": 100}
    body = {k: v for k, v in d.items() if k not in (b"mac", b"sig")}
    d[b"sig"] = OWNER.sign(b"btchat chat file v1\x00" + encode(body))
    _expect(_remac(d), "bad_owner")  # owner on an open channel
    d = _fields(_invite())
    d[b"owner"] = bytes(32)  # small-order key
    _expect(_remac(d), "bad_signature")


def test_signature_protects_invite_only_fields_from_holders() -> None:
    """A holder of an invite-only file can recompute the MAC but not the signature."""
    for key, value in [
        (b"name", b"Board (official)"),
        (b"trackers", [b"http://evil.example/"]),
        (b"opts", {b"invite": 1, b"history": 10_000}),
        (b"created", 1),
    ]:
        d = _fields(_invite())
        d[key] = value
        _expect(_remac(d), "bad_signature")


def test_swapped_owner_is_another_channel() -> None:
    """Replacing owner and signature yields a valid file, but of a different channel."""
    cf = _invite()
    d = _fields(cf)
    d[b"owner"] = MALLORY.public_key
    body = {k: v for k, v in d.items() if k not in (b"mac", b"sig")}
    d[b"sig"] = MALLORY.sign(b"btchat chat file v1\x00" + encode(body))
    hijacked = ChatFile.from_bytes(_remac(d))
    assert hijacked.secret == cf.secret
    assert hijacked.channel_id != cf.channel_id
    assert hijacked.keys.infohash(1) != cf.keys.infohash(1)


def _mutations(cf: ChatFile) -> list[tuple[bytes, Any]]:
    d = _fields(cf)
    flip = lambda b: bytes([b[0] ^ 1]) + b[1:]  # noqa: E731
    muts: list[tuple[bytes, Any]] = [
        (b"name", d[b"name"] + b"!"),
        (b"secret", flip(d[b"secret"])),
        (b"trackers", [*d[b"trackers"], b"udp://evil.example:1"]),
        (b"opts", {**d[b"opts"], b"history": d[b"opts"][b"history"] + 1}),
        (b"opts", {**d[b"opts"], b"invite": 1 - d[b"opts"][b"invite"]}),
        (b"created", d[b"created"] + 1),
        (b"mac", flip(d[b"mac"])),
    ]
    if d[b"trackers"]:
        muts.append((b"trackers", d[b"trackers"][:-1]))
    if b"owner" in d:
        muts += [(b"owner", ALICE.public_key), (b"sig", flip(d[b"sig"]))]
    return muts


@pytest.mark.parametrize("kind", ["open", "invite"])
def test_tampering_each_field(kind: str) -> None:
    cf = _OPEN if kind == "open" else _invite()
    for key, value in _mutations(cf):
        d = _fields(cf)
        d[key] = value
        err = _expect(encode(d), "tampered")
        assert "altered" in err.message


@pytest.mark.parametrize("kind", ["open", "invite"])
def test_every_bit_flip_is_refused(kind: str) -> None:
    data = (_OPEN if kind == "open" else _invite()).to_bytes()
    for i in range(len(data)):
        for bit in (0, 5):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(ChatFileError):
                ChatFile.from_bytes(bytes(bad))


# --------------------------------------------------------------------------------- links


def test_uri_form() -> None:
    uri = _OPEN.to_uri()
    assert uri.startswith("btchat:channel?d=")
    data = uri.removeprefix("btchat:channel?d=")
    assert data == data.lower() and "=" not in data
    assert len(_invite().to_uri()) < 600  # fits a QR code comfortably


@pytest.mark.parametrize(
    "transform",
    [
        str.upper,
        lambda u: "  " + u + "\n",
        lambda u: u.replace("btchat:", "btchat://"),
        lambda u: u + "&via=mail",
        lambda u: u + "#frag",
        lambda u: u[:40] + "\n  " + u[40:],  # wrapped by a mail client
    ],
)
def test_uri_lenient_forms(transform: Any) -> None:
    assert ChatFile.from_uri(transform(_OPEN.to_uri())) == _OPEN


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "bad_uri"),
        ("btchat:channel", "bad_uri"),
        ("btchat:channel?", "bad_uri"),
        ("btchat:channel?x=1", "bad_uri"),
        ("btchat:channel?d=a&d=b", "bad_uri"),
        ("btchat:channel?d=%ff", "bad_uri"),
        ("btchat:channel?d=1111", "bad_uri"),
        ("btchat:channel?d=é", "bad_uri"),
        ("btchat:channel?d=ab", "bad_uri"),  # non-canonical: trailing bits set
        ("btchat:channel?d=mfrgg===", "bad_uri"),
        ("btchat:channel?d=mfrgg", "malformed"),  # base32 of b"abc": not bencode
        ("btchat:chan?d=mfrgg", "bad_uri"),
        ("magnet:?xt=urn:btih:00", "bad_uri"),
        ("btchat:channel?d=" + "a" * 7000, "too_large"),
    ],
)
def test_uri_errors(text: str, code: str) -> None:
    with pytest.raises(ChatFileError) as exc:
        ChatFile.from_uri(text)
    assert _code(exc) == code
    with pytest.raises(ChatFileError):
        ChatFile.from_uri(None)  # type: ignore[arg-type]


def test_contact_links_and_channel_links_never_mix() -> None:
    contact = format_uri(ALICE.public_key, "alice")
    assert not is_channel_uri(contact)
    assert not is_channel_uri("bt" + "a" * 56)
    with pytest.raises(ChatFileError) as exc:
        ChatFile.from_uri(contact)
    assert _code(exc) == "bad_uri"
    channel = _OPEN.to_uri()
    assert is_channel_uri(channel) and is_channel_uri(channel.upper())
    assert is_channel_uri("btchat://channel?d=x") and is_channel_uri("BTCHAT:Channel")
    assert not is_channel_uri(123)  # type: ignore[arg-type]
    with pytest.raises(IdError):
        parse_contact_ref(channel)
    with pytest.raises(IdError):
        parse_contact_ref(channel.upper())


# --------------------------------------------------------------------------------- files


def test_save_load(tmp_path: Path) -> None:
    path = tmp_path / "club.chat"
    _OPEN.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ChatFile.load(path) == _OPEN
    assert ChatFile.load(str(path)) == _OPEN
    with pytest.raises(ChatFileError) as exc:
        _invite().save(path)
    assert _code(exc) == "io" and "exists" in exc.value.message
    assert ChatFile.load(path) == _OPEN
    other = _invite()
    other.save(path, overwrite=True)
    assert ChatFile.load(path) == other
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["club.chat"]  # no temp files left


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ChatFileError) as exc:
        ChatFile.load(tmp_path / "missing.chat")
    assert _code(exc) == "io"
    big = tmp_path / "big.chat"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(ChatFileError) as exc:
        ChatFile.load(big)
    assert _code(exc) == "too_large"
    junk = tmp_path / "junk.chat"
    junk.write_bytes(b"\x89PNG")
    with pytest.raises(ChatFileError) as exc:
        ChatFile.load(junk)
    assert _code(exc) == "malformed"
    with pytest.raises(ChatFileError) as exc:
        _OPEN.save(tmp_path / "no" / "dir.chat")
    assert _code(exc) == "io"
    (tmp_path / "adir").mkdir()
    with pytest.raises(ChatFileError) as exc:
        _OPEN.save(tmp_path / "adir", overwrite=True)
    assert _code(exc) == "io"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "big.chat", "junk.chat"]


# ---------------------------------------------------------------------------------- fuzz


@given(st.binary(max_size=5000))
@settings(max_examples=400)
def test_fuzz_from_bytes(data: bytes) -> None:
    try:
        ChatFile.from_bytes(data)
    except ChatFileError as exc:
        assert exc.code in chatfile_mod.REASON_CODES


def _bencodable() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.binary(max_size=40), st.integers(-(2**60), 2**60))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.binary(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )


_FIELD_KEYS = [b"v", b"name", b"secret", b"trackers", b"opts", b"created", b"mac", b"owner", b"sig"]


@given(st.dictionaries(st.sampled_from(_FIELD_KEYS), _bencodable(), max_size=9), st.booleans())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_structured(d: dict[bytes, Any], remac: bool) -> None:
    d.setdefault(b"secret", os.urandom(32))
    secret_ok = isinstance(d[b"secret"], bytes) and len(d[b"secret"]) == 32
    owner_ok = not isinstance(d.get(b"owner"), bytes) or len(d[b"owner"]) == 32
    data = _remac(d) if remac and secret_ok and owner_ok else encode(d)
    try:
        ChatFile.from_bytes(data)
    except ChatFileError as exc:
        assert exc.code in chatfile_mod.REASON_CODES


@given(st.integers(0, 10**6), st.binary(min_size=1, max_size=8))
@settings(max_examples=300)
def test_fuzz_mutations(seed: int, junk: bytes) -> None:
    data = bytearray(_INVITE_BYTES)
    pos = seed % len(data)
    data[pos : pos + len(junk) // 2] = junk
    try:
        ChatFile.from_bytes(bytes(data))
    except ChatFileError as exc:
        assert exc.code in chatfile_mod.REASON_CODES
    else:
        assert bytes(data) == _INVITE_BYTES


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_fuzz_from_uri_text(text: str) -> None:
    for candidate in (text, "btchat:channel?d=" + text, "btchat:channel?" + text):
        try:
            ChatFile.from_uri(candidate)
        except ChatFileError as exc:
            assert exc.code in chatfile_mod.REASON_CODES


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_fuzz_from_uri_base32(data: bytes) -> None:
    b32 = base64.b32encode(data).decode().rstrip("=").lower()
    try:
        ChatFile.from_uri("btchat:channel?d=" + b32)
    except ChatFileError as exc:
        assert exc.code in chatfile_mod.REASON_CODES


# ============================================================================ key schedule

SECRET = bytes(range(32))


def _rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 written out with the standard library, to cross-check the schedule."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def test_schedule_matches_independent_hkdf() -> None:
    salt = b"btchat channel v1"
    keys = ChannelKeys.derive(SECRET)
    ikm = SECRET + b"\x00"
    assert keys.channel_id == _rfc5869(ikm, salt, b"btchat channel id v1\x00", 32)
    assert keys.infohash(480_000) == _rfc5869(
        ikm, salt, b"btchat channel infohash v1\x00" + (480_000).to_bytes(8, "big"), 20
    )
    assert keys.file_mac_key == _rfc5869(ikm, salt, b"btchat channel file mac v1\x00", 32)
    assert keys.proof_key == _rfc5869(ikm, salt, b"btchat channel proof v1\x00", 32)
    gen = _rfc5869(ikm, salt, b"btchat channel open generation v1\x00" + bytes(4), 32)
    traffic = _rfc5869(gen, keys.channel_id, b"btchat channel traffic v1\x00" + bytes(4), 32)
    assert keys.traffic_key(0) == traffic
    invite = ChannelKeys.derive(SECRET, OWNER.public_key)
    ikm = SECRET + b"\x01" + OWNER.public_key
    assert invite.channel_id == _rfc5869(ikm, salt, b"btchat channel id v1\x00", 32)
    g = b"\x42" * 32
    assert invite.traffic_key(7, g) == _rfc5869(
        g, invite.channel_id, b"btchat channel traffic v1\x00" + (7).to_bytes(4, "big"), 32
    )
    assert invite.generation_proof_key(7, g) == _rfc5869(
        g, invite.channel_id, b"btchat channel generation proof v1\x00" + (7).to_bytes(4, "big"), 32
    )


def test_file_written_from_the_spec_parses() -> None:
    """A .chat file built from the documented layout alone, with the standard library's
    HMAC, is accepted and re-encodes to the same bytes."""
    salt, ikm = b"btchat channel v1", SECRET + b"\x00"
    mac_key = _rfc5869(ikm, salt, b"btchat channel file mac v1\x00", 32)
    body = {
        b"v": 1,
        b"name": "Café".encode(),
        b"secret": SECRET,
        b"trackers": [b"udp://tracker.example:6969"],
        b"opts": {b"invite": 0, b"history": 100},
        b"created": 1_700_000_000,
    }
    data = encode({**body, b"mac": hmac.new(mac_key, encode(body), hashlib.sha256).digest()})
    cf = ChatFile.from_bytes(data)
    assert (cf.name, cf.trackers, cf.history, cf.invite_only) == (
        "Café",
        ("udp://tracker.example:6969",),
        100,
        False,
    )
    assert cf.to_bytes() == data
    assert cf.mac.hex() == KNOWN_FILE_MAC


KNOWN_FILE_MAC = "c93ce9687c8942628ca9cc0d657e1f910afda4dab1efd7c73b556059dbc84cf9"


def test_known_answers() -> None:
    """Pinned: changing the derivation would split channels between versions."""
    keys = ChannelKeys.derive(SECRET)
    assert keys.channel_id.hex() == KNOWN_CHANNEL_ID
    assert keys.infohash(480_000).hex() == KNOWN_INFOHASH


KNOWN_CHANNEL_ID = "3e16d22f3aaac70a11b8e317470958ed5c3a8aae547f9a4c63b3e4c39b412a30"
KNOWN_INFOHASH = "18275b18c1f59ae9f96b0caa34a02ba0d245f87e"


def test_bindings_separate_channels() -> None:
    open_ = ChannelKeys.derive(SECRET)
    owned = ChannelKeys.derive(SECRET, OWNER.public_key)
    other = ChannelKeys.derive(SECRET, ALICE.public_key)
    ids = {k.channel_id for k in (open_, owned, other)}
    assert len(ids) == 3
    assert len({k.infohash(5) for k in (open_, owned, other)}) == 3
    values = [open_.channel_id, open_.file_mac_key, open_.proof_key, open_.traffic_key(0)]
    assert len(set(values)) == 4
    assert open_.infohash(5) not in {v[:20] for v in values}
    assert ChannelKeys.derive(SECRET) == open_  # deterministic
    assert "root" not in repr(open_) and open_.root.hex() not in repr(open_)


def test_derive_misuse() -> None:
    with pytest.raises(ValueError):
        ChannelKeys.derive(b"short")
    with pytest.raises(ValueError):
        ChannelKeys.derive(SECRET, b"short")
    keys = ChannelKeys.derive(SECRET)
    for bad in (-1, 2**64, 1.5):
        with pytest.raises(ValueError):
            keys.infohash(bad)  # type: ignore[arg-type]


def test_infohash_rotates() -> None:
    keys = ChannelKeys.derive(SECRET)
    hashes_ = [keys.infohash(e) for e in range(480_000, 480_024)]
    assert all(len(h) == 20 for h in hashes_)
    assert len(set(hashes_)) == 24
    assert keys.infohash(480_000) == ChannelKeys.derive(SECRET).infohash(480_000)


def test_targets_per_phase() -> None:
    keys = ChannelKeys.derive(SECRET)
    e = BOUNDARY // EPOCH_SECONDS
    mid = BOUNDARY + EPOCH_SECONDS / 2
    assert keys.announce_targets(mid) == [keys.infohash(e)]
    assert keys.lookup_targets(mid) == [keys.infohash(e)]
    assert keys.announce_targets(BOUNDARY + 5) == [keys.infohash(e)]
    assert keys.lookup_targets(BOUNDARY + 5) == [keys.infohash(e), keys.infohash(e - 1)]
    assert keys.announce_targets(BOUNDARY - 5) == [keys.infohash(e - 1), keys.infohash(e)]
    assert keys.lookup_targets(BOUNDARY - 5) == [keys.infohash(e - 1), keys.infohash(e)]
    assert keys.lookup_targets(0.0) == [keys.infohash(0)]
    with pytest.raises(ValueError):
        keys.announce_targets(-1)


@pytest.mark.parametrize("base_offset", [-900, -600, -599, -300, -1, 0, 1, 299, 599, 600, 900])
@pytest.mark.parametrize("skew", [-600, -420, -60, 0, 60, 420, 600])
def test_skewed_members_meet(base_offset: int, skew: int) -> None:
    keys = ChannelKeys.derive(SECRET)
    announcer_now = BOUNDARY + base_offset
    seeker_now = announcer_now + skew
    assert abs(skew) <= OVERLAP_SECONDS
    assert set(keys.announce_targets(announcer_now)) & set(keys.lookup_targets(seeker_now))


def test_other_channels_unrelated() -> None:
    a = ChannelKeys.derive(SECRET)
    b = ChannelKeys.derive(bytes(32))
    now = BOUNDARY - 30
    assert not set(a.announce_targets(now)) & set(b.lookup_targets(now))


# ----------------------------------------------------------------------- membership proof

TRANSCRIPT = hashlib.blake2b(b"noise handshake").digest()  # 64 bytes, like Noise's h


def test_membership_proof() -> None:
    keys = ChannelKeys.derive(SECRET)
    proof = membership_proof(keys.proof_key, TRANSCRIPT, ALICE.public_key)
    assert len(proof) == 32
    assert verify_membership_proof(keys.proof_key, TRANSCRIPT, ALICE.public_key, proof)
    assert (
        proof
        == hmac.new(
            keys.proof_key,
            b"btchat channel membership proof v1\x00" + ALICE.public_key + TRANSCRIPT,
            hashlib.sha256,
        ).digest()
    )


def test_membership_proof_refusals() -> None:
    keys = ChannelKeys.derive(SECRET)
    proof = membership_proof(keys.proof_key, TRANSCRIPT, ALICE.public_key)
    other = ChannelKeys.derive(bytes(32)).proof_key
    assert not verify_membership_proof(other, TRANSCRIPT, ALICE.public_key, proof)
    assert not verify_membership_proof(
        keys.proof_key, TRANSCRIPT[:-1] + b"\x00", ALICE.public_key, proof
    )
    # Reflection: Bob cannot pass Alice's proof off as his own on the same session.
    assert not verify_membership_proof(keys.proof_key, TRANSCRIPT, BOB.public_key, proof)
    for bad in (b"", proof[:-1], proof + b"\x00", bytes(32), "x" * 32):
        assert not verify_membership_proof(keys.proof_key, TRANSCRIPT, ALICE.public_key, bad)  # type: ignore[arg-type]
    flipped = bytes([proof[0] ^ 1]) + proof[1:]
    assert not verify_membership_proof(keys.proof_key, TRANSCRIPT, ALICE.public_key, flipped)
    # A generation proof key is another key: file holders cannot fake current membership.
    g = new_generation_key()
    invite = ChannelKeys.derive(SECRET, OWNER.public_key)
    gen_proof = membership_proof(invite.generation_proof_key(1, g), TRANSCRIPT, ALICE.public_key)
    assert not verify_membership_proof(invite.proof_key, TRANSCRIPT, ALICE.public_key, gen_proof)
    assert verify_membership_proof(
        invite.generation_proof_key(1, g), TRANSCRIPT, ALICE.public_key, gen_proof
    )


@pytest.mark.parametrize("transcript", [b"", b"x" * 31, b"x" * 65])
def test_membership_proof_misuse(transcript: bytes) -> None:
    key = ChannelKeys.derive(SECRET).proof_key
    with pytest.raises(ValueError):
        membership_proof(key, transcript, ALICE.public_key)
    with pytest.raises(ValueError):
        verify_membership_proof(key, transcript, ALICE.public_key, bytes(32))
    with pytest.raises(ValueError):
        membership_proof(key[:16], TRANSCRIPT, ALICE.public_key)
    with pytest.raises(ValueError):
        membership_proof(key, TRANSCRIPT, b"short")


# --------------------------------------------------------------------------- traffic keys


def test_traffic_keys_open_channel() -> None:
    keys = ChannelKeys.derive(SECRET)
    gens = [keys.traffic_key(g) for g in range(5)]
    assert len(set(gens)) == 5 and all(len(k) == 32 for k in gens)
    assert keys.traffic_key(2**32 - 1)
    with pytest.raises(ValueError):
        keys.traffic_key(2**32)
    with pytest.raises(ValueError):
        keys.traffic_key(-1)
    with pytest.raises(ValueError, match="derives"):
        keys.traffic_key(0, new_generation_key())


def test_invite_only_traffic_keys_need_the_sealed_generation_secret() -> None:
    invite = ChannelKeys.derive(SECRET, OWNER.public_key)
    with pytest.raises(ValueError, match="sealed"):
        invite.traffic_key(0)
    with pytest.raises(ValueError, match="sealed"):
        invite.generation_proof_key(3)
    with pytest.raises(ValueError):
        invite.traffic_key(0, b"short")
    g0, g1 = new_generation_key(), new_generation_key()
    assert g0 != g1
    k0, k1 = invite.traffic_key(0, g0), invite.traffic_key(1, g1)
    assert k0 != k1
    assert invite.traffic_key(1, g0) != k0  # generation number is bound in
    # The same generation secret in another channel gives an unrelated key.
    assert ChannelKeys.derive(bytes(32), OWNER.public_key).traffic_key(0, g0) != k0
    # Nothing a file holder can derive equals the key.
    derivable = {
        invite.channel_id,
        invite.file_mac_key,
        invite.proof_key,
        ChannelKeys.derive(SECRET).traffic_key(1),
    }
    assert k1 not in derivable


# ------------------------------------------------------------------------ generation keys

CHAN = ChannelKeys.derive(SECRET, OWNER.public_key).channel_id
ISSUERS = frozenset({OWNER.public_key, ADMIN.public_key})


def _grant(to: Identity, *, issuer: Identity = OWNER, chan: bytes = CHAN, gen: int = 1) -> bytes:
    return seal_generation_key(
        issuer,
        to.public_key,
        channel_id=chan,
        generation=gen,
        key=b"\x77" * 32,
        member_list_version=4,
    )


def test_generation_key_round_trip() -> None:
    sealed = _grant(ALICE)
    assert b"\x77" * 32 not in sealed
    got = open_generation_key(ALICE, sealed, channel_id=CHAN, issuers=ISSUERS)
    assert (got.generation, got.key, got.member_list_version) == (1, b"\x77" * 32, 4)
    assert (got.issuer, got.recipient, got.channel_id) == (OWNER.public_key, ALICE.public_key, CHAN)
    assert got.key.hex() not in repr(got)
    by_admin = _grant(BOB, issuer=ADMIN, gen=9)
    assert open_generation_key(BOB, by_admin, channel_id=CHAN, issuers=ISSUERS).generation == 9


def test_generation_key_only_for_intended_member() -> None:
    sealed = _grant(ALICE)
    for who in (BOB, OWNER, MALLORY):
        with pytest.raises(ChannelKeyError, match="not sealed to us"):
            open_generation_key(who, sealed, channel_id=CHAN, issuers=ISSUERS)


def test_generation_key_refusals() -> None:
    with pytest.raises(ChannelKeyError, match="another channel"):
        open_generation_key(
            ALICE, _grant(ALICE, chan=b"\x01" * 32), channel_id=CHAN, issuers=ISSUERS
        )
    # A removed member (or anyone) can seal a key to a member, but is not an issuer.
    with pytest.raises(ChannelKeyError, match="owner or an admin"):
        open_generation_key(ALICE, _grant(ALICE, issuer=MALLORY), channel_id=CHAN, issuers=ISSUERS)
    with pytest.raises(ChannelKeyError, match="owner or an admin"):
        open_generation_key(ALICE, _grant(ALICE, issuer=ADMIN), channel_id=CHAN, issuers={CHAN})


def _unseal(identity: Identity, sealed: bytes) -> dict[bytes, Any]:
    from nacl.bindings import crypto_sign_ed25519_sk_to_curve25519
    from nacl.public import PrivateKey, SealedBox

    sk = crypto_sign_ed25519_sk_to_curve25519(identity.seed + identity.public_key)
    d = decode(SealedBox(PrivateKey(sk)).decrypt(sealed))
    assert isinstance(d, dict)
    return d


def _reseal(to: Identity, d: dict[bytes, Any]) -> bytes:
    from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
    from nacl.public import PublicKey, SealedBox

    return SealedBox(PublicKey(crypto_sign_ed25519_pk_to_curve25519(to.public_key))).encrypt(
        encode(d)
    )


def test_generation_key_forwarding_and_forgery() -> None:
    d = _unseal(BOB, _grant(BOB))
    # Bob re-seals his own grant to Alice: it names Bob, so Alice refuses it.
    with pytest.raises(ChannelKeyError, match="someone else"):
        open_generation_key(ALICE, _reseal(ALICE, d), channel_id=CHAN, issuers=ISSUERS)
    # Editing the key or generation breaks the owner's signature.
    for key, value in [(b"key", b"\x00" * 32), (b"gen", 2), (b"to", ALICE.public_key)]:
        forged = {**d, key: value}
        with pytest.raises(ChannelKeyError, match="signature"):
            open_generation_key(ALICE, _reseal(ALICE, forged), channel_id=CHAN, issuers=ISSUERS)
    for forged in (
        {**d, b"v": 2},
        {k: v for k, v in d.items() if k != b"mlv"},
        {**d, b"extra": 1},
        {**d, b"gen": -1},
        {**d, b"key": b"short"},
    ):
        with pytest.raises(ChannelKeyError):
            open_generation_key(ALICE, _reseal(ALICE, forged), channel_id=CHAN, issuers=ISSUERS)
    with pytest.raises(ChannelKeyError, match="malformed"):
        open_generation_key(ALICE, _reseal(ALICE, [1]), channel_id=CHAN, issuers=ISSUERS)  # type: ignore[arg-type]


def test_generation_key_size_limit() -> None:
    with pytest.raises(ChannelKeyError, match="not a generation key grant"):
        open_generation_key(ALICE, bytes(1025), channel_id=CHAN, issuers=ISSUERS)
    with pytest.raises(ChannelKeyError):
        open_generation_key(ALICE, "text", channel_id=CHAN, issuers=ISSUERS)  # type: ignore[arg-type]


@given(st.binary(max_size=1200))
@settings(max_examples=200)
def test_fuzz_open_generation_key(data: bytes) -> None:
    with pytest.raises(ChannelKeyError):
        open_generation_key(ALICE, data, channel_id=CHAN, issuers=ISSUERS)


def test_seal_generation_key_misuse() -> None:
    kwargs: dict[str, Any] = {
        "channel_id": CHAN,
        "generation": 1,
        "key": b"\x01" * 32,
        "member_list_version": 1,
    }
    with pytest.raises(ValueError, match="Ed25519"):
        seal_generation_key(OWNER, bytes(32), **kwargs)
    for field, bad in [
        ("channel_id", b"x"),
        ("generation", -1),
        ("generation", 2**32),
        ("key", b"x"),
        ("member_list_version", -1),
    ]:
        with pytest.raises(ValueError):
            seal_generation_key(OWNER, ALICE.public_key, **{**kwargs, field: bad})


# ============================================================================ member lists

INVITE = _invite()
ICHAN, IOWNER = INVITE.channel_id, INVITE.owner
assert IOWNER is not None


def _first() -> MemberList:
    ml = MemberList.create(ICHAN, OWNER.public_key, now=NOW).sign(OWNER)
    return _add_admin_and_alice(ml, NOW).sign(OWNER)


def _add_admin_and_alice(ml: MemberList, now: float) -> MemberList:
    return ml.apply(
        add=[ADMIN.public_key, ALICE.public_key], roles={ADMIN.public_key: "admin"}, now=now
    )


def _check(ml: MemberList, previous: MemberList | None) -> None:
    ml.verify(previous, channel_id=ICHAN, owner=OWNER.public_key)


def _refused(ml: MemberList, previous: MemberList | None, code: str) -> MemberListError:
    with pytest.raises(MemberListError) as exc:
        _check(ml, previous)
    assert exc.value.code == code, exc.value
    return exc.value


def test_member_list_round_trip() -> None:
    v1 = MemberList.create(ICHAN, OWNER.public_key, now=NOW).sign(OWNER)
    assert (v1.version, v1.generation, v1.previous_digest) == (1, 0, b"")
    assert v1.members == (Member(OWNER.public_key, "owner", int(NOW)),)
    _check(v1, None)
    again = MemberList.from_bytes(v1.to_bytes())
    assert again == v1 and again.to_bytes() == v1.to_bytes()
    v2 = _add_admin_and_alice(v1, NOW + 5).sign(OWNER)
    _check(v2, v1)
    assert v2.previous_digest == v1.digest == hashlib.sha256(v1.to_bytes()).digest()
    assert [m.key for m in v2.members] == sorted(m.key for m in v2.members)
    assert v2.role_of(ADMIN.public_key) == "admin" and v2.role_of(ALICE.public_key) == "member"
    assert v2.role_of(BOB.public_key) is None
    assert ALICE.public_key in v2 and BOB.public_key not in v2
    assert v2.key_issuers == {OWNER.public_key, ADMIN.public_key}
    assert v2.owner == OWNER.public_key
    assert MemberList.from_bytes(v2.to_bytes()) == v2
    assert set(decode(v2.to_bytes())) == set(members_mod._KEYS)


def test_admin_may_add_and_remove_members() -> None:
    v2 = _first()
    v3 = v2.apply(add=[BOB.public_key], now=NOW).sign(ADMIN)
    _check(v3, v2)
    assert v3.generation == v2.generation
    v4 = v3.apply(remove=[ALICE.public_key], now=NOW).sign(ADMIN)
    assert v4.generation == v3.generation + 1  # removal rotates the traffic key
    _check(v4, v3)
    assert MemberList.from_bytes(v4.to_bytes()) == v4


def test_admin_limits() -> None:
    v2 = _first()
    v2b = v2.apply(add=[BOB.public_key], roles={BOB.public_key: "admin"}, now=NOW).sign(OWNER)
    _check(v2b, v2)
    cases = [
        v2.apply(add=[BOB.public_key], roles={BOB.public_key: "admin"}, now=NOW),  # new admin
        v2.apply(roles={ALICE.public_key: "admin"}, now=NOW),  # promote
        v2b.apply(remove=[BOB.public_key], now=NOW),  # remove an admin
        v2b.apply(roles={BOB.public_key: "member"}, now=NOW),  # demote an admin
    ]
    for i, unsigned in enumerate(cases):
        previous = v2 if i < 2 else v2b
        err = _refused(unsigned.sign(ADMIN), previous, "unauthorized")
        assert "owner" in err.message
    # Rewriting an existing entry (here: Alice's added time) is the owner's business.
    edited = tuple(Member(m.key, m.role, 1) if m.key == ALICE.public_key else m for m in v2.members)
    forged = MemberList(ICHAN, 3, v2.generation, edited, v2.digest).sign(ADMIN)
    _refused(forged, v2, "unauthorized")


def test_owner_may_do_anything_but_lose_ownership() -> None:
    v2 = _first()
    v3 = v2.apply(remove=[ADMIN.public_key], roles={ALICE.public_key: "admin"}, now=NOW)
    _check(v3.sign(OWNER), v2)
    # The owner may jump versions (resynchronising members who missed some).
    jump = MemberList(ICHAN, 40, v2.generation + 1, v3.members, b"").sign(OWNER)
    _check(jump, v2)
    # No one, not even the owner, swaps in another owner.
    other = MemberList(
        ICHAN, 5, 0, tuple(sorted([Member(MALLORY.public_key, "owner", 1)], key=lambda m: m.key))
    ).sign(MALLORY)
    _refused(other, v2, "bad_owner")
    _refused(other, None, "bad_owner")


def test_non_admins_cannot_sign() -> None:
    v2 = _first()
    with pytest.raises(MemberListError) as exc:
        v2.apply(add=[BOB.public_key], now=NOW).sign(ALICE)  # a plain member
    assert exc.value.code == "unauthorized"
    with pytest.raises(MemberListError):
        v2.apply(add=[BOB.public_key], now=NOW).sign(MALLORY)  # a stranger
    # Forged by hand anyway: verify refuses.
    for signer in (ALICE, MALLORY):
        unsigned = v2.apply(add=[BOB.public_key, MALLORY.public_key], now=NOW)
        forged = MemberList(
            unsigned.channel_id,
            unsigned.version,
            unsigned.generation,
            unsigned.members,
            unsigned.previous_digest,
            signer.public_key,
            signer.sign(
                b"btchat member list v1\x00"
                + encode({**unsigned._fields(), b"by": signer.public_key})
            ),
        )
        assert MemberList.from_bytes(forged.to_bytes()) == forged  # well signed...
        _refused(forged, v2, "unauthorized")  # ...by someone without authority
    # With nothing to compare against, only the owner may sign.
    _refused(v2.apply(add=[BOB.public_key], now=NOW).sign(ADMIN), None, "unauthorized")


def test_rollback_refused() -> None:
    v2 = _first()
    v3 = v2.apply(add=[BOB.public_key], now=NOW).sign(OWNER)
    _check(v3, v2)
    err = _refused(v2, v3, "rollback")
    assert "older" in err.message
    err = _refused(v3, v3, "rollback")
    assert "the one we have" in err.message
    rival = MemberList(ICHAN, v3.version, v3.generation, v2.members, v2.digest).sign(OWNER)
    _refused(rival, v3, "rollback")


def test_generation_rules() -> None:
    v2 = _first()
    members = tuple(m for m in v2.members if m.key != ALICE.public_key)
    silent = MemberList(ICHAN, 3, v2.generation, members, v2.digest).sign(OWNER)
    _refused(silent, v2, "no_rotation")
    rotated = v2.apply(rotate=True, now=NOW).sign(OWNER)
    assert rotated.generation == v2.generation + 1
    _check(rotated, v2)
    back = MemberList(ICHAN, 4, v2.generation, rotated.members, rotated.digest).sign(OWNER)
    _refused(back, rotated, "bad_generation")


def test_admin_lists_must_chain() -> None:
    v2 = _first()
    skipped = MemberList(ICHAN, 4, v2.generation, v2.members, v2.digest).sign(ADMIN)
    _refused(skipped, v2, "not_successor")
    wrong_prev = MemberList(ICHAN, 3, v2.generation, v2.members, b"\x00" * 32).sign(ADMIN)
    _refused(wrong_prev, v2, "not_successor")


def test_demoted_admin_cannot_fork_stale_members() -> None:
    v2 = _first()
    v3 = v2.apply(roles={ADMIN.public_key: "member"}, now=NOW).sign(OWNER)
    _check(v3, v2)
    # The demoted admin signs a v4 "as if" still admin: members on v3 refuse it...
    stale = MemberList(ICHAN, 4, v2.generation, v2.members, v2.digest).sign(ADMIN)
    _refused(stale, v3, "unauthorized")
    # ...and members still on v2 refuse it too: it does not chain onto v2.
    _refused(stale, v2, "not_successor")
    # The only list that chains onto v2 has v3's version: a v3-holder sees a rollback.
    fork = v2.apply(add=[MALLORY.public_key], now=NOW).sign(ADMIN)
    _refused(fork, v3, "rollback")


def test_wrong_channel_and_signature() -> None:
    v2 = _first()
    other = MemberList.create(b"\x09" * 32, OWNER.public_key, now=NOW).sign(OWNER)
    _refused(other, None, "wrong_channel")
    _refused(other, v2, "wrong_channel")
    v3 = v2.apply(add=[BOB.public_key], now=NOW).sign(OWNER)
    with pytest.raises(MemberListError) as exc:
        foreign = MemberList(b"\x09" * 32, 1, 0, v2.members, b"", v2.signer, v2.signature)
        v3.verify(foreign, channel_id=ICHAN, owner=OWNER.public_key)
    assert exc.value.code == "wrong_channel"
    bad_sig = MemberList(
        ICHAN, v3.version, v3.generation, v3.members, v3.previous_digest, v3.signer, bytes(64)
    )
    _refused(bad_sig, v2, "bad_signature")
    unsigned = v2.apply(add=[BOB.public_key], now=NOW)
    _refused(unsigned, v2, "unsigned")
    with pytest.raises(MemberListError) as exc:
        unsigned.to_bytes()
    assert exc.value.code == "unsigned"
    with pytest.raises(MemberListError) as exc:
        unsigned.apply(add=[MALLORY.public_key], now=NOW)
    assert exc.value.code == "unsigned"


def test_apply_misuse() -> None:
    v2 = _first()
    for kwargs in (
        {"remove": [BOB.public_key]},
        {"remove": [OWNER.public_key]},
        {"add": [ALICE.public_key]},
        {"add": [bytes(32)]},
        {"add": [b"short"]},
        {"roles": {BOB.public_key: "admin"}},
        {"roles": {ALICE.public_key: "owner"}},
        {"roles": {OWNER.public_key: "member"}},
        {"remove": [ALICE.public_key], "add": [ALICE.public_key]},
    ):
        with pytest.raises(MemberListError) as exc:
            v2.apply(now=NOW, **kwargs)  # type: ignore[arg-type]
        assert exc.value.code == "bad_change", kwargs
    with pytest.raises(MemberListError):
        v2.apply(now=-1)
    with pytest.raises(MemberListError):
        MemberList.create(ICHAN, OWNER.public_key, now=-1)
    with pytest.raises(MemberListError):
        MemberList.create(b"x", OWNER.public_key, now=NOW)
    last = MemberList(ICHAN, 9, 2**32 - 1, v2.members).sign(OWNER)
    with pytest.raises(MemberListError, match="out of generations"):
        last.apply(rotate=True, now=NOW)
    assert last.apply(add=[BOB.public_key], now=NOW).generation == 2**32 - 1
    # Hand-built lists keep the invariants too.
    alice = Member(ALICE.public_key, "member", 1)
    owner = Member(OWNER.public_key, "owner", 1)
    for members in (
        (alice,),
        (owner, owner),
        tuple(sorted((alice, owner), key=lambda m: m.key))[::-1],
    ):
        with pytest.raises(MemberListError) as exc:
            MemberList(ICHAN, 1, 0, members)
        assert exc.value.code == "malformed"
    with pytest.raises(MemberListError):
        MemberList.create(ICHAN, bytes(32), now=NOW)
    keys = [Identity.from_seed(i.to_bytes(32, "big")).public_key for i in range(10, 10 + 512)]
    with pytest.raises(MemberListError, match="at most"):
        v2.apply(add=keys, now=NOW)


def _list_fields(ml: MemberList) -> dict[bytes, Any]:
    d = decode(ml.to_bytes())
    assert isinstance(d, dict)
    return d


def _resign(d: dict[bytes, Any], by: Identity = OWNER) -> bytes:
    body = {k: v for k, v in d.items() if k != b"sig"}
    body[b"by"] = by.public_key
    return encode({**body, b"sig": by.sign(b"btchat member list v1\x00" + encode(body))})


def _parse_refused(data: bytes, code: str) -> None:
    with pytest.raises(MemberListError) as exc:
        MemberList.from_bytes(data)
    assert exc.value.code == code, exc.value


def test_member_list_parse_errors() -> None:
    v2 = _first()
    _parse_refused(b"junk", "malformed")
    _parse_refused(b"le", "malformed")
    _parse_refused(b"x" * (members_mod.MAX_MEMBER_LIST + 1), "too_large")
    _parse_refused("text", "malformed")  # type: ignore[arg-type]
    d = _list_fields(v2)
    _parse_refused(_resign({**d, b"v": 2}), "bad_version")
    _parse_refused(encode({k: v for k, v in d.items() if k != b"sig"}), "unsigned")
    _parse_refused(_resign({**d, b"extra": 1}), "malformed")
    _parse_refused(_resign({**d, b"ver": 0}), "malformed")
    _parse_refused(_resign({**d, b"prev": b"x"}), "malformed")
    _parse_refused(_resign({**d, b"members": []}), "malformed")
    entries = d[b"members"]
    _parse_refused(_resign({**d, b"members": entries[::-1]}), "malformed")  # unsorted
    _parse_refused(_resign({**d, b"members": [entries[0], *entries]}), "malformed")  # repeated
    two_owners = [{**e, b"r": b"owner"} for e in entries]
    _parse_refused(_resign({**d, b"members": two_owners}), "malformed")
    no_owner = [{**e, b"r": b"member"} for e in entries]
    _parse_refused(_resign({**d, b"members": no_owner}), "malformed")
    for bad in ({**entries[0], b"r": b"king"}, {**entries[0], b"k": bytes(32)}, [1], {}):
        _parse_refused(_resign({**d, b"members": [bad, *entries[1:]]}), "malformed")
    _parse_refused(encode({**d, b"ver": d[b"ver"] + 1}), "bad_signature")


def test_member_list_bit_flips() -> None:
    data = _first().to_bytes()
    for i in range(0, len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(MemberListError):
            MemberList.from_bytes(bytes(bad))


@given(st.binary(max_size=3000))
@settings(max_examples=300)
def test_fuzz_member_list(data: bytes) -> None:
    try:
        MemberList.from_bytes(data)
    except MemberListError as exc:
        assert exc.code in members_mod.REASON_CODES


# ============================================================================ end to end


def _grants(issuer: Identity, ml: MemberList, generation: int, key: bytes) -> dict[bytes, bytes]:
    """What the owner or an admin sends after a list change: one grant per member."""
    return {
        m.key: seal_generation_key(
            issuer,
            m.key,
            channel_id=ICHAN,
            generation=generation,
            key=key,
            member_list_version=ml.version,
        )
        for m in ml.members
    }


def _open_grant(who: Identity, sealed: bytes, ml: MemberList) -> bytes:
    return open_generation_key(who, sealed, channel_id=ICHAN, issuers=ml.key_issuers).key


def test_removed_member_loses_access() -> None:
    """An admin removes Bob: the others get generation 1, Bob cannot."""
    keys = ChatFile.from_uri(INVITE.to_uri()).keys
    v2 = _first()
    v3 = v2.apply(add=[BOB.public_key], now=NOW).sign(ADMIN)
    _check(v3, v2)
    grants0 = _grants(OWNER, v3, 0, new_generation_key())
    bob_g0 = _open_grant(BOB, grants0[BOB.public_key], v3)
    bob_k0 = keys.traffic_key(0, bob_g0)

    v4 = v3.apply(remove=[BOB.public_key], now=NOW).sign(ADMIN)
    _check(v4, v3)
    assert v4.generation == 1
    grants1 = _grants(ADMIN, v4, v4.generation, new_generation_key())
    assert BOB.public_key not in grants1
    k1 = {
        keys.traffic_key(1, _open_grant(who, grants1[who.public_key], v4))
        for who in (OWNER, ADMIN, ALICE)
    }
    assert len(k1) == 1
    new_key = k1.pop()
    assert new_key != bob_k0
    # Bob has the file, generation 0 and every grant on the wire: none opens for him.
    for sealed in grants1.values():
        with pytest.raises(ChannelKeyError):
            _open_grant(BOB, sealed, v4)
    with pytest.raises(ValueError):
        keys.traffic_key(1)
    assert new_key != keys.traffic_key(1, bob_g0)
    # Bob sealing his own "generation 1" to Alice is refused: he is no issuer.
    fake = _grants(BOB, v4, 1, bob_g0)[ALICE.public_key]
    with pytest.raises(ChannelKeyError, match="owner or an admin"):
        _open_grant(ALICE, fake, v4)

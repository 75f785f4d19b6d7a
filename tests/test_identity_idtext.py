"""User IDs as text: round trips, typo detection, and refusal of malformed input."""

from __future__ import annotations

import base64

import pytest

from btchat.identity.idtext import (
    ID_LENGTH,
    MAX_NAME_LENGTH,
    IdError,
    format_id,
    format_uri,
    id_checksum,
    parse_contact_ref,
    parse_id,
    parse_uri,
)
from btchat.identity.keys import Identity

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
PK = Identity.from_seed(bytes(range(32))).public_key
OTHER = Identity.from_seed(bytes(range(1, 33))).public_key


def test_format_shape() -> None:
    text = format_id(PK)
    assert text.startswith("bt")
    assert len(text) == ID_LENGTH == 58
    assert set(text[2:]) <= set(ALPHABET)
    assert base64.b32decode(text[2:].upper()) == PK + id_checksum(PK)


def test_roundtrip_plain_and_grouped() -> None:
    for seed in range(20):
        pk = Identity.from_seed(bytes([seed]) * 32).public_key
        assert parse_id(format_id(pk)) == pk
        grouped = format_id(pk, grouped=True)
        assert "-" in grouped
        assert grouped.replace("-", "") == format_id(pk)
        assert parse_id(grouped) == pk


def test_parse_is_forgiving_about_case_space_and_separators() -> None:
    text = format_id(PK, grouped=True)
    assert parse_id(text.upper()) == PK
    assert parse_id("  " + text.replace("-", " ") + "\n") == PK
    assert parse_id(text.replace("-", "\t")) == PK


def test_lookalike_digits_are_mapped() -> None:
    text = format_id(PK)
    body = text[2:]
    if "o" in body or "b" in body:
        swapped = "bt" + body.replace("o", "0").replace("b", "8")
        assert parse_id(swapped) == PK
    assert parse_id("8t" + body) == PK


def test_every_single_substitution_is_detected() -> None:
    text = format_id(PK)
    for i in range(2, len(text)):
        for c in ALPHABET:
            if c == text[i]:
                continue
            typo = text[:i] + c + text[i + 1 :]
            with pytest.raises(IdError, match="checksum mismatch"):
                parse_id(typo)


def test_adjacent_transpositions_mostly_detected() -> None:
    detected = total = 0
    for seed in range(5):
        text = format_id(Identity.from_seed(bytes([seed + 7]) * 32).public_key)
        for i in range(2, len(text) - 1):
            if text[i] == text[i + 1]:
                continue
            total += 1
            swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
            try:
                parse_id(swapped)
            except IdError:
                detected += 1
    assert total > 200
    assert detected == total  # 2**-24 miss chance per swap: all caught in practice


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("bt", "too short"),
        ("btabc", "too short"),
        ("xx" + "a" * 56, "starts with 'bt'"),
        ("bt1" + "a" * 55, "'1' could be 'l' or 'i'"),
        ("bt9" + "a" * 55, "invalid character"),
        ("bt!" + "a" * 55, "invalid character"),
        ("bt" + "a" * 60, "too long"),
        ("bt" + "a" * 2000, "too long"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(IdError, match=message):
        parse_id(text)


def test_truncated_and_extended_ids() -> None:
    text = format_id(PK)
    with pytest.raises(IdError, match="too short"):
        parse_id(text[:-1])
    with pytest.raises(IdError, match="too long"):
        parse_id(text + "a")


def test_invalid_point_with_valid_checksum_is_refused() -> None:
    bad = bytes([1]) + bytes(31)  # the identity element: small order
    text = format_id(bad)
    with pytest.raises(IdError, match="not a valid Ed25519 public key"):
        parse_id(text)


def test_format_rejects_wrong_length() -> None:
    with pytest.raises(IdError):
        format_id(b"\x00" * 31)


def test_uri_roundtrip() -> None:
    assert format_uri(PK) == "btchat:" + format_id(PK)
    assert parse_uri(format_uri(PK)) == (PK, None)
    uri = format_uri(PK, "Ana María & co?")
    assert " " not in uri and "&" not in uri.split("?", 1)[1].replace("%26", "")
    assert parse_uri(uri) == (PK, "Ana María & co?")


def test_uri_tolerances() -> None:
    text = format_id(PK, grouped=True)
    assert parse_uri(f"BTCHAT:{text}") == (PK, None)
    assert parse_uri(f"btchat://{text}?name=Bob") == (PK, "Bob")
    assert parse_uri(f"btchat:{format_id(PK)}?v=2&name=Bob#frag") == (PK, "Bob")


def test_uri_name_is_sanitised() -> None:
    evil = "Bob\u202eevil\x00\n\tname" + "x" * 200
    _, name = parse_uri(
        format_uri(PK) + "?name=" + evil.replace("\n", "%0A").replace("\x00", "%00")
    )
    assert name is not None
    assert "\u202e" not in name and "\x00" not in name and "\n" not in name
    assert len(name) <= MAX_NAME_LENGTH
    _, blank = parse_uri(format_uri(PK) + "?name=%E2%80%AE%20")
    assert blank is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://example.com", "not a btchat: link"),
        ("btchat:", "empty"),
        ("btchat:bt", "too short"),
        ("btchat:" + "bt" + "a" * 56, "checksum mismatch"),
    ],
)
def test_bad_uri(text: str, message: str) -> None:
    with pytest.raises(IdError, match=message):
        parse_uri(text)


def test_uri_with_two_names_is_refused() -> None:
    with pytest.raises(IdError, match="more than one name"):
        parse_uri(format_uri(PK) + "?name=a&name=b")


def test_parse_contact_ref() -> None:
    assert parse_contact_ref(format_id(PK)) == (PK, None)
    assert parse_contact_ref(format_id(PK, grouped=True)) == (PK, None)
    assert parse_contact_ref(" " + format_uri(PK, "Ann") + " ") == (PK, "Ann")
    assert parse_contact_ref(PK.hex()) == (PK, None)
    assert parse_contact_ref(PK.hex().upper()) == (PK, None)
    assert parse_contact_ref(format_id(OTHER)) == (OTHER, None)


@pytest.mark.parametrize("text", ["", "hello", "00" * 31, "zz" * 32, ("01" + "00" * 31)])
def test_parse_contact_ref_rejects(text: str) -> None:
    with pytest.raises(IdError):
        parse_contact_ref(text)


def test_known_answer() -> None:
    """Pinned: IDs already shared must keep parsing to the same key."""
    pk = bytes.fromhex("3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29")
    assert format_id(pk) == "bthnvcppgow2sc2yvdvdicu3ynonsteflxdxrehjr2ybekdc2z3iu7xpoh"
    assert format_id(pk, grouped=True) == (
        "bt-hnvc-ppgo-w2sc-2yvd-vdic-u3yn-onst-eflx-dxre-hjr2-ybek-dc2z-3iu7-xpoh"
    )
    assert format_uri(pk, "Ann Lee") == (
        "btchat:bthnvcppgow2sc2yvdvdicu3ynonsteflxdxrehjr2ybekdc2z3iu7xpoh?name=Ann%20Lee"
    )


def test_pasted_typography_is_tolerated() -> None:
    """Rich-text pastes: typographic dashes, zero-width spaces, BOM, full-width letters."""
    grouped = format_id(PK, grouped=True)
    for dash in ("\u2010", "\u2013", "\u2014", "\u2212", "\ufe63"):
        assert parse_id(grouped.replace("-", dash)) == PK
    assert parse_id("\ufeff" + format_id(PK).replace("a", "a\u200b") + "\u2060") == PK
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in format_id(PK))
    assert parse_id(fullwidth) == PK
    # Normalisation never rescues a real typo.
    text = format_id(PK)
    typo = text[:10] + ("a" if text[10] != "a" else "b") + text[11:]
    with pytest.raises(IdError, match="checksum mismatch"):
        parse_id(typo.replace("a", "\uff41"))


def test_other_unicode_is_refused() -> None:
    text = format_id(PK)
    with pytest.raises(IdError, match="invalid character"):
        parse_id(text[:10] + "\u00e9" + text[11:])  # é is not in the alphabet

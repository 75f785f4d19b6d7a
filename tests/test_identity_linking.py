"""Linking a device, the sans-I/O core: the right code links, a wrong one fails on both
sides before any sealed byte, tampering and oversize frames fail, and an offer allows
one guess and expires (issue 13)."""

from __future__ import annotations

import struct

import pytest

from btchat.identity import linking as L
from btchat.identity.keys import DeviceKey, Identity
from btchat.identity.linkwords import WORDS, word_for


def _payload(contacts: int = 2) -> L.LinkPayload:
    me = Identity.from_seed(b"\x07" * 32)
    friends = [Identity.generate() for _ in range(contacts)]
    return L.LinkPayload(
        me.seed,
        (me.certify(DeviceKey.generate(), 100),),
        tuple(
            L.LinkedContact(
                f.public_key,
                f"friend {i}",
                1000 + i,
                i == 0,
                i == 1,
                (f.certify(DeviceKey.generate(), 5),),
            )
            for i, f in enumerate(friends)
        ),
        "Alice",
        "hello",
    )


def _run(linker: L.LinkerConnection, joiner: L.Joiner, *, tamper: bool = False) -> None:
    """Shuttle bytes both ways until neither has more; answer the events as a shell would."""
    for _ in range(20):
        to_linker, to_joiner = joiner.data_to_send(), linker.data_to_send()
        if tamper and to_joiner and linker.state == "cert":
            to_joiner = to_joiner[:-1] + bytes([to_joiner[-1] ^ 1])
        if not to_linker and not to_joiner:
            break
        linker.receive_data(to_linker)
        joiner.receive_data(to_joiner)
        for event in _events(joiner):
            if isinstance(event, L.PayloadReceived):
                identity = event.payload.identity
                joiner.send_certificate(identity.certify(DeviceKey.generate(), 200))
        for event in _events(linker):
            if isinstance(event, L.CertificateReceived):
                linker.accept()


def _events(side: L._Side) -> list[object]:
    out = []
    while (e := side.next_event()) is not None:
        out.append(e)
        side.seen.append(e)  # type: ignore[attr-defined]
    return out


def _pair(code: str | None = None, joiner_code: str | None = None, contacts: int = 2):  # type: ignore[no-untyped-def]
    offer = L.LinkOffer(_payload(contacts), 0.0, code=L.parse_code(code) if code else None)
    linker = offer.attempt(1.0)
    assert linker is not None
    joiner = L.Joiner(L.parse_code(joiner_code or str(offer.code)))
    linker.seen, joiner.seen = [], []  # type: ignore[attr-defined]
    return offer, linker, joiner


def test_the_right_code_links_and_everything_moves() -> None:
    offer, linker, joiner = _pair()
    _run(linker, joiner)
    assert linker.state == joiner.state == "linked"
    assert any(isinstance(e, L.Linked) for e in joiner.seen)  # type: ignore[attr-defined]
    got = joiner.payload
    sent = _payload()
    assert (
        got is not None
        and got.seed == sent.seed
        and got.devices[0].identity == sent.devices[0].identity
    )
    assert [c.name for c in got.contacts] == ["friend 0", "friend 1"]
    assert [(c.verified, c.blocked) for c in got.contacts] == [(True, False), (False, True)]
    assert got.profile_name == "Alice" and got.profile_status == "hello"
    assert linker.cert is not None and linker.cert.identity == sent.identity.public_key
    offer.attempt_ended(linker)
    assert offer.state == "linked"
    with pytest.raises(L.OfferClosed):
        offer.attempt(2.0)


def test_a_wrong_code_fails_on_both_sides_and_the_joiner_gets_no_sealed_frame() -> None:
    offer, linker, joiner = _pair("37-cobalt-tiger", "37-cobalt-tundra")
    _run(linker, joiner)
    assert joiner.failure is not None and joiner.failure.reason == "wrong_code"
    assert joiner.sealed_frames_received == 0 and joiner.payload is None
    # The joiner leaves without confirming: the linker counts the guess as made.
    linker.connection_lost()
    assert linker.failure is not None and linker.failure.reason == "wrong_code"
    offer.attempt_ended(linker)
    assert offer.state == "failed" and offer.reason == "wrong_code"
    with pytest.raises(L.OfferClosed):  # a second attempt after a failure is refused
        offer.attempt(2.0)


def test_a_joiner_that_sends_a_bad_confirmation_gets_nothing_sealed() -> None:
    offer, linker, joiner = _pair()
    linker.receive_data(joiner.data_to_send())
    joiner.receive_data(linker.data_to_send())
    confirm = joiner.data_to_send()
    assert confirm[4] == L.T_CONFIRM
    linker.receive_data(confirm[:-1] + bytes([confirm[-1] ^ 1]))
    assert linker.failure is not None and linker.failure.reason == "wrong_code"
    assert linker.data_to_send() == b""  # no sealed frame went out
    offer.attempt_ended(linker)
    assert offer.state == "failed"


def test_a_tampered_sealed_frame_fails() -> None:
    _, linker, joiner = _pair()
    _run(linker, joiner, tamper=True)
    assert joiner.failure is not None and joiner.failure.reason == "protocol"
    assert joiner.payload is None


def test_oversize_frames_are_refused_before_they_are_buffered() -> None:
    offer, linker, _ = _pair()
    linker.receive_data(struct.pack(">I", L.MAX_FRAME + 1))  # the length alone decides
    assert linker.failure is not None and linker.failure.reason == "too_large"
    offer.attempt_ended(linker)
    assert offer.state == "waiting"  # no PAKE ran: nothing was guessed


def test_a_message_over_its_bound_fails_the_attempt() -> None:
    _, linker, joiner = _pair()
    linker.receive_data(joiner.data_to_send())
    joiner.receive_data(linker.data_to_send())
    linker.receive_data(joiner.data_to_send())
    joiner.receive_data(linker.data_to_send())  # the payload: the joiner answers
    # A "certificate" message longer than MAX_REPLY, in sealed chunks.
    joiner.state = "done"
    assert joiner._seal is not None
    linker.receive_data(joiner._seal.seal_message(b"x" * (L.MAX_REPLY + 1)))
    assert linker.failure is not None and linker.failure.reason == "too_large"


def test_garbage_instead_of_a_pake_message_fails_without_raising() -> None:
    for junk in (b"\x00\x00\x00\x22\x01" + b"B" + bytes(32), L.frame(L.T_SEALED, b"x" * 40),
                 L.frame(0x7F, b"")):  # fmt: skip
        offer = L.LinkOffer(_payload(), 0.0)
        linker = offer.attempt(0.0)
        assert linker is not None
        linker.receive_data(junk)
        assert linker.failure is not None and linker.failure.reason == "protocol"


def test_one_attempt_at_a_time_and_an_offer_expires() -> None:
    offer = L.LinkOffer(_payload(), 0.0)
    first = offer.attempt(1.0)
    assert first is not None and offer.attempt(2.0) is None  # a second caller waits outside
    offer.attempt_ended(first)  # it left before the PAKE: the offer is still open
    assert offer.state == "waiting"
    assert offer.attempt(L.OFFER_LIFETIME - 1) is not None
    offer = L.LinkOffer(_payload(), 0.0)
    with pytest.raises(L.OfferClosed):
        offer.attempt(L.OFFER_LIFETIME)
    assert offer.state == "expired" and offer.reason == "expired"


def test_the_payload_refuses_what_is_not_ours() -> None:
    good = _payload()
    stranger = Identity.generate().certify(DeviceKey.generate(), 1)
    bad = L.LinkPayload(good.seed, (stranger,), good.contacts)
    with pytest.raises(L.LinkError):
        L.LinkPayload.decode(bad.encode())
    with pytest.raises(L.LinkError):
        L.LinkPayload.decode(b"d1:vi2ee")
    me_as_contact = L.LinkedContact(good.identity.public_key, "me", 0, False, False, ())
    with pytest.raises(L.LinkError):
        L.LinkPayload.decode(L.LinkPayload(good.seed, good.devices, (me_as_contact,)).encode())
    assert L.LinkPayload.decode(good.encode()) == good


def test_codes_parse_as_typed_and_words_have_unique_prefixes() -> None:
    assert len(WORDS) == 256 and len(set(WORDS)) == 256
    assert len({w[:3] for w in WORDS}) == 256
    assert all(w.isascii() and w.isalpha() and w.islower() and len(w) >= 4 for w in WORDS)
    assert str(L.parse_code(" 37 Cobalt-TIGER ")) == "37-cobalt-tiger"
    assert str(L.parse_code("37-cob-tig")) == "37-cobalt-tiger"
    assert word_for("co") is None and word_for("cobx") is None
    for bad in ("0-cobalt-tiger", "1000-cobalt-tiger", "37-cobalt", "x-cobalt-tiger",
                "37-cobalt-zzzz"):  # fmt: skip
        with pytest.raises(L.UsageError):
            L.parse_code(bad)
    code = L.LinkCode.generate()
    assert L.parse_code(str(code)) == code and 1 <= code.nameplate <= 999


def test_the_rendezvous_depends_on_the_nameplate_only() -> None:
    a, b = L.parse_code("37-cobalt-tiger"), L.parse_code("37-acorn-zebra")
    assert L.link_infohash(a.nameplate) == L.link_infohash(b.nameplate)
    assert len(L.link_infohash(37)) == 20 and L.link_infohash(37) != L.link_infohash(38)

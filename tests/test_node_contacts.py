"""Petnames are safe to show, never an ID, and IDs always name their own contact
(issue 14 item 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from btchat.api.facade import ApiError
from btchat.identity.idtext import format_id, format_uri
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
from btchat.node.contacts import ContactBook
from btchat.node.profile import Profiles


@pytest.fixture
def book(tmp_path: Path) -> ContactBook:
    me = Identity.generate()
    store = Store.open(tmp_path / "m.db", None)
    return ContactBook(me.public_key, store, Profiles(me, store))


def key() -> bytes:
    return Identity.generate().public_key


def code_of(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "\t",
        "a\u202eb",
        "x\u200by",
        "tab\there",
        "line\nbreak",
        "\u2066isolate",
        "z" * 65,
    ],
)
def test_unsafe_or_empty_petnames_are_refused(book: ContactBook, name: str) -> None:
    with pytest.raises(ApiError) as exc:
        book.check_name(name, key())
    assert code_of(exc) == (400, "bad_name")


def test_a_petname_may_not_be_an_id_link_or_key(book: ContactBook) -> None:
    other = key()
    for spelling in (
        format_id(other),
        format_id(other, grouped=True),
        format_uri(other),
        other.hex(),
    ):
        with pytest.raises(ApiError) as exc:
            book.check_name(spelling, key())
        assert code_of(exc) == (400, "bad_name")


def test_names_are_trimmed_normalised_and_unique(book: ContactBook) -> None:
    a, b = key(), key()
    assert book.check_name("  Ana\u0301 ", a) == "An\u00e1"
    book.store.add_contact(a, "Ana", 0)
    with pytest.raises(ApiError) as exc:
        book.check_name("Ana", b)
    assert code_of(exc) == (409, "name_taken")
    assert book.check_name("Ana", a) == "Ana"  # renaming to one's own name is fine


def test_suggestions_are_cleaned_and_fall_back_to_the_id(book: ContactBook) -> None:
    a, b, c = key(), key(), key()
    assert book.name_for(a, None, "Eve \u202eevil\u202c ") == "Eve evil"
    book.store.add_contact(a, "Eve evil", 0)
    assert book.name_for(b, None, "Eve evil") == format_id(b)[:12]  # taken: not an error
    assert book.name_for(c, None, format_id(a)) == format_id(c)[:12]  # an ID: refused
    with pytest.raises(ApiError):
        book.name_for(c, "\u202e", None)  # the user's own choice is checked, not cleaned


def test_an_id_names_its_contact_even_if_an_old_petname_spells_it(book: ContactBook) -> None:
    a, b = key(), key()
    book.store.add_contact(a, "alice", 0)
    book.store.add_contact(b, format_id(a), 0)  # what an older version allowed
    assert book.resolve(format_id(a)) == a
    assert book.resolve("alice") == a
    with pytest.raises(ApiError) as exc:
        book.resolve(format_id(key()))
    assert code_of(exc)[0] == 404

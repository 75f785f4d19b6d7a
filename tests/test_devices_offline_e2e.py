"""A message written on a device that does not run offline delivery, for a friend who is
away (issue 13, protocol 1.5), as separate daemons on a sandbox swarm.

The desktop writes to Bob while Bob is down. The desktop's sync hands the signed message
to the laptop (the mailbox device, its certificate is the oldest), which leaves it in
the DHT mailbox. Both our devices then go down, so Bob, coming back, can only find it
there: he gets it exactly once. When our devices return, the delivered receipt (one
device's) shows on both.

And the other way (1.6): Bob writes to us while both our devices are down; the packet's
key is wrapped for each of them, so the desktop, back alone with the laptop (the
mailbox device) still off, reads it from the DHT mailbox itself. The laptop, back
later, reads its own wrap and has the message by sync too: each shows it once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_devices_e2e import another_device
from test_messenger_e2e import Person, befriend, sandbox, wait_for  # noqa: F401
from test_offline_e2e import in_the_dht

pytestmark = pytest.mark.slow

TEXT = "written on the desktop while you were away"


@pytest.fixture
def us_and_bob(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[Person, Person, Person]]:
    bootstrap, env = sandbox
    laptop = Person("laptop", tmp_path, env, bootstrap)
    bob = Person("bob", tmp_path, env, bootstrap)
    desktop = another_device(laptop, "desktop", tmp_path)
    try:
        yield laptop, desktop, bob
    finally:
        for p in (laptop, desktop, bob):
            p.kill()


def the_message(p: Person) -> list[dict[str, Any]]:
    return [m for m in p.history("bob") if m["text"] == TEXT]


def all_up(us_and_bob: tuple[Person, Person, Person]) -> tuple[Person, Person, Person]:
    """Our two devices and Bob up, Bob a contact of ours."""
    laptop, _, bob = us_and_bob
    for p in us_and_bob:
        p.up()
    befriend(laptop, bob)
    return us_and_bob


def test_a_message_from_a_second_device_reaches_an_offline_friend_once(
    us_and_bob: tuple[Person, Person, Person],
) -> None:
    laptop, desktop, bob = all_up(us_and_bob)
    wait_for(
        lambda: [c["name"] for c in desktop.cli("contacts")["contacts"]] == ["bob"],
        120,
        "the desktop learns of bob",
    )
    listed = desktop.cli("device", "list")
    assert listed["mailbox_device"] != listed["devices"][0]["device_id"]  # not the desktop
    bob.down()
    wait_for(
        lambda: not desktop.cli("contacts")["contacts"][0]["online"],
        120,
        "bob gone for the desktop",
    )
    wait_for(
        lambda: not laptop.cli("contacts")["contacts"][0]["online"], 120, "bob gone for the laptop"
    )
    desktop.cli("send", "bob", TEXT)
    # The laptop has it from the desktop's sync and writes it to the DHT mailbox.
    wait_for(
        lambda: in_the_dht(laptop, 1), 120, "the laptop to leave the desktop's message in the DHT"
    )
    assert desktop.cli("status")["mailbox"] is None  # the desktop runs no offline delivery
    desktop.down()
    laptop.down()
    bob.up()
    wait_for(lambda: TEXT in bob.texts("laptop"), 120, "bob to find it in the DHT mailbox")
    assert bob.cli("status")["mailbox"]["stats"]["received"] == 1
    laptop.up()
    desktop.up()
    for p in (laptop, desktop):
        wait_for(
            lambda p=p: [m["state"] for m in the_message(p)] in (["delivered"], ["read"]),
            120,
            f"the {p.name} to show it delivered",
        )
    # Once at Bob's, however many of our devices offered it; nothing left to offer.
    assert bob.texts("laptop").count(TEXT) == 1
    wait_for(
        lambda: all((p.cli("status")["mailbox"] or {"pending": 0})["pending"] == 0
                    for p in (laptop, desktop)),
        120,
        "no packet left pending",
    )  # fmt: skip


FROM_BOB = "left in the mailbox while both of your devices were off"


def test_a_device_reads_the_mailbox_while_the_mailbox_device_is_off(
    us_and_bob: tuple[Person, Person, Person],
) -> None:
    laptop, desktop, bob = all_up(us_and_bob)
    wait_for(
        lambda: len((bob.cli("contacts")["contacts"] or [{}])[0].get("path", [])) == 2,
        120,
        "bob to hold sessions with both our devices (he knows both)",
    )
    assert desktop.cli("status")["mailbox_reader"] is not None  # publishes its own bundle
    laptop.down()
    desktop.down()
    wait_for(lambda: not bob.cli("contacts")["contacts"][0]["online"], 120, "us gone for bob")
    bob.cli("send", "laptop", FROM_BOB)
    # One v2 packet, its key wrapped for the laptop and the desktop (two chunks, a head).
    wait_for(lambda: in_the_dht(bob, 1, puts=3), 120, "bob to leave it in the DHT mailbox")
    assert bob.cli("status")["mailbox"]["stats"]["deposited_v2"] == 1
    bob.down()
    desktop.up()  # alone: the mailbox device stays off
    wait_for(lambda: FROM_BOB in desktop.texts("bob"), 120, "the desktop to read it itself")
    assert desktop.cli("status")["mailbox_reader"]["stats"]["received"] == 1
    assert desktop.texts("bob").count(FROM_BOB) == 1
    laptop.up()

    def read_or_told(stats: dict[str, int]) -> int:
        return stats.get("received", 0) + stats.get("received_elsewhere", 0)

    wait_for(
        lambda: read_or_told((laptop.cli("status")["mailbox"] or {"stats": {}})["stats"]) == 1,
        120,
        "the laptop to read its own wrap, or learn from the desktop that it has it",
    )
    wait_for(lambda: FROM_BOB in laptop.texts("bob"), 120, "the laptop to show it")
    for p in (laptop, desktop):
        assert p.texts("bob").count(FROM_BOB) == 1, p.name  # the mailbox and sync: once

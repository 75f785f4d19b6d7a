"""One person on three devices, and a friend, as separate daemons on a sandbox swarm
(issue 13): a message to the person shows on every device, one sent from a device
shows on the others, a device offline catches up once and in order, and a revoked
device gets nothing new.

The desktop is made as linking makes it (the identity copied, a new device key
certified by it, each device's certificate known to the other); the phone is linked
for real, from the desktop (a device that is not the mailbox device), with `btchat
device link` and `btchat device join`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_device_link_e2e import finish, join, start_link
from test_messenger_e2e import Person, befriend, sandbox, wait_for  # noqa: F401

from btchat.identity.keys import DeviceKey
from btchat.identity.keystore import KeyStore, LoadedKeys
from btchat.messaging.store import Store
from btchat.node.devices import OwnDevices
from btchat.node.history import DB_FILE

pytestmark = pytest.mark.slow


def another_device(first: Person, name: str, root: Path) -> Person:
    """A new device of ``first``'s identity, known to ``first`` and knowing it."""
    keys = KeyStore(first.dir).load(None)
    device = DeviceKey.generate()
    new = LoadedKeys(
        keys.identity, device, keys.identity.certify(device, keys.certificate.created + 1), None
    )
    (root / name).mkdir(parents=True)
    KeyStore(root / name).save_new(new, None)
    with Store.open(first.dir / DB_FILE, None) as store:
        OwnDevices(store, keys.certificate).add(new.certificate)
    with Store.open(root / name / DB_FILE, None) as store:
        OwnDevices(store, new.certificate).add(keys.certificate)
    person = Person(name, root, first.env, first.bootstrap, init=False)
    person.id = first.id
    return person


@pytest.fixture
def household(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> Iterator[dict[str, Person]]:
    bootstrap, env = sandbox
    laptop = Person("laptop", tmp_path, env, bootstrap)
    bob = Person("bob", tmp_path, env, bootstrap)
    folks = {"laptop": laptop, "bob": bob}
    folks["desktop"] = another_device(laptop, "desktop", tmp_path)
    folks["phone"] = Person("phone", tmp_path, env, bootstrap, init=False)  # linked in the test
    try:
        yield folks
    finally:
        for p in folks.values():
            p.kill()


def texts(p: Person, other: str) -> list[str]:
    return p.texts(other)


def test_one_person_three_devices_and_a_friend(household: dict[str, Person]) -> None:
    laptop, desktop, phone, bob = (household[n] for n in ("laptop", "desktop", "phone", "bob"))
    for p in (laptop, desktop, bob):
        p.up()
    linking, offer = start_link(desktop)
    joined = join(phone, offer["code"])
    assert joined.returncode == 0, joined.stderr
    assert finish(linking)[0] == 0
    phone.id = laptop.id
    phone.up()
    befriend(laptop, bob)  # on the laptop: the desktop and the phone learn it by sync
    for d in (desktop, phone):
        wait_for(
            lambda d=d: [c["name"] for c in d.cli("contacts")["contacts"]] == ["bob"],
            60,
            f"{d.name} learns of bob",
        )
    listed = laptop.cli("device", "list")
    assert len(listed["devices"]) == 3 and listed["devices"][0]["this_device"]
    # Named on the laptop, the phone is called so on every device (the lost one, later).
    phone_id = phone.cli("device", "list")["devices"][0]["device_id"]
    laptop.cli("device", "name", phone_id[:8], "old phone")
    for d in (desktop, phone):
        wait_for(
            lambda d=d: (
                {x["device_id"]: x["name"] for x in d.cli("device", "list")["devices"]}.get(
                    phone_id
                )
                == "old phone"
            ),
            60,
            f"{d.name} knows the phone's name",
        )
    # The profile edited on the phone is the profile of all three.
    phone.cli("profile", "--name", "Alice A.", "--status", "on my phone")
    for d in (laptop, desktop):
        wait_for(lambda d=d: d.cli("profile")["status"] == "on my phone", 60, f"{d.name} has it")

    # Bob's message reaches all three devices.
    wait_for(lambda: bob.cli("contacts")["contacts"][0]["online"], 60, "bob sees laptop")
    bob.cli("send", "laptop", "hello, all of you")
    for d in (laptop, desktop, phone):
        wait_for(lambda d=d: "hello, all of you" in texts(d, "bob"), 60, f"{d.name} gets it")

    # Sent from the desktop: bob gets it, the laptop and the phone show it as ours.
    desktop.cli("send", "bob", "from my desktop")
    wait_for(lambda: "from my desktop" in texts(bob, "laptop"), 60, "bob gets the desktop's")
    for d in (laptop, phone):
        wait_for(lambda d=d: "from my desktop" in texts(d, "bob"), 60, f"{d.name} syncs")
        sent = [m for m in d.history("bob") if m["text"] == "from my desktop"]
        assert len(sent) == 1 and sent[0]["direction"] == "out"

    # The phone goes offline; ten messages later it comes back and catches up once, in order.
    phone.down()
    for i in range(10):
        bob.cli("send", "laptop", f"while away {i}")
    wait_for(lambda: f"while away {9}" in texts(laptop, "bob"), 60, "laptop gets them")
    phone.up()
    wait_for(lambda: "while away 9" in texts(phone, "bob"), 90, "the phone catches up")
    assert texts(phone, "bob") == texts(laptop, "bob")
    assert len(texts(phone, "bob")) == len(set(texts(phone, "bob")))

    # The phone is lost: revoked from the laptop. Bob stops reaching it; nothing new lands.
    after = laptop.cli("device", "revoke", phone_id[:8])
    assert phone_id in after["revoked"] and len(after["devices"]) == 2
    wait_for(
        lambda: phone.cli("device", "list")["this_revoked"], 60, "the phone learns it is revoked"
    )
    # Our other devices too: until the desktop knows, it still syncs to the phone.
    wait_for(
        lambda: phone_id in desktop.cli("device", "list")["revoked"], 60, "the desktop learns it"
    )
    # Bob hears that the lists changed, reads them, and ends his session to the phone.
    wait_for(
        lambda: len(bob.cli("contacts")["contacts"][0]["path"]) == 2, 60, "bob drops the phone"
    )
    bob.cli("send", "laptop", "after the revocation")
    wait_for(lambda: "after the revocation" in texts(desktop, "bob"), 60, "desktop still gets it")
    assert "after the revocation" not in texts(phone, "bob")
    # A rename on the desktop reaches the laptop.
    desktop.cli("contact", "rename", "bob", "bobby")
    wait_for(
        lambda: [c["name"] for c in laptop.cli("contacts")["contacts"]] == ["bobby"],
        60,
        "the laptop learns the new name",
    )
    # Bad input: our own device, an unknown one.
    own = laptop.cli("device", "revoke", listed["devices"][0]["device_id"], check=False)
    assert own.returncode != 0 and "this device" in own.stderr
    unknown = laptop.cli("device", "revoke", "abcdef00", check=False)
    assert unknown.returncode != 0 and "no other device" in unknown.stderr

    # A channel created on the laptop is on the desktop too (channel sync); bob joins.
    # Each device links on its own, every post shows once on every device, and bob
    # sees one member besides himself. Left on the desktop, it is left on the laptop.
    created = laptop.cli("channel", "create", "home", "--out", str(laptop.dir))
    wait_for(
        lambda: [c["name"] for c in desktop.cli("channels")["channels"]] == ["home"],
        60,
        "the desktop joins the laptop's channel",
    )
    bob.cli("channel", "join", created["uri"])

    def links(p: Person) -> int:
        return next((c["links"] for c in p.cli("channels")["channels"]), 0)

    wait_for(lambda: all(links(p) == 2 for p in (laptop, desktop, bob)), 120, "a mesh of three")
    for p in (laptop, desktop, bob):
        p.cli("channel", "send", "home", f"from the {p.name}")
    want = sorted(f"from the {p.name}" for p in (laptop, desktop, bob))
    for p in (laptop, desktop, bob):
        wait_for(
            lambda p=p: (
                sorted(m["text"] for m in p.cli("channel", "history", "home")["messages"]) == want
            ),
            60,
            f"every post on {p.name}",
        )
    assert len(bob.cli("channel", "members", "home")["members"]) == 2
    desktop.cli("channel", "leave", "home")
    wait_for(lambda: laptop.cli("channels")["channels"] == [], 60, "the laptop leaves too")

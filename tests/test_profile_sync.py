"""Our profile the same on all our devices (issue 13): an edit on one reaches the others
through their sync, the later edit wins everywhere, an older note (or a replay) changes
nothing, a device coming up gets it, and malformed notes are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_own_sync import Device, connect, pump, three

from btchat.cli.render import describe_event
from btchat.messaging.own_sync import ProfileChange, SyncError, decode_sync, encode_profile
from btchat.node.profile import Profiles
from btchat.node.profile_sync import ProfileSync


def with_profile(device: Device) -> ProfileSync:
    profiles = Profiles(device.me, device.store)
    part = ProfileSync(device.store, profiles, device.id, device.sync.send_to_all, device._emit)
    device.sync.attach_profile(part.payloads, part.merge)
    return part


def mine(part: ProfileSync) -> dict[str, Any]:
    return part.profiles.of(part.profiles.me)


def test_an_edit_reaches_every_device_and_the_later_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, desktop, phone = three(tmp_path)
    parts = [with_profile(d) for d in (laptop, desktop, phone)]
    lp, dp, pp = parts
    clock = iter(range(1_000_000, 2_000_000, 1000))
    monkeypatch.setattr("btchat.node.profile_sync.time.time", lambda: next(clock) / 1000)
    assert lp.payloads() == []  # nothing set yet: nothing to say
    lp.set("Alice", "at work", "ab" * 32)
    connect(laptop, desktop)  # the desktop comes up after the edit: it gets it then
    pump(laptop, desktop)
    assert mine(dp) == {"name": "Alice", "status": "at work", "avatar": "ab" * 32}
    assert [e["profile"]["name"] for e in desktop.events if e["type"] == "profile"] == ["Alice"]
    assert [e["profile"]["name"] for e in laptop.events if e["type"] == "profile"] == ["Alice"]
    # Edits on both before either hears of the other: the later one wins on both.
    lp.set("Alice L", None, None)
    dp.set(None, "", None)  # the desktop clears the status, later
    pump(laptop, desktop)
    assert mine(lp) == mine(dp) == {"name": "Alice", "status": None, "avatar": "ab" * 32}
    # Republishing takes what was merged (the name the DHT item carries).
    assert b"5:Alice" in lp.profiles._value() and b"at work" not in lp.profiles._value()
    # An old note (or the same note again) changes nothing.
    before = lp.current()
    for stale in (ProfileChange(5, b"z" * 16, "old", None, None), before):
        lp.merge(stale)
    assert lp.current() == before and lp.stats["stale"] == 2
    # The phone, back later, gets the winner from either device.
    connect(phone, desktop)
    pump(phone, desktop)
    assert mine(pp) == mine(dp) and pp.current().changed_ms == dp.current().changed_ms


def test_two_devices_from_before_sync_agree_on_one_profile(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    lp, dp = with_profile(laptop), with_profile(desktop)
    lp.profiles.set_mine("Old laptop name", None, None)  # set before profiles were synced
    dp.profiles.set_mine("Old desktop name", None, None)
    connect(laptop, desktop)
    pump(laptop, desktop)
    # Both changes are "at 0": the higher device id's wins on both ("laptop" > "desktop").
    assert mine(lp)["name"] == mine(dp)["name"] == "Old laptop name"


def test_bad_profile_notes_are_refused() -> None:
    good = ProfileChange(7, b"d" * 16, "Al", None, b"\x01" * 32)
    payload = encode_profile(good)
    assert decode_sync(payload, 0) == good
    for bad in (
        payload.replace(b"1:d16:" + b"d" * 16, b"1:d2:dd"),  # a short device id
        payload.replace(b"1:a32:" + b"\x01" * 32, b"1:a3:abc"),  # an avatar not 32 bytes
        payload.replace(b"1:n2:Al", b"1:n2:\xff\xfe"),  # a name not UTF-8
        payload.replace(b"1:n2:Al", b"1:n300:" + b"x" * 300),  # too long
        payload.replace(b"1:ci7e", b"1:ci-7e"),
    ):
        assert bad != payload
        with pytest.raises(SyncError):
            decode_sync(bad, 0)


def test_a_malformed_profile_note_is_dropped_and_counted(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    lp = with_profile(laptop)
    desktop.inbox = []
    laptop.sync.receive(
        desktop.id, encode_profile(ProfileChange(9, b"x" * 16, "x" * 300, None, None))
    )
    assert laptop.sync.stats["malformed"] == 1 and mine(lp)["name"] is None


def test_the_watch_line_says_what_changed() -> None:
    line = describe_event({"type": "profile", "profile": {"name": "Al\x1b[2J", "status": None}})
    assert line.startswith("your profile is now: name ")
    assert "\x1b" not in line and "status" not in line

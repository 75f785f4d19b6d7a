"""Names for our own devices (issue 13: the lost one must be told apart to revoke it):
a device names itself after its host, a user's name wins and reaches every device
through their sync, the later rename wins everywhere (a tie to the higher device id),
an older note or a replay changes nothing, names stay between our devices, and
malformed notes and bad names are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_own_sync import Device, connect, pump, three

from btchat.errors import ApiError
from btchat.messaging.own_sync import (
    NAMES_PER_NOTE,
    DeviceName,
    NamesNote,
    SyncError,
    decode_sync,
    encode_names,
)
from btchat.node.device_names import DeviceNames, clean_name


def with_names(device: Device) -> DeviceNames:
    part = DeviceNames(device.store, device.id, device.sync.send_to_all, device._emit)
    device.sync.attach_names(part.payloads, part.merge)
    return part


def test_names_reach_every_device_and_the_later_rename_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("btchat.node.device_names.socket.gethostname", lambda: " my\thost ")
    laptop, desktop, phone = three(tmp_path)
    ln, dn, pn = (with_names(d) for d in (laptop, desktop, phone))
    assert ln.of(laptop.id) == "my host"  # named after its host until someone names it
    clock = iter(range(1_000_000, 2_000_000, 1000))
    monkeypatch.setattr("btchat.node.device_names.time.time", lambda: next(clock) / 1000)
    ln.rename(laptop.id, "  old   laptop ")
    connect(laptop, desktop)
    pump(laptop, desktop)
    assert dn.of(laptop.id) == "old laptop"  # trimmed, one space
    assert dn.of(desktop.id) == "my host" and ln.of(desktop.id) == "my host"
    named = [e for e in desktop.events if e["type"] == "device_named"]
    assert named == [{"type": "device_named", "device_id": laptop.id.hex(), "name": "old laptop"}]
    # Renamed on both before either hears of the other: the later wins on both.
    ln.rename(laptop.id, "laptop")
    dn.rename(laptop.id, "work laptop")
    pump(laptop, desktop)
    assert ln.of(laptop.id) == dn.of(laptop.id) == "work laptop"
    # A note that is older, or the same again, changes nothing.
    stale = NamesNote([DeviceName(laptop.id, "ancient", 5, b"\xff" * 16)])
    before = ln.stats["stale"]
    ln.merge(stale)
    ln.merge(NamesNote([DeviceName(laptop.id, "work laptop", *_stamp(dn, laptop.id))]))
    assert ln.of(laptop.id) == "work laptop" and ln.stats["stale"] == before + 2
    # A tie on the time goes to the higher device id, on every device.
    tie = 10**12
    hi, lo = max(laptop.id, desktop.id), min(laptop.id, desktop.id)
    for part in (ln, dn):
        part.merge(NamesNote([DeviceName(phone.id, "from lo", tie, lo)]))
        part.merge(NamesNote([DeviceName(phone.id, "from hi", tie, hi)]))
        part.merge(NamesNote([DeviceName(phone.id, "from lo", tie, lo)]))
        assert part.of(phone.id) == "from hi"
    # The phone, coming up later, gets every name at once.
    connect(phone, desktop)
    pump(phone, desktop)
    assert pn.of(laptop.id) == "work laptop" and pn.of(phone.id) == "from hi"


def _stamp(part: DeviceNames, device: bytes) -> tuple[int, bytes]:
    return part._load()[device].stamp()


def test_names_survive_a_restart_and_stay_bounded(tmp_path: Path) -> None:
    laptop, _desktop, _phone = three(tmp_path)
    part = with_names(laptop)
    part.rename(laptop.id, "laptop")
    again = DeviceNames(laptop.store, laptop.id, lambda p: None, lambda e: None)
    assert again.of(laptop.id) == "laptop"  # not renamed after the host again
    many = [DeviceName(bytes([i]) * 16, f"d{i}", 1000 + i, laptop.id) for i in range(100)]
    for start in range(0, 100, NAMES_PER_NOTE):
        part.merge(NamesNote(many[start : start + NAMES_PER_NOTE]))
    kept = part._load()
    assert len(kept) == NAMES_PER_NOTE and many[-1].device in kept  # the newest kept
    # A damaged store entry is said and starts again; it never breaks the daemon.
    laptop.store.kv_set("device_names", b"garbage")
    assert part.of(laptop.id) is None and part.payloads() == []


def test_a_name_a_user_gives_is_checked() -> None:
    assert clean_name(" phone \n") == "phone"
    for bad in ("", "   ", "x" * 41, "a\x1bb", "rtl\u202eoverride"):
        with pytest.raises(ApiError):
            clean_name(bad)


@pytest.mark.parametrize(
    "note",
    [
        {b"t": b"names", b"n": b"x"},
        {b"t": b"names", b"n": [[b"a" * 16, b"n", 1]]},
        {b"t": b"names", b"n": [[b"a" * 15, b"n", 1, b"b" * 16]]},
        {b"t": b"names", b"n": [[b"a" * 16, b"", 1, b"b" * 16]]},
        {b"t": b"names", b"n": [[b"a" * 16, b"n" * 129, 1, b"b" * 16]]},
        {b"t": b"names", b"n": [[b"a" * 16, b"\xff", 1, b"b" * 16]]},
        {b"t": b"names", b"n": [[b"a" * 16, b"n", -1, b"b" * 16]]},
        {b"t": b"names", b"n": [[b"a" * 16, b"n", 1, b"b" * 16]] * (NAMES_PER_NOTE + 1)},
    ],
)
def test_malformed_names_notes_are_refused(note: dict[bytes, object]) -> None:
    from btchat.codec.bencode import encode

    with pytest.raises(SyncError):
        decode_sync(encode(note), 0)


def test_a_malformed_note_is_counted_and_the_session_goes_on(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    names = with_names(desktop)
    before = desktop.sync.stats["malformed"]
    desktop.sync.receive(laptop.id, b"d1:n1:x1:t5:namese")
    assert desktop.sync.stats["malformed"] == before + 1
    note = encode_names([DeviceName(laptop.id, "laptop", 7, laptop.id)])
    assert decode_sync(note, 0) == NamesNote([DeviceName(laptop.id, "laptop", 7, laptop.id)])
    desktop.sync.receive(laptop.id, note)
    assert names.of(laptop.id) == "laptop"

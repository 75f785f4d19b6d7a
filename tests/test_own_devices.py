"""Our own device list: kept in the database, this device first, bounded, and
published at once when a device is added (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from btchat.discovery.rendezvous import (
    MAX_DEVICES,
)
from btchat.errors import UsageError
from btchat.identity.keys import DeviceKey, Identity
from btchat.messaging.store import Store
from btchat.node.devices import DeviceListFull, OwnDevices


@pytest.fixture
def me() -> Identity:
    return Identity.generate()


def _own(tmp_path: Path, me: Identity, created: int = 100) -> OwnDevices:
    cert = me.certify(DeviceKey.from_bytes(b"\x01" * 32, b"\x01" * 16), created)
    return OwnDevices(Store.open(tmp_path / "m.db", None), cert)


def test_this_device_comes_first_and_added_ones_survive_a_restart(
    tmp_path: Path, me: Identity
) -> None:
    own = _own(tmp_path, me)
    assert own.certs() == [own.certificate]
    other = me.certify(DeviceKey.generate(), 200)
    assert own.add(other, now_ms=5)
    assert not own.add(other, now_ms=6)  # the same again: nothing changes
    own.store.close()
    again = _own(tmp_path, me)
    assert again.certs() == [again.certificate, other]
    assert again.knows(other.device_id) and not again.knows(b"\x02" * 16)


def test_a_newer_certificate_of_a_device_replaces_the_older(tmp_path: Path, me: Identity) -> None:
    own = _own(tmp_path, me)
    device = DeviceKey.generate()
    old, new = me.certify(device, 200), me.certify(device, 300)
    assert own.add(new)
    assert not own.add(old)  # older: kept the newer
    assert own.certs()[1:] == [new]
    assert own.add(me.certify(device, 400))
    assert [c.created for c in own.certs()[1:]] == [400]


def test_only_our_valid_certificates_are_kept(tmp_path: Path, me: Identity) -> None:
    own = _own(tmp_path, me)
    with pytest.raises(UsageError):
        own.add(Identity.generate().certify(DeviceKey.generate(), 1))
    good = me.certify(DeviceKey.generate(), 1)
    with pytest.raises(UsageError):
        own.add(good.with_signature(bytes(64)))
    assert not own.add(own.certificate)  # this device's own lives in the key file
    # A row damaged on disk is skipped on reading, never trusted.
    forged = bytearray(good.encode())
    forged[-2] ^= 1
    with own.store.transaction() as conn:
        conn.execute(
            "INSERT INTO own_devices (device_id, cert, added_ms) VALUES (?, ?, 0)",
            (good.device_id, bytes(forged)),
        )
    assert own.certs() == [own.certificate]


def test_the_list_is_bounded_by_what_one_device_list_can_name(tmp_path: Path, me: Identity) -> None:
    own = _own(tmp_path, me)
    for i in range(MAX_DEVICES - 1):
        assert own.add(me.certify(DeviceKey.generate(), i), now_ms=i)
    assert own.room() == 0
    with pytest.raises(DeviceListFull):
        own.add(me.certify(DeviceKey.generate(), 9))
    assert len(own.certs()) == MAX_DEVICES

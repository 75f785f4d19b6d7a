"""Linking a device over loopback TCP (``join --addr``): time from the offer to the new
device's key file on disk, by the size of the contact book; and the SPAKE2 cost.

``PYTHONPATH=src python -m bench.linking [--rounds N]`` prints one JSON object. Issue 13's
target (linked and synced within 10 s for 1,000 messages) includes history sync, which
is not built yet: this measures the link itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from btchat.identity.keys import DeviceKey, Identity
from btchat.identity.linking import Joiner, LinkCode, LinkOffer, LinkPayload
from btchat.messaging.store import Store
from btchat.node.devices import OwnDevices
from btchat.node.linking import DeviceLinking, join_device
from btchat.node.profile import Profiles
from btchat.node.tasks import TaskOwner


def _book(store: Store, contacts: int) -> None:
    with store.transaction():
        for i in range(contacts):
            friend = Identity.generate()
            store.add_contact(friend.public_key, f"friend {i}", 1_700_000_000_000 + i)
            store.set_certs(friend.public_key, [friend.certify(DeviceKey.generate(), 1)])


async def _round(root: Path, contacts: int) -> float:
    me = Identity.generate()
    store = Store.open(root / "old.db", None)
    _book(store, contacts)
    own = OwnDevices(store, me.certify(DeviceKey.generate(), 1))
    tasks = TaskOwner()
    linking = DeviceLinking(me, store, own, Profiles(me, store), host="127.0.0.1",
                            emit=lambda e: None, spawn=tasks.spawn)  # fmt: skip
    try:
        start = time.perf_counter()
        offer = await linking.link()
        result = await join_device(root / "new", offer["code"], None,
                                   addr=("127.0.0.1", offer["port"]))  # fmt: skip
        took = time.perf_counter() - start
        assert result.contacts == contacts
        return took
    finally:
        await linking.close()
        await tasks.cancel_all()
        store.close()


def _spake_ms(rounds: int) -> float:
    me = Identity.from_seed(b"\x07" * 32)
    payload = LinkPayload(me.seed, (me.certify(DeviceKey.generate(), 1),), ())
    times = []
    for _ in range(rounds):
        code = LinkCode.generate()
        offer = LinkOffer(payload, 0.0, code=code)
        linker = offer.attempt(0.0)
        assert linker is not None
        start = time.perf_counter()
        joiner = Joiner(code)
        linker.receive_data(joiner.data_to_send())
        joiner.receive_data(linker.data_to_send())
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def run(rounds: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {"spake2_both_sides_ms": _spake_ms(10), "link_s": {}}
    for contacts in (0, 1000, 10000):
        took = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                took.append(asyncio.run(_round(Path(tmp), contacts)))
        out["link_s"][str(contacts)] = round(statistics.median(took), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.rounds)))


if __name__ == "__main__":
    main()

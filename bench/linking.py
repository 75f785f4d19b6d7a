"""Linking a device over loopback TCP (``join --addr``): time from the offer to the new
device's key file on disk, by the size of the contact book; and the SPAKE2 cost.

``PYTHONPATH=src python -m bench.linking [--rounds N]`` prints one JSON object; ``python
-m bench`` runs it beside ``bench/devices.py``, which measures issue 13's target as a
user meets it (link, join, start, history shown, through the DHT). This is the link
alone, in one process, by contact book size: what the copy costs as the book grows.
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


def run(rounds: int = 3, quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"spake2_both_sides_ms": _spake_ms(10), "link_s": {}}
    for contacts in (0, 1000) if quick else (0, 1000, 10000):
        took = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                took.append(asyncio.run(_round(Path(tmp), contacts)))
        out["link_s"][str(contacts)] = round(statistics.median(took), 3)
    return out


def render(results: dict[str, Any]) -> list[str]:
    link = results.get("linking")
    if not link:
        return []
    out = ["## Linking a device, by contact book size (issue 13)", ""]
    if "error" in link:
        return [*out, link["error"], ""]
    out += [
        "In one process over loopback TCP (`join_device --addr`, no DHT): from opening the "
        "offer to the new device's key file and copied book on disk; median of the rounds. "
        f"SPAKE2, both sides: {link['spake2_both_sides_ms']} ms.",
        "",
        "| contacts | link |",
        "|---|---|",
        *(f"| {int(k):,} | {v:.3f} s |" for k, v in link["link_s"].items()),
        "",
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.rounds)))


if __name__ == "__main__":
    main()

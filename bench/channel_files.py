"""A channel file fetched from 3 members at once vs from 1, over real member links.

The daemon's channel manager on loopback for every member (no DHT, trackers or LSD:
members dial each other), the real channel file path (:mod:`btchat.node.channel_files`,
:class:`btchat.transfer.swarm.Swarm`). Alice posts a file; a member linked to her
alone fetches it (1 source) and leaves; bob and carol fetch it (not timed); a fourth
member linked to alice, bob and carol fetches it from all three (3 sources). Timed
from accept to done (every piece verified, written, fsynced, moved into place). Run
twice: with the daemon's serving pace (``serve_per_minute``: 4800 pieces of 256 KiB a
minute per member, about 20 MB/s), and with no pace, where all the members share this
one process's event loop and so its CPU.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.files import _sha

__all__ = ["render", "run"]

DEFAULT_PACE = 4800  # ChannelFilesConfig.serve_per_minute
UNPACED = 10**9


class _Member:
    def __init__(self, root: Path, name: str, pace: int) -> None:
        from btchat.identity.keys import Identity

        self.dir = root / name
        self.dir.mkdir()
        self.name = name
        self.pace = pace
        self.identity = Identity.generate()
        self.manager: Any = None

    async def up(self) -> None:
        from btchat.channels.service import ChannelConfig
        from btchat.messaging.store import Store
        from btchat.node.channel_files import ChannelFilesConfig
        from btchat.node.channels import ChannelManager

        self.store = Store.open(self.dir / "db", None)
        self.manager = ChannelManager(
            self.identity,
            self.store,
            None,
            ChannelConfig(host="127.0.0.1", dht=False, trackers=False, lsd=False),
            lambda e: None,
            files=ChannelFilesConfig(
                save_dir=self.dir / "files",
                state_dir=self.dir / "state",
                serve_per_minute=self.pace,
            ),
        )
        await self.manager.start()

    async def down(self) -> None:
        if self.manager is not None:
            await self.manager.stop()
            self.store.close()
            self.manager = None

    def service(self) -> Any:
        return next(iter(self.manager.services.values()))

    def channel(self) -> bytes:
        return next(iter(self.manager.services))

    def port(self) -> int:
        return int(self.service().port)

    def links(self) -> int:
        return len(self.service().links)

    def file(self, fid: str) -> Any:
        return self.manager.files.files.get(bytes.fromhex(fid))


async def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        await asyncio.sleep(0.01)


async def _join(m: _Member, uri: str, sources: list[_Member]) -> None:
    await m.up()
    await m.manager.join(uri)
    for s in sources:
        await m.manager.dial("room", f"127.0.0.1:{s.port()}")
    await _until(lambda: m.links() >= len(sources), 30, f"{m.name} linked")


async def _fetch(m: _Member, fid: str) -> dict[str, Any]:
    """Accept the offer once it is there, and time it to done."""
    await _until(lambda: m.file(fid) is not None, 30, f"the offer at {m.name}")
    t0 = time.perf_counter()
    await m.manager.file_action("room", fid, "accept")
    f = m.file(fid)
    most = 0
    while f.state != "done":
        if f.state not in ("active", "paused"):
            raise RuntimeError(f"{m.name}'s download is {f.state}: {f.error}")
        if f.swarm is not None:
            most = max(most, len(f.swarm.sources))
        if time.perf_counter() - t0 > 600:
            raise TimeoutError(f"{m.name}'s download did not finish in 10 minutes")
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    return {"transfer_s": elapsed, "sources_seen": most, "path": f.path}


async def _round(size: int, pace: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="btchat-bench-chfiles-"))
    members: list[_Member] = []
    try:
        src = tmp / "payload.bin"
        with src.open("wb") as f:
            for _ in range(max(1, size // (16 << 20))):
                f.write(os.urandom(min(size, 16 << 20)))
        digest = _sha(src)
        alice, one, bob, carol, three = (
            _Member(tmp, n, pace) for n in ("alice", "one", "bob", "carol", "three")
        )
        members = [alice, one, bob, carol, three]
        await alice.up()
        uri = (await alice.manager.create("room", False, []))["uri"]
        await _join(one, uri, [alice])
        posted = await alice.manager.send_file("room", str(src), None)
        fid = posted["id"]
        single = await _fetch(one, fid)
        single["identical"] = _sha(Path(single.pop("path"))) == digest
        await one.down()  # gone: the 3-source fetcher cannot find a fourth source
        for m in (bob, carol):  # they fetch it too (not timed), to serve it
            await _join(m, uri, [alice])
        await asyncio.gather(*(_fetch(m, fid) for m in (bob, carol)))
        served0 = {m.name: m.file(fid).served for m in (alice, bob, carol)}
        await _join(three, uri, [alice, bob, carol])
        multi = await _fetch(three, fid)
        multi["identical"] = _sha(Path(multi.pop("path"))) == digest
        multi["served_by"] = {
            m.name: m.file(fid).served - served0[m.name] for m in (alice, bob, carol)
        }
        for r in (single, multi):
            r["mb_per_s"] = size / r["transfer_s"] / 1e6
        return {
            "one_source": single,
            "three_sources": multi,
            "speedup": single["transfer_s"] / multi["transfer_s"],
        }
    finally:
        for m in members:
            await m.down()
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    # Beyond the pace's first burst (80 pieces per member) even when split three ways.
    size = (128 if quick else 384) * 1024 * 1024
    return {
        "bytes": size,
        "paced": asyncio.run(_round(size, DEFAULT_PACE)),
        "unpaced": asyncio.run(_round(size, UNPACED)),
    }


def render(results: dict[str, Any]) -> list[str]:
    r = results.get("channel_file_sources")
    if not r:
        return []
    title = "## A channel file from 3 members vs from 1"
    if "error" in r:
        return [title, "", r["error"], ""]
    runs = [(k, r[k]) for k in ("paced", "unpaced") if isinstance(r.get(k), dict)]
    speedups = {name: x["speedup"] for name, x in runs}
    if all(v > 1 for v in speedups.values()):
        hit = "met"
    elif speedups.get("paced", 0) > 1:
        hit = "met at the daemon's serving pace; MISSED unpaced, one process's CPU the limit"
    else:
        hit = "MISSED"
    out = [
        f"{title} (issue 11 target: 3 sources faster than 1: {hit})",
        "",
        "Every member is the daemon's channel manager on loopback, in one process; members "
        "dial each other (no DHT, trackers or LSD). Alice posts the file; a member linked "
        "to her alone fetches it (1 source) and leaves; bob and carol fetch it; a member "
        "linked to alice, bob and carol fetches it from all three. Timed from accept to "
        "done: every piece checked against the tree, written, fsynced, moved into place. "
        "Paced = the daemon's default serving pace (4800 pieces a minute per member, "
        "about 20 MB/s of 256 KiB pieces); unpaced = no pace, all members sharing this "
        "process's one event loop.",
        "",
        "| file | serving | 1 source | 3 sources | speed-up | pieces from alice / bob / carol "
        "| identical |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in runs:
        one, three = x["one_source"], x["three_sources"]
        by = three["served_by"]
        out.append(
            f"| {r['bytes'] / 2**20:.0f} MiB | {name} | {one['mb_per_s']:.0f} MB/s "
            f"({one['transfer_s']:.2f} s) | {three['mb_per_s']:.0f} MB/s "
            f"({three['transfer_s']:.2f} s) | {x['speedup']:.2f}x | "
            f"{by['alice']} / {by['bob']} / {by['carol']} | "
            f"{one['identical'] and three['identical']} |"
        )
    return [*out, ""]

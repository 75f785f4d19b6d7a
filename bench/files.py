"""1:1 file transfer over one loopback session, beside raw session throughput in the same run.

Two identities, one Noise session over loopback TCP with substreams on, each side with
its own store and :class:`btchat.node.files.Files` shell, in one process. Measured:
hashing the file to offer it; accept -> done (every piece verified and written,
fsynced, moved into place); DATA-frame throughput of the same session (the raw
session ceiling); chat latency during the transfer (a small DATA payload every 20 ms,
timed to its arrival); RSS growth during the transfer (memory must stay flat).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["render", "run"]

PING = b"PING"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _run(quick: bool) -> dict[str, Any]:
    from bench.messenger import _bulk_session
    from btchat.identity.keys import DeviceKey, Identity
    from btchat.messaging import conversation as conv
    from btchat.messaging.conversation import Conversations
    from btchat.messaging.store import Store
    from btchat.node.files import Files, FilesConfig
    from btchat.node.peering import PeeringConfig
    from btchat.session.connection import SessionConnection, run_session
    from btchat.session.core import MAX_PAYLOAD, DataReceived, Session

    size = (128 if quick else 512) * 1024 * 1024
    loop = asyncio.get_running_loop()
    config = PeeringConfig().session  # what a daemon's sessions use
    tmp = Path(tempfile.mkdtemp(prefix="btchat-bench-files-"))
    ids = [Identity.generate(), Identity.generate()]
    devs = [DeviceKey.generate(), DeviceKey.generate()]
    certs = [i.certify(d, int(time.time())) for i, d in zip(ids, devs, strict=True)]
    sides: list[dict[str, Any]] = []
    pings: list[float] = []
    raw_hook: list[Any] = [None]

    def make_side(n: int) -> dict[str, Any]:
        other = 1 - n
        store = Store.open(tmp / f"s{n}" / "db", None)
        store.add_contact(ids[other].public_key, "peer", int(time.time() * 1000))
        convs = Conversations(ids[n], certs[n].device_id, store)
        side: dict[str, Any] = {"convs": convs, "store": store}

        def drive() -> None:
            while (e := convs.next_event()) is not None:
                if isinstance(e, conv.Transmit):
                    side["conn"].send(e.data)
                elif isinstance(e, conv.FileOffered):
                    side["files"].on_offer(e.peer, e.envelope)

        side["drive"] = drive
        side["files"] = Files(
            FilesConfig(save_dir=tmp / f"s{n}" / "files", state_dir=tmp / f"s{n}" / "transfers"),
            store,
            convs,
            resolve=lambda c: ids[other].public_key,
            drive=drive,
            emit=lambda e: None,
        )
        side["key"] = (ids[other].public_key, certs[other].device_id)

        def on_event(event: Any) -> None:
            if isinstance(event, DataReceived):
                if event.payload.startswith(PING):
                    pings.append(time.perf_counter() - float(event.payload[4:].decode()))
                elif raw_hook[0] is not None and n == 1 and event.payload[:1] != b"d":
                    raw_hook[0](event)
                else:
                    convs.receive(
                        ids[other].public_key, certs[other].device_id, event.payload, time.time()
                    )
                    drive()
            elif "conn" in side:
                side["files"].on_stream(side["key"], side["conn"], event)

        side["on_event"] = on_event
        return side

    sides = [make_side(0), make_side(1)]
    accepted: asyncio.Future[None] = loop.create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(
            "responder",
            devs[1],
            certs[1],
            lambda ident, cert: ident == ids[0].public_key,
            now=loop.time(),
            config=config,
        )
        sides[1]["conn"] = SessionConnection(reader, writer, session)
        accepted.set_result(None)
        await run_session(
            reader, writer, session, sides[1]["on_event"], connection=sides[1]["conn"]
        )

    server = await asyncio.start_server(accept, "127.0.0.1", 0, limit=1 << 17)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 17)
    session = Session(
        "initiator",
        devs[0],
        certs[0],
        lambda ident, cert: ident == ids[1].public_key,
        remote_static=devs[1].public_key,
        now=loop.time(),
        config=config,
    )
    sides[0]["conn"] = SessionConnection(reader, writer, session)
    task = loop.create_task(
        run_session(reader, writer, session, sides[0]["on_event"], connection=sides[0]["conn"])
    )
    await asyncio.wait_for(sides[0]["conn"].wait_established(), 10)
    await asyncio.wait_for(accepted, 10)
    await asyncio.sleep(0.2)  # capabilities exchanged, transfer streams opened
    for n in (0, 1):
        sides[n]["convs"].session_up(sides[n]["key"][0], time.time())
        sides[n]["drive"]()

    src = tmp / "payload.bin"
    with src.open("wb") as f:
        for _ in range(size // (16 << 20)):
            f.write(os.urandom(16 << 20))

    # Raw session throughput (DATA frames) on this same session, before the file.
    class _View:
        def __init__(self) -> None:
            self.a = sides[0]["conn"]

        @property
        def on_b(self) -> Any:
            return raw_hook[0]

        @on_b.setter
        def on_b(self, fn: Any) -> None:
            raw_hook[0] = fn

    payload = os.urandom(MAX_PAYLOAD)
    payload = b"R" + payload[1:]
    raw = await _bulk_session(_View(), payload, 1.5 if quick else 3.0)  # type: ignore[arg-type]
    raw_hook[0] = None

    t0 = time.perf_counter()
    sent = await sides[0]["files"].send("peer", str(src))
    hash_s = time.perf_counter() - t0
    files_b = sides[1]["files"]
    tid = sent["id"]
    for _ in range(200):
        if bytes.fromhex(tid) in files_b.transfers:
            break
        await asyncio.sleep(0.01)
    rss0 = _rss()
    peak = rss0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t1 = time.perf_counter()
    await files_b.act(tid, "accept")
    while (t := files_b.transfers[bytes.fromhex(tid)]).state != "done":
        sides[0]["conn"].send(PING + repr(time.perf_counter()).encode())
        await asyncio.sleep(0.02)
        peak = max(peak, _rss())
        if time.perf_counter() - t1 > 600:
            raise TimeoutError("the transfer did not finish in 10 minutes")
    elapsed = time.perf_counter() - t1
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert t.path is not None
    same = _sha(Path(t.path)) == _sha(src)
    sides[0]["conn"].close("done")
    sides[1]["conn"].close("done")
    server.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for s in sides:
        s["files"].close()
        s["store"].close()
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    tmp.rmdir()
    pings.sort()
    return {
        "bytes": size,
        "hash_s": hash_s,
        "transfer_s": elapsed,
        "file_mb_per_s": size / elapsed / 1e6,
        "raw_session_mb_per_s": raw["mb_per_s"],
        "ratio": size / elapsed / 1e6 / raw["mb_per_s"],
        "cpu_s_per_gb": cpu / (size / 1e9),
        "rss_growth_mib": (peak - rss0) / 2**20,
        "chat_pings": len(pings),
        "chat_p50_ms": statistics.median(pings) * 1000 if pings else None,
        "chat_p99_ms": pings[int(len(pings) * 0.99) - 1] * 1000 if pings else None,
        "identical": same,
    }


def _sha(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(quick))


def render(results: dict[str, Any]) -> list[str]:
    r = results.get("file_transfer")
    if not r:
        return []
    if "error" in r:
        return ["## File transfer, 1:1 over one session", "", r["error"], ""]
    hit = "met" if r["file_mb_per_s"] >= 300 else "MISSED"
    return [
        f"## File transfer, 1:1 over one session (issue 11 target >= 300 MB/s: {hit})",
        "",
        "One Noise session over loopback TCP in one process (both ends share one core's "
        "event loop), substreams on; the receiver verifies every 256 KiB piece against the "
        "SHA-256 tree before writing it. Raw session = DATA frames of 65 KiB on the same "
        "session just before. Chat = a small DATA payload every 20 ms during the transfer.",
        "",
        "| file | hash to offer | transfer | file MB/s | raw session MB/s | file/raw "
        "| CPU s per GB | RSS growth | chat p50 | chat p99 | identical |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['bytes'] / 2**20:.0f} MiB | {r['hash_s']:.2f} s | {r['transfer_s']:.2f} s | "
        f"{r['file_mb_per_s']:.0f} | {r['raw_session_mb_per_s']:.0f} | {r['ratio']:.2f} | "
        f"{r['cpu_s_per_gb']:.1f} | {r['rss_growth_mib']:.1f} MiB | "
        f"{r['chat_p50_ms']:.1f} ms | {r['chat_p99_ms']:.1f} ms | {r['identical']} |",
        "",
    ]

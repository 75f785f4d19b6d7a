"""One identity on two devices: how fast a device that was away catches up (issue 13).

Device A holds N messages (one conversation, both directions); device B of the same
identity has none. Both are ``btchat up`` processes on a private sandbox swarm; the
clock starts when B's daemon is started. Measured: when the two have a session (found
through the identity's rendezvous with itself), when A's listing says B has
acknowledged everything (B committed every row), and the bytes A sent. Beside it, in
the same run, the same sync between two stores in one process with no network: what
the storage and the format cost alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.messenger import BTCHAT, _env, _stop

TARGET_S = {1000: 10.0, 10000: 30.0}
RUN_TIMEOUT = 180.0


def _rows(n: int, me: bytes, friend: bytes) -> list[Any]:
    from btchat.messaging.messages import MessageRow

    now_ms = int(time.time() * 1000)
    rows = []
    for i in range(n):
        out = i % 2 == 0
        text = f"message {i}: the quick brown fox jumps over the lazy dog"
        row = MessageRow(
            id=os.urandom(16),
            peer=friend,
            sender=me if out else friend,
            direction="out" if out else "in",
            ts_ms=now_ms - (n - i) * 1000,
            lamport=i + 1,
            type="text",
            text=text,
            state="sent" if out else "delivered",
            received_ms=now_ms,
        )
        rows.append(row)
    return rows


def _two_devices(root: Path, n: int) -> tuple[Path, Path]:
    """A with ``n`` messages, and B, a second device of A's identity; each lists the
    other's certificate (as linking leaves them)."""
    from btchat.identity.keys import DeviceKey
    from btchat.identity.keystore import KeyStore, LoadedKeys
    from btchat.messaging.store import Store
    from btchat.node.devices import OwnDevices
    from btchat.node.history import DB_FILE

    a, b = root / "a", root / "b"
    keys = KeyStore(a).create(None, now=int(time.time()) - 60)
    device = DeviceKey.generate()
    other = LoadedKeys(keys.identity, device, keys.identity.certify(device, int(time.time())), None)
    b.mkdir(parents=True)
    KeyStore(b).save_new(other, None)
    friend = os.urandom(32)
    with Store.open(a / DB_FILE, None) as store:
        OwnDevices(store, keys.certificate).add(other.certificate)
        store.save_synced(_rows(n, keys.identity.public_key, friend))
    with Store.open(b / DB_FILE, None) as store:
        OwnDevices(store, other.certificate).add(keys.certificate)
    return a, b


async def _start(data_dir: Path, bootstrap: str, env: dict[str, str]) -> tuple[Any, Any]:
    from btchat.api.client import ApiClient

    proc = await asyncio.create_subprocess_exec(
        *BTCHAT, "up", "--data-dir", str(data_dir), "--bootstrap", bootstrap,
        "--host", "127.0.0.1", "--dht-port", "0", "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line:
        raise RuntimeError(f"daemon in {data_dir.name} did not start")
    info = json.loads(line)
    token = (data_dir / "api.token").read_text().strip()
    return proc, ApiClient(info["api"], token, timeout=10)


async def _catch_up(n: int, bootstrap: str, env: dict[str, str], root: Path) -> dict[str, Any]:
    a_dir, b_dir = _two_devices(root / f"n{n}", n)
    procs: list[Any] = []
    try:
        proc_a, client_a = await _start(a_dir, bootstrap, env)
        procs.append(proc_a)
        t0 = time.monotonic()
        proc_b, _ = await _start(b_dir, bootstrap, env)
        procs.append(proc_b)
        session_s = None
        while time.monotonic() - t0 < RUN_TIMEOUT:
            listing = await asyncio.to_thread(client_a.list_devices)
            other = next(d for d in listing["devices"] if not d["this_device"])
            if other.get("online") and session_s is None:
                session_s = time.monotonic() - t0
            if other.get("online") and other.get("to_sync") == 0:
                done_s = time.monotonic() - t0
                sync = listing["sync"]
                return {
                    "messages": n,
                    "session_s": session_s,
                    "synced_s": done_s,
                    "transfer_s": done_s - (session_s or done_s),
                    "bytes_sent": sync["bytes_sent"],
                    "bytes_per_message": sync["bytes_sent"] / n,
                    "batches": sync["batches_sent"],
                    "target_s": TARGET_S.get(n),
                    "target_met": done_s <= TARGET_S.get(n, float("inf")),
                }
            await asyncio.sleep(0.1)
        return {"messages": n, "error": f"not synced within {RUN_TIMEOUT:.0f} s"}
    finally:
        for proc in procs:
            await _stop(proc)


def _one_device(root: Path, n: int) -> tuple[Path, str]:
    """A with ``n`` messages with one friend; returns its directory and the newest text."""
    from btchat.identity.keystore import KeyStore
    from btchat.messaging.store import Store
    from btchat.node.history import DB_FILE

    a = root / "a"
    keys = KeyStore(a).create(None, now=int(time.time()) - 60)
    friend = os.urandom(32)
    rows = _rows(n, keys.identity.public_key, friend)
    with Store.open(a / DB_FILE, None) as store:
        store.add_contact(friend, "friend", 1)
        store.save_synced(rows)
    return a, rows[-1].text or ""


async def _link_then_show(
    n: int, bootstrap: str, env: dict[str, str], root: Path
) -> dict[str, Any]:
    """Issue 13's measure as a user meets it: from "Link a new device" on A to the new
    device B showing A's newest message (of ``n``) in the conversation; B is made by
    ``btchat device join`` (the code found through the DHT, SPAKE2) and started."""
    a_dir, newest = _one_device(root / f"link{n}", n)
    b_dir = root / f"link{n}" / "b"
    procs: list[Any] = []
    try:
        proc_a, client_a = await _start(a_dir, bootstrap, env)
        procs.append(proc_a)
        t0 = time.monotonic()
        offer = await asyncio.to_thread(client_a.link_device)
        join = await asyncio.create_subprocess_exec(
            *BTCHAT, "device", "join", offer["code"], "--data-dir", str(b_dir),
            "--bootstrap", bootstrap, "--host", "127.0.0.1", "--no-passphrase", "--json",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(join.communicate(), RUN_TIMEOUT)
        if join.returncode != 0:
            return {"messages": n, "error": f"join failed: {err.decode()[-200:]}"}
        joined_s = time.monotonic() - t0
        proc_b, client_b = await _start(b_dir, bootstrap, env)
        procs.append(proc_b)
        while time.monotonic() - t0 < RUN_TIMEOUT:
            shown = await asyncio.to_thread(client_b.history, "friend", 1)
            if shown and shown[-1].get("text") == newest:
                done_s = time.monotonic() - t0
                target = TARGET_S[1000] if n == 1000 else None
                return {
                    "messages": n,
                    "joined_s": joined_s,
                    "shown_s": done_s,
                    "target_s": target,
                    "target_met": target is None or done_s <= target,
                }
            await asyncio.sleep(0.1)
        return {"messages": n, "error": f"not shown within {RUN_TIMEOUT:.0f} s"}
    finally:
        for proc in procs:
            await _stop(proc)


def _in_process(n: int, root: Path) -> dict[str, Any]:
    """The same sync between two stores, no sockets: batches carried by hand."""
    from btchat.messaging.store import Store
    from btchat.node.own_sync import OwnSync

    root.mkdir(parents=True, exist_ok=True)
    a = Store.open(root / "a.db", None)
    b = Store.open(root / "b.db", None)
    a.save_synced(_rows(n, os.urandom(32), os.urandom(32)))
    to_b: list[bytes] = []
    to_a: list[bytes] = []
    sync_a = OwnSync(a, lambda d, p: to_b.append(p) or True, lambda e: None)
    sync_b = OwnSync(b, lambda d, p: to_a.append(p) or True, lambda e: None)
    t = time.perf_counter()
    sync_a.device_up(b"b" * 16)
    while to_b:
        sync_b.receive(b"a" * 16, to_b.pop(0))
        while to_a:
            sync_a.receive(b"b" * 16, to_a.pop(0))
    seconds = time.perf_counter() - t
    got = int(b.query("SELECT count(*) FROM messages")[0][0])
    a.close()
    b.close()
    return {"messages": n, "stored": got, "seconds": seconds, "per_s": n / seconds}


async def _run(sizes: list[int], rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="btchat-bench-devices-"))
    env = _env(root)
    sandbox = None
    try:
        sandbox = await asyncio.create_subprocess_exec(
            *BTCHAT, "sandbox", "--nodes", "30", "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert sandbox.stdout is not None
        bootstrap = json.loads(await asyncio.wait_for(sandbox.stdout.readline(), 120))["bootstrap"]
        await asyncio.sleep(1.0)
        runs = [await _catch_up(n, bootstrap, env, root) for n in sizes]
        linked = [await _link_then_show(1000, bootstrap, env, root) for _ in range(rounds)]
        local = [_in_process(n, root / f"local{n}") for n in sizes]
        return {"catch_up": runs, "link": linked, "in_process": local}
    finally:
        await _stop(sandbox)
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run([1000] if quick else [1000, 10000], 1 if quick else 3))


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))


def render(results: dict[str, Any]) -> list[str]:
    dev = results.get("devices")
    if not dev:
        return []
    out = ["## A second device catching up (issue 13)", ""]
    if "error" in dev:
        return [*out, dev["error"], ""]
    out += [
        "Device A holds N messages, device B of the same identity none; both are `btchat up` "
        "processes on a 30-node sandbox swarm, and the clock starts when B's daemon does. "
        "*Session* is when A and B hold a session (found through the identity's rendezvous "
        "with itself); *synced* when A's `GET /v1/devices` says B has acknowledged every "
        "row (B commits a batch before acknowledging it). In-process: the same sync between "
        "two stores, payloads carried by hand, no sockets (the floor set by SQLite and the "
        "format).",
        "",
        "| messages | session | synced | transfer | bytes per message | batches | in-process "
        "rows/s | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    local = {r["messages"]: r for r in dev["in_process"]}
    for r in dev["catch_up"]:
        if "error" in r:
            out.append(f"| {r['messages']:,} | {r['error']} | | | | | | |")
            continue
        target = r["target_s"]
        verdict = f"<= {target:.0f} s: {'met' if r['target_met'] else 'MISSED'}" if target else ""
        out.append(
            f"| {r['messages']:,} | {r['session_s']:.2f} s | {r['synced_s']:.2f} s | "
            f"{r['transfer_s']:.2f} s | {r['bytes_per_message']:.0f} | {r['batches']} | "
            f"{local[r['messages']]['per_s']:,.0f} | {verdict} |"
        )
    out += [
        "",
        'From "Link a new device" on A (which holds 1,000 messages with one friend) to the '
        "new device B showing A's newest message in that conversation: `POST "
        "/v1/devices/link` on A, `btchat device join CODE` in a new data directory (the code "
        "found through the DHT, SPAKE2, the identity and contact book copied), `btchat up` "
        "there, history synced. *Joined* is when `device join` returned.",
        "",
        "| round | joined | shown | target |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(dev.get("link", []), 1):
        if "error" in r:
            out.append(f"| {i} | {r['error']} | | |")
            continue
        verdict = f"<= {r['target_s']:.0f} s: {'met' if r['target_met'] else 'MISSED'}"
        out.append(f"| {i} | {r['joined_s']:.2f} s | {r['shown_s']:.2f} s | {verdict} |")
    return [*out, ""]
